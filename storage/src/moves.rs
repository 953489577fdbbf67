//! Moving a partition to another node: what the storage of each side does.
//!
//! The node giving a partition away first stops new writers of it and waits until no open
//! transaction and no bulk load holds writes to it ([`Store::close_partition`]), then hands
//! out its entries page by page
//! ([`Store::partition_entries`]). The receiving node stores them as they are
//! ([`Store::put_entries`]); once leadership has moved, the giving node drops its copy
//! ([`Store::drop_partition_data`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocksdb::{ReadOptions, WriteBatchWithTransaction, WriteOptions};

use crate::{keys, Result, StorageError, Store};

/// Who writes which partition, and which partitions take no new writers.
#[derive(Default)]
pub(crate) struct PartitionWriters {
    /// Per (table, partition), the live transactions that wrote it (by id, with when they
    /// first did); per table, the bulk loads that run (keyed with partition [`BULK_LOADS`]).
    counts: HashMap<(u32, u32), HashMap<u64, Instant>>,
    /// Partitions being handed to another node.
    closed: HashSet<(u32, u32)>,
}

pub(crate) type WriterCounts = Arc<Mutex<PartitionWriters>>;

/// The partition key under which a table's running bulk loads are counted.
const BULK_LOADS: u32 = u32::MAX;

/// The partitions one transaction (or bulk load) is counted as writing; uncounted on drop.
pub(crate) struct Writing {
    counts: WriterCounts,
    /// The transaction's id (a bulk load takes one too).
    id: u64,
    held: Vec<(u32, u32)>,
}

impl Writing {
    pub(crate) fn new(counts: WriterCounts, id: u64) -> Self {
        Writing {
            counts,
            id,
            held: Vec::new(),
        }
    }

    /// Counts a partition this writer touched for the first time; refused while the
    /// partition is being handed to another node.
    pub(crate) fn enter(&mut self, table: u32, partition: u32) -> Result<()> {
        let mut writers = self.counts.lock();
        if writers.closed.contains(&(table, partition)) {
            return Err(StorageError::PartitionMoving { table, partition });
        }
        writers
            .counts
            .entry((table, partition))
            .or_default()
            .insert(self.id, Instant::now());
        self.held.push((table, partition));
        Ok(())
    }

    /// Counts a bulk load of `table`; refused while a partition of it is being handed over.
    pub(crate) fn enter_bulk_load(&mut self, table: u32) -> Result<()> {
        let mut writers = self.counts.lock();
        if let Some((_, partition)) = writers.closed.iter().find(|(t, _)| *t == table) {
            return Err(StorageError::PartitionMoving {
                table,
                partition: *partition,
            });
        }
        writers
            .counts
            .entry((table, BULK_LOADS))
            .or_default()
            .insert(self.id, Instant::now());
        self.held.push((table, BULK_LOADS));
        Ok(())
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut writers = self.counts.lock();
        for key in &self.held {
            if let Some(ids) = writers.counts.get_mut(key) {
                ids.remove(&self.id);
                if ids.is_empty() {
                    writers.counts.remove(key);
                }
            }
        }
    }
}

/// A stored key and its value, as a partition copy carries it.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Entries handed out per page of a partition copy.
pub(crate) const COPY_PAGE: usize = 4096;

impl Store {
    /// The open transactions (and bulk loads) that wrote `partition` of `table`: their ids
    /// and how long ago they first did, the oldest first.
    pub fn partition_writers(&self, table: u32, partition: u32) -> Vec<(u64, Duration)> {
        let writers = self.writers.lock();
        let mut open: Vec<(u64, Duration)> = [(table, partition), (table, BULK_LOADS)]
            .iter()
            .filter_map(|key| writers.counts.get(key))
            .flatten()
            .map(|(id, since)| (*id, since.elapsed()))
            .collect();
        open.sort_by_key(|(_, age)| std::cmp::Reverse(*age));
        open
    }

