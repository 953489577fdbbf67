//! Resident columns: decoded columns of whole partitions kept in memory, so that the next scan
//! of the same partition at the same version reads neither RocksDB nor the row format, and
//! (with a GPU) the names under which the device keeps its copies of them.
//!
//! A scan that reads one whole table partition (no key or index lookup, no limit, no row keys)
//! asks its transaction for the partition's version (`Txn::partition_version`: the last log
//! position its snapshot sees, which every write to the partition moves). When every column it
//! reads is held at that version, the batches are rebuilt from them and the scan does not run;
//! otherwise the scan runs and, once it has read the whole partition, keeps each column at that
//! version in place of an older one (which a write made stale). A scan of one version always
//! cuts the same batches (`BATCH_ROWS` rows each), so columns kept by different scans of that
//! version line up. Columns are keyed by their storage slot and type, so queries reading other
//! columns of the partition share what they have in common.
//!
//! The node keeps at most `--resident-bytes` of them (2 GiB by default, 0 turns it off), the
//! least recently used going first. A transaction that wrote the partition, or whose snapshot was
//! taken during a bulk load or a partition copy, reads through the scan and keeps nothing.
//!
//! A device operator over such a scan names each chunk it sends to the device ([`ChunkId`]:
//! partition, version, columns and rows), so the CUDA backend keeps the chunk's input columns in
//! device memory and finds them there the next time.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{ArrayRef, NullArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_plan::metrics::Count;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use shoal_gpu::{ChunkId, ResidentSet};
use shoal_storage::{PartitionVersion, Txn};

use crate::ExecError;

/// Host memory resident columns hold unless the node is told otherwise.
pub const DEFAULT_RESIDENT_BYTES: usize = 2 << 30;

/// One whole table partition read by a scan's output partition, through its transaction.
#[derive(Clone)]
pub(crate) struct WholePartitionRead {
    pub txn: Arc<Txn>,
    pub table: u32,
    pub partition: u32,
    /// Each column read, as its storage slot and type: a column dropped and another added
    /// under its name and position read different values.
    pub columns: Vec<String>,
}

/// One column of a partition, or (`column` empty) the row count of each of its batches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ColumnKey {
    table: u32,
    partition: u32,
    column: Arc<str>,
}

/// A column's arrays, one per batch, at one version of its partition.
#[derive(Debug, Clone)]
struct Column {
    version: PartitionVersion,
    batches: Arc<Vec<ArrayRef>>,
}

static LIMIT: OnceLock<usize> = OnceLock::new();

/// Sets how much host memory resident columns may hold; only before the first scan.
pub fn set_resident_limit(bytes: usize) {
    let _ = LIMIT.set(bytes);
}

fn resident() -> &'static ResidentSet<ColumnKey, Column> {
    static RESIDENT: OnceLock<ResidentSet<ColumnKey, Column>> = OnceLock::new();
    RESIDENT.get_or_init(|| ResidentSet::new(*LIMIT.get_or_init(|| DEFAULT_RESIDENT_BYTES)))
}

/// Host bytes resident columns hold now, and their limit.
pub fn resident_bytes() -> (usize, usize) {
    (resident().used(), resident().limit())
}

/// The stream `made` makes, or its error as the stream's only item.
fn stream_made_by<T: Send + 'static>(
    made: impl std::future::Future<Output = DfResult<BoxStream<'static, DfResult<T>>>> + Send + 'static,
) -> BoxStream<'static, DfResult<T>> {
    futures::stream::once(made).try_flatten().boxed()
}

