//! The CPU reference of the device pipelines: the same specs, evaluated one row at a time with the
//! plainest code that states the semantics. It runs where no GPU is present (so `SET shoal.gpu =
//! on` and the planner rule can be tested anywhere) and it is the oracle the CUDA results and the
//! DataFusion differential tests are compared with. Speed is not its job.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Date32Array, Date32Builder, Decimal128Array,
    Decimal128Builder, Float64Array, Float64Builder, Int32Array, Int32Builder, Int64Array,
    Int64Builder, UInt32Array, UInt64Array,
};
use arrow::datatypes::DataType;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::GpuError;
use crate::expr::{ArithOp, CompareOp, GpuExpr, GpuType, Literal};
use crate::plan::{AggregateCall, AggregateFunction, FilterProject, PartialAggregate};
use crate::top_n::TopN;
use crate::{PipelineBackend, RunStats};

/// One value of a row, as the reference computes with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    F64(f64),
    Date(i32),
    Dec(i128),
}

/// The backend that runs every pipeline on the CPU, row by row.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuReference;

impl PipelineBackend for CpuReference {
    fn name(&self) -> &'static str {
        "cpu-reference"
    }

    fn filter_project(
        &self,
        spec: &FilterProject,
        batch: &RecordBatch,
        _stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let schema = spec.output_schema()?;
        let columns = batch.columns();
        let mut kept = Vec::new();
        for row in 0..batch.num_rows() {
            let keep = match &spec.predicate {
                None => true,
                Some(p) => eval(p, columns, row)? == Value::Bool(true),
            };
            if keep {
                kept.push(row);
            }
        }
        let mut outputs = Vec::with_capacity(spec.projections.len());
        for projection in &spec.projections {
            let data_type = projection.expr.data_type()?;
            let values = kept
                .iter()
                .map(|&row| eval(&projection.expr, columns, row))
                .collect::<Result<Vec<_>, _>>()?;
            outputs.push(build_array(data_type.to_arrow(), &values)?);
        }
        if spec.row_numbers {
            let rows: Vec<u32> = kept.iter().map(|&r| r as u32).collect();
            outputs.push(Arc::new(UInt32Array::from(rows)));
        }
        let options = RecordBatchOptions::new().with_row_count(Some(kept.len()));
        Ok(RecordBatch::try_new_with_options(
            schema, outputs, &options,
        )?)
    }

    fn top_n(
        &self,
        spec: &TopN,
        batch: &RecordBatch,
        _stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        crate::top_n::ordered_rows(batch, spec, 0..batch.num_rows())
    }

    fn partial_aggregate(
        &self,
        spec: &PartialAggregate,
        batch: &RecordBatch,
        _stats: &mut RunStats,
    ) -> Result<RecordBatch, GpuError> {
        let schema = spec.output_schema()?;
        let columns = batch.columns();
        let mut group_of: HashMap<Vec<Value>, usize> = HashMap::new();
        let mut keys: Vec<Vec<Value>> = Vec::new();
        let mut states: Vec<Vec<Accumulator>> = Vec::new();
        for row in 0..batch.num_rows() {
            let key: Vec<Value> = spec
                .group_by
                .iter()
                .map(|(index, data_type, _)| read(columns[*index].as_ref(), *data_type, row))
                .collect();
            let group = *group_of.entry(key.clone()).or_insert_with(|| {
                keys.push(key);
                states.push(
                    spec.aggregates
                        .iter()
                        .map(|_| Accumulator::default())
                        .collect(),
                );
                keys.len() - 1
            });
            for (call, acc) in spec.aggregates.iter().zip(&mut states[group]) {
                let value = match call.input {
                    None => Value::Bool(true),
                    Some((index, data_type)) => read(columns[index].as_ref(), data_type, row),
                };
                acc.update(call.function, value);
            }
        }
        // Without GROUP BY there is one group even over no rows (COUNT 0, SUM NULL).
        if spec.group_by.is_empty() && keys.is_empty() {
            keys.push(Vec::new());
            states.push(
                spec.aggregates
                    .iter()
                    .map(|_| Accumulator::default())
                    .collect(),
            );
        }
        let mut outputs: Vec<ArrayRef> = Vec::new();
        for (position, (_, data_type, _)) in spec.group_by.iter().enumerate() {
            let values: Vec<Value> = keys.iter().map(|k| k[position]).collect();
            outputs.push(build_array(data_type.to_arrow(), &values)?);
        }
        for (position, call) in spec.aggregates.iter().enumerate() {
            let group_states: Vec<(u64, Value)> = states
                .iter()
                .map(|s| (s[position].count, s[position].value))
                .collect();
            outputs.extend(state_columns(
                call,
                &group_states,
                !spec.group_by.is_empty(),
            )?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(keys.len()));
        Ok(RecordBatch::try_new_with_options(
            schema, outputs, &options,
        )?)
    }
}

