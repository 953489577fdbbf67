//! `shoal-gpu-bench [ROWS...]`: times a filter + GROUP BY aggregate over random data on the GPU
//! and on the CPU path of the same machine (DataFusion on every core), for a machine with CUDA
//! and no Rust toolchain (build it here, copy it there). Default sizes: 10^6, 10^7, 10^8 rows.
//!
//! The query: `SELECT k, count(*), sum(q), avg(x), max(q) FROM t WHERE x > 0.25 AND q < 900000
//! GROUP BY k` over k INT (64 groups), x DOUBLE, q BIGINT (20 bytes a row). Printed per size:
//! the SQL plan's time on the CPU and with the device operators (transfers included), and the
//! device backend alone with data already in memory on the host: wall time with transfers, wall
//! time with the filter's input columns resident on the device (a second pass over chunks named
//! as resident, which the backend keeps in device memory; the aggregate's input, the filter's
//! output, still comes back and goes up again), and kernel time, as rows/s and GB/s against the
//! device's peak memory bandwidth. The lines are Markdown table rows for docs/benchmarks.md.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use rand::{Rng, SeedableRng};
use shoal_executor::{GpuMode, GpuOptions, OffloadToDevice};
use shoal_gpu::{
    AggregateCall, AggregateFunction, ChunkId, CompareOp, CudaBackend, DeviceProbe, FilterProject,
    GpuExpr, GpuType, Literal, PartialAggregate, PipelineBackend, Projection, RunStats,
};

const QUERY: &str = "SELECT k, count(*), sum(q), avg(x), max(q) FROM t \
                     WHERE x > 0.25 AND q < 900000 GROUP BY k";
const BATCH_ROWS: usize = 1 << 20;

fn data(rows: usize) -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, false),
        Field::new("x", DataType::Float64, true),
        Field::new("q", DataType::Int64, false),
    ]));
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut batches = Vec::new();
    let mut left = rows;
    while left > 0 {
        let n = left.min(BATCH_ROWS);
        left -= n;
        let k: Int32Array = (0..n).map(|_| rng.random_range(0..64)).collect();
        let x: Float64Array = (0..n)
            .map(|_| (rng.random_range(0..50) != 0).then(|| rng.random::<f64>()))
            .collect();
        let q: Int64Array = (0..n).map(|_| rng.random_range(0..1_000_000)).collect();
        batches.push(
            RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(x), Arc::new(q)])
                .expect("columns match"),
        );
    }
    (schema, batches)
}

async fn run_sql(schema: Arc<Schema>, batches: &[RecordBatch], mode: GpuMode) -> f64 {
    let config = SessionConfig::new().with_option_extension(GpuOptions::with_mode(mode));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(OffloadToDevice))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let partitions = std::thread::available_parallelism().map_or(4, |n| n.get());
    let mut split: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (i, b) in batches.iter().enumerate() {
        split[i % partitions].push(b.clone());
    }
    let table = MemTable::try_new(schema, split).expect("table");
    ctx.register_table("t", Arc::new(table)).expect("register");
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let out = ctx
            .sql(QUERY)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        best = best.min(started.elapsed().as_secs_f64());
        assert!(!out.is_empty());
    }
    best
}

