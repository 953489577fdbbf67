//! PostgreSQL's array constructor from a subquery, `ARRAY(SELECT x FROM ... ORDER BY ...)`,
//! which DataFusion does not plan. psql's `\du`, `\d+` and `\d` (row policies) use it.
//!
//! It is rewritten at the SQL level into an aggregating scalar subquery,
//! `array_or_empty((SELECT array_agg(x ORDER BY ...) FROM ...))`, which DataFusion plans and
//! decorrelates like any other. Two differences from `array_agg` are kept: the subquery's
//! ORDER BY becomes the aggregate's (a sort under an aggregate does not order its input), and
//! no rows make an empty array, not NULL (`array_or_empty`).

use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArguments, GroupByExpr, OrderByExpr, OrderByKind, Query, SelectItem, SetExpr,
    Value,
};

use crate::naming::parse_expr;

/// Aggregate functions: a subquery whose single column aggregates cannot have that column
/// aggregated again, so it is wrapped instead.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
];

/// Rewrites `e` when it is `ARRAY(<query>)`.
pub(crate) fn rewrite(e: &mut Expr) {
    let Expr::Function(f) = e else {
        return;
    };
    let FunctionArguments::Subquery(query) = &f.args else {
        return;
    };
    if !f.name.to_string().eq_ignore_ascii_case("array") {
        return;
    }
    let aggregated = match aggregate_in_place(query) {
        Some(q) => q.to_string(),
        None => aggregate_around(query),
    };
    if let Some(rewritten) = parse_expr(&format!("array_or_empty(({aggregated}))")) {
        *e = rewritten;
    }
}

/// `SELECT x FROM ... WHERE ... ORDER BY k` as `SELECT array_agg(x ORDER BY k) FROM ... WHERE
/// ...`; None for a query that is not a plain one-column SELECT.
fn aggregate_in_place(query: &Query) -> Option<Query> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain = select.distinct.is_none()
        && select.having.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && query.with.is_none();
    let [item] = select.projection.as_slice() else {
        return None;
    };
    let (column, alias) = match item {
        SelectItem::UnnamedExpr(e) => (e, None),
        SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.as_str())),
        _ => return None,
    };
    if !plain || aggregates(column) {
        return None;
    }
    let order: Vec<String> = match query.order_by.as_ref().map(|o| &o.kind) {
        None => Vec::new(),
        Some(OrderByKind::Expressions(items)) => items
            .iter()
            .map(|item| order_item(item, column, alias))
            .collect(),
        Some(OrderByKind::All(_)) => return None,
    };
    let order = match order.is_empty() {
        true => String::new(),
        false => format!(" ORDER BY {}", order.join(", ")),
    };
    let aggregate = parse_expr(&format!("array_agg({column}{order})"))?;
    let mut rewritten = query.clone();
    rewritten.order_by = None;
    if let SetExpr::Select(select) = rewritten.body.as_mut() {
        select.projection = vec![SelectItem::UnnamedExpr(aggregate)];
    }
    Some(rewritten)
}

/// An ORDER BY item of the subquery in terms of the aggregated column: `ORDER BY 1` and
/// `ORDER BY <alias>` name the column itself.
fn order_item(item: &OrderByExpr, column: &Expr, alias: Option<&str>) -> String {
    let names_column = match &item.expr {
        Expr::Value(v) => matches!(&v.value, Value::Number(n, _) if n == "1"),
        Expr::Identifier(i) => alias.is_some_and(|a| a.eq_ignore_ascii_case(&i.value)),
        _ => false,
    };
    let mut item = item.clone();
    if names_column {
        item.expr = column.clone();
    }
    item.to_string()
}

fn aggregates(e: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::visit_expressions;
    use std::ops::ControlFlow;
    visit_expressions(e, |e| match e {
        Expr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            let name = name.rsplit('.').next().unwrap_or(&name);
            if f.over.is_some() || AGGREGATES.contains(&name) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Any other query, aggregated from outside (its order is then not kept).
fn aggregate_around(query: &Query) -> String {
    format!("SELECT array_agg(array_element) FROM ({query}) AS array_rows(array_element)")
}

/// `array_or_empty(a)`: `a`, or an empty array of its type when `a` is NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayOrEmpty {
    signature: Signature,
}

impl ScalarUDFImpl for ArrayOrEmpty {
    fn name(&self) -> &str {
        "array_or_empty"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args[0].clone())
    }
    /// The argument's own field, so that an `oid[]` stays one.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let field = &args.arg_fields[0];
        Ok(Arc::new(Field::clone(field).with_nullable(false)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arg = &args.args[0];
        let DataType::List(element) = arg.data_type() else {
            return exec_err!("array_or_empty expects an array, got {}", arg.data_type());
        };
        match arg {
            ColumnarValue::Scalar(s) if s.is_null() => {
                let empty = ListArray::new(
                    element.clone(),
                    OffsetBuffer::new_zeroed(1),
                    new_empty_array(element.data_type()),
                    None,
                );
                Ok(ColumnarValue::Scalar(ScalarValue::List(Arc::new(empty))))
            }
            ColumnarValue::Scalar(_) => Ok(arg.clone()),
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(empty_for_nulls(a)?)),
        }
    }
}

/// The list array with its NULL entries made empty lists.
fn empty_for_nulls(array: &ArrayRef) -> DfResult<ArrayRef> {
    let list = array.as_list::<i32>();
    let DataType::List(element) = array.data_type() else {
        return Ok(array.clone());
    };
    if list.null_count() == 0 {
        return Ok(array.clone());
    }
    // A NULL entry may still span values; only the valid entries' values are kept.
    let kept: Vec<ArrayRef> = (0..list.len())
        .filter(|i| list.is_valid(*i))
        .map(|i| list.value(i))
        .collect();
    let lengths = (0..list.len()).map(|i| match list.is_valid(i) {
        true => list.value_length(i) as usize,
        false => 0,
    });
    let values = match kept.is_empty() {
        true => new_empty_array(element.data_type()),
        false => concat(&kept.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?,
    };
    Ok(Arc::new(ListArray::try_new(
        element.clone(),
        OffsetBuffer::from_lengths(lengths),
        values,
        None,
    )?))
}

pub(crate) fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ArrayOrEmpty {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut e = parse_expr(sql).unwrap();
        rewrite(&mut e);
        e.to_string()
    }

    #[test]
    fn a_plain_subquery_is_aggregated_in_its_own_order() {
        assert_eq!(
            rewritten("ARRAY(SELECT rolname FROM pg_roles WHERE oid = ANY(r) ORDER BY 1)"),
            "array_or_empty((SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles \
             WHERE oid = ANY(r)))"
        );
        assert_eq!(
            rewritten("array(select 'toast.' || x AS t from unnest(o) x order by t desc)"),
            "array_or_empty((SELECT array_agg('toast.' || x ORDER BY 'toast.' || x DESC) \
             FROM UNNEST(o) x))"
        );
    }

    #[test]
    fn other_subqueries_are_aggregated_around() {
        assert_eq!(
            rewritten("ARRAY(SELECT count(*) FROM t GROUP BY a)"),
            "array_or_empty((SELECT array_agg(array_element) FROM \
             (SELECT count(*) FROM t GROUP BY a) AS array_rows (array_element)))"
        );
    }
}
