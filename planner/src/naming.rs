//! PostgreSQL's names for unaliased result columns: `SELECT count(*)` yields a column named
//! `count`, not DataFusion's `count(*)`. Applied to the outermost SELECT list only.

use datafusion::sql::sqlparser::ast::{Expr, Ident, Query, SelectItem, SetExpr, Statement};

fn postgres_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        Expr::Cast { expr, .. } => postgres_name(expr),
        Expr::Nested(inner) => postgres_name(inner),
        _ => None,
    }
}

fn name_query(q: &mut Query) {
    let SetExpr::Select(select) = q.body.as_mut() else {
        return;
    };
    let names: Vec<Option<String>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => postgres_name(e),
            _ => None,
        })
        .collect();
    for (i, item) in select.projection.iter_mut().enumerate() {
        let Some(name) = &names[i] else { continue };
        // DataFusion needs distinct output names; PostgreSQL allows duplicates. Keep
        // DataFusion's names where PostgreSQL's would collide.
        if names.iter().filter(|n| n.as_ref() == Some(name)).count() > 1 {
            continue;
        }
        if let SelectItem::UnnamedExpr(e) = item {
            *item = SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: Ident::with_quote('"', name.clone()),
            };
        }
    }
}

pub(crate) fn apply(stmt: &mut Statement) {
    if let Statement::Query(q) = stmt {
        name_query(q);
    }
}
