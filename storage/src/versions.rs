//! Partition versions: a token that names what a transaction reads of a partition, so that a
//! cache of decoded rows (the executor's resident chunks) can tell whether a reader would see
//! exactly what the cache holds without reading the rows.
//!
//! Almost every write of a partition's rows also writes the partition's next log entry, in the
//! same atomic RocksDB write (a commit, a prepared part's commit, a follower's apply, a
//! catch-up). So two snapshots that see the same last log position of a partition see the
//! same rows in it. The exceptions change rows without a log entry, or not atomically with
//! one: a bulk load ingests its files before the commit that writes its log entries, a moving
//! partition's copy arrives page by page, and range deletes (dropping a table, a partition's
//! copy, an index) run in batches. Each of those is a *rewrite*: it is counted when it starts
//! and when it ends, and a snapshot taken while one was under way promises nothing. A version
//! is the pair (last log position, rewrites finished before the snapshot): any rewrite, of any
//! partition, makes every earlier version stale. Rewrites are rare; commits are not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::SnapshotWithThreadMode;

use crate::store::Db;
use crate::{keys, Result, Store, Txn};

/// What a transaction reads of a partition, as [`Txn::partition_version`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionVersion {
    /// The last log position of the partition in the transaction's snapshot.
    pub log_position: u64,
    /// How many rewrites had finished when the snapshot was taken.
    pub rewrites: u64,
}

/// Rewrites started and finished since the store was opened.
#[derive(Debug, Default)]
pub(crate) struct Rewrites {
    started: AtomicU64,
    finished: AtomicU64,
}

/// A rewrite under way; finished when dropped.
pub(crate) struct Rewriting(Arc<Rewrites>);

impl Drop for Rewriting {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl Rewrites {
    /// How many rewrites finished, when none is under way. `finished` is read first: equal
    /// counts then mean no rewrite was under way between the two reads.
    fn settled(&self) -> Option<u64> {
        let finished = self.finished.load(Ordering::SeqCst);
        let started = self.started.load(Ordering::SeqCst);
        (started == finished).then_some(finished)
    }
}

impl Store {
    /// Counts a write that changes rows without their partition's log entry in the same
    /// atomic write, until the returned guard is dropped (see the module comment).
    pub(crate) fn rewriting(&self) -> Rewriting {
        self.rewrites.started.fetch_add(1, Ordering::SeqCst);
        Rewriting(self.rewrites.clone())
    }

    /// Takes a snapshot (with `take`) and says how many rewrites it holds whole: `None` when one
    /// was under way or started while it was taken.
    pub(crate) fn snapshot_between_rewrites<T>(
        &self,
        take: impl FnOnce() -> T,
    ) -> (T, Option<u64>) {
        let before = self.rewrites.settled();
        let snapshot = take();
        let after = self.rewrites.started.load(Ordering::SeqCst);
        (snapshot, before.filter(|n| *n == after))
    }

    /// A snapshot for a statement, with the rewrites it holds whole.
    pub(crate) fn statement_snapshot(&self) -> (SnapshotWithThreadMode<'static, Db>, Option<u64>) {
        self.snapshot_between_rewrites(|| self.snapshot())
    }
}

impl Txn {
    /// The version of `partition` of `table` this transaction reads: two transactions that
    /// read the same version read the same rows (see the module comment). `None` when there is
    /// no such promise: the transaction wrote the partition itself, or its snapshot was taken
    /// while a rewrite was under way. Fails as a scan does when this node cannot be sure it
    /// still leads what it reads, since a reader that trusts the version reads no row.
    pub fn partition_version(
        &self,
        table: u32,
        partition: u32,
    ) -> Result<Option<PartitionVersion>> {
        self.with(|t| {
            let Some(rewrites) = t.rewrites_seen else {
                return Ok(None);
            };
            if t.touched.contains(&(table, partition)) {
                return Ok(None);
            }
            let start = keys::log_start(table, partition);
            let mut ro = t.read_options();
            ro.set_iterate_lower_bound(start);
            ro.set_iterate_upper_bound(keys::log_end(table, partition));
            let mut it = t.store.db().raw_iterator_opt(ro);
            it.seek_to_last();
            let log_position = match it.key() {
                Some(key) if it.valid() => keys::log_position_of(key).unwrap_or(0),
                _ => 0,
            };
            it.status()?;
            t.store.confirm_leadership()?;
            Ok(Some(PartitionVersion {
                log_position,
                rewrites,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{keys, Isolation, Store, StoreOptions};

    fn open(dir: &std::path::Path) -> Store {
        Store::open(
            dir,
            StoreOptions {
                sync_commits: false,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn a_version_changes_with_each_commit_to_its_partition_and_with_each_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let row = |p: u32, k: &[u8]| keys::row_key(7, p, k);
        let version = |p: u32| {
            store
                .begin_with(Isolation::ReadCommitted)
                .partition_version(7, p)
                .unwrap()
                .unwrap()
        };
        let empty = version(0);
        assert_eq!(empty.log_position, 0);

        let writer = store.begin();
        writer.put(&row(0, b"a"), b"1").unwrap();
        // A transaction that wrote the partition reads its own rows: no version.
        assert_eq!(writer.partition_version(7, 0).unwrap(), None);
        assert!(writer.partition_version(7, 1).unwrap().is_some());
        // An older snapshot keeps its version while others see the commit.
        let before = store.begin();
        writer.commit().unwrap();
        assert_eq!(before.partition_version(7, 0).unwrap(), Some(empty));
        let after_commit = version(0);
        assert_ne!(after_commit, empty);
        assert_eq!(
            version(1),
            empty,
            "another partition's commit changes nothing"
        );

        // Within READ COMMITTED, the next statement sees the next version.
        let reader = store.begin_with(Isolation::ReadCommitted);
        assert_eq!(reader.partition_version(7, 0).unwrap(), Some(after_commit));
        let rewrite = store.rewriting();
        reader.new_statement_snapshot().unwrap();
        assert_eq!(reader.partition_version(7, 0).unwrap(), None);
        drop(rewrite);
        reader.new_statement_snapshot().unwrap();
        let after_rewrite = reader.partition_version(7, 0).unwrap().unwrap();
        assert_eq!(after_rewrite.log_position, after_commit.log_position);
        assert_ne!(after_rewrite, after_commit);
    }

    #[test]
    fn a_bulk_load_is_a_rewrite_from_its_ingestion_to_its_log_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let before = store.begin_with(Isolation::ReadCommitted);
        let old = before.partition_version(9, 0).unwrap().unwrap();
        let mut load = store.bulk_load(9, true).unwrap();
        load.add(keys::row_key(9, 0, b"k"), b"v".to_vec()).unwrap();
        load.finish().unwrap();
        let new = store
            .begin_with(Isolation::ReadCommitted)
            .partition_version(9, 0)
            .unwrap()
            .unwrap();
        assert_ne!(new, old);
        assert!(new.log_position > old.log_position);
        assert_eq!(before.partition_version(9, 0).unwrap(), Some(old));
    }
}
