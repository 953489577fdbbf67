//! Partition configurations: where a partition's followers are placed, and the catalog
//! steps that change a configuration (each bumps the partition's epoch, which fences the
//! writes and fragments of every earlier configuration).
//!
//! A configuration is the partition's leader, its followers and its epoch. It changes only
//! through [`crate::MetaStore::update`], a compare-and-swap of the catalog in etcd, and each
//! step here first checks that the configuration is still the one its caller acted on:
//! - a leader drops a follower that stopped taking its log ([`Catalog::drop_followers`]),
//!   before it acknowledges anything more;
//! - the coordinator promotes a follower of the last configuration when the leader is down
//!   ([`Catalog::promote`]);
//! - the coordinator adds a follower that copied the partition ([`Catalog::add_follower`]),
//!   where a partition has fewer copies than its table asks for ([`Catalog::missing_replica`]);
//! - a node shutting down hands its partitions to their followers ([`Catalog::hand_over`])
//!   and leaves the configurations it follows ([`Catalog::leave_followers`]).

use crate::{Catalog, CoordError, NodeId, PartitionDef, PartitionMove};

/// Copies of each partition (the leader's included) that a cluster of at least as many
/// nodes keeps, unless the node is started with another replication factor.
pub const DEFAULT_REPLICAS: usize = 3;

/// Followers for a partition led by `leader`: the nodes after it in `placement` (ascending
/// ids, wrapping around), so that partitions led by one node share their followers and
/// co-located tables keep theirs together; `replicas - 1` of them, at most every other node.
pub fn followers_for(leader: NodeId, placement: &[NodeId], replicas: usize) -> Vec<NodeId> {
    let Some(at) = placement.iter().position(|n| *n == leader) else {
        return Vec::new();
    };
    let wanted = replicas.saturating_sub(1).min(placement.len() - 1);
    (1..=wanted)
        .map(|i| placement[(at + i) % placement.len()])
        .collect()
}

/// A partition that lacks a copy, and the live node to hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRepair {
    pub table_id: u32,
    pub partition: u32,
    pub leader: NodeId,
    pub epoch: u64,
    pub to: NodeId,
}

impl ReplicaRepair {
    /// The catalog marks the partition moving to the new follower while it copies it, as for
    /// a move ([`Catalog::start_move`]): its leader takes no writes meanwhile, and a copy left
    /// unfinished by a coordinator that died is given up by the next one like a move.
    pub fn as_move(&self) -> PartitionMove {
        PartitionMove {
            table_id: self.table_id,
            partition: self.partition,
            from: self.leader,
            to: self.to,
            epoch: self.epoch,
        }
    }
}

impl Catalog {
    /// The first partition (by table id, then index) whose live leader keeps fewer copies than
    /// its table asks for (at most one per live node), with the live node after the leader
    /// that holds none; `None` when every partition has its copies, or a move is under way.
    pub fn missing_replica(&self, live: &[NodeId]) -> Option<ReplicaRepair> {
        let partitions = self.tables.values().flat_map(|t| &t.partitions);
        if partitions.clone().any(|p| p.moving_to.is_some()) {
            return None;
        }
        let mut tables: Vec<_> = self.tables.values().collect();
        tables.sort_by_key(|t| t.id);
        tables.iter().find_map(|t| {
            let wanted = t.replicas.min(live.len());
            t.partitions.iter().find_map(|p| {
                if !live.contains(&p.leader) || 1 + p.followers.len() >= wanted {
                    return None;
                }
                let to = followers_for(p.leader, live, live.len())
                    .into_iter()
                    .find(|n| !p.followers.contains(n))?;
                Some(ReplicaRepair {
                    table_id: t.id,
                    partition: p.index,
                    leader: p.leader,
                    epoch: p.epoch,
                    to,
                })
            })
        })
    }

