//! Arrow batches to PostgreSQL wire rows, via arrow-pg, with Shoal's column types (varchar,
//! json, uuid, ...) taken from field metadata so clients see the declared type's OID.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, ListArray, StringArray};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Field, Float32Type, Float64Type, IntervalMonthDayNanoType,
    IntervalUnit, Schema, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use shoal_executor::PG_TYPE_METADATA_KEY;
use shoal_planner::pg_output::{float4_text, float8_text};

use super::numeric::{numeric_binary, numeric_text};

fn declared_type(name: &str) -> Option<Type> {
    let base = name.split('(').next().unwrap_or(name).trim();
    Some(match base {
        "character varying" => Type::VARCHAR,
        "character" => Type::BPCHAR,
        "json" => Type::JSON,
        "jsonb" => Type::JSONB,
        "uuid" => Type::UUID,
        "int2vector" => Type::INT2_VECTOR,
        "oidvector" => Type::OID_VECTOR,
        _ => return None,
    })
}

/// `int2vector` and `oidvector` as simple types in text results: they print space-separated,
/// which the array kind would quote as one array element.
fn text_only_kind(t: Type) -> Type {
    match t {
        Type::INT2_VECTOR | Type::OID_VECTOR => Type::new(
            t.name().to_string(),
            t.oid(),
            postgres_types::Kind::Simple,
            t.schema().to_string(),
        ),
        other => other,
    }
}

/// `oid[]`, `regtype[]`, ... for a list of catalog oids (an `array_agg` of an oid column):
/// arrow-pg knows the element's alias type but reports the list as `integer[]`.
fn oid_alias_array(field: &Field) -> Option<Type> {
    let DataType::List(item) = field.data_type() else {
        return None;
    };
    let kind = item.metadata().get(arrow_pg::datatypes::PG_OID_ALIAS_KEY)?;
    Some(match arrow_pg::datatypes::pg_type_for_alias_kind(kind)? {
        Type::REGTYPE => Type::REGTYPE_ARRAY,
        Type::REGCLASS => Type::REGCLASS_ARRAY,
        Type::REGPROC => Type::REGPROC_ARRAY,
        Type::REGNAMESPACE => Type::REGNAMESPACE_ARRAY,
        Type::REGROLE => Type::REGROLE_ARRAY,
        _ => Type::OID_ARRAY,
    })
}

/// The schema without the oid-alias tags of columns that are no longer int4 oids: a cast of
/// an oid column (`atttypid::regtype::text`) keeps its input's tag, which would describe text
/// values as a binary oid.
fn without_stale_oid_aliases(schema: &Schema) -> Cow<'_, Schema> {
    let key = arrow_pg::datatypes::PG_OID_ALIAS_KEY;
    let stale = |f: &Field| f.metadata().contains_key(key) && f.data_type() != &DataType::Int32;
    if !schema.fields().iter().any(|f| stale(f)) {
        return Cow::Borrowed(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match stale(f) {
            true => {
                let mut metadata = f.metadata().clone();
                metadata.remove(key);
                f.as_ref().clone().with_metadata(metadata)
            }
            false => f.as_ref().clone(),
        })
        .collect();
    Cow::Owned(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Field descriptions for a result schema in the requested formats.
pub fn fields_for(schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let fields = arrow_schema_to_pg_fields(&without_stale_oid_aliases(schema), format, None)?;
    Ok(fields
        .into_iter()
        .zip(schema.fields())
        .enumerate()
        .map(|(i, (info, field))| {
            // Declared types held as text: their text form is the stored text; the binary
            // forms of uuid and jsonb are made by `render_column`.
            let declared = field
                .metadata()
                .get(PG_TYPE_METADATA_KEY)
                .and_then(|t| declared_type(t))
                .map(|t| match format.format_for(i) {
                    FieldFormat::Text => text_only_kind(t),
                    FieldFormat::Binary => t,
                });
            let datatype = declared.or_else(|| oid_alias_array(field));
            // A repeated output name was planned with a suffix that keeps it distinct (see
            // `shoal_planner::DUPLICATE_NAME_SUFFIX`); the client sees the name without it.
            let name = info
                .name()
                .split(shoal_planner::DUPLICATE_NAME_SUFFIX)
                .next()
                .unwrap_or_default();
            if datatype.is_none() && name == info.name() {
                return info;
            }
            FieldInfo::new(
                name.to_string(),
                info.table_id(),
                info.column_id(),
                datatype.unwrap_or_else(|| info.datatype().clone()),
                info.format(),
            )
            .with_format_options(info.format_options().clone())
        })
        .collect())
}

pub fn encode(
    fields: Arc<Vec<FieldInfo>>,
    batch: RecordBatch,
) -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> {
    let batch = with_postgres_encodings(&fields, batch);
    encode_recordbatch(fields, batch)
}

/// An interval in PostgreSQL's default `postgres` style: `1 year 2 mons 3 days 04:05:06.5`.
fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n.abs() == 1 { "" } else { "s" });
    let mut parts = Vec::new();
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        parts.push(plural(years as i64, "year"));
    }
    if months != 0 {
        parts.push(plural(months as i64, "mon"));
    }
    if days != 0 {
        parts.push(plural(days as i64, "day"));
    }
    if micros != 0 || parts.is_empty() {
        let m = micros.unsigned_abs();
        let mut t = format!(
            "{}{:02}:{:02}:{:02}",
            if micros < 0 { "-" } else { "" },
            m / 3_600_000_000,
            m / 60_000_000 % 60,
            m / 1_000_000 % 60
        );
        if !m.is_multiple_of(1_000_000) {
            t.push('.');
            t.push_str(format!("{:06}", m % 1_000_000).trim_end_matches('0'));
        }
        parts.push(t);
    }
    parts.join(" ")
}

