//! A client session: its settings, its transaction, and the execution of one statement at a
//! time. Data statements run in the open transaction block, or in an implicit transaction
//! that commits when the statement succeeds (autocommit); an error inside a block leaves the
//! block failed (25P02) until ROLLBACK, as in PostgreSQL.

mod copy;
mod copy_format;
pub mod cursor;
mod ddl;
mod dml;
mod index;
mod point_read;
pub mod settings;
mod transaction;
mod upsert;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectType, Statement};
use parking_lot::Mutex;
use shoal_coord::{CoordError, MetaStore, SessionMetaStore};
use shoal_planner::SessionInfo;
use shoal_storage::Txn;

pub use copy::{CopyFormat, CopyIn};
pub use settings::Settings;
use transaction::TxnState;

use crate::error::{ServerError, ServerResult};
use crate::node::{now_micros, Node, SessionEntry};

/// What a statement produced, for the wire layer to send.
pub enum Outcome {
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        /// `SELECT`, or the DML tag of a statement with RETURNING (`INSERT 0`, `UPDATE`, ...).
        tag: &'static str,
    },
    /// A command tag such as `INSERT 0 3` (rows appended by the wire layer when given).
    Command {
        tag: String,
        rows: Option<usize>,
    },
    TxnStart(String),
    TxnEnd(String),
    /// COPY FROM STDIN has started; its state waits in [`Session::copy_in`].
    CopyIn {
        columns: usize,
    },
    CopyOut {
        format: CopyFormat,
        columns: usize,
        lines: Vec<bytes::Bytes>,
    },
}

impl Outcome {
    fn tag(tag: &str) -> Outcome {
        Outcome::Command {
            tag: tag.to_string(),
            rows: None,
        }
    }
}

pub struct Session {
    pub node: Arc<Node>,
    pub entry: Arc<SessionEntry>,
    pub settings: Arc<Settings>,
    /// The catalog as this session sees it: DDL inside a block stays here until COMMIT.
    pub meta: Arc<SessionMetaStore>,
    /// Tables dropped inside the open block; their rows are reclaimed after COMMIT.
    dropped_in_block: Mutex<Vec<u32>>,
    ctx: SessionContext,
    txn: Mutex<TxnState>,
    /// The transaction of the statement running now: interrupted when the statement is
    /// cancelled or times out, so that a write waiting for a row lock gives up.
    running: Mutex<Option<Arc<Txn>>>,
    /// An unfinished COPY FROM STDIN.
    pub copy_in: tokio::sync::Mutex<Option<CopyIn>>,
    /// The error that ended a COPY FROM early; reported when the client finishes sending.
    copy_error: Mutex<Option<ServerError>>,
    /// Open SQL cursors by name.
    cursors: Mutex<cursor::Cursors>,
}

/// The session as SQL functions see it.
struct FunctionView {
    node: Arc<Node>,
    entry: Arc<SessionEntry>,
    settings: Arc<Settings>,
}

impl SessionInfo for FunctionView {
    fn setting(&self, name: &str) -> Option<String> {
        self.settings.get(name)
    }
    fn set_setting(&self, name: &str, value: &str) -> Result<(), String> {
        self.settings.set(name, value).map_err(|e| e.to_string())
    }
    fn backend_pid(&self) -> i32 {
        self.entry.pid
    }
    fn user(&self) -> String {
        self.entry.user.clone()
    }
    fn all_settings(&self) -> Vec<(String, String)> {
        self.settings.all()
    }
    fn cancel_backend(&self, pid: i32) -> bool {
        let Some(target) = self.node.sessions.get(pid) else {
            return false;
        };
        let Some(secret) = target.secret.lock().clone() else {
            return false;
        };
        let connections = self.node.connections.clone();
        tokio::spawn(async move {
            connections.cancel(pid, &secret).await;
        });
        true
    }
}

/// A short name for metrics: select, insert, ddl, ...
fn kind_of(stmt: &Statement) -> &'static str {
    match stmt {
        Statement::Query(_) => "select",
        Statement::Insert(_) => "insert",
        Statement::Update(_) => "update",
        Statement::Delete(_) => "delete",
        Statement::Copy { .. } => "copy",
        Statement::Explain { .. } => "explain",
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => "transaction",
        Statement::Set(_) | Statement::ShowVariable { .. } | Statement::Reset(_) => "setting",
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => "cursor",
        _ => "ddl",
    }
}

