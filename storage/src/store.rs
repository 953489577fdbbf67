//! The RocksDB-backed store and its snapshot-isolated transactions.
//!
//! Transactions are RocksDB optimistic transactions with a snapshot taken at begin: reads see the
//! snapshot plus the transaction's own writes, and commit fails with
//! [`StorageError::WriteConflict`] if any key it wrote was committed by someone else after the
//! snapshot. Commits are fsynced unless [`StoreOptions::sync_commits`] is off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::{BTreeSet, HashMap};

use parking_lot::{Mutex, RwLock};
use rocksdb::{
    OptimisticTransactionDB, OptimisticTransactionOptions, Options, ReadOptions, Transaction,
    WriteOptions,
};

use crate::keys;
use crate::{Result, StorageError};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync the write-ahead log on every commit (the default). Off trades the last commits
    /// before an OS crash for latency; a process crash alone still loses nothing.
    pub sync_commits: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { sync_commits: true }
    }
}

type Db = OptimisticTransactionDB;

/// Folder (inside the RocksDB directory) for a bulk load's sorted runs and files to ingest.
const BULK_DIR: &str = "shoal-bulk";

/// Log entries kept per partition; older ones are trimmed as new ones are written.
const LOG_ENTRIES_KEPT: u64 = 1024;

/// The next log position of each partition touched since the store was opened.
type Positions = Arc<Mutex<HashMap<(u32, u32), u64>>>;

/// Per-table barriers: commits that write a table hold it shared, a bulk load's final
/// check-and-ingest holds it exclusively.
type Barriers = Arc<Mutex<HashMap<u32, Arc<RwLock<()>>>>>;

/// An open data directory. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    options: StoreOptions,
    positions: Positions,
    barriers: Barriers,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store(sync_commits={})", self.options.sync_commits)
    }
}

impl Store {
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        let db = Db::open(&opts, path).map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") {
                StorageError::DirectoryLocked {
                    path: path.display().to_string(),
                }
            } else {
                StorageError::Engine(text)
            }
        })?;
        // Leftovers of bulk loads interrupted by a crash were never ingested: drop them.
        let _ = std::fs::remove_dir_all(path.join(BULK_DIR));
        Ok(Store {
            db: Arc::new(db),
            options,
            positions: Arc::new(Mutex::new(HashMap::new())),
            barriers: Arc::new(Mutex::new(HashMap::new())),
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn barrier(&self, table: u32) -> Arc<RwLock<()>> {
        self.barriers
            .lock()
            .entry(table)
            .or_insert_with(|| Arc::new(RwLock::new(())))
            .clone()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn bulk_dir(&self) -> PathBuf {
        self.path.join(BULK_DIR)
    }

    /// Starts a transaction whose reads see the database as of now.
    pub fn begin(&self) -> Txn {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(self.options.sync_commits);
        let mut txn_options = OptimisticTransactionOptions::default();
        txn_options.set_snapshot(true);
        let txn = self.db.transaction_opt(&write_options, &txn_options);
        // SAFETY: the transaction borrows the database; `TxnInner` keeps an `Arc` of the same
        // database and declares `txn` before `_db`, so the transaction is dropped first.
        let txn: Transaction<'static, Db> = unsafe { std::mem::transmute(txn) };
        Txn {
            inner: Mutex::new(Some(TxnInner {
                txn,
                _db: self.db.clone(),
                savepoints: 0,
                wrote: false,
                touched: BTreeSet::new(),
                store: self.clone(),
                holds_barrier: false,
            })),
        }
    }

    /// The last log position of a partition: how many committed transactions have written
    /// to it (positions only grow; an aborted transaction may leave a gap). Survives restarts.
    pub fn partition_log_position(&self, table: u32, partition: u32) -> Result<u64> {
        Ok(self.next_log_position(table, partition, false)? - 1)
    }

    /// The next position of a partition's log; with `allocate`, it is taken.
    fn next_log_position(&self, table: u32, partition: u32, allocate: bool) -> Result<u64> {
        let mut positions = self.positions.lock();
        let next = match positions.get(&(table, partition)) {
            Some(p) => *p,
            None => {
                let start = keys::log_start(table, partition);
                let last = self.last_key_in(&start, &keys::log_end(table, partition))?;
                last.and_then(|k| {
                    k.get(start.len()..start.len() + 8).map(|b| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        u64::from_be_bytes(a) + 1
                    })
                })
                .unwrap_or(1)
            }
        };
        positions.insert((table, partition), if allocate { next + 1 } else { next });
        Ok(next)
    }

    /// Removes every row and log entry of a table (after DROP TABLE), outside any transaction.
    pub fn drop_table_data(&self, table: u32) -> Result<()> {
        self.positions.lock().retain(|(t, _), _| *t != table);
        self.delete_range(&keys::table_start(table), &keys::table_end(table))?;
        let (log_start, log_end) = (
            keys::log_start(table, 0),
            keys::log_start(table.wrapping_add(1), 0),
        );
        self.delete_range(&log_start, &log_end)
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let (start, end) = (start.to_vec(), end.to_vec());
        let mut opts = WriteOptions::default();
        opts.set_sync(self.options.sync_commits);
        loop {
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end.clone());
            let mut it = self.db.raw_iterator_opt(ro);
            it.seek(&start);
            let mut batch = rocksdb::WriteBatchWithTransaction::<true>::default();
            while it.valid() && batch.len() < 10_000 {
                if let Some(k) = it.key() {
                    batch.delete(k);
                }
                it.next();
            }
            it.status()?;
            drop(it);
            if batch.is_empty() {
                return Ok(());
            }
            self.db.write_opt(batch, &opts)?;
        }
    }

    /// The last key of a key range, for recovering counters such as the hidden row id.
    pub fn last_key_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek_to_last();
        if it.valid() {
            if let Some(k) = it.key() {
                if k >= start {
                    return Ok(Some(k.to_vec()));
                }
            }
        }
        it.status()?;
        Ok(None)
    }
}

