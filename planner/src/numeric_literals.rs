//! Typing around `numeric` decimal literals (`2.5` is `numeric`, as in PostgreSQL, through
//! DataFusion's `parse_float_as_decimal`).
//!
//! - [`FloatBesideNumeric`] runs before type coercion: where a float meets a numeric (a
//!   comparison, arithmetic, `CASE` branches, `IN` lists, `BETWEEN`, `coalesce` and friends),
//!   the numeric side becomes `float8`, as PostgreSQL resolves the mix. DataFusion would make
//!   the float a decimal, which fails on NaN and infinities and rounds the float.
//! - [`exact_float_literal`] folds a cast of a decimal literal to a float by reading its
//!   digits, so `1e21::float8` is exactly `1e+21` (Arrow's cast multiplies by a power of ten
//!   and can be off in the last bit).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::{Case, InList, ScalarFunction};
use datafusion::logical_expr::{
    cast, Between, BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator,
};
use datafusion::optimizer::AnalyzerRule;

use crate::pg_input::rewrite_expressions;

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn is_numeric(t: &DataType) -> bool {
    matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
}

/// Casts the numeric ones of `exprs` to float8 when floats are among them.
fn floats_win(exprs: Vec<Expr>, schema: &DFSchema) -> (Vec<Expr>, bool) {
    let types: Vec<Option<DataType>> = exprs.iter().map(|e| e.get_type(schema).ok()).collect();
    let has = |f: fn(&DataType) -> bool| types.iter().flatten().any(f);
    if !(has(is_float) && has(is_numeric)) {
        return (exprs, false);
    }
    let exprs = exprs
        .into_iter()
        .zip(types)
        .map(|(e, t)| match t {
            Some(t) if is_numeric(&t) => cast(e, DataType::Float64),
            _ => e,
        })
        .collect();
    (exprs, true)
}

/// Functions whose arguments resolve to one common type.
const COMMON_TYPE_FUNCTIONS: [&str; 4] = ["coalesce", "nullif", "greatest", "least"];

fn mixes_floats(op: Operator) -> bool {
    use Operator::*;
    matches!(
        op,
        Eq | NotEq
            | Lt
            | LtEq
            | Gt
            | GtEq
            | IsDistinctFrom
            | IsNotDistinctFrom
            | Plus
            | Minus
            | Multiply
            | Divide
            | Modulo
    )
}

fn rewrite(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    Ok(match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if mixes_floats(op) => {
            let (sides, changed) = floats_win(vec![*left, *right], schema);
            let [left, right]: [Expr; 2] = sides
                .try_into()
                .map_err(|_| DataFusionError::Internal("a binary expression lost a side".into()))?;
            let e = Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)));
            Transformed::new_transformed(e, changed)
        }
        Expr::Case(case) => {
            let Case {
                expr,
                when_then_expr,
                else_expr,
            } = case;
            let (whens, thens): (Vec<Expr>, Vec<Expr>) =
                when_then_expr.into_iter().map(|(w, t)| (*w, *t)).unzip();
            let n = thens.len();
            let mut results = thens;
            results.extend(else_expr.map(|e| *e));
            let (mut results, changed) = floats_win(results, schema);
            let else_expr = (results.len() > n).then(|| Box::new(results.remove(n)));
            let when_then_expr = whens
                .into_iter()
                .zip(results)
                .map(|(w, t)| (Box::new(w), Box::new(t)))
                .collect();
            let e = Expr::Case(Case {
                expr,
                when_then_expr,
                else_expr,
            });
            Transformed::new_transformed(e, changed)
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let mut all = vec![*expr];
            all.extend(list);
            let (mut all, changed) = floats_win(all, schema);
            let expr = Box::new(all.remove(0));
            let e = Expr::InList(InList {
                expr,
                list: all,
                negated,
            });
            Transformed::new_transformed(e, changed)
        }
        Expr::Between(Between {
            expr,
            negated,
            low,
            high,
        }) => {
            let (mut all, changed) = floats_win(vec![*expr, *low, *high], schema);
            let high = Box::new(all.remove(2));
            let low = Box::new(all.remove(1));
            let expr = Box::new(all.remove(0));
            let e = Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            });
            Transformed::new_transformed(e, changed)
        }
        Expr::ScalarFunction(ScalarFunction { func, args })
            if COMMON_TYPE_FUNCTIONS.contains(&func.name()) =>
        {
            let (args, changed) = floats_win(args, schema);
            let e = Expr::ScalarFunction(ScalarFunction { func, args });
            Transformed::new_transformed(e, changed)
        }
        other => Transformed::no(other),
    })
}

/// Where floats meet numerics, the numerics become float8 (see the module header).
#[derive(Debug)]
pub(crate) struct FloatBesideNumeric;

impl AnalyzerRule for FloatBesideNumeric {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        rewrite_expressions(plan, rewrite)
    }

    fn name(&self) -> &str {
        "shoal_float_beside_numeric"
    }
}

/// `CAST(<decimal literal> AS float)` as the float its digits denote, correctly rounded.
pub(crate) fn exact_float_literal(value: &ScalarValue, target: &DataType) -> Option<Expr> {
    let ScalarValue::Decimal128(Some(unscaled), _, scale) = value else {
        return None;
    };
    let digits = format!("{unscaled}e{}", -(*scale as i32));
    let float: f64 = digits.parse().ok()?;
    let folded = match target {
        DataType::Float64 => ScalarValue::Float64(Some(float)),
        DataType::Float32 => ScalarValue::Float32(digits.parse().ok()),
        _ => return None,
    };
    Some(Expr::Literal(folded, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_literals_become_exact_floats() {
        let lit = |v: i128, p: u8, s: i8| ScalarValue::Decimal128(Some(v), p, s);
        let float = |e: Option<Expr>| match e {
            Some(Expr::Literal(ScalarValue::Float64(Some(f)), _)) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            float(exact_float_literal(&lit(1, 1, -21), &DataType::Float64)),
            1e21
        );
        assert_eq!(
            float(exact_float_literal(&lit(1, 1, 1), &DataType::Float64)),
            0.1
        );
        assert_eq!(
            float(exact_float_literal(&lit(-25, 2, 1), &DataType::Float64)),
            -2.5
        );
        assert!(exact_float_literal(&ScalarValue::Int64(Some(1)), &DataType::Float64).is_none());
    }
}
