//! Integer arithmetic on constants that overflows fails the statement, as in PostgreSQL
//! (`SELECT 9223372036854775807 + 1` is 22003 `bigint out of range`).
//!
//! DataFusion folds constant expressions while optimizing, with wrapping arithmetic, so the
//! checked kernels that run the plan ([`shoal_executor::CheckedArithmetic`]) never see them.
//! [`ConstantOverflow`] runs after type coercion, when both sides of an operator have the type
//! of its result, and computes every `+`, `-` and `*` of integer constants exactly.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;

#[derive(Debug, Default)]
pub(crate) struct ConstantOverflow;

impl AnalyzerRule for ConstantOverflow {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|e| {
                e.apply(|e| {
                    if let Expr::BinaryExpr(binary) = e {
                        constant_arithmetic(binary)?;
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "constant_overflow"
    }
}

/// The value of an integer constant and its type's name, as PostgreSQL's error names it.
type Constant = (i128, &'static str);

fn range_of(t: &DataType) -> Option<(i128, i128, &'static str)> {
    Some(match t {
        DataType::Int16 => (i16::MIN as i128, i16::MAX as i128, "smallint"),
        DataType::Int32 => (i32::MIN as i128, i32::MAX as i128, "integer"),
        DataType::Int64 => (i64::MIN as i128, i64::MAX as i128, "bigint"),
        _ => return None,
    })
}

fn literal_value(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::Int8(Some(v)) => *v as i128,
        ScalarValue::Int16(Some(v)) => *v as i128,
        ScalarValue::Int32(Some(v)) => *v as i128,
        ScalarValue::Int64(Some(v)) => *v as i128,
        _ => return None,
    })
}

/// `e` when it is an integer constant: a literal, a cast of one to an integer type, or
/// arithmetic on them.
fn constant(e: &Expr) -> DfResult<Option<Constant>> {
    Ok(match e {
        Expr::Literal(v, _) => {
            let name = range_of(&v.data_type()).map(|r| r.2);
            literal_value(v).zip(name)
        }
        Expr::Cast(c) => {
            let Some((min, max, name)) = range_of(c.field.data_type()) else {
                return Ok(None);
            };
            match constant(&c.expr)? {
                Some((v, _)) if v < min || v > max => return Err(out_of_range(name)),
                Some((v, _)) => Some((v, name)),
                None => None,
            }
        }
        Expr::BinaryExpr(binary) => constant_arithmetic(binary)?,
        _ => None,
    })
}

/// The exact value of `binary` when it is `+`, `-` or `*` of integer constants; an error
/// when that value is outside the operands' type.
fn constant_arithmetic(binary: &BinaryExpr) -> DfResult<Option<Constant>> {
    if !matches!(
        binary.op,
        Operator::Plus | Operator::Minus | Operator::Multiply
    ) {
        return Ok(None);
    }
    let (Some((left, left_type)), Some((right, right_type))) =
        (constant(&binary.left)?, constant(&binary.right)?)
    else {
        return Ok(None);
    };
    // Before type coercion the operands may differ; the wider one is the result's type.
    let name = [left_type, right_type]
        .into_iter()
        .max_by_key(|n| match *n {
            "smallint" => 0,
            "integer" => 1,
            _ => 2,
        })
        .unwrap_or("bigint");
    let value = match binary.op {
        Operator::Plus => left.checked_add(right),
        Operator::Minus => left.checked_sub(right),
        _ => left.checked_mul(right),
    };
    let (min, max) = match name {
        "smallint" => (i16::MIN as i128, i16::MAX as i128),
        "integer" => (i32::MIN as i128, i32::MAX as i128),
        _ => (i64::MIN as i128, i64::MAX as i128),
    };
    match value {
        Some(v) if (min..=max).contains(&v) => Ok(Some((v, name))),
        _ => Err(out_of_range(name)),
    }
}

fn out_of_range(type_name: &str) -> DataFusionError {
    DataFusionError::Execution(format!("{type_name} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{cast, lit};

    fn check(e: Expr) -> DfResult<Option<Constant>> {
        constant(&e)
    }

    #[test]
    fn overflowing_constants_fail_and_others_pass() {
        assert!(check(lit(i64::MAX) + lit(1i64)).is_err());
        assert!(check(lit(i64::MIN) - lit(1i64)).is_err());
        assert!(check(lit(i32::MAX) * lit(2i32)).is_err());
        assert!(check(cast(lit(40000i64), DataType::Int16)).is_err());
        assert_eq!(
            check(lit(i32::MAX) + lit(1i64)).unwrap(),
            Some((i32::MAX as i128 + 1, "bigint"))
        );
        assert_eq!(
            check((lit(2i64) + lit(3i64)) * lit(4i64)).unwrap(),
            Some((20, "bigint"))
        );
        // Not all constants: nothing to check here, the checked kernels do it when it runs.
        assert_eq!(
            check(lit(i64::MAX) + datafusion::prelude::col("x")).unwrap(),
            None
        );
    }
}