struct TxnInner {
    txn: Transaction<'static, Db>,
    _db: Arc<Db>,
    savepoints: usize,
    wrote: bool,
    /// Partitions this transaction wrote, for their log entries at commit.
    touched: BTreeSet<(u32, u32)>,
    store: Store,
    /// Set for a bulk load's own commit, which already holds its table's barrier.
    holds_barrier: bool,
}

impl TxnInner {
    /// Notes a write to `key`; the first write to a table also reads its fence.
    fn touch(&mut self, key: &[u8]) -> Result<()> {
        self.wrote = true;
        if let Some((table, partition)) = keys::partition_of_key(key) {
            if !self.touched.iter().any(|(t, _)| *t == table) {
                self.txn.get_for_update(keys::fence_key(table), false)?;
            }
            self.touched.insert((table, partition));
        }
        Ok(())
    }
}

impl TxnInner {
    fn read_options(&self) -> ReadOptions {
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&self.txn.snapshot());
        ro
    }
}

/// A snapshot-isolated transaction. Shared between the session and the scans of its statements,
/// hence the interior lock; every method is short and blocking (call from a blocking thread).
pub struct Txn {
    inner: Mutex<Option<TxnInner>>,
}

/// What a scan callback wants next.
pub enum ScanControl {
    Continue,
    Stop,
}

