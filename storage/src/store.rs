//! The RocksDB-backed store and its transactions.
//!
//! Transactions are RocksDB optimistic transactions plus Shoal's row locks ([`crate::locks`]).
//! Two isolation levels, as PostgreSQL names them:
//! - READ COMMITTED: every statement reads a new snapshot ([`Txn::new_statement_snapshot`]).
//!   Writing a row that exists first takes the row's lock (waiting for its other writer to
//!   finish), then checks that the row is still what the statement saw; if not, the write
//!   fails with [`StorageError::RowChangedSinceStatementStart`] and the caller runs the
//!   statement again on a fresh snapshot.
//! - REPEATABLE READ (snapshot isolation): one snapshot for the whole transaction; a row
//!   changed by someone else after it fails the write with [`StorageError::WriteConflict`],
//!   after waiting for the row's lock like PostgreSQL does.
//!
//! Commit validation by RocksDB stays as the last line: a key written by someone else after it
//! was tracked fails the commit. Commits are fsynced unless [`StoreOptions::sync_commits`] is off.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BlockBasedOptions, Cache, DBAccess, DBRawIteratorWithThreadMode, OptimisticTransactionDB,
    OptimisticTransactionOptions, Options, ReadOptions, ReadTier, SnapshotWithThreadMode,
    Transaction, WriteOptions,
};

use crate::keys;
use crate::locks::LockTable;
use crate::moves::{WriterCounts, Writing};
use crate::{Result, StorageError};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync the write-ahead log on every commit (the default). Off trades the last commits
    /// before an OS crash for latency; a process crash alone still loses nothing.
    pub sync_commits: bool,
    /// Memory for uncompressed data blocks, so that scans of data read before skip the
    /// decompression (RocksDB's own default is 8 MiB). Filled on demand.
    pub block_cache_bytes: usize,
    /// Lock every key a transaction writes, not only rows that exist (cluster mode): a
    /// prepared transaction of a distributed commit is applied without RocksDB's conflict
    /// check, so no other writer may hold a key it wrote (see [`crate::prepared`]).
    pub lock_every_write: bool,
}

/// The block cache of a store opened with default options.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 1024 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync_commits: true,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            lock_every_write: false,
        }
    }
}

pub(crate) type Db = OptimisticTransactionDB;

/// Folder (inside the RocksDB directory) for a bulk load's sorted runs and files to ingest.
const BULK_DIR: &str = "shoal-bulk";

/// Log entries kept per partition; older ones are trimmed as new ones are written.
const LOG_ENTRIES_KEPT: u64 = 1024;

/// The next log position of each partition touched since the store was opened.
type Positions = Arc<Mutex<HashMap<(u32, u32), u64>>>;

/// Per-table barriers: commits that write a table hold it shared, a bulk load's final
/// check-and-ingest holds it exclusively.
type Barriers = Arc<Mutex<HashMap<u32, Arc<RwLock<()>>>>>;

/// Per table, how many prepared transactions wrote it (a bulk load waits for none).
pub(crate) type PreparedTables = Arc<Mutex<HashMap<u32, usize>>>;

/// The isolation level of a transaction (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    RepeatableRead,
}

/// The entries of a key range (a table's rows, an index's entries) and their stored size, as
/// `Store::footprint` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    pub rows: u64,
    pub bytes: u64,
}

