//! Replication between nodes: a leader's commits reach its followers before they apply, and
//! the coordinator promotes a follower when a leader is down.
//!
//! [`ClusterReplicator`] is the storage's [`Replicator`] on a cluster node. For each entry of
//! a commit (one per written partition with followers) it reads the partition's configuration
//! from the catalog and sends the entry to every follower with `DoAction("replicate")`, at
//! once, and waits for all. A follower ([`FragmentService::replication_action`]) takes it only
//! from the leader of the configuration it knows, at that epoch, and only in log order (one it
//! has already is taken again only when it is the same entry: a leader that restarted between
//! sending an entry and applying it sends another one at that position, and the follower that
//! holds the first leaves the configuration); it answers `FAILED_PRECONDITION` when it knows another
//! configuration (the leader sends the entries again to the followers of its newer one, or,
//! when it no longer leads, refuses the commit and applies nothing; once some follower took an
//! entry, a newer leader may hold it, so the answer is 08007 instead), anything else when it
//! could not take it. A follower that did not take an entry is removed from the configuration
//! (epoch + 1, a compare-and-swap of the catalog) before the leader applies the commit and
//! answers.
//!
//! Failover ([`RemoteFragments::fail_over`]): when a partition's leader is down (its lease
//! expired), the coordinator seals the partition on each live follower at the current epoch
//! (`seal`: the follower then refuses the old leader's entries and reports its last log
//! position) and picks the follower with the longest log. That follower settles the prepared
//! copies it keeps (`settle_prepared`: each transaction's decision, read from etcd with
//! `abort` proposed where none exists yet, appends the copy to the log or drops it); the
//! others copy the entries they lack from it (`catch_up`, which reads them with `log_after`;
//! commits of a partition are replicated one at a time, so before the settling they lack at
//! most the last one) and drop their own copies; and the new configuration is recorded: that
//! follower leads, the others that caught up follow, epoch + 1. Every entry acknowledged to a
//! client, and every prepared part of a transaction across nodes, is on every follower of its
//! configuration, so the new leader has them all.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::Action;
use serde::{Deserialize, Serialize};
use shoal_coord::{CoordError, NodeId, PartitionDef};
use shoal_storage::{ReplicatedEntry, ReplicationFailure, Replicator, StorageError, Store};
use tonic::{Code, Status};

use crate::flight::{frame, unframe};
use crate::two_phase::blocking;
use crate::{ExecError, FragmentService, RemoteFragments};

pub(crate) const REPLICATE_ACTION: &str = "replicate";
pub(crate) const SEAL_ACTION: &str = "seal";
pub(crate) const UNSEAL_ACTION: &str = "unseal";
pub(crate) const LOG_AFTER_ACTION: &str = "log_after";
pub(crate) const CATCH_UP_ACTION: &str = "catch_up";
pub(crate) const SETTLE_ACTION: &str = "settle_prepared";

/// How long a leader waits for a follower to store an entry before dropping it from the
/// configuration. Below the lease TTL, so that a failover is not slower than the follower's
/// removal would have been.
const FOLLOWER_PATIENCE: Duration = Duration::from_millis(1500);
/// How long a follower waits for the catalog naming the configuration an entry was sent in.
const CATALOG_PATIENCE: Duration = Duration::from_secs(1);
/// Log entries a catch-up asks for at a time.
const CATCH_UP_PAGE: usize = 256;

/// What travels with an entry, besides its writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryHeader {
    table: u32,
    partition: u32,
    /// 0: a prepared copy to keep (or, with `forget`, to drop).
    position: u64,
    epoch: u64,
    leader: NodeId,
    #[serde(default)]
    prepared: Option<String>,
    #[serde(default)]
    forget: bool,
}

/// A partition of a table, and what an action about it needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionAt {
    table: u32,
    partition: u32,
    /// `seal`: the epoch sealed; `log_after`: the position after which entries are wanted.
    #[serde(default)]
    at: u64,
    /// `catch_up`: the node to copy the missing entries from.
    #[serde(default)]
    from: NodeId,
}

