//! JSON constructors: `json_build_object(k1, v1, ...)` (SQLAlchemy's column reflection builds
//! identity and collation details with it), `json_build_array(...)`, `to_json(v)` and their
//! jsonb forms. Values are written as PostgreSQL writes them: numbers and booleans bare, NULL
//! as `null`, arrays as JSON arrays, json and jsonb values as they are, the rest as JSON
//! strings of their text form. The json forms keep PostgreSQL's spacing (`{"a" : 1}`); the
//! jsonb forms are canonical.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{exec_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use shoal_executor::json::{canonical_jsonb, write_string, JsonType};

use super::accessors::{document_field, json_type_of};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    /// `json_build_object(k1, v1, ...)`.
    Object,
    /// `json_build_array(v1, ...)`.
    Array,
    /// `to_json(v)`.
    Value,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuild {
    name: &'static str,
    ty: JsonType,
    shape: Shape,
    signature: Signature,
}

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    [
        ("json_build_object", JsonType::Json, Shape::Object),
        ("jsonb_build_object", JsonType::Jsonb, Shape::Object),
        ("json_build_array", JsonType::Json, Shape::Array),
        ("jsonb_build_array", JsonType::Jsonb, Shape::Array),
        ("to_json", JsonType::Json, Shape::Value),
        ("to_jsonb", JsonType::Jsonb, Shape::Value),
    ]
    .into_iter()
    .map(|(name, ty, shape)| {
        let signature = match shape {
            Shape::Value => Signature::any(1, Volatility::Stable),
            _ => Signature::variadic_any(Volatility::Stable),
        };
        ScalarUDF::new_from_impl(JsonBuild {
            name,
            ty,
            shape,
            signature,
        })
    })
    .collect()
}

/// One argument column and how to write its values.
struct Argument<'a> {
    array: &'a ArrayRef,
    formatter: ArrayFormatter<'a>,
    /// A json or jsonb argument is embedded as it is.
    is_document: bool,
}

impl Argument<'_> {
    fn write(&self, row: usize, out: &mut String) -> Result<()> {
        write_value(self.array, &self.formatter, self.is_document, row, out)
    }
}

fn write_value(
    array: &ArrayRef,
    formatter: &ArrayFormatter,
    is_document: bool,
    row: usize,
    out: &mut String,
) -> Result<()> {
    if array.data_type() == &DataType::Null || array.is_null(row) {
        out.push_str("null");
        return Ok(());
    }
    if let DataType::List(_) = array.data_type() {
        let items = array.as_list::<i32>().value(row);
        let options = FormatOptions::default();
        let item_formatter = ArrayFormatter::try_new(items.as_ref(), &options)?;
        out.push('[');
        for i in 0..items.len() {
            if i > 0 {
                out.push(',');
            }
            write_value(&items, &item_formatter, false, i, out)?;
        }
        out.push(']');
        return Ok(());
    }
    let text = formatter.value(row).to_string();
    match array.data_type() {
        _ if is_document => out.push_str(&text),
        DataType::Boolean => out.push_str(&text),
        t if t.is_numeric() && text.parse::<f64>().is_ok_and(f64::is_finite) => out.push_str(&text),
        _ => write_string(&text, out),
    }
    Ok(())
}

impl ScalarUDFImpl for JsonBuild {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(document_field(self.name, self.ty)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if self.shape == Shape::Object && !args.args.len().is_multiple_of(2) {
            return exec_err!("argument list must have even number of elements");
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let options = FormatOptions::default();
        let arguments = arrays
            .iter()
            .zip(&args.arg_fields)
            .map(|(array, field)| {
                Ok(Argument {
                    array,
                    formatter: ArrayFormatter::try_new(array.as_ref(), &options)?,
                    is_document: json_type_of(field).is_some(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut builder = StringBuilder::new();
        let mut text = String::new();
        for row in 0..args.number_rows {
            text.clear();
            match self.shape {
                Shape::Value if arguments[0].array.is_null(row) => {
                    builder.append_null();
                    continue;
                }
                Shape::Value => arguments[0].write(row, &mut text)?,
                Shape::Array => {
                    text.push('[');
                    for (i, argument) in arguments.iter().enumerate() {
                        if i > 0 {
                            text.push_str(", ");
                        }
                        argument.write(row, &mut text)?;
                    }
                    text.push(']');
                }
                Shape::Object => {
                    text.push('{');
                    for (pair, kv) in arguments.chunks(2).enumerate() {
                        if kv[0].array.is_null(row) {
                            return Err(DataFusionError::Execution(
                                "null value not allowed for object key".into(),
                            ));
                        }
                        if pair > 0 {
                            text.push_str(", ");
                        }
                        write_string(&kv[0].formatter.value(row).to_string(), &mut text);
                        text.push_str(" : ");
                        kv[1].write(row, &mut text)?;
                    }
                    text.push('}');
                }
            }
            match self.ty {
                JsonType::Json => builder.append_value(&text),
                JsonType::Jsonb => builder.append_value(
                    canonical_jsonb(&text).map_err(|e| DataFusionError::External(Box::new(e)))?,
                ),
            }
        }
        let array: ArrayRef = Arc::new(builder.finish());
        Ok(crate::functions::scalar_or_array(&args.args, array))
    }
}