    /// Stops new writers of `partition` of `table` (they fail with
    /// [`StorageError::PartitionMoving`]) and waits, for at most `patience`, until no open
    /// transaction wrote it and no bulk load of the table runs. Whether that happened; if
    /// not, the partition takes writers again.
    pub fn close_partition(&self, table: u32, partition: u32, patience: Duration) -> bool {
        self.writers.lock().closed.insert((table, partition));
        let started = Instant::now();
        loop {
            {
                let writers = self.writers.lock();
                if !writers.counts.contains_key(&(table, partition))
                    && !writers.counts.contains_key(&(table, BULK_LOADS))
                {
                    return true;
                }
            }
            if started.elapsed() >= patience {
                self.reopen_partition(table, partition);
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets a partition take writers again (its move was given up, or it was dropped here).
    pub fn reopen_partition(&self, table: u32, partition: u32) {
        self.writers.lock().closed.remove(&(table, partition));
    }

    /// Up to [`COPY_PAGE`] committed entries (log entries, rows and the index entries of its
    /// rows) of a partition, after
    /// `after` when given, in key order.
    pub fn partition_entries(
        &self,
        table: u32,
        partition: u32,
        after: Option<&[u8]>,
    ) -> Result<Vec<Entry>> {
        let mut page = Vec::new();
        for (start, end, index_entries) in partition_ranges(table, partition) {
            if after.is_some_and(|a| a >= end.as_slice()) {
                continue;
            }
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end.clone());
            let mut it = self.db().raw_iterator_opt(ro);
            match after.filter(|a| *a >= start.as_slice()) {
                Some(a) => {
                    it.seek(a);
                    if it.valid() && it.key() == Some(a) {
                        it.next();
                    }
                }
                None => it.seek(&start),
            }
            while it.valid() && page.len() < COPY_PAGE {
                if let (Some(k), Some(v)) = (it.key(), it.value()) {
                    if !index_entries || names_row_of(v, table, partition) {
                        page.push((k.to_vec(), v.to_vec()));
                    }
                }
                it.next();
            }
            it.status()?;
            if page.len() >= COPY_PAGE {
                break;
            }
        }
        Ok(page)
    }

    /// Stores entries copied from another node as they are, in one synced write.
    pub fn put_entries(&self, entries: &[Entry]) -> Result<()> {
        // A page of a copy: rows without the log entries that name them, or before them.
        let _rewriting = self.rewriting();
        let mut batch = WriteBatchWithTransaction::<true>::default();
        let mut logs = HashSet::new();
        for (k, v) in entries {
            batch.put(k, v);
            if k.first() == Some(&keys::LOG_PREFIX) && k.len() >= 9 {
                let table = u32::from_be_bytes([k[1], k[2], k[3], k[4]]);
                let partition = u32::from_be_bytes([k[5], k[6], k[7], k[8]]);
                logs.insert((table, partition));
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.options.sync_commits);
        self.db().write_opt(batch, &options)?;
        // A copied log moves the partition's position: read it again from the entries.
        for (table, partition) in logs {
            self.forget_log_position(table, partition);
        }
        Ok(())
    }

    /// Removes every row, log entry and index entry of a partition, outside any transaction (after the
    /// partition moved to another node, or to clear a copy that did not complete), and lets
    /// it take writers again (for when it comes back).
    pub fn drop_partition_data(&self, table: u32, partition: u32) -> Result<()> {
        let _rewriting = self.rewriting();
        self.forget_log_position(table, partition);
        for (start, end, index_entries) in partition_ranges(table, partition) {
            if !index_entries {
                self.delete_range(&start, &end)?;
                continue;
            }
            // Index entries of all partitions share one range: only this one's go.
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end.clone());
            let mut it = self.db().raw_iterator_opt(ro);
            it.seek(&start);
            let mut batch = WriteBatchWithTransaction::<true>::default();
            while it.valid() {
                if let (Some(k), Some(v)) = (it.key(), it.value()) {
                    if names_row_of(v, table, partition) {
                        batch.delete(k);
                    }
                }
                it.next();
            }
            it.status()?;
            let mut options = WriteOptions::default();
            options.set_sync(self.options.sync_commits);
            self.db().write_opt(batch, &options)?;
        }
        self.reopen_partition(table, partition);
        Ok(())
    }
    /// How many rows this node's copy of a partition holds, and a digest (FNV-1a, 64 bits) of
    /// its rows and index entries in key order: equal copies have equal digests, so replicas
    /// can be compared without shipping them. Reads every entry; keep it off the async runtime.
    pub fn partition_digest(&self, table: u32, partition: u32) -> Result<PartitionDigest> {
        let mut digest = PartitionDigest {
            rows: 0,
            digest: 0xcbf2_9ce4_8422_2325,
        };
        for (start, end, index_entries) in partition_ranges(table, partition).into_iter().skip(1) {
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end);
            ro.fill_cache(false);
            let mut it = self.db().raw_iterator_opt(ro);
            it.seek(&start);
            while it.valid() {
                if let (Some(k), Some(v)) = (it.key(), it.value()) {
                    if !index_entries || names_row_of(v, table, partition) {
                        digest.rows += u64::from(!index_entries);
                        for part in [
                            &(k.len() as u64).to_be_bytes()[..],
                            k,
                            &(v.len() as u64).to_be_bytes(),
                            v,
                        ] {
                            for byte in part {
                                digest.digest = (digest.digest ^ u64::from(*byte))
                                    .wrapping_mul(0x0000_0100_0000_01b3);
                            }
                        }
                    }
                }
                it.next();
            }
            it.status()?;
        }
        Ok(digest)
    }
}

/// See [`Store::partition_digest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDigest {
    pub rows: u64,
    pub digest: u64,
}

/// Whether an index entry's value (a row key) names a row of `partition`.
fn names_row_of(value: &[u8], table: u32, partition: u32) -> bool {
    keys::partition_of_key(value) == Some((table, partition))
}

