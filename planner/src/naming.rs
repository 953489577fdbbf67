//! PostgreSQL's names for result columns where DataFusion's differ, in every query of a
//! statement: `SELECT count(*)` yields a column named `count` (not `count(*)`), and a
//! single-column table function aliased without a column list, `generate_series(1, 3) AS n`,
//! has one column `n`.
//! Also where a PostgreSQL function is better written in DataFusion's terms at the SQL level
//! (`generate_subscripts`, `mod`, pgJDBC's `information_schema._pg_expandarray`, `ARRAY(subquery)`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, visit_expressions_mut, AccessExpr, BinaryOperator, Expr, FunctionArg,
    FunctionArgExpr, FunctionArguments, Ident, Query, Select, SelectItem, SetExpr, Statement,
    TableAlias, TableAliasColumnDef, TableFactor, TrimWhereField, Value, ValueWithSpan, VisitMut,
    VisitorMut,
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

/// `LIKE 'pg!_%' ESCAPE '!'` (SQLAlchemy's) as `LIKE 'pg\_%'`: DataFusion takes only the
/// default escape character, so a literal pattern is rewritten to it.
fn backslash_escaped(pattern: &mut Expr, escape_char: &mut Option<ValueWithSpan>) {
    let Some(escape) = escape_char.as_ref().and_then(|v| match &v.value {
        Value::SingleQuotedString(s) => Some(s.clone()),
        _ => None,
    }) else {
        return;
    };
    let mut chars = escape.chars();
    let (Some(escape), None) = (chars.next(), chars.next()) else {
        return;
    };
    // SQLAlchemy writes `'pg/_' || '%'`.
    let Some(text) = literal_text(pattern) else {
        return;
    };
    let mut rewritten = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            // The escaped character stands for itself.
            if let Some(next) = chars.next() {
                if matches!(next, '%' | '_' | '\\') {
                    rewritten.push('\\');
                }
                rewritten.push(next);
            }
        } else if c == '\\' {
            rewritten.push_str("\\\\");
        } else {
            rewritten.push(c);
        }
    }
    *pattern = Expr::value(Value::SingleQuotedString(rewritten));
    *escape_char = None;
}

/// The text of a string literal, or of a concatenation of them.
fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(text),
            ..
        }) => Some(text.clone()),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::StringConcat,
            right,
        } => Some(literal_text(left)? + &literal_text(right)?),
        Expr::Nested(inner) => literal_text(inner),
        _ => None,
    }
}

/// Replaces `e` by the expression `sql` (left alone if it does not parse).
fn replace_with_sql(e: &mut Expr, sql: &str) {
    if let Some(rewritten) = parse_expr(sql) {
        *e = rewritten;
    }
}

impl VisitorMut for FunctionAliases {
    type Break = ();

