//! PostgreSQL's input syntax for types whose text form Arrow reads differently. An analyzer
//! rule turns text-to-bytea casts into `pg_bytea_in` (`'\x0102'` means the bytes 0x01 0x02, where
//! Arrow's cast keeps the text's own bytes) and text-to-interval casts into `pg_interval_in`
//! (`'1 day 02:00:00'`, `'3 mons 4 days'`, `'@ 1 hour ago'`, which Arrow's parser refuses).

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, IntervalUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    create_udf, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarUDF, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::json::Access;

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

/// Parses an interval in PostgreSQL's input syntax: `[@] {N unit}... [[-]HH:MM[:SS[.f]]] [ago]`.
pub fn parse_interval(text: &str) -> Result<IntervalMonthDayNano, String> {
    let bad = || format!("invalid input syntax for type interval: \"{text}\"");
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0f64);
    let lower = text.trim().to_lowercase();
    let mut words: Vec<&str> = lower.split_whitespace().filter(|w| *w != "@").collect();
    let ago = words.last() == Some(&"ago");
    if ago {
        words.pop();
    }
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if w.contains(':') {
            let (sign, rest) = match w.strip_prefix('-') {
                Some(r) => (-1.0, r),
                None => (1.0, w.strip_prefix('+').unwrap_or(w)),
            };
            let parts: Vec<&str> = rest.split(':').collect();
            let num = |s: &str| s.parse::<f64>().map_err(|_| bad());
            let (h, m, sec) = match parts.as_slice() {
                [h, m] => (num(h)?, num(m)?, 0.0),
                [h, m, s] => (num(h)?, num(m)?, num(s)?),
                _ => return Err(bad()),
            };
            micros += sign * ((h * 3600.0 + m * 60.0 + sec) * 1e6);
            i += 1;
            continue;
        }
        let n: f64 = w.parse().map_err(|_| bad())?;
        let unit = words.get(i + 1).ok_or_else(bad)?.trim_end_matches(',');
        match unit {
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => micros += n * 1e3,
            "us" | "usec" | "usecs" | "microsecond" | "microseconds" => micros += n,
            _ => match unit.trim_end_matches('s') {
                "year" | "yr" | "y" => months += (n * 12.0) as i64,
                "mon" | "month" => months += n as i64,
                "week" | "w" => days += (n * 7.0) as i64,
                "day" | "d" => days += n as i64,
                "hour" | "hr" | "h" => micros += n * 3.6e9,
                "minute" | "min" | "m" => micros += n * 6e7,
                "second" | "sec" => micros += n * 1e6,
                _ => return Err(bad()),
            },
        }
        i += 2;
    }
    let sign = if ago { -1 } else { 1 };
    Ok(IntervalMonthDayNano {
        months: (sign * months) as i32,
        days: (sign * days) as i32,
        nanoseconds: sign * (micros.round() as i64) * 1000,
    })
}

/// A function from text to `output`, parsing each non-NULL value with `parse`.
fn text_input_udf(
    name: &str,
    output: DataType,
    parse: fn(&str) -> Result<ScalarValue, String>,
) -> ScalarUDF {
    let null = ScalarValue::try_from(&output).unwrap_or(ScalarValue::Null);
    let empty = datafusion::arrow::array::new_empty_array(&output);
    create_udf(
        name,
        vec![DataType::Utf8],
        output,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let parse = |v: Option<&str>| match v {
                Some(s) => parse(s).map_err(DataFusionError::Execution),
                None => Ok(null.clone()),
            };
            match &args[0] {
                ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
                    Ok(ColumnarValue::Scalar(parse(v.as_deref())?))
                }
                other => {
                    let array = other.to_array(1)?;
                    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
                    let values = array
                        .as_string::<i32>()
                        .iter()
                        .map(parse)
                        .collect::<DfResult<Vec<_>>>()?;
                    // iter_to_array needs at least one value to know the type.
                    let array = if values.is_empty() {
                        empty.clone()
                    } else {
                        ScalarValue::iter_to_array(values)?
                    };
                    Ok(ColumnarValue::Array(array))
                }
            }
        }),
    )
}

