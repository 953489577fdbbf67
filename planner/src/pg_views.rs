//! Views as PostgreSQL shows them: `pg_get_viewdef` and the live `pg_views`.
//!
//! PostgreSQL prints a view's query from its parse tree, one select item per line, the FROM
//! and each JOIN on lines of their own, table aliases without `AS`, and a final semicolon;
//! psql's `\d+` shows that text. Shoal keeps the query as SQL text and prints a plain SELECT
//! in the same layout; any other query (set operations, VALUES) is printed on one line.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::Result as DfResult;
use datafusion::sql::sqlparser::ast::{
    GroupByExpr, Join, OrderByKind, Query, SelectItem, SetExpr, Statement, TableFactor,
    TableWithJoins,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use shoal_coord::{Catalog, ViewDef};

/// The view's query as `pg_get_viewdef(view, true)` prints it.
pub(crate) fn definition(view: &ViewDef) -> String {
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &view.query);
    let laid_out = match parsed.as_deref() {
        Ok([Statement::Query(q)]) => lay_out(q),
        _ => None,
    };
    format!(" {};", laid_out.unwrap_or_else(|| view.query.clone()))
}

fn lay_out(q: &Query) -> Option<String> {
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    if q.with.is_some() {
        return None;
    }
    let items: Vec<String> = select.projection.iter().map(select_item).collect();
    let mut out = String::from("SELECT ");
    if let Some(distinct) = &select.distinct {
        out.push_str(&format!("{distinct} "));
    }
    out.push_str(&items.join(",\n    "));
    for (i, from) in select.from.iter().enumerate() {
        out.push_str(match i {
            0 => "\n   FROM ",
            _ => ",\n    ",
        });
        out.push_str(&table_with_joins(from));
    }
    if let Some(selection) = &select.selection {
        out.push_str(&format!("\n  WHERE {selection}"));
    }
    if !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty()) {
        out.push_str(&format!("\n  {}", select.group_by));
    }
    if let Some(having) = &select.having {
        out.push_str(&format!("\n HAVING {having}"));
    }
    if let Some(order_by) = &q.order_by {
        if let OrderByKind::Expressions(items) = &order_by.kind {
            let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
            out.push_str(&format!("\n  ORDER BY {}", items.join(", ")));
        }
    }
    if let Some(limit) = &q.limit_clause {
        out.push_str(&format!("\n{limit}"));
    }
    Some(out)
}

fn select_item(item: &SelectItem) -> String {
    match item {
        SelectItem::ExprWithAlias { expr, alias } => format!("{expr} AS {alias}"),
        other => other.to_string(),
    }
}

/// `sales.orders o` (PostgreSQL leaves `AS` out of table aliases).
fn table_factor(t: &TableFactor) -> String {
    match t {
        TableFactor::Table {
            name,
            alias: Some(alias),
            args: None,
            ..
        } => {
            let mut alias = alias.clone();
            alias.explicit = false;
            format!("{name} {alias}")
        }
        other => other.to_string(),
    }
}

fn table_with_joins(t: &TableWithJoins) -> String {
    let mut out = table_factor(&t.relation);
    for join in &t.joins {
        out.push_str(&format!("\n     {}", join_clause(join)));
    }
    out
}

fn join_clause(join: &Join) -> String {
    // The join's own text with the joined relation printed without `AS`.
    let text = join.to_string();
    let relation = join.relation.to_string();
    text.replacen(&relation, &table_factor(&join.relation), 1)
        .trim()
        .to_string()
}

/// `pg_views`: every view of the catalog with its definition.
pub(crate) fn pg_views(catalog: &Catalog) -> DfResult<RecordBatch> {
    let views: Vec<&ViewDef> = catalog.views.values().collect();
    let schema = Schema::new(vec![
        Field::new("schemaname", DataType::Utf8, false),
        Field::new("viewname", DataType::Utf8, false),
        Field::new("viewowner", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
    ]);
    let owner = crate::pg_shared::bootstrap_name(catalog);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|v| v.schema.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|v| v.name.as_str()),
            )),
            Arc::new(StringArray::from(vec![owner; views.len()])),
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|v| definition(v)),
            )),
        ],
    )?)
}

/// A view `public.v` of `query`, for tests.
#[cfg(test)]
pub(crate) fn test_view(query: &str) -> ViewDef {
    ViewDef {
        oid: 1,
        schema: "public".into(),
        name: "v".into(),
        query: query.into(),
        columns: vec![],
        row_type_oid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_view as view;

    #[test]
    fn a_select_is_laid_out_as_postgres_prints_it() {
        let q = "SELECT o.id, c.name, o.total FROM sales.orders AS o \
                 JOIN customers AS c ON c.id = o.customer_id";
        assert_eq!(
            definition(&view(q)),
            " SELECT o.id,\n    c.name,\n    o.total\n   FROM sales.orders o\n     \
             JOIN customers c ON c.id = o.customer_id;"
        );
        assert_eq!(
            definition(&view("SELECT a AS b FROM t WHERE a > 1")),
            " SELECT a AS b\n   FROM t\n  WHERE a > 1;"
        );
    }

    #[test]
    fn other_queries_keep_their_text() {
        assert_eq!(
            definition(&view("SELECT 1 UNION SELECT 2")),
            " SELECT 1 UNION SELECT 2;"
        );
    }
}
