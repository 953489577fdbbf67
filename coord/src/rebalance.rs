//! Rebalancing: which partition the coordinator moves next, and the catalog steps of a move.
//!
//! When a node joins, new tables place partitions on it, but the partitions of existing tables
//! stay where they are. The coordinator evens out leadership one partition at a time: it picks
//! a partition of the node leading the most ([`Catalog::next_move`]) for the live node leading
//! the fewest. Tables with the same partition count form a co-location group whose partition
//! `i` is led by one node (so that joins on their partition keys run there): the group's
//! partitions `i` move together, one after the other. The coordinator marks each moving
//! ([`Catalog::start_move`]: its leader stops taking writes to it), has the new node copy it,
//! and then hands it over with a new epoch ([`Catalog::finish_move`]) or gives up
//! ([`Catalog::cancel_move`]).
//!
//! A partition moves with its rows' secondary index entries. Tables with a unique index that
//! leaves out the partition key do not move: such an index is checked on one node, against
//! the rows there. Tables keyed by a hidden row id move like any other (ids carry the node
//! that allocated them, so they stay unique wherever rows go).

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

/// Whether a table's partitions may change leader: a unique index is checked against the
/// entries of the node writing a row, which hold for the whole table only while equal values
/// share a partition, that is, while the index's columns include the partition key.
fn movable(table: &TableDef) -> bool {
    let key = table.partition_columns();
    table
        .indexes
        .iter()
        .filter(|i| i.unique && !i.primary)
        .all(|i| !key.is_empty() && key.iter().all(|c| i.columns.contains(c)))
}

impl PartitionMove {
    /// Whether the old leader stays as a follower after the move: the new leader was one.
    pub fn old_leader_follows(&self, catalog: &Catalog) -> bool {
        catalog
            .table_by_id(self.table_id)
            .and_then(|t| t.partitions.get(self.partition as usize))
            .is_some_and(|p| p.followers.contains(&self.to))
    }
}

impl Catalog {
    /// The table whose placement the others with `count` partitions follow: the oldest that
    /// can move (or the oldest at all, when none can).
    fn colocation_anchor(&self, count: usize) -> Option<&TableDef> {
        self.tables
            .values()
            .filter(|t| t.partitions.len() == count)
            .min_by_key(|t| (!movable(t), t.id))
    }

    /// Leaders for a new table of `count` partitions: those of its co-location group's
    /// anchor, when all of them are in `placement` (live) and none is moving.
    pub(crate) fn colocated_leaders(
        &self,
        count: u32,
        placement: &[NodeId],
    ) -> Option<Vec<NodeId>> {
        let anchor = self.colocation_anchor(count as usize)?;
        anchor
            .partitions
            .iter()
            .map(|p| (placement.contains(&p.leader) && p.moving_to.is_none()).then_some(p.leader))
            .collect()
    }

