//! Prepared transactions: the first phase of a commit that spans nodes.
//!
//! A transaction that wrote partitions of several nodes commits in two phases. Each node's
//! part is first *prepared* ([`Txn::prepare`]): its writes are stored durably under a record
//! `'p' | id` but not applied, and every key it wrote stays locked, so that nothing another
//! transaction does can make applying them fail. Once the decision is recorded (in etcd, by
//! the node the client talks to), each part is applied ([`Txn::commit`]: the writes, the
//! partitions' log entries and the removal of the record in one atomic, synced write) or
//! dropped ([`Txn::rollback`]). A node that restarts finds its undecided parts with
//! [`Store::prepared_transactions`], locks their keys again and waits for the decision.
//!
//! Applying a prepared part is a plain write, without RocksDB's optimistic conflict check
//! (which also fails when the memtables no longer hold enough history, something a part that
//! waits for its decision cannot rule out). It is safe because, in a cluster, every writer
//! locks every key it writes ([`crate::StoreOptions::lock_every_write`]), and a bulk load,
//! the one writer that takes no row locks, refuses a table that prepared parts wrote and is
//! refused by the prepare of a part that wrote a table it loaded since (the table's fence).

use std::collections::BTreeSet;

use rocksdb::{WriteBatchIterator, WriteBatchWithTransaction, WriteOptions};

use crate::keys;
use crate::store::TxnInner;
use crate::{Isolation, ReplicationFailure, Result, StorageError, Store, Txn};

/// Records of prepared transactions: `'p' | id`.
const PREPARED_PREFIX: u8 = b'p';

fn record_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(PREPARED_PREFIX);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Collects the keys of a write batch.
struct BatchKeys(Vec<Vec<u8>>);

impl WriteBatchIterator for BatchKeys {
    fn put(&mut self, key: &[u8], _value: &[u8]) {
        self.0.push(key.to_vec());
    }

    fn delete(&mut self, key: &[u8]) {
        self.0.push(key.to_vec());
    }
}

fn synced(store: &Store) -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(store.options.sync_commits);
    options
}