/// An open data directory. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    pub(crate) options: StoreOptions,
    positions: Positions,
    barriers: Barriers,
    pub(crate) prepared_tables: PreparedTables,
    /// Who writes which partition now (a partition moving away waits for none).
    pub(crate) writers: WriterCounts,
    pub(crate) locks: Arc<LockTable>,
    next_txn_id: Arc<AtomicU64>,
    path: PathBuf,
    /// Commit order, seals and the replicator of partitions with followers.
    pub(crate) replicas: Arc<crate::replication::ReplicaState>,
    /// Writes that change rows without a log entry (see [`crate::versions`]).
    pub(crate) rewrites: Arc<crate::versions::Rewrites>,
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
        let mut tables = BlockBasedOptions::default();
        tables.set_block_cache(&Cache::new_lru_cache(options.block_cache_bytes));
        // Larger blocks than the 4 KiB default: scans dominate, and compress better.
        tables.set_block_size(16 * 1024);
        // Point reads of absent keys (inserts checking for duplicates) skip most files.
        tables.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&tables);
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
            prepared_tables: Arc::new(Mutex::new(HashMap::new())),
            writers: Arc::default(),
            locks: Arc::new(LockTable::default()),
            next_txn_id: Arc::new(AtomicU64::new(1)),
            path: path.to_path_buf(),
            replicas: Arc::default(),
            rewrites: Arc::default(),
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

    /// Starts a snapshot-isolated (REPEATABLE READ) transaction.
    pub fn begin(&self) -> Txn {
        self.begin_with(Isolation::RepeatableRead)
    }

    pub fn begin_with(&self, isolation: Isolation) -> Txn {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(self.options.sync_commits);
        let mut txn_options = OptimisticTransactionOptions::default();
        // READ COMMITTED tracks each written key from the moment it is written (after its lock).
        txn_options.set_snapshot(isolation == Isolation::RepeatableRead);
        let (txn, mut rewrites_seen) = self
            .snapshot_between_rewrites(|| self.db.transaction_opt(&write_options, &txn_options));
        // SAFETY: the transaction and the snapshot borrow the database; `TxnInner` keeps an
        // `Arc` of the same database and declares both before `_db`, so they are dropped first.
        let txn: Transaction<'static, Db> = unsafe { std::mem::transmute(txn) };
        let statement_snapshot = match isolation {
            Isolation::ReadCommitted => {
                let (snapshot, seen) = self.statement_snapshot();
                rewrites_seen = seen;
                Some(snapshot)
            }
            Isolation::RepeatableRead => None,
        };
        let id = self.next_txn_id();
        Txn {
            inner: Mutex::new(Some(TxnInner {
                txn,
                statement_snapshot,
                rewrites_seen,
                _db: self.db.clone(),
                isolation,
                locks: HeldLocks {
                    table: self.locks.clone(),
                    txn: id,
                    keys: Vec::new(),
                },
                savepoints: 0,
                wrote: false,
                touched: BTreeSet::new(),
                fences: HashMap::new(),
                writing: Writing::new(self.writers.clone(), id),
                prepared: None,
                store: self.clone(),
                holds_barrier: false,
            })),
            interrupted: AtomicBool::new(false),
            id,
            statements: AtomicU64::new(0),
        }
    }

    /// A number no other transaction (or bulk load) of this store since it opened has.
    pub(crate) fn next_txn_id(&self) -> u64 {
        self.next_txn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> SnapshotWithThreadMode<'static, Db> {
        let snapshot = self.db.snapshot();
        // SAFETY: as in `begin_with`: only stored in `TxnInner` ahead of its `Arc` of the db.
        unsafe { std::mem::transmute(snapshot) }
    }

    /// The last log position of a partition: how many committed transactions have written
    /// to it (positions only grow; an aborted transaction may leave a gap). Survives restarts.
    pub fn partition_log_position(&self, table: u32, partition: u32) -> Result<u64> {
        Ok(self.next_log_position(table, partition, false)? - 1)
    }

    /// The next position of a partition's log; with `allocate`, it is taken.
    pub(crate) fn next_log_position(
        &self,
        table: u32,
        partition: u32,
        allocate: bool,
    ) -> Result<u64> {
        let mut positions = self.positions.lock();
        let next = match positions.get(&(table, partition)) {
            Some(p) => *p,
            None => {
                let start = keys::log_start(table, partition);
                let last = self.last_key_in(&start, &keys::log_end(table, partition))?;
                last.and_then(|k| keys::log_position_of(&k))
                    .map_or(1, |last| last + 1)
            }
        };
        positions.insert((table, partition), if allocate { next + 1 } else { next });
        Ok(next)
    }

    /// Removes every row, index entry and log entry of a table (after DROP TABLE), outside any
    /// transaction.
    pub fn drop_table_data(&self, table: u32) -> Result<()> {
        self.positions.lock().retain(|(t, _), _| *t != table);
        self.delete_range(&keys::table_start(table), &keys::table_end(table))?;
        self.delete_range(
            &keys::table_indexes_start(table),
            &keys::table_indexes_end(table),
        )?;
        let (log_start, log_end) = (
            keys::log_start(table, 0),
            keys::log_start(table.wrapping_add(1), 0),
        );
        self.delete_range(&log_start, &log_end)
    }

    /// Removes the entries of a dropped index, outside any transaction.
    pub fn drop_index_data(&self, table: u32, index: u32) -> Result<()> {
        self.delete_range(
            &keys::index_start(table, index),
            &keys::index_end(table, index),
        )
    }

    /// Records the next log position of a partition whose entries were written by other means
    /// than a commit here (a follower applying its leader's).
    pub(crate) fn set_next_log_position(&self, table: u32, partition: u32, next: u64) {
        self.positions.lock().insert((table, partition), next);
    }

    /// Forgets the cached next log position of a partition whose log was removed.
    pub(crate) fn forget_log_position(&self, table: u32, partition: u32) {
        self.positions.lock().remove(&(table, partition));
    }

    pub(crate) fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        // Deleted in batches, without log entries.
        let _rewriting = self.rewriting();
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

    /// How many rows a table has and how many bytes its keys and values take.
    pub fn table_footprint(&self, table: u32) -> Result<Footprint> {
        self.footprint(&keys::table_start(table), &keys::table_end(table))
    }

    /// How many entries `[start, end)` holds and how many bytes their keys and values take,
    /// counted over the latest committed state. It reads every entry (the engine behind
    /// optimistic transactions offers no size estimate), so callers keep it off the async
    /// runtime.
    pub fn footprint(&self, start: &[u8], end: &[u8]) -> Result<Footprint> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        ro.fill_cache(false);
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(start);
        let mut footprint = Footprint::default();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                footprint.rows += 1;
                footprint.bytes += (k.len() + v.len()) as u64;
            }
            it.next();
        }
        it.status()?;
        Ok(footprint)
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

