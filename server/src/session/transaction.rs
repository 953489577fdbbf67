//! Transaction control (BEGIN, COMMIT, ROLLBACK, savepoints) and session settings statements.

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, Reset, ResetStatement, Set, Statement, TransactionIsolationLevel, TransactionMode,
    Value,
};
use shoal_storage::{Isolation, Txn};

use super::{Outcome, Session};
use crate::error::{ServerError, ServerResult};

pub(crate) struct Savepoint {
    name: String,
    /// The storage savepoint's depth in the block's transaction.
    depth: usize,
    /// The transaction's statement number when it was set: parts on other nodes undo the
    /// statements after it.
    statement: u64,
}

pub(crate) enum TxnState {
    Idle,
    Block {
        txn: Arc<Txn>,
        /// Whether a data statement ran: SET TRANSACTION ISOLATION LEVEL must come before.
        used: bool,
        /// Savepoints, innermost last.
        savepoints: Vec<Savepoint>,
        failed: bool,
    },
}

impl Session {
    /// In a failed block only ROLLBACK (to a savepoint, too) and COMMIT are accepted.
    pub(super) fn check_not_failed(&self, stmt: &Statement) -> ServerResult<()> {
        if let TxnState::Block { failed: true, .. } = &*self.txn.lock() {
            if !matches!(stmt, Statement::Rollback { .. } | Statement::Commit { .. }) {
                return Err(ServerError::InFailedTransaction);
            }
        }
        Ok(())
    }

    pub(super) fn fail_block(&self) {
        if let TxnState::Block { failed, .. } = &mut *self.txn.lock() {
            *failed = true;
        }
    }

    pub(super) fn begin(&self, modes: &[TransactionMode]) -> ServerResult<Outcome> {
        let isolation = requested_isolation(modes)?.unwrap_or_else(|| self.default_isolation());
        let mut state = self.txn.lock();
        if matches!(*state, TxnState::Idle) {
            self.meta.begin_block();
            *state = TxnState::Block {
                txn: Arc::new(self.node.store.begin_with(isolation)),
                used: false,
                savepoints: Vec::new(),
                failed: false,
            };
            self.settings
                .set("transaction_isolation", isolation_name(isolation))?;
        }
        // PostgreSQL only warns about BEGIN inside a block.
        Ok(Outcome::TxnStart("BEGIN".into()))
    }

    pub(super) async fn commit(&self) -> ServerResult<Outcome> {
        let previous = std::mem::replace(&mut *self.txn.lock(), TxnState::Idle);
        match previous {
            TxnState::Idle => Ok(Outcome::TxnEnd("COMMIT".into())),
            TxnState::Block {
                txn, failed: true, ..
            } => {
                self.rollback_txn(txn).await;
                self.end_block(false);
                Ok(Outcome::TxnEnd("ROLLBACK".into()))
            }
            TxnState::Block { txn, .. } if self.writes_elsewhere(&txn) => {
                if self.meta.has_pending() {
                    self.rollback_txn(txn).await;
                    self.end_block(false);
                    return Err(ServerError::NotSupported(
                        "a transaction block that changes the catalog and writes partitions of other nodes".into(),
                    ));
                }
                let result = self.commit_txn(txn).await;
                self.end_block(result.is_ok());
                result.map(|()| Outcome::TxnEnd("COMMIT".into()))
            }
            TxnState::Block { txn, .. } => {
                let t = txn.clone();
                let meta = self.meta.clone();
                // The rows commit while the shared catalog is locked and unchanged, then the
                // block's DDL (if any) is published: both or neither.
                let result = tokio::task::spawn_blocking(move || {
                    let mut data_error = None;
                    let published = meta.publish(&mut || {
                        t.commit().map_err(|e| {
                            let text = e.to_string();
                            data_error = Some(e);
                            shoal_coord::CoordError::DataCommitFailed(text)
                        })
                    });
                    match (published, data_error) {
                        (_, Some(e)) => Err(ServerError::from(e)),
                        (Err(e), None) => Err(ServerError::from(e)),
                        (Ok(()), None) => Ok(()),
                    }
                })
                .await
                .map_err(|e| ServerError::Internal(e.to_string()))?;
                match result {
                    Ok(()) => {
                        self.end_block(true);
                        Ok(Outcome::TxnEnd("COMMIT".into()))
                    }
                    Err(e) => {
                        txn.rollback();
                        self.end_block(false);
                        Err(e)
                    }
                }
            }
        }
    }

