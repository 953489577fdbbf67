//! What a leader knows of its followers: the last log position each acknowledged (recorded as
//! entries are replicated, as catch-ups and copies finish), and from it each replica's state
//! and lag, shown by `shoal.replicas` and `/metrics`. Also the count of configuration changes
//! this node made.
//!
//! Known only to the leader, in memory: a node that has just started leading a partition, or
//! restarted, knows nothing of its followers until the next entry it replicates.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use shoal_coord::{Catalog, NodeId};
use shoal_storage::{StorageError, Store};

use crate::RemoteFragments;

static CONFIGURATION_CHANGES: AtomicU64 = AtomicU64::new(0);

/// Partition configuration changes (followers removed or added, promotions, hand-overs, moves)
/// this node recorded in the catalog since it started.
pub fn configuration_changes_total() -> u64 {
    CONFIGURATION_CHANGES.load(Ordering::Relaxed)
}

pub(crate) fn configuration_changed() {
    CONFIGURATION_CHANGES.fetch_add(1, Ordering::Relaxed);
}

/// The last position each follower acknowledged, by partition.
#[derive(Default)]
pub(crate) struct Acknowledged(Mutex<HashMap<(u32, u32), BTreeMap<NodeId, u64>>>);

impl Acknowledged {
    pub(crate) fn record(&self, table: u32, partition: u32, node: NodeId, position: u64) {
        let mut all = self.0.lock();
        let at = all
            .entry((table, partition))
            .or_default()
            .entry(node)
            .or_default();
        *at = (*at).max(position);
    }

    fn get(&self, table: u32, partition: u32, node: NodeId) -> Option<u64> {
        self.0
            .lock()
            .get(&(table, partition))
            .and_then(|p| p.get(&node).copied())
    }
}

/// One copy of a partition this node leads, as `shoal.replicas` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub table_id: u32,
    pub partition: u32,
    pub epoch: u64,
    pub node: NodeId,
    /// `leader`, `follower`, or `copy` (a node copying the partition to become a follower or
    /// its leader).
    pub role: &'static str,
    /// `leading`; `in sync` (it acknowledged the leader's last entry), `behind`, or
    /// `unconfirmed` (nothing acknowledged since this node began leading); `copying`.
    pub state: &'static str,
    /// The leader's log position, or the last one the follower acknowledged.
    pub log_position: Option<u64>,
    /// Entries the follower lacks, as far as the leader knows.
    pub lag: Option<u64>,
}

/// Every copy of every partition `local` leads in `catalog`, with its state and lag;
/// `acknowledged(table, partition, follower)` is the last position that follower acknowledged,
/// if known. A single node calls it with no followers to ask about.
pub fn replica_statuses(
    catalog: &Catalog,
    local: NodeId,
    store: &Store,
    acknowledged: impl Fn(u32, u32, NodeId) -> Option<u64>,
) -> Result<Vec<ReplicaStatus>, StorageError> {
    let mut out = Vec::new();
    for t in catalog.tables.values() {
        for p in t.partitions.iter().filter(|p| p.leader == local) {
            let head = store.partition_log_position(t.id, p.index)?;
            let status = |node, role, state, log_position, lag| ReplicaStatus {
                table_id: t.id,
                partition: p.index,
                epoch: p.epoch,
                node,
                role,
                state,
                log_position,
                lag,
            };
            out.push(status(local, "leader", "leading", Some(head), Some(0)));
            for f in &p.followers {
                let acked = acknowledged(t.id, p.index, *f);
                let state = match acked {
                    Some(a) if a >= head => "in sync",
                    Some(_) => "behind",
                    None => "unconfirmed",
                };
                let lag = acked.map(|a| head.saturating_sub(a));
                out.push(status(*f, "follower", state, acked, lag));
            }
            if let Some(to) = p.moving_to.filter(|to| !p.followers.contains(to)) {
                out.push(status(to, "copy", "copying", None, None));
            }
        }
    }
    Ok(out)
}

impl RemoteFragments {
    /// Every copy of every partition this node leads, with its state and lag.
    pub fn replica_statuses(&self, store: &Store) -> Result<Vec<ReplicaStatus>, StorageError> {
        replica_statuses(&self.meta.catalog(), self.local_node(), store, |t, p, f| {
            self.acknowledged.get(t, p, f)
        })
    }

    /// The largest lag of any follower of a partition this node leads (0 when none lags, or
    /// none is known).
    pub fn largest_replica_lag(&self, store: &Store) -> u64 {
        self.replica_statuses(store)
            .map(|s| s.iter().filter_map(|r| r.lag).max().unwrap_or(0))
            .unwrap_or(0)
    }
}