fn encode_entries(entries: &[ReplicatedEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.position.to_le_bytes());
        out.extend_from_slice(&(e.writes.len() as u64).to_le_bytes());
        out.extend_from_slice(&e.writes);
    }
    out
}

fn decode_entries(table: u32, partition: u32, mut bytes: &[u8]) -> Option<Vec<ReplicatedEntry>> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let position = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
        let writes = bytes.get(16..16 + len)?.to_vec();
        bytes = &bytes[16 + len..];
        entries.push(ReplicatedEntry {
            table,
            partition,
            position,
            writes,
            prepared: None,
        });
    }
    Some(entries)
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn malformed(what: &str) -> Status {
    Status::invalid_argument(format!("malformed {what}"))
}

impl RemoteFragments {
    /// Runs action `kind` on `node`, keeping the answer's status as it came.
    async fn replica_call(
        &self,
        node: NodeId,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let address = self
            .address_of(node)
            .ok_or_else(|| Status::unavailable(format!("node {node} is down")))?;
        let client = self
            .client(&address)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.send_action(client, kind, body).await
    }

    /// The configuration of a partition in this node's catalog.
    fn configuration(&self, table: u32, partition: u32) -> Option<PartitionDef> {
        self.meta
            .catalog()
            .table_by_id(table)
            .and_then(|t| t.partitions.get(partition as usize))
            .cloned()
    }

    /// The coordinator's side of a failover of `partition` of `table`, whose leader at `epoch`
    /// is down (see the module comment); the new leader.
    pub async fn fail_over(
        &self,
        table: u32,
        partition: u32,
        epoch: u64,
    ) -> Result<NodeId, ExecError> {
        let Some(config) = self
            .configuration(table, partition)
            .filter(|p| p.epoch == epoch)
        else {
            return Err(CoordError::ConfigurationChanged {
                table,
                partition,
                epoch,
            }
            .into());
        };
        let seal = json(&PartitionAt {
            table,
            partition,
            at: epoch,
            from: 0,
        });
        let mut sealed = Vec::new();
        for f in &config.followers {
            match self.replica_call(*f, SEAL_ACTION, seal.clone()).await {
                Ok(answer) => match <[u8; 8]>::try_from(answer.as_slice()) {
                    Ok(b) => sealed.push((*f, u64::from_le_bytes(b))),
                    Err(_) => tracing::warn!(node = f, "a seal answered no log position"),
                },
                Err(status) => {
                    tracing::warn!(node = f, table, partition, error = %status.message(), "a follower could not be sealed")
                }
            }
        }
        // The longest log; among equals, the lowest id.
        let Some(&(leader, last)) = sealed
            .iter()
            .max_by_key(|(node, position)| (*position, std::cmp::Reverse(*node)))
        else {
            return Err(ExecError::PartitionUnavailable {
                table: table.to_string(),
                partition,
                node: config.leader,
                reason: "is down and no follower of it answers".into(),
            });
        };
        let settle = json(&PartitionAt {
            table,
            partition,
            at: last,
            from: 0,
        });
        if let Err(status) = self.replica_call(leader, SETTLE_ACTION, settle).await {
            self.unseal(table, partition, epoch, &sealed).await;
            return Err(ExecError::PartitionUnavailable {
                table: table.to_string(),
                partition,
                node: config.leader,
                reason: format!(
                    "is down and its follower {leader} could not settle its prepared parts: {}",
                    status.message()
                ),
            });
        }
        let mut followers = Vec::new();
        for (node, position) in &sealed {
            if *node == leader {
                continue;
            }
            let catch_up = json(&PartitionAt {
                table,
                partition,
                at: *position,
                from: leader,
            });
            match self.replica_call(*node, CATCH_UP_ACTION, catch_up).await {
                Ok(_) => followers.push(*node),
                Err(status) => {
                    tracing::warn!(node, table, partition, error = %status.message(), "a follower could not catch up; it leaves the configuration")
                }
            }
        }
        let meta = self.meta.clone();
        let kept = followers.clone();
        let promoted = blocking(move || {
            meta.update(&mut |c| c.promote(table, partition, epoch, leader, &kept))?;
            Ok(())
        })
        .await;
        if let Err(e) = promoted {
            self.unseal(table, partition, epoch, &sealed).await;
            return Err(e);
        }
        crate::replica_status::configuration_changed();
        Ok(leader)
    }