/// `12:34:56.5` as PostgreSQL prints it: seconds, then the fraction without trailing zeros.
fn push_time(out: &mut String, t: chrono::NaiveTime) {
    use chrono::Timelike;
    out.push_str(&t.format("%H:%M:%S").to_string());
    let micros = t.nanosecond() / 1000;
    if micros > 0 {
        let frac = format!("{micros:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
}

/// Columns whose encoding arrow-pg gets wrong are encoded here: text-format time, timestamp and
/// interval (PostgreSQL trims trailing zeros of fractional seconds; arrow-pg prints six digits
/// and turns NULL intervals into zero), binary-format intervals (NULLs again), and numerics
/// (arrow-pg's fail past 28 digits).
fn with_postgres_encodings(fields: &[FieldInfo], batch: RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    let rendered: Vec<Option<ArrayRef>> = batch
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let text = fields.get(i).map(|x| x.format()) == Some(FieldFormat::Text);
            render_column(text, fields.get(i).map(|x| x.datatype()), column)
        })
        .collect();
    if rendered.iter().all(Option::is_none) {
        return batch;
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut schema_fields = Vec::with_capacity(batch.num_columns());
    for ((column, field), rendered) in batch.columns().iter().zip(schema.fields()).zip(rendered) {
        match rendered {
            Some(r) => {
                schema_fields.push(Field::new(field.name(), r.data_type().clone(), true));
                columns.push(r);
            }
            None => {
                schema_fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns).unwrap_or(batch)
}

/// The column as the server encodes it, or None when arrow-pg's encoding is right.
fn render_column(text: bool, pg_type: Option<&Type>, column: &ArrayRef) -> Option<ArrayRef> {
    // Timestamps print at PostgreSQL's microsecond precision, whatever unit computed them
    // (`date_trunc` answers in nanoseconds).
    let column = &match column.data_type() {
        DataType::Timestamp(unit, tz) if text && *unit != TimeUnit::Microsecond => {
            let micros = DataType::Timestamp(TimeUnit::Microsecond, tz.clone());
            datafusion::arrow::compute::cast(column, &micros).ok()?
        }
        _ => column.clone(),
    };
    let vector = [Type::INT2_VECTOR.oid(), Type::OID_VECTOR.oid()];
    if text && pg_type.is_some_and(|t| vector.contains(&t.oid())) {
        return column.as_list_opt::<i32>().map(space_separated);
    }
    if !text && matches!(pg_type, Some(&Type::UUID | &Type::JSONB)) {
        return column
            .as_string_opt::<i32>()
            .map(|values| binary_text_typed(pg_type == Some(&Type::UUID), values));
    }
    let time = |v: i64| {
        chrono::NaiveTime::from_num_seconds_from_midnight_opt(
            (v / 1_000_000) as u32,
            ((v % 1_000_000) * 1000) as u32,
        )
        .map(|t| {
            let mut s = String::new();
            push_time(&mut s, t);
            s
        })
    };
    let rendered: ArrayRef = match (text, column.data_type()) {
        (true, DataType::Time64(TimeUnit::Microsecond)) => Arc::new(
            column
                .as_primitive::<Time64MicrosecondType>()
                .iter()
                .map(|v| v.and_then(time))
                .collect::<StringArray>(),
        ),
        (true, DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            let suffix = if tz.is_some() { "+00" } else { "" };
            Arc::new(
                column
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .map(|v| {
                        let dt = chrono::DateTime::from_timestamp_micros(v?)?.naive_utc();
                        let mut s = dt.format("%Y-%m-%d ").to_string();
                        push_time(&mut s, dt.time());
                        s.push_str(suffix);
                        Some(s)
                    })
                    .collect::<StringArray>(),
            )
        }
        (true, DataType::Float64) => Arc::new(
            column
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(float8_text))
                .collect::<StringArray>(),
        ),
        (true, DataType::Float32) => Arc::new(
            column
                .as_primitive::<Float32Type>()
                .iter()
                .map(|v| v.map(float4_text))
                .collect::<StringArray>(),
        ),
        (true, DataType::Interval(IntervalUnit::MonthDayNano)) => Arc::new(
            column
                .as_primitive::<IntervalMonthDayNanoType>()
                .iter()
                .map(|v| v.map(|v| interval_text(v.months, v.days, v.nanoseconds / 1000)))
                .collect::<StringArray>(),
        ),
        (true, DataType::Decimal128(_, scale)) => Arc::new(
            column
                .as_primitive::<Decimal128Type>()
                .iter()
                .map(|v| v.map(|v| numeric_text(v, *scale)))
                .collect::<StringArray>(),
        ),
        (false, DataType::Decimal128(_, scale)) => Arc::new(
            column
                .as_primitive::<Decimal128Type>()
                .iter()
                .map(|v| v.map(|v| numeric_binary(v, *scale)))
                .collect::<BinaryArray>(),
        ),
        // PostgreSQL's binary interval: microseconds, days, months.
        (false, DataType::Interval(IntervalUnit::MonthDayNano)) => Arc::new(
            column
                .as_primitive::<IntervalMonthDayNanoType>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let mut bytes = Vec::with_capacity(16);
                        bytes.extend_from_slice(&(v.nanoseconds / 1000).to_be_bytes());
                        bytes.extend_from_slice(&v.days.to_be_bytes());
                        bytes.extend_from_slice(&v.months.to_be_bytes());
                        bytes
                    })
                })
                .collect::<BinaryArray>(),
        ),
        _ => return None,
    };
    Some(rendered)
}

/// The text form of `int2vector` and `oidvector`: `1 2 3`.
fn space_separated(lists: &ListArray) -> ArrayRef {
    let text = |values: ArrayRef| -> String {
        (0..values.len())
            .map(|i| {
                datafusion::arrow::util::display::array_value_to_string(&values, i)
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Arc::new(lists.iter().map(|l| l.map(text)).collect::<StringArray>())
}

/// The binary wire form of uuid (16 bytes) or jsonb (version 1, then the text) values. Writes
/// check that uuid values parse; one that still does not (written before that check) goes out
/// as 16 zero bytes rather than as bytes the client would misread.
fn binary_text_typed(uuid: bool, values: &StringArray) -> ArrayRef {
    Arc::new(
        values
            .iter()
            .map(|v| {
                v.map(|v| {
                    if uuid {
                        uuid::Uuid::parse_str(v)
                            .unwrap_or_default()
                            .as_bytes()
                            .to_vec()
                    } else {
                        let mut bytes = Vec::with_capacity(v.len() + 1);
                        bytes.push(1u8);
                        bytes.extend_from_slice(v.as_bytes());
                        bytes
                    }
                })
            })
            .collect::<BinaryArray>(),
    )
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
