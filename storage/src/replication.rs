//! Replication of committed writes to a partition's followers: what storage does on the
//! leader's side and on a follower's.
//!
//! On the leader, a commit that wrote partitions with followers (the [`Replicator`] says which)
//! becomes one [`ReplicatedEntry`] per such partition: the partition's next log position and
//! the writes of the transaction that belong to it, as a RocksDB write batch. The replicator
//! makes every entry durable on the partition's followers *before* anything is applied here,
//! so no reader on the leader ever sees a write that a failover could lose. Commits of one
//! partition replicate one at a time, in log order (each holds the partition's commit-order
//! lock), so a follower's log is always a prefix of its leader's: a follower refuses an entry
//! that is not the one after its last ([`StorageError::LogGap`]), and its leader then drops it
//! from the configuration.
//!
//! The log entry stored under `'l' | table | partition | position` holds the same write batch
//! on the leader and on every follower, so a replica that missed the last entries catches up
//! from another's log ([`Store::log_entries_after`]). A follower being promoted is first
//! *sealed* at the old configuration's epoch ([`Store::seal_partition`]): from then on it
//! refuses entries of that epoch, so the deposed leader cannot add to the log the new leader
//! is chosen from.
//!
//! A transaction prepared for a commit across nodes ([`crate::prepared`]) sends its followers
//! a *prepared copy* of each partition's writes (`'q' | table | partition | id`, an entry of
//! position 0) before its prepare succeeds; its commit's entries name it, and applying them
//! removes the copy. A follower promoted while copies wait settles them first
//! ([`Store::settle_prepared_copies`]): the decision recorded for each (the caller asks etcd)
//! either appends its writes to the log or drops it, so a part whose leader died between the
//! decision and its commit is not lost.
//!
//! The transaction's writes are applied without RocksDB's optimistic conflict check, as a
//! prepared part is: replication exists only in a cluster, where every writer locks every
//! key it writes, and the table's fence is checked here as a prepare does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use rocksdb::{ReadOptions, WriteBatchIterator, WriteBatchWithTransaction, WriteOptions};

use crate::store::TxnInner;
use crate::{keys, Result, StorageError, Store};

/// One committed transaction's writes to one partition, at its place in the partition's log;
/// or, at position 0, a prepared transaction's writes for the follower to keep until the
/// transaction's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedEntry {
    pub table: u32,
    pub partition: u32,
    pub position: u64,
    /// The writes, as a RocksDB write batch's bytes.
    pub writes: Vec<u8>,
    /// The id of the prepared transaction these writes are (or commit) a copy of.
    pub prepared: Option<String>,
}

/// Why the followers do not (all) have a commit's entries.
#[derive(Debug, Clone)]
pub enum ReplicationFailure {
    /// No follower applied anything, or this node no longer leads the partition at the epoch
    /// it replicated with: the commit must not be applied here.
    Refused(String),
    /// Some followers may hold the entries and the configuration could not be changed to
    /// leave out those that do not: the commit is applied here, but its client cannot be told
    /// it is durable.
    Unconfirmed(String),
}

/// Sends a leader's entries to its followers (the cluster's network and configuration live
/// behind it). Called on a blocking thread, while the commit holds its partitions' order.
pub trait Replicator: Send + Sync {
    /// Whether a commit writing `partition` of `table` goes through [`Replicator::replicate`]:
    /// the partition has followers, or this node no longer leads it (and the commit is refused
    /// there rather than written where nobody reads it).
    fn replicates(&self, table: u32, partition: u32) -> bool;

    /// Returns once every entry is durable on every follower of its partition's current
    /// configuration (a follower that did not take it having been removed from it first).
    fn replicate(&self, entries: &[ReplicatedEntry])
        -> std::result::Result<(), ReplicationFailure>;

    /// Whether this node leads `partition` of `table` now.
    fn leads(&self, table: u32, partition: u32) -> bool;

    /// Whether no other node can have taken over what this node leads (its lease is
    /// certainly alive): reads fail while it is not.
    fn leadership_certain(&self) -> bool {
        true
    }

