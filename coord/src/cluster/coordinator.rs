//! The coordinator: the one node, elected through etcd, that records cluster-wide decisions.
//! Today that is the member list's state (a node whose lease expired is recorded down, with
//! since when; a node that registers again is recorded up); placement moves and replica
//! repairs will be decided here too.
//!
//! Every decision is fenced: it is written in an etcd transaction that compares the create
//! revision of the candidacy key this node won the election with. A coordinator that was
//! paused past its lease (its key expired, another node won) and wakes up with a stale cache
//! finds the comparison false and changes nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{unavailable, EtcdCluster};
use crate::{CoordError, NodeId};

/// The candidacy this node won: its election key and that key's create revision.
#[derive(Debug, Clone)]
pub(super) struct Leadership {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

/// How often the coordinator looks at the member list when nothing changes.
const SWEEP: Duration = Duration::from_secs(1);

impl EtcdCluster {
    /// Runs `ops` atomically if this node still holds the election with the candidacy it won.
    /// Ok(false): it does not (never elected, or deposed), and nothing was written.
    async fn as_coordinator(&self, ops: Vec<TxnOp>) -> Result<bool, CoordError> {
        let Some(won) = self.leadership.lock().clone() else {
            return Ok(false);
        };
        let fence = Compare::create_revision(won.key, CompareOp::Equal, won.create_revision);
        let mut client = self.client.clone();
        let resp = client
            .txn(Txn::new().when([fence]).and_then(ops))
            .await
            .map_err(unavailable)?;
        Ok(resp.succeeded())
    }

    /// Records `node` as down now, as the coordinator does when a lease expires. Ok(false)
    /// when this node is not (or no longer) the coordinator: then nothing is recorded.
    pub fn record_down(self: &Arc<Self>, node: NodeId) -> Result<bool, CoordError> {
        let this = self.clone();
        self.block(async move { this.mark_down(node).await })
    }

    async fn mark_down(&self, node: NodeId) -> Result<bool, CoordError> {
        let since = now_ms().to_string();
        self.as_coordinator(vec![TxnOp::put(self.keys.down(node), since, None)])
            .await
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// While this node believes it coordinates, keeps the recorded member states in line with the
/// leases. The fence, not the belief, decides whether a write lands.
pub(super) async fn coordinate(cluster: Arc<EtcdCluster>) {
    loop {
        let notified = cluster.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if cluster.is_coordinator() {
            let (went_down, came_back) = cluster.state.read().membership_changes();
            for id in went_down {
                match cluster.mark_down(id).await {
                    Ok(true) => tracing::warn!(node = id, "node is down (lease expired)"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot record node down"),
                }
            }
            for id in came_back {
                let ops = vec![TxnOp::delete(cluster.keys.down(id), None)];
                match cluster.as_coordinator(ops).await {
                    Ok(true) => tracing::info!(node = id, "node is up again"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot record node up"),
                }
            }
        }
        let _ = tokio::time::timeout(SWEEP, notified).await;
    }
}