    /// Lets the old configuration go on, should its leader come back (a failover gave up).
    async fn unseal(&self, table: u32, partition: u32, epoch: u64, sealed: &[(NodeId, u64)]) {
        let unseal = json(&PartitionAt {
            table,
            partition,
            at: epoch,
            from: 0,
        });
        for (node, _) in sealed {
            let _ = self
                .replica_call(*node, UNSEAL_ACTION, unseal.clone())
                .await;
        }
    }

    /// Sends each entry to the followers of its partition's current configuration and waits
    /// for them all (see the module comment).
    async fn send_entries(
        self: Arc<Self>,
        entries: Vec<ReplicatedEntry>,
    ) -> Result<Vec<Sent>, Unsent> {
        let local = self.local_node();
        let mut sends = Vec::new();
        let mut sent = Vec::new();
        for e in &entries {
            let config = self
                .configuration(e.table, e.partition)
                .filter(|p| p.leader == local)
                .ok_or_else(|| {
                    Unsent::Deposed(format!(
                        "node {local} no longer leads partition {} of table {}",
                        e.partition, e.table
                    ))
                })?;
            let header = json(&EntryHeader {
                table: e.table,
                partition: e.partition,
                position: e.position,
                epoch: config.epoch,
                leader: local,
                prepared: e.prepared.clone(),
                forget: false,
            });
            let body = frame(&header, &e.writes);
            for f in &config.followers {
                let (this, body, follower, at) = (self.clone(), body.clone(), *f, sent.len());
                sends.push(async move {
                    let answer = tokio::time::timeout(
                        FOLLOWER_PATIENCE,
                        this.replica_call(follower, REPLICATE_ACTION, body),
                    )
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
                    (at, follower, answer)
                });
            }
            sent.push(Sent {
                table: e.table,
                partition: e.partition,
                position: e.position,
                failed: Vec::new(),
                taken: false,
            });
        }
        let mut stale = None;
        for (at, follower, answer) in futures::future::join_all(sends).await {
            let s = &mut sent[at];
            match answer {
                Ok(_) => {
                    s.taken = true;
                    if s.position > 0 {
                        self.acknowledged
                            .record(s.table, s.partition, follower, s.position);
                    }
                }
                Err(status) if status.code() == Code::FailedPrecondition => {
                    stale = Some(format!(
                        "node {follower} follows another configuration of partition {} of table {}: {}",
                        s.partition,
                        s.table,
                        status.message()
                    ));
                }
                Err(status) => {
                    tracing::warn!(node = follower, table = s.table, partition = s.partition, error = %status.message(), "a follower did not take a log entry; it leaves the configuration");
                    s.failed.push(follower);
                }
            }
        }
        match stale {
            Some(why) => Err(Unsent::Stale {
                why,
                taken: sent.iter().any(|s| s.taken),
            }),
            None => Ok(sent),
        }
    }
}

/// What one partition's entry met at its followers.
struct Sent {
    table: u32,
    partition: u32,
    /// The entry's log position (0 for a prepared copy).
    position: u64,
    /// Followers that did not take it.
    failed: Vec<NodeId>,
    /// Whether any follower took it.
    taken: bool,
}

/// Why a commit's entries did not reach every follower of a configuration this node leads.
enum Unsent {
    /// This node no longer leads one of the partitions.
    Deposed(String),
    /// A follower knows a newer configuration of a partition (one was removed or left): the
    /// entries go again to the followers of the newer one. `taken`: other followers took some.
    Stale { why: String, taken: bool },
}

/// How many times a commit's entries are sent again to a configuration that changed under
/// them.
const STALE_RETRIES: usize = 3;

/// The storage's [`Replicator`] on a cluster node (see the module comment).
pub struct ClusterReplicator {
    remote: Arc<RemoteFragments>,
    runtime: tokio::runtime::Handle,
}