pub(crate) fn interval_in_udf() -> ScalarUDF {
    text_input_udf(
        "pg_interval_in",
        DataType::Interval(IntervalUnit::MonthDayNano),
        |s| parse_interval(s).map(|v| ScalarValue::IntervalMonthDayNano(Some(v))),
    )
}

pub(crate) fn bytea_in_udf() -> ScalarUDF {
    text_input_udf("pg_bytea_in", DataType::Binary, |s| {
        decode_bytea(s).map(|v| ScalarValue::Binary(Some(v)))
    })
}

/// Rewrites `CAST(<text> AS bytea)` into `pg_bytea_in(<text>)`, `CAST(<text> AS interval)`
/// into `pg_interval_in(<text>)`, and casts of floats and arrays to text into
/// `pg_float4_out` / `pg_float8_out` / `pg_array_out` (PostgreSQL's text output).
#[derive(Debug)]
pub(crate) struct PgTextInput {
    bytea: Arc<ScalarUDF>,
    interval: Arc<ScalarUDF>,
    float4_out: Arc<ScalarUDF>,
    float8_out: Arc<ScalarUDF>,
    array_out: Arc<ScalarUDF>,
}

impl PgTextInput {
    pub(crate) fn new() -> Self {
        PgTextInput {
            bytea: Arc::new(bytea_in_udf()),
            interval: Arc::new(interval_in_udf()),
            float4_out: Arc::new(crate::pg_output::float_out_udf(&DataType::Float32)),
            float8_out: Arc::new(crate::pg_output::float_out_udf(&DataType::Float64)),
            array_out: Arc::new(crate::pg_output::array_out_udf()),
        }
    }
}

/// `plan` (subqueries included) with `rewrite` applied bottom-up to every expression, given
/// the schema the expression reads (its node's first input; empty for VALUES, whose rows are
/// literals and casts of them). Rewritten columns keep the names they had.
pub(crate) fn rewrite_expressions(
    plan: LogicalPlan,
    rewrite: impl Fn(Expr, &DFSchema) -> DfResult<Transformed<Expr>>,
) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schema: Arc<DFSchema> = match node.inputs().first() {
            Some(input) => input.schema().clone(),
            None => Arc::new(DFSchema::empty()),
        };
        let names = NamePreserver::new(&node);
        node.map_expressions(|e| {
            let saved = names.save(&e);
            let rewritten = e.transform_up(|e| rewrite(e, schema.as_ref()))?;
            Ok(if rewritten.transformed {
                Transformed::yes(saved.restore(rewritten.data))
            } else {
                rewritten
            })
        })
    })
    .map(|t| t.data)
}

impl AnalyzerRule for PgTextInput {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        rewrite_expressions(plan, |e, schema| {
            if let Expr::Cast(c) = &e {
                if let Expr::Literal(value, _) = c.expr.as_ref() {
                    let target = c.field.data_type();
                    if let Some(folded) =
                        crate::numeric_literals::exact_float_literal(value, target)
                    {
                        return Ok(Transformed::yes(folded));
                    }
                }
            }
            self.rewrite_cast(e, schema)
        })
    }

    fn name(&self) -> &str {
        "shoal_pg_text_input"
    }
}

