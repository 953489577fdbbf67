//! PostgreSQL's `format(formatstr, args...)`: `%s` (text), `%I` (identifier, quoted when
//! needed), `%L` (literal, quoted; NULL unquoted), `%%`, with argument positions (`%2$s`),
//! the `-` flag and widths (`%10s`, `%*s`, `%*3$s`).
//!
//! Arguments reach the function as text: the planner casts them (so numbers, arrays and
//! timestamps print as their casts to text do), except booleans, which print as `t`/`f` as
//! PostgreSQL's output function writes them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use shoal_executor::ExecError;

use crate::pg_relations::quote_ident;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Format {
    signature: Signature,
}

pub(crate) fn format_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Format {
        signature: Signature::user_defined(Volatility::Stable),
    })
}

fn invalid(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(ExecError::InvalidParameterValue(message)))
}

/// `s` as an SQL literal, as `quote_literal` writes it.
fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// One row: `args[i]` is the text of argument `i + 1` (None for NULL).
fn format_row(spec: &str, args: &[Option<String>]) -> Result<String> {
    let mut out = String::new();
    let mut chars = spec.chars().peekable();
    let mut next_arg = 0usize;
    let arg = |n: usize| -> Result<&Option<String>> {
        args.get(n)
            .ok_or_else(|| invalid("too few arguments for format()".into()))
    };
    // A run of digits, if any.
    let number = |chars: &mut std::iter::Peekable<std::str::Chars>| -> Option<usize> {
        let mut n: Option<usize> = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
            chars.next();
        }
        n
    };
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        // `%n$`: a position, or (without the `$`) a width.
        let mut position = None;
        let mut width = None;
        let digits = number(&mut chars);
        if digits.is_some() && chars.peek() == Some(&'$') {
            chars.next();
            position = digits;
        } else {
            width = digits;
        }
        let mut left = false;
        if width.is_none() {
            while chars.peek() == Some(&'-') {
                chars.next();
                left = true;
            }
            if chars.peek() == Some(&'*') {
                chars.next();
                let from = match number(&mut chars) {
                    Some(n) if chars.next_if_eq(&'$').is_some() => n.checked_sub(1),
                    Some(_) => return Err(invalid("unterminated format() type specifier".into())),
                    None => {
                        next_arg += 1;
                        Some(next_arg - 1)
                    }
                };
                let from = from.ok_or_else(|| {
                    invalid("format specifies argument 0, but arguments are numbered from 1".into())
                })?;
                let w: i64 = match arg(from)? {
                    Some(text) => text.trim().parse().map_err(|_| {
                        invalid(format!("invalid input syntax for type integer: \"{text}\""))
                    })?,
                    None => 0,
                };
                left |= w < 0;
                width = Some(w.unsigned_abs() as usize);
            } else {
                width = number(&mut chars);
            }
        }
        let Some(kind) = chars.next() else {
            return Err(invalid("unterminated format() type specifier".into()));
        };
        let index = match position {
            Some(0) => {
                return Err(invalid(
                    "format specifies argument 0, but arguments are numbered from 1".into(),
                ))
            }
            Some(p) => p - 1,
            None => next_arg,
        };
        next_arg = index + 1;
        let value = arg(index)?;
        let text = match (kind, value) {
            ('s', Some(v)) => v.clone(),
            ('s', None) => String::new(),
            ('I', Some(v)) => quote_ident(v),
            ('I', None) => {
                return Err(invalid(
                    "null values cannot be formatted as an SQL identifier".into(),
                ))
            }
            ('L', Some(v)) => quote_literal(v),
            ('L', None) => "NULL".into(),
            (other, _) => {
                return Err(invalid(format!(
                    "unrecognized format() type specifier \"{other}\""
                )))
            }
        };
        let pad = width.unwrap_or(0).saturating_sub(text.chars().count());
        if !left {
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(&text);
        if left {
            out.extend(std::iter::repeat_n(' ', pad));
        }
    }
    Ok(out)
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        if args.is_empty() {
            return Err(DataFusionError::Plan(
                "function format() does not exist: it takes a format string".into(),
            ));
        }
        Ok(args
            .iter()
            .map(|t| match t {
                DataType::Boolean => DataType::Boolean,
                _ => DataType::Utf8,
            })
            .collect())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let texts: Vec<ArrayRef> = arrays
            .iter()
            .map(|a| match a.data_type() {
                DataType::Boolean => {
                    let b = a.as_boolean();
                    Ok(Arc::new(
                        b.iter()
                            .map(|v| v.map(|v| if v { "t" } else { "f" }))
                            .collect::<datafusion::arrow::array::StringArray>(),
                    ) as ArrayRef)
                }
                _ => cast(a, &DataType::Utf8),
            })
            .collect::<std::result::Result<_, _>>()?;
        let spec = texts[0].as_string::<i32>();
        let mut out = StringBuilder::new();
        let mut row_args = Vec::with_capacity(texts.len() - 1);
        for row in 0..args.number_rows {
            if spec.is_null(row) {
                out.append_null();
                continue;
            }
            row_args.clear();
            row_args.extend(texts[1..].iter().map(|t| {
                let t = t.as_string::<i32>();
                t.is_valid(row).then(|| t.value(row).to_string())
            }));
            out.append_value(format_row(spec.value(row), &row_args)?);
        }
        let result: ArrayRef = Arc::new(out.finish());
        Ok(crate::functions::scalar_or_array(&args.args, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(spec: &str, args: &[Option<&str>]) -> Result<String> {
        let args: Vec<Option<String>> = args.iter().map(|a| a.map(str::to_string)).collect();
        format_row(spec, &args)
    }

    #[test]
    fn formats_as_postgres() {
        let args = [
            Some("a"),
            Some("B c"),
            Some("it's"),
            None,
            Some("x"),
            Some("y"),
        ];
        assert_eq!(
            f("%s|%I|%L|%L|%5s|%-5s|%2$s|%s", &args).unwrap(),
            "a|\"B c\"|'it''s'|NULL|    x|y    |B c|it's"
        );
        assert_eq!(
            f(
                "%*s|%-*s|100%%",
                &[Some("4"), Some("z"), Some("3"), Some("w")]
            )
            .unwrap(),
            "   z|w  |100%"
        );
        assert_eq!(f("%L", &[Some("a\\b")]).unwrap(), "E'a\\\\b'");
        assert!(f("%s", &[]).is_err());
        assert!(f("%d", &[Some("1")]).is_err());
        assert!(f("%0$s", &[Some("1")]).is_err());
        assert!(f("%I", &[None]).is_err());
        assert!(f("abc%", &[]).is_err());
    }
}
