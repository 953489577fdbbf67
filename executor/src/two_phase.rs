//! Transactions that write partitions of several nodes: two-phase commit, decided in etcd.
//!
//! The node a client talks to runs the transaction. Rows and statements for partitions other
//! nodes lead are sent to those nodes, which write them in a *part* of the transaction: a
//! local transaction of theirs, kept open under the transaction's id ([`Parts`]). At COMMIT
//! the running node asks every part to prepare (its writes stored durably but not applied,
//! its keys locked: see `shoal_storage`'s prepared transactions), prepares its own writes the
//! same way, records the decision `commit` in etcd ([`ClusterView::decide`]) and then tells
//! every part to apply. A part that fails to prepare makes the whole transaction roll back.
//!
//! A part whose commit never comes (the running node died, or restarted and forgot it) asks
//! etcd itself, proposing `abort`: etcd keeps whichever decision came first, so every part
//! ends the same way. Prepared parts survive a restart ([`Parts::recover`]); unprepared ones
//! are rolled back when the running node is gone or after [`IDLE_PART_LIMIT`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{ExecError, RemoteFragments};
use parking_lot::Mutex;
use shoal_coord::{ClusterView, NodeId, NodeStatus};
use shoal_storage::{Isolation, Store, Txn};

/// How often a node looks at the parts it holds.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// A prepared part asks for the decision this long after its prepare, or after
/// [`GONE_PATIENCE`] when the node running its transaction is down or restarted.
const PREPARED_PATIENCE: Duration = Duration::from_secs(30);
const GONE_PATIENCE: Duration = Duration::from_secs(1);
/// An unprepared part nobody used this long is rolled back: its session went away unseen.
pub const IDLE_PART_LIMIT: Duration = Duration::from_secs(600);

/// `node-started_ms-n`: the running node, when its run began and a number unique in that run.
pub(crate) fn transaction_id(node: NodeId, started_ms: u64, local_txn: u64) -> String {
    format!("{node}-{started_ms}-{local_txn}")
}

/// The node (and its run) that runs the transaction `id`.
fn running_node(id: &str) -> Option<(NodeId, u64)> {
    let mut fields = id.splitn(3, '-');
    let node = fields.next()?.parse().ok()?;
    let started = fields.next()?.parse().ok()?;
    Some((node, started))
}

/// Whether the node that runs `id` is down or no longer in the run that started it.
fn runner_gone(id: &str, nodes: &[NodeStatus]) -> bool {
    let Some((node, started)) = running_node(id) else {
        return true;
    };
    !nodes
        .iter()
        .any(|n| n.info.id == node && n.live && n.info.started_ms == started)
}

struct Part {
    txn: Arc<Txn>,
    last_used: Instant,
    prepared_at: Option<Instant>,
}

/// The parts this node holds of transactions run by nodes (itself included, for its own
/// prepared writes whose decision it could not learn).
pub struct Parts {
    store: Store,
    cluster: Arc<dyn ClusterView>,
    open: Mutex<HashMap<String, Part>>,
}