impl PgTextInput {
    fn rewrite_cast(&self, e: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
        let json_target = match &e {
            Expr::Cast(c) => crate::json::json_type_of(&c.field),
            _ => None,
        };
        match (e, json_target) {
            // `::json` checks the text, `::jsonb` also writes it canonically.
            (Expr::Cast(c), Some(ty)) => {
                let input = Access::Input;
                let udf = crate::json::json_udf(&crate::json::function_name(ty, input), ty, input);
                Ok(Transformed::yes(udf.call(vec![*c.expr])))
            }
            (Expr::Cast(c), None)
                if matches!(c.field.data_type(), DataType::Utf8 | DataType::Utf8View) =>
            {
                match c.expr.get_type(schema) {
                    Ok(DataType::Float32) => {
                        Ok(Transformed::yes(self.float4_out.call(vec![*c.expr])))
                    }
                    Ok(DataType::Float64) => {
                        Ok(Transformed::yes(self.float8_out.call(vec![*c.expr])))
                    }
                    Ok(DataType::List(_)) => {
                        Ok(Transformed::yes(self.array_out.call(vec![*c.expr])))
                    }
                    _ => Ok(Transformed::no(Expr::Cast(c))),
                }
            }
            (Expr::Cast(c), None)
                if matches!(
                    c.expr.get_type(schema),
                    Ok(DataType::Utf8 | DataType::Utf8View)
                ) =>
            {
                match c.field.data_type() {
                    DataType::Binary => Ok(Transformed::yes(self.bytea.call(vec![*c.expr]))),
                    DataType::Interval(IntervalUnit::MonthDayNano) => {
                        Ok(Transformed::yes(self.interval.call(vec![*c.expr])))
                    }
                    _ => Ok(Transformed::no(Expr::Cast(c))),
                }
            }
            (other, _) => Ok(Transformed::no(other)),
        }
    }
}

/// `array_column = '{1,2}'`: the text is PostgreSQL's array input syntax, read as an array of
/// the column's element type. Runs before type coercion, which knows no such conversion and
/// would refuse the comparison (psql's `\d` compares `polroles = '{0}'`).
#[derive(Debug)]
pub(crate) struct ArrayTextInput;

/// The list value that the array literal `text` denotes, with elements of `element`'s type.
fn array_literal(text: &str, element: &DataType) -> Option<ScalarValue> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let values = inner
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| match e.eq_ignore_ascii_case("null") {
            true => ScalarValue::try_from(element),
            false => ScalarValue::Utf8(Some(e.trim_matches('"').to_string())).cast_to(element),
        })
        .collect::<DfResult<Vec<_>>>()
        .ok()?;
    Some(ScalarValue::List(ScalarValue::new_list(
        &values, element, true,
    )))
}

fn compares(op: Operator) -> bool {
    use Operator::*;
    matches!(
        op,
        Eq | NotEq | Lt | LtEq | Gt | GtEq | IsDistinctFrom | IsNotDistinctFrom | AtArrow | ArrowAt
    )
}

impl AnalyzerRule for ArrayTextInput {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let Some(input) = node.inputs().first().map(|i| i.schema().clone()) else {
                return Ok(Transformed::no(node));
            };
            let as_array = |text: &Expr, other: &Expr| -> Option<Expr> {
                let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = text else {
                    return None;
                };
                let DataType::List(element) = other.get_type(input.as_ref()).ok()? else {
                    return None;
                };
                array_literal(text, element.data_type()).map(|v| Expr::Literal(v, None))
            };
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::BinaryExpr(mut b) if compares(b.op) => {
                        if let Some(list) = as_array(&b.right, &b.left) {
                            b.right = Box::new(list);
                            Ok(Transformed::yes(Expr::BinaryExpr(b)))
                        } else if let Some(list) = as_array(&b.left, &b.right) {
                            b.left = Box::new(list);
                            Ok(Transformed::yes(Expr::BinaryExpr(b)))
                        } else {
                            Ok(Transformed::no(Expr::BinaryExpr(b)))
                        }
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "shoal_array_text_input"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_formats() {
        let i = parse_interval("3 mons 4 days 00:00:01.5").unwrap();
        assert_eq!((i.months, i.days, i.nanoseconds), (3, 4, 1_500_000_000));
        let i = parse_interval("1 year 2 months").unwrap();
        assert_eq!(i.months, 14);
        let i = parse_interval("@ 1 hour ago").unwrap();
        assert_eq!(i.nanoseconds, -3_600_000_000_000);
        let i = parse_interval("-01:30").unwrap();
        assert_eq!(i.nanoseconds, -5_400_000_000_000);
        assert!(parse_interval("1 fortnight").is_err());
    }

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
