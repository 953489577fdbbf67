//! Queries and INSERT/UPDATE/DELETE: planned by DataFusion against Shoal's table providers,
//! run in the statement's transaction. ON CONFLICT (DO NOTHING / DO UPDATE) and RETURNING are
//! taken off the statement before planning and carried to the write fragment through
//! [`DmlOptions`].

use std::sync::Arc;

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::sqlparser::ast::{
    Delete, FromTable, OnConflictAction, OnInsert, SelectItem, Statement, TableFactor, TableObject,
};
use futures::StreamExt;
use parking_lot::Mutex;
use shoal_coord::MetaStore;
use shoal_planner::{DmlOptions, StatementTxn};
use shoal_storage::Txn;

use super::transaction::rows_outcome;
use super::{Outcome, Session};
use crate::error::{ServerError, ServerResult};

/// What the statement returns once its plan ran.
enum Shape {
    Query,
    Write { tag: &'static str },
}

struct Returning {
    items: Vec<SelectItem>,
    /// Names the written rows are visible under in the RETURNING list.
    names: Vec<String>,
}

impl Session {
    /// A session state for one statement: the session's functions plus its transaction.
    pub(crate) fn statement_state(&self, txn: Arc<Txn>, dml: DmlOptions) -> SessionState {
        let mut state = self.ctx.state();
        // Every statement gets its own memory pool: one query that needs more than
        // --query-memory-bytes fails with 53200 instead of starving the node.
        let limit = self.node.args.query_memory_bytes;
        if let Ok(runtime) = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(limit)))
            .build_arc()
        {
            state = SessionStateBuilder::new_from_existing(state)
                .with_runtime_env(runtime)
                .build();
        }
        state
            .config_mut()
            .set_extension(Arc::new(StatementTxn(txn)));
        state.config_mut().set_extension(Arc::new(dml));
        let gpu = self
            .settings
            .get("shoal.gpu")
            .and_then(|v| shoal_executor::GpuMode::parse(&v))
            .unwrap_or(shoal_executor::GpuMode::Auto);
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(shoal_executor::GpuOptions::with_mode(gpu));
        state
    }

    /// An UPDATE or DELETE of an automatically updatable view, as the statement on the
    /// view's table; any other statement as it is.
    fn through_views(&self, stmt: Statement) -> Statement {
        let target = match &stmt {
            Statement::Update(u) => Some(&u.table.relation),
            Statement::Delete(d) => deleted_from(d),
            _ => None,
        };
        let Some(TableFactor::Table { name, .. }) = target else {
            return stmt;
        };
        let Ok((schema, name)) = shoal_planner::ddl::object_name(name) else {
            return stmt;
        };
        let catalog = self.meta.catalog();
        catalog
            .view(&schema, &name)
            .and_then(|view| shoal_planner::through_view(&stmt, view))
            .unwrap_or(stmt)
    }

    /// Plans a statement without running it (Describe in the extended protocol).
    pub async fn plan_only(&self, stmt: &Statement) -> ServerResult<LogicalPlan> {
        let stmt = super::cursor::declared_query(stmt).unwrap_or_else(|| stmt.clone());
        let stmt = self.through_views(stmt);
        let (stmt, _, _) = strip_dml_extras(stmt)?;
        let txn = Arc::new(self.node.store.begin());
        let state = self.statement_state(txn, DmlOptions::default());
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                stmt,
            )))
            .await?;
        Ok(shoal_planner::plan_row_writes(plan)?)
    }

    /// The columns `plan` returns once run. A freshly planned statement's schema is taken
    /// before type coercion, which can still widen a column (a CASE whose branches are int4
    /// and int8 is int8 when it runs), so the plan is analyzed first. A plan the analyzer
    /// refuses (parameters whose types nothing determines yet) keeps its own schema; running
    /// it reports the error.
    pub fn result_columns(&self, plan: &LogicalPlan) -> Schema {
        let state = self.ctx.state();
        match state
            .analyzer()
            .execute_and_check(plan.clone(), state.config_options(), |_, _| {})
        {
            Ok(analyzed) => analyzed.schema().as_arrow().clone(),
            Err(_) => plan.schema().as_arrow().clone(),
        }
    }

    pub(super) async fn run_dml_or_query(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> ServerResult<Outcome> {
        let kind = super::kind_of(&stmt);
        let shape = match &stmt {
            Statement::Insert(_) => Shape::Write { tag: "INSERT 0" },
            Statement::Update(_) => Shape::Write { tag: "UPDATE" },
            Statement::Delete(_) => Shape::Write { tag: "DELETE" },
            _ => Shape::Query,
        };
        let stmt = self.through_views(stmt);
        let (stmt, extras) = take_dml_extras(stmt)?;
        let returning = extras.returning;
        let sink = returning.as_ref().map(|_| Arc::new(Mutex::new(Vec::new())));
        let conflicts = extras
            .upsert
            .as_ref()
            .map(|_| Arc::new(Mutex::new(Vec::new())));
        let (txn, implicit) = self.statement_txn()?;
        let mut state = self.statement_state(
            txn.clone(),
            DmlOptions {
                on_conflict_do_nothing: extras.do_nothing,
                returning: sink.clone(),
                conflicts: conflicts.clone(),
                bulk: None,
                autocommit: implicit,
            },
        );
        state
            .config_mut()
            .set_extension(Arc::new(shoal_executor::StatementKind(kind)));
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                stmt,
            )))
            .await?;
        let plan = shoal_planner::plan_row_writes(plan)?;
        let plan = match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        };
        // A write reads its input whole before writing: spreading the input's batches over
        // more partitions only adds a hop (a point UPDATE would get one per statement).
        if plan.exists(|node| Ok(matches!(node, LogicalPlan::Dml(_))))? {
            state
                .config_mut()
                .options_mut()
                .optimizer
                .enable_round_robin_repartition = false;
        }
        let df = DataFrame::new(state, plan);
        match shape {
            Shape::Query => {
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let stream = df.execute_stream().await?;
                // Reads need no commit: the implicit transaction ends when the stream drops.
                Ok(Outcome::Rows {
                    schema,
                    stream,
                    tag: "SELECT",
                })
            }
            Shape::Write { tag } => {
                let written: ServerResult<Outcome> = async {
                    let mut stream = df.execute_stream().await?;
                    let mut count = 0u64;
                    while let Some(batch) = stream.next().await {
                        let batch = batch?;
                        if let Some(c) = batch
                            .column(0)
                            .as_any()
                            .downcast_ref::<UInt64Array>()
                            .filter(|c| !c.is_empty())
                        {
                            count += c.value(0);
                        }
                    }
                    drop(stream);
                    if let (Some(upsert), Some(conflicts)) = (extras.upsert, conflicts) {
                        let proposed = std::mem::take(&mut *conflicts.lock());
                        let (updated, rows) = self
                            .apply_upsert(&upsert, proposed, txn.clone(), implicit)
                            .await?;
                        count += updated;
                        if let Some(sink) = &sink {
                            sink.lock().extend(rows);
                        }
                    }
                    // RETURNING is evaluated before the commit, so that its failure undoes the write.
                    let outcome = match (returning, sink) {
                        (Some(r), Some(sink)) => {
                            let written = std::mem::take(&mut *sink.lock());
                            self.returning_rows(r, written, tag).await?
                        }
                        _ => Outcome::Command {
                            tag: tag.to_string(),
                            rows: Some(count as usize),
                        },
                    };
                    Ok(outcome)
                }
                .await;
                match written {
                    Ok(outcome) if implicit => {
                        self.commit_txn(txn).await?;
                        Ok(outcome)
                    }
                    // Undo what the statement wrote on other nodes now, not when they give up.
                    Err(e) if implicit => {
                        self.rollback_txn(txn).await;
                        Err(e)
                    }
                    other => other,
                }
            }
        }
    }

    /// Evaluates a RETURNING list over the rows a statement wrote.
    async fn returning_rows(
        &self,
        r: Returning,
        written: Vec<datafusion::arrow::record_batch::RecordBatch>,
        tag: &'static str,
    ) -> ServerResult<Outcome> {
        let Some(first) = written.first() else {
            return Ok(Outcome::Command {
                tag: tag.into(),
                rows: Some(0),
            });
        };
        let schema = first.schema();
        let table = Arc::new(MemTable::try_new(schema, vec![written])?);
        let name = r
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| "returning".into());
        let ctx = scratch_context(self.ctx.state(), table)?;
        let sql = format!(
            "SELECT {} FROM {SCRATCH_TABLE} AS \"{name}\"",
            comma_separated(&r.items)
        );
        let df = ctx.sql(&sql).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok(rows_outcome(schema, batches, tag))
    }

    /// The columns a RETURNING list produces, without running the statement.
    pub async fn returning_schema(&self, stmt: &Statement) -> ServerResult<Schema> {
        let (_, _, returning) = strip_dml_extras(stmt.clone())?;
        let target = match stmt {
            Statement::Insert(i) => match &i.table {
                TableObject::TableName(n) => n.to_string(),
                _ => {
                    return Err(ServerError::NotSupported(
                        "INSERT into a table function".into(),
                    ))
                }
            },
            Statement::Update(u) => match &u.table.relation {
                TableFactor::Table { name, .. } => name.to_string(),
                _ => return Err(ServerError::NotSupported("UPDATE of this target".into())),
            },
            Statement::Delete(d) => d
                .tables
                .first()
                .map(|t| t.to_string())
                .or_else(|| match deleted_from(d) {
                    Some(TableFactor::Table { name, .. }) => Some(name.to_string()),
                    _ => None,
                })
                .unwrap_or_default(),
            _ => return Err(ServerError::Internal("no RETURNING".into())),
        };
        let Some(r) = returning else {
            return Err(ServerError::Internal("no RETURNING".into()));
        };
        let alias = r
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| last_ident(&target));
        let sql = format!(
            "SELECT {} FROM {target} AS \"{alias}\" LIMIT 0",
            comma_separated(&r.items)
        );
        let stmt = super::ddl::parse_one(&sql)?;
        let plan = self.plan_only(&stmt).await?;
        Ok(self.result_columns(&plan))
    }
}