impl Parts {
    pub fn new(store: Store, cluster: Arc<dyn ClusterView>) -> Arc<Self> {
        Arc::new(Parts {
            store,
            cluster,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes back the parts this node had prepared when it stopped; they wait for their
    /// decision like any other. Returns how many there were. Blocking.
    pub fn recover(&self) -> Result<usize, ExecError> {
        let found = self.store.prepared_transactions()?;
        let count = found.len();
        let mut open = self.open.lock();
        for (id, txn) in found {
            let long_ago = Instant::now()
                .checked_sub(PREPARED_PATIENCE)
                .unwrap_or_else(Instant::now);
            open.insert(
                id,
                Part {
                    txn: Arc::new(txn),
                    last_used: long_ago,
                    prepared_at: Some(long_ago),
                },
            );
        }
        Ok(count)
    }

    /// The transaction of part `id` for its next statement, opened on first use.
    pub(crate) fn txn_for(&self, id: &str) -> Result<Arc<Txn>, ExecError> {
        let mut open = self.open.lock();
        let part = open.entry(id.to_string()).or_insert_with(|| Part {
            txn: Arc::new(self.store.begin_with(Isolation::ReadCommitted)),
            last_used: Instant::now(),
            prepared_at: None,
        });
        if part.prepared_at.is_some() {
            return Err(ExecError::PartPrepared { id: id.to_string() });
        }
        part.last_used = Instant::now();
        part.txn.new_statement_snapshot()?;
        Ok(part.txn.clone())
    }

    /// The transaction of part `id` for a fragment that reads through it, if this node holds
    /// that part and it still takes statements.
    pub(crate) fn reading(&self, id: &str) -> Option<Arc<Txn>> {
        let open = self.open.lock();
        let part = open.get(id).filter(|p| p.prepared_at.is_none())?;
        part.txn.new_statement_snapshot().ok()?;
        Some(part.txn.clone())
    }

    /// Prepares part `id`. Blocking.
    pub(crate) fn prepare(&self, id: &str) -> Result<(), ExecError> {
        let txn = self
            .open
            .lock()
            .get(id)
            .map(|p| p.txn.clone())
            .ok_or_else(|| ExecError::PartGone {
                id: id.to_string(),
                node: self.cluster.local_node(),
            })?;
        txn.prepare(id)?;
        if let Some(part) = self.open.lock().get_mut(id) {
            part.prepared_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Applies (`commit`) or drops part `id`. A part this node no longer holds was ended
    /// already, by the same decision. Blocking.
    pub(crate) fn finish(&self, id: &str, commit: bool) -> Result<(), ExecError> {
        let Some(part) = self.open.lock().remove(id) else {
            return Ok(());
        };
        if commit {
            part.txn.commit()?;
        } else {
            part.txn.rollback();
        }
        Ok(())
    }

    /// Keeps this node's own prepared writes of `id`, whose decision could not be learned,
    /// until the decision is found.
    pub(crate) fn adopt(&self, id: &str, txn: Arc<Txn>) {
        self.open.lock().insert(
            id.to_string(),
            Part {
                txn,
                last_used: Instant::now(),
                prepared_at: Some(Instant::now()),
            },
        );
    }

    /// Ends the parts nobody will end: forever, every [`RESOLVE_EVERY`].
    pub async fn resolve_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RESOLVE_EVERY).await;
            let parts = self.clone();
            let resolved = tokio::task::spawn_blocking(move || parts.resolve_once()).await;
            if let Ok(Err(e)) = resolved {
                tracing::warn!(error = %e, "could not settle a transaction part yet");
            }
        }
    }

    /// One round of [`Parts::resolve_forever`]. Blocking (it may wait on etcd).
    fn resolve_once(&self) -> Result<(), ExecError> {
        let nodes = self.cluster.nodes();
        let (mut undecided, mut abandoned) = (Vec::new(), Vec::new());
        for (id, part) in self.open.lock().iter() {
            let gone = runner_gone(id, &nodes);
            match part.prepared_at {
                Some(at) if at.elapsed() >= PREPARED_PATIENCE => undecided.push(id.clone()),
                Some(at) if gone && at.elapsed() >= GONE_PATIENCE => undecided.push(id.clone()),
                None if gone || part.last_used.elapsed() >= IDLE_PART_LIMIT => {
                    abandoned.push(id.clone())
                }
                _ => {}
            }
        }
        for id in abandoned {
            tracing::info!(transaction = %id, "rolling back the part of an abandoned transaction");
            self.finish(&id, false)?;
        }
        for id in undecided {
            let commit = self.cluster.decide(&id, false)?;
            tracing::info!(transaction = %id, commit, "settled a prepared transaction part");
            self.finish(&id, commit)?;
        }
        Ok(())
    }
}

/// A transaction of this node that wrote on other nodes: its id and the nodes holding parts.
pub(crate) struct SpanningTxn {
    pub id: String,
    pub parts: Mutex<BTreeSet<NodeId>>,
}

/// How a running transaction ended across its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Commit,
    Abort,
}

impl Outcome {
    pub fn action(self) -> &'static str {
        match self {
            Outcome::Commit => COMMIT_ACTION,
            Outcome::Abort => ABORT_ACTION,
        }
    }
}

/// Flight actions on parts; the body is the transaction's id.
pub(crate) const PREPARE_ACTION: &str = "prepare";
pub(crate) const COMMIT_ACTION: &str = "commit";
pub(crate) const ABORT_ACTION: &str = "abort";

/// Runs blocking work (storage, etcd) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ExecError> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ExecError::TaskFailed(e.to_string()))?
}

impl RemoteFragments {
    /// The id `txn` has across nodes, recording that `node` holds a part of it. Parts read
    /// at snapshots of their own node, so REPEATABLE READ cannot span nodes yet.
    pub(crate) fn join_part(
        &self,
        txn: &Txn,
        node: NodeId,
        table: &str,
    ) -> Result<String, ExecError> {
        if txn.isolation().ok() == Some(Isolation::RepeatableRead) {
            return Err(ExecError::PartitionsElsewhere {
                table: table.to_string(),
                local_node: self.local_node(),
                partitions: format!("led by node {node} (REPEATABLE READ)"),
            });
        }
        let mut spanning = self.spanning.lock();
        let entry = spanning.entry(txn.id()).or_insert_with(|| {
            Arc::new(SpanningTxn {
                id: transaction_id(self.local_node(), self.started_ms(), txn.id()),
                parts: Mutex::new(BTreeSet::new()),
            })
        });
        entry.parts.lock().insert(node);
        Ok(entry.id.clone())
    }

    /// Whether `txn` wrote partitions of other nodes.
    pub fn writes_elsewhere(&self, txn: &Txn) -> bool {
        self.spanning.lock().contains_key(&txn.id())
    }

    /// When this node's current run began, as the cluster knows it.
    fn started_ms(&self) -> u64 {
        let local = self.local_node();
        self.cluster
            .nodes()
            .into_iter()
            .find(|n| n.info.id == local)
            .map(|n| n.info.started_ms)
            .unwrap_or_default()
    }

