//! Division of `numeric` values with PostgreSQL's precision.
//!
//! Decimal literals are `numeric` (as in PostgreSQL), which makes `count(*) * 1.0 / total` a
//! decimal division. Arrow's keeps only four decimals more than the dividend and truncates
//! (`1.0 / 3` is `0.33333`); PostgreSQL keeps at least 16 significant digits and rounds
//! (`0.33333333333333333333`). PostgreSQL picks the scale per value, which a column of fixed
//! scale cannot do, so [`NumericDivision`] gives every decimal quotient 16 decimals (more
//! when an operand has more), rounded half away from zero: what PostgreSQL shows for most
//! quotients from 1 up (`10 / 4.0` is `2.5000000000000000`); below 1 PostgreSQL shows 20 or
//! more (`1.0 / 3` is `0.33333333333333333333` there, `0.3333333333333333` here).

use std::cell::Cell;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{i256, DataType, Decimal128Type};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{exec_err, DFSchema, DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::pg_input::rewrite_expressions;

/// PostgreSQL's `NUMERIC_MIN_SIG_DIGITS`: the fewest decimals a quotient gets here.
const MIN_QUOTIENT_SCALE: i8 = 16;
const MAX_PRECISION: u8 = 38;

/// The (precision, scale) of a decimal or integer operand.
fn decimal_shape(t: &DataType) -> Option<(u8, i8)> {
    match t {
        DataType::Decimal128(p, s) => Some((*p, *s)),
        DataType::Int8 => Some((3, 0)),
        DataType::Int16 => Some((5, 0)),
        DataType::Int32 => Some((10, 0)),
        DataType::Int64 => Some((19, 0)),
        _ => None,
    }
}

/// The type of `dividend / divisor`: 38 digits, [`MIN_QUOTIENT_SCALE`] decimals or as many
/// as an operand has. That leaves 22 whole digits at the least; a quotient that needs more
/// fails with 22003 (bounding the scale by what the operands' types could hold instead would
/// make the quotient of two `numeric(38,10)` columns an integer).
fn quotient_type(dividend: (u8, i8), divisor: (u8, i8)) -> DataType {
    let scale = MIN_QUOTIENT_SCALE.max(dividend.1).max(divisor.1);
    DataType::Decimal128(MAX_PRECISION, scale.min(MAX_PRECISION as i8))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NumericDivide {
    signature: Signature,
}

pub(crate) fn numeric_divide_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(NumericDivide {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

fn as_decimal(array: &ArrayRef) -> Result<(ArrayRef, i8)> {
    match array.data_type() {
        DataType::Decimal128(_, s) => Ok((array.clone(), *s)),
        t => match decimal_shape(t) {
            Some((p, s)) => Ok((cast(array, &DataType::Decimal128(p, s))?, s)),
            None => exec_err!("pg_numeric_divide takes numerics or integers, got {t}"),
        },
    }
}

fn overflow() -> DataFusionError {
    DataFusionError::Execution("numeric field overflow: the quotient is out of range".into())
}

/// `a / b` (unscaled values at scales `sa` and `sb`) at scale `scale`, rounded half away
/// from zero.
fn divide(a: i128, sa: i8, b: i128, sb: i8, scale: i8) -> Result<i128> {
    if b == 0 {
        return exec_err!("division by zero");
    }
    // a / 10^sa / (b / 10^sb) * 10^scale = a * 10^(scale - sa + sb) / b
    let shift = scale as i32 - sa as i32 + sb as i32;
    let ten = i256::from_i128(10);
    let (mut numerator, mut denominator) = (i256::from_i128(a), i256::from_i128(b));
    if shift >= 0 {
        let factor = ten.checked_pow(shift as u32).ok_or_else(overflow)?;
        numerator = numerator.checked_mul(factor).ok_or_else(overflow)?;
    } else {
        let factor = ten.checked_pow((-shift) as u32).ok_or_else(overflow)?;
        denominator = denominator.checked_mul(factor).ok_or_else(overflow)?;
    }
    let quotient = numerator.wrapping_div(denominator);
    let remainder = numerator.wrapping_rem(denominator).wrapping_abs();
    let rounded = if remainder >= denominator.wrapping_abs() - remainder {
        let away = if (numerator.is_negative()) != (denominator.is_negative()) {
            i256::MINUS_ONE
        } else {
            i256::ONE
        };
        quotient + away
    } else {
        quotient
    };
    rounded
        .to_i128()
        .filter(|v| v.unsigned_abs() < 10u128.pow(MAX_PRECISION as u32))
        .ok_or_else(overflow)
}

impl ScalarUDFImpl for NumericDivide {
    fn name(&self) -> &str {
        "pg_numeric_divide"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [a, b] => match (decimal_shape(a), decimal_shape(b)) {
                (Some(a), Some(b)) => Ok(quotient_type(a, b)),
                _ => exec_err!("pg_numeric_divide takes numerics or integers, got {args:?}"),
            },
            _ => exec_err!("pg_numeric_divide takes two arguments"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let ((a, sa), (b, sb)) = (as_decimal(&arrays[0])?, as_decimal(&arrays[1])?);
        let result_type = args.return_field.data_type().clone();
        let DataType::Decimal128(_, scale) = result_type else {
            return exec_err!("pg_numeric_divide returns a numeric, not {result_type}");
        };
        let (a, b) = (
            a.as_primitive::<Decimal128Type>(),
            b.as_primitive::<Decimal128Type>(),
        );
        let quotients = a
            .iter()
            .zip(b.iter())
            .map(|pair| match pair {
                (Some(x), Some(y)) => divide(x, sa, y, sb, scale).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Decimal128Array>>()?
            .with_data_type(result_type);
        let result: ArrayRef = Arc::new(quotients);
        Ok(crate::functions::scalar_or_array(&args.args, result))
    }
}

/// Puts `pg_numeric_divide` in place of every division DataFusion would do in decimals.
/// Runs after type coercion, so integer operands beside a decimal are cast already.
#[derive(Debug)]
pub(crate) struct NumericDivision {
    divide: Arc<ScalarUDF>,
}

impl NumericDivision {
    pub(crate) fn new() -> Self {
        NumericDivision {
            divide: Arc::new(numeric_divide_udf()),
        }
    }
}

impl NumericDivision {
    fn is_decimal_division(e: &Expr, schema: &DFSchema) -> bool {
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Divide,
            right,
        }) = e
        else {
            return false;
        };
        match (left.get_type(schema), right.get_type(schema)) {
            (Ok(l), Ok(r)) => {
                (matches!(l, DataType::Decimal128(..)) || matches!(r, DataType::Decimal128(..)))
                    && decimal_shape(&l).is_some()
                    && decimal_shape(&r).is_some()
            }
            _ => false,
        }
    }
}

impl AnalyzerRule for NumericDivision {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let changed = Cell::new(false);
        let plan = rewrite_expressions(plan, |e, schema| {
            if !Self::is_decimal_division(&e, schema) {
                return Ok(Transformed::no(e));
            }
            let Expr::BinaryExpr(BinaryExpr { left, right, .. }) = e else {
                return Ok(Transformed::no(e));
            };
            changed.set(true);
            Ok(Transformed::yes(self.divide.call(vec![*left, *right])))
        })?;
        if !changed.get() {
            return Ok(plan);
        }
        // The quotient's type is not Arrow's: every node above sees the new schema.
        plan.transform_up_with_subqueries(|node| Ok(Transformed::yes(node.recompute_schema()?)))
            .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "shoal_numeric_division"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotients_round_half_away_from_zero() {
        // 1.0 / 3 at 16 decimals
        assert_eq!(divide(10, 1, 3, 0, 16).unwrap(), 3_333_333_333_333_333);
        // 2 / 3.0
        assert_eq!(divide(2, 0, 30, 1, 16).unwrap(), 6_666_666_666_666_667);
        assert_eq!(divide(-2, 0, 30, 1, 16).unwrap(), -6_666_666_666_666_667);
        assert_eq!(divide(2, 0, -30, 1, 16).unwrap(), -6_666_666_666_666_667);
        // 10 / 4.0 = 2.5
        assert_eq!(divide(10, 0, 40, 1, 16).unwrap(), 25 * 10_i128.pow(15));
        assert!(divide(1, 0, 0, 0, 16).is_err());
        assert!(divide(i128::MAX / 10, 0, 1, 20, 16).is_err());
    }

    #[test]
    fn quotient_scale() {
        assert_eq!(quotient_type((2, 1), (19, 0)), DataType::Decimal128(38, 16));
        assert_eq!(
            quotient_type((38, 10), (38, 10)),
            DataType::Decimal128(38, 16)
        );
        assert_eq!(
            quotient_type((38, 20), (3, 0)),
            DataType::Decimal128(38, 20)
        );
    }
}