    /// Tells the followers of `partitions` that prepared transaction `id` rolled back, so that
    /// they drop their copies (best effort: a failover settles what is left).
    fn forget_prepared(&self, id: &str, partitions: &[(u32, u32)]) {
        let _ = (id, partitions);
    }
}

/// A lock per (table, partition).
type PartitionLocks = Mutex<HashMap<(u32, u32), Arc<Mutex<()>>>>;

/// Per-partition locks ordering commits (and follower applies and seals) in log order, and
/// the epoch each sealed partition is sealed at.
#[derive(Default)]
pub(crate) struct ReplicaState {
    order: PartitionLocks,
    sealed: Mutex<HashMap<(u32, u32), u64>>,
    pub(crate) replicator: Mutex<Option<Arc<dyn Replicator>>>,
}

impl ReplicaState {
    fn order_of(&self, table: u32, partition: u32) -> Arc<Mutex<()>> {
        self.order
            .lock()
            .entry((table, partition))
            .or_default()
            .clone()
    }
}

/// Splits a transaction's write batch by partition. A row belongs to the partition its key
/// names; an index entry to the partition of the row its value names; an index entry's
/// delete (whose value is gone) goes to every written partition of its table, where it
/// removes nothing that is not that partition's.
struct ByPartition<'a> {
    touched: &'a BTreeSet<(u32, u32)>,
    batches: HashMap<(u32, u32), WriteBatchWithTransaction<true>>,
}

fn table_of_index_entry(key: &[u8]) -> Option<u32> {
    (key.first() == Some(&keys::INDEX_PREFIX) && key.len() >= 5)
        .then(|| u32::from_be_bytes([key[1], key[2], key[3], key[4]]))
}

impl ByPartition<'_> {
    fn batch(&mut self, at: (u32, u32)) -> &mut WriteBatchWithTransaction<true> {
        self.batches.entry(at).or_default()
    }
}

impl WriteBatchIterator for ByPartition<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        let at = keys::partition_of_key(key)
            .or_else(|| table_of_index_entry(key).and_then(|_| keys::partition_of_key(value)));
        if let Some(at) = at {
            self.batch(at).put(key, value);
        }
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(at) = keys::partition_of_key(key) {
            self.batch(at).delete(key);
        } else if let Some(table) = table_of_index_entry(key) {
            let all: Vec<_> = self
                .touched
                .range((table, 0)..=(table, u32::MAX))
                .copied()
                .collect();
            for at in all {
                self.batch(at).delete(key);
            }
        }
    }
}

/// Each touched partition's writes in `batch`, as write batch bytes.
fn writes_by_partition(
    batch: &WriteBatchWithTransaction<true>,
    touched: &BTreeSet<(u32, u32)>,
) -> HashMap<(u32, u32), Vec<u8>> {
    let mut split = ByPartition {
        touched,
        batches: HashMap::new(),
    };
    batch.iterate(&mut split);
    split
        .batches
        .into_iter()
        .map(|(at, b)| (at, b.data().to_vec()))
        .collect()
}

/// A prepare's copies for the followers: each replicated partition's writes, at position 0.
pub(crate) fn prepared_copies(
    batch: &WriteBatchWithTransaction<true>,
    touched: &BTreeSet<(u32, u32)>,
    replicator: &dyn Replicator,
    id: &str,
) -> Vec<ReplicatedEntry> {
    let mut writes = writes_by_partition(batch, touched);
    touched
        .iter()
        .filter(|(t, p)| replicator.replicates(*t, *p))
        .map(|(table, partition)| ReplicatedEntry {
            table: *table,
            partition: *partition,
            position: 0,
            writes: writes.remove(&(*table, *partition)).unwrap_or_default(),
            prepared: Some(id.to_string()),
        })
        .collect()
}

/// The id of a prepared transaction, from the key of its record.
pub(crate) fn prepared_id(record: &[u8]) -> String {
    String::from_utf8_lossy(record.get(1..).unwrap_or_default()).into_owned()
}

fn synced(store: &Store) -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(store.options.sync_commits);
    options
}

impl Store {
    /// Makes commits of partitions with followers go through `replicator` (set once a
    /// cluster node can reach the others).
    pub fn set_replicator(&self, replicator: Arc<dyn Replicator>) {
        *self.replicas.replicator.lock() = Some(replicator);
    }