    /// Asks `node` to prepare, commit or abort its part of transaction `id`.
    async fn part_action(&self, node: NodeId, action: &str, id: &str) -> Result<(), ExecError> {
        self.node_action(node, action, id.as_bytes().to_vec())
            .await
            .map(|_| ())
    }

    /// Tells every part how transaction `id` ended, trying each a few times; whether all of
    /// them heard it (one that did not asks etcd itself later).
    async fn end_parts(&self, parts: &[NodeId], id: &str, outcome: Outcome) -> bool {
        let told = futures::future::join_all(parts.iter().map(|node| async move {
            let mut delay = Duration::from_millis(50);
            for _ in 0..3 {
                match self.part_action(*node, outcome.action(), id).await {
                    Ok(()) => return true,
                    Err(e) => {
                        tracing::warn!(transaction = %id, node, error = %e, "a part did not take the outcome");
                        tokio::time::sleep(delay).await;
                        delay *= 4;
                    }
                }
            }
            false
        }))
        .await;
        told.into_iter().all(|t| t)
    }

    /// Commits `txn`: on its own when it wrote only on this node, otherwise in two phases
    /// with the parts it has on other nodes (see the module comment).
    pub async fn commit(&self, txn: Arc<Txn>) -> Result<(), ExecError> {
        let spanning = self.spanning.lock().remove(&txn.id());
        let Some(spanning) = spanning else {
            return blocking(move || Ok(txn.commit()?)).await;
        };
        let parts: Vec<NodeId> = spanning.parts.lock().iter().copied().collect();
        let id = spanning.id.clone();
        let prepared = futures::future::join_all(
            parts
                .iter()
                .map(|node| self.part_action(*node, PREPARE_ACTION, &id)),
        )
        .await;
        let mut failure = prepared.into_iter().find_map(Result::err);
        if failure.is_none() {
            // This node's writes are prepared like the others: from here on, a crash of this
            // node is settled by the decision.
            let (t, pid) = (txn.clone(), id.clone());
            failure = blocking(move || Ok(t.prepare(&pid)?)).await.err();
        }
        if let Some(e) = failure {
            self.end_parts(&parts, &id, Outcome::Abort).await;
            blocking(move || {
                txn.rollback();
                Ok(())
            })
            .await?;
            return Err(e);
        }
        let (cluster, did) = (self.cluster.clone(), id.clone());
        match blocking(move || Ok(cluster.decide(&did, true))).await? {
            Ok(true) => {
                // Fault injection for tests/e2e/cluster_writes.rs: die between the decision
                // and telling anyone about it.
                #[cfg(debug_assertions)]
                if std::env::var("SHOAL_FAILPOINT").as_deref() == Ok("exit-after-commit-decision") {
                    std::process::exit(70);
                }
            }
            Ok(false) => {
                self.end_parts(&parts, &id, Outcome::Abort).await;
                blocking(move || {
                    txn.rollback();
                    Ok(())
                })
                .await?;
                return Err(ExecError::TransactionAborted { id });
            }
            Err(e) => {
                // The decision may or may not have been recorded: every part, this node's
                // included, waits for it and asks etcd once it answers again.
                self.parts.adopt(&id, txn);
                return Err(ExecError::CommitOutcomeUnknown {
                    id,
                    reason: e.to_string(),
                });
            }
        }
        blocking(move || Ok(txn.commit()?)).await?;
        if self.end_parts(&parts, &id, Outcome::Commit).await {
            let cluster = self.cluster.clone();
            let forgotten = blocking(move || Ok(cluster.forget_decision(&id))).await;
            if let Ok(Err(e)) = forgotten {
                tracing::warn!(error = %e, "could not remove a transaction's decision from etcd");
            }
        }
        Ok(())
    }

    /// Rolls back `txn` and the parts it has on other nodes.
    pub async fn rollback(&self, txn: Arc<Txn>) {
        let spanning = self.spanning.lock().remove(&txn.id());
        if let Some(spanning) = spanning {
            let parts: Vec<NodeId> = spanning.parts.lock().iter().copied().collect();
            self.end_parts(&parts, &spanning.id, Outcome::Abort).await;
        }
        let _ = blocking(move || {
            txn.rollback();
            Ok(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_coord::NodeInfo;

    fn node(id: NodeId, live: bool, started_ms: u64) -> NodeStatus {
        NodeStatus {
            info: NodeInfo {
                id,
                sql_address: String::new(),
                flight_address: String::new(),
                started_ms,
            },
            live,
            coordinator: false,
            catalog_revision: 0,
            down_since_ms: None,
        }
    }

    #[test]
    fn a_transaction_is_abandoned_when_its_node_is_down_or_restarted() {
        let id = transaction_id(2, 1700, 9);
        assert_eq!(running_node(&id), Some((2, 1700)));
        assert!(!runner_gone(&id, &[node(1, true, 5), node(2, true, 1700)]));
        assert!(runner_gone(&id, &[node(2, false, 1700)]));
        assert!(runner_gone(&id, &[node(2, true, 1800)]));
        assert!(runner_gone(&id, &[node(1, true, 1700)]));
        assert!(runner_gone("garbage", &[node(2, true, 1700)]));
    }
}
