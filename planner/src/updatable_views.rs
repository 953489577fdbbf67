//! UPDATE and DELETE through a simple view, as PostgreSQL's automatically updatable views
//! allow: a view that selects plain columns of one table, with at most a WHERE, passes the
//! statement to that table, its WHERE added to the statement's.
//!
//! `DELETE FROM v WHERE x > 0` over `CREATE VIEW v AS SELECT a AS x FROM t WHERE a < 9`
//! becomes `DELETE FROM t WHERE (a < 9) AND (a > 0)`. Views that are not that simple, and
//! statements whose conditions hold subqueries, are left as they are (and refused).

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, visit_expressions_mut, AssignmentTarget, BinaryOperator, Expr, FromTable,
    GroupByExpr, Ident, ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor,
    TableWithJoins,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use shoal_coord::ViewDef;

/// What a simple view is made of.
struct SimpleView {
    table: ObjectName,
    /// View column name → the table's column.
    columns: HashMap<String, Ident>,
    filter: Option<Expr>,
}

fn simple_view(view: &ViewDef) -> Option<SimpleView> {
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &view.query).ok()?;
    let [Statement::Query(query)] = parsed.as_slice() else {
        return None;
    };
    let Query {
        body,
        with: None,
        order_by: None,
        limit_clause: None,
        fetch: None,
        ..
    } = query.as_ref()
    else {
        return None;
    };
    let SetExpr::Select(select) = body.as_ref() else {
        return None;
    };
    let plain = select.distinct.is_none()
        && select.having.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    let [TableWithJoins { relation, joins }] = select.from.as_slice() else {
        return None;
    };
    let TableFactor::Table {
        name, args: None, ..
    } = relation
    else {
        return None;
    };
    if !plain || !joins.is_empty() {
        return None;
    }
    let mut columns = HashMap::new();
    for (i, item) in select.projection.iter().enumerate() {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            _ => return None,
        };
        let column = bare_column(expr)?;
        let shown = view
            .columns
            .get(i)
            .cloned()
            .or_else(|| alias.map(|a| a.value.to_lowercase()))
            .unwrap_or_else(|| column.value.to_lowercase());
        columns.insert(shown, column);
    }
    let filter = match &select.selection {
        Some(f) if has_subquery(f) => return None,
        Some(f) => Some(unqualified(f.clone())),
        None => None,
    };
    Some(SimpleView {
        table: name.clone(),
        columns,
        filter,
    })
}

/// `a` or `t.a`, as the bare column `a`.
fn bare_column(e: &Expr) -> Option<Ident> {
    match e {
        Expr::Identifier(i) => Some(i.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().cloned(),
        _ => None,
    }
}

fn has_subquery(e: &Expr) -> bool {
    visit_expressions(e, |e| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// `t.a` as `a`: one table, so no column is ambiguous.
fn unqualified(mut e: Expr) -> Expr {
    let _ = visit_expressions_mut(&mut e, |e| {
        if let Expr::CompoundIdentifier(parts) = e {
            if let Some(last) = parts.last() {
                *e = Expr::Identifier(last.clone());
            }
        }
        ControlFlow::<()>::Continue(())
    });
    e
}

/// `e` with the view's columns replaced by the table's.
fn in_table_terms(e: &Expr, view: &SimpleView) -> Option<Expr> {
    if has_subquery(e) {
        return None;
    }
    let mut e = unqualified(e.clone());
    let _ = visit_expressions_mut(&mut e, |e| {
        if let Expr::Identifier(i) = e {
            if let Some(column) = view.columns.get(&i.value.to_lowercase()) {
                *e = Expr::Identifier(column.clone());
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Some(e)
}

/// The view's WHERE and the statement's, both on the table.
fn combined_filter(statement: Option<&Expr>, view: &SimpleView) -> Option<Option<Expr>> {
    let statement = match statement {
        Some(e) => Some(in_table_terms(e, view)?),
        None => None,
    };
    let nested = |e: Expr| Expr::Nested(Box::new(e));
    Some(match (view.filter.clone(), statement) {
        (Some(v), Some(s)) => Some(Expr::BinaryOp {
            left: Box::new(nested(v)),
            op: BinaryOperator::And,
            right: Box::new(nested(s)),
        }),
        (v, s) => v.or(s),
    })
}

fn on_table(relation: &mut TableFactor, view: &SimpleView) {
    if let TableFactor::Table { name, alias, .. } = relation {
        *name = view.table.clone();
        *alias = None;
    }
}

/// `stmt` (an UPDATE or DELETE of `view`) on the view's table; None when the view or the
/// statement is not simple enough.
pub fn through_view(stmt: &Statement, view: &ViewDef) -> Option<Statement> {
    let simple = simple_view(view)?;
    let mut stmt = stmt.clone();
    match &mut stmt {
        Statement::Delete(delete) => {
            if delete.returning.is_some() || delete.using.is_some() || !delete.tables.is_empty() {
                return None;
            }
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) =
                &mut delete.from;
            let [target] = from.as_mut_slice() else {
                return None;
            };
            if !target.joins.is_empty() {
                return None;
            }
            on_table(&mut target.relation, &simple);
            delete.selection = combined_filter(delete.selection.as_ref(), &simple)?;
        }
        Statement::Update(update) => {
            if update.returning.is_some() || update.from.is_some() {
                return None;
            }
            if !update.table.joins.is_empty() {
                return None;
            }
            on_table(&mut update.table.relation, &simple);
            for a in &mut update.assignments {
                let AssignmentTarget::ColumnName(name) = &mut a.target else {
                    return None;
                };
                let shown = name.0.last()?.as_ident()?.value.to_lowercase();
                let column = simple.columns.get(&shown)?;
                *name = ObjectName::from(vec![column.clone()]);
                a.value = in_table_terms(&a.value, &simple)?;
            }
            update.selection = combined_filter(update.selection.as_ref(), &simple)?;
        }
        _ => return None,
    }
    Some(stmt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(sql: &str, query: &str) -> Option<String> {
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let view = crate::pg_views::test_view(query);
        through_view(&stmt, &view).map(|s| s.to_string())
    }

    #[test]
    fn deletes_and_updates_reach_the_table_with_the_views_filter() {
        assert_eq!(
            through(
                "DELETE FROM v WHERE x > 0",
                "SELECT a AS x FROM t WHERE t.a < 9"
            )
            .as_deref(),
            Some("DELETE FROM t WHERE (a < 9) AND (a > 0)")
        );
        assert_eq!(
            through("UPDATE v SET x = x + 1", "SELECT a AS x FROM t").as_deref(),
            Some("UPDATE t SET a = a + 1")
        );
    }

    #[test]
    fn views_that_are_not_simple_are_left_alone() {
        assert_eq!(
            through("DELETE FROM v", "SELECT count(*) FROM t GROUP BY a"),
            None
        );
        assert_eq!(
            through("DELETE FROM v", "SELECT a FROM t JOIN u ON t.a = u.a"),
            None
        );
        assert_eq!(through("DELETE FROM v", "SELECT a + 1 FROM t"), None);
    }
}
