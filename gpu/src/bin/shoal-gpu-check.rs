//! `shoal-gpu-check [SEEDS]`: runs random filter + projection, partial aggregate and top-N specs on the
//! GPU and on the CPU reference and compares the answers; for a machine with CUDA and no Rust
//! toolchain (build it here, copy it there). Exits 0 when every answer matched, 1 on a mismatch,
//! 2 when there is no GPU (with the probe's reason).
//!
//! Answers must be identical except float sums, whose order of addition on the device is not
//! the CPU's (atomic adds): those may differ in the last bits (relative 1e-9).

use std::process::ExitCode;
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rand::Rng;
use shoal_gpu::testdata::{random_batch, ExprGenerator};
use shoal_gpu::{
    probe, ChunkId, CpuReference, CudaBackend, DeviceProbe, GpuError, PipelineBackend, RunStats,
};

fn sizes(rng: &mut rand::rngs::StdRng) -> usize {
    match rng.random_range(0..12) {
        0 => 0,
        1 => 1,
        2 => 33,
        3 => 1_000_003,
        4 | 5 => rng.random_range(100_000..300_000),
        _ => rng.random_range(2..5_000),
    }
}

/// Rows as text, sorted; float columns listed apart with their values for a tolerant compare.
fn rows_and_floats(batch: &RecordBatch) -> (Vec<String>, Vec<Vec<f64>>) {
    let options = FormatOptions::default().with_null("NULL");
    let mut float_columns = Vec::new();
    let mut text_columns = Vec::new();
    for column in batch.columns() {
        if column.data_type() == &DataType::Float64 {
            float_columns.push(column.clone());
        } else {
            text_columns.push(column.clone());
        }
    }
    let formatters: Vec<ArrayFormatter> = text_columns
        .iter()
        .filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
        .collect();
    let mut rows: Vec<(String, Vec<f64>)> = (0..batch.num_rows())
        .map(|row| {
            let text = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join(" | ");
            let floats = float_columns
                .iter()
                .map(|c| {
                    let a = c.as_primitive::<Float64Type>();
                    if a.is_null(row) {
                        f64::from_bits(0x7ff0_dead_0000_0000)
                    } else {
                        a.value(row)
                    }
                })
                .collect();
            (text, floats)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.into_iter().unzip()
}

fn close(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
        || (a.is_nan() && b.is_nan())
        || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn main() -> ExitCode {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let info = probe();
    println!("device: {}", info.describe());
    if let DeviceProbe::Absent(_) = info {
        return ExitCode::from(2);
    }
    let gpu = match CudaBackend::open() {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("no device backend: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let (mut compared, mut both_failed, mut mismatches) = (0, 0, 0);
    let mut stats = RunStats::default();
    for seed in 0..seeds {
        let mut generator = ExprGenerator::new(seed);
        let aggregate = seed % 4 == 2;
        let rows = sizes(&mut generator.rng);
        let nulls = generator.rng.random_range(0..40);
        // Half of the batches are named as resident chunks and run twice: the second run reads
        // its input columns from device memory, and that answer is the one compared.
        let id = (seed % 8 >= 4).then(|| ChunkId {
            source: format!("check-{seed}").into(),
            first_row: 0,
            rows: rows as u64,
        });
        let twice = |run: &mut dyn FnMut(&mut RunStats) -> Result<RecordBatch, GpuError>,
                     stats: &mut RunStats| {
            if id.is_some() {
                let _ = run(&mut RunStats::default());
            }
            run(stats)
        };
        let (label, on_gpu, on_cpu) = if seed % 4 == 3 {
            // Top-N: ties are taken in input order on both sides, so rows must be identical.
            let spec = generator.top_n();
            let batch = random_batch(&mut generator.rng, rows, nulls);
            (
                format!("{spec:?}"),
                twice(
                    &mut |s| gpu.top_n_chunk(&spec, &batch, id.as_ref(), s),
                    &mut stats,
                ),
                CpuReference.top_n(&spec, &batch, &mut RunStats::default()),
            )
        } else if aggregate {
            let spec = generator.partial_aggregate();
            let batch = random_batch(&mut generator.rng, rows, nulls);
            (
                format!("{spec:?}"),
                twice(
                    &mut |s| gpu.partial_aggregate_chunk(&spec, &batch, id.as_ref(), s),
                    &mut stats,
                ),
                CpuReference.partial_aggregate(&spec, &batch, &mut RunStats::default()),
            )
        } else {
            let spec = generator.filter_project();
            let batch = random_batch(&mut generator.rng, rows, nulls);
            (
                spec.cache_key(),
                twice(
                    &mut |s| gpu.filter_project_chunk(&spec, &batch, id.as_ref(), s),
                    &mut stats,
                ),
                CpuReference.filter_project(&spec, &batch, &mut RunStats::default()),
            )
        };
        match (on_gpu, on_cpu) {
            (Ok(g), Ok(c)) => {
                let same = if aggregate {
                    let (gt, gf) = rows_and_floats(&g);
                    let (ct, cf) = rows_and_floats(&c);
                    gt == ct
                        && gf.len() == cf.len()
                        && gf
                            .iter()
                            .zip(&cf)
                            .all(|(a, b)| a.iter().zip(b).all(|(x, y)| close(*x, *y)))
                } else {
                    g.schema() == c.schema()
                        && g.columns()
                            .iter()
                            .zip(c.columns())
                            .all(|(a, b)| a.to_data() == b.to_data())
                };
                if same {
                    compared += 1;
                } else {
                    mismatches += 1;
                    println!("MISMATCH seed {seed} rows {rows}: {label}");
                }
            }
            (Err(g), Err(c)) if g.is_query_error() && c.is_query_error() => both_failed += 1,
            (g, c) => {
                mismatches += 1;
                println!(
                    "MISMATCH seed {seed} rows {rows}: gpu {:?} cpu {:?}: {label}",
                    g.map(|b| b.num_rows()),
                    c.map(|b| b.num_rows())
                );
            }
        }
    }
    println!(
        "{compared} answers identical, {both_failed} failed alike, {mismatches} mismatches in {:.1}s; \
         device: {} batches, {} MB in, {} MB found resident, {} MB out, kernels {:.3}s, compiling {:.3}s",
        started.elapsed().as_secs_f64(),
        stats.device_batches,
        stats.bytes_to_device >> 20,
        stats.bytes_resident >> 20,
        stats.bytes_from_device >> 20,
        stats.kernel_time.as_secs_f64(),
        stats.compile_time.as_secs_f64()
    );
    if mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
