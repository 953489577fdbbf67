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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{ExecError, RemoteFragments};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
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
/// How often the coordinator drops the abort decisions nobody needs any more.
const FORGET_ABORTS_EVERY: Duration = Duration::from_secs(10);

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

/// Whether the node that ran `id` has started again since: its run that ran `id` is over
/// for good (a new run opens the node's data only after the old process is gone).
fn runner_restarted(id: &str, nodes: &[NodeStatus]) -> bool {
    let Some((node, started)) = running_node(id) else {
        return false;
    };
    nodes
        .iter()
        .any(|n| n.info.id == node && n.info.started_ms > started)
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

/// A part of a running transaction as a request names it: the transaction's id and the
/// running statement's number (see [`Parts::txn_for`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartRef {
    pub id: String,
    pub statement: u64,
}

struct Part {
    txn: Arc<Txn>,
    /// The running transaction's statement the part's snapshot was taken for.
    statement: u64,
    /// For each statement that used the part, ascending: the savepoint set before it, so that
    /// a ROLLBACK TO SAVEPOINT of the running transaction undoes the statements after it.
    savepoints: Vec<(u64, usize)>,
    last_used: Instant,
    prepared_at: Option<Instant>,
}

/// The parts this node holds of transactions run by nodes (itself included, for its own
/// prepared writes whose decision it could not learn).
pub struct Parts {
    store: Store,
    cluster: Arc<dyn ClusterView>,
    open: Mutex<HashMap<String, Part>>,
    /// Parts rolled back because nobody used them, and when: a later statement of theirs
    /// must fail rather than open an empty part that would commit without the lost writes.
    abandoned: Mutex<HashMap<String, Instant>>,
    /// When this node last looked for abort decisions to forget.
    aborts_checked: Mutex<Instant>,
}

impl Parts {
    pub fn new(store: Store, cluster: Arc<dyn ClusterView>) -> Arc<Self> {
        Arc::new(Parts {
            store,
            cluster,
            open: Mutex::new(HashMap::new()),
            abandoned: Mutex::new(HashMap::new()),
            aborts_checked: Mutex::new(Instant::now()),
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
                    statement: 0,
                    savepoints: Vec::new(),
                    last_used: long_ago,
                    prepared_at: Some(long_ago),
                },
            );
        }
        Ok(count)
    }

    /// The transaction of part `id` for statement `statement` of the running transaction,
    /// opened on first use. The part reads at a new snapshot only when the statement changes:
    /// every fragment and write of one statement here shares one snapshot, so that a row the
    /// statement read here and then writes is checked against what it read.
    pub(crate) fn txn_for(&self, part: &PartRef) -> Result<Arc<Txn>, ExecError> {
        let (id, statement) = (part.id.as_str(), part.statement);
        if self.abandoned.lock().contains_key(id) {
            return Err(ExecError::PartGone {
                id: id.to_string(),
                node: self.cluster.local_node(),
            });
        }
        let mut open = self.open.lock();
        let mut fresh = false;
        let part = open.entry(id.to_string()).or_insert_with(|| {
            fresh = true;
            Part {
                txn: Arc::new(self.store.begin_with(Isolation::ReadCommitted)),
                statement,
                savepoints: Vec::new(),
                last_used: Instant::now(),
                prepared_at: None,
            }
        });
        if part.prepared_at.is_some() {
            return Err(ExecError::PartPrepared { id: id.to_string() });
        }
        part.last_used = Instant::now();
        if !fresh && part.statement != statement {
            part.statement = statement;
            part.txn.new_statement_snapshot()?;
        }
        if part.savepoints.last().is_none_or(|(s, _)| *s != statement) {
            let depth = part.txn.savepoint()?;
            part.savepoints.push((statement, depth));
        }
        Ok(part.txn.clone())
    }

    /// Undoes what the statements after `statement` of the running transaction wrote in part
    /// `id` (ROLLBACK TO SAVEPOINT, or a statement run again). A part this node does not hold
    /// has nothing to undo; one it lost fails at prepare. Blocking.
    pub(crate) fn rollback_to(&self, id: &str, statement: u64) -> Result<(), ExecError> {
        let mut open = self.open.lock();
        let Some(part) = open.get_mut(id) else {
            return Ok(());
        };
        if part.prepared_at.is_some() {
            return Err(ExecError::PartPrepared { id: id.to_string() });
        }
        let Some(first) = part.savepoints.iter().position(|(s, _)| *s > statement) else {
            return Ok(());
        };
        part.txn.rollback_to_savepoint(part.savepoints[first].1)?;
        part.savepoints.truncate(first);
        Ok(())
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
                statement: 0,
                savepoints: Vec::new(),
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
        self.abandoned
            .lock()
            .retain(|_, at| at.elapsed() < 2 * IDLE_PART_LIMIT);
        for id in abandoned {
            tracing::info!(transaction = %id, "rolling back the part of an abandoned transaction");
            self.finish(&id, false)?;
            self.abandoned.lock().insert(id, Instant::now());
        }
        for id in undecided {
            let commit = self.cluster.decide(&id, false)?;
            tracing::info!(transaction = %id, commit, "settled a prepared transaction part");
            self.finish(&id, commit)?;
        }
        let local = self.cluster.local_node();
        let coordinator = nodes.iter().any(|n| n.info.id == local && n.coordinator);
        let due = self.aborts_checked.lock().elapsed() >= FORGET_ABORTS_EVERY;
        if coordinator && due {
            *self.aborts_checked.lock() = Instant::now();
            self.forget_settled_aborts(&nodes)?;
        }
        Ok(())
    }

    /// Drops the abort decisions of transactions whose running node has restarted since.
    /// Only that node's run that ran the transaction ever proposes `commit`; every other
    /// proposal is `abort`, so a part that asks after the record is gone records and gets
    /// `abort` again, and nothing can decide otherwise. (A commit decision is dropped by the
    /// running node once every part applied it.) Blocking.
    fn forget_settled_aborts(&self, nodes: &[NodeStatus]) -> Result<(), ExecError> {
        for (id, commit) in self.cluster.decisions()? {
            if !commit && runner_restarted(&id, nodes) {
                self.cluster.forget_decision(&id)?;
                tracing::info!(transaction = %id, "forgot the abort decision of a transaction");
            }
        }
        Ok(())
    }
}

