//! The array columns of the static pg_catalog relations, typed as PostgreSQL types them.
//!
//! The snapshot of PostgreSQL 15 (`pg15_catalog`) keeps every array column as PostgreSQL's
//! text (`{2276}`, `{v}`, `23 25` for vectors), `datafusion-pg-catalog` as its own text
//! (`[2276]`, `['v']`), and the crate's always-empty relations (pg_policy, pg_statistic_ext,
//! ...) have text columns where PostgreSQL has arrays.
//! Client queries index those columns, unnest them or test `x = ANY(col)` (psql's `\d`
//! reads `'d' = any(stxkind)`, pgcli reads `proargmodes`), which fails on text. Here each such
//! column becomes the list PostgreSQL has: `oid[]` (with the oid tag on its elements),
//! `char[]`/`text[]`/`name[]` as text lists, `int2vector`/`oidvector` as tagged lists.
//!
//! The relations never change, so each is converted once per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int16Builder, Int32Builder, ListBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use datafusion_pg_catalog::pg_catalog::oid_field::{kind, oid_field};
use shoal_executor::PG_TYPE_METADATA_KEY;

/// An array column's element type, as PostgreSQL names the array type.
#[derive(Clone, Copy)]
enum ArrayType {
    /// `oid[]`.
    Oids,
    /// `text[]`, `name[]`, `char[]`.
    Texts,
    /// `int2vector`.
    Int2Vector,
    /// `oidvector`.
    OidVector,
}

/// PostgreSQL 15's array columns of the relations served from static data. aclitem arrays
/// stay text: Shoal has no privileges to list, and clients print them as they come.
const ARRAY_COLUMNS: &[(&str, &str, ArrayType)] = &[
    ("pg_proc", "proargtypes", ArrayType::OidVector),
    ("pg_proc", "proallargtypes", ArrayType::Oids),
    ("pg_proc", "proargmodes", ArrayType::Texts),
    ("pg_proc", "proargnames", ArrayType::Texts),
    ("pg_proc", "protrftypes", ArrayType::Oids),
    ("pg_proc", "proconfig", ArrayType::Texts),
    ("pg_policy", "polroles", ArrayType::Oids),
    ("pg_statistic_ext", "stxkeys", ArrayType::Int2Vector),
    ("pg_statistic_ext", "stxkind", ArrayType::Texts),
    ("pg_publication_rel", "prattrs", ArrayType::Int2Vector),
    ("pg_trigger", "tgattr", ArrayType::Int2Vector),
    ("pg_extension", "extconfig", ArrayType::Oids),
    ("pg_extension", "extcondition", ArrayType::Texts),
    ("pg_db_role_setting", "setconfig", ArrayType::Texts),
    ("pg_event_trigger", "evttags", ArrayType::Texts),
    ("pg_partitioned_table", "partattrs", ArrayType::Int2Vector),
    ("pg_partitioned_table", "partclass", ArrayType::OidVector),
    (
        "pg_partitioned_table",
        "partcollation",
        ArrayType::OidVector,
    ),
];

/// Whether `relation` has array columns to retype.
pub(crate) fn has_array_columns(relation: &str) -> bool {
    ARRAY_COLUMNS.iter().any(|(r, _, _)| *r == relation)
}

/// `table` (the static relation `relation`) with its array columns retyped.
pub(crate) async fn retyped(
    relation: &str,
    table: Arc<dyn TableProvider>,
) -> DfResult<Arc<dyn TableProvider>> {
    static CONVERTED: OnceLock<Mutex<HashMap<String, Arc<MemTable>>>> = OnceLock::new();
    let cache = CONVERTED.get_or_init(Default::default);
    if let Some(done) = cache.lock().ok().and_then(|c| c.get(relation).cloned()) {
        return Ok(done);
    }
    // Relations computed per query (pg_roles, pg_settings) are not held in memory.
    let any: &dyn std::any::Any = table.as_ref();
    let Some(memory) = any.downcast_ref::<MemTable>() else {
        return Ok(table);
    };
    let mut batches = Vec::new();
    for partition in &memory.batches {
        batches.extend(partition.read().await.iter().cloned());
    }
    let schema = retyped_schema(relation, &table.schema());
    let batches = batches
        .iter()
        .map(|b| retyped_batch(relation, &schema, b))
        .collect::<DfResult<Vec<_>>>()?;
    let converted = Arc::new(MemTable::try_new(schema, vec![batches])?);
    if let Ok(mut c) = cache.lock() {
        c.insert(relation.to_string(), converted.clone());
    }
    Ok(converted)
}

