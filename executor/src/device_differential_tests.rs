//! Differential tests of the device operators against DataFusion on random data: random
//! expression trees and aggregates (gpu::testdata) are turned into DataFusion physical
//! expressions, run by DataFusion, translated back with `translate_expr` /
//! `translate_partial_aggregate`, and run by the CPU reference. Answers must be identical:
//! values bit for bit (NaN, -0.0, infinities included), nulls, types, and errors.
//!
//! The one allowed difference is where DataFusion evaluates both operands of AND/OR and the
//! device, like PostgreSQL, skips the right one where the left decides: an error raised only
//! there. Those cases are counted and must stay a minority of the runs.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::{average, count, min_max, sum};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, IsNotNullExpr, IsNullExpr, Literal as LiteralExpr, NotExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::SessionContext;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_gpu::testdata::{column_types, random_batch, ExprGenerator};
use shoal_gpu::{
    AggregateFunction, ArithOp, CompareOp, CpuReference, FilterProject, GpuError, GpuExpr, GpuType,
    Literal, PartialAggregate, PipelineBackend, RunStats,
};

use crate::device_translate::{translate_expr, translate_partial_aggregate};

/// The DataFusion expression for a device expression over `random_batch`'s columns.
fn to_datafusion(expr: &GpuExpr) -> Arc<dyn PhysicalExpr> {
    let binary = |l: &GpuExpr, op, r: &GpuExpr| -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(to_datafusion(l), op, to_datafusion(r)))
    };
    match expr {
        GpuExpr::Column { index, .. } => Arc::new(Column::new(column_types()[*index].0, *index)),
        GpuExpr::Literal(literal) => Arc::new(LiteralExpr::new(scalar(*literal))),
        GpuExpr::Compare { op, left, right } => binary(
            left,
            match op {
                CompareOp::Eq => Operator::Eq,
                CompareOp::NotEq => Operator::NotEq,
                CompareOp::Lt => Operator::Lt,
                CompareOp::LtEq => Operator::LtEq,
                CompareOp::Gt => Operator::Gt,
                CompareOp::GtEq => Operator::GtEq,
            },
            right,
        ),
        GpuExpr::And(l, r) => binary(l, Operator::And, r),
        GpuExpr::Or(l, r) => binary(l, Operator::Or, r),
        GpuExpr::Not(e) => Arc::new(NotExpr::new(to_datafusion(e))),
        GpuExpr::IsNull(e) => Arc::new(IsNullExpr::new(to_datafusion(e))),
        GpuExpr::IsNotNull(e) => Arc::new(IsNotNullExpr::new(to_datafusion(e))),
        GpuExpr::Arith {
            op,
            left,
            right,
            checked,
        } => {
            let op = match op {
                ArithOp::Add => Operator::Plus,
                ArithOp::Sub => Operator::Minus,
                ArithOp::Mul => Operator::Multiply,
                ArithOp::Div => Operator::Divide,
                ArithOp::Mod => Operator::Modulo,
            };
            Arc::new(
                BinaryExpr::new(to_datafusion(left), op, to_datafusion(right))
                    .with_fail_on_overflow(*checked),
            )
        }
        GpuExpr::Cast { input, to } => {
            Arc::new(CastExpr::new(to_datafusion(input), to.to_arrow(), None))
        }
    }
}

fn scalar(literal: Literal) -> ScalarValue {
    match literal {
        Literal::Null(t) => ScalarValue::try_from(&t.to_arrow()).expect("typed null"),
        Literal::Boolean(b) => ScalarValue::Boolean(Some(b)),
        Literal::Int32(v) => ScalarValue::Int32(Some(v)),
        Literal::Int64(v) => ScalarValue::Int64(Some(v)),
        Literal::Float64(v) => ScalarValue::Float64(Some(v)),
        Literal::Date32(v) => ScalarValue::Date32(Some(v)),
        Literal::Decimal128 {
            value,
            precision,
            scale,
        } => ScalarValue::Decimal128(Some(value), precision, scale),
    }
}