impl ClusterReplicator {
    pub fn new(remote: Arc<RemoteFragments>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(ClusterReplicator { remote, runtime })
    }
}

impl Replicator for ClusterReplicator {
    fn replicates(&self, table: u32, partition: u32) -> bool {
        let local = self.remote.local_node();
        self.remote
            .configuration(table, partition)
            .is_some_and(|p| !p.followers.is_empty() || p.leader != local)
    }

    fn leadership_certain(&self) -> bool {
        self.remote.cluster.leadership_certain()
    }

    fn leads(&self, table: u32, partition: u32) -> bool {
        let local = self.remote.local_node();
        self.remote
            .configuration(table, partition)
            .is_some_and(|p| p.leader == local)
    }

    fn forget_prepared(&self, id: &str, partitions: &[(u32, u32)]) {
        let local = self.remote.local_node();
        for (table, partition) in partitions {
            let Some(config) = self
                .remote
                .configuration(*table, *partition)
                .filter(|p| p.leader == local)
            else {
                continue;
            };
            let header = json(&EntryHeader {
                table: *table,
                partition: *partition,
                position: 0,
                epoch: config.epoch,
                leader: local,
                prepared: Some(id.to_string()),
                forget: true,
            });
            let body = frame(&header, &[]);
            for f in config.followers {
                let (remote, body) = (self.remote.clone(), body.clone());
                self.runtime.spawn(async move {
                    if let Err(status) = remote.replica_call(f, REPLICATE_ACTION, body).await {
                        tracing::debug!(node = f, error = %status.message(), "a follower keeps a rolled back part's copy until a failover settles it");
                    }
                });
            }
        }
    }

    fn replicate(&self, entries: &[ReplicatedEntry]) -> Result<(), ReplicationFailure> {
        let local = self.remote.local_node();
        let mut tries = 0;
        // Once a follower took an entry, a follower of a later configuration may lead with it:
        // the commit can no longer be called refused (40001, nothing applied), only unconfirmed.
        let mut taken_before = false;
        let sent = loop {
            tries += 1;
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let (remote, copy) = (self.remote.clone(), entries.to_vec());
            // Spawned and waited for here: commits run on blocking threads, never the runtime's.
            self.runtime.spawn(async move {
                let _ = tx.send(remote.send_entries(copy).await);
            });
            let answer = rx
                .recv()
                .map_err(|_| ReplicationFailure::Refused("the node is shutting down".into()))?;
            match answer {
                Ok(sent) => break sent,
                Err(Unsent::Deposed(why)) if taken_before => {
                    return Err(ReplicationFailure::Unconfirmed(why))
                }
                Err(Unsent::Deposed(why)) => return Err(ReplicationFailure::Refused(why)),
                // Followers that took the entries take them again as already applied.
                Err(Unsent::Stale { taken, .. }) if tries < STALE_RETRIES => {
                    taken_before |= taken;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(Unsent::Stale { why, .. }) => return Err(ReplicationFailure::Unconfirmed(why)),
            }
        };
        let any_taken = taken_before || sent.iter().any(|s| s.taken);
        for s in sent.into_iter().filter(|s| !s.failed.is_empty()) {
            let (table, partition, failed) = (s.table, s.partition, s.failed);
            // Without waiting for every node to apply it: the one dropped may be dead but not
            // yet down, and the others check the epoch of each entry they get.
            let dropped = self.remote.meta.update_without_waiting(&mut |c| {
                c.drop_followers(table, partition, local, &failed)
            });
            match dropped {
                Ok(_) => {
                    crate::replica_status::configuration_changed();
                    tracing::warn!(
                        table,
                        partition,
                        ?failed,
                        "followers left the configuration"
                    )
                }
                Err(CoordError::LeaderChanged { .. }) => {
                    let why = format!(
                        "node {local} no longer leads partition {partition} of table {table}"
                    );
                    return Err(match any_taken {
                        true => ReplicationFailure::Unconfirmed(why),
                        false => ReplicationFailure::Refused(why),
                    });
                }
                Err(e) if any_taken => {
                    return Err(ReplicationFailure::Unconfirmed(format!(
                        "followers {failed:?} did not take the commit and could not be removed: {e}"
                    )))
                }
                Err(e) => {
                    return Err(ReplicationFailure::Refused(format!(
                        "followers {failed:?} did not take the commit and could not be removed: {e}"
                    )))
                }
            }
        }
        Ok(())
    }
}

impl FragmentService {
    /// A follower's (and the coordinator's) side of replication: `replicate`, `seal`,
    /// `unseal`, `log_after` and `catch_up`; `None` for other actions.
    pub(crate) async fn replication_action(
        &self,
        action: &Action,
    ) -> Result<Option<Vec<u8>>, Status> {
        let kind = action.r#type.as_str();
        if kind == REPLICATE_ACTION {
            return self
                .take_entry(&action.body)
                .await
                .map(|()| Some(Vec::new()));
        }
        if ![
            SEAL_ACTION,
            UNSEAL_ACTION,
            LOG_AFTER_ACTION,
            CATCH_UP_ACTION,
            SETTLE_ACTION,
        ]
        .contains(&kind)
        {
            return Ok(None);
        }
        let r: PartitionAt =
            serde_json::from_slice(&action.body).map_err(|_| malformed("partition"))?;
        let store = self.store.clone();
        let answer = match kind {
            SEAL_ACTION => {
                let position =
                    run(move || store.seal_partition(r.table, r.partition, r.at)).await?;
                position.to_le_bytes().to_vec()
            }
            UNSEAL_ACTION => {
                store.unseal_partition(r.table, r.partition);
                Vec::new()
            }
            LOG_AFTER_ACTION => {
                let entries =
                    run(move || store.log_entries_after(r.table, r.partition, r.at, CATCH_UP_PAGE))
                        .await?;
                encode_entries(&entries)
            }
            SETTLE_ACTION => {
                let position = self.settle_prepared(r).await?;
                position.to_le_bytes().to_vec()
            }
            _ => {
                let position = self.catch_up_from(r).await?;
                position.to_le_bytes().to_vec()
            }
        };
        Ok(Some(answer))
    }