impl Session {
    pub fn new(node: Arc<Node>, entry: Arc<SessionEntry>) -> Self {
        let settings = Arc::new(Settings::new(&entry.user));
        let meta = Arc::new(SessionMetaStore::new(node.meta.clone()));
        let ctx = shoal_planner::session_context(&node.base, meta.clone());
        shoal_planner::register_session_functions(
            &ctx,
            Arc::new(FunctionView {
                node: node.clone(),
                entry: entry.clone(),
                settings: settings.clone(),
            }),
        );
        Session {
            node,
            entry,
            settings,
            meta,
            dropped_in_block: Mutex::new(Vec::new()),
            ctx,
            txn: Mutex::new(TxnState::Idle),
            running: Mutex::new(None),
            copy_in: tokio::sync::Mutex::new(None),
            copy_error: Mutex::new(None),
            cursors: Mutex::new(cursor::Cursors::new()),
        }
    }

    pub fn in_block(&self) -> bool {
        !matches!(*self.txn.lock(), TxnState::Idle)
    }

    fn set_activity(&self, state: &str, query: Option<&str>) {
        let mut a = self.entry.activity.lock();
        a.0 = state.to_string();
        if let Some(q) = query {
            a.1 = q.to_string();
            a.2 = Some(now_micros());
        }
    }

