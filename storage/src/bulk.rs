//! Bulk loads (COPY FROM outside a transaction block) with flat memory and all-or-nothing
//! effect.
//!
//! Rows are buffered up to [`RUN_BYTES`], then sorted and spilled to a run file on a thread of
//! its own while the next rows arrive (one spill at a time, so at most two buffers are held).
//! `finish` merges the runs in key order, refuses duplicate keys (within the load or already
//! stored), writes non-overlapping SST files and ingests them in one atomic RocksDB operation.
//! During that final step the table's barrier is held exclusively, so no commit to the table interleaves
//! with the uniqueness check, and the table's fence key is rewritten, so every transaction
//! that started before and writes the table fails its commit with a write conflict instead of
//! overwriting loaded rows. Snapshots taken before the ingestion do not see the loaded rows.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use rocksdb::{IngestExternalFileOptions, Options, SstFileWriter};

use crate::moves::Writing;
use crate::{keys, Result, StorageError, Store};

/// Bytes of rows held in memory before they are sorted and spilled. Two buffers may be held
/// (one filling, one being spilled), so a load holds at most twice this.
pub const RUN_BYTES: usize = 16 * 1024 * 1024;
/// Size at which an output SST file is closed and the next one started.
const SST_BYTES: u64 = 256 * 1024 * 1024;

pub struct BulkLoad {
    store: Store,
    table: u32,
    /// Tables with a primary key must not receive a key that already exists.
    check_existing: bool,
    dir: PathBuf,
    buffer: Vec<(Vec<u8>, Vec<u8>)>,
    buffer_bytes: usize,
    runs: Vec<PathBuf>,
    /// The run being written in the background.
    spilling: Option<JoinHandle<Result<()>>>,
    partitions: BTreeSet<u32>,
    rows: u64,
    /// Counts the load among its table's writers until it ends.
    _writing: Writing,
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Engine(format!("bulk load file: {e}"))
}