/// The log position that writing `position` pushes out of the kept window, if any.
pub(crate) fn trimmed_log_position(position: u64) -> Option<u64> {
    (position > LOG_ENTRIES_KEPT).then(|| position - LOG_ENTRIES_KEPT)
}

/// A partition log entry to write, and the older one it pushes out of the kept window.
pub(crate) type LogEntry = (Vec<u8>, Option<Vec<u8>>);

pub(crate) struct TxnInner {
    pub(crate) txn: Transaction<'static, Db>,
    /// READ COMMITTED: the current statement's snapshot.
    statement_snapshot: Option<SnapshotWithThreadMode<'static, Db>>,
    /// The rewrites the snapshot read holds whole; `None` when one was under way (see
    /// [`crate::versions`]).
    pub(crate) rewrites_seen: Option<u64>,
    _db: Arc<Db>,
    isolation: Isolation,
    /// Released when the transaction ends, whichever way (after the commit when it commits).
    pub(crate) locks: HeldLocks,
    savepoints: usize,
    pub(crate) wrote: bool,
    /// Partitions this transaction wrote, for their log entries at commit.
    pub(crate) touched: BTreeSet<(u32, u32)>,
    /// Each written table's fence as this transaction first read it: a prepare checks that no
    /// bulk load rewrote it since.
    pub(crate) fences: HashMap<u32, Option<Vec<u8>>>,
    /// Counts this transaction among the writers of each partition it touched.
    writing: Writing,
    /// The key of its durable record once prepared (see [`crate::prepared`]).
    pub(crate) prepared: Option<Vec<u8>>,
    pub(crate) store: Store,
    /// Set for a bulk load's own commit, which already holds its table's barrier.
    holds_barrier: bool,
}

/// The row locks a transaction holds.
pub(crate) struct HeldLocks {
    pub(crate) table: Arc<LockTable>,
    pub(crate) txn: u64,
    pub(crate) keys: Vec<Vec<u8>>,
}

impl Drop for HeldLocks {
    fn drop(&mut self) {
        self.table.release(self.txn, &self.keys);
    }
}

impl TxnInner {
    /// Notes a write to `key`; the first write to a table also reads its fence. A row key is
    /// locked and checked against what the statement saw first.
    fn touch(&mut self, key: &[u8], interrupted: &AtomicBool) -> Result<()> {
        if self.prepared.is_some() {
            return Err(StorageError::TransactionPrepared);
        }
        self.wrote = true;
        if let Some((table, partition)) = keys::partition_of_key(key) {
            if !self.touched.iter().any(|(t, _)| *t == table) {
                let fence = self.txn.get_for_update(keys::fence_key(table), false)?;
                self.fences.insert(table, fence);
            }
            self.note_written(table, partition)?;
            self.check_row_unchanged(key, interrupted)?;
        } else if self.store.options.lock_every_write {
            self.lock(key, interrupted)?;
        }
        Ok(())
    }

