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

/// A SQL type as written, in lower case and without `pg_catalog.`.
fn bare_type_name(t: &DataType) -> String {
    let name = t.to_string().to_lowercase();
    name.trim_start_matches("pg_catalog.").to_string()
}

/// The function that names an OID of the reg type `t`, as SQL taking `{}` for the OID.
fn printer(t: &DataType) -> Option<&'static str> {
    Some(match bare_type_name(t).as_str() {
        "regclass" => "shoal_regclass_out({})",
        "regtype" => "pg_catalog.format_type({}, NULL)",
        "regnamespace" => "shoal_regnamespace_out({})",
        _ => return None,
    })
}

fn is_text(t: &DataType) -> bool {
    matches!(
        bare_type_name(t).as_str(),
        "text" | "varchar" | "character varying" | "name"
    )
}

fn is_string_literal(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_)))
}

/// `e` when it is a cast to a reg type: the SQL that prints it. `regclass` and `regtype`
/// literals are looked up here; a `regnamespace` one stays a cast, which the catalog rules
/// read as an OID, under the printer (`pg_catalog`, as PostgreSQL shows it).
fn printed(e: &Expr) -> Option<Expr> {
    let Expr::Cast {
        expr, data_type, ..
    } = e
    else {
        return None;
    };
    let printer = printer(data_type)?;
    let oid = match reg_literal(e) {
        Some(lookup) => lookup.to_string(),
        None if is_string_literal(expr) => format!("({e})"),
        None => format!("({expr})"),
    };
    parse_expr(&printer.replace("{}", &oid))
}

/// `'name'::regclass` as the lookup of the name (the catalog rules would look in public only),
/// and `'name'::regtype` as `to_regtype`'s (which reads SQL names, `integer`, and qualified
/// ones, `pg_catalog.int8`), falling back on `pg_type.typname` (as the catalog rules read
/// the cast) for the types it does not know (row types).
fn reg_literal(e: &Expr) -> Option<Expr> {
    let Expr::Cast {
        expr, data_type, ..
    } = e
    else {
        return None;
    };
    if !is_string_literal(expr) {
        return None;
    }
    match bare_type_name(data_type).as_str() {
        "regclass" => parse_expr(&format!("{REGCLASS_IN}({expr})")),
        "regtype" => parse_expr(&format!(
            "coalesce(to_regtype({expr}), \
             (SELECT oid FROM pg_catalog.pg_type WHERE typname = {expr}))"
        )),
        _ => None,
    }
}

/// Rewrites the casts to reg types whose text the statement shows or casts to text, then the
/// remaining `regclass` and `regtype` literals.
pub(crate) fn print_reg_casts(stmt: &mut Statement) {
    if let Statement::Query(query) = stmt {
        print_result_columns(&mut query.body);
    }
    // Expressions are visited inner first, so the literals are looked up in a pass of their
    // own: one under a cast to text must still be a cast when that cast is visited.
    let _ = visit_expressions_mut(stmt, |e| {
        if let Expr::Cast {
            expr, data_type, ..
        } = e
        {
            if let Some(text) = is_text(data_type).then(|| printed(expr)).flatten() {
                **expr = text;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_expressions_mut(stmt, |e| {
        if let Some(lookup) = reg_literal(e) {
            *e = lookup;
        }
        ControlFlow::<()>::Continue(())
    });
}

fn print_result_columns(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for item in select.projection.iter_mut() {
                // `naming` named every such column (after its column or its type).
                let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
                else {
                    continue;
                };
                if let Some(text) = printed(expr) {
                    *expr = text;
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
    fn regtype_literals_shown_print_their_names() {
        let sql = rewritten("select 'int4'::regtype, 'text'::regtype::text");
        assert!(
            sql.contains("format_type(coalesce(to_regtype('int4'), (SELECT oid FROM pg_catalog.pg_type WHERE typname = 'int4')), NULL)")
                && sql.contains("format_type(coalesce(to_regtype('text')"),
            "{sql}"
        );
        let sql = rewritten("select 1 from pg_type where oid = 'int4'::regtype");
        assert!(!sql.contains("format_type"), "{sql}");
    }

    #[test]
    fn comparisons_of_oids_stay_oids() {
        let sql = rewritten("select 1 from pg_attribute a where a.attrelid = a.atttypid::regclass");
        assert!(!sql.contains("shoal_regclass_out"), "{sql}");
    }
}