/// How SQL text refers to the table of a [`scratch_context`].
pub(crate) const SCRATCH_TABLE: &str = "__shoal_scratch.scratch.rows";

/// A context that sees the session's catalogs plus, privately, `table` as [`SCRATCH_TABLE`]
/// (used to run SQL over rows held in memory: COPY batches, RETURNING rows).
pub(crate) fn scratch_context(
    state: SessionState,
    table: Arc<dyn TableProvider>,
) -> ServerResult<SessionContext> {
    let list = Arc::new(MemoryCatalogProviderList::new());
    let existing = state.catalog_list().clone();
    for name in existing.catalog_names() {
        if let Some(c) = existing.catalog(&name) {
            list.register_catalog(name, c);
        }
    }
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table("rows".into(), table)?;
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog.register_schema("scratch", schema)?;
    list.register_catalog("__shoal_scratch".into(), catalog);
    let state = SessionStateBuilder::new_from_existing(state)
        .with_catalog_list(list)
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// Takes ON CONFLICT and RETURNING off an INSERT/UPDATE/DELETE.
/// The relation a DELETE's FROM names first: the one it deletes from.
fn deleted_from(delete: &Delete) -> Option<&TableFactor> {
    match &delete.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => {
            t.first().map(|t| &t.relation)
        }
    }
}

