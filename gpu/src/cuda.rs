//! The CUDA backend: uploads the Arrow buffers a pipeline reads (values and validity bitmaps as
//! they are), runs the generated kernels, and builds Arrow arrays from what comes back.
//!
//! A batch that does not fit the node's device memory budget is split in halves until it does
//! (filter + projection results are concatenated; partial aggregates may repeat a group across
//! halves, which the final aggregate merges anyway). When even small slices do not fit, the error
//! goes up and the caller runs the batch on the CPU.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow::compute::concat_batches;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};
use parking_lot::Mutex;

use crate::codegen::{
    accumulator_arrays, aggregate_source, filter_project_source, AccumulatorArray, KernelSource,
    AGG_INIT, AGG_UPDATE, BLOCK_THREADS, ERR_DIVIDE_BY_ZERO, ERR_OVERFLOW, ERR_TABLE_FULL,
    FP_COUNT, FP_WRITE,
};
use crate::cpu::{build_array, state_columns, Value};
use crate::device::{device, CudaDevice};
use crate::error::GpuError;
use crate::expr::GpuType;
use crate::plan::{FilterProject, PartialAggregate};
use crate::resident::{ChunkId, ResidentSet};
use crate::{PipelineBackend, RunStats};

/// Below this many rows a batch that does not fit is not split further.
const MIN_SPLIT_ROWS: usize = 4096;

/// Runs pipelines on the node's GPU.
#[derive(Debug)]
pub struct CudaBackend {
    pub(crate) device: Arc<CudaDevice>,
    /// One pipeline at a time on the device's stream, so kernel times are the kernel's own.
    pub(crate) running: Mutex<()>,
    /// Input columns of resident chunks, by chunk, column and the type it is read as: a chunk
    /// run again reads them from device memory instead of moving them again.
    resident: ResidentSet<(ChunkId, usize, GpuType), Arc<DeviceColumn>>,
}

impl CudaBackend {
    /// Opens the node's device; the error says why there is none.
    pub fn open() -> Result<Self, GpuError> {
        let device = device()?;
        Ok(CudaBackend {
            resident: ResidentSet::new(device.resident_bytes),
            device,
            running: Mutex::new(()),
        })
    }

    pub fn device(&self) -> &CudaDevice {
        &self.device
    }
}

impl PipelineBackend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn kernels_ready(&self, module: &crate::Module) -> bool {
        let source = match module {
            crate::Module::FilterProject(spec) => filter_project_source(spec),
            crate::Module::PartialAggregate(spec) => aggregate_source(spec),
            crate::Module::TopN(spec) => crate::top_n::kernel_source(spec),
        };
        source.is_ok_and(|s| crate::nvrtc::is_cached(&s.source, self.device.arch))
    }

    fn filter_project(
        &self,
        spec: &FilterProject,
        batch: &RecordBatch,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        self.filter_project_chunk(spec, batch, None, stats)
    }

    fn top_n(
        &self,
        spec: &crate::TopN,
        batch: &RecordBatch,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        self.top_n_chunk(spec, batch, None, stats)
    }

    fn partial_aggregate(
        &self,
        spec: &PartialAggregate,
        batch: &RecordBatch,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        self.partial_aggregate_chunk(spec, batch, None, stats)
    }

    fn filter_project_chunk(
        &self,
        spec: &FilterProject,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let schema = spec.output_schema()?;
        let kernels = filter_project_source(spec)?;
        let parts = split_on_oom(batch, id, &mut |part, id| {
            self.filter_project_once(spec, &kernels, part, id, stats)
        })?;
        Ok(concat_batches(&schema, &parts)?)
    }

    fn top_n_chunk(
        &self,
        spec: &crate::TopN,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let kernels = crate::top_n::kernel_source(spec)?;
        let parts = split_on_oom(batch, id, &mut |part, id| {
            self.top_n_once(spec, &kernels, part, id, stats)
        })?;
        // The halves' top rows, ordered again: still the top rows of the whole batch.
        let merged = concat_batches(&batch.schema(), &parts)?;
        crate::top_n::ordered_rows(&merged, spec, 0..merged.num_rows())
    }

    fn partial_aggregate_chunk(
        &self,
        spec: &PartialAggregate,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let schema = spec.output_schema()?;
        let kernels = aggregate_source(spec)?;
        let parts = split_on_oom(batch, id, &mut |part, id| {
            self.aggregate_once(spec, &kernels, part, id, stats)
        })?;
        Ok(concat_batches(&schema, &parts)?)
    }
}

