//! The text of `regclass`, `regtype` and `regnamespace` values: PostgreSQL prints an OID cast
//! to one of them as the object's name (`c.oid::regclass` shows `orders`,
//! `atttypid::regtype::text` is `integer`), where Shoal holds the OID itself.
//!
//! A cast to one of these types is rewritten, at the SQL level, to the function that names the
//! object where its text is what the query asks for: under a cast to text, and as a result
//! column of the statement. Elsewhere (`attrelid = 'orders'::regclass`, joins on OIDs) the OID
//! stays an OID. A string literal cast to `regclass` (`'orders'::regclass`) is the OID the
//! name finds on PostgreSQL's default search path (pg_catalog, then public).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, DataType, Expr, SelectItem, SetExpr, Statement, Value,
};

use crate::naming::parse_expr;

/// The OID of a relation named by text, as `'name'::regclass` reads it.
pub(crate) const REGCLASS_IN: &str = "shoal_regclass_in";
/// Names a relation OID as `regclass` prints it (registered per session: it reads the catalog).
pub(crate) const REGCLASS_OUT: &str = "shoal_regclass_out";
/// Names a schema OID as `regnamespace` prints it.
pub(crate) const REGNAMESPACE_OUT: &str = "shoal_regnamespace_out";

/// The function that names an OID of the reg type `t`, as SQL taking `{}` for the OID.
fn printer(t: &DataType) -> Option<&'static str> {
    let name = t.to_string().to_lowercase();
    Some(match name.trim_start_matches("pg_catalog.") {
        "regclass" => "shoal_regclass_out({})",
        "regtype" => "pg_catalog.format_type({}, NULL)",
        "regnamespace" => "shoal_regnamespace_out({})",
        _ => return None,
    })
}

fn is_text(t: &DataType) -> bool {
    let name = t.to_string().to_lowercase();
    matches!(
        name.trim_start_matches("pg_catalog."),
        "text" | "varchar" | "character varying" | "name"
    )
}

/// `e` when it is a cast of a non-literal to a reg type: the SQL that prints it.
fn printed(e: &Expr) -> Option<Expr> {
    let Expr::Cast {
        expr, data_type, ..
    } = e
    else {
        return None;
    };
    let printer = printer(data_type)?;
    if let Expr::Value(v) = expr.as_ref() {
        if matches!(v.value, Value::SingleQuotedString(_)) {
            return None;
        }
    }
    parse_expr(&printer.replace("{}", &format!("({expr})")))
}

/// `'name'::regclass` as the lookup of the name (the catalog rules would look in public only).
fn regclass_literal(e: &Expr) -> Option<Expr> {
    let Expr::Cast {
        expr, data_type, ..
    } = e
    else {
        return None;
    };
    let name = data_type.to_string().to_lowercase();
    if name.trim_start_matches("pg_catalog.") != "regclass" {
        return None;
    }
    match expr.as_ref() {
        Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_)) => {
            parse_expr(&format!("{REGCLASS_IN}({v})"))
        }
        _ => None,
    }
}

/// Rewrites the casts to reg types whose text the statement shows or casts to text, and the
/// `regclass` literals.
pub(crate) fn print_reg_casts(stmt: &mut Statement) {
    if let Statement::Query(query) = stmt {
        print_result_columns(&mut query.body);
    }
    let _ = visit_expressions_mut(stmt, |e| {
        if let Some(lookup) = regclass_literal(e) {
            *e = lookup;
            return ControlFlow::<()>::Continue(());
        }
        if let Expr::Cast {
            expr, data_type, ..
        } = e
        {
            if is_text(data_type) {
                // Expressions are visited inner first: a regclass literal under the text cast
                // is already its lookup.
                let text = match expr.as_ref() {
                    Expr::Function(f) if f.name.to_string() == REGCLASS_IN => {
                        parse_expr(&format!("{REGCLASS_OUT}({expr})"))
                    }
                    other => printed(other),
                };
                if let Some(text) = text {
                    **expr = text;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

fn print_result_columns(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for item in select.projection.iter_mut() {
                let expr = match &*item {
                    SelectItem::UnnamedExpr(e) => e,
                    SelectItem::ExprWithAlias { expr, .. } => expr,
                    _ => continue,
                };
                // `SELECT 'orders'::regclass` shows the name the literal finds.
                let literal = regclass_literal(expr)
                    .and_then(|lookup| parse_expr(&format!("{REGCLASS_OUT}({lookup})")));
                let Some(text) = literal.or_else(|| printed(expr)) else {
                    continue;
                };
                // `naming` named every such column (after its column or its type).
                match item {
                    SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                        *expr = text
                    }
                    _ => {}
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            print_result_columns(left);
            print_result_columns(right);
        }
        SetExpr::Query(q) => print_result_columns(&mut q.body),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_sql;

    fn rewritten(sql: &str) -> String {
        parse_sql(sql).unwrap().remove(0).to_string()
    }

    #[test]
    fn result_columns_and_text_casts_print_names() {
        assert_eq!(
            rewritten("select c.oid::regclass from pg_class c"),
            "SELECT shoal_regclass_out((c.oid)) AS \"oid\" FROM pg_catalog.pg_class c"
        );
        let sql = rewritten("select t from x where atttypid::regtype::text = 'integer'");
        assert!(
            sql.contains("format_type((atttypid), NULL)::TEXT = 'integer'"),
            "{sql}"
        );
    }

    #[test]
    fn regclass_literals_are_looked_up() {
        let sql = rewritten("select 1 from pg_attribute where attrelid = 'pg_class'::regclass");
        assert!(
            sql.contains("attrelid = shoal_regclass_in('pg_class')"),
            "{sql}"
        );
    }

    #[test]
    fn a_regclass_literal_cast_to_text_is_its_name() {
        let sql = rewritten("select 'cat_t'::regclass::text");
        assert!(
            sql.contains("shoal_regclass_out(shoal_regclass_in('cat_t'))"),
            "{sql}"
        );
    }

    #[test]
    fn comparisons_of_oids_stay_oids() {
        let sql = rewritten("select 1 from pg_attribute a where a.attrelid = a.atttypid::regclass");
        assert!(!sql.contains("shoal_regclass_out"), "{sql}");
    }
}