    /// After a block: reclaim tables it dropped if it committed, forget them otherwise; the
    /// next transaction's isolation is the default again.
    fn end_block(&self, committed: bool) {
        let default = isolation_name(self.default_isolation());
        let _ = self.settings.set("transaction_isolation", default);
        self.meta.discard();
        self.end_cursors(committed);
        let dropped = std::mem::take(&mut *self.dropped_in_block.lock());
        if committed {
            self.reclaim(dropped);
        }
    }

    pub(super) async fn rollback(&self) -> Outcome {
        let previous = std::mem::replace(&mut *self.txn.lock(), TxnState::Idle);
        if let TxnState::Block { txn, .. } = previous {
            self.rollback_txn(txn).await;
            self.end_block(false);
        }
        Outcome::TxnEnd("ROLLBACK".into())
    }

    pub(super) fn savepoint(&self, name: &str) -> ServerResult<Outcome> {
        let mut state = self.txn.lock();
        let TxnState::Block {
            txn, savepoints, ..
        } = &mut *state
        else {
            return Err(ServerError::OutsideBlock("SAVEPOINT"));
        };
        let depth = txn.savepoint()?;
        savepoints.push(Savepoint {
            name: name.to_lowercase(),
            depth,
            statement: txn.statement(),
        });
        Ok(Outcome::tag("SAVEPOINT"))
    }

    pub(super) fn release(&self, name: &str) -> ServerResult<Outcome> {
        let mut state = self.txn.lock();
        let TxnState::Block { savepoints, .. } = &mut *state else {
            return Err(ServerError::OutsideBlock("RELEASE SAVEPOINT"));
        };
        let name = name.to_lowercase();
        let pos = savepoints
            .iter()
            .rposition(|s| s.name == name)
            .ok_or_else(|| ServerError::NoSuchSavepoint(name.clone()))?;
        savepoints.truncate(pos);
        Ok(Outcome::tag("RELEASE"))
    }

    /// Undoes what the block wrote since the savepoint, here and in its parts on other nodes.
    pub(super) async fn rollback_to(&self, name: &str) -> ServerResult<Outcome> {
        let name = name.to_lowercase();
        let (txn, depth, statement) = match &*self.txn.lock() {
            TxnState::Block {
                txn, savepoints, ..
            } => {
                let savepoint = savepoints
                    .iter()
                    .rfind(|s| s.name == name)
                    .ok_or_else(|| ServerError::NoSuchSavepoint(name.clone()))?;
                (txn.clone(), savepoint.depth, savepoint.statement)
            }
            TxnState::Idle => return Err(ServerError::OutsideBlock("ROLLBACK TO SAVEPOINT")),
        };
        self.rollback_writes_to(&txn, depth, statement).await?;
        if let TxnState::Block {
            savepoints, failed, ..
        } = &mut *self.txn.lock()
        {
            if let Some(pos) = savepoints.iter().rposition(|s| s.name == name) {
                savepoints.truncate(pos + 1);
            }
            *failed = false;
        }
        Ok(Outcome::tag("ROLLBACK"))
    }

    pub(super) fn set(&self, set: Set) -> ServerResult<Outcome> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string();
                let value = values
                    .iter()
                    .map(setting_value)
                    .collect::<Vec<_>>()
                    .join(", ");
                if value.eq_ignore_ascii_case("default") {
                    self.settings.reset(&name)?;
                } else {
                    self.settings.set(&name, &value)?;
                }
                if name.eq_ignore_ascii_case("application_name") {
                    *self.entry.application_name.lock() = value;
                }
            }
            Set::SetTimeZone { value, .. } => {
                self.settings.set("TimeZone", &setting_value(&value))?
            }
            Set::SetTransaction {
                modes,
                session: true,
                ..
            } => {
                if let Some(level) = requested_isolation(&modes)? {
                    self.settings
                        .set("default_transaction_isolation", isolation_name(level))?;
                    if !self.in_block() {
                        self.settings
                            .set("transaction_isolation", isolation_name(level))?;
                    }
                }
            }
            // Outside a block PostgreSQL only warns that SET TRANSACTION has no effect.
            Set::SetTransaction { modes, .. } => self.set_block_isolation(&modes)?,
            Set::SetSessionParam(_) | Set::SetRole { .. } | Set::SetNames { .. } => {}
            other => {
                return Err(ServerError::NotSupported(format!("{other}")));
            }
        }
        Ok(Outcome::tag("SET"))
    }

    pub(super) fn reset(&self, r: ResetStatement) -> ServerResult<Outcome> {
        match r.reset {
            Reset::ALL => self.settings.reset_all(&self.entry.user),
            Reset::ConfigurationParameter(name) => self.settings.reset(&name.to_string())?,
        }
        Ok(Outcome::tag("RESET"))
    }

    pub(super) async fn show(&self, variable: &[Ident]) -> ServerResult<Outcome> {
        let words: Vec<String> = variable.iter().map(|i| i.value.clone()).collect();
        let name = self.settings.name_of(&words);
        let (columns, rows): (Vec<&str>, Vec<Vec<String>>) = if name.eq_ignore_ascii_case("all") {
            (
                vec!["name", "setting", "description"],
                self.settings
                    .all()
                    .into_iter()
                    .map(|(n, v)| vec![n, v, String::new()])
                    .collect(),
            )
        } else {
            let name = match name.to_lowercase().as_str() {
                "transaction isolation level" => "transaction_isolation".to_string(),
                "time zone" => "TimeZone".to_string(),
                _ => name,
            };
            let value = self
                .settings
                .get(&name)
                .ok_or_else(|| ServerError::UnknownSetting(name.clone()))?;
            let header = self.settings.display_name(&name);
            return single_column(&header, vec![value]);
        };
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(*c, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let arrays = (0..columns.len())
            .map(|i| {
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
                )) as _
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays)?;
        Ok(rows_outcome(schema, vec![batch], "SHOW"))
    }
}

