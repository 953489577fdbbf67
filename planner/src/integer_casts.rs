//! Casts of floats and numerics to smallint, integer and bigint round as in PostgreSQL.
//!
//! Arrow's cast truncates: `3.7::int` would be 3 where PostgreSQL answers 4. PostgreSQL
//! rounds a numeric half away from zero (`2.5::numeric::int` is 3) and a float half to even,
//! like `rint` (`2.5::float8::int` is 2). [`IntegerCasts`] runs after type coercion, so it
//! also sees the assignment casts of INSERT and UPDATE, and puts `pg_round_to_integer` under
//! every such cast; the cast itself still refuses values out of the target's range.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float32Type, Float64Type};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{exec_err, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::pg_input::rewrite_expressions;

/// `pg_round_to_integer(x)`: a float or numeric rounded to a whole number the way
/// PostgreSQL's casts to integer types round it, in the argument's own type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RoundToInteger {
    signature: Signature,
}

pub(crate) fn round_to_integer_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(RoundToInteger {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

fn rounds(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _)
    )
}

impl ScalarUDFImpl for RoundToInteger {
    fn name(&self) -> &str {
        "pg_round_to_integer"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match args {
            [t] if rounds(t) => Ok(t.clone()),
            _ => exec_err!("pg_round_to_integer takes one float or numeric, got {args:?}"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("pg_round_to_integer takes one argument");
        };
        let array = arg.to_array(1)?;
        let rounded: Arc<dyn Array> = match array.data_type() {
            DataType::Float32 => Arc::new(
                array
                    .as_primitive::<Float32Type>()
                    .unary::<_, Float32Type>(f32::round_ties_even),
            ),
            DataType::Float64 => Arc::new(
                array
                    .as_primitive::<Float64Type>()
                    .unary::<_, Float64Type>(f64::round_ties_even),
            ),
            DataType::Decimal128(precision, scale) => {
                let unit = 10_i128
                    .checked_pow((*scale).max(0) as u32)
                    .unwrap_or(i128::MAX);
                Arc::new(
                    array
                        .as_primitive::<Decimal128Type>()
                        .unary::<_, Decimal128Type>(|v| round_half_away(v, unit))
                        .with_precision_and_scale(*precision, *scale)?,
                )
            }
            other => return exec_err!("pg_round_to_integer takes a float or numeric, got {other}"),
        };
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&rounded, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(rounded),
        })
    }
}

/// `v` rounded to a multiple of `unit`, halves away from zero, staying in range.
fn round_half_away(v: i128, unit: i128) -> i128 {
    if unit <= 1 {
        return v;
    }
    let whole = v / unit * unit;
    let rest = v - whole;
    // `rest < unit - rest` rather than `2 * rest < unit`: at scale 38 the double overflows.
    if rest.abs() < unit - rest.abs() {
        whole
    } else {
        whole.saturating_add(unit * rest.signum())
    }
}

#[derive(Debug)]
pub(crate) struct IntegerCasts {
    round: Arc<ScalarUDF>,
}

impl IntegerCasts {
    pub(crate) fn new() -> Self {
        IntegerCasts {
            round: Arc::new(round_to_integer_udf()),
        }
    }
}

impl AnalyzerRule for IntegerCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        rewrite_expressions(plan, |e, schema| match e {
            Expr::Cast(mut c)
                if matches!(
                    c.field.data_type(),
                    DataType::Int16 | DataType::Int32 | DataType::Int64
                ) && c.expr.get_type(schema).is_ok_and(|t| rounds(&t)) =>
            {
                c.expr = Box::new(self.round.call(vec![*c.expr]));
                Ok(Transformed::yes(Expr::Cast(c)))
            }
            other => Ok(Transformed::no(other)),
        })
    }

    fn name(&self) -> &str {
        "shoal_integer_casts"
    }
}

#[cfg(test)]
mod tests {
    use super::round_half_away;

    #[test]
    fn numerics_round_half_away_from_zero() {
        // Two decimals: 2.50 -> 3.00, -2.50 -> -3.00, 2.49 -> 2.00, -2.49 -> -2.00.
        assert_eq!(round_half_away(250, 100), 300);
        assert_eq!(round_half_away(-250, 100), -300);
        assert_eq!(round_half_away(249, 100), 200);
        assert_eq!(round_half_away(-249, 100), -200);
        assert_eq!(round_half_away(7, 1), 7);
        // numeric(38,38): halves of 10^38 do not overflow.
        let unit = 10_i128.pow(38);
        assert_eq!(round_half_away(unit / 2, unit), unit);
        assert_eq!(round_half_away(unit / 2 - 1, unit), 0);
    }
}