    /// Records that this transaction writes `partition` of `table`.
    pub(crate) fn note_written(&mut self, table: u32, partition: u32) -> Result<()> {
        if !self.touched.contains(&(table, partition)) {
            self.writing.enter(table, partition)?;
            self.touched.insert((table, partition));
        }
        Ok(())
    }

    /// Takes `key`'s row lock until the transaction ends.
    pub(crate) fn lock(&mut self, key: &[u8], interrupted: &AtomicBool) -> Result<()> {
        if self.locks.table.lock(self.locks.txn, key, interrupted)? {
            self.locks.keys.push(key.to_vec());
        }
        Ok(())
    }

    /// Before writing a row: wait for its lock if it exists, then make sure nobody committed a
    /// change to it after this statement's (READ COMMITTED) or transaction's snapshot.
    fn check_row_unchanged(&mut self, key: &[u8], interrupted: &AtomicBool) -> Result<()> {
        let seen = self.txn.get_opt(key, &self.read_options())?;
        if seen.is_some() || self.store.options.lock_every_write {
            self.lock(key, interrupted)?;
        }
        let latest = self.txn.get_for_update(key, true)?;
        if latest == seen {
            return Ok(());
        }
        Err(match self.isolation {
            Isolation::ReadCommitted => StorageError::RowChangedSinceStatementStart,
            Isolation::RepeatableRead => StorageError::WriteConflict,
        })
    }

    /// The log entry of each partition written (taking its position), with the entry that
    /// falls out of the kept window.
    pub(crate) fn log_entries(&self) -> Result<Vec<LogEntry>> {
        self.touched
            .iter()
            .map(|(table, partition)| {
                let position = self.store.next_log_position(*table, *partition, true)?;
                let trimmed = trimmed_log_position(position)
                    .map(|old| keys::log_key(*table, *partition, old));
                Ok((keys::log_key(*table, *partition, position), trimmed))
            })
            .collect()
    }

    pub(crate) fn read_options(&self) -> ReadOptions {
        let mut ro = ReadOptions::default();
        match &self.statement_snapshot {
            Some(snapshot) => ro.set_snapshot(snapshot),
            None => ro.set_snapshot(&self.txn.snapshot()),
        }
        ro
    }
}

/// A transaction. Shared between the session and the scans of its statements, hence the
/// interior lock; every method is blocking (call from a blocking thread) and short, except a
/// write that waits for a row lock.
pub struct Txn {
    pub(crate) inner: Mutex<Option<TxnInner>>,
    /// Set by [`Txn::interrupt`]; outside the lock, which a waiting writer holds.
    pub(crate) interrupted: AtomicBool,
    /// Unique among this store's transactions since it was opened.
    id: u64,
    /// How many statements took a snapshot of their own (READ COMMITTED) so far.
    statements: AtomicU64,
}

/// Calls `f` for each entry from `start` (or after `after`) until the iterator's upper bound
/// or until `f` says stop; the last key visited.
fn walk<D: DBAccess>(
    mut it: DBRawIteratorWithThreadMode<'_, D>,
    start: &[u8],
    after: Option<&[u8]>,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<ScanControl>,
) -> Result<Option<Vec<u8>>> {
    match after {
        Some(k) => {
            it.seek(k);
            if it.valid() && it.key() == Some(k) {
                it.next();
            }
        }
        None => it.seek(start),
    }
    let mut last = Vec::new();
    let mut visited = false;
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        let control = f(k, v)?;
        // Reuses one buffer: a scan visits millions of keys.
        last.clear();
        last.extend_from_slice(k);
        visited = true;
        if matches!(control, ScanControl::Stop) {
            break;
        }
        it.next();
    }
    it.status()?;
    Ok(visited.then_some(last))
}

/// What a scan callback wants next.
pub enum ScanControl {
    Continue,
    Stop,
}