/// What DataFusion's FilterExec and ProjectionExec give for `spec` on `batch`.
fn datafusion_filter_project(spec: &FilterProject, batch: &RecordBatch) -> DfResult<Vec<ArrayRef>> {
    let kept = match &spec.predicate {
        Some(p) => {
            let mask = to_datafusion(p)
                .evaluate(batch)?
                .into_array(batch.num_rows())?;
            filter_record_batch(batch, mask.as_boolean())?
        }
        None => batch.clone(),
    };
    spec.projections
        .iter()
        .map(|p| {
            to_datafusion(&p.expr)
                .evaluate(&kept)?
                .into_array(kept.num_rows())
        })
        .collect()
}

/// Whether an AND/OR in the spec has a right operand that can fail.
fn has_guarded_failure(expr: &GpuExpr) -> bool {
    fn can_fail(e: &GpuExpr) -> bool {
        match e {
            GpuExpr::Arith { op, checked, .. }
                if *checked || matches!(op, ArithOp::Div | ArithOp::Mod) =>
            {
                true
            }
            GpuExpr::Arith { left, right, .. }
            | GpuExpr::Compare { left, right, .. }
            | GpuExpr::And(left, right)
            | GpuExpr::Or(left, right) => can_fail(left) || can_fail(right),
            GpuExpr::Not(e) | GpuExpr::IsNull(e) | GpuExpr::IsNotNull(e) => can_fail(e),
            GpuExpr::Cast { input, .. } => can_fail(input),
            GpuExpr::Column { .. } | GpuExpr::Literal(_) => false,
        }
    }
    match expr {
        GpuExpr::And(l, r) | GpuExpr::Or(l, r) => {
            can_fail(r) || has_guarded_failure(l) || has_guarded_failure(r)
        }
        GpuExpr::Arith { left, right, .. } | GpuExpr::Compare { left, right, .. } => {
            has_guarded_failure(left) || has_guarded_failure(right)
        }
        GpuExpr::Not(e) | GpuExpr::IsNull(e) | GpuExpr::IsNotNull(e) => has_guarded_failure(e),
        GpuExpr::Cast { input, .. } => has_guarded_failure(input),
        GpuExpr::Column { .. } | GpuExpr::Literal(_) => false,
    }
}

fn error_class(text: &str) -> &'static str {
    if text.contains("Divide by zero") {
        "division by zero"
    } else if text.contains("verflow") {
        "overflow"
    } else {
        "other"
    }
}

fn batch_sizes(rng: &mut StdRng) -> usize {
    match rng.random_range(0..10) {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => rng.random_range(3..300),
    }
}

