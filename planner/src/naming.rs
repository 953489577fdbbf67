//! PostgreSQL's names for result columns where DataFusion's differ: `SELECT count(*)` yields a
//! column named `count` (not `count(*)`; outermost SELECT list only), and a single-column table
//! function aliased without a column list, `generate_series(1, 3) AS n`, has one column `n`.
//! Also where a PostgreSQL function is better written in DataFusion's terms at the SQL level
//! (`generate_subscripts`, pgJDBC's `information_schema._pg_expandarray`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, AccessExpr, Expr, FunctionArg, FunctionArguments, Ident, Query, SelectItem,
    SetExpr, Statement, TableAliasColumnDef, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Table functions with one output column.
const SINGLE_COLUMN_FUNCTIONS: &[&str] = &["generate_series", "unnest", "range"];

struct FunctionAliases {
    /// The statement calls `_pg_expandarray`, so `(alias).x` reads one of its records.
    expands_arrays: bool,
}

/// The argument of an `information_schema._pg_expandarray(a)` call.
fn expanded_array(e: &Expr) -> Option<&FunctionArg> {
    let Expr::Function(f) = e else {
        return None;
    };
    let name = f.name.0.last()?.as_ident()?.value.to_lowercase();
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    match (name.as_str(), list.args.as_slice()) {
        ("_pg_expandarray", [array]) => Some(array),
        _ => None,
    }
}

/// Replaces `e` by the expression `sql` (left alone if it does not parse).
fn replace_with_sql(e: &mut Expr, sql: &str) {
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr());
    if let Ok(rewritten) = parsed {
        *e = rewritten;
    }
}

impl VisitorMut for FunctionAliases {
    type Break = ();

    /// pgJDBC's `information_schema._pg_expandarray(a)`, a set of `(x, n)` records: its `.n`
    /// is `generate_subscripts(a, 1)` and the record itself, or its `.x`, is `unnest(a)`. A
    /// `(alias).x` of such a record is the alias.
    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::CompoundFieldAccess { root, access_chain } = e {
            let [AccessExpr::Dot(Expr::Identifier(field))] = access_chain.as_slice() else {
                return ControlFlow::Continue(());
            };
            let field = field.value.to_lowercase();
            let inner = match root.as_ref() {
                Expr::Nested(inner) => inner.as_ref(),
                other => other,
            };
            if let Some(array) = expanded_array(inner) {
                let sql = match field.as_str() {
                    "n" => format!("generate_subscripts({array}, 1)"),
                    _ => format!("unnest({array})"),
                };
                replace_with_sql(e, &sql);
            } else if self.expands_arrays && field == "x" {
                *e = inner.clone();
            }
        } else if let Some(array) = expanded_array(e) {
            let sql = format!("unnest({array})");
            replace_with_sql(e, &sql);
        }
        ControlFlow::Continue(())
    }

    /// `generate_subscripts(a, d)`, which DataFusion lacks, as the unnest of the subscripts it
    /// generates; beside `unnest(a)` in a select list, the two zip row by row as in PostgreSQL.
    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_lowercase();
        if name != "generate_subscripts" && name != "pg_catalog.generate_subscripts" {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        let [array, dimension] = list.args.as_slice() else {
            return ControlFlow::Continue(());
        };
        let sql = format!("unnest(generate_series(1, array_length({array}, {dimension})))");
        replace_with_sql(e, &sql);
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            alias: Some(alias),
            ..
        } = t
        {
            let function = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default();
            if alias.columns.is_empty() && SINGLE_COLUMN_FUNCTIONS.contains(&function.as_str()) {
                alias.columns = vec![TableAliasColumnDef {
                    name: alias.name.clone(),
                    data_type: None,
                }];
            }
        }
        ControlFlow::Continue(())
    }
}

