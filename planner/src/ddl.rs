//! Translating DDL statements (sqlparser AST) into catalog definitions.

use datafusion::sql::sqlparser::ast::{
    self, ArrayElemTypeDef, CharacterLength, ColumnOption, CreateTable, CreateTableOptions,
    ExactNumberInfo, ObjectName, SqlOption, TableConstraint, TimezoneInfo,
};
use shoal_coord::{ColumnDef, SqlType, TableDef};

use crate::PlannerError;

/// Partitions a table gets when `CREATE TABLE ... WITH (partitions = N)` does not say.
pub const DEFAULT_PARTITIONS: u32 = 4;

/// Normalizes an identifier as PostgreSQL does: unquoted names fold to lower case.
pub fn ident_name(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Splits `a.b` / `b` into (schema, name), with `public` as the default schema.
pub fn object_name(name: &ObjectName) -> Result<(String, String), PlannerError> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(ident_name))
        .collect();
    match parts.as_slice() {
        [table] => Ok(("public".into(), table.clone())),
        [schema, table] => Ok((schema.clone(), table.clone())),
        [_db, schema, table] => Ok((schema.clone(), table.clone())),
        _ => Err(PlannerError::InvalidDefinition(format!(
            "improper qualified name: {name}"
        ))),
    }
}

fn char_len(len: &Option<CharacterLength>) -> Option<u32> {
    match len {
        Some(CharacterLength::IntegerLength { length, .. }) => Some(*length as u32),
        _ => None,
    }
}

fn numeric(info: &ExactNumberInfo) -> SqlType {
    match info {
        ExactNumberInfo::None => SqlType::Numeric {
            precision: 38,
            scale: 10,
        },
        ExactNumberInfo::Precision(p) => SqlType::Numeric {
            precision: (*p).min(38) as u8,
            scale: 0,
        },
        ExactNumberInfo::PrecisionAndScale(p, s) => SqlType::Numeric {
            precision: (*p).min(38) as u8,
            scale: *s as i8,
        },
    }
}

/// The Shoal type of a declared SQL type.
pub fn sql_type(t: &ast::DataType) -> Result<SqlType, PlannerError> {
    use ast::DataType as D;
    Ok(match t {
        D::Bool | D::Boolean => SqlType::Bool,
        D::Int2(_) | D::SmallInt(_) => SqlType::Int2,
        D::Int(_) | D::Int4(_) | D::Integer(_) => SqlType::Int4,
        D::Int8(_) | D::BigInt(_) => SqlType::Int8,
        D::Float4 | D::Real => SqlType::Float4,
        D::Float8 | D::Double(_) | D::DoublePrecision => SqlType::Float8,
        D::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => SqlType::Float4,
        D::Float(_) => SqlType::Float8,
        D::Numeric(info) | D::Decimal(info) => numeric(info),
        D::Text | D::String(_) => SqlType::Text,
        D::Varchar(len) | D::CharacterVarying(len) => SqlType::Varchar(char_len(len)),
        D::Char(len) | D::Character(len) => SqlType::Char(char_len(len).unwrap_or(1)),
        D::Bytea => SqlType::Bytea,
        D::Date => SqlType::Date,
        D::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => SqlType::Time,
        D::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => SqlType::Timestamp,
        D::Timestamp(_, _) => SqlType::TimestampTz,
        D::Interval { .. } => SqlType::Interval,
        D::Uuid => SqlType::Uuid,
        D::JSON => SqlType::Json,
        D::JSONB => SqlType::Jsonb,
        D::Array(
            ArrayElemTypeDef::SquareBracket(inner, _)
            | ArrayElemTypeDef::AngleBracket(inner)
            | ArrayElemTypeDef::Parenthesis(inner),
        ) => match sql_type(inner)? {
            SqlType::Array(_) => {
                return Err(PlannerError::NotSupported("multidimensional arrays".into()))
            }
            inner => SqlType::Array(Box::new(inner)),
        },
        D::Custom(name, _) => match name.to_string().to_lowercase().as_str() {
            "timestamptz" => SqlType::TimestampTz,
            "int2" => SqlType::Int2,
            "int4" => SqlType::Int4,
            "int8" => SqlType::Int8,
            "float4" => SqlType::Float4,
            "float8" => SqlType::Float8,
            "bool" => SqlType::Bool,
            "serial" | "bigserial" | "smallserial" => {
                return Err(PlannerError::NotSupported(
                    "serial columns (sequences)".into(),
                ))
            }
            other => return Err(PlannerError::UnknownType(other.to_string())),
        },
        other => return Err(PlannerError::UnknownType(other.to_string())),
    })
}

