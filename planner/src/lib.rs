//! SQL planning for Shoal: from SQL text to DataFusion plans over Shoal's partitioned tables.
//!
//! In: SQL statements (parsed with DataFusion's own sqlparser, PostgreSQL dialect) and the
//! catalog snapshot from `shoal-coord`. Out: DataFusion logical/physical plans whose leaves are
//! `shoal_executor::PartitionScanExec` fragments (one per surviving partition, after pruning on
//! primary-key predicates), and catalog definitions for DDL.
//!
//! The planner decides *what* runs where; it never writes rows itself and must not depend on
//! the server crate.

mod catalog;
mod catalog_functions;
mod computed;
pub mod ddl;
mod error;
mod functions;
mod json_functions;
mod naming;
mod per_row_subquery;
pub mod pg_input;
pub mod pg_output;
mod pg_overlay;
mod pg_relations;
mod pg_system_oids;
mod relation_functions;
mod system;
mod table;
mod typed_array_agg;
mod types;

pub use catalog::{ShoalCatalog, DATABASE_NAME};
pub use error::PlannerError;
pub use functions::{register_session_functions, SessionInfo};
pub use naming::DUPLICATE_NAME_SUFFIX;
pub use pg_overlay::{ActivityRow, ActivitySource};
pub use table::{DmlOptions, ShoalTable, StatementTxn, DML_TABLE_PREFIX};

use std::sync::Arc;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use shoal_coord::MetaStore;
use shoal_executor::RowIdAllocator;
use shoal_storage::Store;

/// Builds the session context shared (by cloning its state) by every connection: the Shoal
/// catalog as `shoal.public` and friends, pg_catalog, information_schema and Shoal's functions.
pub fn base_context(
    meta: Arc<dyn MetaStore>,
    store: Store,
    row_ids: Arc<RowIdAllocator>,
    activity: Arc<dyn ActivitySource>,
) -> Result<SessionContext, PlannerError> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE_NAME, "public")
        .with_information_schema(true)
        .with_target_partitions(4)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", true)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog = Arc::new(ShoalCatalog::new(
        meta.clone(),
        store.clone(),
        row_ids,
        ctx.clone(),
    ));
    ctx.register_catalog(DATABASE_NAME, catalog);
    system::install(&ctx, meta, store)?;
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
        *state.write() = per_row_subquery::install(
            SessionStateBuilder::new_from_existing(existing)
                .with_type_planner(Arc::new(types::ShoalTypePlanner)),
        )
        .build();
    }
    functions::register_static_functions(&ctx);
    catalog_functions::register(&ctx);
    ctx.register_udf(pg_input::bytea_in_udf());
    ctx.register_udf(pg_input::interval_in_udf());
    ctx.register_udf(json_functions::json_build_object_udf());
    ctx.register_udaf(typed_array_agg::typed_array_agg_udaf());
    ctx.add_analyzer_rule(Arc::new(pg_input::PgTextInput::new()));
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
/// `::regclass` casts, unqualified pg_catalog relations, ...).
///
/// Statements that read the catalogs (they mention `pg_` or `information_schema`) go through
/// the full compatibility parser, whose last-resort rewrites are tuned to client
/// introspection queries. Every other statement gets only the rewrites that keep its meaning:
/// `RemoveSubqueryFromProjection`, which replaces correlated subqueries by NULL, would give
/// wrong answers to user queries.
pub fn parse_sql(
    sql: &str,
) -> Result<
    Vec<datafusion::sql::sqlparser::ast::Statement>,
    datafusion::sql::sqlparser::parser::ParserError,
> {
    use datafusion_pg_catalog::sql::rules::*;
    use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
    static CATALOG_PARSER: std::sync::LazyLock<PostgresCompatibilityParser> =
        std::sync::LazyLock::new(PostgresCompatibilityParser::new);
    static SAFE_RULES: std::sync::LazyLock<Vec<Box<dyn SqlStatementRewriteRule>>> =
        std::sync::LazyLock::new(|| {
            vec![
                Box::new(AliasDuplicatedProjectionRewrite),
                Box::new(ResolveUnqualifiedIdentifier),
                Box::new(RewriteArrayAnyAllOperation),
                Box::new(PrependUnqualifiedPgTableName),
                Box::new(StripCallableQualifier),
                Box::new(FixArrayLiteral),
                Box::new(CurrentUserVariableToSessionUserFunctionCall),
                Box::new(RewritePgCatalogOperator),
                Box::new(RewriteRegCastToSubquery::new()),
                Box::new(FixVersionColumnName),
            ]
        });
    let lower = sql.to_ascii_lowercase();
    let mut statements = if lower.contains("pg_") || lower.contains("information_schema") {
        CATALOG_PARSER.parse(sql)?
    } else {
        // sqlparser's default depth (50) refuses WHERE clauses that PostgreSQL takes (nested
        // AND/OR of generated queries); the server's worker stacks are sized for deeper trees.
        datafusion::sql::sqlparser::parser::Parser::new(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
        )
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .try_with_sql(sql)?
        .parse_statements()?
        .into_iter()
        .map(|s| SAFE_RULES.iter().fold(s, |s, rule| rule.rewrite(s)))
        .collect()
    };
    statements.iter_mut().for_each(naming::apply);
    Ok(statements)
}
