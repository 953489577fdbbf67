//! JSON constructors that client introspection queries use: `json_build_object(k1, v1, ...)`
//! (SQLAlchemy's column reflection builds identity and collation details with it). Values are
//! written as PostgreSQL writes them: numbers and booleans bare, NULL as `null`, the rest as
//! JSON strings of their text form.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

pub(crate) fn json_build_object_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonBuildObject {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

/// `s` as a JSON string literal.
fn quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_value(array: &ArrayRef, formatter: &ArrayFormatter, row: usize, out: &mut String) {
    if array.data_type() == &DataType::Null || array.is_null(row) {
        out.push_str("null");
        return;
    }
    let text = formatter.value(row).to_string();
    match array.data_type() {
        DataType::Boolean => out.push_str(&text),
        t if t.is_numeric() && text.parse::<f64>().is_ok_and(f64::is_finite) => out.push_str(&text),
        _ => quoted(&text, out),
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return exec_err!("argument list must have even number of elements");
        }
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let options = FormatOptions::default();
        let formatters = arrays
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut builder = StringBuilder::new();
        let mut text = String::new();
        for row in 0..rows {
            text.clear();
            text.push('{');
            for pair in 0..arrays.len() / 2 {
                let (k, v) = (pair * 2, pair * 2 + 1);
                if arrays[k].is_null(row) {
                    return exec_err!("null value not allowed for object key");
                }
                if pair > 0 {
                    text.push_str(", ");
                }
                quoted(&formatters[k].value(row).to_string(), &mut text);
                text.push_str(" : ");
                json_value(&arrays[v], &formatters[v], row, &mut text);
            }
            text.push('}');
            builder.append_value(&text);
        }
        let array: ArrayRef = Arc::new(builder.finish());
        Ok(crate::functions::scalar_or_array(&args.args, array))
    }
}