impl Txn {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut TxnInner) -> Result<T>) -> Result<T> {
        let mut guard = self.inner.lock();
        let inner = guard.as_mut().ok_or(StorageError::TransactionFinished)?;
        f(inner)
    }

    /// Makes a write that waits for a row lock give up with [`StorageError::Interrupted`]
    /// (the statement was cancelled or timed out). The transaction is of no further use.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
    }

    /// Unique among the transactions of this store since it was opened.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The number of the current statement: how many times [`Txn::new_statement_snapshot`]
    /// was called. Parts of this transaction on other nodes take a new snapshot only when it
    /// changes, so that what a statement writes there is checked against what it read there.
    pub fn statement(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn isolation(&self) -> Result<Isolation> {
        self.with(|t| Ok(t.isolation))
    }

    /// READ COMMITTED: the next reads see every commit made until now. A no-op for REPEATABLE
    /// READ, whose snapshot is the transaction's.
    pub fn new_statement_snapshot(&self) -> Result<()> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.with(|t| {
            if t.isolation == Isolation::ReadCommitted {
                let (snapshot, seen) = t.store.statement_snapshot();
                t.statement_snapshot = Some(snapshot);
                t.rewrites_seen = seen;
            }
            Ok(())
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|t| {
            let value = t.txn.get_opt(key, &t.read_options())?;
            t.store.confirm_leadership()?;
            Ok(value)
        })
    }

    /// [`Txn::get`] answered from memory (memtables and block cache) without waiting for the
    /// disk or for another user of the transaction; `None` when it cannot be, so that an async
    /// caller reads on a blocking thread instead.
    pub fn get_if_cached(&self, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        let Some(mut guard) = self.inner.try_lock() else {
            return Ok(None);
        };
        let t = guard.as_mut().ok_or(StorageError::TransactionFinished)?;
        let mut ro = t.read_options();
        ro.set_read_tier(ReadTier::BlockCache);
        match t.txn.get_opt(key, &ro) {
            Ok(value) => {
                t.store.confirm_leadership()?;
                Ok(Some(value))
            }
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.with(|t| {
            t.touch(key, &self.interrupted)?;
            Ok(t.txn.put(key, value)?)
        })
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.with(|t| {
            t.touch(key, &self.interrupted)?;
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
        f: impl FnMut(&[u8], &[u8]) -> Result<ScanControl>,
    ) -> Result<Option<Vec<u8>>> {
        self.with(|t| {
            let mut ro = t.read_options();
            ro.set_iterate_upper_bound(end.to_vec());
            // Without writes of its own, the transaction sees what the database holds at its
            // snapshot: iterating the database skips merging an empty write batch at every row.
            let last = if t.wrote {
                walk(t.txn.raw_iterator_opt(ro), start, after, f)
            } else {
                walk(t.store.db().raw_iterator_opt(ro), start, after, f)
            }?;
            t.store.confirm_leadership()?;
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
        if inner.prepared.is_some() {
            return crate::prepared::commit_prepared(inner);
        }
        if !inner.wrote {
            return Ok(());
        }
        if let Some(replicator) = inner.store.replicator_for(&inner.touched) {
            return crate::replication::commit_replicated(inner, replicator.as_ref());
        }
        // One log entry per partition written. Positions are unique per partition, so
        // concurrent transactions never conflict on them.
        for (key, trimmed) in inner.log_entries()? {
            inner.txn.put(key, [])?;
            if let Some(old) = trimmed {
                inner.txn.delete(old)?;
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
            // The bulk load is counted among the table's writers already.
            t.touched.insert((table, partition));
            Ok(())
        })
    }

    pub fn rollback(&self) {
        if let Some(inner) = self.inner.lock().take() {
            if inner.prepared.is_some() {
                crate::prepared::forget_prepared(&inner);
                crate::prepared::tell_followers_rolled_back(&inner);
            }
            let _ = inner.txn.rollback();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions {
                sync_commits: false,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        (dir, s)
    }

    #[test]
    fn reads_from_memory_answer_as_reads() {
        let (_dir, s) = store();
        let writer = s.begin();
        writer.put(b"k", b"v").unwrap();
        writer.commit().unwrap();
        let reader = s.begin();
        assert_eq!(
            reader.get_if_cached(b"k").unwrap(),
            Some(Some(b"v".to_vec()))
        );
        assert_eq!(reader.get_if_cached(b"absent").unwrap(), Some(None));
        // Its own uncommitted writes too.
        reader.put(b"mine", b"1").unwrap();
        assert_eq!(
            reader.get_if_cached(b"mine").unwrap(),
            Some(Some(b"1".to_vec()))
        );
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
                    ..StoreOptions::default()
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
                ..StoreOptions::default()
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