    fn idle_state(&self) -> &'static str {
        match &*self.txn.lock() {
            TxnState::Idle => "idle",
            TxnState::Block { failed: true, .. } => "idle in transaction (aborted)",
            TxnState::Block { .. } => "idle in transaction",
        }
    }

    /// Runs one statement, with statement_timeout, metrics and failure bookkeeping. `sql` is
    /// the text the client sent (shown by pg_stat_activity).
    pub async fn execute(
        &self,
        sql: &str,
        stmt: &Statement,
        params: Option<ParamValues>,
    ) -> ServerResult<Outcome> {
        let kind = kind_of(stmt);
        let started = Instant::now();
        self.set_activity("active", Some(sql));
        let timeout_ms: u64 = self
            .settings
            .get("statement_timeout")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Results are gathered inside the timeout (and inside pgwire's cancel window), so
        // statement_timeout and CancelRequest also stop a query while it produces rows.
        let interrupt_on_drop = InterruptOnDrop(self);
        let fut = self.run_to_completion(stmt, params);
        let result = if timeout_ms > 0 {
            match tokio::time::timeout(Duration::from_millis(timeout_ms), fut).await {
                Ok(r) => r,
                Err(_) => Err(ServerError::StatementTimeout),
            }
        } else {
            fut.await
        };
        if !matches!(result, Err(ServerError::StatementTimeout)) {
            *self.running.lock() = None;
        }
        drop(interrupt_on_drop);
        let metrics = &self.node.metrics;
        metrics.queries.with_label_values(&[kind]).inc();
        metrics
            .latency
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics.errors.with_label_values(&[e.sqlstate()]).inc();
            self.fail_block();
        }
        self.set_activity(self.idle_state(), None);
        result
    }

    /// Runs a statement and gathers its rows. A point select is read without a plan. A write
    /// that met a row changed after its READ COMMITTED snapshot runs again (in a block, after
    /// undoing its own partial writes), as PostgreSQL re-checks such rows instead of failing.
    async fn run_to_completion(
        &self,
        stmt: &Statement,
        params: Option<ParamValues>,
    ) -> ServerResult<Outcome> {
        if let Statement::Query(_) = stmt {
            self.check_not_failed(stmt)?;
            if let Some(outcome) = self.point_read(stmt, params.as_ref()).await? {
                return Ok(outcome);
            }
        }
        let restartable = matches!(
            stmt,
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
        );
        if !restartable {
            return self.after_partition_moves(stmt, params).await;
        }
        let mut restarts = 0;
        let mut pause = FIRST_MOVE_PAUSE;
        loop {
            let savepoint = self.block_savepoint()?;
            match self.dispatch_gathered(stmt.clone(), params.clone()).await {
                // Outside a block, nothing of it stayed: plan it again once the move is done.
                Err(e)
                    if savepoint.is_none()
                        && e.cluster_moved_under_it()
                        && pause <= LAST_MOVE_PAUSE =>
                {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) if e.needs_statement_restart() && restarts < MAX_STATEMENT_RESTARTS => {
                    restarts += 1;
                    self.node.metrics.statement_restarts.inc();
                    if let Some((txn, depth, statement)) = savepoint {
                        self.rollback_writes_to(&txn, depth, statement).await?;
                    }
                }
                other => return other,
            }
        }
    }

    /// Runs a statement that writes nothing (or is not restartable), again after a pause when
    /// a partition it reads moved under it outside a transaction block: its rows are gathered
    /// before any is sent, so nothing of the first run reached the client.
    async fn after_partition_moves(
        &self,
        stmt: &Statement,
        params: Option<ParamValues>,
    ) -> ServerResult<Outcome> {
        let reads_only = matches!(stmt, Statement::Query(_));
        let mut pause = FIRST_MOVE_PAUSE;
        loop {
            let in_block = matches!(&*self.txn.lock(), TxnState::Block { .. });
            match self.dispatch_gathered(stmt.clone(), params.clone()).await {
                Err(e)
                    if reads_only
                        && !in_block
                        && e.cluster_moved_under_it()
                        && pause <= LAST_MOVE_PAUSE =>
                {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
    }

    /// In a block, a savepoint that a restarted statement returns to.
    /// In a block, a savepoint before the next statement: (the transaction, the storage
    /// savepoint's depth, the statement number before it).
    fn block_savepoint(&self) -> ServerResult<Option<(Arc<Txn>, usize, u64)>> {
        let txn = match &*self.txn.lock() {
            TxnState::Block { txn, .. } => txn.clone(),
            TxnState::Idle => return Ok(None),
        };
        let depth = txn.savepoint()?;
        let statement = txn.statement();
        Ok(Some((txn, depth, statement)))
    }

    /// Undoes what `txn` wrote after its savepoint of `depth` here and, in its parts on other
    /// nodes, what its statements after `statement` wrote there.
    async fn rollback_writes_to(
        &self,
        txn: &Arc<Txn>,
        depth: usize,
        statement: u64,
    ) -> ServerResult<()> {
        if let Some(remote) = self
            .node
            .remote
            .as_ref()
            .filter(|r| r.writes_elsewhere(txn))
        {
            remote.rollback_parts_to(txn, statement).await?;
        }
        let txn = txn.clone();
        tokio::task::spawn_blocking(move || txn.rollback_to_savepoint(depth))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
        Ok(())
    }

    async fn dispatch_gathered(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> ServerResult<Outcome> {
        match self.dispatch(stmt, params).await? {
            Outcome::Rows {
                schema,
                stream,
                tag,
            } => {
                let batches: Vec<_> = futures::TryStreamExt::try_collect(stream).await?;
                Ok(transaction::rows_outcome(schema, batches, tag))
            }
            other => Ok(other),
        }
    }

    async fn dispatch(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> ServerResult<Outcome> {
        self.check_not_failed(&stmt)?;
        match stmt {
            Statement::StartTransaction { modes, .. } => self.begin(&modes),
            Statement::Commit { .. } => self.commit().await,
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => self.rollback_to(&name.value).await,
            Statement::Rollback { .. } => Ok(self.rollback().await),
            Statement::Savepoint { name } => self.savepoint(&name.value),
            Statement::ReleaseSavepoint { name } => self.release(&name.value),
            Statement::Set(set) => self.set(set),
            Statement::ShowVariable { variable } => self.show(&variable).await,
            Statement::Reset(r) => self.reset(r),
            Statement::Discard { .. } => {
                if self.in_block() {
                    return Err(ServerError::NotSupported(
                        "DISCARD ALL inside a transaction block".into(),
                    ));
                }
                self.settings.reset_all(&self.entry.user);
                self.cursors.lock().clear();
                Ok(Outcome::tag("DISCARD ALL"))
            }
            Statement::Declare { stmts } => self.declare_cursor(stmts, params).await,
            Statement::Fetch {
                name,
                direction,
                into: None,
                ..
            } => self.fetch(&name, &direction),
            Statement::Close { cursor } => self.close_cursor(&cursor),
            Statement::UNLISTEN { .. } => Ok(Outcome::tag("UNLISTEN")),
            Statement::Deallocate { .. } => Ok(Outcome::tag("DEALLOCATE")),
            Statement::Vacuum(v) => self.maintain("VACUUM", v.table_name.as_ref(), &[]),
            Statement::Analyze(a) => self.maintain("ANALYZE", a.table_name.as_ref(), &a.columns),
            Statement::CreateTable(create) => self.create_table(create),
            Statement::CreateSchema {
                schema_name,
                if_not_exists,
                ..
            } => self.create_schema(&schema_name, if_not_exists),
            Statement::CreateView(view) => self.create_view(view).await,
            Statement::CreateIndex(create) => self.create_index(create).await,
            Statement::Drop {
                object_type: ObjectType::Index,
                if_exists,
                names,
                ..
            } => self.drop_indexes(if_exists, &names).await,
            Statement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => self.drop(object_type, if_exists, &names, cascade),
            Statement::AlterTable(alter) => self.alter_table(alter).await,
            Statement::Truncate(t) => self.truncate(t).await,
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => self.copy(source, to, target, options, legacy_options).await,
            Statement::Explain {
                verbose: false,
                format: None,
                ..
            } => {
                let outcome = self.run_dml_or_query(stmt, params).await?;
                explain_as_query_plan(outcome).await
            }
            stmt @ (Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Explain { .. }) => self.run_dml_or_query(stmt, params).await,
            other => Err(ServerError::NotSupported(format!(
                "statement \"{}\"",
                other
                    .to_string()
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        }
    }

    /// VACUUM and ANALYZE: PostgreSQL's heap maintenance has nothing to do here (they are
    /// accepted for tools like pgbench), but the table and columns they name must exist.
    fn maintain(
        &self,
        tag: &str,
        table: Option<&ObjectName>,
        columns: &[Ident],
    ) -> ServerResult<Outcome> {
        let Some(name) = table else {
            return Ok(Outcome::tag(tag));
        };
        let (schema, name) = shoal_planner::ddl::object_name(name)?;
        let catalog = self.meta.catalog();
        if !catalog.relation_exists(&schema, &name) {
            return Err(CoordError::RelationNotFound(name).into());
        }
        if let Some(def) = catalog.table(&schema, &name) {
            for column in columns.iter().map(shoal_planner::ddl::ident_name) {
                if def.column(&column).is_none() {
                    return Err(CoordError::ColumnNotFound {
                        table: name.clone(),
                        column,
                    }
                    .into());
                }
            }
        }
        Ok(Outcome::tag(tag))
    }

    /// Records an error raised outside `execute` (a syntax error, say).
    pub fn note_error(&self, e: &ServerError) {
        self.node
            .metrics
            .errors
            .with_label_values(&[e.sqlstate()])
            .inc();
        self.fail_block();
    }

    pub fn set_copy_error(&self, e: ServerError) {
        *self.copy_error.lock() = Some(e);
    }

    pub fn take_copy_error(&self) -> Option<ServerError> {
        self.copy_error.lock().take()
    }

    /// The transaction a data statement runs in: the open block's (with a new READ COMMITTED
    /// snapshot), or a fresh implicit one.
    fn statement_txn(&self) -> ServerResult<(Arc<Txn>, bool)> {
        let (txn, implicit) = match &mut *self.txn.lock() {
            TxnState::Block { txn, used, .. } => {
                *used = true;
                txn.new_statement_snapshot()?;
                (txn.clone(), false)
            }
            TxnState::Idle => (
                Arc::new(self.node.store.begin_with(self.default_isolation())),
                true,
            ),
        };
        *self.running.lock() = Some(txn.clone());
        Ok((txn, implicit))
    }

    /// Commits a transaction off the async runtime: in two phases when it wrote partitions
    /// of other nodes.
    async fn commit_txn(&self, txn: Arc<Txn>) -> ServerResult<()> {
        if let Some(remote) = &self.node.remote {
            return Ok(remote.commit(txn).await?);
        }
        tokio::task::spawn_blocking(move || txn.commit())
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
        Ok(())
    }

    /// Rolls back a transaction, with its writes on other nodes.
    async fn rollback_txn(&self, txn: Arc<Txn>) {
        match &self.node.remote {
            Some(remote) => remote.rollback(txn).await,
            None => {
                let _ = tokio::task::spawn_blocking(move || txn.rollback()).await;
            }
        }
    }

    /// Whether `txn` wrote partitions of other nodes (those writes cannot be undone alone).
    fn writes_elsewhere(&self, txn: &Txn) -> bool {
        self.node
            .remote
            .as_ref()
            .is_some_and(|r| r.writes_elsewhere(txn))
    }
}

/// EXPLAIN as PostgreSQL prints it: one `QUERY PLAN` column, one row per line of the physical
/// plan (EXPLAIN VERBOSE keeps DataFusion's logical and physical plans).
async fn explain_as_query_plan(outcome: Outcome) -> ServerResult<Outcome> {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let Outcome::Rows { stream, .. } = outcome else {
        return Ok(outcome);
    };
    let batches: Vec<datafusion::arrow::record_batch::RecordBatch> =
        futures::TryStreamExt::try_collect(stream).await?;
    let mut lines = Vec::new();
    for b in &batches {
        if b.num_columns() < 2 {
            continue;
        }
        let kinds = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let plans = datafusion::arrow::compute::cast(b.column(1), &DataType::Utf8)?;
        let (kinds, plans) = (kinds.as_string::<i32>(), plans.as_string::<i32>());
        for i in 0..b.num_rows() {
            if kinds.is_null(i) || plans.is_null(i) || kinds.value(i) == "logical_plan" {
                continue;
            }
            lines.extend(
                plans
                    .value(i)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
    }
    let schema = Arc::new(Schema::new(vec![Field::new(
        "QUERY PLAN",
        DataType::Utf8,
        false,
    )]));
    let batch = datafusion::arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(lines))],
    )?;
    Ok(transaction::rows_outcome(schema, vec![batch], "EXPLAIN"))
}

/// Restarts of one statement before its READ COMMITTED conflict is reported (40001). Each
/// restart follows a wait for the row's writer, so reaching this takes heavy, steady contention.
const MAX_STATEMENT_RESTARTS: usize = 100;

/// Pauses before running a statement again after a partition moved under it: doubling from
/// the first to the last (about 10 s in all, longer than a move's wait for writers).
const FIRST_MOVE_PAUSE: Duration = Duration::from_millis(20);
const LAST_MOVE_PAUSE: Duration = Duration::from_millis(5120);

/// Interrupts the running statement's transaction unless the statement finished: its future
/// was dropped (CancelRequest, a closed connection) or it timed out. An autocommit statement's
/// writes on other nodes are rolled back there too (a block's wait for its ROLLBACK).
struct InterruptOnDrop<'a>(&'a Session);

impl Drop for InterruptOnDrop<'_> {
    fn drop(&mut self) {
        let session = self.0;
        if let Some(txn) = session.running.lock().take() {
            txn.interrupt();
            let in_block = matches!(&*session.txn.lock(), TxnState::Block { txn: t, .. } if Arc::ptr_eq(t, &txn));
            if !in_block {
                session.roll_back_elsewhere(txn);
            }
        }
    }
}

impl Session {
    /// Rolls back, in the background, what `txn` wrote on other nodes (its statement or
    /// session is gone, so nobody waits for it).
    fn roll_back_elsewhere(&self, txn: Arc<Txn>) {
        if let (Some(remote), Ok(runtime)) = (
            self.node.remote.clone(),
            tokio::runtime::Handle::try_current(),
        ) {
            if remote.writes_elsewhere(&txn) {
                runtime.spawn(async move { remote.rollback(txn).await });
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let block = match &*self.txn.lock() {
            TxnState::Block { txn, .. } => Some(txn.clone()),
            TxnState::Idle => None,
        };
        if let Some(txn) = block {
            txn.rollback();
            self.roll_back_elsewhere(txn);
        }
    }
}
