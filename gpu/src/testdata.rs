//! Random batches and random pipeline specs for the differential tests and the GPU check and
//! bench binaries: nulls, NaN, infinities, -0.0, integer extremes that overflow, empty and
//! single-row batches. Seeded, so a failure names the seed that reproduces it.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::expr::{ArithOp, CompareOp, GpuExpr, GpuType, Literal};
use crate::plan::{AggregateCall, AggregateFunction, FilterProject, PartialAggregate, Projection};
use crate::top_n::TopN;

/// The columns of every random batch: one of each type, plus two low-cardinality group keys.
pub fn column_types() -> Vec<(&'static str, GpuType)> {
    vec![
        ("i32", GpuType::Int32),
        ("i64", GpuType::Int64),
        ("f64", GpuType::Float64),
        ("d", GpuType::Date32),
        ("dec", DECIMAL),
        ("b", GpuType::Boolean),
        ("k32", GpuType::Int32),
        ("k64", GpuType::Int64),
    ]
}

pub const DECIMAL: GpuType = GpuType::Decimal128 {
    precision: 15,
    scale: 2,
};

/// A batch of `rows` random rows; `null_percent` of each column's values are null.
pub fn random_batch(rng: &mut StdRng, rows: usize, null_percent: u32) -> RecordBatch {
    let null = |rng: &mut StdRng| rng.random_range(0..100) < null_percent;
    let i32s: Int32Array = (0..rows)
        .map(|_| (!null(rng)).then(|| pick_i32(rng)))
        .collect();
    let i64s: Int64Array = (0..rows)
        .map(|_| (!null(rng)).then(|| pick_i64(rng)))
        .collect();
    let f64s: Float64Array = (0..rows)
        .map(|_| (!null(rng)).then(|| pick_f64(rng)))
        .collect();
    let dates: Date32Array = (0..rows)
        .map(|_| (!null(rng)).then(|| rng.random_range(-20_000..40_000)))
        .collect();
    let decimals = (0..rows)
        .map(|_| (!null(rng)).then(|| rng.random_range(-10i128.pow(13)..10i128.pow(13))))
        .collect::<Decimal128Array>()
        .with_precision_and_scale(15, 2)
        .expect("valid decimal type");
    let bools: BooleanArray = (0..rows)
        .map(|_| (!null(rng)).then(|| rng.random_bool(0.5)))
        .collect();
    let k32: Int32Array = (0..rows)
        .map(|_| (!null(rng)).then(|| rng.random_range(-3..7)))
        .collect();
    let k64: Int64Array = (0..rows)
        .map(|_| (!null(rng)).then(|| rng.random_range(0..50)))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(i32s),
        Arc::new(i64s),
        Arc::new(f64s),
        Arc::new(dates),
        Arc::new(decimals),
        Arc::new(bools),
        Arc::new(k32),
        Arc::new(k64),
    ];
    let fields: Vec<Field> = column_types()
        .into_iter()
        .map(|(name, t)| Field::new(name, t.to_arrow(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match schema")
}

fn pick_i32(rng: &mut StdRng) -> i32 {
    match rng.random_range(0..20) {
        0 => i32::MAX,
        1 => i32::MIN,
        2 => 0,
        3 => -1,
        4..=9 => rng.random_range(-100..100),
        _ => rng.random_range(-100_000..100_000),
    }
}

fn pick_i64(rng: &mut StdRng) -> i64 {
    match rng.random_range(0..20) {
        0 => i64::MAX,
        1 => i64::MIN,
        2 => 0,
        3 => -1,
        4..=9 => rng.random_range(-100..100),
        _ => rng.random_range(-10_000_000_000..10_000_000_000),
    }
}

fn pick_f64(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..24) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -0.0,
        4 => 0.0,
        5 => f64::MAX,
        6 => f64::MIN_POSITIVE,
        7..=12 => rng.random_range(-100..100) as f64,
        _ => rng.random_range(-1e6..1e6),
    }
}

/// Generates random expressions over the columns of `random_batch`.
pub struct ExprGenerator {
    pub rng: StdRng,
    /// Whether integer arithmetic may be generated unchecked (wrapping).
    pub allow_wrapping: bool,
}

impl ExprGenerator {
    pub fn new(seed: u64) -> Self {
        ExprGenerator {
            rng: StdRng::seed_from_u64(seed),
            allow_wrapping: true,
        }
    }

