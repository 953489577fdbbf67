//! SQL planning for Shoal: from SQL text to DataFusion plans over Shoal's partitioned tables.
//!
//! In: SQL statements (parsed with DataFusion's own sqlparser, PostgreSQL dialect) and the
//! catalog snapshot from `shoal-coord`. Out: DataFusion logical/physical plans whose leaves are
//! `shoal_executor::PartitionScanExec` fragments (one per surviving partition, after pruning on
//! primary-key predicates), and catalog definitions for DDL.
//!
//! The planner decides *what* runs where; it never writes rows itself and must not depend on
//! the server crate.

mod array_subquery;
mod catalog;
mod catalog_functions;
mod co_partitioned_joins;
mod computed;
mod constant_overflow;
pub mod ddl;
mod error;
mod format_function;
mod function_signatures;
mod functions;
mod integer_casts;
mod json;
mod naming;
mod numeric_avg;
mod numeric_division;
mod numeric_literals;
mod per_row_subquery;
mod pg15_catalog;
pub mod pg_input;
mod pg_operators;
pub mod pg_output;
mod pg_overlay;
mod pg_relations;
mod pg_settings;
mod pg_shared;
mod pg_static_arrays;
mod pg_syntax;
mod pg_views;
mod point_select;
mod push_to_leaders;
mod reg_output;
mod regex_functions;
mod relation_functions;
mod row_writes;
mod system;
mod table;
mod to_char;
mod to_datetime;
mod typed_array_agg;
mod types;
mod updatable_views;

pub use catalog::{ShoalCatalog, DATABASE_NAME};
pub use error::PlannerError;
pub use functions::{register_session_functions, SessionInfo};
pub use naming::DUPLICATE_NAME_SUFFIX;
pub use pg_overlay::{ActivityRow, ActivitySource};
pub use point_select::PointSelect;
pub use row_writes::{plan_row_writes, RowWriteTable};
pub use table::{DmlOptions, ShoalTable, StatementTxn, DML_TABLE_PREFIX};
pub use updatable_views::through_view;

use std::sync::Arc;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use shoal_coord::{ClusterView, MetaStore};
use shoal_executor::{RemoteFragments, RowIdAllocator};
use shoal_storage::Store;

/// Builds the session context shared (by cloning its state) by every connection: the Shoal
/// catalog as `shoal.public` and friends, pg_catalog, information_schema and Shoal's functions.
///
/// With `remote` (a cluster node), scans of partitions led by other nodes become fragments
/// shipped to those nodes (`push_to_leaders.rs`).
pub fn base_context(
    meta: Arc<dyn MetaStore>,
    cluster: Arc<dyn ClusterView>,
    remote: Option<Arc<RemoteFragments>>,
    store: Store,
    row_ids: Arc<RowIdAllocator>,
    activity: Arc<dyn ActivitySource>,
) -> Result<SessionContext, PlannerError> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE_NAME, "public")
        .with_information_schema(true)
        .with_target_partitions(4)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", true)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
        .set_bool("datafusion.sql_parser.parse_float_as_decimal", true);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog = Arc::new(ShoalCatalog::new(
        meta.clone(),
        cluster.local_node(),
        remote.clone(),
        store.clone(),
        row_ids,
        ctx.clone(),
    ));
    ctx.register_catalog(DATABASE_NAME, catalog);
    system::install(&ctx, meta, cluster, remote.clone(), store)?;
    datafusion_pg_catalog::setup_pg_catalog(
        &ctx,
        DATABASE_NAME,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| PlannerError::DataFusion(*e))?;
    pg_overlay::install(&ctx, activity)?;
    {
        let state = ctx.state_ref();
        let existing = state.read().clone();
        // Array literals must be read before type coercion looks at the comparison.
        let mut analyzers = existing.analyzer().rules.clone();
        analyzers.insert(0, Arc::new(pg_input::ArrayTextInput));
        // Also before type coercion, which would turn floats into decimals.
        analyzers.insert(1, Arc::new(numeric_literals::FloatBesideNumeric));
        analyzers.push(Arc::new(constant_overflow::ConstantOverflow));
        // First, so that `@>` on jsonb and `substring(s from pattern)` are not taken for the
        // array and integer forms DataFusion's planners know.
        let mut expr_planners: Vec<Arc<dyn datafusion::logical_expr::planner::ExprPlanner>> =
            vec![Arc::new(pg_operators::PgOperatorPlanner)];
        expr_planners.extend(existing.expr_planners().iter().cloned());
        let mut builder = per_row_subquery::install(
            SessionStateBuilder::new_from_existing(existing)
                .with_type_planner(Arc::new(types::ShoalTypePlanner))
                .with_expr_planners(expr_planners)
                .with_analyzer_rules(analyzers),
        );
        builder = builder.with_physical_optimizer_rule(Arc::new(shoal_executor::CheckedArithmetic));
        builder = builder.with_physical_optimizer_rule(Arc::new(
            co_partitioned_joins::CoPartitionedJoins::new(remote.is_some()),
        ));
        if let Some(remote) = remote {
            builder = builder.with_physical_optimizer_rule(Arc::new(
                push_to_leaders::PushToLeaders::new(remote),
            ));
        }
        // Last: what stays on this node goes to its GPU where `shoal.gpu` and the cost model
        // say so (fragments shipped elsewhere are rewritten by their leader).
        builder = builder.with_physical_optimizer_rule(Arc::new(shoal_executor::OffloadToDevice));
        *state.write() = builder.build();
    }
    functions::register_static_functions(&ctx);
    catalog_functions::register(&ctx);
    ctx.register_udf(pg_input::bytea_in_udf());
    ctx.register_udf(pg_input::interval_in_udf());
    for udf in json::udfs() {
        ctx.register_udf(udf);
    }
    ctx.register_udf(format_function::format_udf());
    for udf in to_datetime::udfs() {
        ctx.register_udf(udf);
    }
    for udf in regex_functions::udfs() {
        ctx.register_udf(udf);
    }
    ctx.register_udaf(typed_array_agg::typed_array_agg_udaf());
    ctx.register_udaf(numeric_avg::numeric_avg_udaf());
    ctx.register_udf(integer_casts::round_to_integer_udf());
    ctx.register_udf(numeric_division::numeric_divide_udf());
    ctx.register_udf(to_char::to_char_udf());
    ctx.register_udf(array_subquery::udf());
    for udf in function_signatures::udfs() {
        ctx.register_udf(udf);
    }
    ctx.add_analyzer_rule(Arc::new(pg_input::PgTextInput::new()));
    ctx.add_analyzer_rule(Arc::new(integer_casts::IntegerCasts::new()));
    ctx.add_analyzer_rule(Arc::new(numeric_division::NumericDivision::new()));
    ctx.add_analyzer_rule(per_row_subquery::analyzer_rule());
    ctx.add_optimizer_rule(per_row_subquery::optimizer_rule());
    Ok(ctx)
}

