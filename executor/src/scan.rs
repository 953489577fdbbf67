//! `PartitionScanExec`: the leaf of every fragment. Each output partition reads one table
//! partition (one contiguous key range) through the statement's transaction, decoding rows
//! straight into Arrow batches. With key lookups it reads only those primary keys (the point
//! lookup fast path) instead of scanning.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{stream, StreamExt};
use serde::{Deserialize, Serialize};
use shoal_storage::{keys, RowDecoder, ScanControl, Txn};

use crate::resident::{scan_or_resident, WholePartitionRead};
use crate::{ExecError, TableHandle};

/// Name of the extra column that carries each row's storage key (used by UPDATE and DELETE).
pub const ROW_KEY_COLUMN: &str = "__shoal_row_key";

const BATCH_ROWS: usize = 8192;

static ROWS_SCANNED: AtomicU64 = AtomicU64::new(0);
static BYTES_SCANNED: AtomicU64 = AtomicU64::new(0);

/// Rows and bytes read by every scan fragment of this process so far (for `/metrics`).
pub fn scan_totals() -> (u64, u64) {
    (
        ROWS_SCANNED.load(Ordering::Relaxed),
        BYTES_SCANNED.load(Ordering::Relaxed),
    )
}

/// Adds reads made outside a scan (point reads) to the process totals.
pub(crate) fn count_scanned(rows: u64, bytes: usize) {
    ROWS_SCANNED.fetch_add(rows, Ordering::Relaxed);
    BYTES_SCANNED.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Primary keys to fetch directly, grouped by the partition that holds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyLookup {
    pub partition: u32,
    /// Full storage keys.
    pub keys: Vec<Vec<u8>>,
}

/// Rows to fetch through a secondary index: the entries in `ranges` (one per combination of
/// looked-up values) hold the storage keys of the rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexLookup {
    pub index: String,
    pub ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// Each output partition follows the entries of the rows of one table partition (of the
    /// scan's `partitions`), so that the lookup can run at each partition's leader, whose
    /// index holds the entries of the rows it leads; otherwise one output partition follows
    /// them all.
    #[serde(default)]
    pub per_partition: bool,
}

pub struct PartitionScanExec {
    table: TableHandle,
    txn: Arc<Txn>,
    partitions: Vec<u32>,
    lookups: Option<Vec<KeyLookup>>,
    index_lookup: Option<IndexLookup>,
    projection: Vec<usize>,
    with_row_key: bool,
    limit: Option<usize>,
    /// Output columns the scan declares itself hash-partitioned on (see
    /// [`PartitionScanExec::with_key_partitioning`]).
    key_partitioning: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What a scan reads, without the transaction it reads through: the form in which a scan
/// travels to the node that leads its partitions (which reads through a transaction of its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanSpec {
    pub table_id: u32,
    pub partitions: Vec<u32>,
    pub lookups: Option<Vec<KeyLookup>>,
    pub projection: Vec<usize>,
    pub with_row_key: bool,
    pub limit: Option<usize>,
    #[serde(default)]
    pub key_partitioning: Option<Vec<usize>>,
    /// A secondary index lookup per partition ([`IndexLookup::per_partition`]).
    #[serde(default)]
    pub index_lookup: Option<IndexLookup>,
}

