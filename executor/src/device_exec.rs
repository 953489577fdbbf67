//! The device operators: [`GpuFilterProjectExec`] (a filter and the projection above it, fused),
//! [`GpuPartialAggregateExec`] (a partial hash aggregate) and [`GpuTopNExec`] (ORDER BY one
//! column LIMIT n), which the `offload_to_device` rule puts in place of DataFusion's operators
//! inside a partition's pipeline.
//!
//! All three coalesce their input into chunks of tens of MiB (a transfer pays only when it is large)
//! and run each chunk on DataFusion's blocking pool, never on the async runtime. For each chunk
//! the node's cost model chooses the device or the CPU (`SET shoal.gpu = on` always chooses the
//! device). A chunk the device cannot take (out of device memory after splitting, a driver
//! failure) runs on the CPU instead; a chunk whose data makes the query fail (a division by
//! zero, an overflow) fails it with the CPU's error. An operator over a scan of whole
//! partitions names its chunks by partition version (see `resident`), so the device keeps
//! their input columns and finds them there the next time. EXPLAIN ANALYZE shows how many
//! chunks ran where, the bytes moved each way and those found on the device, and the kernel
//! and compile times.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::collect;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use shoal_gpu::{
    cost_model, ChunkId, CpuReference, FilterProject, GpuError, Module, PartialAggregate,
    PipelineBackend, RunStats, TopN,
};

use crate::resident::{named_chunks, NamedChunks};
use crate::PartitionScanExec;

/// Input is gathered into chunks of about this size before it goes to the device.
pub const CHUNK_BYTES: usize = 32 << 20;

/// Where chunks run: the device and how it was chosen, for EXPLAIN.
#[derive(Debug, Clone)]
pub struct Placement {
    pub backend: Arc<dyn PipelineBackend>,
    /// Every chunk goes to `backend` (`SET shoal.gpu = on`), or the cost model picks per chunk.
    pub forced: bool,
    /// The device's description ("NVIDIA H200 (compute 9.0, ...)", or why there is none).
    pub device: String,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let choice = if self.forced {
            "on"
        } else {
            "auto: cost model per chunk"
        };
        write!(
            f,
            "device={} [{}] ({choice})",
            self.backend.name(),
            self.device
        )
    }
}

/// An output column of a fused filter + projection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputColumn {
    /// The n-th projection the device computes.
    Device(usize),
    /// An input column the device does not read (text...), taken by the kept rows' positions.
    Carried(usize),
}

