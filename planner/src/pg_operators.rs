//! Operators DataFusion lacks or types differently from PostgreSQL, planned at the SQL level:
//! the JSON operators (as calls of the functions in `json`), `date ± interval` (a timestamp,
//! where DataFusion answers a date and drops the interval's time), and `substring(text from
//! pattern)` (a regular expression match).
//!
//! A JSON operator is taken only when its document operand is json or jsonb (tagged), as
//! PostgreSQL resolves them; on anything else it is left to DataFusion (`@>` on arrays, `||`
//! on text, `-` on numbers).

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{binary_expr, cast, Expr, ExprSchemable, Operator};
use datafusion::sql::sqlparser::ast::BinaryOperator;
use shoal_executor::json::JsonType;
use std::sync::Arc;

use crate::json::{function_name, json_type_of, json_udf as udf, Access};

#[derive(Debug)]
pub(crate) struct PgOperatorPlanner;

/// The JSON type of `expr` in `schema`, when it is tagged as one.
fn json_type(expr: &Expr, schema: &DFSchema) -> Option<JsonType> {
    let (_, field) = expr.to_field(schema).ok()?;
    json_type_of(&field)
}

fn is_untyped_text(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Literal(ScalarValue::Utf8(_) | ScalarValue::Utf8View(_), _)
    )
}

fn call(name: &str, ty: JsonType, access: Access, args: Vec<Expr>) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf(name, ty, access)),
        args,
    ))
}

/// `date ± interval` and `interval + date` with the date as a timestamp (midnight), so that
/// the answer is a timestamp that keeps the interval's hours, as in PostgreSQL.
fn date_interval_arithmetic(expr: &RawBinaryExpr, schema: &DFSchema) -> Option<Expr> {
    let op = match expr.op {
        BinaryOperator::Plus => Operator::Plus,
        BinaryOperator::Minus => Operator::Minus,
        _ => return None,
    };
    let left = expr.left.get_type(schema).ok()?;
    let right = expr.right.get_type(schema).ok()?;
    let timestamp = |e: &Expr| cast(e.clone(), DataType::Timestamp(TimeUnit::Microsecond, None));
    let (left, right) = match (&left, &right, op) {
        (DataType::Date32, DataType::Interval(_), _) => (timestamp(&expr.left), expr.right.clone()),
        (DataType::Interval(_), DataType::Date32, Operator::Plus) => {
            (expr.left.clone(), timestamp(&expr.right))
        }
        _ => return None,
    };
    Some(binary_expr(left, op, right))
}

impl ExprPlanner for PgOperatorPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        use BinaryOperator as Op;
        if let Some(planned) = date_interval_arithmetic(&expr, schema) {
            return Ok(PlannerResult::Planned(planned));
        }
        let left = json_type(&expr.left, schema);
        let right = json_type(&expr.right, schema);
        let jsonb = |ty: Option<JsonType>| ty == Some(JsonType::Jsonb);
        let (access, ty) = match (&expr.op, left) {
            (Op::Arrow, Some(ty)) => (Access::Get, ty),
            (Op::LongArrow, Some(ty)) => (Access::GetText, ty),
            (Op::HashArrow, Some(ty)) => (Access::PathArray, ty),
            (Op::HashLongArrow, Some(ty)) => (Access::PathArrayText, ty),
            (Op::Question, Some(JsonType::Jsonb)) => (Access::Exists, JsonType::Jsonb),
            (Op::QuestionPipe, Some(JsonType::Jsonb)) => (Access::ExistsAny, JsonType::Jsonb),
            (Op::QuestionAnd, Some(JsonType::Jsonb)) => (Access::ExistsAll, JsonType::Jsonb),
            (Op::AtArrow, _) if jsonb(left) || jsonb(right) => (Access::Contains, JsonType::Jsonb),
            (Op::ArrowAt, _) if jsonb(left) || jsonb(right) => (Access::Contained, JsonType::Jsonb),
            (Op::StringConcat, _)
                if (jsonb(left) && (jsonb(right) || is_untyped_text(&expr.right)))
                    || (jsonb(right) && is_untyped_text(&expr.left)) =>
            {
                (Access::Concat, JsonType::Jsonb)
            }
            (Op::Minus, Some(JsonType::Jsonb)) => (Access::Delete, JsonType::Jsonb),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        Ok(PlannerResult::Planned(call(
            &function_name(ty, access),
            ty,
            access,
            vec![expr.left, expr.right],
        )))
    }

    /// `substring(text from pattern)` (a text second argument) is PostgreSQL's regular
    /// expression form: the first parenthesized group's match, or the whole match.
    fn plan_substring(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        if args.len() == 2 && is_untyped_text(&args[1]) {
            let udf = crate::regex_functions::substring_match_udf();
            return Ok(PlannerResult::Planned(Expr::ScalarFunction(
                ScalarFunction::new_udf(Arc::new(udf), args),
            )));
        }
        Ok(PlannerResult::Original(args))
    }
}
