//! PostgreSQL's text output where DataFusion's differs: floats (`26`, `1e+21`, `-Infinity`
//! where Arrow prints `26.0`, `1e21`, `-inf`). The wire layer prints float columns with these
//! functions, and `pg_float4_out` / `pg_float8_out` do the same for casts of floats to text.
//! Arrays cast to text print as `{a,b}` (`pg_array_out`), not as Arrow's `[a, b]`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Signature, SimpleScalarUDF, Volatility};

/// A float8 as PostgreSQL prints it.
pub fn float8_text(v: f64) -> String {
    float_text(v, format!("{v:e}"), format!("{v}"), 15)
}

/// A float4 as PostgreSQL prints it (the shortest digits of the 32-bit value).
pub fn float4_text(v: f32) -> String {
    float_text(f64::from(v), format!("{v:e}"), format!("{v}"), 6)
}

/// The shortest digits that read back the same value, in plain notation when the decimal
/// exponent is in [-4, `digits`), else as `1.5e+21`. `scientific` and `plain` are Rust's
/// shortest forms of the value in its own width (`{:e}` and `{}`).
fn float_text(v: f64, scientific: String, plain: String, digits: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return plain;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if v == 0.0 || (-4..digits).contains(&exponent) {
        return plain;
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// `pg_float4_out(float4)` / `pg_float8_out(float8)`: the text of a float as PostgreSQL
/// prints it (`width` says which).
pub(crate) fn float_out_udf(width: &DataType) -> ScalarUDF {
    let name = match width {
        DataType::Float32 => "pg_float4_out",
        _ => "pg_float8_out",
    };
    datafusion::logical_expr::create_udf(
        name,
        vec![width.clone()],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let [arg] = args else {
                return Err(DataFusionError::Plan("pg_float_out takes one float".into()));
            };
            let array = arg.to_array(1)?;
            let texts: StringArray = match array.data_type() {
                DataType::Float32 => array
                    .as_primitive::<Float32Type>()
                    .iter()
                    .map(|v| v.map(float4_text))
                    .collect(),
                _ => array
                    .as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| DataFusionError::Plan("pg_float_out takes one float".into()))?
                    .iter()
                    .map(|v| v.map(float8_text))
                    .collect(),
            };
            Ok(match arg {
                ColumnarValue::Scalar(_) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&texts, 0)?)
                }
                ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(texts)),
            })
        }),
    )
}

/// One array element as PostgreSQL's array output writes it: quoted when it is empty, is
/// `NULL` spelled out, or holds a delimiter, brace, quote, backslash or space.
fn array_element_text(text: &str) -> String {
    let needs_quotes = text.is_empty()
        || text.eq_ignore_ascii_case("null")
        || text
            .chars()
            .any(|c| matches!(c, ',' | '{' | '}' | '"' | '\\') || c.is_whitespace());
    if !needs_quotes {
        return text.to_string();
    }
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The text of value `i` of `array` inside an array literal.
fn element_text(array: &dyn Array, i: usize) -> Result<String, DataFusionError> {
    if array.is_null(i) {
        return Ok("NULL".into());
    }
    Ok(match array.data_type() {
        DataType::List(_) => list_text(array.as_list::<i32>().value(i).as_ref())?,
        DataType::Boolean => match array.as_boolean().value(i) {
            true => "t".into(),
            false => "f".into(),
        },
        DataType::Float32 => float4_text(array.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => float8_text(array.as_primitive::<Float64Type>().value(i)),
        _ => {
            let one = datafusion::arrow::compute::cast(&array.slice(i, 1), &DataType::Utf8)?;
            array_element_text(one.as_string::<i32>().value(0))
        }
    })
}

/// `{a,b,NULL}` for the values of `elements`.
fn list_text(elements: &dyn Array) -> Result<String, DataFusionError> {
    let texts = (0..elements.len())
        .map(|i| element_text(elements, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("{{{}}}", texts.join(",")))
}

/// `pg_array_out(list)`: an array's text as PostgreSQL prints it (`{a,b}`, not Arrow's
/// `[a, b]`), for casts of arrays to text.
pub(crate) fn array_out_udf() -> ScalarUDF {
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "pg_array_out",
        Signature::any(1, Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|args: &[ColumnarValue]| {
            let [arg] = args else {
                return Err(DataFusionError::Plan("pg_array_out takes one array".into()));
            };
            let array = arg.to_array(1)?;
            let DataType::List(_) = array.data_type() else {
                return Err(DataFusionError::Plan("pg_array_out takes one array".into()));
            };
            let lists = array.as_list::<i32>();
            let texts: StringArray = (0..lists.len())
                .map(|i| match lists.is_null(i) {
                    true => Ok(None),
                    false => list_text(lists.value(i).as_ref()).map(Some),
                })
                .collect::<Result<_, DataFusionError>>()?;
            Ok(crate::functions::scalar_or_array(args, Arc::new(texts)))
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_postgresql_prints_them() {
        assert_eq!(float8_text(26.0), "26");
        assert_eq!(float8_text(1e21), "1e+21");
        assert_eq!(float8_text(0.0001), "0.0001");
        assert_eq!(float8_text(0.00001), "1e-05");
        assert_eq!(float8_text(1234567890123456.0), "1.234567890123456e+15");
        assert_eq!(float8_text(123456789012345.0), "123456789012345");
        assert_eq!(float8_text(-0.0), "-0");
        assert_eq!(float8_text(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(float4_text(1234567.0), "1.234567e+06");
        assert_eq!(float4_text(0.1), "0.1");
    }

    #[test]
    fn array_elements_are_quoted_as_postgresql_quotes_them() {
        assert_eq!(array_element_text("public"), "public");
        assert_eq!(array_element_text("a b"), "\"a b\"");
        assert_eq!(array_element_text(""), "\"\"");
        assert_eq!(array_element_text("NULL"), "\"NULL\"");
        assert_eq!(array_element_text("x\"y"), "\"x\\\"y\"");
    }
}