// Group keys are integers (PartialAggregate refuses others), so `Eq` is exact for them; floats
// hash by their bits.
impl Eq for Value {}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => 0u8.hash(state),
            Value::Bool(b) => b.hash(state),
            Value::I32(v) | Value::Date(v) => v.hash(state),
            Value::I64(v) => v.hash(state),
            Value::F64(v) => v.to_bits().hash(state),
            Value::Dec(v) => v.hash(state),
        }
    }
}

/// One aggregate's running state: the rows counted, and the sum, minimum or maximum so far
/// (`Null` until the first non-null input).
#[derive(Debug, Clone, Copy)]
struct Accumulator {
    count: u64,
    value: Value,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            count: 0,
            value: Value::Null,
        }
    }
}

impl Accumulator {
    fn update(&mut self, function: AggregateFunction, input: Value) {
        if input == Value::Null {
            return;
        }
        self.count += 1;
        self.value = match (function, self.value, input) {
            (AggregateFunction::Count, current, _) => current,
            (_, Value::Null, Value::I32(v)) if function == AggregateFunction::Sum => {
                Value::I64(v as i64)
            }
            // Sums start from zero, as DataFusion's do: 0.0 + -0.0 is 0.0.
            (AggregateFunction::Sum | AggregateFunction::Avg, Value::Null, Value::F64(v)) => {
                Value::F64(0.0 + v)
            }
            (_, Value::Null, first) => first,
            // SUM wraps around like DataFusion's sum accumulator (add_wrapping).
            (AggregateFunction::Sum | AggregateFunction::Avg, Value::I64(a), Value::I32(b)) => {
                Value::I64(a.wrapping_add(b as i64))
            }
            (AggregateFunction::Sum | AggregateFunction::Avg, Value::I64(a), Value::I64(b)) => {
                Value::I64(a.wrapping_add(b))
            }
            (AggregateFunction::Sum | AggregateFunction::Avg, Value::F64(a), Value::F64(b)) => {
                Value::F64(a + b)
            }
            (AggregateFunction::Sum | AggregateFunction::Avg, Value::Dec(a), Value::Dec(b)) => {
                Value::Dec(a.wrapping_add(b))
            }
            (AggregateFunction::Min, current, new) => {
                if compare(new, current) == Ordering::Less {
                    new
                } else {
                    current
                }
            }
            (AggregateFunction::Max, current, new) => {
                if compare(new, current) == Ordering::Greater {
                    new
                } else {
                    current
                }
            }
            (_, current, _) => current,
        };
    }
}

/// One aggregate's partial state columns from each group's (rows counted, value) — the value
/// being the sum, minimum or maximum, `Null` for a group without inputs. Both backends end here.
pub(crate) fn state_columns(
    call: &AggregateCall,
    groups: &[(u64, Value)],
    grouped: bool,
) -> Result<Vec<ArrayRef>, GpuError> {
    let fields = call.state_fields()?;
    let values: Vec<Value> = groups.iter().map(|(_, v)| *v).collect();
    Ok(match call.function {
        AggregateFunction::Count => {
            let counts: Vec<Value> = groups.iter().map(|(c, _)| Value::I64(*c as i64)).collect();
            vec![build_array(DataType::Int64, &counts)?]
        }
        AggregateFunction::Avg => {
            // AVG's count as DataFusion emits it: null for a group that saw no value when
            // grouped (its groups accumulator), zero without GROUP BY (its plain accumulator).
            let counts: UInt64Array = groups
                .iter()
                .map(|(c, _)| (*c > 0 || !grouped).then_some(*c))
                .collect();
            vec![
                Arc::new(counts),
                build_array(fields[1].data_type().clone(), &values)?,
            ]
        }
        AggregateFunction::Sum | AggregateFunction::Min | AggregateFunction::Max => {
            vec![build_array(fields[0].data_type().clone(), &values)?]
        }
    })
}

/// Reads one row of a column as a `Value`.
pub(crate) fn read(array: &dyn Array, data_type: GpuType, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    let any = array.as_any();
    let downcast_failed = Value::Null;
    match data_type {
        GpuType::Boolean => any
            .downcast_ref::<BooleanArray>()
            .map_or(downcast_failed, |a| Value::Bool(a.value(row))),
        GpuType::Int32 => any
            .downcast_ref::<Int32Array>()
            .map_or(downcast_failed, |a| Value::I32(a.value(row))),
        GpuType::Int64 => any
            .downcast_ref::<Int64Array>()
            .map_or(downcast_failed, |a| Value::I64(a.value(row))),
        GpuType::Float64 => any
            .downcast_ref::<Float64Array>()
            .map_or(downcast_failed, |a| Value::F64(a.value(row))),
        GpuType::Date32 => any
            .downcast_ref::<Date32Array>()
            .map_or(downcast_failed, |a| Value::Date(a.value(row))),
        GpuType::Decimal128 { .. } => any
            .downcast_ref::<Decimal128Array>()
            .map_or(downcast_failed, |a| Value::Dec(a.value(row))),
    }
}