#[test]
fn random_filter_projections_match_datafusion() {
    let mut compared = 0;
    let mut both_failed = 0;
    let mut guarded = 0;
    for seed in 0..2000u64 {
        let mut generator = ExprGenerator::new(seed);
        let spec = generator.filter_project();
        let rows = batch_sizes(&mut generator.rng);
        let nulls = generator.rng.random_range(0..40);
        let batch = random_batch(&mut generator.rng, rows, nulls);
        let schema = batch.schema();

        // The translation gives back the tree the DataFusion expression was built from.
        for expr in spec
            .predicate
            .iter()
            .chain(spec.projections.iter().map(|p| &p.expr))
        {
            match translate_expr(&to_datafusion(expr), &schema) {
                // Compared as text: NaN literals are not equal to themselves.
                Ok(back) => assert_eq!(format!("{back:?}"), format!("{expr:?}"), "seed {seed}"),
                // DataFusion types some decimal arithmetic differently: refused, never wrong.
                Err(reason) => assert!(
                    reason.contains("on the CPU and would be"),
                    "seed {seed}: {reason}"
                ),
            }
        }

        let cpu = datafusion_filter_project(&spec, &batch);
        let reference = CpuReference.filter_project(&spec, &batch, &mut RunStats::default());
        match (cpu, reference) {
            (Ok(expected), Ok(got)) => {
                assert_eq!(expected.len(), spec.projections.len());
                for (i, (e, g)) in expected.iter().zip(got.columns()).enumerate() {
                    assert_eq!(
                        e.data_type(),
                        g.data_type(),
                        "seed {seed}, projection {i}: {}",
                        spec.projections[i].expr
                    );
                    assert_eq!(
                        e.to_data(),
                        g.to_data(),
                        "seed {seed}, projection {i}: {}\nspec: {}\nDataFusion: {e:?}\nreference: {g:?}",
                        spec.projections[i].expr,
                        spec.cache_key()
                    );
                }
                compared += 1;
            }
            (Err(e), Err(g)) => {
                let (e, g) = (e.to_string(), g.to_string());
                if error_class(&e) != error_class(&g) {
                    // Both a division by zero and an overflow in one batch: which one is met
                    // first depends on evaluation order. Both must be the query's errors.
                    assert_ne!(error_class(&e), "other", "seed {seed}: {e}");
                    assert!(
                        matches!(error_class(&g), "division by zero" | "overflow"),
                        "seed {seed}: {g}"
                    );
                }
                both_failed += 1;
            }
            (e, g) => {
                let guarded_here = spec
                    .predicate
                    .iter()
                    .chain(spec.projections.iter().map(|p| &p.expr))
                    .any(has_guarded_failure);
                assert!(
                    guarded_here,
                    "seed {seed}: DataFusion {:?}, reference {:?}\nspec: {}",
                    e.map(|_| "ok"),
                    g.map(|_| "ok"),
                    spec.cache_key()
                );
                guarded += 1;
            }
        }
    }
    assert!(compared > 1000, "only {compared} runs compared values");
    assert!(
        both_failed > 60,
        "errors were hardly exercised: {both_failed}"
    );
    assert!(guarded < 200, "{guarded} runs differed under AND/OR");
}

fn datafusion_partial_aggregate(
    spec: &PartialAggregate,
    batch: &RecordBatch,
) -> DfResult<Arc<AggregateExec>> {
    let schema = batch.schema();
    let input = MemorySourceConfig::try_new_exec(&[vec![batch.clone()]], schema.clone(), None)?;
    let group_by = PhysicalGroupBy::new_single(
        spec.group_by
            .iter()
            .map(|(i, _, name)| {
                (
                    Arc::new(Column::new(column_types()[*i].0, *i)) as Arc<dyn PhysicalExpr>,
                    name.clone(),
                )
            })
            .collect(),
    );
    let mut aggregates = Vec::new();
    for call in &spec.aggregates {
        let argument: Arc<dyn PhysicalExpr> = match call.input {
            None => Arc::new(LiteralExpr::new(ScalarValue::Int64(Some(1)))),
            Some((i, GpuType::Int32)) if call.function == AggregateFunction::Sum => {
                Arc::new(CastExpr::new(
                    Arc::new(Column::new(column_types()[i].0, i)),
                    DataType::Int64,
                    None,
                ))
            }
            Some((i, _)) => Arc::new(Column::new(column_types()[i].0, i)),
        };
        let function = match call.function {
            AggregateFunction::Count => count::count_udaf(),
            AggregateFunction::Sum => sum::sum_udaf(),
            AggregateFunction::Min => min_max::min_udaf(),
            AggregateFunction::Max => min_max::max_udaf(),
            AggregateFunction::Avg => average::avg_udaf(),
        };
        aggregates.push(Arc::new(
            AggregateExprBuilder::new(function, vec![argument])
                .schema(schema.clone())
                .alias(&call.name)
                .build()?,
        ));
    }
    let filters = vec![None; aggregates.len()];
    Ok(Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        group_by,
        aggregates,
        filters,
        input,
        schema,
    )?))
}

