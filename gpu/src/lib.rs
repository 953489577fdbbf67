//! Shoal's GPU executor: fused filter + projection and partial hash aggregation over Arrow
//! batches, run on an NVIDIA GPU through CUDA (cudarc, loaded at run time) or on the CPU by a
//! reference implementation of the same operators.
//!
//! In: a pipeline spec (`FilterProject`, `PartialAggregate`, built from `GpuExpr` trees by the
//! executor's planner rule) and Arrow `RecordBatch`es. Out: Arrow batches with exactly the CPU's
//! answer (partial aggregates in the state layout DataFusion's final aggregate merges), or an
//! error that is either the query's own (division by zero, overflow) or a reason to run the batch
//! on the CPU instead (no device, not supported, out of device memory).
//!
//! A batch named as a resident chunk ([`ChunkId`]) leaves its input columns in device memory,
//! where the next run of the same chunk finds them (`resident`).
//!
//! Kernels are generated as CUDA C (`codegen`) and compiled by NVRTC at run time, cached by
//! source and architecture (`nvrtc`). Nothing needs a CUDA toolkit at build time, and a node
//! without a GPU loads neither libcuda nor libnvrtc unless asked. Depends on arrow only: not on
//! DataFusion, storage or the rest of Shoal.

pub mod codegen;
pub mod cost;
pub mod cpu;
pub mod cuda;
mod cuda_top_n;
pub mod device;
pub mod error;
pub mod expr;
pub mod nvrtc;
pub mod plan;
pub mod resident;
pub mod testdata;
pub mod top_n;

use std::time::Duration;

use arrow::record_batch::RecordBatch;

pub use cost::{CostModel, Estimate};
pub use cpu::CpuReference;
pub use cuda::CudaBackend;
pub use device::{probe, DeviceProbe};
pub use error::GpuError;
pub use expr::{ArithOp, CompareOp, GpuExpr, GpuType, Literal};
pub use plan::{AggregateCall, AggregateFunction, FilterProject, PartialAggregate, Projection};
pub use resident::{ChunkId, ResidentSet};
pub use top_n::TopN;

/// The node's cost model, shared by every query (see `cost`).
pub fn cost_model() -> &'static CostModel {
    static MODEL: std::sync::OnceLock<CostModel> = std::sync::OnceLock::new();
    MODEL.get_or_init(CostModel::default)
}

/// What running pipelines cost, summed over batches: the figures EXPLAIN ANALYZE shows.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RunStats {
    pub bytes_to_device: u64,
    pub bytes_from_device: u64,
    /// Input bytes found resident on the device: not moved again.
    pub bytes_resident: u64,
    /// Wall time from the first launch to the error check, per batch.
    pub kernel_time: Duration,
    /// NVRTC time for kernels not found in the cache.
    pub compile_time: Duration,
    pub device_batches: u64,
}

/// A place pipelines run: the GPU, or the CPU reference. Both give the same answer.
pub trait PipelineBackend: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;

    fn filter_project(
        &self,
        spec: &FilterProject,
        batch: &RecordBatch,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError>;

    fn partial_aggregate(
        &self,
        spec: &PartialAggregate,
        batch: &RecordBatch,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError>;

    /// The first `spec.limit` rows of `batch` in the spec's order (all its columns).
    fn top_n(
        &self,
        spec: &TopN,
        batch: &RecordBatch,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError>;

    /// [`PipelineBackend::filter_project`] over a batch named `id` when it is a resident
    /// chunk: a backend with memory of its own keeps its input columns there under that name,
    /// and takes them from there the next time.
    fn filter_project_chunk(
        &self,
        spec: &FilterProject,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let _ = id;
        self.filter_project(spec, batch, stats)
    }

    /// [`PipelineBackend::partial_aggregate`] over a batch named `id` (see
    /// [`PipelineBackend::filter_project_chunk`]).
    fn partial_aggregate_chunk(
        &self,
        spec: &PartialAggregate,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let _ = id;
        self.partial_aggregate(spec, batch, stats)
    }

    /// [`PipelineBackend::top_n`] over a batch named `id` (see
    /// [`PipelineBackend::filter_project_chunk`]).
    fn top_n_chunk(
        &self,
        spec: &TopN,
        batch: &RecordBatch,
        id: Option<&ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let _ = id;
        self.top_n(spec, batch, stats)
    }

    /// Whether the kernels of this module source are compiled already (the cost model adds the
    /// compile time when not). Backends without kernels are always ready.
    fn kernels_ready(&self, _module: &Module) -> bool {
        true
    }
}

/// Which pipeline's kernels a cost estimate is about.
#[derive(Debug, Clone, Copy)]
pub enum Module<'a> {
    FilterProject(&'a FilterProject),
    PartialAggregate(&'a PartialAggregate),
    TopN(&'a TopN),
}