fn external(e: ExecError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl WholePartitionRead {
    /// The version of the partition the transaction reads, off the async runtime.
    async fn version(&self) -> DfResult<Option<PartitionVersion>> {
        let (txn, table, partition) = (self.txn.clone(), self.table, self.partition);
        tokio::task::spawn_blocking(move || txn.partition_version(table, partition))
            .await
            .map_err(|e| external(ExecError::TaskFailed(e.to_string())))?
            .map_err(|e| external(ExecError::from(e)))
    }

    fn key(&self, column: &str) -> ColumnKey {
        ColumnKey {
            table: self.table,
            partition: self.partition,
            column: column.into(),
        }
    }

    /// The row counts' key, then each column's.
    fn keys(&self) -> Vec<ColumnKey> {
        std::iter::once(self.key(""))
            .chain(self.columns.iter().map(|c| self.key(c)))
            .collect()
    }

    /// The partition's batches at `version`, when every column is held at it.
    fn held(&self, version: PartitionVersion, schema: &SchemaRef) -> Option<Vec<RecordBatch>> {
        let mut held = Vec::new();
        for key in self.keys() {
            match resident().get(&key) {
                Some(c) if c.version == version => held.push(c.batches),
                Some(_) => {
                    resident().remove(&key);
                    return None;
                }
                None => return None,
            }
        }
        let (rows, columns) = held.split_first()?;
        (0..rows.len())
            .map(|i| {
                let arrays: Vec<ArrayRef> = columns
                    .iter()
                    .map(|c| c.get(i).cloned())
                    .collect::<Option<_>>()?;
                let options = RecordBatchOptions::new().with_row_count(Some(rows[i].len()));
                RecordBatch::try_new_with_options(schema.clone(), arrays, &options).ok()
            })
            .collect()
    }

    /// The name of this partition's rows at `version` on the device.
    fn chunk_source(&self, version: PartitionVersion) -> Arc<str> {
        format!(
            "t{}.p{}@{}.{}[{}]",
            self.table,
            self.partition,
            version.log_position,
            version.rewrites,
            self.columns.join(",")
        )
        .into()
    }
}

/// The batches of a whole-partition scan: the resident ones when all its columns are held at
/// the version its transaction reads (`served` counts them), else those of `scan`, kept as they
/// pass once it ended.
pub(crate) fn scan_or_resident(
    read: WholePartitionRead,
    schema: SchemaRef,
    scan: BoxStream<'static, DfResult<RecordBatch>>,
    served: Count,
) -> BoxStream<'static, DfResult<RecordBatch>> {
    if resident().limit() == 0 {
        return scan;
    }
    stream_made_by(async move {
        let Some(version) = read.version().await? else {
            return Ok(scan);
        };
        if let Some(batches) = read.held(version, &schema) {
            served.add(batches.len());
            return Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed());
        }
        Ok(keep_when_complete(read, version, scan))
    })
}

/// Passes the scan's batches on and keeps their columns once the scan ended without an error
/// (a consumer that stops early, as under a LIMIT, keeps nothing), unless they outgrow the limit.
fn keep_when_complete(
    read: WholePartitionRead,
    version: PartitionVersion,
    scan: BoxStream<'static, DfResult<RecordBatch>>,
) -> BoxStream<'static, DfResult<RecordBatch>> {
    struct Filling {
        batches: Vec<RecordBatch>,
        bytes: usize,
        keeping: bool,
    }
    let filling = Arc::new(Mutex::new(Filling {
        batches: Vec::new(),
        bytes: 0,
        keeping: true,
    }));
    let passing = filling.clone();
    let batches = scan.map(move |batch| {
        let mut f = passing.lock();
        match &batch {
            Ok(b) if f.keeping => {
                f.bytes += b.get_array_memory_size();
                if f.bytes <= resident().limit() {
                    f.batches.push(b.clone());
                } else {
                    f.keeping = false;
                    f.batches.clear();
                }
            }
            Ok(_) => {}
            Err(_) => f.keeping = false,
        }
        batch
    });
    let keep = futures::stream::once(async move {
        let mut f = filling.lock();
        if f.keeping {
            let batches = std::mem::take(&mut f.batches);
            keep_columns(&read, version, &batches);
        }
        None
    })
    .filter_map(futures::future::ready);
    batches.chain(keep).boxed()
}

/// Keeps each column of a whole partition's batches, and their row counts, at `version`.
fn keep_columns(read: &WholePartitionRead, version: PartitionVersion, batches: &[RecordBatch]) {
    let rows: Vec<ArrayRef> = batches
        .iter()
        .map(|b| Arc::new(NullArray::new(b.num_rows())) as ArrayRef)
        .collect();
    resident().insert(
        read.key(""),
        Column {
            version,
            batches: Arc::new(rows),
        },
        0,
    );
    for (i, column) in read.columns.iter().enumerate() {
        let arrays: Vec<ArrayRef> = batches.iter().map(|b| b.column(i).clone()).collect();
        let bytes = arrays.iter().map(|a| a.get_array_memory_size()).sum();
        resident().insert(
            read.key(column),
            Column {
                version,
                batches: Arc::new(arrays),
            },
            bytes,
        );
    }
}

/// A device operator's input chunks, each with its name when its rows are a known version of a
/// whole partition.
pub(crate) type NamedChunks = BoxStream<'static, DfResult<(RecordBatch, Option<ChunkId>)>>;