/// The tables a transaction wrote, ascending (the order barriers are taken in).
fn written_tables(inner: &TxnInner) -> Vec<u32> {
    inner
        .touched
        .iter()
        .map(|(t, _)| *t)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl Txn {
    /// Makes this transaction's writes durable without applying them, under `id` (unique in
    /// the cluster); afterwards it takes no more writes and only commits or rolls back. Fails
    /// with [`StorageError::WriteConflict`] when a bulk load wrote one of its tables since its
    /// first write there. Preparing twice is the same as once.
    pub fn prepare(&self, id: &str) -> Result<()> {
        self.with(|t| {
            if t.prepared.is_some() {
                return Ok(());
            }
            let batch = t.txn.get_writebatch();
            let mut written = BatchKeys(Vec::new());
            batch.iterate(&mut written);
            // Already held when every write locks; taken here otherwise.
            for key in &written.0 {
                t.lock(key, &self.interrupted)?;
            }
            let tables = written_tables(t);
            let barriers: Vec<_> = tables.iter().map(|tb| t.store.barrier(*tb)).collect();
            let _shared: Vec<_> = barriers.iter().map(|b| b.read()).collect();
            for table in &tables {
                let seen = t.fences.get(table).cloned().flatten();
                if t.store.db().get(keys::fence_key(*table))? != seen {
                    return Err(StorageError::WriteConflict);
                }
            }
            // The followers keep a copy first, so that a failover does not lose the part.
            if let Some(replicator) = t.store.replicator_for(&t.touched) {
                let copies = crate::replication::prepared_copies(
                    &batch,
                    &t.touched,
                    replicator.as_ref(),
                    id,
                );
                replicator
                    .replicate(&copies)
                    .map_err(|failure| match failure {
                        ReplicationFailure::Refused(why) | ReplicationFailure::Unconfirmed(why) => {
                            StorageError::ReplicationRefused(why)
                        }
                    })?;
            }
            let key = record_key(id);
            let mut record = WriteBatchWithTransaction::<true>::default();
            record.put(&key, batch.data());
            t.store.db().write_opt(record, &synced(&t.store))?;
            count_prepared(&t.store, &tables, true);
            t.prepared = Some(key);
            Ok(())
        })
    }

    /// Whether [`Txn::prepare`] succeeded (and the transaction has not ended since).
    pub fn is_prepared(&self) -> bool {
        self.with(|t| Ok(t.prepared.is_some())).unwrap_or(false)
    }
}

/// Counts (or uncounts) a prepared transaction on each table it wrote.
fn count_prepared(store: &Store, tables: &[u32], prepared: bool) {
    let mut counts = store.prepared_tables.lock();
    for table in tables {
        let count = counts.entry(*table).or_default();
        if prepared {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
    }
    counts.retain(|_, c| *c > 0);
}

/// Applies a prepared transaction: its writes, its partitions' log entries and the removal
/// of its record, in one synced write.
pub(crate) fn commit_prepared(inner: TxnInner) -> Result<()> {
    if let Some(replicator) = inner.store.replicator_for(&inner.touched) {
        return crate::replication::commit_replicated(inner, replicator.as_ref());
    }
    let mut batch = inner.txn.get_writebatch();
    for (key, trimmed) in inner.log_entries()? {
        batch.put(key, []);
        if let Some(old) = trimmed {
            batch.delete(old);
        }
    }
    if let Some(record) = &inner.prepared {
        batch.delete(record);
    }
    let tables = written_tables(&inner);
    {
        let barriers: Vec<_> = tables.iter().map(|t| inner.store.barrier(*t)).collect();
        let _shared: Vec<_> = barriers.iter().map(|b| b.read()).collect();
        inner.store.db().write_opt(batch, &synced(&inner.store))?;
    }
    uncount_prepared(&inner);
    // The transaction object's own copy of the writes is discarded; its locks go with it.
    let _ = inner.txn.rollback();
    Ok(())
}

/// Stops counting a prepared transaction that was applied.
pub(crate) fn uncount_prepared(inner: &TxnInner) {
    count_prepared(&inner.store, &written_tables(inner), false);
}

/// Drops a prepared transaction's record (it rolls back).
pub(crate) fn forget_prepared(inner: &TxnInner) {
    if let Some(record) = &inner.prepared {
        let mut batch = WriteBatchWithTransaction::<true>::default();
        batch.delete(record);
        if let Err(e) = inner.store.db().write_opt(batch, &synced(&inner.store)) {
            // The record stays: the next start finds it and asks for the decision again.
            tracing::warn!("could not remove a prepared transaction's record: {e}");
        }
        count_prepared(&inner.store, &written_tables(inner), false);
    }
}

/// Tells the followers that a prepared transaction rolled back (see [`Replicator`]).
///
/// [`Replicator`]: crate::Replicator
pub(crate) fn tell_followers_rolled_back(inner: &TxnInner) {
    if let (Some(record), Some(replicator)) =
        (&inner.prepared, inner.store.replicator_for(&inner.touched))
    {
        let partitions: Vec<_> = inner.touched.iter().copied().collect();
        replicator.forget_prepared(&crate::replication::prepared_id(record), &partitions);
    }
}

impl Store {
    /// The transactions prepared before this store was opened and neither committed nor
    /// rolled back since, by id, each holding its keys' locks again.
    pub fn prepared_transactions(&self) -> Result<Vec<(String, Txn)>> {
        let mut records = Vec::new();
        let mut it = self.db().raw_iterator();
        it.seek([PREPARED_PREFIX]);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if k.first() != Some(&PREPARED_PREFIX) {
                break;
            }
            records.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status()?;
        drop(it);
        let mut found = Vec::with_capacity(records.len());
        for (key, data) in records {
            let id = String::from_utf8_lossy(&key[1..]).into_owned();
            let txn = self.begin_with(Isolation::ReadCommitted);
            txn.with(|t| {
                let batch = WriteBatchWithTransaction::<true>::from_data(&data);
                t.txn.rebuild_from_writebatch(&batch)?;
                let mut written = BatchKeys(Vec::new());
                batch.iterate(&mut written);
                let nobody = std::sync::atomic::AtomicBool::new(false);
                for k in &written.0 {
                    t.lock(k, &nobody)?;
                    if let Some((table, partition)) = keys::partition_of_key(k) {
                        t.note_written(table, partition)?;
                    }
                }
                t.wrote = !written.0.is_empty();
                count_prepared(self, &written_tables(t), true);
                t.prepared = Some(key);
                Ok(())
            })?;
            found.push((id, txn));
        }
        Ok(found)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::StoreOptions;

    /// A store as a cluster node opens it (every write locked), without fsync.
    pub(crate) fn open(dir: &std::path::Path) -> Store {
        Store::open(
            dir,
            StoreOptions {
                sync_commits: false,
                lock_every_write: true,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn a_prepared_transaction_is_invisible_until_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let row = keys::row_key(3, 0, b"k");
        let t = s.begin_with(Isolation::ReadCommitted);
        t.put(&row, b"v").unwrap();
        t.prepare("n1.1").unwrap();
        assert!(matches!(
            t.put(&keys::row_key(3, 0, b"j"), b"w"),
            Err(StorageError::TransactionPrepared)
        ));
        assert!(s.begin().get(&row).unwrap().is_none());
        t.commit().unwrap();
        assert_eq!(s.begin().get(&row).unwrap().unwrap(), b"v");
        assert_eq!(s.partition_log_position(3, 0).unwrap(), 1);
        assert!(s.prepared_transactions().unwrap().is_empty());
    }

    #[test]
    fn prepared_transactions_survive_a_restart_and_keep_their_locks() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, dropped) = (keys::row_key(3, 0, b"a"), keys::row_key(3, 1, b"b"));
        {
            let s = open(dir.path());
            let one = s.begin_with(Isolation::ReadCommitted);
            one.put(&kept, b"1").unwrap();
            one.prepare("n1.7").unwrap();
            let two = s.begin_with(Isolation::ReadCommitted);
            two.put(&dropped, b"2").unwrap();
            two.prepare("n2.9").unwrap();
            // The process dies here: neither commits nor rolls back (dropping a transaction
            // applies nothing and leaves the record).
            drop((one, two));
        }
        let s = open(dir.path());
        let mut found = s.prepared_transactions().unwrap();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["n1.7", "n2.9"]);
        // Another writer of a prepared key waits; an interrupted wait gives up.
        let other = std::sync::Arc::new(s.begin_with(Isolation::ReadCommitted));
        let (o, k) = (other.clone(), kept.clone());
        let waiting = std::thread::spawn(move || o.put(&k, b"x"));
        std::thread::sleep(std::time::Duration::from_millis(100));
        other.interrupt();
        assert!(matches!(
            waiting.join().unwrap(),
            Err(StorageError::Interrupted)
        ));
        let (_, committing) = found.remove(0);
        let (_, rolling_back) = found.remove(0);
        committing.commit().unwrap();
        rolling_back.rollback();
        let r = s.begin();
        assert_eq!(r.get(&kept).unwrap().unwrap(), b"1");
        assert!(r.get(&dropped).unwrap().is_none());
        assert!(s.prepared_transactions().unwrap().is_empty());
    }

    #[test]
    fn a_bulk_load_and_a_prepared_transaction_of_one_table_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let t = s.begin_with(Isolation::ReadCommitted);
        t.put(&keys::row_key(3, 0, b"a"), b"1").unwrap();
        t.prepare("n1.1").unwrap();
        assert_eq!(s.prepared_tables.lock().get(&3), Some(&1));
        t.rollback();
        assert!(s.prepared_tables.lock().is_empty());
        // A table loaded after the first write cannot be prepared.
        let late = s.begin_with(Isolation::ReadCommitted);
        late.put(&keys::row_key(3, 0, b"b"), b"1").unwrap();
        let fence = s.begin();
        fence.put(&keys::fence_key(3), b"loaded").unwrap();
        fence.commit().unwrap();
        assert!(matches!(
            late.prepare("n1.2"),
            Err(StorageError::WriteConflict)
        ));
    }
}