    /// Hands the partition `from` leads at `epoch` to its follower `to`, without `from`
    /// (which is shutting down, its writes drained).
    pub fn hand_over(
        &mut self,
        table_id: u32,
        partition: u32,
        epoch: u64,
        from: NodeId,
        to: NodeId,
    ) -> Result<(), CoordError> {
        let p = self.configuration_at(table_id, partition, epoch)?;
        if p.leader != from || !p.followers.contains(&to) {
            return Err(CoordError::ConfigurationChanged {
                table: table_id,
                partition,
                epoch,
            });
        }
        p.leader = to;
        p.followers.retain(|f| *f != to);
        p.epoch += 1;
        Ok(())
    }

    /// Removes `node` from every configuration it follows (it is leaving), each with a new
    /// epoch.
    pub fn leave_followers(&mut self, node: NodeId) {
        for p in self
            .tables
            .values_mut()
            .flat_map(|t| t.partitions.iter_mut())
        {
            if p.followers.contains(&node) {
                p.followers.retain(|f| *f != node);
                p.epoch += 1;
            }
        }
    }

    fn partition_mut(&mut self, table_id: u32, partition: u32) -> Option<&mut PartitionDef> {
        self.tables
            .get_mut(&table_id)
            .and_then(|t| t.partitions.get_mut(partition as usize))
    }

    /// The partition `partition` of table `table_id`, if it is still at `epoch`.
    fn configuration_at(
        &mut self,
        table_id: u32,
        partition: u32,
        epoch: u64,
    ) -> Result<&mut PartitionDef, CoordError> {
        self.partition_mut(table_id, partition)
            .filter(|p| p.epoch == epoch)
            .ok_or(CoordError::ConfigurationChanged {
                table: table_id,
                partition,
                epoch,
            })
    }

    /// Removes `followers` from the configuration of a partition `leader` still leads, with a
    /// new epoch when any was there. Any epoch will do: followers that did not take the
    /// leader's entries must go whatever else changed meanwhile.
    pub fn drop_followers(
        &mut self,
        table_id: u32,
        partition: u32,
        leader: NodeId,
        followers: &[NodeId],
    ) -> Result<(), CoordError> {
        let p = self
            .partition_mut(table_id, partition)
            .filter(|p| p.leader == leader)
            .ok_or(CoordError::LeaderChanged {
                table: table_id,
                partition,
                leader,
            })?;
        let before = p.followers.len();
        p.followers.retain(|f| !followers.contains(f));
        if p.followers.len() < before {
            p.epoch += 1;
        }
        Ok(())
    }

    /// Makes `leader`, a follower at `epoch`, the partition's leader, with `followers` (the
    /// other followers that hold its log).
    pub fn promote(
        &mut self,
        table_id: u32,
        partition: u32,
        epoch: u64,
        leader: NodeId,
        followers: &[NodeId],
    ) -> Result<(), CoordError> {
        let p = self.configuration_at(table_id, partition, epoch)?;
        if !p.followers.contains(&leader) || followers.iter().any(|f| !p.followers.contains(f)) {
            return Err(CoordError::ConfigurationChanged {
                table: table_id,
                partition,
                epoch,
            });
        }
        p.leader = leader;
        p.followers = followers.iter().copied().filter(|f| *f != leader).collect();
        p.epoch += 1;
        p.moving_to = None;
        Ok(())
    }