    /// Fails when this node cannot be sure it still leads: called after every read of a
    /// transaction, so a read that returns saw the data while this node certainly led it (a
    /// paused or cut-off leader answers nothing stale).
    pub(crate) fn confirm_leadership(&self) -> Result<()> {
        match self.replicas.replicator.lock().as_ref() {
            Some(r) if !r.leadership_certain() => Err(StorageError::LeadershipUncertain),
            _ => Ok(()),
        }
    }

    /// The replicator, when one of `touched` has followers.
    pub(crate) fn replicator_for(
        &self,
        touched: &BTreeSet<(u32, u32)>,
    ) -> Option<Arc<dyn Replicator>> {
        let replicator = self.replicas.replicator.lock().clone()?;
        touched
            .iter()
            .any(|(t, p)| replicator.replicates(*t, *p))
            .then_some(replicator)
    }

    /// A follower's side: applies the entry its leader sent, with its log entry, in one synced
    /// write (or keeps a prepared copy, for an entry of position 0). `epoch` is the
    /// configuration the leader sent it in: refused when the partition is sealed at that epoch
    /// or later. An entry already applied is not applied again. Returns whether it was applied
    /// now.
    pub fn apply_replicated(&self, entry: &ReplicatedEntry, epoch: u64) -> Result<bool> {
        let (table, partition) = (entry.table, entry.partition);
        let order = self.replicas.order_of(table, partition);
        let _in_order = order.lock();
        self.check_unsealed(table, partition, epoch)?;
        if entry.position == 0 {
            let id = entry.prepared.as_deref().unwrap_or_default();
            let mut batch = WriteBatchWithTransaction::<true>::default();
            batch.put(keys::prepared_copy_key(table, partition, id), &entry.writes);
            self.db().write_opt(batch, &synced(self))?;
            return Ok(true);
        }
        let last = self.partition_log_position(table, partition)?;
        if entry.position <= last {
            self.check_same_entry(entry)?;
            return Ok(false);
        }
        if entry.position != last + 1 {
            return Err(StorageError::LogGap {
                table,
                partition,
                expected: last + 1,
                got: entry.position,
            });
        }
        self.write_entries_in_order(std::slice::from_ref(entry))?;
        Ok(true)
    }

    /// Fails with [`StorageError::LogDiverged`] unless this store's log holds `entry` at its
    /// position. A leader sends an entry to its followers before it applies it, so a leader
    /// that restarted in between may send another entry at a position a follower has taken:
    /// taking it as "already applied" would acknowledge a commit the follower does not hold.
    fn check_same_entry(&self, entry: &ReplicatedEntry) -> Result<()> {
        let key = keys::log_key(entry.table, entry.partition, entry.position);
        match self.db().get_pinned(key)? {
            Some(held) if held.as_ref() == entry.writes.as_slice() => Ok(()),
            _ => Err(StorageError::LogDiverged {
                table: entry.table,
                partition: entry.partition,
                position: entry.position,
            }),
        }
    }

    /// Fails when the partition is sealed at `epoch` or a later one (the caller holds the
    /// partition's order).
    fn check_unsealed(&self, table: u32, partition: u32, epoch: u64) -> Result<()> {
        match self.replicas.sealed.lock().get(&(table, partition)) {
            Some(sealed) if epoch <= *sealed => Err(StorageError::PartitionSealed {
                table,
                partition,
                epoch: *sealed,
            }),
            _ => Ok(()),
        }
    }

    /// Writes entries that follow this store's log of their partition (the caller holds the
    /// partition's order), each with its log entry, and moves the log position past them.
    fn write_entries_in_order(&self, entries: &[ReplicatedEntry]) -> Result<()> {
        let mut batch = WriteBatchWithTransaction::<true>::default();
        for e in entries {
            let writes = WriteBatchWithTransaction::<true>::from_data(&e.writes);
            let mut copy = CopyInto(&mut batch);
            writes.iterate(&mut copy);
            batch.put(keys::log_key(e.table, e.partition, e.position), &e.writes);
            if let Some(old) = crate::store::trimmed_log_position(e.position) {
                batch.delete(keys::log_key(e.table, e.partition, old));
            }
            if let Some(id) = &e.prepared {
                batch.delete(keys::prepared_copy_key(e.table, e.partition, id));
            }
        }
        self.db().write_opt(batch, &synced(self))?;
        for e in entries {
            self.set_next_log_position(e.table, e.partition, e.position + 1);
        }
        Ok(())
    }

