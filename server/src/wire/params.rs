//! Bind parameters: the types the server announces for `$n` (ParameterDescription) and the
//! decoding of the values a client binds.
//!
//! A parameter's type comes, in this order, from the client (Parse's type OIDs), from a cast
//! written on the placeholder itself (`$1::uuid`, as PostgreSQL types it), and from what
//! DataFusion infers from the plan; text when none says. arrow-pg decodes the values, after
//! those it cannot read are retyped here: uuid, json and jsonb (held as text; asyncpg and
//! psycopg 3 send them in binary form) become text, oids become int4.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::{
    visit_expressions, ArrayElemTypeDef, DataType as SqlDataType, Expr, ObjectName, Statement,
    TimezoneInfo, Value,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::Type;

use crate::error::ServerError;

/// The type of each `$n` that a cast on the placeholder names (index 0 for `$1`).
pub fn cast_parameter_types(stmt: &Statement) -> Vec<Option<Type>> {
    let mut found: Vec<Option<Type>> = Vec::new();
    let _ = visit_expressions(stmt, |expr| {
        if let Expr::Cast {
            expr, data_type, ..
        } = expr
        {
            if let Expr::Value(v) = expr.as_ref() {
                if let Value::Placeholder(p) = &v.value {
                    let index = p.trim_start_matches('$').parse::<usize>().unwrap_or(0);
                    if let (Some(i), Some(t)) = (index.checked_sub(1), pg_type_of(data_type)) {
                        if found.len() <= i {
                            found.resize(i + 1, None);
                        }
                        found[i].get_or_insert(t);
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// The announced type of every parameter: the client's, the placeholder's cast, the plan's
/// inference, else text.
pub fn announced_types(
    client: &[Option<Type>],
    cast: &[Option<Type>],
    inferred: &[Option<DataType>],
) -> Vec<Type> {
    let count = client.len().max(cast.len()).max(inferred.len());
    (0..count)
        .map(|i| {
            client
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .or_else(|| cast.get(i).cloned().flatten())
                .or_else(|| {
                    inferred
                        .get(i)
                        .cloned()
                        .flatten()
                        .and_then(|t| arrow_pg::datatypes::into_pg_type(&t).ok())
                })
                .unwrap_or(Type::TEXT)
        })
        .collect()
}

/// The bound values of `portal`, typed as announced.
pub fn decode_parameters<S: Clone>(
    portal: &Portal<S>,
    cast: &[Option<Type>],
    inferred: &[Option<DataType>],
) -> Result<ParamValues, ServerError> {
    let client = &portal.statement.parameter_types;
    let types = announced_types(client, cast, inferred);
    let rewritten = match types.iter().any(|t| read_as(t).is_some()) {
        true => Some(readable_parameters(portal, &types)?),
        false => None,
    };
    let portal = rewritten.as_ref().unwrap_or(portal);
    let inferred: Vec<Option<&DataType>> = inferred.iter().map(|t| t.as_ref()).collect();
    let types: Vec<Type> = types
        .iter()
        .map(|t| read_as(t).unwrap_or(t.clone()))
        .collect();
    let server: Vec<Option<&Type>> = types.iter().map(Some).collect();
    arrow_pg::datatypes::df::deserialize_parameters_with_server_types(portal, &inferred, &server)
        .map_err(|e| ServerError::InvalidText(e.to_string()))
}

/// The type arrow-pg reads a parameter of type `ty` as, when not `ty` itself: text for the
/// types Shoal holds as text, and int4 for oids (which Shoal's catalog holds as int4; their
/// binary forms are the same four bytes).
fn read_as(ty: &Type) -> Option<Type> {
    Some(match *ty {
        Type::UUID | Type::JSON | Type::JSONB => Type::TEXT,
        Type::OID => Type::INT4,
        Type::OID_ARRAY => Type::INT4_ARRAY,
        _ => return None,
    })
}

/// A copy of `portal` whose parameters arrow-pg cannot read are retyped as `read_as` says, the
/// binary uuid and jsonb values turned into text.
fn readable_parameters<S: Clone>(
    portal: &Portal<S>,
    types: &[Type],
) -> Result<Portal<S>, ServerError> {
    let mut parameters = portal.parameters.clone();
    let mut client_types = portal.statement.parameter_types.clone();
    let mut formats = Vec::with_capacity(parameters.len());
    for (i, value) in parameters.iter_mut().enumerate() {
        let binary = portal.parameter_format.is_binary(i);
        let ty = types.get(i).cloned().unwrap_or(Type::TEXT);
        let Some(readable) = read_as(&ty) else {
            formats.push(i16::from(binary));
            continue;
        };
        let mut format = i16::from(binary);
        if binary && readable == Type::TEXT {
            if let Some(bytes) = value.as_mut() {
                *bytes = binary_to_text(&ty, bytes)?.into();
            }
            format = 0;
        }
        if client_types.len() <= i {
            client_types.resize(i + 1, None);
        }
        client_types[i] = Some(readable);
        formats.push(format);
    }
    let statement = StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        client_types,
    );
    // Only read for its parameters: the rest of the portal does not matter.
    let mut copy = Portal::new_cursor(portal.name.clone(), Arc::new(statement));
    copy.parameter_format = Format::Individual(formats);
    copy.parameters = parameters;
    Ok(copy)
}

/// The text form of a binary uuid (16 bytes) or jsonb (a version byte, then the text).
fn binary_to_text(ty: &Type, bytes: &[u8]) -> Result<String, ServerError> {
    let bad = || ServerError::InvalidText(format!("invalid binary value for type {}", ty.name()));
    match *ty {
        Type::UUID => {
            let raw: [u8; 16] = bytes.try_into().map_err(|_| bad())?;
            Ok(uuid::Uuid::from_bytes(raw).hyphenated().to_string())
        }
        Type::JSONB => match bytes.split_first() {
            Some((1, text)) => String::from_utf8(text.to_vec()).map_err(|_| bad()),
            _ => Err(bad()),
        },
        _ => String::from_utf8(bytes.to_vec()).map_err(|_| bad()),
    }
}

/// The wire type a SQL type name stands for, where Shoal has one.
fn pg_type_of(data_type: &SqlDataType) -> Option<Type> {
    Some(match data_type {
        SqlDataType::Uuid => Type::UUID,
        SqlDataType::JSON => Type::JSON,
        SqlDataType::JSONB => Type::JSONB,
        SqlDataType::Interval { .. } => Type::INTERVAL,
        SqlDataType::Boolean | SqlDataType::Bool => Type::BOOL,
        SqlDataType::SmallInt(_) | SqlDataType::Int2(_) => Type::INT2,
        SqlDataType::Int(_) | SqlDataType::Integer(_) | SqlDataType::Int4(_) => Type::INT4,
        SqlDataType::BigInt(_) | SqlDataType::Int8(_) => Type::INT8,
        SqlDataType::Real | SqlDataType::Float4 => Type::FLOAT4,
        SqlDataType::Double(_) | SqlDataType::DoublePrecision | SqlDataType::Float8 => Type::FLOAT8,
        SqlDataType::Numeric(_) | SqlDataType::Decimal(_) => Type::NUMERIC,
        SqlDataType::Text => Type::TEXT,
        SqlDataType::Varchar(_) | SqlDataType::CharacterVarying(_) => Type::VARCHAR,
        SqlDataType::Bytea => Type::BYTEA,
        SqlDataType::Date => Type::DATE,
        SqlDataType::Time(_, _) => Type::TIME,
        SqlDataType::Timestamp(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => {
            Type::TIMESTAMPTZ
        }
        SqlDataType::Timestamp(_, _) => Type::TIMESTAMP,
        SqlDataType::Array(ArrayElemTypeDef::SquareBracket(elem, _))
        | SqlDataType::Array(ArrayElemTypeDef::AngleBracket(elem)) => array_of(&pg_type_of(elem)?)?,
        SqlDataType::Custom(name, _) => named_type(name)?,
        _ => return None,
    })
}

fn array_of(elem: &Type) -> Option<Type> {
    Some(match *elem {
        Type::BOOL => Type::BOOL_ARRAY,
        Type::INT2 => Type::INT2_ARRAY,
        Type::INT4 => Type::INT4_ARRAY,
        Type::INT8 => Type::INT8_ARRAY,
        Type::OID => Type::OID_ARRAY,
        Type::FLOAT4 => Type::FLOAT4_ARRAY,
        Type::FLOAT8 => Type::FLOAT8_ARRAY,
        Type::NUMERIC => Type::NUMERIC_ARRAY,
        Type::TEXT => Type::TEXT_ARRAY,
        Type::VARCHAR => Type::VARCHAR_ARRAY,
        Type::DATE => Type::DATE_ARRAY,
        Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
        _ => return None,
    })
}

/// Type names the SQL parser leaves as custom names. (`regclass` and friends stay text: that
/// is how clients send them.)
fn named_type(name: &ObjectName) -> Option<Type> {
    let last = name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    Some(match last.as_str() {
        "oid" => Type::OID,
        "int2" => Type::INT2,
        "int4" => Type::INT4,
        "int8" => Type::INT8,
        "float4" => Type::FLOAT4,
        "float8" => Type::FLOAT8,
        "timestamptz" => Type::TIMESTAMPTZ,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> Statement {
        shoal_planner::parse_sql(sql)
            .expect("parses")
            .into_iter()
            .next()
            .expect("one statement")
    }

    #[test]
    fn a_cast_on_the_placeholder_types_it() {
        let types = cast_parameter_types(&statement(
            "SELECT $2::uuid, $1::int[], CAST($4 AS date), $5 + 1 FROM t WHERE a = $3::oid",
        ));
        assert_eq!(
            types,
            vec![
                Some(Type::INT4_ARRAY),
                Some(Type::UUID),
                Some(Type::OID),
                Some(Type::DATE)
            ]
        );
    }

    #[test]
    fn the_client_type_wins_then_the_cast_then_the_inference() {
        let announced = announced_types(
            &[Some(Type::INT8), Some(Type::UNKNOWN), None],
            &[Some(Type::INT4), Some(Type::UUID)],
            &[None, Some(DataType::Int64), Some(DataType::Float64), None],
        );
        assert_eq!(
            announced,
            vec![Type::INT8, Type::UUID, Type::FLOAT8, Type::TEXT]
        );
    }

    #[test]
    fn binary_uuid_and_jsonb_become_text() {
        let raw = [
            0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78, 0x12, 0x34,
            0x56, 0x78,
        ];
        assert_eq!(
            binary_to_text(&Type::UUID, &raw).expect("16 bytes"),
            "12345678-1234-5678-1234-567812345678"
        );
        assert!(binary_to_text(&Type::UUID, &raw[..15]).is_err());
        assert_eq!(
            binary_to_text(&Type::JSONB, b"\x01{\"k\": 1}").expect("version 1"),
            "{\"k\": 1}"
        );
        assert!(binary_to_text(&Type::JSONB, b"\x02{}").is_err());
    }
}
