//! Where a cluster keeps its metadata in etcd. Everything lives under `/shoal/<cluster>/`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `catalog` | the catalog document (JSON) | — |
//! | `next_node_id` | the next node id to hand out | — |
//! | `secret` | the token nodes show each other on their Flight connections | — |
//! | `members/<id>` | [`NodeInfo`](crate::NodeInfo) of every node that ever joined | — |
//! | `nodes/<id>` | the same, while the node is alive | the node's |
//! | `applied/<id>` | the catalog revision the node has applied | the node's |
//! | `down/<id>` | since when (ms since the epoch) the coordinator has recorded the node down | — |
//! | `election/coordinator/…` | etcd's election keys; nothing else is written under it | candidates' |
//! | `locks/ddl/…` | etcd's lock keys serializing catalog changes | the holder's |
//! | `txns/<id>` | `commit` or `abort`: the decision of a transaction spanning nodes | — |

use crate::NodeId;

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// What a key under the cluster's prefix is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Catalog,
    Member(NodeId),
    Live(NodeId),
    Applied(NodeId),
    Down(NodeId),
    Candidate,
    Other,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            prefix: format!("/shoal/{cluster}/"),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn catalog(&self) -> String {
        format!("{}catalog", self.prefix)
    }

    pub fn secret(&self) -> String {
        format!("{}secret", self.prefix)
    }

    pub fn next_node_id(&self) -> String {
        format!("{}next_node_id", self.prefix)
    }

    pub fn member(&self, id: NodeId) -> String {
        format!("{}members/{id}", self.prefix)
    }

    pub fn live(&self, id: NodeId) -> String {
        format!("{}nodes/{id}", self.prefix)
    }

    pub fn applied(&self, id: NodeId) -> String {
        format!("{}applied/{id}", self.prefix)
    }

    pub fn down(&self, id: NodeId) -> String {
        format!("{}down/{id}", self.prefix)
    }

    /// The election's name: etcd puts one key per candidate below it.
    pub fn election(&self) -> String {
        format!("{}election/coordinator", self.prefix)
    }

    /// Where the outcome of the transaction `id`, which spans nodes, is decided.
    pub fn decision(&self, id: &str) -> String {
        format!("{}txns/{id}", self.prefix)
    }

    pub fn ddl_lock(&self) -> String {
        format!("{}locks/ddl", self.prefix)
    }

    pub fn kind(&self, key: &[u8]) -> KeyKind {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.prefix.as_str()))
        else {
            return KeyKind::Other;
        };
        let id = |s: &str| s.parse::<NodeId>().ok();
        if rest == "catalog" {
            return KeyKind::Catalog;
        }
        if let Some(n) = rest.strip_prefix("members/").and_then(id) {
            return KeyKind::Member(n);
        }
        if let Some(n) = rest.strip_prefix("nodes/").and_then(id) {
            return KeyKind::Live(n);
        }
        if let Some(n) = rest.strip_prefix("applied/").and_then(id) {
            return KeyKind::Applied(n);
        }
        if let Some(n) = rest.strip_prefix("down/").and_then(id) {
            return KeyKind::Down(n);
        }
        if rest.starts_with("election/coordinator/") {
            return KeyKind::Candidate;
        }
        KeyKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_recognized_only_under_their_own_cluster() {
        let keys = Keys::new("blue");
        assert_eq!(keys.kind(keys.catalog().as_bytes()), KeyKind::Catalog);
        assert_eq!(keys.kind(keys.live(7).as_bytes()), KeyKind::Live(7));
        assert_eq!(keys.kind(keys.member(2).as_bytes()), KeyKind::Member(2));
        assert_eq!(keys.kind(keys.applied(3).as_bytes()), KeyKind::Applied(3));
        assert_eq!(keys.kind(keys.down(4).as_bytes()), KeyKind::Down(4));
        let candidate = format!("{}/694d7a", keys.election());
        assert_eq!(keys.kind(candidate.as_bytes()), KeyKind::Candidate);
        assert_eq!(keys.kind(b"/shoal/blue/nodes/x"), KeyKind::Other);
        assert_eq!(
            keys.kind(Keys::new("green").catalog().as_bytes()),
            KeyKind::Other
        );
        assert_eq!(keys.kind(b"/shoal/blue/catalogue"), KeyKind::Other);
    }
}