impl fmt::Debug for PartitionScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionScanExec")
            .field("table", &self.table.def.name)
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl PartitionScanExec {
    /// `partitions`: the table partitions to read (after pruning), one output partition each.
    /// `lookups`: when set, read only these keys (and `partitions` is ignored).
    pub fn new(
        table: TableHandle,
        txn: Arc<Txn>,
        partitions: Vec<u32>,
        lookups: Option<Vec<KeyLookup>>,
        projection: Vec<usize>,
        with_row_key: bool,
        limit: Option<usize>,
    ) -> Self {
        let mut fields: Vec<Arc<Field>> = projection
            .iter()
            .map(|i| table.schema.fields()[*i].clone())
            .collect();
        if with_row_key {
            fields.push(Arc::new(Field::new(
                ROW_KEY_COLUMN,
                DataType::Binary,
                false,
            )));
        }
        let schema = Arc::new(Schema::new(fields));
        let outputs = match &lookups {
            Some(l) => l.len().max(1),
            None => partitions.len().max(1),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(outputs),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        PartitionScanExec {
            table,
            txn,
            partitions,
            lookups,
            index_lookup: None,
            projection,
            with_row_key,
            limit,
            key_partitioning: None,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// Whether one output partition follows the index entries of every partition.
    fn reads_whole_index(&self) -> bool {
        self.index_lookup.as_ref().is_some_and(|i| !i.per_partition)
    }

    /// The scan as it travels between nodes; `None` for an index lookup of every partition
    /// from one output partition, which must run where all partitions are.
    pub fn spec(&self) -> Option<ScanSpec> {
        if self.reads_whole_index() {
            return None;
        }
        Some(ScanSpec {
            table_id: self.table.id(),
            partitions: self.partitions.clone(),
            lookups: self.lookups.clone(),
            projection: self.projection.clone(),
            with_row_key: self.with_row_key,
            limit: self.limit,
            key_partitioning: self.key_partitioning.clone(),
            index_lookup: self.index_lookup.clone(),
        })
    }

    /// The transaction the scan reads through.
    pub fn txn(&self) -> &Arc<Txn> {
        &self.txn
    }

    /// Rebuilds a scan from its spec, reading through `txn`.
    pub fn from_spec(table: TableHandle, txn: Arc<Txn>, spec: ScanSpec) -> Self {
        let scan = PartitionScanExec::new(
            table,
            txn,
            spec.partitions,
            spec.lookups,
            spec.projection,
            spec.with_row_key,
            spec.limit,
        );
        let scan = match spec.index_lookup {
            Some(lookup) => scan.with_index_lookup(lookup),
            None => scan,
        };
        match spec.key_partitioning {
            Some(columns) => scan.with_key_partitioning(columns),
            None => scan,
        }
    }

    /// The same scan declaring its output hash-partitioned on output `columns`: rows with
    /// equal values there are in the same output partition. True of a scan of every partition
    /// in order whose columns include the table's partition key (see the planner's
    /// `co_partitioned_joins.rs`, the only caller): DataFusion's partitioned hash join checks
    /// that its inputs say so.
    pub fn with_key_partitioning(&self, columns: Vec<usize>) -> Self {
        let exprs = columns
            .iter()
            .map(|i| {
                Arc::new(Column::new(self.schema.field(*i).name(), *i)) as Arc<dyn PhysicalExpr>
            })
            .collect();
        let count = self.properties.partitioning.partition_count();
        PartitionScanExec {
            table: self.table.clone(),
            txn: self.txn.clone(),
            partitions: self.partitions.clone(),
            lookups: self.lookups.clone(),
            index_lookup: self.index_lookup.clone(),
            projection: self.projection.clone(),
            with_row_key: self.with_row_key,
            limit: self.limit,
            key_partitioning: Some(columns),
            schema: self.schema.clone(),
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(self.schema.clone()),
                Partitioning::Hash(exprs, count),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The same scan reading only those of its partitions in `keep` (and their key lookups);
    /// `None` for an index lookup of every partition from one output partition.
    pub fn only_partitions(&self, keep: &[u32]) -> Option<PartitionScanExec> {
        if self.reads_whole_index() {
            return None;
        }
        let lookups = self.lookups.as_ref().map(|l| {
            l.iter()
                .filter(|k| keep.contains(&k.partition))
                .cloned()
                .collect()
        });
        let scan = PartitionScanExec::new(
            self.table.clone(),
            self.txn.clone(),
            self.partitions
                .iter()
                .copied()
                .filter(|p| keep.contains(p))
                .collect(),
            lookups,
            self.projection.clone(),
            self.with_row_key,
            self.limit,
        );
        Some(match &self.index_lookup {
            Some(lookup) => scan.with_index_lookup(lookup.clone()),
            None => scan,
        })
    }

    /// The table partition each output partition reads; `None` for an index lookup of every
    /// partition from one output partition.
    pub fn table_partitions(&self) -> Option<Vec<u32>> {
        match (&self.index_lookup, &self.lookups) {
            (Some(i), _) if i.per_partition => Some(self.partitions.clone()),
            (Some(_), _) => None,
            (None, Some(l)) => Some(l.iter().map(|k| k.partition).collect()),
            (None, None) => Some(self.partitions.clone()),
        }
    }

    /// The visible table column behind output column `output`; `None` for the row key.
    pub fn projected_column(&self, output: usize) -> Option<usize> {
        self.projection.get(output).copied()
    }

    /// The table partitions read, one per output partition, when the scan reads whole
    /// partitions (neither key nor index lookups).
    pub fn whole_partitions(&self) -> Option<&[u32]> {
        (self.lookups.is_none() && self.index_lookup.is_none()).then_some(&self.partitions[..])
    }

    pub fn table(&self) -> &TableHandle {
        &self.table
    }

    /// What output partition `output` reads when it is one whole table partition in full (no
    /// lookups, no limit, no row keys): rows whose decoded chunks may stay resident.
    pub(crate) fn whole_partition_read(&self, output: usize) -> Option<WholePartitionRead> {
        if self.limit.is_some() || self.with_row_key {
            return None;
        }
        let partition = *self.whole_partitions()?.get(output)?;
        let columns = self
            .projection
            .iter()
            .zip(self.schema.fields())
            .map(|(column, field)| {
                let slot = self.table.layout.visible.get(*column).copied();
                format!("{slot:?}:{}", field.data_type())
            })
            .collect();
        Some(WholePartitionRead {
            txn: self.txn.clone(),
            table: self.table.id(),
            partition,
            columns,
        })
    }

    /// Reads the rows a secondary index points at instead of whole partitions: in one output
    /// partition, or one per partition read ([`IndexLookup::per_partition`]).
    pub fn with_index_lookup(mut self, lookup: IndexLookup) -> Self {
        let outputs = match lookup.per_partition {
            true => self.partitions.len().max(1),
            false => 1,
        };
        self.lookups = None;
        self.index_lookup = Some(lookup);
        self.properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(self.schema.clone()),
            Partitioning::UnknownPartitioning(outputs),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        self
    }
}

impl DisplayAs for PartitionScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self
            .projection
            .iter()
            .map(|i| self.table.schema.field(*i).name().as_str())
            .collect();
        write!(
            f,
            "PartitionScanExec: table={}.{}, ",
            self.table.def.schema, self.table.def.name
        )?;
        match (&self.index_lookup, &self.lookups) {
            (Some(i), _) => {
                write!(
                    f,
                    "index_lookup index={} values={}",
                    i.index,
                    i.ranges.len()
                )?;
                if i.per_partition {
                    write!(f, " partitions={:?}", self.partitions)?;
                }
            }
            (None, Some(l)) => {
                let parts: Vec<u32> = l.iter().map(|k| k.partition).collect();
                let n: usize = l.iter().map(|k| k.keys.len()).sum();
                write!(f, "point_lookup keys={n} partitions={parts:?}")?;
            }
            (None, None) => write!(
                f,
                "fragments={} of {} partitions={:?}",
                self.partitions.len(),
                self.table.partition_count(),
                self.partitions
            )?,
        }
        write!(f, ", projection=[{}]", columns.join(", "))?;
        if self.key_partitioning.is_some() {
            write!(f, ", partitioned_by_key")?;
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

/// Where one output partition reads from.
#[derive(Clone)]
enum Source {
    Range {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    Keys(Vec<Vec<u8>>),
    /// Index entry ranges whose values are row keys.
    /// Index entry ranges, and the partition whose rows to keep (all when `None`).
    IndexEntries(Vec<(Vec<u8>, Vec<u8>)>, Option<u32>),
    Nothing,
}

impl ExecutionPlan for PartitionScanExec {
    fn name(&self) -> &'static str {
        "PartitionScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let table_id = self.table.id();
        let source = match (&self.index_lookup, &self.lookups) {
            (Some(i), _) if i.per_partition => match self.partitions.get(partition) {
                Some(p) => Source::IndexEntries(i.ranges.clone(), Some(*p)),
                None => Source::Nothing,
            },
            (Some(i), _) if partition == 0 => Source::IndexEntries(i.ranges.clone(), None),
            (Some(_), _) => Source::Nothing,
            (None, Some(l)) => l
                .get(partition)
                .map(|k| Source::Keys(k.keys.clone()))
                .unwrap_or(Source::Nothing),
            (None, None) => match self.partitions.get(partition) {
                Some(p) => Source::Range {
                    start: keys::partition_start(table_id, *p),
                    end: keys::partition_end(table_id, *p),
                },
                None => Source::Nothing,
            },
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let bytes_scanned: Count =
            MetricBuilder::new(&self.metrics).counter("bytes_scanned", partition);
        let state = ScanState {
            txn: self.txn.clone(),
            decoder: RowDecoder::new(&self.table.layout, &self.projection, BATCH_ROWS),
            keys: self.with_row_key.then(BinaryBuilder::new),
            schema: self.schema.clone(),
            source,
            after: None,
            remaining: self.limit.unwrap_or(usize::MAX),
            done: false,
            bytes_scanned,
        };
        let timing = baseline.clone();
        let batches = stream::try_unfold(state, move |mut state| {
            let baseline = timing.clone();
            async move {
                if state.done || state.remaining == 0 {
                    return Ok(None);
                }
                let timer = baseline.elapsed_compute().timer();
                let (state, batch) = tokio::task::spawn_blocking(move || {
                    let batch = state.next_batch();
                    (state, batch)
                })
                .await
                .map_err(|e| {
                    DataFusionError::External(Box::new(ExecError::TaskFailed(e.to_string())))
                })?;
                timer.done();
                let batch = batch.map_err(|e| DataFusionError::External(Box::new(e)))?;
                Ok(batch.map(|b| (b, state)))
            }
        });
        let batches = match self.whole_partition_read(partition) {
            Some(read) => {
                let served =
                    MetricBuilder::new(&self.metrics).counter("resident_batches", partition);
                scan_or_resident(read, self.schema.clone(), batches.boxed(), served)
            }
            None => batches.boxed(),
        };
        // Counted here, where read and resident batches meet.
        let counted = batches.inspect(move |b| {
            if let Ok(b) = b {
                baseline.record_output(b.num_rows());
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            counted,
        )))
    }
}

struct ScanState {
    txn: Arc<Txn>,
    decoder: RowDecoder,
    keys: Option<BinaryBuilder>,
    schema: SchemaRef,
    source: Source,
    after: Option<Vec<u8>>,
    remaining: usize,
    done: bool,
    bytes_scanned: Count,
}

impl ScanState {
    /// Reads up to one batch of rows; `None` when the source is exhausted.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ExecError> {
        let want = BATCH_ROWS.min(self.remaining);
        let mut bytes = 0usize;
        if let Source::IndexEntries(ranges, only) = &self.source {
            let mut row_keys = Vec::new();
            for (start, end) in ranges {
                self.txn.scan(start, end, None, |k, v| {
                    bytes += k.len() + v.len();
                    let wanted = only
                        .is_none_or(|p| keys::partition_of_key(v).is_some_and(|(_, of)| of == p));
                    if wanted {
                        row_keys.push(v.to_vec());
                    }
                    Ok(ScanControl::Continue)
                })?;
            }
            self.source = Source::Keys(row_keys);
        }
        match &mut self.source {
            Source::Nothing | Source::IndexEntries(..) => self.done = true,
            Source::Keys(list) => {
                for key in list.drain(..) {
                    if let Some(v) = self.txn.get(&key)? {
                        bytes += key.len() + v.len();
                        self.decoder.push(&v)?;
                        if let Some(k) = &mut self.keys {
                            k.append_value(&key);
                        }
                    }
                }
                self.done = true;
            }
            Source::Range { start, end } => {
                let decoder = &mut self.decoder;
                let keys = &mut self.keys;
                let mut n = 0;
                let last = self.txn.scan(start, end, self.after.as_deref(), |k, v| {
                    bytes += k.len() + v.len();
                    decoder.push(v)?;
                    if let Some(b) = keys {
                        b.append_value(k);
                    }
                    n += 1;
                    Ok(if n >= want {
                        ScanControl::Stop
                    } else {
                        ScanControl::Continue
                    })
                })?;
                if n < want {
                    self.done = true;
                }
                self.after = last;
            }
        }
        self.bytes_scanned.add(bytes);
        let rows = self.decoder.rows();
        ROWS_SCANNED.fetch_add(rows as u64, Ordering::Relaxed);
        BYTES_SCANNED.fetch_add(bytes as u64, Ordering::Relaxed);
        if rows == 0 {
            self.done = true;
            return Ok(None);
        }
        self.remaining = self.remaining.saturating_sub(rows);
        let batch = self.decoder.finish()?;
        let batch = match &mut self.keys {
            Some(k) => {
                let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                columns.push(Arc::new(k.finish()));
                RecordBatch::try_new(self.schema.clone(), columns)?
            }
            None => RecordBatch::try_new_with_options(
                self.schema.clone(),
                batch.columns().to_vec(),
                &datafusion::arrow::record_batch::RecordBatchOptions::new()
                    .with_row_count(Some(rows)),
            )?,
        };
        Ok(Some(batch))
    }
}