/// Names the chunks of a whole-partition read (`read`) for the device: rows counted from the
/// partition's first, at the version the transaction reads. Unnamed when there is no read or
/// no version.
pub(crate) fn named_chunks(
    read: Option<WholePartitionRead>,
    chunks: BoxStream<'static, DfResult<RecordBatch>>,
) -> NamedChunks {
    let Some(read) = read else {
        return chunks.map(|c| c.map(|c| (c, None))).boxed();
    };
    stream_made_by(async move {
        let source = read.version().await?.map(|v| read.chunk_source(v));
        let mut first_row = 0u64;
        Ok(chunks
            .map(move |chunk| {
                let chunk = chunk?;
                let id = source.as_ref().map(|source| ChunkId {
                    source: source.clone(),
                    first_row,
                    rows: chunk.num_rows() as u64,
                });
                first_row += chunk.num_rows() as u64;
                Ok((chunk, id))
            })
            .boxed())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use shoal_storage::{keys, Isolation, Store, StoreOptions};

    fn schema(names: &[&str]) -> SchemaRef {
        let fields: Vec<Field> = names
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, false))
            .collect();
        Arc::new(Schema::new(fields))
    }

    fn batch(schema: &SchemaRef, first: i64, rows: i64) -> RecordBatch {
        let columns: Vec<ArrayRef> = (0..schema.fields().len() as i64)
            .map(|c| {
                Arc::new(Int64Array::from_iter_values(
                    (first..first + rows).map(|v| v * 10 + c),
                )) as ArrayRef
            })
            .collect();
        RecordBatch::try_new(schema.clone(), columns).unwrap()
    }

    fn read(store: &Store, table: u32, columns: &[&str]) -> WholePartitionRead {
        WholePartitionRead {
            txn: Arc::new(store.begin_with(Isolation::ReadCommitted)),
            table,
            partition: 0,
            columns: columns.iter().map(|c| c.to_string()).collect(),
        }
    }

    async fn through(
        read: WholePartitionRead,
        schema: &SchemaRef,
        scan: Vec<RecordBatch>,
    ) -> (Vec<RecordBatch>, usize) {
        let served = Count::new();
        let scan = futures::stream::iter(scan.into_iter().map(Ok)).boxed();
        let out = scan_or_resident(read, schema.clone(), scan, served.clone())
            .map(|b| b.unwrap())
            .collect()
            .await;
        (out, served.value())
    }

    #[tokio::test]
    async fn a_whole_scan_is_kept_served_again_and_shared_by_column_until_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                sync_commits: false,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let (ab, b) = (schema(&["a", "b"]), schema(&["b"]));
        let scanned = vec![batch(&ab, 0, 3), batch(&ab, 3, 2)];
        let (first, served) = through(read(&store, 901, &["a", "b"]), &ab, scanned.clone()).await;
        assert_eq!((first, served), (scanned.clone(), 0));
        // The scan given now would answer something else: the resident columns answer.
        let (again, served) = through(read(&store, 901, &["a", "b"]), &ab, vec![]).await;
        assert_eq!((again, served), (scanned.clone(), 2));
        let (only_b, _) = through(read(&store, 901, &["b"]), &b, vec![]).await;
        let want: Vec<RecordBatch> = scanned.iter().map(|s| s.project(&[1]).unwrap()).collect();
        assert_eq!(only_b, want);

        // A commit to the partition moves its version: the scan runs again.
        let writer = store.begin();
        writer.put(&keys::row_key(901, 0, b"k"), b"v").unwrap();
        writer.commit().unwrap();
        let fresh = vec![batch(&ab, 100, 1)];
        let (after, served) = through(read(&store, 901, &["a", "b"]), &ab, fresh.clone()).await;
        assert_eq!((after, served), (fresh.clone(), 0));
        let (kept, served) = through(read(&store, 901, &["a", "b"]), &ab, vec![]).await;
        assert_eq!((kept, served), (fresh, 1));
    }

    #[tokio::test]
    async fn a_failed_or_abandoned_scan_or_a_writing_transaction_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let ab = schema(&["a", "b"]);
        let failing = futures::stream::iter(vec![
            Ok(batch(&ab, 0, 2)),
            Err(DataFusionError::Execution("disk".into())),
        ])
        .boxed();
        let outcomes: Vec<_> = scan_or_resident(
            read(&store, 902, &["a", "b"]),
            ab.clone(),
            failing,
            Count::new(),
        )
        .collect()
        .await;
        assert_eq!(outcomes.len(), 2);
        let (_, served) = through(read(&store, 902, &["a", "b"]), &ab, vec![]).await;
        assert_eq!(served, 0);

        let scan = futures::stream::iter(vec![Ok(batch(&ab, 0, 1)), Ok(batch(&ab, 1, 1))]).boxed();
        let mut abandoned = scan_or_resident(
            read(&store, 903, &["a", "b"]),
            ab.clone(),
            scan,
            Count::new(),
        );
        assert!(abandoned.next().await.is_some());
        drop(abandoned);
        let (_, served) = through(read(&store, 903, &["a", "b"]), &ab, vec![]).await;
        assert_eq!(served, 0);

        // A transaction that wrote the partition neither keeps nor takes resident columns.
        let writing = read(&store, 904, &["a", "b"]);
        writing.txn.put(&keys::row_key(904, 0, b"k"), b"v").unwrap();
        let own = vec![batch(&ab, 7, 1)];
        let (seen, _) = through(writing.clone(), &ab, own.clone()).await;
        assert_eq!(seen, own);
        let (seen, served) = through(writing, &ab, own.clone()).await;
        assert_eq!((seen, served), (own, 0));
    }
}
