//! Point selects recognized on the syntax tree: `SELECT columns FROM table WHERE key = value
//! [AND ...]`, where the conjuncts name every primary-key column once and each value is a
//! literal or a parameter. Such a statement reads at most one row, and planning it with
//! DataFusion costs a hundred times more than reading that row; the server reads it straight
//! from storage instead (`shoal_executor::read_point`).
//!
//! Only the plainest form is taken: plain columns or `*` in the select list (aliases allowed),
//! one base table without joins, integer or text keys compared with a number, a string or a
//! `$n`. Anything else (expressions, views, ORDER BY, LIMIT, FOR UPDATE, other predicates, a
//! name that does not resolve) is left to DataFusion, which also reports the errors.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, Query, Select, SelectItem, SetExpr, Statement,
    TableFactor, UnaryOperator, Value, WildcardAdditionalOptions,
};
use shoal_coord::{Catalog, SqlType};
use shoal_executor::TableHandle;

use crate::ddl::{ident_name, object_name};

/// A statement that reads the one row of a full primary key.
#[derive(Debug, Clone)]
pub struct PointSelect {
    pub table: TableHandle,
    /// Visible-column indices of the output columns, in output order.
    pub projection: Vec<usize>,
    /// The output columns, named as the select list names them.
    pub schema: SchemaRef,
    /// The value of each primary-key column, in key order.
    key: Vec<KeyOperand>,
}

#[derive(Debug, Clone)]
enum KeyOperand {
    Literal(ScalarValue),
    /// `$n`, 1-based.
    Param(usize),
}

impl PointSelect {
    /// The point select `stmt` is, against `catalog`; `None` when it is anything else.
    pub fn recognize(stmt: &Statement, catalog: &Catalog) -> Option<PointSelect> {
        let Statement::Query(query) = stmt else {
            return None;
        };
        let select = plain_select(query)?;
        let [from] = select.from.as_slice() else {
            return None;
        };
        if !from.joins.is_empty() {
            return None;
        }
        let TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
        } = &from.relation
        else {
            return None;
        };
        if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
            return None;
        }
        let (schema_name, table_name) = object_name(name).ok()?;
        let table = TableHandle::new(Arc::new(catalog.table(&schema_name, &table_name)?.clone()));
        // With an alias, only the alias qualifies columns (as in PostgreSQL).
        let qualifier = match alias {
            Some(a) if !a.columns.is_empty() => return None,
            Some(a) => ident_name(&a.name),
            None => table_name,
        };
        let columns = Columns {
            table: &table,
            qualifier,
        };
        let (projection, fields) = columns.select_list(&select.projection)?;
        let key = columns.key_operands(select.selection.as_ref()?)?;
        Some(PointSelect {
            table,
            projection,
            schema: Arc::new(Schema::new(fields)),
            key,
        })
    }

    /// The primary-key values with the parameters bound; `None` when a parameter is missing.
    pub fn key_values(&self, params: Option<&ParamValues>) -> Option<Vec<ScalarValue>> {
        self.key
            .iter()
            .map(|k| match k {
                KeyOperand::Literal(v) => Some(v.clone()),
                KeyOperand::Param(n) => match params? {
                    ParamValues::List(list) => list.get(n - 1).map(|p| p.value.clone()),
                    ParamValues::Map(_) => None,
                },
            })
            .collect()
    }
}

/// The SELECT of a query with nothing around it (no WITH, ORDER BY, LIMIT, locking clause),
/// and nothing in it but a select list, FROM and WHERE.
fn plain_select(query: &Query) -> Option<&Select> {
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
        || !query.locks.is_empty()
        || query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let no_grouping =
        matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let plain = select.distinct.is_none()
        && select.select_modifiers.is_none()
        && select.top.is_none()
        && select.exclude.is_none()
        && select.into.is_none()
        && select.lateral_views.is_empty()
        && select.prewhere.is_none()
        && select.connect_by.is_empty()
        && no_grouping
        && select.cluster_by.is_empty()
        && select.distribute_by.is_empty()
        && select.sort_by.is_empty()
        && select.having.is_none()
        && select.named_window.is_empty()
        && select.qualify.is_none()
        && select.value_table_mode.is_none();
    plain.then_some(select.as_ref())
}