/// A filter and projection over `input`, on the device.
#[derive(Debug)]
pub struct GpuFilterProjectExec {
    input: Arc<dyn ExecutionPlan>,
    work: Arc<FilterProjectWork>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// Everything a chunk needs, shared by the partitions' streams.
#[derive(Debug)]
struct FilterProjectWork {
    spec: FilterProject,
    outputs: Vec<OutputColumn>,
    /// The same work as DataFusion expressions: the CPU side of every chunk that does not go
    /// to the device.
    predicate: Option<Arc<dyn PhysicalExpr>>,
    projections: Vec<Arc<dyn PhysicalExpr>>,
    placement: Placement,
    schema: SchemaRef,
}

fn properties_for(schema: SchemaRef, input: &Arc<dyn ExecutionPlan>) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        input.properties().output_partitioning().clone(),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl GpuFilterProjectExec {
    /// `predicate` and `projections` are over `input`'s schema; `schema` is the output's.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        spec: FilterProject,
        outputs: Vec<OutputColumn>,
        predicate: Option<Arc<dyn PhysicalExpr>>,
        projections: Vec<Arc<dyn PhysicalExpr>>,
        placement: Placement,
        schema: SchemaRef,
    ) -> Self {
        let properties = properties_for(schema.clone(), &input);
        GpuFilterProjectExec {
            input,
            work: Arc::new(FilterProjectWork {
                spec,
                outputs,
                predicate,
                projections,
                placement,
                schema,
            }),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// A partial aggregate over `input`, on the device.
#[derive(Debug)]
pub struct GpuPartialAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    work: Arc<AggregateWork>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

#[derive(Debug)]
struct AggregateWork {
    spec: PartialAggregate,
    placement: Placement,
    /// The CPU partial aggregate's schema (its names and nullability), which the output keeps.
    schema: SchemaRef,
    /// DataFusion's partial aggregate this replaces: it runs the chunks the CPU takes.
    cpu_plan: Arc<dyn ExecutionPlan>,
}

impl GpuPartialAggregateExec {
    /// In place of `replaced`, DataFusion's partial aggregate over `input`.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        spec: PartialAggregate,
        placement: Placement,
        replaced: Arc<dyn ExecutionPlan>,
    ) -> Self {
        let schema = replaced.schema();
        let properties = properties_for(schema.clone(), &input);
        GpuPartialAggregateExec {
            input,
            work: Arc::new(AggregateWork {
                spec,
                placement,
                schema,
                cpu_plan: replaced,
            }),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// The query's own errors keep the CPU's wording, so they map to the same SQLSTATE.
fn query_error(error: GpuError) -> DataFusionError {
    match error {
        GpuError::DivideByZero => {
            DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None)
        }
        GpuError::ArithmeticOverflow(what) => {
            DataFusionError::ArrowError(Box::new(ArrowError::ArithmeticOverflow(what)), None)
        }
        GpuError::Arrow(e) => DataFusionError::ArrowError(Box::new(e), None),
        other => DataFusionError::External(Box::new(other)),
    }
}

/// The metrics one partition's stream updates.
struct ChunkMetrics {
    device_chunks: datafusion::physical_plan::metrics::Count,
    cpu_chunks: datafusion::physical_plan::metrics::Count,
    bytes_to_device: datafusion::physical_plan::metrics::Count,
    bytes_from_device: datafusion::physical_plan::metrics::Count,
    bytes_resident: datafusion::physical_plan::metrics::Count,
    kernel_time: datafusion::physical_plan::metrics::Time,
    compile_time: datafusion::physical_plan::metrics::Time,
    output_rows: datafusion::physical_plan::metrics::Count,
}

impl ChunkMetrics {
    fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let m = || MetricBuilder::new(metrics);
        ChunkMetrics {
            device_chunks: m().counter("device_chunks", partition),
            cpu_chunks: m().counter("cpu_chunks", partition),
            bytes_to_device: m().counter("bytes_to_device", partition),
            bytes_from_device: m().counter("bytes_from_device", partition),
            bytes_resident: m().counter("bytes_resident", partition),
            kernel_time: m().subset_time("kernel_time", partition),
            compile_time: m().subset_time("compile_time", partition),
            output_rows: m().output_rows(partition),
        }
    }

    fn record(&self, stats: &RunStats) {
        self.bytes_to_device.add(stats.bytes_to_device as usize);
        self.bytes_from_device.add(stats.bytes_from_device as usize);
        self.bytes_resident.add(stats.bytes_resident as usize);
        self.kernel_time.add_duration(stats.kernel_time);
        self.compile_time.add_duration(stats.compile_time);
    }
}

/// Gathers `input` into chunks of about [`CHUNK_BYTES`]. A chunk's input is counted in the
/// statement's memory pool while it is gathered and processed; when the pool is short, the
/// chunk is cut where it stands rather than failing the query.
fn gather_chunks(
    input: SendableRecordBatchStream,
    reservation: MemoryReservation,
) -> futures::stream::BoxStream<'static, DfResult<RecordBatch>> {
    let input_schema = input.schema();
    futures::stream::unfold((Some(input), reservation), move |(input, reservation)| {
        let input_schema = input_schema.clone();
        async move {
            let mut input = input?;
            // The previous chunk has been processed: its memory is free again.
            reservation.free();
            let mut pending = Vec::new();
            let mut bytes = 0;
            let mut ended = false;
            while bytes < CHUNK_BYTES {
                match input.next().await {
                    Some(Ok(batch)) => {
                        let size = batch.get_array_memory_size();
                        bytes += size;
                        pending.push(batch);
                        if reservation.try_grow(size).is_err() {
                            break;
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (None, reservation))),
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            if pending.is_empty() {
                return None;
            }
            let chunk = concat_batches(&input_schema, &pending);
            Some((
                chunk.map_err(DataFusionError::from),
                ((!ended).then_some(input), reservation),
            ))
        }
    })
    .boxed()
}

/// Runs each chunk through `run` on the blocking pool.
fn run_chunks(
    chunks: NamedChunks,
    schema: SchemaRef,
    run: Arc<dyn Fn(RecordBatch, Option<ChunkId>) -> DfResult<RecordBatch> + Send + Sync>,
) -> SendableRecordBatchStream {
    let outputs = chunks.then(move |chunk| {
        let run = run.clone();
        async move {
            let (chunk, id) = chunk?;
            tokio::task::spawn_blocking(move || run(chunk, id))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, outputs))
}

/// Whether this chunk goes to the device: always when forced, else when the cost model says
/// it pays for `bytes` moved (and for compiling `module` when that is still to do).
fn chooses_device(placement: &Placement, module: Module, rows: usize, bytes: usize) -> bool {
    placement.forced || {
        let compiled = placement.backend.kernels_ready(&module);
        cost_model().estimate(rows, bytes, compiled).device_pays()
    }
}

impl FilterProjectWork {
    /// The device's output in the plan's column order, carried columns taken by row position.
    fn assemble(&self, input: &RecordBatch, device: &RecordBatch) -> DfResult<RecordBatch> {
        let rows = device
            .columns()
            .last()
            .filter(|_| self.spec.row_numbers)
            .map(|c| {
                c.as_primitive::<datafusion::arrow::datatypes::UInt32Type>()
                    .clone()
            });
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.outputs.len());
        for output in &self.outputs {
            columns.push(match (output, &rows) {
                (OutputColumn::Device(i), _) => device.column(*i).clone(),
                (OutputColumn::Carried(c), Some(rows)) => take(input.column(*c), rows, None)?,
                (OutputColumn::Carried(_), None) => {
                    return Err(DataFusionError::Internal(
                        "a carried column without row positions".into(),
                    ))
                }
            });
        }
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(device.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }

    /// What DataFusion's FilterExec and ProjectionExec compute.
    fn cpu_filter_project(&self, chunk: RecordBatch) -> DfResult<RecordBatch> {
        let kept = match &self.predicate {
            Some(predicate) => {
                let mask = predicate.evaluate(&chunk)?.into_array(chunk.num_rows())?;
                filter_record_batch(&chunk, mask.as_boolean())?
            }
            None => chunk,
        };
        let columns = self
            .projections
            .iter()
            .map(|p| p.evaluate(&kept)?.into_array(kept.num_rows()))
            .collect::<DfResult<Vec<_>>>()?;
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(kept.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

impl AggregateWork {
    /// DataFusion's own partial aggregate over one chunk.
    fn cpu_aggregate(
        &self,
        chunk: RecordBatch,
        context: &Arc<TaskContext>,
    ) -> DfResult<RecordBatch> {
        let input_schema = chunk.schema();
        let input = MemorySourceConfig::try_new_exec(&[vec![chunk]], input_schema, None)?;
        let plan = self.cpu_plan.clone().replace_children(
            vec![input],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?;
        // In-memory input and a partial aggregate: nothing here waits on I/O or spawns tasks,
        // and this runs on the blocking pool already.
        let batches = futures::executor::block_on(collect(plan, context.clone()))?;
        Ok(concat_batches(&self.schema, &batches)?)
    }
}

macro_rules! device_plan_boilerplate {
    ($exec:ident) => {
        impl ExecutionPlan for $exec {
            fn name(&self) -> &'static str {
                stringify!($exec)
            }

            fn properties(&self) -> &Arc<PlanProperties> {
                &self.properties
            }

            fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
                vec![&self.input]
            }

            fn apply_expressions(
                &self,
                _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
            ) -> DfResult<TreeNodeRecursion> {
                Ok(TreeNodeRecursion::Continue)
            }

            fn replace_children(
                self: Arc<Self>,
                children: Vec<Arc<dyn ExecutionPlan>>,
                _: ReplaceChildrenOptions,
            ) -> DfResult<Arc<dyn ExecutionPlan>> {
                let Some(input) = children.into_iter().next() else {
                    return Err(DataFusionError::Internal(
                        concat!(stringify!($exec), " needs one child").into(),
                    ));
                };
                Ok(Arc::new($exec {
                    properties: self.work.properties_over(&input),
                    input,
                    work: self.work.clone(),
                    metrics: ExecutionPlanMetricsSet::new(),
                }))
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
                context: Arc<TaskContext>,
            ) -> DfResult<SendableRecordBatchStream> {
                let work = self.work.clone();
                let metrics = ChunkMetrics::new(&self.metrics, partition);
                let reservation = MemoryConsumer::new(format!("{}[{partition}]", self.name()))
                    .register(context.memory_pool());
                let read = self
                    .input
                    .downcast_ref::<PartitionScanExec>()
                    .and_then(|scan| scan.whole_partition_read(partition));
                let input = self.input.execute(partition, context.clone())?;
                let chunks = named_chunks(read, gather_chunks(input, reservation));
                let outputs = run_chunks(
                    chunks,
                    self.work.schema.clone(),
                    Arc::new(move |chunk, id| work.run_chunk(chunk, id, &metrics, &context)),
                );
                Ok(self.work.finish(outputs))
            }
        }
    };
}

device_plan_boilerplate!(GpuFilterProjectExec);
device_plan_boilerplate!(GpuPartialAggregateExec);
device_plan_boilerplate!(GpuTopNExec);

/// What differs between the device operators around their chunks; `run_chunk` is what they
/// share: the device when it is chosen and can take the chunk, else the CPU.
trait ChunkWork {
    /// Names the operator in the log line of a chunk the device could not take.
    const WHAT: &'static str;

    fn placement(&self) -> &Placement;

    fn module(&self) -> Module<'_>;

    /// The chunk (named `id` when it is resident) on the placement's backend.
    fn on_device(
        &self,
        chunk: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError>;

    /// The backend's output in the operator's shape.
    fn shape_device_output(&self, _chunk: &RecordBatch, out: RecordBatch) -> DfResult<RecordBatch> {
        Ok(out)
    }

    /// The chunk through DataFusion's own operators (the reference's for a top-N).
    fn on_cpu(&self, chunk: RecordBatch, context: &Arc<TaskContext>) -> DfResult<RecordBatch>;

    /// The operator's properties over `input` (a top-N keeps its sort order).
    fn properties_over(&self, input: &Arc<dyn ExecutionPlan>) -> Arc<PlanProperties>;

    /// The stream of the chunks' outputs made into the operator's output.
    fn finish(&self, chunks: SendableRecordBatchStream) -> SendableRecordBatchStream {
        chunks
    }

    /// One chunk, where the placement and the cost model say; a chunk the device cannot take
    /// runs on the CPU, a chunk whose data fails fails the query with the CPU's error.
    fn run_chunk(
        &self,
        chunk: RecordBatch,
        id: Option<ChunkId>,
        metrics: &ChunkMetrics,
        context: &Arc<TaskContext>,
    ) -> DfResult<RecordBatch> {
        let rows = chunk.num_rows();
        let bytes = chunk.get_array_memory_size();
        if chooses_device(self.placement(), self.module(), rows, bytes) {
            let mut stats = RunStats::default();
            let outcome = self.on_device(&chunk, id.as_ref(), &mut stats);
            // What moved counts even when the device gave up half way.
            metrics.record(&stats);
            match outcome {
                Ok(out) => {
                    metrics.device_chunks.add(1);
                    cost_model().record_device(rows, stats.kernel_time);
                    cost_model().record_compile(stats.compile_time);
                    let out = self.shape_device_output(&chunk, out)?;
                    metrics.output_rows.add(out.num_rows());
                    return Ok(out);
                }
                Err(e) if e.is_query_error() => return Err(query_error(e)),
                Err(e) => tracing::warn!("a {} chunk runs on the CPU: {e}", Self::WHAT),
            }
        }
        let started = Instant::now();
        let out = self.on_cpu(chunk, context)?;
        cost_model().record_cpu(rows, started.elapsed());
        metrics.cpu_chunks.add(1);
        metrics.output_rows.add(out.num_rows());
        Ok(out)
    }
}

impl ChunkWork for FilterProjectWork {
    const WHAT: &'static str = "filter + projection";

    fn placement(&self) -> &Placement {
        &self.placement
    }

    fn module(&self) -> Module<'_> {
        Module::FilterProject(&self.spec)
    }

    fn on_device(
        &self,
        chunk: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        self.placement
            .backend
            .filter_project_chunk(&self.spec, chunk, id, stats)
    }

    fn shape_device_output(&self, chunk: &RecordBatch, out: RecordBatch) -> DfResult<RecordBatch> {
        self.assemble(chunk, &out)
    }

    fn on_cpu(&self, chunk: RecordBatch, _context: &Arc<TaskContext>) -> DfResult<RecordBatch> {
        self.cpu_filter_project(chunk)
    }

    fn properties_over(&self, input: &Arc<dyn ExecutionPlan>) -> Arc<PlanProperties> {
        properties_for(self.schema.clone(), input)
    }
}

impl ChunkWork for AggregateWork {
    const WHAT: &'static str = "partial aggregate";

    fn placement(&self) -> &Placement {
        &self.placement
    }

    fn module(&self) -> Module<'_> {
        Module::PartialAggregate(&self.spec)
    }

    fn on_device(
        &self,
        chunk: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        self.placement
            .backend
            .partial_aggregate_chunk(&self.spec, chunk, id, stats)
    }

    /// The device's states under the CPU aggregate's names and nullability.
    fn shape_device_output(&self, _chunk: &RecordBatch, out: RecordBatch) -> DfResult<RecordBatch> {
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            out.columns().to_vec(),
        )?)
    }

    fn on_cpu(&self, chunk: RecordBatch, context: &Arc<TaskContext>) -> DfResult<RecordBatch> {
        self.cpu_aggregate(chunk, context)
    }

    fn properties_over(&self, input: &Arc<dyn ExecutionPlan>) -> Arc<PlanProperties> {
        properties_for(self.schema.clone(), input)
    }
}

impl ChunkWork for TopNWork {
    const WHAT: &'static str = "top-N";

    fn placement(&self) -> &Placement {
        &self.placement
    }

    fn module(&self) -> Module<'_> {
        Module::TopN(&self.spec)
    }

    fn on_device(
        &self,
        chunk: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        self.placement
            .backend
            .top_n_chunk(&self.spec, chunk, id, stats)
    }

    fn on_cpu(&self, chunk: RecordBatch, _context: &Arc<TaskContext>) -> DfResult<RecordBatch> {
        CpuReference
            .top_n(&self.spec, &chunk, &mut RunStats::default())
            .map_err(query_error)
    }

    fn properties_over(&self, _input: &Arc<dyn ExecutionPlan>) -> Arc<PlanProperties> {
        self.properties.clone()
    }

    /// Each chunk's top rows, ordered again together: the partition's top rows.
    fn finish(&self, chunks: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let spec = self.spec.clone();
        let schema = self.schema.clone();
        let merged = futures::stream::once(async move {
            let tops: Vec<RecordBatch> = chunks.try_collect().await?;
            let all = concat_batches(&schema, &tops)?;
            CpuReference
                .top_n(&spec, &all, &mut RunStats::default())
                .map_err(query_error)
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), merged))
    }
}

/// ORDER BY one column LIMIT n within each partition, on the device.
#[derive(Debug)]
pub struct GpuTopNExec {
    input: Arc<dyn ExecutionPlan>,
    work: Arc<TopNWork>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

#[derive(Debug)]
struct TopNWork {
    spec: TopN,
    placement: Placement,
    schema: SchemaRef,
    /// The replaced SortExec's properties: the same order and partitioning.
    properties: Arc<PlanProperties>,
}

impl GpuTopNExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        spec: TopN,
        placement: Placement,
        properties: Arc<PlanProperties>,
    ) -> Self {
        GpuTopNExec {
            work: Arc::new(TopNWork {
                spec,
                placement,
                schema: input.schema(),
                properties: properties.clone(),
            }),
            input,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for GpuTopNExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let spec = &self.work.spec;
        write!(
            f,
            "GpuTopNExec: {}, key=#{} {}{}, limit={}",
            self.work.placement,
            spec.key.0,
            if spec.descending { "DESC" } else { "ASC" },
            if spec.nulls_first {
                " NULLS FIRST"
            } else {
                " NULLS LAST"
            },
            spec.limit
        )
    }
}

impl DisplayAs for GpuFilterProjectExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "GpuFilterProjectExec: {}", self.work.placement)?;
        if let Some(p) = &self.work.spec.predicate {
            write!(f, ", predicate={p}")?;
        }
        let outputs: Vec<String> = self
            .work
            .outputs
            .iter()
            .zip(self.work.schema.fields())
            .map(|(o, field)| match o {
                OutputColumn::Device(i) => {
                    format!(
                        "{} as {}",
                        self.work.spec.projections[*i].expr,
                        field.name()
                    )
                }
                OutputColumn::Carried(c) => format!("carried #{c} as {}", field.name()),
            })
            .collect();
        write!(f, ", expr=[{}]", outputs.join(", "))
    }
}