fn key_columns(columns: &[ast::IndexColumn]) -> Vec<String> {
    columns
        .iter()
        .filter_map(|c| match &c.column.expr {
            ast::Expr::Identifier(i) => Some(ident_name(i)),
            _ => None,
        })
        .collect()
}

/// `WITH (partitions = N)`; other storage options (fillfactor, ...) are accepted and ignored,
/// as they only tune PostgreSQL's heap.
fn partitions_option(options: &CreateTableOptions) -> Result<u32, PlannerError> {
    Ok(
        integer_option(options, "partitions", 1..=4096)?.unwrap_or(DEFAULT_PARTITIONS as u64)
            as u32,
    )
}

/// `WITH (replicas = N)`: copies of each partition, the leader's included (a cluster keeps
/// one per live node at most).
fn replicas_option(options: &CreateTableOptions) -> Result<Option<usize>, PlannerError> {
    Ok(integer_option(options, "replicas", 1..=7)?.map(|n| n as usize))
}

/// The integer storage option `name`, if given, which must lie in `range`.
fn integer_option(
    options: &CreateTableOptions,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, PlannerError> {
    let list = match options {
        CreateTableOptions::With(l) | CreateTableOptions::Options(l) => l.as_slice(),
        _ => &[],
    };
    for o in list {
        if let SqlOption::KeyValue { key, value } = o {
            if ident_name(key) == name {
                return value
                    .to_string()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        PlannerError::InvalidDefinition(format!(
                            "{name} must be an integer between {} and {}, not {value}",
                            range.start(),
                            range.end()
                        ))
                    });
            }
        }
    }
    Ok(None)
}