/// The key ranges of a partition in key order, each flagged when it holds the index entries
/// of every partition of the table (whose values say which partition each belongs to): its
/// log (`'l'`), its rows (`'r'`), then the table's index entries (`'x'`).
fn partition_ranges(table: u32, partition: u32) -> [(Vec<u8>, Vec<u8>, bool); 3] {
    [
        (
            keys::log_start(table, partition),
            keys::log_end(table, partition),
            false,
        ),
        (
            keys::partition_start(table, partition),
            keys::partition_end(table, partition),
            false,
        ),
        (
            keys::table_indexes_start(table),
            keys::table_indexes_end(table),
            true,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::store;
    use crate::Isolation;

    #[test]
    fn a_partition_is_copied_page_by_page_and_dropped() {
        let (_d, from) = store();
        let t = from.begin();
        for i in 0..(COPY_PAGE as u32 + 10) {
            t.put(&keys::row_key(5, 1, &i.to_be_bytes()), b"v").unwrap();
            t.put(&keys::row_key(5, 2, &i.to_be_bytes()), b"w").unwrap();
        }
        // Index entries of both partitions' rows, in the table's one index range.
        let entry = |partition: u32, i: u32| {
            let mut k = keys::index_start(5, 77);
            k.extend_from_slice(&i.to_be_bytes());
            k.extend_from_slice(&partition.to_be_bytes());
            k
        };
        for i in 0..3u32 {
            for p in [1, 2] {
                t.put(&entry(p, i), &keys::row_key(5, p, &i.to_be_bytes()))
                    .unwrap();
            }
        }
        t.commit().unwrap();
        let (_e, to) = store();
        let mut after: Option<Vec<u8>> = None;
        let mut copied = 0;
        loop {
            let page = from.partition_entries(5, 1, after.as_deref()).unwrap();
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            to.put_entries(&page).unwrap();
            copied += page.len();
        }
        // Every row of partition 1, its one log entry and its rows' index entries; nothing
        // of partition 2.
        assert_eq!(copied, COPY_PAGE + 10 + 1 + 3);
        // The copy's digest is the original's; another partition's is not.
        let digest = from.partition_digest(5, 1).unwrap();
        assert_eq!(digest.rows, COPY_PAGE as u64 + 10);
        assert_eq!(to.partition_digest(5, 1).unwrap(), digest);
        assert_ne!(from.partition_digest(5, 2).unwrap().digest, digest.digest);
        assert!(to.begin().get(&entry(1, 2)).unwrap().is_some());
        assert!(to.begin().get(&entry(2, 2)).unwrap().is_none());
        assert_eq!(to.partition_log_position(5, 1).unwrap(), 1);
        assert!(to
            .begin()
            .get(&keys::row_key(5, 2, &0u32.to_be_bytes()))
            .unwrap()
            .is_none());
        from.drop_partition_data(5, 1).unwrap();
        assert!(from.partition_entries(5, 1, None).unwrap().is_empty());
        assert!(from.begin().get(&entry(1, 0)).unwrap().is_none());
        assert!(from.begin().get(&entry(2, 0)).unwrap().is_some());
        assert_eq!(
            from.begin()
                .get(&keys::row_key(5, 2, &9u32.to_be_bytes()))
                .unwrap()
                .unwrap(),
            b"w"
        );
        let t = to.begin();
        t.put(&keys::row_key(5, 1, &0u32.to_be_bytes()), b"changed")
            .unwrap();
        t.commit().unwrap();
        assert_ne!(to.partition_digest(5, 1).unwrap(), digest);
    }

    #[test]
    fn waiting_for_writers_waits_for_open_transactions_of_the_partition() {
        let (_d, s) = store();
        let writer = s.begin_with(Isolation::ReadCommitted);
        writer.put(&keys::row_key(5, 1, b"k"), b"v").unwrap();
        let elsewhere = s.begin_with(Isolation::ReadCommitted);
        elsewhere.put(&keys::row_key(5, 2, b"k"), b"v").unwrap();
        assert!(!s.close_partition(5, 1, Duration::from_millis(50)));
        let open = s.partition_writers(5, 1);
        assert_eq!(open.len(), 1, "only the writer of partition 1: {open:?}");
        assert_eq!(open[0].0, writer.id());
        assert!(open[0].1 >= Duration::from_millis(50));
        // Given up: the partition takes writers again.
        writer.put(&keys::row_key(5, 1, b"j"), b"v").unwrap();
        writer.commit().unwrap();
        assert!(s.partition_writers(5, 1).is_empty());
        assert!(s.close_partition(5, 1, Duration::from_millis(50)));
        let late = s.begin_with(Isolation::ReadCommitted);
        assert!(matches!(
            late.put(&keys::row_key(5, 1, b"late"), b"v"),
            Err(StorageError::PartitionMoving { .. })
        ));
        assert!(
            s.bulk_load(5, true).is_err(),
            "no bulk load while a partition moves"
        );
        s.reopen_partition(5, 1);
        let load = s.bulk_load(5, true).unwrap();
        assert!(!s.close_partition(5, 3, Duration::from_millis(50)));
        load.abort();
        assert!(s.close_partition(5, 3, Duration::from_millis(50)));
        elsewhere.rollback();
    }
}
