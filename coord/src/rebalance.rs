//! Rebalancing: which partition the coordinator moves next, and the catalog steps of a move.
//!
//! When a node joins, new tables place partitions on it, but the partitions of existing tables
//! stay where they are. The coordinator evens out leadership one partition at a time: it picks
//! a partition of the node leading the most ([`Catalog::next_move`]) for the live node leading
//! the fewest, marks it moving ([`Catalog::start_move`]: its leader stops taking writes to
//! it), has the new node copy it, and then hands it over with a new epoch
//! ([`Catalog::finish_move`]) or gives up ([`Catalog::cancel_move`]).
//!
//! Only tables keyed by a primary key and without secondary indexes move: a secondary index's
//! entries span the partitions on one node, and hidden row ids are allocated per node.

use crate::{Catalog, CoordError, NodeId, TableDef};

/// One partition changing leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMove {
    pub table_id: u32,
    pub partition: u32,
    pub from: NodeId,
    pub to: NodeId,
    /// The partition's epoch when the move was chosen.
    pub epoch: u64,
}

/// Whether a table's partitions may change leader.
fn movable(table: &TableDef) -> bool {
    !table.primary_key.is_empty() && !table.indexes.iter().any(|i| !i.primary)
}

impl Catalog {
    /// The move that evens out leadership among `live` nodes, if leaders differ by more than
    /// one partition and no move is under way.
    pub fn next_move(&self, live: &[NodeId]) -> Option<PartitionMove> {
        let partitions = self.tables.values().flat_map(|t| &t.partitions);
        if partitions.clone().any(|p| p.moving_to.is_some()) {
            return None;
        }
        let mut led: Vec<(usize, NodeId)> = live
            .iter()
            .map(|n| (partitions.clone().filter(|p| p.leader == *n).count(), *n))
            .collect();
        led.sort_by_key(|(count, node)| (*count, *node));
        let (fewest, to) = *led.first()?;
        // The most loaded first; among equals, the lowest id.
        led.sort_by_key(|(count, node)| (std::cmp::Reverse(*count), *node));
        let (most, from) = *led.first()?;
        if most <= fewest + 1 {
            return None;
        }
        let mut tables: Vec<&TableDef> = self.tables.values().filter(|t| movable(t)).collect();
        tables.sort_by_key(|t| t.id);
        tables.into_iter().find_map(|t| {
            t.partitions
                .iter()
                .find(|p| p.leader == from)
                .map(|p| PartitionMove {
                    table_id: t.id,
                    partition: p.index,
                    from,
                    to,
                    epoch: p.epoch,
                })
        })
    }

    /// Marks the partition of `m` moving: its leader takes no more writes to it.
    pub fn start_move(&mut self, m: &PartitionMove) -> Result<(), CoordError> {
        let p = self.moving_partition(m)?;
        if p.moving_to.is_some() {
            return Err(CoordError::CatalogChanged);
        }
        p.moving_to = Some(m.to);
        Ok(())
    }

    /// Hands the partition of `m` to its new leader, with a new epoch.
    pub fn finish_move(&mut self, m: &PartitionMove) -> Result<(), CoordError> {
        let p = self.moving_partition(m)?;
        if p.moving_to != Some(m.to) {
            return Err(CoordError::CatalogChanged);
        }
        p.leader = m.to;
        p.epoch += 1;
        p.moving_to = None;
        Ok(())
    }

    /// Gives up a move: the partition stays with its leader and takes writes again.
    pub fn cancel_move(&mut self, table_id: u32, partition: u32) {
        if let Some(p) = self
            .tables
            .get_mut(&table_id)
            .and_then(|t| t.partitions.get_mut(partition as usize))
        {
            p.moving_to = None;
        }
    }

    /// The partition of `m`, if it is still led by `m.from` at `m.epoch`.
    fn moving_partition(
        &mut self,
        m: &PartitionMove,
    ) -> Result<&mut crate::PartitionDef, CoordError> {
        self.tables
            .get_mut(&m.table_id)
            .and_then(|t| t.partitions.get_mut(m.partition as usize))
            .filter(|p| p.leader == m.from && p.epoch == m.epoch)
            .ok_or(CoordError::CatalogChanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::table;

    #[test]
    fn a_joined_node_takes_partitions_until_leaders_are_even() {
        let mut c = Catalog::default();
        c.create_table(table("a"), 6, &[1, 2]).unwrap();
        let mut keyless = table("b");
        keyless.primary_key.clear();
        c.create_table(keyless, 4, &[1, 2]).unwrap();
        // Node 3 joins: 5 each on nodes 1 and 2, none on 3.
        let live = [1, 2, 3];
        let mut moves = Vec::new();
        while let Some(m) = c.next_move(&live) {
            c.start_move(&m).unwrap();
            assert_eq!(c.next_move(&live), None, "one move at a time");
            c.finish_move(&m).unwrap();
            moves.push((m.from, m.to));
        }
        assert_eq!(moves, vec![(1, 3), (2, 3), (1, 3)]);
        let a = c.table("public", "a").unwrap();
        let led_by_3: Vec<u64> = a
            .partitions
            .iter()
            .filter(|p| p.leader == 3)
            .map(|p| p.epoch)
            .collect();
        assert_eq!(
            led_by_3,
            vec![2, 2, 2],
            "each moved partition has a new epoch"
        );
        // Partitions of the table without a primary key stayed.
        let b = c.table("public", "b").unwrap();
        assert!(b.partitions.iter().all(|p| p.leader != 3 && p.epoch == 1));
    }

    #[test]
    fn a_stale_or_cancelled_move_changes_nothing() {
        let mut c = Catalog::default();
        c.create_table(table("a"), 4, &[1]).unwrap();
        let m = c.next_move(&[1, 2]).unwrap();
        c.start_move(&m).unwrap();
        assert!(matches!(c.start_move(&m), Err(CoordError::CatalogChanged)));
        c.cancel_move(m.table_id, m.partition);
        assert!(matches!(c.finish_move(&m), Err(CoordError::CatalogChanged)));
        let stale = PartitionMove {
            epoch: 7,
            ..m.clone()
        };
        assert!(matches!(
            c.start_move(&stale),
            Err(CoordError::CatalogChanged)
        ));
        let t = c.table("public", "a").unwrap();
        assert!(t
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.moving_to.is_none()));
    }
}