impl Store {
    /// Starts a bulk load into `table`.
    pub fn bulk_load(&self, table: u32, check_existing: bool) -> Result<BulkLoad> {
        let dir = self.bulk_dir().join(format!(
            "{table}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&dir).map_err(io)?;
        let mut writing = Writing::new(self.writers.clone(), self.next_txn_id());
        writing.enter_bulk_load(table)?;
        Ok(BulkLoad {
            store: self.clone(),
            table,
            check_existing,
            dir,
            buffer: Vec::new(),
            buffer_bytes: 0,
            runs: Vec::new(),
            spilling: None,
            partitions: BTreeSet::new(),
            rows: 0,
            _writing: writing,
        })
    }
}

/// One sorted run file being read back.
struct Run {
    reader: BufReader<File>,
}

impl Run {
    fn next(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
        self.reader.read_exact(&mut key).map_err(io)?;
        self.reader.read_exact(&mut len).map_err(io)?;
        let mut value = vec![0u8; u32::from_le_bytes(len) as usize];
        self.reader.read_exact(&mut value).map_err(io)?;
        Ok(Some((key, value)))
    }
}

impl BulkLoad {
    /// Adds one row; blocks on disk I/O when the buffer is full while the previous one is
    /// still being spilled.
    pub fn add(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        if let Some((_, partition)) = keys::partition_of_key(&key) {
            self.partitions.insert(partition);
        }
        self.buffer_bytes += key.len() + value.len() + 48;
        self.buffer.push((key, value));
        self.rows += 1;
        if self.buffer_bytes >= RUN_BYTES {
            self.spill()?;
        }
        Ok(())
    }

    /// Starts writing the buffer to a new run file, once the previous spill has finished.
    fn spill(&mut self) -> Result<()> {
        self.wait_for_spill()?;
        if self.buffer.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(format!("run-{}", self.runs.len()));
        self.runs.push(path.clone());
        let rows = std::mem::take(&mut self.buffer);
        self.buffer_bytes = 0;
        self.spilling = Some(std::thread::spawn(move || write_run(&path, rows)));
        Ok(())
    }

    fn wait_for_spill(&mut self) -> Result<()> {
        match self.spilling.take() {
            Some(spill) => spill
                .join()
                .map_err(|_| StorageError::Engine("bulk load spill panicked".into()))?,
            None => Ok(()),
        }
    }

    /// Makes every added row visible at once, or none of them. Returns the row count.
    pub fn finish(mut self) -> Result<u64> {
        let result = self.finish_inner();
        let _ = self.wait_for_spill();
        let _ = fs::remove_dir_all(&self.dir);
        result
    }

    fn finish_inner(&mut self) -> Result<u64> {
        self.spill()?;
        self.wait_for_spill()?;
        if self.rows == 0 {
            return Ok(0);
        }
        let barrier = self.store.barrier(self.table);
        let _exclusive = barrier.write();
        // Applying a prepared transaction skips conflict checks: its keys must not be loaded.
        if self.store.prepared_tables.lock().contains_key(&self.table) {
            return Err(StorageError::PreparedWriterActive);
        }
        let mut runs: Vec<Run> = self
            .runs
            .iter()
            .map(|p| {
                Ok(Run {
                    reader: BufReader::new(File::open(p).map_err(io)?),
                })
            })
            .collect::<Result<_>>()?;
        let mut heap = BinaryHeap::new();
        let mut heads: Vec<Option<Vec<u8>>> = vec![None; runs.len()];
        for (i, run) in runs.iter_mut().enumerate() {
            if let Some((k, v)) = run.next()? {
                heap.push(Reverse((k, i)));
                heads[i] = Some(v);
            }
        }
        let mut files = Vec::new();
        let opts = Options::default();
        let mut writer: Option<SstFileWriter> = None;
        let mut written: u64 = 0;
        let mut previous: Option<Vec<u8>> = None;
        while let Some(Reverse((key, i))) = heap.pop() {
            let value = heads[i].take().unwrap_or_default();
            if let Some((k, v)) = runs[i].next()? {
                heap.push(Reverse((k, i)));
                heads[i] = Some(v);
            }
            if previous.as_deref() == Some(key.as_slice()) {
                return Err(StorageError::DuplicateKey);
            }
            if self.check_existing && self.store.db().get(&key)?.is_some() {
                return Err(StorageError::DuplicateKey);
            }
            if writer.is_none() {
                let path = self.dir.join(format!("load-{}.sst", files.len()));
                let w = SstFileWriter::create(&opts);
                w.open(&path)?;
                files.push(path);
                writer = Some(w);
            }
            if let Some(w) = writer.as_mut() {
                w.put(&key, &value)?;
                written += (key.len() + value.len()) as u64;
                if written >= SST_BYTES {
                    w.finish()?;
                    writer = None;
                    written = 0;
                }
            }
            previous = Some(key);
        }
        if let Some(mut w) = writer {
            w.finish()?;
        }
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        // The rows are visible from the ingestion, the log entries that name them only from
        // the commit below: a rewrite in between (see `crate::versions`).
        let _rewriting = self.store.rewriting();
        self.store.db().ingest_external_file_opts(&ingest, files)?;
        // The fence and the partitions' log entries, in one ordinary commit.
        let fence = self.store.begin();
        fence.put(&keys::fence_key(self.table), &self.rows.to_le_bytes())?;
        for p in &self.partitions {
            fence.mark_written(self.table, *p)?;
        }
        fence.commit()?;
        Ok(self.rows)
    }

    /// Gives up the load; nothing was made visible.
    pub fn abort(mut self) {
        let _ = self.wait_for_spill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sorts `rows` by key and writes them to the run file at `path`.
fn write_run(path: &Path, mut rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut w = BufWriter::new(File::create(path).map_err(io)?);
    for (k, v) in rows {
        w.write_all(&(k.len() as u32).to_le_bytes()).map_err(io)?;
        w.write_all(&k).map_err(io)?;
        w.write_all(&(v.len() as u32).to_le_bytes()).map_err(io)?;
        w.write_all(&v).map_err(io)?;
    }
    w.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[test]
    fn loads_all_rows_or_none_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                sync_commits: false,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let key = |i: u32| keys::row_key(9, i % 3, &i.to_be_bytes());
        let existing = store.begin();
        existing.put(&key(5), b"old").unwrap();
        existing.commit().unwrap();

        let mut load = store.bulk_load(9, true).unwrap();
        for i in 10..2000 {
            load.add(key(i), b"v".to_vec()).unwrap();
            if i % 500 == 0 {
                load.spill().unwrap();
            }
        }
        // A transaction that started before the load and writes the table must not commit.
        let racer = store.begin();
        racer.put(&key(3000), b"racer").unwrap();
        assert_eq!(load.finish().unwrap(), 1990);
        assert!(matches!(racer.commit(), Err(StorageError::WriteConflict)));
        let reader = store.begin();
        assert_eq!(reader.get(&key(1999)).unwrap().unwrap(), b"v");
        assert_eq!(store.partition_log_position(9, 0).unwrap(), 2);

        let mut dup = store.bulk_load(9, true).unwrap();
        dup.add(key(7000), b"x".to_vec()).unwrap();
        dup.add(key(5), b"clash".to_vec()).unwrap();
        assert!(matches!(dup.finish(), Err(StorageError::DuplicateKey)));
        assert!(store.begin().get(&key(7000)).unwrap().is_none());
        assert_eq!(store.begin().get(&key(5)).unwrap().unwrap(), b"old");
    }
}