    /// Stops this replica from taking entries of `partition` in configurations up to `epoch`
    /// (a failover is choosing the next leader); its last log position.
    pub fn seal_partition(&self, table: u32, partition: u32, epoch: u64) -> Result<u64> {
        let order = self.replicas.order_of(table, partition);
        let _in_order = order.lock();
        let mut sealed = self.replicas.sealed.lock();
        let at = sealed.entry((table, partition)).or_default();
        *at = (*at).max(epoch);
        drop(sealed);
        self.partition_log_position(table, partition)
    }

    /// The log entries of a partition after position `after`, oldest first, at most `limit`.
    /// Fails with [`StorageError::LogTruncated`] when the entry after `after` was trimmed.
    pub fn log_entries_after(
        &self,
        table: u32,
        partition: u32,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ReplicatedEntry>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::log_end(table, partition));
        let mut it = self.db().raw_iterator_opt(ro);
        it.seek(keys::log_key(table, partition, after + 1));
        let mut entries = Vec::new();
        while it.valid() && entries.len() < limit {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            entries.push(ReplicatedEntry {
                table,
                partition,
                position: keys::log_position_of(k).unwrap_or(0),
                writes: v.to_vec(),
                prepared: None,
            });
            it.next();
        }
        it.status()?;
        let last = self.partition_log_position(table, partition)?;
        if last > after && entries.first().map(|e| e.position) != Some(after + 1) {
            return Err(StorageError::LogTruncated {
                table,
                partition,
                after,
            });
        }
        Ok(entries)
    }

    /// Applies entries fetched from the new leader's log (a failover's catch-up): those after
    /// this store's last position, which must follow it without a gap. Those this store holds
    /// already must be the same ([`StorageError::LogDiverged`] otherwise): the caller asks
    /// from its last position, so that a log that diverged there is found.
    pub fn catch_up(&self, entries: &[ReplicatedEntry]) -> Result<u64> {
        let Some(first) = entries.first() else {
            return Ok(0);
        };
        let (table, partition) = (first.table, first.partition);
        let order = self.replicas.order_of(table, partition);
        let _in_order = order.lock();
        let last = self.partition_log_position(table, partition)?;
        let (held, new): (Vec<&ReplicatedEntry>, Vec<&ReplicatedEntry>) =
            entries.iter().partition(|e| e.position <= last);
        for e in held {
            self.check_same_entry(e)?;
        }
        let new: Vec<ReplicatedEntry> = new.into_iter().cloned().collect();
        for (i, e) in new.iter().enumerate() {
            if e.position != last + 1 + i as u64 {
                return Err(StorageError::LogGap {
                    table,
                    partition,
                    expected: last + 1 + i as u64,
                    got: e.position,
                });
            }
        }
        self.write_entries_in_order(&new)?;
        Ok(new.len() as u64)
    }

    /// Drops this follower's copy of prepared transaction `id`'s writes to a partition (it
    /// rolled back), unless the partition is sealed at `epoch` (a failover settles it then).
    pub fn forget_prepared_copy(
        &self,
        table: u32,
        partition: u32,
        id: &str,
        epoch: u64,
    ) -> Result<()> {
        let order = self.replicas.order_of(table, partition);
        let _in_order = order.lock();
        self.check_unsealed(table, partition, epoch)?;
        let mut batch = WriteBatchWithTransaction::<true>::default();
        batch.delete(keys::prepared_copy_key(table, partition, id));
        self.db().write_opt(batch, &synced(self))?;
        Ok(())
    }

    /// The ids of the prepared transactions this node keeps copies of for a partition.
    pub fn prepared_copies(&self, table: u32, partition: u32) -> Result<Vec<String>> {
        Ok(self
            .copies_of(table, partition)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    fn copies_of(&self, table: u32, partition: u32) -> Result<Vec<(String, Vec<u8>)>> {
        let start = keys::prepared_copies_start(table, partition);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::prepared_copies_end(table, partition));
        let mut it = self.db().raw_iterator_opt(ro);
        it.seek(&start);
        let mut copies = Vec::new();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                let id = String::from_utf8_lossy(&k[start.len()..]).into_owned();
                copies.push((id, v.to_vec()));
            }
            it.next();
        }
        it.status()?;
        Ok(copies)
    }

    /// A promoted follower's side: appends the copies of the transactions that `outcomes`
    /// says committed to the partition's log (in id order) and drops the others; its last
    /// log position.
    pub fn settle_prepared_copies(
        &self,
        table: u32,
        partition: u32,
        outcomes: &HashMap<String, bool>,
    ) -> Result<u64> {
        let order = self.replicas.order_of(table, partition);
        let _in_order = order.lock();
        let mut last = self.partition_log_position(table, partition)?;
        let mut committed = Vec::new();
        let mut dropped = WriteBatchWithTransaction::<true>::default();
        for (id, writes) in self.copies_of(table, partition)? {
            match outcomes.get(&id) {
                Some(true) => {
                    last += 1;
                    committed.push(ReplicatedEntry {
                        table,
                        partition,
                        position: last,
                        writes,
                        prepared: Some(id),
                    });
                }
                Some(false) => dropped.delete(keys::prepared_copy_key(table, partition, &id)),
                None => {}
            }
        }
        self.write_entries_in_order(&committed)?;
        self.db().write_opt(dropped, &synced(self))?;
        Ok(last)
    }

    /// Drops every prepared copy of a partition (another replica settled them).
    pub fn drop_prepared_copies(&self, table: u32, partition: u32) -> Result<()> {
        self.delete_range(
            &keys::prepared_copies_start(table, partition),
            &keys::prepared_copies_end(table, partition),
        )
    }

    /// Lets a partition take entries again (it was sealed for a failover that made another
    /// configuration, or that gave up).
    pub fn unseal_partition(&self, table: u32, partition: u32) {
        self.replicas.sealed.lock().remove(&(table, partition));
    }
}