    /// pgJDBC's `information_schema._pg_expandarray(a)`, a set of `(x, n)` records: its `.n`
    /// is `generate_subscripts(a, 1)` and the record itself, or its `.x`, is `unnest(a)`. A
    /// `(alias).x` of such a record is the alias.
    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = e
        {
            backslash_escaped(pattern, escape_char);
        }
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
        crate::array_subquery::rewrite(e);
        let Expr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_lowercase();
        let name = name.trim_start_matches("pg_catalog.");
        if name == "pg_partition_ancestors" {
            // No relation has ancestors (see `table_function_replacement`): no rows.
            let args = f.args.to_string();
            replace_with_sql(e, &format!("unnest(pg_partition_ancestor_oids{args})"));
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        if let Some(sql) = json_set_function(name, &list.args) {
            replace_with_sql(e, &sql);
            return ControlFlow::Continue(());
        }
        if let ("mod", [dividend, divisor]) = (name, list.args.as_slice()) {
            // PostgreSQL's `mod(a, b)` is its `a % b` (the sign of the dividend).
            let sql = format!("(({dividend}) % ({divisor}))");
            replace_with_sql(e, &sql);
            return ControlFlow::Continue(());
        }
        if name != "generate_subscripts" {
            return ControlFlow::Continue(());
        }
        let [array, dimension] = list.args.as_slice() else {
            return ControlFlow::Continue(());
        };
        let sql = format!("unnest(generate_series(1, array_length({array}, {dimension})))");
        replace_with_sql(e, &sql);
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
        if let Some(replacement) = table_function_replacement(t) {
            *t = replacement;
        }
        // `f(...) AS n` of a one-column function names its column `n`; without an alias,
        // PostgreSQL names the relation and its column after the function.
        let (function, alias) = match t {
            TableFactor::Table {
                name,
                args: Some(_),
                alias,
                ..
            } => match name.0.last().and_then(|p| p.as_ident()) {
                Some(f) => (f.value.to_lowercase(), alias),
                None => return ControlFlow::Continue(()),
            },
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset: false,
                with_ordinality: false,
                ..
            } if array_exprs.len() == 1 => ("unnest".to_string(), alias),
            _ => return ControlFlow::Continue(()),
        };
        if SINGLE_COLUMN_FUNCTIONS.contains(&function.as_str()) {
            match alias {
                Some(alias) => name_single_column(alias),
                None => *alias = Some(single_column_alias(&function)),
            }
        }
        ControlFlow::Continue(())
    }
}

fn single_column_alias(function: &str) -> TableAlias {
    let mut alias = TableAlias {
        explicit: true,
        name: Ident::new(function),
        columns: vec![],
        at: None,
    };
    name_single_column(&mut alias);
    alias
}

/// `f(...) AS n` of a one-column function names its column `n`.
fn name_single_column(alias: &mut TableAlias) {
    if alias.columns.is_empty() {
        alias.columns = vec![TableAliasColumnDef {
            name: alias.name.clone(),
            data_type: None,
        }];
    }
}

/// `json[b]_array_elements[_text](d)` and `json[b]_object_keys(d)` in a select list: the
/// unnest of the array of parts `planner/src/json` lists, as documents where PostgreSQL's
/// function returns them.
fn json_set_function(function: &str, args: &[FunctionArg]) -> Option<String> {
    let [doc] = args else {
        return None;
    };
    let (ty, set) = function.split_once('_')?;
    let parts = match set {
        "array_elements" => format!("{ty}_in(unnest({ty}_array_elements_array({doc})))"),
        "array_elements_text" => format!("unnest({ty}_array_elements_text_array({doc}))"),
        "object_keys" => format!("unnest({ty}_object_keys_array({doc}))"),
        _ => return None,
    };
    matches!(ty, "json" | "jsonb").then_some(parts)
}