fn device_specs() -> (FilterProject, PartialAggregate) {
    let filter = FilterProject {
        predicate: Some(GpuExpr::And(
            Box::new(GpuExpr::compare(
                CompareOp::Gt,
                GpuExpr::column(1, GpuType::Float64),
                GpuExpr::Literal(Literal::Float64(0.25)),
            )),
            Box::new(GpuExpr::compare(
                CompareOp::Lt,
                GpuExpr::column(2, GpuType::Int64),
                GpuExpr::Literal(Literal::Int64(900_000)),
            )),
        )),
        projections: vec![
            Projection {
                expr: GpuExpr::column(0, GpuType::Int32),
                name: "k".into(),
            },
            Projection {
                expr: GpuExpr::column(1, GpuType::Float64),
                name: "x".into(),
            },
            Projection {
                expr: GpuExpr::column(2, GpuType::Int64),
                name: "q".into(),
            },
        ],
        row_numbers: false,
    };
    let call = |function, input: Option<(usize, GpuType)>, name: &str| AggregateCall {
        function,
        input,
        name: name.into(),
    };
    let aggregate = PartialAggregate {
        group_by: vec![(0, GpuType::Int32, "k".into())],
        aggregates: vec![
            call(AggregateFunction::Count, None, "count"),
            call(AggregateFunction::Sum, Some((2, GpuType::Int64)), "sum"),
            call(AggregateFunction::Avg, Some((1, GpuType::Float64)), "avg"),
            call(AggregateFunction::Max, Some((2, GpuType::Int64)), "max"),
        ],
    };
    (filter, aggregate)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<f64>().ok().map(|v| v as usize))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000_000, 10_000_000, 100_000_000]
    } else {
        sizes
    };
    let probe = shoal_gpu::probe();
    println!("device: {}", probe.describe());
    let bandwidth = match &probe {
        DeviceProbe::Present(info) => info.memory_bandwidth,
        DeviceProbe::Absent(_) => None,
    };
    let gpu = CudaBackend::open().ok();
    println!("| rows | CPU SQL (s) | device SQL (s) | ratio | backend with transfers (s) | backend, filter input resident (s) | MB moved up, resident | kernels (s) | rows/s (kernels) | GB/s (kernels) | of peak |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let (filter, aggregate) = device_specs();
    for rows in sizes {
        let (schema, batches) = data(rows);
        let cpu = run_sql(schema.clone(), &batches, GpuMode::Off).await;
        let Some(gpu) = &gpu else {
            println!("| {rows} | {cpu:.3} | no GPU | | | | | | | | |");
            continue;
        };
        let device_sql = run_sql(schema.clone(), &batches, GpuMode::On).await;
        // The backend alone, one pass over every batch, after a warm-up that compiles.
        let mut warm = RunStats::default();
        let kept = gpu
            .filter_project(&filter, &batches[0], &mut warm)
            .expect("filter");
        gpu.partial_aggregate(&aggregate, &kept, &mut warm)
            .expect("aggregate");
        let mut stats = RunStats::default();
        let started = Instant::now();
        for batch in &batches {
            let kept = gpu
                .filter_project(&filter, batch, &mut stats)
                .expect("filter");
            gpu.partial_aggregate(&aggregate, &kept, &mut stats)
                .expect("aggregate");
        }
        let wall = started.elapsed().as_secs_f64();
        // Named chunks: the first pass leaves their filter inputs on the device, the second
        // finds them there.
        let ids: Vec<ChunkId> = batches
            .iter()
            .enumerate()
            .map(|(i, b)| ChunkId {
                source: format!("bench-{rows}").into(),
                first_row: (i * BATCH_ROWS) as u64,
                rows: b.num_rows() as u64,
            })
            .collect();
        let pass = |stats: &mut RunStats| {
            for (batch, id) in batches.iter().zip(&ids) {
                let kept = gpu
                    .filter_project_chunk(&filter, batch, Some(id), stats)
                    .expect("filter");
                gpu.partial_aggregate(&aggregate, &kept, stats)
                    .expect("aggregate");
            }
        };
        pass(&mut RunStats::default());
        let mut resident = RunStats::default();
        let started = Instant::now();
        pass(&mut resident);
        let resident_wall = started.elapsed().as_secs_f64();
        let moved_mb = resident.bytes_to_device as f64 / 1e6;
        let kernels = stats.kernel_time.as_secs_f64();
        let bytes = rows as f64 * 20.0;
        let rate = bytes / kernels / 1e9;
        let peak = bandwidth.map_or(String::new(), |b| {
            format!("{:.0}%", 100.0 * bytes / kernels / b)
        });
        println!(
            "| {rows} | {cpu:.3} | {device_sql:.3} | {:.2}x | {wall:.3} | {resident_wall:.3} | {moved_mb:.0} | {kernels:.4} | {:.3e} | {rate:.1} | {peak} |",
            cpu / device_sql,
            rows as f64 / kernels
        );
    }
}