/// A transaction of this node that wrote on other nodes: its id and the nodes that hold or
/// may hold parts of it.
pub(crate) struct SpanningTxn {
    pub id: String,
    pub parts: Mutex<BTreeMap<NodeId, PartState>>,
}

impl SpanningTxn {
    /// The nodes that were sent something for their part: those that hold one.
    fn used_parts(&self) -> Vec<(NodeId, u64)> {
        self.parts
            .lock()
            .iter()
            .filter(|(_, p)| p.used)
            .map(|(node, p)| (*node, p.run))
            .collect()
    }

    /// The part `node` holds for `statement`, now that a request names it.
    pub(crate) fn use_part(&self, node: NodeId, statement: u64) -> Option<PartRef> {
        let mut parts = self.parts.lock();
        let part = parts.get_mut(&node)?;
        part.used = true;
        Some(PartRef {
            id: self.id.clone(),
            statement,
        })
    }
}

/// A node's part of a spanning transaction, as the running node knows it.
pub(crate) struct PartState {
    /// The start of the node's run when the part was joined: a node that restarted since
    /// lost the part.
    run: u64,
    /// A request named the part, so the node opened it (a part only expected, for reads that
    /// never went there, is not prepared).
    used: bool,
}

/// A part that did not hear how its transaction ended (see [`RemoteFragments::end_parts`]).
pub(crate) struct Untold {
    node: NodeId,
    /// The part's node's run when it was last tried: a restart ends the part.
    run: u64,
    id: String,
    outcome: Outcome,
    since: Instant,
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
/// Undo the statements after one (the body is a [`PartRef`] in JSON).
pub(crate) const ROLLBACK_TO_ACTION: &str = "rollback_to";

/// Runs blocking work (storage, etcd) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ExecError> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ExecError::TaskFailed(e.to_string()))?
}

impl RemoteFragments {
    /// The part of `txn` that `node` holds, for the current statement, recording that the
    /// node holds one. Parts read at snapshots of their own node, so REPEATABLE READ cannot
    /// span nodes yet.
    pub(crate) fn join_part(
        &self,
        txn: &Txn,
        node: NodeId,
        table: &str,
    ) -> Result<PartRef, ExecError> {
        let spanning = self.expect_part(txn, node, table)?;
        spanning
            .use_part(node, txn.statement())
            .ok_or_else(|| ExecError::TaskFailed("a part joined and gone".into()))
    }

