//! Top-N on the device: the candidates are narrowed on the GPU and ordered on the host.
//!
//! Null keys are counted on the host (the validity bitmap says how many) and placed first or
//! last there. Among the non-null rows, eight radix-select passes (`topn_histogram`, eight bits
//! of the 64-bit order key each) find the key K of the `need`-th row and how many rows equal to
//! K belong to the answer; `topn_count` and `topn_write` then list, in input order, the rows
//! with a key at most K. Only those positions come back; the host orders them (ties in input
//! order) and takes the rows.

use arrow::array::{Array, RecordBatch};
use cudarc::driver::PushKernelArg;

use crate::codegen::{KernelSource, TOPN_COUNT, TOPN_HISTOGRAM, TOPN_WRITE};
use crate::cuda::{grid_for, CudaBackend};
use crate::error::GpuError;
use crate::top_n::{ordered_rows, row_key, TopN};
use crate::RunStats;

impl CudaBackend {
    pub(crate) fn top_n_once(
        &self,
        spec: &TopN,
        kernels: &KernelSource,
        batch: &RecordBatch,
        id: Option<&crate::ChunkId>,
        stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let rows = batch.num_rows();
        let column = batch.column(spec.key.0);
        let non_null = rows - column.null_count();
        // Non-null rows the answer needs: all of them when the limit reaches past them.
        let need = if spec.nulls_first {
            spec.limit.saturating_sub(column.null_count())
        } else {
            spec.limit
        };
        if need == 0 || need >= non_null || rows == 0 {
            // Nothing to narrow: every non-null row (or none) is a candidate.
            return ordered_rows(batch, spec, 0..rows);
        }
        let _reserved = self
            .device
            .budget
            .reserve(Self::input_bytes(batch, &kernels.inputs) + rows * 4 + 4096)?;
        let _one_at_a_time = self.running.lock();
        let stream = self.device.stream.clone();
        let columns = self.upload(batch, &kernels.inputs, id, stats)?;
        let key_column = &columns[0];
        let null_pointer: u64 = 0;
        let num_rows = rows as i64;
        let grid = grid_for(rows);
        let started = std::time::Instant::now();

        let (histogram_kernel, compile_time) =
            self.device.function(&kernels.source, TOPN_HISTOGRAM)?;
        stats.compile_time += compile_time;
        let (mut prefix, mut mask, mut remaining) = (0u64, 0u64, need as u64);
        for pass in 0..8u32 {
            let shift = 56 - 8 * pass;
            let mut histogram = Self::driver("allocating", stream.alloc_zeros::<u32>(256))?;
            let mut launch = stream.launch_builder(&histogram_kernel);
            launch.arg(&num_rows);
            key_column.push_args(&mut launch, &null_pointer);
            launch
                .arg(&prefix)
                .arg(&mask)
                .arg(&shift)
                .arg(&mut histogram);
            // SAFETY: the arguments match topn_histogram's parameters.
            Self::driver("running topn_histogram", unsafe { launch.launch(grid) })?;
            let counts = Self::driver("reading a histogram", stream.clone_dtoh(&histogram))?;
            let mut below = 0u64;
            for (bin, count) in counts.iter().enumerate() {
                let count = *count as u64;
                if below + count >= remaining {
                    prefix |= (bin as u64) << shift;
                    mask |= 0xffu64 << shift;
                    remaining -= below;
                    break;
                }
                below += count;
            }
        }
        let threshold = prefix;

        let (count_kernel, compile_time) = self.device.function(&kernels.source, TOPN_COUNT)?;
        stats.compile_time += compile_time;
        let blocks = grid.grid_dim.0 as usize;
        let mut block_counts = Self::driver("allocating", stream.alloc_zeros::<u32>(blocks))?;
        let mut launch = stream.launch_builder(&count_kernel);
        launch.arg(&num_rows);
        key_column.push_args(&mut launch, &null_pointer);
        launch.arg(&threshold).arg(&mut block_counts);
        // SAFETY: the arguments match topn_count's parameters.
        Self::driver("running topn_count", unsafe { launch.launch(grid) })?;
        let counts = Self::driver("reading block counts", stream.clone_dtoh(&block_counts))?;
        let mut offsets = Vec::with_capacity(blocks);
        let mut total = 0u32;
        for c in counts {
            offsets.push(total);
            total += c;
        }
        let offsets = Self::driver("copying block offsets", stream.clone_htod(&offsets))?;
        let (write_kernel, compile_time) = self.device.function(&kernels.source, TOPN_WRITE)?;
        stats.compile_time += compile_time;
        let mut candidates = Self::driver(
            "allocating",
            stream.alloc_zeros::<u32>((total as usize).max(1)),
        )?;
        let mut launch = stream.launch_builder(&write_kernel);
        launch.arg(&num_rows);
        key_column.push_args(&mut launch, &null_pointer);
        launch.arg(&threshold).arg(&offsets).arg(&mut candidates);
        // SAFETY: the arguments match topn_write's parameters.
        Self::driver("running topn_write", unsafe { launch.launch(grid) })?;
        let mut candidates = Self::driver("copying rows back", stream.clone_dtoh(&candidates))?;
        candidates.truncate(total as usize);
        stats.kernel_time += started.elapsed();
        stats.bytes_from_device += 4 * candidates.len() as u64 + 8 * 256;
        stats.device_batches += 1;

        // Every row below the threshold, the first `remaining` at it, and the nulls.
        let mut at_threshold = 0u64;
        let mut chosen: Vec<usize> = Vec::with_capacity(need);
        for row in candidates {
            let row = row as usize;
            match row_key(column.as_ref(), spec, row) {
                Some(key) if key < threshold => chosen.push(row),
                Some(key) if key == threshold && at_threshold < remaining => {
                    at_threshold += 1;
                    chosen.push(row);
                }
                _ => {}
            }
        }
        let nulls = (0..rows).filter(|&r| column.is_null(r));
        let mut all: Vec<usize> = chosen.into_iter().chain(nulls).collect();
        all.sort_unstable();
        ordered_rows(batch, spec, all.into_iter())
    }
}