/// The name PostgreSQL gives an unaliased select-list expression; None where DataFusion's
/// name is already right (column references).
fn postgres_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => None,
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            // `c.oid::regclass` keeps the column's bare name.
            Expr::Identifier(i) => Some(column_name(i)),
            Expr::CompoundIdentifier(parts) => parts.last().map(column_name),
            inner => postgres_name(inner)
                .filter(|n| n != "?column?")
                .or_else(|| cast_name(&data_type.to_string())),
        },
        Expr::Nested(inner) => postgres_name(inner),
        // A scalar subquery is named after its own (first) column.
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(select) => match select.projection.first() {
                Some(SelectItem::ExprWithAlias { alias, .. }) => Some(column_name(alias)),
                Some(SelectItem::UnnamedExpr(Expr::Identifier(i))) => Some(column_name(i)),
                Some(SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts))) => {
                    parts.last().map(column_name)
                }
                Some(SelectItem::UnnamedExpr(e)) => postgres_name(e),
                _ => Some("?column?".into()),
            },
            _ => Some("?column?".into()),
        },
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Case { .. } => Some("case".into()),
        _ => Some("?column?".into()),
    }
}

/// An identifier as PostgreSQL resolves it: unquoted names fold to lower case.
fn column_name(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

/// PostgreSQL's internal type name, which it uses for `'1'::int` and friends.
fn cast_name(sql_type: &str) -> Option<String> {
    let t = sql_type.to_lowercase();
    let base = t.split('(').next().unwrap_or(&t).trim();
    Some(
        match base {
            "int" | "integer" | "int4" => "int4",
            "bigint" | "int8" => "int8",
            "smallint" | "int2" => "int2",
            "text" => "text",
            "varchar" | "character varying" => "varchar",
            "boolean" | "bool" => "bool",
            "date" => "date",
            "numeric" | "decimal" => "numeric",
            "double precision" | "float8" | "double" => "float8",
            "real" | "float4" => "float4",
            "timestamp" => "timestamp",
            "timestamptz" | "timestamp with time zone" => "timestamptz",
            "bytea" => "bytea",
            "json" => "json",
            "jsonb" => "jsonb",
            "uuid" => "uuid",
            _ => return None,
        }
        .to_string(),
    )
}

/// Marks the part of an output column name that only keeps it distinct: PostgreSQL allows
/// two result columns with one name (`SELECT a, a`), DataFusion does not, so the second is
/// planned as `a` + this + its position, and the wire layer cuts the suffix off.
pub const DUPLICATE_NAME_SUFFIX: char = '\u{1f}';

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
    // The name each column ends up with, to find the ones that would collide.
    let shown: Vec<Option<String>> = select
        .projection
        .iter()
        .zip(&names)
        .map(|(item, name)| match item {
            SelectItem::UnnamedExpr(e) => name.clone().or_else(|| match e {
                Expr::Identifier(i) => Some(column_name(i)),
                Expr::CompoundIdentifier(parts) => parts.last().map(column_name),
                _ => None,
            }),
            SelectItem::ExprWithAlias { alias, .. } => Some(column_name(alias)),
            _ => None,
        })
        .collect();
    for (i, item) in select.projection.iter_mut().enumerate() {
        let Some(name) = &shown[i] else { continue };
        let repeated = shown[..i].iter().any(|n| n.as_ref() == Some(name));
        let name = match repeated {
            true => format!("{name}{DUPLICATE_NAME_SUFFIX}{i}"),
            false if names[i].is_some() => name.clone(),
            false => continue,
        };
        match item {
            SelectItem::UnnamedExpr(e) => {
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::with_quote('"', name),
                };
            }
            SelectItem::ExprWithAlias { alias, .. } => *alias = Ident::with_quote('"', name),
            _ => {}
        }
    }
}

pub(crate) fn apply(stmt: &mut Statement) {
    let expands_arrays = visit_expressions(stmt, |e| match expanded_array(e) {
        Some(_) => ControlFlow::Break(()),
        None => ControlFlow::Continue(()),
    })
    .is_break();
    let _ = stmt.visit(&mut FunctionAliases { expands_arrays });
    if let Statement::Query(q) = stmt {
        name_query(q);
    }
}
