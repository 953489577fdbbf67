//! Catalog functions whose true answer in Shoal is fixed: Shoal has no sequences, comments,
//! triggers, rules or advisory locks, so `pg_get_serial_sequence`, `col_description`,
//! `obj_description`, `pg_get_triggerdef`, `pg_get_ruledef` answer NULL and
//! `pg_advisory_unlock_all` has nothing to release. `to_regtype` resolves built-in type names
//! to their canonical OIDs; `pg_encoding_to_char` names encodings as PostgreSQL does;
//! `pg_typeof(value)` names the value's type as `format_type` prints it.
//! Clients call these while introspecting (psql `\d+`, SQLAlchemy,
//! psycopg, asyncpg's pool reset); a missing function would fail the whole query.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// A function that returns one value whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConstantFunction {
    name: &'static str,
    signature: Signature,
    value: ScalarValue,
}

impl ScalarUDFImpl for ConstantFunction {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.value.data_type())
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `to_regtype(name)`: the OID of a built-in type, NULL for an unknown name.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToRegtype {
    signature: Signature,
}

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let names = args.args[0].to_array(args.number_rows)?;
        let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let oids: Int32Array = (0..names.len())
            .map(|i| {
                if names.is_null(i) {
                    None
                } else {
                    builtin_type_oid(names.value(i))
                }
            })
            .collect();
        Ok(crate::functions::scalar_or_array(
            &args.args,
            Arc::new(oids),
        ))
    }
}

/// Canonical OIDs of the built-in types Shoal stores, under their SQL and internal names.
fn builtin_type_oid(name: &str) -> Option<i32> {
    let name = name.trim().trim_start_matches("pg_catalog.").to_lowercase();
    let oid = match name.as_str() {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "char" | "\"char\"" => 18,
        "name" => 19,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "bpchar" | "character" => 1042,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" | "time without time zone" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        "int4[]" | "integer[]" | "_int4" => 1007,
        "int8[]" | "bigint[]" | "_int8" => 1016,
        "text[]" | "_text" => 1009,
        _ => return None,
    };
    Some(oid)
}

/// `pg_encoding_to_char(n)`: PostgreSQL's name of encoding number `n` (its `pg_enc` order);
/// an empty string for a number that names none, as PostgreSQL answers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct EncodingName {
    signature: Signature,
}

const ENCODINGS: &[&str] = &[
    "SQL_ASCII",
    "EUC_JP",
    "EUC_CN",
    "EUC_KR",
    "EUC_TW",
    "EUC_JIS_2004",
    "UTF8",
    "MULE_INTERNAL",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "WIN1256",
    "WIN1258",
    "WIN866",
    "WIN874",
    "KOI8R",
    "WIN1251",
    "WIN1252",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN1250",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1257",
    "KOI8U",
];

impl ScalarUDFImpl for EncodingName {
    fn name(&self) -> &str {
        "pg_encoding_to_char"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let numbers = args.args[0].to_array(args.number_rows)?;
        let numbers = datafusion::arrow::compute::cast(&numbers, &DataType::Int32)?;
        let numbers = numbers.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        let names: StringArray = numbers
            .iter()
            .map(|n| {
                n.map(|n| {
                    usize::try_from(n)
                        .ok()
                        .and_then(|i| ENCODINGS.get(i))
                        .copied()
                        .unwrap_or("")
                })
            })
            .collect();
        Ok(crate::functions::scalar_or_array(
            &args.args,
            Arc::new(names),
        ))
    }
}

/// `pg_typeof(value)`: the name of the value's type. A table column names the type it was
/// declared with (`character varying`, `json`), without its modifiers as PostgreSQL prints it;
/// other values name the PostgreSQL type of their Arrow type. The result is text, where
/// PostgreSQL's is a `regtype` (which prints the same).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let name = args.arg_fields.first().map(|f| type_name_of(f));
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(name)))
    }
}

fn type_name_of(field: &Field) -> String {
    if let Some(declared) = field.metadata().get(shoal_executor::PG_TYPE_METADATA_KEY) {
        return without_modifiers(declared);
    }
    arrow_type_name(field.data_type())
}

/// `numeric(10,2)[]` as `numeric[]`.
fn without_modifiers(declared: &str) -> String {
    let mut out = String::with_capacity(declared.len());
    let mut depth = 0;
    for c in declared.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn arrow_type_name(t: &DataType) -> String {
    match t {
        DataType::Null => "unknown",
        DataType::Boolean => "boolean",
        DataType::Int8 => "\"char\"",
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 => "bigint",
        DataType::UInt32 => "oid",
        DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(..) | DataType::Decimal256(..) | DataType::UInt64 => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::FixedSizeBinary(16) => "uuid",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Interval(_) | DataType::Duration(_) => "interval",
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            return format!("{}[]", type_name_of(item));
        }
        DataType::Struct(_) => "record",
        _ => "text",
    }
    .to_string()
}

pub(crate) fn register(ctx: &SessionContext) {
    let constant = |name: &'static str, signature: Signature, value: ScalarValue| {
        ScalarUDF::new_from_impl(ConstantFunction {
            name,
            signature,
            value,
        })
    };
    let any_args = || Signature::variadic_any(Volatility::Stable);
    for name in [
        "pg_get_serial_sequence",
        "col_description",
        "obj_description",
        "shobj_description",
        "pg_get_triggerdef",
        "pg_get_ruledef",
    ] {
        ctx.register_udf(constant(name, any_args(), ScalarValue::Utf8(None)));
    }
    // Every function, type and collation lives in pg_catalog (there is no CREATE FUNCTION,
    // TYPE or COLLATION), which is always on the search path.
    for name in [
        "pg_function_is_visible",
        "pg_type_is_visible",
        "pg_collation_is_visible",
    ] {
        ctx.register_udf(constant(name, any_args(), ScalarValue::Boolean(Some(true))));
    }
    // The ancestors of a partition, of which Shoal has none (PostgreSQL's sense: no table is
    // a partition of another); `pg_partition_ancestors(rel)` is the unnest of this list.
    let no_oids = ScalarValue::List(ScalarValue::new_list(&[], &DataType::Int32, true));
    ctx.register_udf(constant(
        "pg_partition_ancestor_oids",
        Signature::any(1, Volatility::Stable),
        no_oids,
    ));
    ctx.register_udf(constant(
        "pg_advisory_unlock_all",
        Signature::nullary(Volatility::Volatile),
        ScalarValue::Null,
    ));
    ctx.register_udf(ScalarUDF::new_from_impl(EncodingName {
        signature: Signature::any(1, Volatility::Immutable),
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(ToRegtype {
        signature: Signature::any(1, Volatility::Stable),
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(PgTypeof {
        signature: Signature::any(1, Volatility::Immutable),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_and_aliases_resolve_to_canonical_oids() {
        assert_eq!(builtin_type_oid("integer"), Some(23));
        assert_eq!(builtin_type_oid("pg_catalog.int4"), Some(23));
        assert_eq!(builtin_type_oid("Character Varying"), Some(1043));
        assert_eq!(builtin_type_oid("hstore"), None);
    }
}