/// The rows of `batch` as sorted text lines: groups come out in no particular order.
fn sorted_rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable"))
        .collect();
    let mut rows: Vec<String> = (0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn random_partial_aggregates_match_datafusion() {
    let ctx = SessionContext::new();
    for seed in 0..500u64 {
        let mut generator = ExprGenerator::new(10_000 + seed);
        let spec = generator.partial_aggregate();
        let rows = batch_sizes(&mut generator.rng);
        let nulls = generator.rng.random_range(0..40);
        let batch = random_batch(&mut generator.rng, rows, nulls);

        let plan = datafusion_partial_aggregate(&spec, &batch).expect("plan builds");
        let translated = translate_partial_aggregate(&plan)
            .unwrap_or_else(|reason| panic!("seed {seed}: {reason}\n{spec:?}"));
        let expected = collect(plan.clone() as Arc<dyn ExecutionPlan>, ctx.task_ctx())
            .await
            .expect("DataFusion aggregates");
        let expected = datafusion::arrow::compute::concat_batches(&plan.schema(), &expected)
            .expect("one batch");
        let got = CpuReference
            .partial_aggregate(&translated, &batch, &mut RunStats::default())
            .expect("reference aggregates");
        assert_eq!(
            sorted_rows(&expected),
            sorted_rows(&got),
            "seed {seed}: {spec:?}"
        );
        for (e, g) in expected.schema().fields().iter().zip(got.schema().fields()) {
            assert_eq!(e.data_type(), g.data_type(), "seed {seed}");
        }
    }
}

#[test]
fn unsupported_expressions_say_why() {
    let schema = random_batch(&mut StdRng::seed_from_u64(0), 1, 0).schema();
    let like: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::new(Column::new("i64", 1)),
        Operator::BitwiseAnd,
        Arc::new(Column::new("i64", 1)),
    ));
    let reason = translate_expr(&like, &schema).unwrap_err();
    assert!(reason.contains("operator &"), "{reason}");
    // The device never sees an expression it would type differently.
    let mixed = GpuExpr::compare(
        CompareOp::Eq,
        GpuExpr::column(0, GpuType::Int32),
        GpuExpr::column(1, GpuType::Int64),
    );
    assert!(matches!(mixed.data_type(), Err(GpuError::Unsupported(_))));
}

/// A device that fails every chunk the way `error` says.
#[derive(Debug)]
struct FailingDevice {
    error: fn() -> GpuError,
}

impl PipelineBackend for FailingDevice {
    fn name(&self) -> &'static str {
        "failing"
    }

    fn filter_project(
        &self,
        _: &FilterProject,
        _: &RecordBatch,
        _: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        Err((self.error)())
    }

    fn partial_aggregate(
        &self,
        _: &PartialAggregate,
        _: &RecordBatch,
        _: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        Err((self.error)())
    }

    fn top_n(
        &self,
        _: &shoal_gpu::TopN,
        _: &RecordBatch,
        _: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        Err((self.error)())
    }
}

/// A filter + projection on `device` over random batches (one partition), as the rule would
/// build it.
fn device_plan(
    device: Arc<dyn PipelineBackend>,
    spec: &FilterProject,
    batches: &[RecordBatch],
) -> Arc<dyn ExecutionPlan> {
    use crate::device_exec::{GpuFilterProjectExec, OutputColumn, Placement};
    let input = MemorySourceConfig::try_new_exec(&[batches.to_vec()], batches[0].schema(), None)
        .expect("memory source");
    let outputs = (0..spec.projections.len())
        .map(OutputColumn::Device)
        .collect();
    let schema = spec.output_schema().expect("typed spec");
    Arc::new(GpuFilterProjectExec::new(
        input,
        spec.clone(),
        outputs,
        spec.predicate.as_ref().map(to_datafusion),
        spec.projections
            .iter()
            .map(|p| to_datafusion(&p.expr))
            .collect(),
        Placement {
            backend: device,
            forced: true,
            device: "a test device".into(),
        },
        schema,
    ))
}

