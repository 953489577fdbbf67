//! PostgreSQL's bytea input syntax. `'\x0102'::bytea` and a text literal inserted into a bytea
//! column mean the bytes 0x01 0x02, whereas Arrow's cast from text keeps the text's own bytes.
//! An analyzer rule turns every text-to-binary cast into `pg_bytea_in`, which decodes the hex
//! (`\x...`) and escape (`\\`, `\ooo`) formats.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BinaryBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    create_udf, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarUDF, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Decodes one bytea literal in PostgreSQL's input syntax.
pub fn decode_bytea(text: &str) -> Result<Vec<u8>, String> {
    if let Some(hex) = text
        .strip_prefix("\\x")
        .or_else(|| text.strip_prefix("\\X"))
    {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(format!(
                "invalid hexadecimal data: odd number of digits: \"{text}\""
            ));
        }
        return digits
            .chunks(2)
            .map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
                    .ok_or_else(|| format!("invalid hexadecimal digit in \"{text}\""))
            })
            .collect();
    }
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            return Err("invalid input syntax for type bytea".into());
        }
    }
    Ok(out)
}

pub(crate) fn bytea_in_udf() -> ScalarUDF {
    create_udf(
        "pg_bytea_in",
        vec![DataType::Utf8],
        DataType::Binary,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let decode = |s: &str| decode_bytea(s).map_err(DataFusionError::Execution);
            match &args[0] {
                ColumnarValue::Scalar(ScalarValue::Utf8(v)) => Ok(ColumnarValue::Scalar(
                    ScalarValue::Binary(v.as_deref().map(decode).transpose()?),
                )),
                other => {
                    let array = other.to_array(1)?;
                    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
                    let strings = array.as_string::<i32>();
                    let mut b = BinaryBuilder::new();
                    for i in 0..strings.len() {
                        if strings.is_null(i) {
                            b.append_null();
                        } else {
                            b.append_value(decode(strings.value(i))?);
                        }
                    }
                    Ok(ColumnarValue::Array(Arc::new(b.finish())))
                }
            }
        }),
    )
}

/// Rewrites `CAST(<text> AS bytea)` into `pg_bytea_in(<text>)`.
#[derive(Debug)]
pub(crate) struct ByteaInput {
    udf: Arc<ScalarUDF>,
}

impl ByteaInput {
    pub(crate) fn new() -> Self {
        ByteaInput {
            udf: Arc::new(bytea_in_udf()),
        }
    }
}

impl AnalyzerRule for ByteaInput {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // VALUES rows have no input: their expressions are literals and casts of them.
            let schema: Arc<DFSchema> = match node.inputs().first() {
                Some(input) => input.schema().clone(),
                None => Arc::new(DFSchema::empty()),
            };
            let names = NamePreserver::new(&node);
            node.map_expressions(|e| {
                let saved = names.save(&e);
                let rewritten = e.transform_up(|e| match e {
                    Expr::Cast(c)
                        if c.field.data_type() == &DataType::Binary
                            && matches!(
                                c.expr.get_type(schema.as_ref()),
                                Ok(DataType::Utf8 | DataType::Utf8View)
                            ) =>
                    {
                        Ok(Transformed::yes(self.udf.call(vec![*c.expr])))
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                // The column keeps the name it had before the rewrite.
                Ok(if rewritten.transformed {
                    Transformed::yes(saved.restore(rewritten.data))
                } else {
                    rewritten
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "shoal_bytea_input"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_escape_formats() {
        assert_eq!(decode_bytea("\\x0102ff").unwrap(), vec![1, 2, 255]);
        assert_eq!(
            decode_bytea("a\\\\b\\001").unwrap(),
            vec![b'a', b'\\', b'b', 1]
        );
        assert!(decode_bytea("\\x123").is_err());
        assert_eq!(decode_bytea("plain").unwrap(), b"plain".to_vec());
    }
}