/// Copies a write batch's operations into another.
struct CopyInto<'a>(&'a mut WriteBatchWithTransaction<true>);

impl WriteBatchIterator for CopyInto<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.0.put(key, value);
    }

    fn delete(&mut self, key: &[u8]) {
        self.0.delete(key);
    }
}

/// Commits a transaction that wrote partitions with followers (see the module comment):
/// its entries go to the followers first, then everything is applied here in one synced
/// write (with the removal of its prepared record, if it was prepared).
pub(crate) fn commit_replicated(inner: TxnInner, replicator: &dyn Replicator) -> Result<()> {
    let store = inner.store.clone();
    let tables: Vec<u32> = inner
        .touched
        .iter()
        .map(|(t, _)| *t)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let barriers: Vec<_> = tables.iter().map(|t| store.barrier(*t)).collect();
    let _shared: Vec<_> = barriers.iter().map(|b| b.read()).collect();
    if inner.prepared.is_none() {
        for table in &tables {
            let seen = inner.fences.get(table).cloned().flatten();
            if store.db().get(keys::fence_key(*table))? != seen {
                return Err(StorageError::WriteConflict);
            }
        }
    }
    // In (table, partition) order, so that two commits never wait for each other.
    let orders: Vec<_> = inner
        .touched
        .iter()
        .map(|(t, p)| store.replicas.order_of(*t, *p))
        .collect();
    let _in_order: Vec<_> = orders.iter().map(|o| o.lock()).collect();
    let mut batch = inner.txn.get_writebatch();
    let mut split = writes_by_partition(&batch, &inner.touched);
    let prepared = inner.prepared.as_deref().map(prepared_id);
    // A prepared part keeps only the partitions this node still leads: a follower that took
    // over one of the others (its leader was down) settled the part's copy there by the same
    // decision. A transaction that was not prepared is refused instead (below).
    let mut touched = inner.touched.clone();
    if prepared.is_some() {
        touched.retain(|(t, p)| replicator.leads(*t, *p));
        if touched.len() < inner.touched.len() {
            let mut kept = WriteBatchWithTransaction::<true>::default();
            for at in &touched {
                if let Some(writes) = split.get(at) {
                    WriteBatchWithTransaction::<true>::from_data(writes)
                        .iterate(&mut CopyInto(&mut kept));
                }
            }
            batch = kept;
        }
    }
    let mut entries = Vec::new();
    for (table, partition) in &touched {
        let position = store.next_log_position(*table, *partition, true)?;
        let replicated = replicator.replicates(*table, *partition);
        let writes = match replicated {
            true => split.remove(&(*table, *partition)).unwrap_or_default(),
            false => Vec::new(),
        };
        batch.put(keys::log_key(*table, *partition, position), &writes);
        if let Some(old) = crate::store::trimmed_log_position(position) {
            batch.delete(keys::log_key(*table, *partition, old));
        }
        if replicated {
            entries.push(ReplicatedEntry {
                table: *table,
                partition: *partition,
                position,
                writes,
                prepared: prepared.clone(),
            });
        }
    }
    let unconfirmed = match replicator.replicate(&entries) {
        Ok(()) => None,
        Err(ReplicationFailure::Refused(why)) => {
            // The positions taken stay free for the next commit.
            for (table, partition) in &inner.touched {
                store.forget_log_position(*table, *partition);
            }
            if inner.prepared.is_some() {
                tracing::warn!(
                    "a prepared part could not be applied: its node no longer leads its partitions"
                );
            }
            crate::prepared::forget_prepared(&inner);
            return Err(StorageError::ReplicationRefused(why));
        }
        Err(ReplicationFailure::Unconfirmed(why)) => Some(why),
    };
    if let Some(record) = &inner.prepared {
        batch.delete(record);
    }
    store.db().write_opt(batch, &synced(&store))?;
    if inner.prepared.is_some() {
        crate::prepared::uncount_prepared(&inner);
    }
    // The transaction object's own copy of the writes is discarded; its locks go with it.
    let _ = inner.txn.rollback();
    match unconfirmed {
        Some(why) => Err(StorageError::ReplicationUnconfirmed(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepared::tests::open;
    use crate::{Isolation, ScanControl};

    /// Hands a leader's entries to a follower store, as the network would; partition 1 of
    /// every table has no followers.
    struct ToFollower {
        follower: Store,
        epoch: u64,
        refuse: bool,
        sent: Mutex<Vec<ReplicatedEntry>>,
        /// Stands for a leader whose lease may have run out.
        uncertain: std::sync::atomic::AtomicBool,
    }

    impl Replicator for ToFollower {
        fn leadership_certain(&self) -> bool {
            !self.uncertain.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn replicates(&self, _table: u32, partition: u32) -> bool {
            partition != 1
        }

        fn leads(&self, _table: u32, _partition: u32) -> bool {
            !self.refuse
        }

        fn replicate(
            &self,
            entries: &[ReplicatedEntry],
        ) -> std::result::Result<(), ReplicationFailure> {
            if self.refuse {
                return Err(ReplicationFailure::Refused("deposed".into()));
            }
            for e in entries {
                self.follower
                    .apply_replicated(e, self.epoch)
                    .map_err(|e| ReplicationFailure::Refused(e.to_string()))?;
                self.sent.lock().push(e.clone());
            }
            Ok(())
        }
    }

    fn pair(refuse: bool) -> (tempfile::TempDir, Store, Store, Arc<ToFollower>) {
        let dir = tempfile::tempdir().unwrap();
        let (leader, follower) = (open(&dir.path().join("l")), open(&dir.path().join("f")));
        let to = Arc::new(ToFollower {
            follower: follower.clone(),
            epoch: 1,
            refuse,
            sent: Mutex::new(Vec::new()),
            uncertain: Default::default(),
        });
        leader.set_replicator(to.clone());
        (dir, leader, follower, to)
    }

    #[test]
    fn followers_get_each_partitions_rows_and_index_entries_in_log_order() {
        let (_dir, leader, follower, to) = pair(false);
        let (a, b, lone) = (
            keys::row_key(7, 0, b"a"),
            keys::row_key(7, 2, b"b"),
            keys::row_key(7, 1, b"c"),
        );
        let mut index = keys::index_start(7, 9);
        index.extend_from_slice(b"ia");
        let t = leader.begin_with(Isolation::ReadCommitted);
        t.put(&a, b"1").unwrap();
        t.put(&b, b"2").unwrap();
        t.put(&lone, b"3").unwrap();
        t.put(&index, &a).unwrap();
        t.commit().unwrap();
        let sent = to.sent.lock().clone();
        let at: Vec<(u32, u64)> = sent.iter().map(|e| (e.partition, e.position)).collect();
        assert_eq!(at, [(0, 1), (2, 1)]);
        let f = follower.begin();
        assert_eq!(f.get(&a).unwrap().unwrap(), b"1");
        assert_eq!(f.get(&b).unwrap().unwrap(), b"2");
        assert_eq!(f.get(&index).unwrap().unwrap(), a);
        assert!(
            f.get(&lone).unwrap().is_none(),
            "partition 1 has no followers"
        );
        assert_eq!(follower.partition_log_position(7, 0).unwrap(), 1);

        // A delete of the index entry reaches the follower too, and the logs agree.
        let t = leader.begin_with(Isolation::ReadCommitted);
        t.delete(&a).unwrap();
        t.delete(&index).unwrap();
        t.commit().unwrap();
        let f = follower.begin();
        assert!(f.get(&a).unwrap().is_none());
        assert!(f.get(&index).unwrap().is_none());
        assert_eq!(
            leader.log_entries_after(7, 0, 0, 10).unwrap(),
            follower.log_entries_after(7, 0, 0, 10).unwrap()
        );
    }

    #[test]
    fn prepared_parts_leave_copies_that_commits_remove_and_a_promoted_follower_settles() {
        let (_dir, leader, follower, _to) = pair(false);
        let (a, b, c) = (
            keys::row_key(7, 0, b"a"),
            keys::row_key(7, 0, b"b"),
            keys::row_key(7, 0, b"c"),
        );
        let t = leader.begin_with(Isolation::ReadCommitted);
        t.put(&a, b"1").unwrap();
        t.prepare("n1-1-1").unwrap();
        assert_eq!(follower.prepared_copies(7, 0).unwrap(), ["n1-1-1"]);
        assert!(
            follower.begin().get(&a).unwrap().is_none(),
            "a copy is not applied"
        );
        t.commit().unwrap();
        assert!(follower.prepared_copies(7, 0).unwrap().is_empty());
        assert_eq!(follower.begin().get(&a).unwrap().unwrap(), b"1");

        // The leader dies with two parts prepared: one decided commit, one abort.
        for (id, row) in [("n1-1-2", &b), ("n1-1-3", &c)] {
            let t = leader.begin_with(Isolation::ReadCommitted);
            t.put(row, b"2").unwrap();
            t.prepare(id).unwrap();
        }
        assert_eq!(follower.seal_partition(7, 0, 1).unwrap(), 1);
        let outcomes = HashMap::from([("n1-1-2".to_string(), true), ("n1-1-3".to_string(), false)]);
        assert_eq!(follower.settle_prepared_copies(7, 0, &outcomes).unwrap(), 2);
        let f = follower.begin();
        assert_eq!(f.get(&b).unwrap().unwrap(), b"2");
        assert!(f.get(&c).unwrap().is_none());
        assert!(follower.prepared_copies(7, 0).unwrap().is_empty());
        // A sealed follower keeps no more copies from the old leader.
        let late = leader.begin_with(Isolation::ReadCommitted);
        late.put(&keys::row_key(7, 0, b"d"), b"3").unwrap();
        assert!(matches!(
            late.prepare("n1-1-4"),
            Err(StorageError::ReplicationRefused(_))
        ));
    }

    #[test]
    fn a_leader_that_cannot_be_sure_it_leads_answers_no_read() {
        let (_dir, leader, _follower, to) = pair(false);
        let row = keys::row_key(7, 0, b"a");
        let t = leader.begin();
        t.put(&row, b"1").unwrap();
        t.commit().unwrap();
        to.uncertain
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let reader = leader.begin();
        assert!(matches!(
            reader.get(&row),
            Err(StorageError::LeadershipUncertain)
        ));
        let (start, end) = (keys::partition_start(7, 0), keys::partition_end(7, 0));
        let scanned = reader.scan(&start, &end, None, |_, _| Ok(ScanControl::Continue));
        assert!(matches!(scanned, Err(StorageError::LeadershipUncertain)));
        to.uncertain
            .store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            leader.begin().get(&row).unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn a_refused_replication_applies_nothing_and_frees_the_position() {
        let (_dir, leader, _follower, _to) = pair(true);
        let row = keys::row_key(7, 0, b"a");
        let t = leader.begin_with(Isolation::ReadCommitted);
        t.put(&row, b"1").unwrap();
        assert!(matches!(
            t.commit(),
            Err(StorageError::ReplicationRefused(_))
        ));
        assert!(leader.begin().get(&row).unwrap().is_none());
        assert_eq!(leader.partition_log_position(7, 0).unwrap(), 0);
    }

    /// Log entry `position` of partition 0 of table 7: one row, `key`.
    fn entry(position: u64, key: &[u8]) -> ReplicatedEntry {
        let mut b = WriteBatchWithTransaction::<true>::default();
        b.put(keys::row_key(7, 0, key), b"v");
        ReplicatedEntry {
            table: 7,
            partition: 0,
            position,
            writes: b.data().to_vec(),
            prepared: None,
        }
    }

    #[test]
    fn followers_refuse_gaps_and_sealed_epochs_and_catch_up_from_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let (leader, follower) = (open(&dir.path().join("l")), open(&dir.path().join("f")));
        assert!(leader.apply_replicated(&entry(1, b"a"), 1).unwrap());
        assert!(!leader.apply_replicated(&entry(1, b"a"), 1).unwrap());
        assert!(matches!(
            leader.apply_replicated(&entry(3, b"c"), 1),
            Err(StorageError::LogGap { expected: 2, .. })
        ));
        assert!(leader.apply_replicated(&entry(2, b"b"), 1).unwrap());
        assert_eq!(leader.seal_partition(7, 0, 1).unwrap(), 2);
        assert!(matches!(
            leader.apply_replicated(&entry(3, b"c"), 1),
            Err(StorageError::PartitionSealed { .. })
        ));
        assert!(leader.apply_replicated(&entry(3, b"c"), 2).unwrap());

        assert!(follower.apply_replicated(&entry(1, b"a"), 1).unwrap());
        let missing = leader.log_entries_after(7, 0, 1, 100).unwrap();
        assert_eq!(missing.len(), 2);
        assert_eq!(follower.catch_up(&missing).unwrap(), 2);
        assert_eq!(follower.partition_log_position(7, 0).unwrap(), 3);
        assert!(follower
            .begin()
            .get(&keys::row_key(7, 0, b"c"))
            .unwrap()
            .is_some());
    }

    /// A leader restarted between sending entry 2 ("a2") and applying it sends another entry
    /// 2 ("b2"): the follower holding the first must not answer as if it took the second.
    #[test]
    fn a_follower_holding_another_entry_at_a_position_refuses_it_and_its_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let (leader, follower) = (open(&dir.path().join("l")), open(&dir.path().join("f")));
        for store in [&leader, &follower] {
            assert!(store.apply_replicated(&entry(1, b"a1"), 1).unwrap());
        }
        assert!(follower.apply_replicated(&entry(2, b"a2"), 1).unwrap());
        assert!(matches!(
            follower.apply_replicated(&entry(2, b"b2"), 1),
            Err(StorageError::LogDiverged { position: 2, .. })
        ));
        assert!(!follower.apply_replicated(&entry(2, b"a2"), 1).unwrap());

        // A failover's catch-up asks from the follower's last position and finds it differs.
        assert!(leader.apply_replicated(&entry(2, b"b2"), 1).unwrap());
        assert!(leader.apply_replicated(&entry(3, b"b3"), 1).unwrap());
        let from_last = leader.log_entries_after(7, 0, 1, 100).unwrap();
        assert!(matches!(
            follower.catch_up(&from_last),
            Err(StorageError::LogDiverged { position: 2, .. })
        ));
        assert_eq!(follower.partition_log_position(7, 0).unwrap(), 2);
        let b3 = keys::row_key(7, 0, b"b3");
        assert!(follower.begin().get(&b3).unwrap().is_none());
    }
}