/// Table functions DataFusion cannot call as written, in terms it can:
/// - `generate_series(a, b)` whose bounds are not constants (psql's `\d` passes a column of
///   the outer query) is the unnest of the array that the scalar `generate_series` builds,
///   which DataFusion plans for each outer row;
/// - a function returning an array (`string_to_array(...) AS s`, Grafana's) is one row
///   holding the array, as in PostgreSQL;
/// - the JSON set-returning functions are a query unnesting the arrays of parts that
///   `planner/src/json` lists;
/// - `pg_partition_ancestors(rel)` is empty: Shoal has no partitioned tables in
///   PostgreSQL's sense (no table is a partition of another), and PostgreSQL returns no rows
///   for a relation that is not a partition.
fn table_function_replacement(t: &TableFactor) -> Option<TableFactor> {
    let TableFactor::Table {
        name,
        args: Some(args),
        alias,
        with_ordinality,
        ..
    } = t
    else {
        return None;
    };
    let function = name.0.last()?.as_ident()?.value.to_lowercase();
    match function.as_str() {
        "generate_series" if !*with_ordinality => {
            let constant = args.args.iter().all(|a| {
                matches!(
                    a,
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(
                        Expr::Value(_) | Expr::UnaryOp { .. }
                    ))
                )
            });
            if constant {
                return None;
            }
            let list: Vec<String> = args.args.iter().map(|a| a.to_string()).collect();
            let call = parse_expr(&format!("generate_series({})", list.join(", ")))?;
            Some(TableFactor::UNNEST {
                alias: alias.clone(),
                array_exprs: vec![call],
                with_offset: false,
                with_offset_alias: None,
                with_ordinality: false,
            })
        }
        // A function returning an array, in FROM, is one row holding the array.
        "string_to_array" | "regexp_split_to_array" | "current_schemas" if !*with_ordinality => {
            let alias = alias.clone()?;
            let column = alias
                .columns
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_else(|| alias.name.clone());
            let list: Vec<String> = args.args.iter().map(|a| a.to_string()).collect();
            let sql = format!("SELECT {function}({}) AS {column}", list.join(", "));
            derived_table(&sql, Some(alias))
        }
        // The JSON set-returning functions read one document (a constant or a parameter:
        // DataFusion cannot run a function over the columns of a table beside it).
        "json_array_elements"
        | "jsonb_array_elements"
        | "json_array_elements_text"
        | "jsonb_array_elements_text"
        | "json_object_keys"
        | "jsonb_object_keys"
        | "json_each"
        | "jsonb_each"
        | "json_each_text"
        | "jsonb_each_text"
            if !*with_ordinality =>
        {
            let [doc] = args.args.as_slice() else {
                return None;
            };
            let (ty, set) = function.split_once('_')?;
            let select = match set {
                "each" => format!(
                    "SELECT unnest({ty}_object_keys_array({doc})) AS key, \
                     {ty}_in(unnest({ty}_each_values_array({doc}))) AS value"
                ),
                "each_text" => format!(
                    "SELECT unnest({ty}_object_keys_array({doc})) AS key, \
                     unnest({ty}_each_text_values_array({doc})) AS value"
                ),
                "object_keys" => {
                    // One column of a base type: named after the alias, as PostgreSQL does.
                    let column = alias
                        .as_ref()
                        .map_or(function.clone(), |a| a.name.value.clone());
                    let call = json_set_function(&function, &args.args)?;
                    format!("SELECT {call} AS \"{column}\"")
                }
                _ => format!(
                    "SELECT {} AS value",
                    json_set_function(&function, &args.args)?
                ),
            };
            let alias = alias.clone().or_else(|| {
                Some(TableAlias {
                    explicit: true,
                    name: Ident::new(function.as_str()),
                    columns: vec![],
                    at: None,
                })
            });
            derived_table(&select, alias)
        }
        "pg_partition_ancestors" => {
            let columns = match with_ordinality {
                true => "NULL::oid AS relid, NULL::bigint AS depth",
                false => "NULL::oid AS relid",
            };
            derived_table(&format!("SELECT {columns} WHERE false"), alias.clone())
        }
        _ => None,
    }
}

/// `(<sql>) AS alias` in a FROM list.
fn derived_table(sql: &str, alias: Option<TableAlias>) -> Option<TableFactor> {
    let subquery = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .ok()?;
    Some(TableFactor::Derived {
        lateral: false,
        subquery,
        alias,
        sample: None,
    })
}

/// The expression `sql`, None when it does not parse.
pub(crate) fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
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
            // A cast's own type name is weak: `'x'::regclass::text` is named `text`.
            Expr::Cast { .. } if !names_itself(expr) => cast_name(&data_type.to_string()),
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
        // Named after its ELSE result when that has a name of its own (a column, a function),
        // as PostgreSQL's FigureColname does.
        Expr::Case { else_result, .. } => {
            let named = else_result.as_deref().and_then(|e| match e {
                Expr::Identifier(i) => Some(column_name(i)),
                Expr::CompoundIdentifier(parts) => parts.last().map(column_name),
                other => postgres_name(other).filter(|n| n != "?column?"),
            });
            Some(named.unwrap_or_else(|| "case".into()))
        }
        // The functions PostgreSQL's grammar turns these into.
        Expr::Trim { trim_where, .. } => Some(
            match trim_where {
                Some(TrimWhereField::Leading) => "ltrim",
                Some(TrimWhereField::Trailing) => "rtrim",
                _ => "btrim",
            }
            .into(),
        ),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Overlay { .. } => Some("overlay".into()),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::AtTimeZone { .. } => Some("timezone".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Interval(_) => Some("interval".into()),
        Expr::TypedString(t) => cast_name(&t.data_type.to_string()),
        Expr::Collate { expr, .. } => postgres_name(expr),
        // `(record).field` is named after the field.
        Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last() {
            Some(AccessExpr::Dot(Expr::Identifier(i))) => Some(column_name(i)),
            _ => Some("?column?".into()),
        },
        _ => Some("?column?".into()),
    }
}