/// One run of a pipeline over a batch, named when it is (part of) a resident chunk.
type RunPart<'a> = dyn FnMut(&RecordBatch, Option<&ChunkId>) -> Result<RecordBatch, GpuError> + 'a;

/// Runs `run` on the batch, or on its halves (each named for its rows) when it does not fit.
fn split_on_oom(
    batch: &RecordBatch,
    id: Option<&ChunkId>,
    run: &mut RunPart<'_>,
) -> Result<Vec<RecordBatch>, GpuError> {
    match run(batch, id) {
        Err(GpuError::OutOfDeviceMemory { .. }) if batch.num_rows() >= 2 * MIN_SPLIT_ROWS => {
            let (half, rows) = (batch.num_rows() / 2, batch.num_rows());
            let first = id.map(|id| id.slice(0, half));
            let second = id.map(|id| id.slice(half, rows - half));
            let mut parts = split_on_oom(&batch.slice(0, half), first.as_ref(), run)?;
            parts.extend(split_on_oom(
                &batch.slice(half, rows - half),
                second.as_ref(),
                run,
            )?);
            Ok(parts)
        }
        other => other.map(|b| vec![b]),
    }
}

/// A partial aggregate's hash table: its slots, and how far a probe may look.
#[derive(Debug, Clone, Copy)]
struct TableSize {
    capacity: usize,
    max_probes: u64,
}

/// One input column on the device: its values and, when it has nulls, its validity bitmap.
pub(crate) struct DeviceColumn {
    pub(crate) data: CudaSlice<u8>,
    pub(crate) validity: Option<CudaSlice<u8>>,
}

impl std::fmt::Debug for DeviceColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceColumn({} bytes)", self.bytes())
    }
}

impl DeviceColumn {
    /// Pushes the column's two kernel parameters: its values, and its validity bitmap or a null
    /// pointer when it has no nulls.
    pub(crate) fn push_args<'a>(&'a self, launch: &mut LaunchArgs<'a>, null_pointer: &'a u64) {
        launch.arg(&self.data);
        match &self.validity {
            Some(v) => launch.arg(v),
            None => launch.arg(null_pointer),
        };
    }

    /// The device memory it holds.
    fn bytes(&self) -> usize {
        self.data.len() + self.validity.as_ref().map_or(0, |v| v.len())
    }
}