fn strip_dml_extras(stmt: Statement) -> ServerResult<(Statement, bool, Option<Returning>)> {
    let (stmt, extras) = take_dml_extras(stmt)?;
    Ok((stmt, extras.do_nothing, extras.returning))
}

/// What was taken off an INSERT/UPDATE/DELETE before DataFusion plans it.
pub(super) struct DmlExtras {
    do_nothing: bool,
    returning: Option<Returning>,
    pub(super) upsert: Option<super::upsert::Upsert>,
}

fn take_dml_extras(stmt: Statement) -> ServerResult<(Statement, DmlExtras)> {
    let mut upsert = None;
    let (stmt, do_nothing, returning) = match stmt {
        Statement::Insert(mut insert) => {
            let mut do_nothing = false;
            match insert.on.take() {
                None => {}
                Some(OnInsert::OnConflict(c)) => match c.action {
                    OnConflictAction::DoNothing => do_nothing = true,
                    OnConflictAction::DoUpdate(update) => {
                        upsert = Some(super::upsert::Upsert::new(
                            &insert,
                            c.conflict_target,
                            update,
                        )?)
                    }
                },
                Some(other) => return Err(ServerError::NotSupported(format!("{other}"))),
            }
            // DataFusion plans no INSERT alias; the alias only names the row in ON CONFLICT
            // and RETURNING.
            let alias = insert
                .table_alias
                .take()
                .map(|a| a.alias.value.to_lowercase());
            let returning = insert.returning.take().map(|items| Returning {
                items,
                names: match (&alias, &insert.table) {
                    (Some(a), _) => vec![a.clone()],
                    (None, TableObject::TableName(n)) => vec![last_ident(&n.to_string())],
                    _ => vec![],
                },
            });
            (Statement::Insert(insert), do_nothing, returning)
        }
        Statement::Update(mut update) => {
            // DataFusion would keep one of the values; PostgreSQL refuses the statement.
            let mut targets = std::collections::HashSet::new();
            for a in &update.assignments {
                let target = a.target.to_string().to_lowercase();
                if !targets.insert(target.clone()) {
                    return Err(ServerError::Syntax(format!(
                        "multiple assignments to same column \"{target}\""
                    )));
                }
            }
            let returning = update.returning.take().map(|items| Returning {
                items,
                names: table_names(&update.table.relation),
            });
            (Statement::Update(update), false, returning)
        }
        Statement::Delete(mut delete) => {
            let returning = delete.returning.take().map(|items| {
                let names = delete
                    .tables
                    .first()
                    .map(|n| vec![last_ident(&n.to_string())])
                    .unwrap_or_default();
                Returning { items, names }
            });
            let names = deleted_from(&delete).map(table_names).unwrap_or_default();
            let returning = returning.map(|mut r| {
                if r.names.is_empty() {
                    r.names = names;
                }
                r
            });
            (Statement::Delete(delete), false, returning)
        }
        other => (other, false, None),
    };
    Ok((
        stmt,
        DmlExtras {
            do_nothing,
            returning,
            upsert,
        },
    ))
}

fn last_ident(name: &str) -> String {
    name.rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches('"')
        .to_lowercase()
}

fn table_names(t: &TableFactor) -> Vec<String> {
    match t {
        TableFactor::Table { name, alias, .. } => match alias {
            Some(a) => vec![a.name.value.to_lowercase()],
            None => vec![last_ident(&name.to_string())],
        },
        _ => vec![],
    }
}

fn comma_separated(items: &[SelectItem]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