    fn column_of(&mut self, wanted: GpuType) -> Option<GpuExpr> {
        let matching: Vec<usize> = column_types()
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| *t == wanted)
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() {
            return None;
        }
        let index = matching[self.rng.random_range(0..matching.len())];
        Some(GpuExpr::column(index, wanted))
    }

    fn literal_of(&mut self, t: GpuType) -> GpuExpr {
        let rng = &mut self.rng;
        if rng.random_range(0..12) == 0 {
            return GpuExpr::Literal(Literal::Null(t));
        }
        GpuExpr::Literal(match t {
            GpuType::Boolean => Literal::Boolean(rng.random_bool(0.5)),
            GpuType::Int32 => Literal::Int32(pick_i32(rng)),
            GpuType::Int64 => Literal::Int64(pick_i64(rng)),
            GpuType::Float64 => Literal::Float64(pick_f64(rng)),
            GpuType::Date32 => Literal::Date32(rng.random_range(-20_000..40_000)),
            GpuType::Decimal128 { precision, scale } => Literal::Decimal128 {
                value: rng.random_range(-10i128.pow(9)..10i128.pow(9)),
                precision,
                scale,
            },
        })
    }

    /// An expression of type `t`, at most `depth` levels deep.
    pub fn expr_of(&mut self, t: GpuType, depth: u32) -> GpuExpr {
        let leaf = depth == 0 || self.rng.random_range(0..4) == 0;
        if leaf {
            if self.rng.random_range(0..4) == 0 {
                return self.literal_of(t);
            }
            return self.column_of(t).unwrap_or_else(|| self.literal_of(t));
        }
        match t {
            GpuType::Boolean => match self.rng.random_range(0..6) {
                0 => GpuExpr::And(
                    Box::new(self.expr_of(t, depth - 1)),
                    Box::new(self.expr_of(t, depth - 1)),
                ),
                1 => GpuExpr::Or(
                    Box::new(self.expr_of(t, depth - 1)),
                    Box::new(self.expr_of(t, depth - 1)),
                ),
                2 => GpuExpr::Not(Box::new(self.expr_of(t, depth - 1))),
                3 => {
                    let operand = self.any_type();
                    let inner = Box::new(self.expr_of(operand, depth - 1));
                    if self.rng.random_bool(0.5) {
                        GpuExpr::IsNull(inner)
                    } else {
                        GpuExpr::IsNotNull(inner)
                    }
                }
                _ => {
                    let operand = self.any_type();
                    let left = self.expr_of(operand, depth - 1);
                    let right = self.expr_of(operand, depth - 1);
                    let op = CompareOp::ALL[self.rng.random_range(0..CompareOp::ALL.len())];
                    GpuExpr::compare(op, left, right)
                }
            },
            GpuType::Int32 | GpuType::Int64 | GpuType::Float64 => {
                if t != GpuType::Int32 && self.rng.random_range(0..5) == 0 {
                    let from = if t == GpuType::Int64 || self.rng.random_bool(0.5) {
                        GpuType::Int32
                    } else {
                        GpuType::Int64
                    };
                    return GpuExpr::Cast {
                        input: Box::new(self.expr_of(from, depth - 1)),
                        to: t,
                    };
                }
                if t == GpuType::Int64 && self.rng.random_range(0..8) == 0 {
                    let days = GpuType::Date32;
                    return GpuExpr::arith(
                        ArithOp::Sub,
                        self.expr_of(days, depth - 1),
                        self.expr_of(days, depth - 1),
                        true,
                    );
                }
                let op = [
                    ArithOp::Add,
                    ArithOp::Sub,
                    ArithOp::Mul,
                    ArithOp::Div,
                    ArithOp::Mod,
                ][self.rng.random_range(0..5)];
                let checked = !self.allow_wrapping || self.rng.random_bool(0.5);
                let mut left = self.expr_of(t, depth - 1);
                let right = self.expr_of(t, depth - 1);
                // Plans fold constant arithmetic before it runs; keep a column in it.
                if matches!((&left, &right), (GpuExpr::Literal(_), GpuExpr::Literal(_))) {
                    left = self.column_of(t).unwrap_or(left);
                }
                GpuExpr::arith(op, left, right, checked)
            }
            // Decimal arithmetic widens the type: see `decimal_expr`.
            _ => self.column_of(t).unwrap_or_else(|| self.literal_of(t)),
        }
    }

    fn any_type(&mut self) -> GpuType {
        [
            GpuType::Int32,
            GpuType::Int64,
            GpuType::Float64,
            GpuType::Date32,
            DECIMAL,
            GpuType::Boolean,
        ][self.rng.random_range(0..6)]
    }

    /// A decimal expression: sums, differences and products of decimal columns and literals.
    pub fn decimal_expr(&mut self) -> GpuExpr {
        let a = self.expr_of(DECIMAL, 0);
        let b = self.expr_of(DECIMAL, 0);
        let op = [ArithOp::Add, ArithOp::Sub, ArithOp::Mul][self.rng.random_range(0..3)];
        GpuExpr::arith(op, a, b, true)
    }

    /// A filter + projection with a random predicate (or none) and one to four projections.
    pub fn filter_project(&mut self) -> FilterProject {
        let predicate = self
            .rng
            .random_bool(0.8)
            .then(|| self.expr_of(GpuType::Boolean, 3));
        let count = self.rng.random_range(1..=4);
        let projections = (0..count)
            .map(|i| {
                let expr = if self.rng.random_range(0..6) == 0 {
                    self.decimal_expr()
                } else {
                    let t = self.any_type();
                    self.expr_of(t, 3)
                };
                Projection {
                    expr,
                    name: format!("p{i}"),
                }
            })
            .collect();
        FilterProject {
            predicate,
            projections,
            row_numbers: self.rng.random_bool(0.5),
        }
    }

    /// A partial aggregate grouped by zero to two key columns.
    pub fn partial_aggregate(&mut self) -> PartialAggregate {
        let keys = [
            (6, GpuType::Int32, "k32"),
            (7, GpuType::Int64, "k64"),
            (5, GpuType::Boolean, "b"),
            (3, GpuType::Date32, "d"),
        ];
        let key_count = self.rng.random_range(0..=2);
        let mut group_by = Vec::new();
        for _ in 0..key_count {
            let (i, t, name) = keys[self.rng.random_range(0..keys.len())];
            if !group_by.iter().any(|(j, _, _)| *j == i) {
                group_by.push((i, t, name.to_string()));
            }
        }
        let candidates = [
            (AggregateFunction::Count, None),
            (AggregateFunction::Count, Some((2, GpuType::Float64))),
            (AggregateFunction::Sum, Some((0, GpuType::Int32))),
            (AggregateFunction::Sum, Some((1, GpuType::Int64))),
            (AggregateFunction::Sum, Some((2, GpuType::Float64))),
            (AggregateFunction::Sum, Some((4, DECIMAL))),
            (AggregateFunction::Min, Some((0, GpuType::Int32))),
            (AggregateFunction::Max, Some((1, GpuType::Int64))),
            (AggregateFunction::Min, Some((3, GpuType::Date32))),
            (AggregateFunction::Max, Some((3, GpuType::Date32))),
            (AggregateFunction::Avg, Some((2, GpuType::Float64))),
            (AggregateFunction::Avg, Some((4, DECIMAL))),
        ];
        let count = self.rng.random_range(1..=4);
        let aggregates = (0..count)
            .map(|i| {
                let (function, input) = candidates[self.rng.random_range(0..candidates.len())];
                AggregateCall {
                    function,
                    input,
                    name: format!("a{i}"),
                }
            })
            .collect();
        PartialAggregate {
            group_by,
            aggregates,
        }
    }

    /// ORDER BY one of the fixed-width columns, either direction, nulls either side.
    pub fn top_n(&mut self) -> TopN {
        let keys = [
            (0, GpuType::Int32),
            (1, GpuType::Int64),
            (2, GpuType::Float64),
            (3, GpuType::Date32),
            (6, GpuType::Int32),
        ];
        TopN {
            key: keys[self.rng.random_range(0..keys.len())],
            descending: self.rng.random_bool(0.5),
            nulls_first: self.rng.random_bool(0.5),
            limit: match self.rng.random_range(0..4) {
                0 => 1,
                1 => self.rng.random_range(2..20),
                2 => self.rng.random_range(20..2_000),
                _ => 100_000,
            },
        }
    }
}
