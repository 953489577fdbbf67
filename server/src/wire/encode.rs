//! Arrow batches to PostgreSQL wire rows, via arrow-pg, with Shoal's column types (varchar,
//! json, uuid, ...) taken from field metadata so clients see the declared type's OID.

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use shoal_executor::PG_TYPE_METADATA_KEY;

fn declared_type(name: &str) -> Option<Type> {
    let base = name.split('(').next().unwrap_or(name).trim();
    Some(match base {
        "character varying" => Type::VARCHAR,
        "character" => Type::BPCHAR,
        "json" => Type::JSON,
        "jsonb" => Type::JSONB,
        "uuid" => Type::UUID,
        _ => return None,
    })
}

/// Field descriptions for a result schema in the requested formats.
pub fn fields_for(schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let fields = arrow_schema_to_pg_fields(schema, format, None)?;
    Ok(fields
        .into_iter()
        .zip(schema.fields())
        .enumerate()
        .map(|(i, (info, field))| {
            match field
                .metadata()
                .get(PG_TYPE_METADATA_KEY)
                .and_then(|t| declared_type(t))
            {
                // Text-typed declared types share text's wire encoding in both formats, except
                // uuid and jsonb in binary, which keep the text type so values stay readable.
                Some(t)
                    if format.format_for(i) == pgwire::api::results::FieldFormat::Text
                        || matches!(t, Type::VARCHAR | Type::BPCHAR | Type::JSON) =>
                {
                    FieldInfo::new(info.name().to_string(), None, None, t, format.format_for(i))
                }
                _ => info,
            }
        })
        .collect())
}

pub fn encode(
    fields: Arc<Vec<FieldInfo>>,
    batch: RecordBatch,
) -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> {
    encode_recordbatch(fields, batch)
}

/// The text form of each field of an encoded text-format row (None for NULL).
pub fn text_fields(row: &DataRow) -> Vec<Option<&[u8]>> {
    let mut out = Vec::with_capacity(row.field_count as usize);
    let data = &row.data[..];
    let mut at = 0;
    for _ in 0..row.field_count {
        if at + 4 > data.len() {
            break;
        }
        let len = i32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let end = (at + len as usize).min(data.len());
            out.push(Some(&data[at..end]));
            at = end;
        }
    }
    out
}