fn literal_value(literal: Literal) -> Value {
    match literal {
        Literal::Null(_) => Value::Null,
        Literal::Boolean(b) => Value::Bool(b),
        Literal::Int32(v) => Value::I32(v),
        Literal::Int64(v) => Value::I64(v),
        Literal::Float64(v) => Value::F64(v),
        Literal::Date32(v) => Value::Date(v),
        Literal::Decimal128 { value, .. } => Value::Dec(value),
    }
}

fn zero_as_positive(v: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// DataFusion's order: numbers by value, floats by IEEE total order except that -0.0 equals
/// 0.0, false before true.
fn compare(a: Value, b: Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(&y),
        (Value::I32(x), Value::I32(y)) | (Value::Date(x), Value::Date(y)) => x.cmp(&y),
        (Value::I64(x), Value::I64(y)) => x.cmp(&y),
        // Total order with the two zeros made one, as DataFusion compares floats.
        (Value::F64(x), Value::F64(y)) => zero_as_positive(x).total_cmp(&zero_as_positive(y)),
        (Value::Dec(x), Value::Dec(y)) => x.cmp(&y),
        _ => Ordering::Equal,
    }
}

/// Evaluates `expr` on one row.
pub(crate) fn eval(expr: &GpuExpr, columns: &[ArrayRef], row: usize) -> Result<Value, GpuError> {
    Ok(match expr {
        GpuExpr::Column { index, data_type } => {
            let column = columns.get(*index).ok_or_else(|| {
                GpuError::Unsupported(format!("column #{index} is not in the batch"))
            })?;
            read(column.as_ref(), *data_type, row)
        }
        GpuExpr::Literal(literal) => literal_value(*literal),
        GpuExpr::Compare { op, left, right } => {
            let (l, r) = (eval(left, columns, row)?, eval(right, columns, row)?);
            if l == Value::Null || r == Value::Null {
                return Ok(Value::Null);
            }
            let ordering = compare(l, r);
            Value::Bool(match op {
                CompareOp::Eq => ordering == Ordering::Equal,
                CompareOp::NotEq => ordering != Ordering::Equal,
                CompareOp::Lt => ordering == Ordering::Less,
                CompareOp::LtEq => ordering != Ordering::Greater,
                CompareOp::Gt => ordering == Ordering::Greater,
                CompareOp::GtEq => ordering != Ordering::Less,
            })
        }
        // The right operand is not evaluated where the left one decides, as in PostgreSQL: its
        // errors (a division by zero) do not count for those rows.
        GpuExpr::And(left, right) => match eval(left, columns, row)? {
            Value::Bool(false) => Value::Bool(false),
            l => match (l, eval(right, columns, row)?) {
                (_, Value::Bool(false)) => Value::Bool(false),
                (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                _ => Value::Null,
            },
        },
        GpuExpr::Or(left, right) => match eval(left, columns, row)? {
            Value::Bool(true) => Value::Bool(true),
            l => match (l, eval(right, columns, row)?) {
                (_, Value::Bool(true)) => Value::Bool(true),
                (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                _ => Value::Null,
            },
        },
        GpuExpr::Not(input) => match eval(input, columns, row)? {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        GpuExpr::IsNull(input) => Value::Bool(eval(input, columns, row)? == Value::Null),
        GpuExpr::IsNotNull(input) => Value::Bool(eval(input, columns, row)? != Value::Null),
        GpuExpr::Arith {
            op,
            left,
            right,
            checked,
        } => {
            let (l, r) = (eval(left, columns, row)?, eval(right, columns, row)?);
            if l == Value::Null || r == Value::Null {
                return Ok(Value::Null);
            }
            let scales = match (left.data_type()?, right.data_type()?) {
                (GpuType::Decimal128 { scale: s1, .. }, GpuType::Decimal128 { scale: s2, .. }) => {
                    Some((s1, s2))
                }
                _ => None,
            };
            arith(*op, l, r, *checked, scales)?
        }
        GpuExpr::Cast { input, to } => match (eval(input, columns, row)?, to) {
            (Value::I32(v), GpuType::Int64) => Value::I64(v as i64),
            (Value::I32(v), GpuType::Float64) => Value::F64(v as f64),
            (Value::I64(v), GpuType::Float64) => Value::F64(v as f64),
            (value, _) => value,
        },
    })
}

fn overflow(op: ArithOp, l: impl std::fmt::Debug, r: impl std::fmt::Debug) -> GpuError {
    GpuError::ArithmeticOverflow(format!("Overflow happened on: {l:?} {op:?} {r:?}"))
}

macro_rules! integer_arith {
    ($op:expr, $l:expr, $r:expr, $checked:expr, $wrap:path) => {{
        let (l, r) = ($l, $r);
        let checked_result = match $op {
            ArithOp::Add => l.checked_add(r),
            ArithOp::Sub => l.checked_sub(r),
            ArithOp::Mul => l.checked_mul(r),
            ArithOp::Div | ArithOp::Mod if r == 0 => return Err(GpuError::DivideByZero),
            ArithOp::Div => l.checked_div(r),
            // MIN % -1 is 0 in arrow (wrapping), not an overflow.
            ArithOp::Mod => Some(l.wrapping_rem(r)),
        };
        match (checked_result, $op) {
            (Some(v), _) => $wrap(v),
            // Division is checked whatever `checked` says, as in arrow.
            (None, ArithOp::Div | ArithOp::Mod) => return Err(overflow($op, l, r)),
            (None, _) if $checked => return Err(overflow($op, l, r)),
            (None, ArithOp::Add) => $wrap(l.wrapping_add(r)),
            (None, ArithOp::Sub) => $wrap(l.wrapping_sub(r)),
            (None, _) => $wrap(l.wrapping_mul(r)),
        }
    }};
}

fn arith(
    op: ArithOp,
    l: Value,
    r: Value,
    checked: bool,
    decimal_scales: Option<(i8, i8)>,
) -> Result<Value, GpuError> {
    Ok(match (l, r) {
        (Value::I32(a), Value::I32(b)) => integer_arith!(op, a, b, checked, Value::I32),
        (Value::I64(a), Value::I64(b)) => integer_arith!(op, a, b, checked, Value::I64),
        (Value::Date(a), Value::Date(b)) => Value::I64(a as i64 - b as i64),
        (Value::F64(a), Value::F64(b)) => Value::F64(match op {
            ArithOp::Add => a + b,
            ArithOp::Sub => a - b,
            ArithOp::Mul => a * b,
            // IEEE: x / 0.0 is an infinity or NaN, as in arrow's float kernels.
            ArithOp::Div => a / b,
            ArithOp::Mod => a % b,
        }),
        (Value::Dec(a), Value::Dec(b)) => {
            // Arrow checks decimal arithmetic for overflow even in its wrapping forms.
            let checked = true;
            let (s1, s2) = decimal_scales.unwrap_or((0, 0));
            let (a, b) = match op {
                ArithOp::Add | ArithOp::Sub => {
                    let scale = s1.max(s2);
                    (
                        rescale(a, scale - s1, checked)?,
                        rescale(b, scale - s2, checked)?,
                    )
                }
                _ => (a, b),
            };
            integer_arith!(op, a, b, checked, Value::Dec)
        }
        _ => Value::Null,
    })
}

fn rescale(value: i128, by: i8, checked: bool) -> Result<i128, GpuError> {
    let factor = 10i128.pow(by as u32);
    if checked {
        value
            .checked_mul(factor)
            .ok_or_else(|| overflow(ArithOp::Mul, value, factor))
    } else {
        Ok(value.wrapping_mul(factor))
    }
}

/// Builds an Arrow array of `data_type` from values (`Null` becomes a null slot).
pub(crate) fn build_array(data_type: DataType, values: &[Value]) -> Result<ArrayRef, GpuError> {
    macro_rules! build {
        ($builder:expr, $variant:path) => {{
            let mut builder = $builder;
            for value in values {
                match value {
                    $variant(v) => builder.append_value(*v),
                    _ => builder.append_null(),
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    Ok(match data_type {
        DataType::Boolean => build!(BooleanBuilder::with_capacity(values.len()), Value::Bool),
        DataType::Int32 => build!(Int32Builder::with_capacity(values.len()), Value::I32),
        DataType::Int64 => build!(Int64Builder::with_capacity(values.len()), Value::I64),
        DataType::Float64 => build!(Float64Builder::with_capacity(values.len()), Value::F64),
        DataType::Date32 => build!(Date32Builder::with_capacity(values.len()), Value::Date),
        DataType::Decimal128(precision, scale) => {
            let builder = Decimal128Builder::with_capacity(values.len())
                .with_precision_and_scale(precision, scale)?;
            build!(builder, Value::Dec)
        }
        other => return Err(GpuError::Unsupported(format!("building a {other} column"))),
    })
}