    /// Records that `node` may take a part of `txn`: fragments of `txn` sent there from now on
    /// read through that part (opening it). See [`Self::join_part`].
    pub(crate) fn expect_part(
        &self,
        txn: &Txn,
        node: NodeId,
        table: &str,
    ) -> Result<Arc<SpanningTxn>, ExecError> {
        if txn.isolation().ok() == Some(Isolation::RepeatableRead) {
            return Err(ExecError::PartitionsElsewhere {
                table: table.to_string(),
                local_node: self.local_node(),
                partitions: format!("led by node {node} (REPEATABLE READ)"),
            });
        }
        let run = self.run_of(node);
        let mut spanning = self.spanning.lock();
        let entry = spanning.entry(txn.id()).or_insert_with(|| {
            Arc::new(SpanningTxn {
                id: transaction_id(self.local_node(), self.started_ms(), txn.id()),
                parts: Mutex::new(BTreeMap::new()),
            })
        });
        let joined = entry
            .parts
            .lock()
            .entry(node)
            .or_insert(PartState { run, used: false })
            .run;
        if joined != run {
            return Err(ExecError::PartGone {
                id: entry.id.clone(),
                node,
            });
        }
        Ok(entry.clone())
    }

    /// Undoes, in every part of `txn` on other nodes, what the statements after `statement`
    /// wrote there (`Txn::statement` numbers them).
    pub async fn rollback_parts_to(&self, txn: &Txn, statement: u64) -> Result<(), ExecError> {
        let Some(spanning) = self.spanning.lock().get(&txn.id()).cloned() else {
            return Ok(());
        };
        let body = serde_json::to_vec(&PartRef {
            id: spanning.id.clone(),
            statement,
        })
        .map_err(|e| ExecError::TaskFailed(e.to_string()))?;
        let undone = futures::future::join_all(
            spanning
                .used_parts()
                .into_iter()
                .map(|(node, _)| self.node_action(node, ROLLBACK_TO_ACTION, body.clone())),
        )
        .await;
        undone.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }

    /// Whether `txn` wrote partitions of other nodes.
    pub fn writes_elsewhere(&self, txn: &Txn) -> bool {
        self.spanning.lock().contains_key(&txn.id())
    }

    /// When this node's current run began, as the cluster knows it.
    fn started_ms(&self) -> u64 {
        self.run_of(self.local_node())
    }