/// Whether `e`, under its casts, is a column or a function call, whose name a cast keeps.
fn names_itself(e: &Expr) -> bool {
    match e {
        Expr::Cast { expr, .. } | Expr::Nested(expr) => names_itself(expr),
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_) => true,
        _ => false,
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
    let base = base.trim_start_matches("pg_catalog.");
    Some(
        match base {
            "regclass" | "regtype" | "regnamespace" | "regproc" | "regrole" | "oid" => base,
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

/// Names the columns of every SELECT in a query body; a set operation's columns are named
/// after its first branch, as in both PostgreSQL and DataFusion, but every branch needs its
/// repeated names kept apart.
fn name_body(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => name_select(select),
        SetExpr::SetOperation { left, right, .. } => {
            name_body(left);
            name_body(right);
        }
        _ => {}
    }
}

fn name_select(select: &mut Select) {
    // Beside a `*`, an explicit column (`SELECT n.oid, n.*`) repeats one of the names the
    // star expands to, which only the planner knows: keep it apart whatever the star holds.
    let has_wildcard = select.projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
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
        let repeated = shown[..i].iter().any(|n| n.as_ref() == Some(name))
            || (has_wildcard && matches!(item, SelectItem::UnnamedExpr(_)));
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

/// Names the columns of every query in a statement, subqueries included: a derived table's
/// names are what an outer `*` shows.
struct QueryNames;

impl VisitorMut for QueryNames {
    type Break = ();

    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        name_body(&mut q.body);
        ControlFlow::Continue(())
    }
}

/// Gives every result column PostgreSQL's name for what the client wrote; runs before any
/// rewrite changes what the expressions look like (`x = ANY(a)` into `array_contains`).
pub(crate) fn name_columns(stmt: &mut Statement) {
    let _ = stmt.visit(&mut QueryNames);
}

/// `'pg_catalog.array_in'::regproc` is the function's name as the static catalogs hold it
/// (`pg_type.typinput` is the text `array_in`), so that pgJDBC's and DBeaver's
/// `typinput = 'array_in'::regproc` compares names instead of failing to read `boolin` as an
/// OID. Runs before the catalog rules, which would turn the cast into an OID lookup.
pub(crate) fn regproc_literals(stmt: &mut Statement) {
    let _ = visit_expressions_mut(stmt, |e| {
        if let Expr::Cast {
            expr, data_type, ..
        } = e
        {
            let is_regproc = matches!(
                data_type.to_string().to_lowercase().as_str(),
                "regproc" | "pg_catalog.regproc"
            );
            if let (true, Expr::Value(v)) = (is_regproc, expr.as_ref()) {
                if let Value::SingleQuotedString(name) = &v.value {
                    let bare = name.trim_start_matches("pg_catalog.").to_string();
                    *e = Expr::value(Value::SingleQuotedString(bare));
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Writes the functions DataFusion lacks in terms of the ones it has.
pub(crate) fn rewrite_functions(stmt: &mut Statement) {
    let expands_arrays = visit_expressions(stmt, |e| match expanded_array(e) {
        Some(_) => ControlFlow::Break(()),
        None => ControlFlow::Continue(()),
    })
    .is_break();
    let _ = stmt.visit(&mut FunctionAliases { expands_arrays });
}
