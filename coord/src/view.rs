//! What a node knows about the cluster it belongs to: its own id, the other nodes, which of
//! them are alive and which one coordinates. Read from a local cache, never waiting on I/O.

use serde::{Deserialize, Serialize};

use crate::{CoordError, NodeId};

/// A node as registered in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Where PostgreSQL clients reach it, `host:port`.
    pub sql_address: String,
    /// Where other nodes send it fragments (Arrow Flight), `host:port`; empty on a single node.
    #[serde(default)]
    pub flight_address: String,
    /// When this run of the node joined (ms since the epoch): a restarted node has a new one,
    /// so the work of its previous run (transactions across nodes) is known to be abandoned.
    #[serde(default)]
    pub started_ms: u64,
}

/// A node as `shoal.nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub info: NodeInfo,
    /// Its lease is alive: it heartbeats and serves.
    pub live: bool,
    /// It holds the coordinator election.
    pub coordinator: bool,
    /// The etcd revision of the newest catalog it has applied (0 on a single node).
    pub catalog_revision: i64,
    /// Since when the coordinator has recorded it down (ms since the epoch), if it has.
    pub down_since_ms: Option<u64>,
}

/// The cluster as this node sees it.
pub trait ClusterView: Send + Sync {
    /// This node's id.
    fn local_node(&self) -> NodeId;

    /// Every node ever registered, live or not, by id.
    fn nodes(&self) -> Vec<NodeStatus>;

    /// Whether this node can be sure that no other node has taken over the partitions its
    /// catalog says it leads: its lease cannot have expired yet (a failover starts only after
    /// it does), and after a lost lease its cache has caught up with etcd. A leader answers
    /// nothing while it cannot be sure. A single node is always sure.
    fn leadership_certain(&self) -> bool {
        true
    }

    /// The token nodes of the cluster show each other on their own connections (empty on a
    /// single node, which has none).
    fn secret(&self) -> &str {
        ""
    }

    /// Records the outcome of the transaction `id`, which wrote on several nodes, unless an
    /// outcome is recorded already, and returns the outcome that holds (`true`: commit). The
    /// node that runs the commit proposes `commit` once every part is prepared; a node holding
    /// a prepared part whose commit never came proposes `abort`: whichever comes first decides.
    fn decide(&self, id: &str, commit: bool) -> Result<bool, CoordError> {
        let _ = (id, commit);
        Err(CoordError::Unavailable(
            "a single node has no transactions across nodes".into(),
        ))
    }

    /// Leaves the cluster now, as a node that stops on purpose: the others see it down at
    /// once instead of after its lease runs out.
    fn leave(&self) {}

    /// Drops the recorded outcome of `id` once every part of it has applied the outcome.
    fn forget_decision(&self, id: &str) -> Result<(), CoordError> {
        let _ = id;
        Ok(())
    }

    /// Every recorded outcome: the transaction's id and whether it commits.
    fn decisions(&self) -> Result<Vec<(String, bool)>, CoordError> {
        Ok(Vec::new())
    }

    /// The ids of the live nodes, ascending: where new partitions may be placed.
    fn live_nodes(&self) -> Vec<NodeId> {
        self.nodes()
            .into_iter()
            .filter(|n| n.live)
            .map(|n| n.info.id)
            .collect()
    }
}

/// A node alone, on the embedded metadata store: it is node 1, always live, its own coordinator.
pub struct SingleNode {
    pub sql_address: String,
}

/// The id of the one node of single-node mode.
pub const SINGLE_NODE_ID: NodeId = 1;

impl ClusterView for SingleNode {
    fn local_node(&self) -> NodeId {
        SINGLE_NODE_ID
    }

    fn nodes(&self) -> Vec<NodeStatus> {
        vec![NodeStatus {
            info: NodeInfo {
                id: SINGLE_NODE_ID,
                sql_address: self.sql_address.clone(),
                flight_address: String::new(),
                started_ms: 0,
            },
            live: true,
            coordinator: true,
            catalog_revision: 0,
            down_since_ms: None,
        }]
    }
}
