//! The node's cache of the cluster's keys: built from one read of the whole prefix, then kept
//! current by the watch's events. Pure bookkeeping, no I/O, so it is tested on its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::keys::{KeyKind, Keys};
use crate::{Catalog, NodeId, NodeInfo, NodeStatus};

/// One key's change, as read or watched.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        create_revision: i64,
        mod_revision: i64,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl Change {
    /// A key as etcd returned it, read or watched.
    pub fn put(kv: &etcd_client::KeyValue) -> Change {
        Change::Put {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    pub catalog: Arc<Catalog>,
    /// The etcd revision that wrote `catalog` (0: none read yet).
    pub catalog_revision: i64,
    pub members: BTreeMap<NodeId, NodeInfo>,
    pub live: BTreeMap<NodeId, NodeInfo>,
    pub applied: BTreeMap<NodeId, i64>,
    /// The coordinator's record of nodes down: since when, in ms since the epoch.
    pub down: BTreeMap<NodeId, u64>,
    /// Election candidates by key: (create revision, node id). The one created first leads.
    pub candidates: BTreeMap<Vec<u8>, (i64, NodeId)>,
}

impl ClusterState {
    /// Applies one change. A catalog older than the cached one is ignored, so the cache never
    /// goes back (a node's own write can reach the cache before its watch event does).
    pub fn apply(&mut self, keys: &Keys, change: &Change) {
        match change {
            Change::Put {
                key,
                value,
                create_revision,
                mod_revision,
            } => match keys.kind(key) {
                KeyKind::Catalog => {
                    if *mod_revision <= self.catalog_revision {
                        return;
                    }
                    match serde_json::from_slice::<Catalog>(value) {
                        Ok(catalog) => {
                            self.catalog = Arc::new(catalog);
                            self.catalog_revision = *mod_revision;
                        }
                        Err(e) => tracing::error!(error = %e, "unreadable catalog in etcd"),
                    }
                }
                KeyKind::Member(id) => {
                    if let Ok(info) = serde_json::from_slice(value) {
                        self.members.insert(id, info);
                    }
                }
                KeyKind::Live(id) => {
                    if let Ok(info) = serde_json::from_slice::<NodeInfo>(value) {
                        self.members.entry(id).or_insert_with(|| info.clone());
                        self.live.insert(id, info);
                    }
                }
                KeyKind::Applied(id) => {
                    if let Some(rev) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                    {
                        self.applied.insert(id, rev);
                    }
                }
                KeyKind::Down(id) => {
                    if let Some(since) =
                        std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                    {
                        self.down.insert(id, since);
                    }
                }
                KeyKind::Candidate => {
                    if let Some(id) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                        self.candidates.insert(key.clone(), (*create_revision, id));
                    }
                }
                KeyKind::Other => {}
            },
            Change::Delete { key } => match keys.kind(key) {
                KeyKind::Live(id) => {
                    self.live.remove(&id);
                }
                KeyKind::Applied(id) => {
                    self.applied.remove(&id);
                }
                KeyKind::Member(id) => {
                    self.members.remove(&id);
                }
                KeyKind::Down(id) => {
                    self.down.remove(&id);
                }
                KeyKind::Candidate => {
                    self.candidates.remove(key);
                }
                KeyKind::Catalog | KeyKind::Other => {}
            },
        }
    }

    /// The elected coordinator: the candidate whose key was created first (etcd's rule).
    pub fn coordinator(&self) -> Option<NodeId> {
        self.candidates.values().min().map(|(_, id)| *id)
    }

    /// Whether every live node has applied the catalog of `revision`.
    pub fn all_live_applied(&self, revision: i64) -> bool {
        self.live
            .keys()
            .all(|id| self.applied.get(id).is_some_and(|r| *r >= revision))
    }

    /// The live nodes that have not applied `revision` yet.
    pub fn lagging(&self, revision: i64) -> Vec<NodeId> {
        self.live
            .keys()
            .filter(|id| self.applied.get(id).is_none_or(|r| *r < revision))
            .copied()
            .collect()
    }

    /// What the coordinator should record now: nodes to mark down (their lease is gone, no
    /// record yet) and nodes to mark up again (live, but recorded down).
    pub fn membership_changes(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let went_down = self
            .members
            .keys()
            .filter(|id| !self.live.contains_key(id) && !self.down.contains_key(id))
            .copied()
            .collect();
        let came_back = self
            .down
            .keys()
            .filter(|id| self.live.contains_key(id))
            .copied()
            .collect();
        (went_down, came_back)
    }

    pub fn statuses(&self) -> Vec<NodeStatus> {
        let coordinator = self.coordinator();
        self.members
            .values()
            .map(|info| NodeStatus {
                info: self.live.get(&info.id).unwrap_or(info).clone(),
                live: self.live.contains_key(&info.id),
                coordinator: coordinator == Some(info.id),
                catalog_revision: self.applied.get(&info.id).copied().unwrap_or(0),
                down_since_ms: self.down.get(&info.id).copied(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: String, value: &str, create: i64, revision: i64) -> Change {
        Change::Put {
            key: key.into_bytes(),
            value: value.as_bytes().to_vec(),
            create_revision: create,
            mod_revision: revision,
        }
    }

    fn info(id: NodeId) -> String {
        serde_json::to_string(&NodeInfo {
            id,
            sql_address: format!("127.0.0.{id}:5432"),
            flight_address: format!("127.0.0.{id}:5433"),
            started_ms: 0,
        })
        .unwrap()
    }

    #[test]
    fn membership_liveness_and_the_coordinator_follow_the_keys() {
        let keys = Keys::new("t");
        let mut s = ClusterState::default();
        for id in [1, 2, 3] {
            s.apply(&keys, &put(keys.member(id), &info(id), 1, 1));
            s.apply(&keys, &put(keys.live(id), &info(id), 2, 2));
        }
        let election = keys.election();
        s.apply(&keys, &put(format!("{election}/b"), "2", 10, 10));
        s.apply(&keys, &put(format!("{election}/a"), "3", 11, 11));
        assert_eq!(s.coordinator(), Some(2));

        // Node 2's lease expires: its live key and its candidacy go, node 3 leads.
        s.apply(
            &keys,
            &Change::Delete {
                key: keys.live(2).into_bytes(),
            },
        );
        s.apply(
            &keys,
            &Change::Delete {
                key: format!("{election}/b").into_bytes(),
            },
        );
        assert_eq!(s.coordinator(), Some(3));
        let statuses = s.statuses();
        assert_eq!(statuses.len(), 3);
        assert!(!statuses[1].live && statuses[0].live && statuses[2].coordinator);
        assert_eq!(s.membership_changes(), (vec![2], vec![]));

        // The coordinator records it; then node 2 comes back.
        s.apply(&keys, &put(keys.down(2), "1700000000000", 12, 12));
        assert_eq!(s.statuses()[1].down_since_ms, Some(1_700_000_000_000));
        assert_eq!(s.membership_changes(), (vec![], vec![]));
        s.apply(&keys, &put(keys.live(2), &info(2), 13, 13));
        assert_eq!(s.membership_changes(), (vec![], vec![2]));
    }

    #[test]
    fn the_catalog_only_moves_forward_and_acks_count_live_nodes() {
        let keys = Keys::new("t");
        let mut s = ClusterState::default();
        let mut catalog = Catalog {
            version: 5,
            ..Catalog::default()
        };
        let newer = serde_json::to_string(&catalog).unwrap();
        catalog.version = 4;
        let older = serde_json::to_string(&catalog).unwrap();
        s.apply(&keys, &put(keys.catalog(), &newer, 1, 20));
        s.apply(&keys, &put(keys.catalog(), &older, 1, 19));
        assert_eq!((s.catalog.version, s.catalog_revision), (5, 20));

        s.apply(&keys, &put(keys.live(1), &info(1), 1, 1));
        s.apply(&keys, &put(keys.live(2), &info(2), 1, 1));
        s.apply(&keys, &put(keys.applied(1), "20", 1, 21));
        assert!(!s.all_live_applied(20));
        assert_eq!(s.lagging(20), vec![2]);
        // A node that dies no longer holds anyone back.
        s.apply(
            &keys,
            &Change::Delete {
                key: keys.live(2).into_bytes(),
            },
        );
        assert!(s.all_live_applied(20));
    }
}