fn array_type(relation: &str, column: &str) -> Option<ArrayType> {
    ARRAY_COLUMNS
        .iter()
        .find(|(r, c, _)| *r == relation && *c == column)
        .map(|(_, _, t)| *t)
}

fn retyped_schema(relation: &str, schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match array_type(relation, f.name()) {
            Some(t) if f.data_type() == &DataType::Utf8 => list_field(f.name(), t),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn list_field(name: &str, t: ArrayType) -> Field {
    let element = match t {
        ArrayType::Oids => oid_field("item", kind::OID, true),
        ArrayType::Texts => Field::new("item", DataType::Utf8, true),
        ArrayType::Int2Vector => Field::new("item", DataType::Int16, true),
        ArrayType::OidVector => Field::new("item", DataType::Int32, true),
    };
    let field = Field::new(name, DataType::List(Arc::new(element)), true);
    let vector = match t {
        ArrayType::Int2Vector => "int2vector",
        ArrayType::OidVector => "oidvector",
        _ => return field,
    };
    field.with_metadata(HashMap::from([(
        PG_TYPE_METADATA_KEY.to_string(),
        vector.to_string(),
    )]))
}

fn retyped_batch(relation: &str, schema: &SchemaRef, batch: &RecordBatch) -> DfResult<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .zip(schema.fields())
        .map(
            |((column, old), new)| match (array_type(relation, old.name()), old.data_type()) {
                (Some(t), DataType::Utf8) => list_column(column, t, new),
                _ => column.clone(),
            },
        )
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The elements of a flattened array: `[2276, 25]`, `['i', 'o']`, `{a,b}` or `2276 25`.
pub(crate) fn elements(text: &str) -> Vec<String> {
    let inner = text
        .trim()
        .trim_start_matches(['[', '{'])
        .trim_end_matches([']', '}']);
    inner
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|e| e.trim().trim_matches(['\'', '"']).to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

fn list_column(column: &ArrayRef, t: ArrayType, field: &Field) -> ArrayRef {
    let DataType::List(element) = field.data_type() else {
        return column.clone();
    };
    let texts = column.as_string::<i32>();
    let rows = (0..texts.len()).map(|i| (!texts.is_null(i)).then(|| elements(texts.value(i))));
    match t {
        ArrayType::Texts => {
            let mut b = ListBuilder::new(StringBuilder::new()).with_field(element.clone());
            for row in rows {
                b.append_option(row.map(|r| r.into_iter().map(Some)));
            }
            Arc::new(b.finish())
        }
        ArrayType::Int2Vector => {
            let mut b = ListBuilder::new(Int16Builder::new()).with_field(element.clone());
            for row in rows {
                b.append_option(row.map(|r| r.into_iter().map(|e| e.parse::<i16>().ok())));
            }
            Arc::new(b.finish())
        }
        ArrayType::Oids | ArrayType::OidVector => {
            let mut b = ListBuilder::new(Int32Builder::new()).with_field(element.clone());
            for row in rows {
                // OIDs above 2^31 wrap as they do in every other oid column.
                b.append_option(row.map(|r| {
                    r.into_iter()
                        .map(|e| e.parse::<u32>().ok().map(|v| v as i32))
                }));
            }
            Arc::new(b.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_arrays_split_into_their_elements() {
        assert_eq!(elements("[2276]"), vec!["2276"]);
        assert_eq!(elements("['i', 'o', 'v']"), vec!["i", "o", "v"]);
        assert_eq!(elements("23 25"), vec!["23", "25"]);
        assert_eq!(elements("{a,b}"), vec!["a", "b"]);
        assert!(elements("[]").is_empty());
    }
}