/// A context for one session: the base context's functions and schemas, with the Shoal
/// catalog read through `meta` (the session's view of the metadata).
pub fn session_context(base: &SessionContext, meta: Arc<dyn MetaStore>) -> SessionContext {
    use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
    let state = base.state();
    let list = Arc::new(MemoryCatalogProviderList::new());
    let existing = state.catalog_list().clone();
    let mut store = None;
    for name in existing.catalog_names() {
        let Some(catalog) = existing.catalog(&name) else {
            continue;
        };
        let any: &dyn std::any::Any = catalog.as_ref();
        let catalog = match any.downcast_ref::<ShoalCatalog>() {
            Some(shoal) => {
                store = Some(shoal.store().clone());
                Arc::new(shoal.with_meta(meta.clone()))
            }
            None => catalog,
        };
        list.register_catalog(name, catalog);
    }
    let state = SessionStateBuilder::new_from_existing(state)
        .with_catalog_list(list)
        .build();
    let ctx = SessionContext::new_with_state(state);
    if let Some(store) = store {
        relation_functions::register(&ctx, meta, store);
    }
    ctx
}

/// How deep an expression the SQL parser follows (sqlparser's default is 50).
const PARSER_RECURSION_LIMIT: usize = 500;

/// Parses SQL as PostgreSQL clients write it: DataFusion's sqlparser (PostgreSQL dialect) plus
/// `datafusion-pg-catalog`'s rewrites for catalog queries (`pg_catalog.`-qualified functions,
/// `::regclass` casts, unqualified pg_catalog relations, `x = ANY(array)`, ...).
///
/// Of that crate's parser, two parts are left out on purpose. Its table of whole client
/// queries replaced by stubs (pgcli's, psql's, DBeaver's introspection answered by `WHERE
/// false`) would answer those clients wrongly, and its `RemoveSubqueryFromProjection`
/// replaces correlated subqueries by NULL; Shoal runs both kinds of query for real. Its
/// aliasing of duplicated columns is done by [`naming`], under the names PostgreSQL shows.
/// Collations are dropped from catalog queries only (their names sort as C does), so that a
/// user's `COLLATE` is not silently ignored.
pub fn parse_sql(
    sql: &str,
) -> Result<
    Vec<datafusion::sql::sqlparser::ast::Statement>,
    datafusion::sql::sqlparser::parser::ParserError,
> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion_pg_catalog::sql::rules::*;
    type Rules = Vec<Box<dyn SqlStatementRewriteRule>>;
    fn rules(catalog: bool) -> Rules {
        let mut rules: Rules = vec![
            Box::new(ResolveUnqualifiedIdentifier),
            Box::new(RewriteArrayAnyAllOperation),
            Box::new(PrependUnqualifiedPgTableName),
            Box::new(StripCallableQualifier),
            Box::new(FixArrayLiteral),
            Box::new(CurrentUserVariableToSessionUserFunctionCall),
        ];
        if catalog {
            rules.push(Box::new(StripCollate));
        }
        rules.push(Box::new(RewritePgCatalogOperator));
        rules.push(Box::new(RewriteRegCastToSubquery::new()));
        rules
    }
    static USER_RULES: std::sync::LazyLock<Rules> = std::sync::LazyLock::new(|| rules(false));
    static CATALOG_RULES: std::sync::LazyLock<Rules> = std::sync::LazyLock::new(|| rules(true));

    let dialect = PostgreSqlDialect {};
    let tokens = Parser::new(&dialect).try_with_sql(sql)?.into_tokens();
    let tokens = pg_syntax::rewrite_statements(tokens);
    // sqlparser's default depth (50) refuses WHERE clauses that PostgreSQL takes (nested
    // AND/OR of generated queries); the server's worker stacks are sized for deeper trees.
    let parsed = Parser::new(&dialect)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()?;
    let lower = sql.to_ascii_lowercase();
    let rules = match lower.contains("pg_") || lower.contains("information_schema") {
        true => &*CATALOG_RULES,
        false => &*USER_RULES,
    };
    Ok(parsed
        .into_iter()
        .map(|mut s| {
            naming::name_columns(&mut s);
            naming::regproc_literals(&mut s);
            reg_output::print_reg_casts(&mut s);
            let mut s = rules.iter().fold(s, |s, rule| rule.rewrite(s));
            naming::rewrite_functions(&mut s);
            s
        })
        .collect())
}