pub(crate) fn grid_for(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((rows as u32).div_ceil(BLOCK_THREADS).max(1), 1, 1),
        block_dim: (BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The bytes of a fixed-width column's values (bit-packed for booleans), from its first row.
fn value_bytes(array: &dyn Array, data_type: GpuType) -> Buffer {
    if data_type == GpuType::Boolean {
        return array.as_boolean().values().sliced();
    }
    let data = array.to_data();
    let width = data_type.width();
    let start = data.offset() * width;
    data.buffers()[0].slice_with_length(start, data.len() * width)
}

impl CudaBackend {
    pub(crate) fn driver<T>(
        during: &'static str,
        result: Result<T, cudarc::driver::DriverError>,
    ) -> Result<T, GpuError> {
        result.map_err(|e| GpuError::driver(during, e))
    }

    /// The input columns on the device: those of a resident chunk from device memory when they
    /// are there, the others copied (and kept there when the chunk is resident).
    pub(crate) fn upload(
        &self,
        batch: &RecordBatch,
        inputs: &[(usize, GpuType)],
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<Vec<Arc<DeviceColumn>>, GpuError> {
        let mut columns = Vec::with_capacity(inputs.len());
        for (index, data_type) in inputs {
            let key = id.map(|id| (id.clone(), *index, *data_type));
            if let Some(column) = key.as_ref().and_then(|k| self.resident.get(k)) {
                stats.bytes_resident += column.bytes() as u64;
                columns.push(column);
                continue;
            }
            let column = Arc::new(self.upload_column(batch.column(*index), *data_type, stats)?);
            if let Some(key) = key {
                self.resident.insert(key, column.clone(), column.bytes());
            }
            columns.push(column);
        }
        Ok(columns)
    }

    fn upload_column(
        &self,
        array: &ArrayRef,
        data_type: GpuType,
        stats: &mut RunStats,
    ) -> Result<DeviceColumn, GpuError> {
        let stream = &self.device.stream;
        let values = value_bytes(array.as_ref(), data_type);
        // A zero-length upload is not allowed; one byte stands in for an empty column.
        let bytes: &[u8] = if values.is_empty() {
            &[0]
        } else {
            values.as_slice()
        };
        let data = Self::driver("copying a column to the device", stream.clone_htod(bytes))?;
        stats.bytes_to_device += bytes.len() as u64;
        let validity = match array.logical_nulls() {
            Some(nulls) if nulls.null_count() > 0 => {
                let bits = nulls.inner().sliced();
                stats.bytes_to_device += bits.len() as u64;
                Some(Self::driver(
                    "copying a validity bitmap to the device",
                    stream.clone_htod(bits.as_slice()),
                )?)
            }
            _ => None,
        };
        Ok(DeviceColumn { data, validity })
    }

    pub(crate) fn input_bytes(batch: &RecordBatch, inputs: &[(usize, GpuType)]) -> usize {
        inputs
            .iter()
            .map(|(_, t)| batch.num_rows() * t.width() + batch.num_rows() / 8 + 1)
            .sum()
    }

    fn check_errors(&self, error_word: &CudaSlice<u32>) -> Result<u32, GpuError> {
        let word = Self::driver(
            "reading the error word",
            self.device.stream.clone_dtoh(error_word),
        )?;
        let bits = word.first().copied().unwrap_or(0);
        if bits & ERR_DIVIDE_BY_ZERO != 0 {
            return Err(GpuError::DivideByZero);
        }
        if bits & ERR_OVERFLOW != 0 {
            return Err(GpuError::ArithmeticOverflow(
                "integer or decimal result out of range".to_string(),
            ));
        }
        Ok(bits)
    }

    fn filter_project_once(
        &self,
        spec: &FilterProject,
        kernels: &KernelSource,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let schema = spec.output_schema()?;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(RecordBatch::new_empty(schema));
        }
        let output_bytes: usize = spec
            .projections
            .iter()
            .map(|p| p.expr.data_type().map(|t| rows * (t.width() + 1)))
            .sum::<Result<usize, GpuError>>()?;
        let _reserved = self
            .device
            .budget
            .reserve(Self::input_bytes(batch, &kernels.inputs) + output_bytes + rows / 64)?;
        let _one_at_a_time = self.running.lock();
        let stream = self.device.stream.clone();
        let columns = self.upload(batch, &kernels.inputs, id, stats)?;
        let null_pointer: u64 = 0;
        let num_rows = rows as i64;
        let grid = grid_for(rows);
        let blocks = grid.grid_dim.0 as usize;
        let error_word = Self::driver("allocating", stream.alloc_zeros::<u32>(1))?;
        let started = Instant::now();

        // Offsets of each block's kept rows, from a counting pass when there is a predicate.
        let (offsets, kept) = if spec.predicate.is_some() {
            let (count, compile_time) = self.device.function(&kernels.source, FP_COUNT)?;
            stats.compile_time += compile_time;
            let mut counts = Self::driver("allocating", stream.alloc_zeros::<u32>(blocks))?;
            let mut launch = stream.launch_builder(&count);
            launch.arg(&num_rows);
            for column in &columns {
                column.push_args(&mut launch, &null_pointer);
            }
            launch.arg(&mut counts).arg(&error_word);
            // SAFETY: the arguments match fp_count's parameters, generated from the same inputs.
            Self::driver("running fp_count", unsafe { launch.launch(grid) })?;
            let counts = Self::driver("reading block counts", stream.clone_dtoh(&counts))?;
            let mut offsets = Vec::with_capacity(blocks);
            let mut running = 0u32;
            for c in counts {
                offsets.push(running);
                running += c;
            }
            (
                Self::driver("copying block offsets", stream.clone_htod(&offsets))?,
                running as usize,
            )
        } else {
            (
                Self::driver("allocating", stream.alloc_zeros::<u32>(1))?,
                rows,
            )
        };

        let (write, compile_time) = self.device.function(&kernels.source, FP_WRITE)?;
        stats.compile_time += compile_time;
        let mut outputs = Vec::with_capacity(spec.projections.len());
        for projection in &spec.projections {
            let width = projection.expr.data_type()?.width();
            let values = Self::driver("allocating", stream.alloc_zeros::<u8>(kept.max(1) * width))?;
            let validity = Self::driver("allocating", stream.alloc_zeros::<u8>(kept.max(1)))?;
            outputs.push((values, validity));
        }
        let mut row_numbers = if spec.row_numbers {
            Some(Self::driver(
                "allocating",
                stream.alloc_zeros::<u32>(kept.max(1)),
            )?)
        } else {
            None
        };
        let mut launch = stream.launch_builder(&write);
        launch.arg(&num_rows);
        for column in &columns {
            column.push_args(&mut launch, &null_pointer);
        }
        launch.arg(&offsets);
        for (values, validity) in &mut outputs {
            launch.arg(values).arg(validity);
        }
        if let Some(rows) = &mut row_numbers {
            launch.arg(rows);
        }
        launch.arg(&error_word);
        // SAFETY: the arguments match fp_write's parameters, generated from the same spec.
        Self::driver("running fp_write", unsafe { launch.launch(grid) })?;
        self.check_errors(&error_word)?;
        stats.kernel_time += started.elapsed();

        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(outputs.len());
        for (projection, (values, validity)) in spec.projections.iter().zip(&outputs) {
            let data_type = projection.expr.data_type()?;
            let values = Self::driver("copying results back", stream.clone_dtoh(values))?;
            let validity = Self::driver("copying results back", stream.clone_dtoh(validity))?;
            stats.bytes_from_device += (values.len() + validity.len()) as u64;
            arrays.push(array_from_device(
                data_type,
                &values[..kept * data_type.width()],
                &validity[..kept],
            )?);
        }
        if let Some(rows) = &row_numbers {
            let mut rows = Self::driver("copying results back", stream.clone_dtoh(rows))?;
            stats.bytes_from_device += 4 * rows.len() as u64;
            rows.truncate(kept);
            arrays.push(Arc::new(arrow::array::UInt32Array::from(rows)));
        }
        stats.device_batches += 1;
        let options = RecordBatchOptions::new().with_row_count(Some(kept));
        Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
    }

    fn aggregate_once(
        &self,
        spec: &PartialAggregate,
        kernels: &KernelSource,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let rows = batch.num_rows();
        if rows == 0 {
            // Nothing to move; without GROUP BY the answer is still one row.
            return crate::CpuReference.partial_aggregate(spec, batch, stats);
        }
        // Start small (most GROUP BYs have few groups) and grow when the table fills; with
        // twice as many slots as rows it cannot fill.
        let most = if spec.group_by.is_empty() {
            // One group: the kernel uses slot 0 only.
            64
        } else {
            (2 * rows).next_power_of_two().max(64)
        };
        let mut capacity = most.min(1 << 16);
        loop {
            // Short probe chains until the table has its full size, where any chain may do.
            let max_probes = if capacity < most {
                128
            } else {
                capacity as u64
            };
            match self.aggregate_with_capacity(
                spec,
                kernels,
                batch,
                id,
                TableSize {
                    capacity,
                    max_probes,
                },
                stats,
            ) {
                Err(GpuError::TooManyGroups { .. }) if capacity < most => {
                    capacity = (capacity * 8).min(most)
                }
                other => return other,
            }
        }
    }

    fn aggregate_with_capacity(
        &self,
        spec: &PartialAggregate,
        kernels: &KernelSource,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        table: TableSize,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let TableSize {
            capacity,
            max_probes,
        } = table;
        let rows = batch.num_rows();
        let key_count = spec.group_by.len();
        let arrays: Vec<Vec<AccumulatorArray>> = spec
            .aggregates
            .iter()
            .map(|c| accumulator_arrays(c.function, c.input.map(|(_, t)| t)))
            .collect();
        let accumulator_count: usize = arrays.iter().map(Vec::len).sum();
        let table_bytes = capacity * (8 + 8 * key_count + 8 * accumulator_count);
        let _reserved = self
            .device
            .budget
            .reserve(Self::input_bytes(batch, &kernels.inputs) + table_bytes)?;
        let _one_at_a_time = self.running.lock();
        let stream = self.device.stream.clone();
        let columns = self.upload(batch, &kernels.inputs, id, stats)?;
        let null_pointer: u64 = 0;
        let started = Instant::now();

        let slot_state = Self::driver("allocating", stream.alloc_zeros::<u32>(capacity))?;
        let slot_nulls = Self::driver("allocating", stream.alloc_zeros::<u32>(capacity))?;
        let slot_keys = Self::driver(
            "allocating",
            stream.alloc_zeros::<i64>(capacity * key_count.max(1)),
        )?;
        let mut accumulators = Vec::with_capacity(accumulator_count);
        for _ in 0..accumulator_count {
            accumulators.push(Self::driver(
                "allocating",
                stream.alloc_zeros::<u64>(capacity),
            )?);
        }
        let error_word = Self::driver("allocating", stream.alloc_zeros::<u32>(1))?;

        let (init, compile_time) = self.device.function(&kernels.source, AGG_INIT)?;
        stats.compile_time += compile_time;
        let capacity_arg = capacity as u64;
        let mut launch = stream.launch_builder(&init);
        launch.arg(&capacity_arg);
        for a in &mut accumulators {
            launch.arg(a);
        }
        // SAFETY: agg_init takes the capacity and the accumulator arrays, in this order.
        Self::driver("running agg_init", unsafe {
            launch.launch(grid_for(capacity))
        })?;

        let (update, compile_time) = self.device.function(&kernels.source, AGG_UPDATE)?;
        stats.compile_time += compile_time;
        let num_rows = rows as i64;
        let mask = (capacity - 1) as u64;
        let mut launch = stream.launch_builder(&update);
        launch.arg(&num_rows);
        for column in &columns {
            column.push_args(&mut launch, &null_pointer);
        }
        launch
            .arg(&mask)
            .arg(&max_probes)
            .arg(&slot_state)
            .arg(&slot_nulls);
        if key_count > 0 {
            launch.arg(&slot_keys);
        }
        for a in &accumulators {
            launch.arg(a);
        }
        launch.arg(&error_word);
        // SAFETY: the arguments match agg_update's parameters, generated from the same spec.
        Self::driver("running agg_update", unsafe {
            launch.launch(grid_for(rows))
        })?;
        let errors = self.check_errors(&error_word)?;
        stats.kernel_time += started.elapsed();
        if errors & ERR_TABLE_FULL != 0 {
            return Err(GpuError::TooManyGroups { capacity });
        }

        let state = Self::driver("copying the table back", stream.clone_dtoh(&slot_state))?;
        let nulls = Self::driver("copying the table back", stream.clone_dtoh(&slot_nulls))?;
        let keys = Self::driver("copying the table back", stream.clone_dtoh(&slot_keys))?;
        let mut host_accumulators = Vec::with_capacity(accumulators.len());
        for a in &accumulators {
            host_accumulators.push(Self::driver(
                "copying the table back",
                stream.clone_dtoh(a),
            )?);
        }
        stats.bytes_from_device += (capacity * (8 + 8 * key_count + 8 * accumulator_count)) as u64;
        stats.device_batches += 1;

        let slots: Vec<usize> = (0..capacity).filter(|&s| state[s] == 2).collect();
        let mut outputs: Vec<ArrayRef> = Vec::new();
        for (k, (_, data_type, _)) in spec.group_by.iter().enumerate() {
            let values: Vec<Value> = slots
                .iter()
                .map(|&s| {
                    if nulls[s] & (1 << k) != 0 {
                        return Value::Null;
                    }
                    let v = keys[s * key_count + k];
                    match data_type {
                        GpuType::Boolean => Value::Bool(v != 0),
                        GpuType::Int32 => Value::I32(v as i32),
                        GpuType::Date32 => Value::Date(v as i32),
                        _ => Value::I64(v),
                    }
                })
                .collect();
            outputs.push(build_array(data_type.to_arrow(), &values)?);
        }
        let mut next = 0;
        for (call, kinds) in spec.aggregates.iter().zip(&arrays) {
            let base = next;
            next += kinds.len();
            let counts = &host_accumulators[base];
            let input = call.input.map(|(_, t)| t);
            // The value of the second array (sum/min/max) for a slot with inputs.
            let value_of = |s: usize| -> Value {
                if counts[s] == 0 || kinds.len() < 2 {
                    return Value::Null;
                }
                let raw = host_accumulators[base + 1][s];
                match (kinds[1], input) {
                    (AccumulatorArray::SumF64, _) => Value::F64(f64::from_bits(raw)),
                    (AccumulatorArray::SumLow, _) => {
                        let high = host_accumulators[base + 2][s];
                        Value::Dec((((high as u128) << 64) | raw as u128) as i128)
                    }
                    (AccumulatorArray::SumI64, _) => Value::I64(raw as i64),
                    (_, Some(GpuType::Float64)) => Value::F64(f64_from_order(raw as i64)),
                    (_, Some(GpuType::Int32)) => Value::I32(raw as i64 as i32),
                    (_, Some(GpuType::Date32)) => Value::Date(raw as i64 as i32),
                    _ => Value::I64(raw as i64),
                }
            };
            let groups: Vec<(u64, Value)> =
                slots.iter().map(|&s| (counts[s], value_of(s))).collect();
            outputs.extend(state_columns(call, &groups, key_count > 0)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(slots.len()));
        Ok(RecordBatch::try_new_with_options(
            spec.output_schema()?,
            outputs,
            &options,
        )?)
    }
}

/// The inverse of the kernels' `f64_order`.
fn f64_from_order(x: i64) -> f64 {
    f64::from_bits((x ^ ((((x >> 63) as u64) >> 1) as i64)) as u64)
}

/// An Arrow array from a kernel's output: values (one byte per row for booleans) and one validity
/// byte per row.
fn array_from_device(
    data_type: GpuType,
    values: &[u8],
    validity: &[u8],
) -> Result<ArrayRef, GpuError> {
    let rows = validity.len();
    let nulls = if validity.iter().all(|&v| v != 0) {
        None
    } else {
        Some(NullBuffer::new(BooleanBuffer::from_iter(
            validity.iter().map(|&v| v != 0),
        )))
    };
    let values_buffer = if data_type == GpuType::Boolean {
        BooleanBuffer::from_iter(values.iter().map(|&v| v != 0)).into_inner()
    } else {
        // Copied into an aligned buffer: Arrow requires 16-byte alignment for decimals.
        Buffer::from_slice_ref(values)
    };
    let data = arrow::array::ArrayData::builder(data_type.to_arrow())
        .len(rows)
        .add_buffer(values_buffer)
        .nulls(nulls)
        .build()?;
    Ok(arrow::array::make_array(data))
}