/// Resolves column references against the one table of the FROM clause.
struct Columns<'a> {
    table: &'a TableHandle,
    /// The name that may qualify a column: the table's alias, or else its name.
    qualifier: String,
}

impl Columns<'_> {
    /// The visible-column index a plain or qualified column reference names.
    fn column(&self, e: &Expr) -> Option<usize> {
        let name = match e {
            Expr::Identifier(ident) => ident_name(ident),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c] if ident_name(q) == self.qualifier => ident_name(c),
                _ => return None,
            },
            Expr::Nested(inner) => return self.column(inner),
            _ => return None,
        };
        self.table.schema.index_of(&name).ok()
    }

    /// The columns of the select list, with the fields they are output as.
    fn select_list(&self, items: &[SelectItem]) -> Option<(Vec<usize>, Vec<Field>)> {
        let mut projection = Vec::new();
        let mut fields = Vec::new();
        let mut output = |index: usize, alias: Option<&Ident>| {
            let field = self.table.schema.field(index).clone();
            fields.push(match alias {
                Some(a) => field.with_name(ident_name(a)),
                None => field,
            });
            projection.push(index);
        };
        for item in items {
            match item {
                SelectItem::UnnamedExpr(e) => output(self.column(e)?, None),
                SelectItem::ExprWithAlias { expr, alias } => {
                    output(self.column(expr)?, Some(alias))
                }
                SelectItem::Wildcard(options) if plain_wildcard(options) => {
                    (0..self.table.schema.fields().len()).for_each(|i| output(i, None))
                }
                _ => return None,
            }
        }
        Some((projection, fields))
    }

    /// One operand per primary-key column when `selection` is `k1 = v1 AND k2 = v2 ...`
    /// over exactly the key columns.
    fn key_operands(&self, selection: &Expr) -> Option<Vec<KeyOperand>> {
        let key_columns = &self.table.key_columns;
        if key_columns.is_empty() {
            return None;
        }
        let mut operands: Vec<Option<KeyOperand>> = vec![None; key_columns.len()];
        let mut conjuncts = vec![selection];
        while let Some(e) = conjuncts.pop() {
            match e {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::And,
                    right,
                } => conjuncts.extend([left.as_ref(), right.as_ref()]),
                Expr::Nested(inner) => conjuncts.push(inner),
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } => {
                    let (column, value) = match (self.column(left), self.column(right)) {
                        (Some(c), None) => (c, right),
                        (None, Some(c)) => (c, left),
                        _ => return None,
                    };
                    let position = key_columns.iter().position(|k| *k == column)?;
                    let sql_type = &self.table.def.visible_columns().nth(column)?.sql_type;
                    let operand = key_operand(value, sql_type)?;
                    if operands[position].replace(operand).is_some() {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        operands.into_iter().collect()
    }
}

fn plain_wildcard(options: &WildcardAdditionalOptions) -> bool {
    options.opt_ilike.is_none()
        && options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none()
        && options.opt_alias.is_none()
}

/// A value compared with a key column of type `sql_type`, when PostgreSQL would compare them
/// without a cast that could fail: a number with an integer column, a string with a text one.
fn key_operand(value: &Expr, sql_type: &SqlType) -> Option<KeyOperand> {
    let integer = matches!(sql_type, SqlType::Int2 | SqlType::Int4 | SqlType::Int8);
    let text = matches!(sql_type, SqlType::Text | SqlType::Varchar(_));
    match value {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => {
                let n: usize = p.strip_prefix('$')?.parse().ok()?;
                (n >= 1 && (integer || text)).then_some(KeyOperand::Param(n))
            }
            Value::Number(n, false) if integer => Some(KeyOperand::Literal(ScalarValue::Int64(
                Some(n.to_string().parse().ok()?),
            ))),
            Value::SingleQuotedString(s) if text => {
                Some(KeyOperand::Literal(ScalarValue::Utf8(Some(s.clone()))))
            }
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } if integer => match key_operand(expr, sql_type)? {
            KeyOperand::Literal(ScalarValue::Int64(Some(n))) => Some(KeyOperand::Literal(
                ScalarValue::Int64(Some(n.checked_neg()?)),
            )),
            _ => None,
        },
        Expr::Nested(inner) => key_operand(inner, sql_type),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let mut catalog = Catalog::default();
        for sql in [
            "CREATE TABLE accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))",
            "CREATE TABLE pairs (a bigint, b text, v float8, PRIMARY KEY (b, a))",
            "CREATE TABLE padded (c char(4) PRIMARY KEY, v int)",
            "CREATE TABLE heap (v int)",
        ] {
            let Ok(mut parsed) = crate::parse_sql(sql) else {
                panic!("{sql} does not parse");
            };
            let Statement::CreateTable(create) = parsed.remove(0) else {
                panic!("{sql} is not CREATE TABLE");
            };
            let new = crate::ddl::table_from_create(&create).expect("table definition");
            catalog
                .create_table(new.def, new.partitions, &[1], 1)
                .expect("table created");
        }
        catalog
    }

    fn recognize(sql: &str) -> Option<PointSelect> {
        let stmt = crate::parse_sql(sql).expect("parses").remove(0);
        PointSelect::recognize(&stmt, &catalog())
    }

    fn names(p: &PointSelect) -> Vec<String> {
        p.schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn pgbench_select_is_a_point_select() {
        let p = recognize("SELECT abalance FROM pgbench_accounts WHERE aid = $1");
        assert!(p.is_none(), "unknown table");
        let p = recognize("SELECT abalance FROM accounts WHERE aid = $1").expect("point select");
        assert_eq!(p.projection, vec![2]);
        assert_eq!(names(&p), vec!["abalance"]);
        let params = ParamValues::List(vec![ScalarValue::Int32(Some(7)).into()]);
        assert_eq!(
            p.key_values(Some(&params)),
            Some(vec![ScalarValue::Int32(Some(7))])
        );
        assert_eq!(p.key_values(None), None);
    }

    #[test]
    fn composite_keys_aliases_and_wildcards() {
        let p =
            recognize("SELECT p.v AS value, * FROM public.pairs AS p WHERE (a = -3) AND 'x' = p.b")
                .expect("point select");
        assert_eq!(names(&p), vec!["value", "a", "b", "v"]);
        assert_eq!(p.projection, vec![2, 0, 1, 2]);
        assert_eq!(
            p.key_values(None),
            Some(vec![
                ScalarValue::Utf8(Some("x".into())),
                ScalarValue::Int64(Some(-3))
            ])
        );
    }

    #[test]
    fn everything_else_is_left_to_datafusion() {
        for sql in [
            "SELECT abalance FROM accounts WHERE aid = 1 AND bid = 2",
            "SELECT abalance FROM accounts WHERE aid = 1 OR aid = 2",
            "SELECT abalance FROM accounts WHERE aid = 1 AND aid = 2",
            "SELECT abalance FROM accounts WHERE aid > 1",
            "SELECT abalance FROM accounts WHERE aid = '1'",
            "SELECT abalance FROM accounts WHERE aid = 1.5",
            "SELECT abalance FROM accounts WHERE aid = $1::int8",
            "SELECT abalance + 1 FROM accounts WHERE aid = 1",
            "SELECT accounts.abalance FROM accounts a WHERE aid = 1",
            "SELECT abalance FROM accounts WHERE aid = 1 ORDER BY 1",
            "SELECT abalance FROM accounts WHERE aid = 1 LIMIT 1",
            "SELECT abalance FROM accounts WHERE aid = 1 FOR UPDATE",
            "SELECT DISTINCT abalance FROM accounts WHERE aid = 1",
            "SELECT count(*) FROM accounts WHERE aid = 1",
            "SELECT abalance FROM accounts, heap WHERE aid = 1",
            "SELECT v FROM pairs WHERE a = 1",
            "SELECT v FROM pairs WHERE a = 1 AND b = 2",
            "SELECT v FROM padded WHERE c = 'ab'",
            "SELECT v FROM heap WHERE v = 1",
            "SELECT nosuch FROM accounts WHERE aid = 1",
            "WITH x AS (SELECT 1) SELECT abalance FROM accounts WHERE aid = 1",
        ] {
            assert!(
                recognize(sql).is_none(),
                "{sql} is not a plain point select"
            );
        }
    }
}