    /// When `node`'s current run began, as the cluster knows it.
    fn run_of(&self, node: NodeId) -> u64 {
        self.cluster
            .nodes()
            .into_iter()
            .find(|n| n.info.id == node)
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
    /// them heard it. The others are told again in the background ([`Self::retell_forever`]):
    /// a prepared part would ask etcd itself after a while, but an unprepared one of a
    /// running node that is still up waits for [`IDLE_PART_LIMIT`], keeping its partition
    /// from being copied or moved all that time.
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
            self.untold.lock().push(Untold {
                node: *node,
                run: self.run_of(*node),
                id: id.to_string(),
                outcome,
                since: Instant::now(),
            });
            false
        }))
        .await;
        told.into_iter().all(|t| t)
    }

    /// Tells parts that did not hear how their transaction ended, every [`RESOLVE_EVERY`],
    /// until they do, their node restarts (the part is gone with its run) or
    /// [`IDLE_PART_LIMIT`] passes (the part gave up by then).
    pub async fn retell_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RESOLVE_EVERY).await;
            let pending = std::mem::take(&mut *self.untold.lock());
            let mut still = Vec::new();
            for u in pending {
                if u.since.elapsed() >= IDLE_PART_LIMIT || self.run_of(u.node) != u.run {
                    continue;
                }
                if self
                    .part_action(u.node, u.outcome.action(), &u.id)
                    .await
                    .is_err()
                {
                    still.push(u);
                }
            }
            self.untold.lock().extend(still);
        }
    }

    /// Commits `txn`: on its own when it wrote only on this node, otherwise in two phases
    /// with the parts it has on other nodes (see the module comment).
    pub async fn commit(&self, txn: Arc<Txn>) -> Result<(), ExecError> {
        let spanning = self.spanning.lock().remove(&txn.id());
        let Some(spanning) = spanning else {
            return blocking(move || Ok(txn.commit()?)).await;
        };
        let joined = spanning.used_parts();
        let parts: Vec<NodeId> = joined.iter().map(|(node, _)| *node).collect();
        let id = spanning.id.clone();
        // A node that restarted since its part began lost the part's writes, even if a later
        // read opened a new part there under the same id.
        let restarted = joined
            .iter()
            .find(|(node, run)| self.run_of(*node) != *run)
            .map(|(node, _)| ExecError::PartGone {
                id: id.clone(),
                node: *node,
            });
        let prepared = match restarted {
            Some(e) => vec![Err(e)],
            None => {
                futures::future::join_all(
                    parts
                        .iter()
                        .map(|node| self.part_action(*node, PREPARE_ACTION, &id)),
                )
                .await
            }
        };
        let mut failure = prepared.into_iter().find_map(Result::err);
        if failure.is_none() {
            // This node's writes are prepared like the others: from here on, a crash of this
            // node is settled by the decision.
            let (t, pid) = (txn.clone(), id.clone());
            failure = blocking(move || Ok(t.prepare(&pid)?)).await.err();
            // Fault injection for tests/e2e/cluster_writes.rs: die with every part prepared
            // and no decision recorded.
            #[cfg(debug_assertions)]
            if std::env::var("SHOAL_FAILPOINT").as_deref() == Ok("exit-before-commit-decision") {
                std::process::exit(70);
            }
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
                // A part aborted first. This node never proposes `commit` for it again, so
                // the record can go: whoever asks later records `abort` once more.
                self.forget_decision(&id).await;
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
        // Decided: whatever happens here, the transaction commits, so the other parts hear it.
        let applied = blocking(move || Ok(txn.commit()?)).await;
        let told = self.end_parts(&parts, &id, Outcome::Commit).await;
        match applied {
            Ok(()) => {
                if told {
                    self.forget_decision(&id).await;
                }
                Ok(())
            }
            // Not a serialization failure: the transaction is committed (where a follower took
            // over one of this node's partitions, it applied its copy of the part by the
            // decision), but this node cannot promise the client that every write is in place.
            Err(e) => Err(ExecError::CommitOutcomeUnknown {
                id,
                reason: format!(
                    "decided to commit, but this node could not apply its part yet: {e}"
                ),
            }),
        }
    }

    /// Removes the recorded decision of `id` from etcd (a failure only leaves it there).
    async fn forget_decision(&self, id: &str) {
        let (cluster, id) = (self.cluster.clone(), id.to_string());
        if let Ok(Err(e)) = blocking(move || Ok(cluster.forget_decision(&id))).await {
            tracing::warn!(error = %e, "could not remove a transaction's decision from etcd");
        }
    }

    /// Rolls back `txn` and the parts it has on other nodes.
    pub async fn rollback(&self, txn: Arc<Txn>) {
        let spanning = self.spanning.lock().remove(&txn.id());
        if let Some(spanning) = spanning {
            let parts: Vec<NodeId> = spanning.used_parts().into_iter().map(|(n, _)| n).collect();
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
    use shoal_coord::{NodeInfo, SingleNode};
    use shoal_storage::StoreOptions;

    #[test]
    fn a_part_reads_at_one_snapshot_per_statement_of_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let cluster = Arc::new(SingleNode {
            sql_address: String::new(),
        });
        let parts = Parts::new(store.clone(), cluster);
        let part = |statement| PartRef {
            id: transaction_id(2, 1700, 9),
            statement,
        };
        let first = parts.txn_for(&part(1)).unwrap();
        let other = store.begin();
        other.put(b"k", b"v").unwrap();
        other.commit().unwrap();
        // Another fragment or write of the same statement: what the statement read stays.
        let again = parts.txn_for(&part(1)).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.get(b"k").unwrap(), None);
        // The transaction's next statement sees the commit.
        let next = parts.txn_for(&part(2)).unwrap();
        assert_eq!(next.get(b"k").unwrap(), Some(b"v".to_vec()));
        // A prepared part takes no more statements.
        parts.prepare(&part(2).id).unwrap();
        assert!(matches!(
            parts.txn_for(&part(3)),
            Err(ExecError::PartPrepared { .. })
        ));
        parts.finish(&part(2).id, false).unwrap();
    }

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
        // Down is not over: a paused node may still propose commit when it wakes up.
        assert!(!runner_restarted(&id, &[node(2, false, 1700)]));
        assert!(runner_restarted(&id, &[node(2, false, 1800)]));
        assert!(!runner_restarted(&id, &[node(1, true, 1800)]));
        assert!(!runner_restarted("garbage", &[node(2, true, 1800)]));
    }
}