    /// Takes an entry from the leader, if it leads the configuration this node follows.
    async fn take_entry(&self, body: &[u8]) -> Result<(), Status> {
        let (header, writes) = unframe(body).ok_or_else(|| malformed("log entry"))?;
        let header: EntryHeader =
            serde_json::from_slice(header).map_err(|_| malformed("log entry header"))?;
        let deadline = tokio::time::Instant::now() + CATALOG_PATIENCE;
        let config = loop {
            let config = self.remote.configuration(header.table, header.partition);
            match config {
                Some(c) if c.epoch >= header.epoch => break c,
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(Status::unavailable(format!(
                        "node {} has not seen epoch {} of partition {} of table {}",
                        self.local_node, header.epoch, header.partition, header.table
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        if config.epoch != header.epoch
            || config.leader != header.leader
            || !config.followers.contains(&self.local_node)
        {
            return Err(Status::failed_precondition(format!(
                "node {} does not follow node {} at epoch {} (its configuration is epoch {}, led by node {})",
                self.local_node, header.leader, header.epoch, config.epoch, config.leader
            )));
        }
        let store = self.store.clone();
        if header.forget {
            let id = header.prepared.unwrap_or_default();
            return run(move || {
                store.forget_prepared_copy(header.table, header.partition, &id, header.epoch)
            })
            .await;
        }
        let entry = ReplicatedEntry {
            table: header.table,
            partition: header.partition,
            position: header.position,
            writes: writes.to_vec(),
            prepared: header.prepared,
        };
        run(move || store.apply_replicated(&entry, header.epoch))
            .await
            .map(|_| ())
    }

    /// Copies the log entries after `r.at` from `r.from` until this node has them all; its
    /// last log position.
    async fn catch_up_from(&self, r: PartitionAt) -> Result<u64, Status> {
        // The first request takes this node's last entry again, which must be the same there:
        // a log that diverged (see `Store::catch_up`) is not caught up but copied whole.
        let mut after = r.at.saturating_sub(1);
        loop {
            let ask = json(&PartitionAt {
                table: r.table,
                partition: r.partition,
                at: after,
                from: 0,
            });
            let answer = self
                .remote
                .replica_call(r.from, LOG_AFTER_ACTION, ask)
                .await?;
            let entries = decode_entries(r.table, r.partition, &answer)
                .ok_or_else(|| malformed("log entries"))?;
            let Some(last) = entries.last().map(|e| e.position) else {
                // The new leader settled the prepared copies: this node's are of no use.
                let store = self.store.clone();
                run(move || store.drop_prepared_copies(r.table, r.partition)).await?;
                return Ok(after.max(r.at));
            };
            let store = self.store.clone();
            run(move || store.catch_up(&entries)).await?;
            after = last;
        }
    }
}

impl FragmentService {
    /// A follower's side of a move to it: once the leader has closed the partition and its
    /// writers are done, the follower copies the entries it lacks from the leader's log (at
    /// most the last commit's) rather than the whole partition. How many it copied.
    pub(crate) async fn catch_up_for_move(
        &self,
        r: &crate::partition_moves::PartitionRef,
    ) -> Result<u64, Status> {
        // Only the closing matters: the copy it offers is not read.
        drop(
            self.remote
                .close_for_copy(r)
                .await
                .map_err(|e| self.exec_status(e))?,
        );
        let store = self.store.clone();
        let (table, partition) = (r.table_id, r.partition);
        let at = run(move || store.partition_log_position(table, partition)).await?;
        let last = self
            .catch_up_from(PartitionAt {
                table,
                partition,
                at,
                from: r.from,
            })
            .await?;
        Ok(last - at)
    }

    /// The follower chosen to lead settles its prepared copies of a partition: each
    /// transaction's recorded decision (`abort` proposed where none exists) says whether the
    /// copy joins the log. Its last log position.
    async fn settle_prepared(&self, r: PartitionAt) -> Result<u64, Status> {
        let store = self.store.clone();
        let ids = run(move || store.prepared_copies(r.table, r.partition)).await?;
        let mut outcomes = std::collections::HashMap::new();
        for id in ids {
            let (cluster, asked) = (self.remote.cluster.clone(), id.clone());
            let commit = tokio::task::spawn_blocking(move || cluster.decide(&asked, false))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::unavailable(e.to_string()))?;
            tracing::warn!(
                id,
                commit,
                table = r.table,
                partition = r.partition,
                "settled a prepared part of a failed leader"
            );
            outcomes.insert(id, commit);
        }
        let store = self.store.clone();
        run(move || store.settle_prepared_copies(r.table, r.partition, &outcomes)).await
    }
}

/// Runs storage work off the runtime; a sealed partition or a deposed sender answers
/// `FAILED_PRECONDITION`, other failures `UNAVAILABLE` (the leader drops the follower).
async fn run<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e @ StorageError::PartitionSealed { .. })) => {
            Err(Status::failed_precondition(e.to_string()))
        }
        Ok(Err(e)) => Err(Status::unavailable(e.to_string())),
        Err(e) => Err(Status::internal(e.to_string())),
    }
}

/// Keeps the type in the public API small: the node installs it on its store.
pub fn replicate_through(store: &Store, remote: Arc<RemoteFragments>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        store.set_replicator(ClusterReplicator::new(remote, runtime));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_truncated_bytes_are_refused() {
        let entries = vec![
            ReplicatedEntry {
                table: 3,
                partition: 1,
                position: 7,
                writes: vec![1, 2, 3],
                prepared: None,
            },
            ReplicatedEntry {
                table: 3,
                partition: 1,
                position: 8,
                writes: vec![],
                prepared: None,
            },
        ];
        let bytes = encode_entries(&entries);
        assert_eq!(decode_entries(3, 1, &bytes).unwrap(), entries);
        assert!(decode_entries(3, 1, &bytes[..bytes.len() - 1]).is_none());
        assert!(decode_entries(3, 1, &bytes[..10]).is_none());
    }
}