/// `WITH (partition_key = 'a, b')`: the primary key columns whose values alone decide a row's
/// partition, so that tables partitioned on the same columns with the same partition count
/// keep matching rows on the same node (their joins run there). Empty: the whole key.
fn partition_key_option(options: &CreateTableOptions) -> Vec<String> {
    let list = match options {
        CreateTableOptions::With(l) | CreateTableOptions::Options(l) => l.as_slice(),
        _ => &[],
    };
    list.iter()
        .find_map(|o| match o {
            SqlOption::KeyValue { key, value } if ident_name(key) == "partition_key" => {
                let text = match value {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => s.clone(),
                        other => other.to_string(),
                    },
                    ast::Expr::Identifier(i) => ident_name(i),
                    other => other.to_string(),
                };
                Some(
                    text.split(',')
                        .map(|c| c.trim().to_lowercase())
                        .filter(|c| !c.is_empty())
                        .collect(),
                )
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// What `CREATE TABLE` asks for.
pub struct NewTable {
    /// The definition (id and partitions are assigned by the catalog).
    pub def: TableDef,
    pub partitions: u32,
    /// `WITH (replicas = N)`, if given.
    pub replicas: Option<usize>,
    /// The UNIQUE constraints (column or table ones) other than the primary key, each as the
    /// name PostgreSQL gives its index (`<table>_<columns>_key`) and its columns; they become
    /// unique indexes once the table exists.
    pub unique: Vec<(String, Vec<String>)>,
}

/// Builds a table definition, its partition count and its UNIQUE constraints from
/// `CREATE TABLE`.
pub fn table_from_create(create: &CreateTable) -> Result<NewTable, PlannerError> {
    if create.query.is_some() {
        return Err(PlannerError::NotSupported("CREATE TABLE AS".into()));
    }
    let (schema, name) = object_name(&create.name)?;
    let mut columns = Vec::new();
    let mut primary_key: Vec<String> = Vec::new();
    let mut unique: Vec<Vec<String>> = Vec::new();
    for (id, c) in create.columns.iter().enumerate() {
        let col_name = ident_name(&c.name);
        let mut def = ColumnDef {
            id: id as u32,
            name: col_name.clone(),
            sql_type: sql_type(&c.data_type)?,
            nullable: true,
            default: None,
            dropped: false,
        };
        for opt in &c.options {
            match &opt.option {
                ColumnOption::Null => def.nullable = true,
                ColumnOption::NotNull => def.nullable = false,
                ColumnOption::Default(e) => def.default = Some(e.to_string()),
                ColumnOption::PrimaryKey(_) => {
                    if !primary_key.is_empty() {
                        return Err(PlannerError::InvalidDefinition(format!(
                            "multiple primary keys for table \"{name}\" are not allowed"
                        )));
                    }
                    primary_key.push(col_name.clone());
                }
                ColumnOption::Unique(_) => unique.push(vec![col_name.clone()]),
                ColumnOption::ForeignKey(_) => {
                    return Err(PlannerError::NotSupported("foreign keys".into()))
                }
                ColumnOption::Check(_) => {
                    return Err(PlannerError::NotSupported("CHECK constraints".into()))
                }
                other => return Err(PlannerError::NotSupported(format!("column option {other}"))),
            }
        }
        columns.push(def);
    }
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                if !primary_key.is_empty() {
                    return Err(PlannerError::InvalidDefinition(format!(
                        "multiple primary keys for table \"{name}\" are not allowed"
                    )));
                }
                primary_key = key_columns(&pk.columns);
            }
            TableConstraint::Unique(u) => unique.push(key_columns(&u.columns)),
            TableConstraint::ForeignKey(_) => {
                return Err(PlannerError::NotSupported("foreign keys".into()))
            }
            other => return Err(PlannerError::NotSupported(format!("constraint {other}"))),
        }
    }
    let mut key_ids = Vec::new();
    for k in &primary_key {
        let column = columns.iter_mut().find(|c| &c.name == k).ok_or_else(|| {
            PlannerError::InvalidDefinition(format!("column \"{k}\" named in key does not exist"))
        })?;
        if matches!(
            column.sql_type,
            SqlType::Array(_) | SqlType::Interval | SqlType::Bool | SqlType::Json | SqlType::Jsonb
        ) {
            return Err(PlannerError::NotSupported(format!(
                "type {} in a primary key",
                column.sql_type.pg_name()
            )));
        }
        column.nullable = false;
        key_ids.push(column.id);
    }
    let partitions = partitions_option(&create.table_options)?;
    let replicas = replicas_option(&create.table_options)?;
    let mut partition_key = Vec::new();
    for name in partition_key_option(&create.table_options) {
        let id = columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id)
            .filter(|id| key_ids.contains(id))
            .ok_or_else(|| {
                PlannerError::InvalidDefinition(format!(
                    "partition_key column \"{name}\" is not a column of the primary key"
                ))
            })?;
        if !partition_key.contains(&id) {
            partition_key.push(id);
        }
    }
    let unique = unique
        .into_iter()
        .filter(|columns| *columns != primary_key)
        .map(|columns| (format!("{name}_{}_key", columns.join("_")), columns))
        .collect();
    Ok(NewTable {
        def: TableDef {
            id: 0,
            schema,
            name,
            columns,
            primary_key: key_ids,
            partition_key,
            partitions: Vec::new(),
            indexes: Vec::new(),
            row_type_oid: 0,
            replicas: 1,
        },
        partitions,
        replicas,
        unique,
    })
}