impl DisplayAs for GpuPartialAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self
            .work
            .spec
            .group_by
            .iter()
            .map(|(i, _, name)| format!("#{i} as {name}"))
            .collect();
        let aggregates: Vec<&str> = self
            .work
            .spec
            .aggregates
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        write!(
            f,
            "GpuPartialAggregateExec: {}, gby=[{}], aggr=[{}]",
            self.work.placement,
            keys.join(", "),
            aggregates.join(", ")
        )
    }
}

/// A pass-through above an operator that could have run on the device and does not: EXPLAIN
/// shows why. It changes nothing about the plan's rows, partitions or ordering.
#[derive(Debug)]
pub struct GpuNotUsedExec {
    input: Arc<dyn ExecutionPlan>,
    reason: String,
}

impl GpuNotUsedExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, reason: String) -> Self {
        GpuNotUsedExec { input, reason }
    }
}

impl DisplayAs for GpuNotUsedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "GpuNotUsedExec: {} stays on the CPU: {}",
            self.input.name(),
            self.reason
        )
    }
}

impl ExecutionPlan for GpuNotUsedExec {
    fn name(&self) -> &'static str {
        "GpuNotUsedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.into_iter().next() else {
            return Err(DataFusionError::Internal(
                "GpuNotUsedExec needs one child".into(),
            ));
        };
        Ok(Arc::new(GpuNotUsedExec {
            input,
            reason: self.reason.clone(),
        }))
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

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
