use serde::{Deserialize, Serialize};

/// A column's SQL type as the user declared it. The Arrow type used in memory and the
/// PostgreSQL type OID shown to clients are both derived from this one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(p, s)`; a bare `numeric` is stored as (38, 10).
    Numeric {
        precision: u8,
        scale: i8,
    },
    Text,
    Varchar(Option<u32>),
    Char(u32),
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Json,
    Jsonb,
    Array(Box<SqlType>),
}

impl SqlType {
    /// The PostgreSQL spelling, as `format_type` would print it.
    pub fn pg_name(&self) -> String {
        match self {
            SqlType::Bool => "boolean".into(),
            SqlType::Int2 => "smallint".into(),
            SqlType::Int4 => "integer".into(),
            SqlType::Int8 => "bigint".into(),
            SqlType::Float4 => "real".into(),
            SqlType::Float8 => "double precision".into(),
            SqlType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::Text => "text".into(),
            SqlType::Varchar(None) => "character varying".into(),
            SqlType::Varchar(Some(n)) => format!("character varying({n})"),
            SqlType::Char(n) => format!("character({n})"),
            SqlType::Bytea => "bytea".into(),
            SqlType::Date => "date".into(),
            SqlType::Time => "time without time zone".into(),
            SqlType::Timestamp => "timestamp without time zone".into(),
            SqlType::TimestampTz => "timestamp with time zone".into(),
            SqlType::Interval => "interval".into(),
            SqlType::Uuid => "uuid".into(),
            SqlType::Json => "json".into(),
            SqlType::Jsonb => "jsonb".into(),
            SqlType::Array(inner) => format!("{}[]", inner.pg_name()),
        }
    }

    /// The canonical PostgreSQL type OID (pg_type.oid).
    pub fn pg_oid(&self) -> u32 {
        match self {
            SqlType::Bool => 16,
            SqlType::Int2 => 21,
            SqlType::Int4 => 23,
            SqlType::Int8 => 20,
            SqlType::Float4 => 700,
            SqlType::Float8 => 701,
            SqlType::Numeric { .. } => 1700,
            SqlType::Text => 25,
            SqlType::Varchar(_) => 1043,
            SqlType::Char(_) => 1042,
            SqlType::Bytea => 17,
            SqlType::Date => 1082,
            SqlType::Time => 1083,
            SqlType::Timestamp => 1114,
            SqlType::TimestampTz => 1184,
            SqlType::Interval => 1186,
            SqlType::Uuid => 2950,
            SqlType::Json => 114,
            SqlType::Jsonb => 3802,
            SqlType::Array(inner) => match inner.as_ref() {
                SqlType::Bool => 1000,
                SqlType::Int2 => 1005,
                SqlType::Int4 => 1007,
                SqlType::Int8 => 1016,
                SqlType::Float4 => 1021,
                SqlType::Float8 => 1022,
                SqlType::Numeric { .. } => 1231,
                SqlType::Text => 1009,
                SqlType::Varchar(_) => 1015,
                SqlType::Char(_) => 1014,
                SqlType::Bytea => 1001,
                SqlType::Date => 1182,
                SqlType::Time => 1183,
                SqlType::Timestamp => 1115,
                SqlType::TimestampTz => 1185,
                SqlType::Interval => 1187,
                SqlType::Uuid => 2951,
                SqlType::Json => 199,
                SqlType::Jsonb => 3807,
                SqlType::Array(_) => 1009,
            },
        }
    }
}