#[tokio::test]
async fn chunks_the_device_cannot_take_run_on_the_cpu_and_query_errors_fail_the_query() {
    let ctx = SessionContext::new();
    let mut generator = ExprGenerator::new(3);
    generator.allow_wrapping = false;
    let batch = random_batch(&mut generator.rng, 500, 10);
    let spec = FilterProject {
        predicate: Some(GpuExpr::compare(
            CompareOp::Gt,
            GpuExpr::column(2, GpuType::Float64),
            GpuExpr::Literal(Literal::Float64(0.0)),
        )),
        projections: vec![shoal_gpu::Projection {
            expr: GpuExpr::arith(
                ArithOp::Mul,
                GpuExpr::column(0, GpuType::Int32),
                GpuExpr::Literal(Literal::Int32(2)),
                false,
            ),
            name: "doubled".into(),
        }],
        row_numbers: false,
    };
    let out_of_memory = device_plan(
        Arc::new(FailingDevice {
            error: || GpuError::OutOfDeviceMemory {
                needed: 1 << 30,
                available: 0,
            },
        }),
        &spec,
        std::slice::from_ref(&batch),
    );
    let got = collect(out_of_memory.clone(), ctx.task_ctx())
        .await
        .expect("the CPU takes over");
    let want = datafusion_filter_project(&spec, &batch).expect("DataFusion runs it");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].column(0).to_data(), want[0].to_data());
    let metrics = out_of_memory.metrics().expect("metrics");
    assert_eq!(
        metrics.sum_by_name("cpu_chunks").map(|m| m.as_usize()),
        Some(1)
    );
    assert_eq!(
        metrics.sum_by_name("device_chunks").map(|m| m.as_usize()),
        Some(0)
    );

    let divide = device_plan(
        Arc::new(FailingDevice {
            error: || GpuError::DivideByZero,
        }),
        &spec,
        std::slice::from_ref(&batch),
    );
    let error = collect(divide, ctx.task_ctx()).await.unwrap_err();
    assert!(error.to_string().contains("Divide by zero"), "{error}");
}

#[tokio::test]
async fn random_top_n_match_datafusion() {
    use datafusion::arrow::compute::SortOptions;
    use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
    use datafusion::physical_plan::sorts::sort::SortExec;
    let ctx = SessionContext::new();
    for seed in 0..300u64 {
        let mut generator = ExprGenerator::new(20_000 + seed);
        let spec = generator.top_n();
        let rows = batch_sizes(&mut generator.rng);
        let nulls = generator.rng.random_range(0..40);
        let batch = random_batch(&mut generator.rng, rows, nulls);
        let input = MemorySourceConfig::try_new_exec(&[vec![batch.clone()]], batch.schema(), None)
            .expect("memory source");
        let (index, _) = spec.key;
        let order = PhysicalSortExpr::new(
            Arc::new(Column::new(column_types()[index].0, index)),
            SortOptions {
                descending: spec.descending,
                nulls_first: spec.nulls_first,
            },
        );
        let ordering = LexOrdering::new(vec![order]).expect("one sort expression");
        let sort = SortExec::new(ordering, input).with_fetch(Some(spec.limit));
        let expected = collect(Arc::new(sort), ctx.task_ctx())
            .await
            .expect("sorts");
        let expected =
            datafusion::arrow::compute::concat_batches(&batch.schema(), &expected).expect("one");
        let got = CpuReference
            .top_n(&spec, &batch, &mut RunStats::default())
            .expect("reference");
        // Ties may pick different rows: the key column must agree, value for value.
        let keys = |b: &RecordBatch| {
            let options = FormatOptions::default().with_null("NULL");
            let f = ArrayFormatter::try_new(b.column(index).as_ref(), &options).expect("fmt");
            (0..b.num_rows())
                .map(|r| f.value(r).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&got), keys(&expected), "seed {seed}: {spec:?}");
    }
}