/// The text of a SET value: `'x'`, `x`, `5` and `on` all become their bare text.
fn setting_value(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

pub(super) fn rows_outcome(
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
    tag: &'static str,
) -> Outcome {
    let stream = futures::stream::iter(batches.into_iter().map(Ok));
    Outcome::Rows {
        schema: schema.clone(),
        stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        tag,
    }
}

fn single_column(name: &str, values: Vec<String>) -> ServerResult<Outcome> {
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(values))])?;
    Ok(rows_outcome(schema, vec![batch], "SHOW"))
}

impl Session {
    /// The isolation level of transactions that do not name one.
    pub(super) fn default_isolation(&self) -> Isolation {
        match self
            .settings
            .get("default_transaction_isolation")
            .as_deref()
        {
            Some(name) if name == isolation_name(Isolation::RepeatableRead) => {
                Isolation::RepeatableRead
            }
            _ => Isolation::ReadCommitted,
        }
    }

    /// SET TRANSACTION ISOLATION LEVEL inside a block, before its first data statement: the
    /// block's (still unused) transaction is replaced by one at the new level.
    fn set_block_isolation(&self, modes: &[TransactionMode]) -> ServerResult<()> {
        let Some(level) = requested_isolation(modes)? else {
            return Ok(());
        };
        let mut state = self.txn.lock();
        let TxnState::Block { txn, used, .. } = &mut *state else {
            return Ok(());
        };
        if *used {
            return Err(ServerError::IsolationAfterQuery);
        }
        if txn.isolation()? != level {
            txn.rollback();
            *txn = Arc::new(self.node.store.begin_with(level));
        }
        self.settings
            .set("transaction_isolation", isolation_name(level))?;
        Ok(())
    }
}

/// The isolation level named among BEGIN's or SET TRANSACTION's modes. READ UNCOMMITTED is
/// READ COMMITTED, as in PostgreSQL; SERIALIZABLE is refused. Read-only is refused too.
fn requested_isolation(modes: &[TransactionMode]) -> ServerResult<Option<Isolation>> {
    let mut level = None;
    for m in modes {
        match m {
            TransactionMode::IsolationLevel(TransactionIsolationLevel::Serializable)
            | TransactionMode::IsolationLevel(TransactionIsolationLevel::Snapshot) => {
                return Err(ServerError::NotSupported(
                    "SERIALIZABLE isolation (Shoal offers READ COMMITTED and REPEATABLE READ)"
                        .into(),
                ))
            }
            TransactionMode::IsolationLevel(TransactionIsolationLevel::RepeatableRead) => {
                level = Some(Isolation::RepeatableRead)
            }
            TransactionMode::IsolationLevel(_) => level = Some(Isolation::ReadCommitted),
            TransactionMode::AccessMode(a) if a.to_string().contains("ONLY") => {
                return Err(ServerError::NotSupported("read-only transactions".into()))
            }
            TransactionMode::AccessMode(_) => {}
        }
    }
    Ok(level)
}

fn isolation_name(level: Isolation) -> &'static str {
    match level {
        Isolation::ReadCommitted => "read committed",
        Isolation::RepeatableRead => "repeatable read",
    }
}