    /// The move that evens out leadership among `live` nodes, if no move is under way. First
    /// a partition that is not led where its group's anchor leads the same partition (the
    /// rest of a group move, or a table placed while nodes were down) follows it. Then, when
    /// a node leads more partitions than another by more than the partitions that would move,
    /// the anchor's partition `i` on the first moves to the second, and the group's other
    /// tables follow, one move at a time.
    pub fn next_move(&self, live: &[NodeId]) -> Option<PartitionMove> {
        let partitions = self.tables.values().flat_map(|t| &t.partitions);
        if partitions.clone().any(|p| p.moving_to.is_some()) {
            return None;
        }
        let mut tables: Vec<&TableDef> = self.tables.values().filter(|t| movable(t)).collect();
        tables.sort_by_key(|t| t.id);
        let move_of = |t: &TableDef, p: &crate::PartitionDef, to: NodeId| PartitionMove {
            table_id: t.id,
            partition: p.index,
            from: p.leader,
            to,
            epoch: p.epoch,
        };
        for t in &tables {
            let Some(anchor) = self.colocation_anchor(t.partitions.len()) else {
                continue;
            };
            for (p, a) in t.partitions.iter().zip(&anchor.partitions) {
                if p.leader != a.leader && live.contains(&p.leader) && live.contains(&a.leader) {
                    return Some(move_of(t, p, a.leader));
                }
            }
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
        tables.iter().find_map(|anchor| {
            let count = anchor.partitions.len();
            if self.colocation_anchor(count).map(|a| a.id) != Some(anchor.id) {
                return None;
            }
            anchor.partitions.iter().find_map(|p| {
                let moving = tables
                    .iter()
                    .filter(|t| t.partitions.len() == count)
                    .filter(|t| t.partitions[p.index as usize].leader == from)
                    .count();
                (p.leader == from && fewest + moving < most).then(|| move_of(anchor, p, to))
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

    /// Hands the partition of `m` to its new leader, with a new epoch. A follower taking over
    /// leaves its place to the old leader, which keeps its copy (see
    /// [`PartitionMove::old_leader_follows`]).
    pub fn finish_move(&mut self, m: &PartitionMove) -> Result<(), CoordError> {
        let p = self.moving_partition(m)?;
        if p.moving_to != Some(m.to) {
            return Err(CoordError::CatalogChanged);
        }
        if let Some(at) = p.followers.iter().position(|f| *f == m.to) {
            p.followers[at] = m.from;
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
        c.create_table(table("a"), 6, &[1, 2], 1).unwrap();
        let mut indexed = table("b");
        indexed.primary_key.clear();
        indexed.indexes.push(crate::IndexDef {
            oid: 0,
            name: "b_a".into(),
            columns: vec![0],
            unique: true,
            primary: false,
            constraint_oid: None,
            descending: Vec::new(),
        });
        c.create_table(indexed, 4, &[1, 2], 1).unwrap();
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
        // Partitions of the table with a unique index that cannot be checked across nodes
        // stayed.
        let b = c.table("public", "b").unwrap();
        assert!(b.partitions.iter().all(|p| p.leader != 3 && p.epoch == 1));
    }

    #[test]
    fn a_stale_or_cancelled_move_changes_nothing() {
        let mut c = Catalog::default();
        c.create_table(table("a"), 4, &[1], 1).unwrap();
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

    #[test]
    fn tables_partitioned_alike_keep_their_partitions_together() {
        let mut c = Catalog::default();
        c.create_table(table("a"), 4, &[1, 2], 1).unwrap();
        c.create_table(table("b"), 4, &[1, 2], 1).unwrap();
        c.create_table(table("other"), 2, &[1, 2], 1).unwrap();
        let leaders = |c: &Catalog, name: &str| -> Vec<NodeId> {
            let t = c.table("public", name).unwrap();
            t.partitions.iter().map(|p| p.leader).collect()
        };
        assert_eq!(leaders(&c, "a"), vec![1, 2, 1, 2]);
        assert_eq!(leaders(&c, "b"), leaders(&c, "a"), "placed like a");
        // Node 3 joins: nodes 1 and 2 lead 5 each. A group move is two partitions, so it
        // takes place only while it leaves node 3 below the node it takes them from.
        let live = [1, 2, 3];
        let mut moves = Vec::new();
        while let Some(m) = c.next_move(&live) {
            c.start_move(&m).unwrap();
            c.finish_move(&m).unwrap();
            moves.push((m.table_id, m.partition, m.from, m.to));
        }
        let (a, b) = (
            c.table("public", "a").unwrap().id,
            c.table("public", "b").unwrap().id,
        );
        assert_eq!(
            moves,
            vec![(a, 0, 1, 3), (b, 0, 1, 3), (a, 1, 2, 3), (b, 1, 2, 3)]
        );
        assert_eq!(leaders(&c, "a"), vec![3, 3, 1, 2]);
        assert_eq!(leaders(&c, "b"), leaders(&c, "a"));
        // A table whose partitions drifted apart (placed while its group's nodes were down)
        // is brought back to its group's placement.
        c.create_table(table("late"), 4, &[1], 1).unwrap();
        assert_eq!(leaders(&c, "late"), vec![1, 1, 1, 1]);
        let m = c.next_move(&live).unwrap();
        assert_eq!((m.partition, m.from, m.to), (0, 1, 3));
    }
}