    /// Adds `r.to`, which copied the partition while it was marked moving there (see
    /// [`ReplicaRepair::as_move`]), as a follower; the partition takes writes again.
    pub fn add_follower(&mut self, r: &ReplicaRepair) -> Result<(), CoordError> {
        let p = self.configuration_at(r.table_id, r.partition, r.epoch)?;
        if p.leader != r.leader || p.moving_to != Some(r.to) {
            return Err(CoordError::ConfigurationChanged {
                table: r.table_id,
                partition: r.partition,
                epoch: r.epoch,
            });
        }
        p.moving_to = None;
        if !p.followers.contains(&r.to) {
            p.followers.push(r.to);
        }
        p.epoch += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_are_the_next_nodes_after_the_leader() {
        assert_eq!(followers_for(2, &[1, 2, 3, 4], 3), vec![3, 4]);
        assert_eq!(followers_for(4, &[1, 2, 3, 4], 3), vec![1, 2]);
        assert_eq!(followers_for(1, &[1, 2], 3), vec![2]);
        assert_eq!(followers_for(1, &[1], 3), Vec::<NodeId>::new());
        assert_eq!(followers_for(1, &[1, 2, 3], 1), Vec::<NodeId>::new());
        assert_eq!(followers_for(5, &[1, 2, 3], 3), Vec::<NodeId>::new());
    }

    #[test]
    fn configuration_changes_check_the_epoch_they_acted_on() {
        let mut c = Catalog::default();
        c.create_schema("public").ok();
        let table = crate::catalog::tests::table("t");
        let id = c.create_table(table, 1, &[1, 2, 3], 3).unwrap();
        let p = |c: &Catalog| c.table_by_id(id).unwrap().partitions[0].clone();
        assert_eq!(
            (p(&c).leader, p(&c).followers.clone(), p(&c).epoch),
            (1, vec![2, 3], 1)
        );
        c.drop_followers(id, 0, 1, &[3]).unwrap();
        assert_eq!((p(&c).followers.clone(), p(&c).epoch), (vec![2], 2));
        // Only its leader drops followers; dropping one already gone changes nothing.
        assert!(c.drop_followers(id, 0, 2, &[3]).is_err());
        c.drop_followers(id, 0, 1, &[3]).unwrap();
        assert_eq!(p(&c).epoch, 2);
        // A step decided on the old configuration changes nothing.
        assert!(matches!(
            c.promote(id, 0, 1, 2, &[]),
            Err(CoordError::ConfigurationChanged { .. })
        ));
        let back = ReplicaRepair {
            table_id: id,
            partition: 0,
            leader: 1,
            epoch: 2,
            to: 3,
        };
        // A copy is added only while the partition is marked moving to it.
        assert!(c.add_follower(&back).is_err());
        c.start_move(&back.as_move()).unwrap();
        c.add_follower(&back).unwrap();
        assert_eq!(p(&c).moving_to, None);
        c.promote(id, 0, 3, 2, &[3]).unwrap();
        assert_eq!(
            (p(&c).leader, p(&c).followers.clone(), p(&c).epoch),
            (2, vec![3], 4)
        );
        // Only a follower of the configuration can be promoted.
        assert!(c.promote(id, 0, 4, 1, &[]).is_err());
        c.hand_over(id, 0, 4, 2, 3).unwrap();
        assert_eq!(
            (p(&c).leader, p(&c).followers.clone(), p(&c).epoch),
            (3, vec![], 5)
        );
    }

    #[test]
    fn a_missing_copy_goes_to_a_live_node_without_one() {
        let mut c = Catalog::default();
        let id = c
            .create_table(crate::catalog::tests::table("t"), 2, &[1, 2], 3)
            .unwrap();
        // Two live nodes: two copies each, nothing missing.
        assert_eq!(c.missing_replica(&[1, 2]), None);
        // A third node joins: each partition gets a copy there.
        let repair = c.missing_replica(&[1, 2, 3]).unwrap();
        assert_eq!((repair.table_id, repair.partition, repair.to), (id, 0, 3));
        c.start_move(&repair.as_move()).unwrap();
        assert_eq!(c.missing_replica(&[1, 2, 3]), None, "one copy at a time");
        c.add_follower(&repair).unwrap();
        let repair = c.missing_replica(&[1, 2, 3]).unwrap();
        assert_eq!((repair.partition, repair.to), (1, 3));
        c.start_move(&repair.as_move()).unwrap();
        c.add_follower(&repair).unwrap();
        assert_eq!(c.missing_replica(&[1, 2, 3]), None);
        // A table asking for one copy never gets more.
        c.create_table(crate::catalog::tests::table("solo"), 2, &[1, 2, 3], 1)
            .unwrap();
        assert_eq!(c.missing_replica(&[1, 2, 3]), None);
    }
}