impl Txn {
    fn with<T>(&self, f: impl FnOnce(&mut TxnInner) -> Result<T>) -> Result<T> {
        let mut guard = self.inner.lock();
        let inner = guard.as_mut().ok_or(StorageError::TransactionFinished)?;
        f(inner)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|t| Ok(t.txn.get_opt(key, &t.read_options())?))
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.with(|t| {
            t.touch(key)?;
            Ok(t.txn.put(key, value)?)
        })
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.with(|t| {
            t.touch(key)?;
            Ok(t.txn.delete(key)?)
        })
    }

    /// Calls `f` for each key in `[start, end)` in order, starting after `after` when given, until
    /// `f` says stop. Returns the last key visited so that a caller can resume in a later call.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        after: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ScanControl>,
    ) -> Result<Option<Vec<u8>>> {
        self.with(|t| {
            let mut ro = t.read_options();
            ro.set_iterate_upper_bound(end.to_vec());
            let mut it = t.txn.raw_iterator_opt(ro);
            match after {
                Some(k) => {
                    it.seek(k);
                    if it.valid() && it.key() == Some(k) {
                        it.next();
                    }
                }
                None => it.seek(start),
            }
            let mut last = None;
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                let control = f(k, v)?;
                last = Some(k.to_vec());
                if matches!(control, ScanControl::Stop) {
                    break;
                }
                it.next();
            }
            it.status()?;
            Ok(last)
        })
    }

    /// Marks a point that [`Txn::rollback_to_savepoint`] returns to. Returns its depth.
    pub fn savepoint(&self) -> Result<usize> {
        self.with(|t| {
            t.txn.set_savepoint();
            t.savepoints += 1;
            Ok(t.savepoints)
        })
    }

    /// Undoes every write since the savepoint of `depth` (which stays set).
    pub fn rollback_to_savepoint(&self, depth: usize) -> Result<()> {
        self.with(|t| {
            while t.savepoints >= depth && t.savepoints > 0 {
                t.txn.rollback_to_savepoint()?;
                t.savepoints -= 1;
            }
            t.txn.set_savepoint();
            t.savepoints += 1;
            Ok(())
        })
    }

    /// Makes the writes durable and visible, or fails with `WriteConflict` and applies nothing.
    pub fn commit(&self) -> Result<()> {
        let inner = self
            .inner
            .lock()
            .take()
            .ok_or(StorageError::TransactionFinished)?;
        if !inner.wrote {
            return Ok(());
        }
        // One log entry per partition written. Positions are unique per partition, so
        // concurrent transactions never conflict on them.
        for (table, partition) in &inner.touched {
            let position = inner.store.next_log_position(*table, *partition, true)?;
            inner
                .txn
                .put(keys::log_key(*table, *partition, position), [])?;
            if position > LOG_ENTRIES_KEPT {
                inner.txn.delete(keys::log_key(
                    *table,
                    *partition,
                    position - LOG_ENTRIES_KEPT,
                ))?;
            }
        }
        // Hold the written tables' barriers (in table order) so that a bulk load's final
        // check-and-ingest never interleaves with this commit.
        let mut tables: Vec<u32> = inner.touched.iter().map(|(t, _)| *t).collect();
        tables.dedup();
        if inner.holds_barrier {
            tables.clear();
        }
        let barriers: Vec<_> = tables.iter().map(|t| inner.store.barrier(*t)).collect();
        let _guards: Vec<_> = barriers.iter().map(|b| b.read()).collect();
        inner.txn.commit()?;
        Ok(())
    }

    /// Records that this transaction wrote a partition by other means (a bulk load), so that
    /// its commit appends the partition's log entry.
    pub(crate) fn mark_written(&self, table: u32, partition: u32) -> Result<()> {
        self.with(|t| {
            t.wrote = true;
            t.holds_barrier = true;
            t.touched.insert((table, partition));
            Ok(())
        })
    }

    pub fn rollback(&self) {
        if let Some(inner) = self.inner.lock().take() {
            let _ = inner.txn.rollback();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions {
                sync_commits: false,
            },
        )
        .unwrap();
        (dir, s)
    }

    #[test]
    fn snapshot_reads_and_own_writes() {
        let (_d, s) = store();
        let a = s.begin();
        a.put(b"r1", b"v1").unwrap();
        a.commit().unwrap();
        let reader = s.begin();
        let writer = s.begin();
        writer.put(b"r1", b"v2").unwrap();
        assert_eq!(writer.get(b"r1").unwrap().unwrap(), b"v2");
        writer.commit().unwrap();
        assert_eq!(reader.get(b"r1").unwrap().unwrap(), b"v1");
    }

    #[test]
    fn write_write_conflict_fails_second_committer() {
        let (_d, s) = store();
        let a = s.begin();
        let b = s.begin();
        a.put(b"k", b"a").unwrap();
        b.put(b"k", b"b").unwrap();
        a.commit().unwrap();
        assert!(matches!(b.commit(), Err(StorageError::WriteConflict)));
        assert_eq!(s.begin().get(b"k").unwrap().unwrap(), b"a");
    }

    #[test]
    fn savepoints_undo_later_writes() {
        let (_d, s) = store();
        let t = s.begin();
        t.put(b"a", b"1").unwrap();
        let sp = t.savepoint().unwrap();
        t.put(b"b", b"2").unwrap();
        t.rollback_to_savepoint(sp).unwrap();
        t.put(b"c", b"3").unwrap();
        t.commit().unwrap();
        let r = s.begin();
        assert!(r.get(b"b").unwrap().is_none());
        assert!(r.get(b"c").unwrap().is_some());
    }

    #[test]
    fn scan_resumes_after_last_key() {
        let (_d, s) = store();
        let t = s.begin();
        for i in 0..10u8 {
            t.put(&[b'x', i], &[i]).unwrap();
        }
        t.commit().unwrap();
        let r = s.begin();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let mut n = 0;
            let last = r
                .scan(b"x", b"y", after.as_deref(), |_, v| {
                    seen.push(v[0]);
                    n += 1;
                    Ok(if n == 3 {
                        ScanControl::Stop
                    } else {
                        ScanControl::Continue
                    })
                })
                .unwrap();
            if n < 3 {
                break;
            }
            after = last;
        }
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn partition_log_positions_grow_without_conflicts_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = |pk: u8| keys::row_key(7, 0, &[pk]);
        {
            let s = Store::open(
                dir.path(),
                StoreOptions {
                    sync_commits: false,
                },
            )
            .unwrap();
            assert_eq!(s.partition_log_position(7, 0).unwrap(), 0);
            // Two concurrent writers of different rows in the same partition both commit.
            let a = s.begin();
            let b = s.begin();
            a.put(&key(1), b"a").unwrap();
            b.put(&key(2), b"b").unwrap();
            a.commit().unwrap();
            b.commit().unwrap();
            assert_eq!(s.partition_log_position(7, 0).unwrap(), 2);
            assert_eq!(s.partition_log_position(7, 1).unwrap(), 0);
            let read_only = s.begin();
            read_only.get(&key(1)).unwrap();
            read_only.commit().unwrap();
            assert_eq!(s.partition_log_position(7, 0).unwrap(), 2);
        }
        let s = Store::open(
            dir.path(),
            StoreOptions {
                sync_commits: false,
            },
        )
        .unwrap();
        assert_eq!(s.partition_log_position(7, 0).unwrap(), 2);
        let c = s.begin();
        c.delete(&key(1)).unwrap();
        c.commit().unwrap();
        assert_eq!(s.partition_log_position(7, 0).unwrap(), 3);
    }
}