#[tokio::test]
async fn a_short_memory_pool_cuts_chunks_instead_of_failing() {
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(4096)))
        .build_arc()
        .expect("runtime");
    let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
    let mut generator = ExprGenerator::new(11);
    let batches: Vec<RecordBatch> = (0..6)
        .map(|_| random_batch(&mut generator.rng, 200, 10))
        .collect();
    let spec = FilterProject {
        predicate: Some(GpuExpr::IsNotNull(Box::new(GpuExpr::column(
            1,
            GpuType::Int64,
        )))),
        projections: vec![shoal_gpu::Projection {
            expr: GpuExpr::column(0, GpuType::Int32),
            name: "i32".into(),
        }],
        row_numbers: false,
    };
    let plan = device_plan(Arc::new(CpuReference), &spec, &batches);
    let got = collect(plan.clone(), ctx.task_ctx()).await.expect("runs");
    let mut want = Vec::new();
    for batch in &batches {
        want.extend(datafusion_filter_project(&spec, batch).expect("DataFusion"));
    }
    let got: Vec<ArrayRef> = got.iter().map(|b| b.column(0).clone()).collect();
    let flat = |arrays: &[ArrayRef]| {
        let refs: Vec<&dyn datafusion::arrow::array::Array> =
            arrays.iter().map(|a| a.as_ref()).collect();
        datafusion::arrow::compute::concat(&refs)
            .expect("concat")
            .to_data()
    };
    assert_eq!(flat(&got), flat(&want));
    let chunks = plan
        .metrics()
        .expect("metrics")
        .sum_by_name("device_chunks");
    assert!(
        chunks.map(|m| m.as_usize()).unwrap_or(0) > 1,
        "the pool cut the input"
    );
}

#[tokio::test]
async fn aggregate_chunks_on_the_cpu_run_datafusions_own_aggregate() {
    use crate::device_exec::{GpuPartialAggregateExec, Placement};
    let ctx = SessionContext::new();
    let mut generator = ExprGenerator::new(77);
    let batch = random_batch(&mut generator.rng, 500, 10);
    let spec = PartialAggregate {
        group_by: vec![(6, GpuType::Int32, "k32".into())],
        aggregates: vec![shoal_gpu::AggregateCall {
            function: AggregateFunction::Sum,
            input: Some((1, GpuType::Int64)),
            name: "s".into(),
        }],
    };
    let cpu = datafusion_partial_aggregate(&spec, &batch).expect("plan");
    let expected = collect(cpu.clone() as Arc<dyn ExecutionPlan>, ctx.task_ctx())
        .await
        .expect("DataFusion");
    let expected =
        datafusion::arrow::compute::concat_batches(&cpu.schema(), &expected).expect("one batch");
    // A device that fails: whether the cost model picks it or not, the CPU answers.
    let device = GpuPartialAggregateExec::new(
        cpu.input().clone(),
        translate_partial_aggregate(&cpu).expect("translates"),
        Placement {
            backend: Arc::new(FailingDevice {
                error: || GpuError::NoDevice("gone".into()),
            }),
            forced: false,
            device: "a test device".into(),
        },
        cpu.clone(),
    );
    let device: Arc<dyn ExecutionPlan> = Arc::new(device);
    let got = collect(device.clone(), ctx.task_ctx()).await.expect("runs");
    let got = datafusion::arrow::compute::concat_batches(&cpu.schema(), &got).expect("one");
    assert_eq!(sorted_rows(&got), sorted_rows(&expected));
    let metrics = device.metrics().expect("metrics");
    assert_eq!(
        metrics.sum_by_name("cpu_chunks").map(|m| m.as_usize()),
        Some(1)
    );
}
