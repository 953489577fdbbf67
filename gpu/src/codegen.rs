//! CUDA C source for a pipeline spec, compiled at run time by NVRTC (see `nvrtc.rs`).
//!
//! One thread handles one row. Every expression node becomes two locals, its value and whether it
//! is valid (not null); a null's value is kept zero/false so that AND, OR and the comparisons read
//! it safely. Errors are bits OR-ed into one word per launch (division by zero, overflow, a full
//! hash table); the host turns them into the CPU's errors. Nothing here depends on a GPU: the
//! generated text is what CI compiles with NVRTC alone.
//!
//! Filter + projection takes two kernels so that the kept rows come out dense and in input order:
//! `fp_count` counts the kept rows per block, the host turns the counts into offsets, and
//! `fp_write` ranks each kept row within its block (warp ballots) and writes the projections at
//! its offset. Without a predicate only `fp_write` runs and rows keep their positions.
//!
//! The partial aggregate is one kernel over an open-addressing hash table in device memory: a
//! thread claims an empty slot with a compare-and-swap, publishes its keys, and the aggregates are
//! updated with atomics (64-bit integer sums wrap like DataFusion's, decimals are summed as 128-bit
//! two's complement over two words with a carry, float minima and maxima go through the IEEE
//! total-order bits so that NaN and -0.0 order as on the CPU).

use std::fmt::Write;

use crate::error::GpuError;
use crate::expr::{ArithOp, CompareOp, GpuExpr, GpuType, Literal};
use crate::plan::{AggregateFunction, FilterProject, PartialAggregate};

/// Error bits a kernel sets in its error word.
pub const ERR_DIVIDE_BY_ZERO: u32 = 1;
pub const ERR_OVERFLOW: u32 = 2;
pub const ERR_TABLE_FULL: u32 = 4;

/// Threads per block of every kernel (a multiple of the warp size, at most 32 warps).
pub const BLOCK_THREADS: u32 = 256;

/// Device helpers every module starts with: validity bits, float order keys, checked integer
/// and decimal arithmetic, the host's NaN rules, the hash mixer.
const PRELUDE: &str = include_str!("prelude.cu");

/// The common part of every module, with the NaN this host's CPU makes (`inf - inf`).
pub(crate) fn prelude() -> String {
    let made = std::hint::black_box(f64::INFINITY) - std::hint::black_box(f64::INFINITY);
    format!(
        "#define HOST_DEFAULT_NAN {}LL\n{PRELUDE}",
        made.to_bits() as i64
    )
}

/// The C type of a value of `t` inside a kernel.
pub(crate) fn c_type(t: GpuType) -> &'static str {
    match t {
        GpuType::Boolean => "bool",
        GpuType::Int32 | GpuType::Date32 => "int",
        GpuType::Int64 => "i64",
        GpuType::Float64 => "double",
        GpuType::Decimal128 { .. } => "i128",
    }
}

/// A generated module: its source and the input columns its kernels take, in parameter order
/// (each as a data pointer and a validity pointer).
#[derive(Debug, Clone)]
pub struct KernelSource {
    pub source: String,
    pub inputs: Vec<(usize, GpuType)>,
}

/// Kernel names in every generated module.
pub const FP_COUNT: &str = "fp_count";
pub const FP_WRITE: &str = "fp_write";
pub const AGG_INIT: &str = "agg_init";
pub const AGG_UPDATE: &str = "agg_update";
pub const TOPN_HISTOGRAM: &str = "topn_histogram";
pub const TOPN_COUNT: &str = "topn_count";
pub const TOPN_WRITE: &str = "topn_write";

/// Emits one expression tree as statements; each node's result is `v<N>` / `ok<N>`.
struct Emitter<'a> {
    out: String,
    next: usize,
    inputs: &'a [(usize, GpuType)],
    /// The local that collects errors of the code being emitted: `err`, or a right operand's
    /// own word under AND/OR, kept only where the left operand does not decide.
    err_var: String,
}

impl<'a> Emitter<'a> {
    fn new(inputs: &'a [(usize, GpuType)]) -> Self {
        Emitter {
            out: String::new(),
            next: 0,
            inputs,
            err_var: "err".to_string(),
        }
    }

    fn line(&mut self, text: &str) {
        self.out.push_str("        ");
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// The parameter position of input column `index`.
    fn input_slot(&self, index: usize) -> Result<usize, GpuError> {
        self.inputs
            .iter()
            .position(|(i, _)| *i == index)
            .ok_or_else(|| GpuError::Unsupported(format!("column #{index} is not an input")))
    }

    /// Emits `expr` and returns the number N of its `v<N>`/`ok<N>` pair.
    fn emit(&mut self, expr: &GpuExpr) -> Result<usize, GpuError> {
        let data_type = expr.data_type()?;
        let ty = c_type(data_type);
        let code = match expr {
            GpuExpr::Column { index, .. } => {
                let slot = self.input_slot(*index)?;
                let n = self.fresh();
                self.line(&format!("bool ok{n} = valid_at(valid{slot}, row);"));
                let load = match data_type {
                    GpuType::Boolean => format!("bit_at(data{slot}, row)"),
                    _ => format!("((const {ty}*)data{slot})[row]"),
                };
                self.line(&format!("{ty} v{n} = ok{n} ? {load} : ({ty})0;"));
                return Ok(n);
            }
            GpuExpr::Literal(literal) => {
                let n = self.fresh();
                let (ok, value) = literal_c(*literal);
                self.line(&format!("bool ok{n} = {ok};"));
                self.line(&format!("{ty} v{n} = {value};"));
                return Ok(n);
            }
            GpuExpr::Compare { op, left, right } => {
                let operand_type = left.data_type()?;
                let (l, r) = (self.emit(left)?, self.emit(right)?);
                let (a, b) = if operand_type == GpuType::Float64 {
                    (
                        format!("f64_compare_key(v{l})"),
                        format!("f64_compare_key(v{r})"),
                    )
                } else {
                    (format!("v{l}"), format!("v{r}"))
                };
                let op = match op {
                    CompareOp::Eq => "==",
                    CompareOp::NotEq => "!=",
                    CompareOp::Lt => "<",
                    CompareOp::LtEq => "<=",
                    CompareOp::Gt => ">",
                    CompareOp::GtEq => ">=",
                };
                (
                    format!("ok{l} && ok{r}"),
                    format!("ok{l} && ok{r} && ({a} {op} {b})"),
                )
            }
            GpuExpr::And(left, right) => {
                let (l, r) = self.emit_short_circuit(left, right, "!")?;
                (
                    format!("(ok{l} && ok{r}) || (ok{l} && !v{l}) || (ok{r} && !v{r})"),
                    format!("ok{l} && ok{r} && v{l} && v{r}"),
                )
            }
            GpuExpr::Or(left, right) => {
                let (l, r) = self.emit_short_circuit(left, right, "")?;
                (
                    format!("(ok{l} && ok{r}) || (ok{l} && v{l}) || (ok{r} && v{r})"),
                    format!("(ok{l} && v{l}) || (ok{r} && v{r})"),
                )
            }
            GpuExpr::Not(input) => {
                let i = self.emit(input)?;
                (format!("ok{i}"), format!("ok{i} && !v{i}"))
            }
            GpuExpr::IsNull(input) => {
                let i = self.emit(input)?;
                ("true".to_string(), format!("!ok{i}"))
            }
            GpuExpr::IsNotNull(input) => {
                let i = self.emit(input)?;
                ("true".to_string(), format!("ok{i}"))
            }
            GpuExpr::Cast { input, .. } => {
                let i = self.emit(input)?;
                (format!("ok{i}"), format!("ok{i} ? ({ty})v{i} : ({ty})0"))
            }
            GpuExpr::Arith {
                op,
                left,
                right,
                checked,
            } => {
                let (lt, rt) = (left.data_type()?, right.data_type()?);
                let (l, r) = (self.emit(left)?, self.emit(right)?);
                let call = arith_c(
                    *op,
                    (lt, rt),
                    *checked,
                    (&format!("v{l}"), &format!("v{r}")),
                    &self.err_var,
                )?;
                (
                    format!("ok{l} && ok{r}"),
                    format!("ok{l} && ok{r} ? {call} : ({ty})0"),
                )
            }
        };
        let n = self.fresh();
        self.line(&format!("bool ok{n} = {};", code.0));
        self.line(&format!("{ty} v{n} = {};", code.1));
        Ok(n)
    }

    /// Emits both operands of AND (`decides` = "!": a false left decides) or OR (`decides` =
    /// "": a true left decides). The right operand's errors count only where the left one does
    /// not decide, as PostgreSQL evaluates per row.
    fn emit_short_circuit(
        &mut self,
        left: &GpuExpr,
        right: &GpuExpr,
        decides: &str,
    ) -> Result<(usize, usize), GpuError> {
        let l = self.emit(left)?;
        let e = self.fresh();
        self.line(&format!("u32 e{e} = 0;"));
        let outer = std::mem::replace(&mut self.err_var, format!("e{e}"));
        let r = self.emit(right)?;
        self.err_var = outer;
        let err = self.err_var.clone();
        self.line(&format!("if (!(ok{l} && {decides}v{l})) {err} |= e{e};"));
        Ok((l, r))
    }

    fn fresh(&mut self) -> usize {
        self.next += 1;
        self.next
    }
}

fn literal_c(literal: Literal) -> (&'static str, String) {
    match literal {
        Literal::Null(t) => ("false", format!("({})0", c_type(t))),
        Literal::Boolean(b) => ("true", b.to_string()),
        Literal::Int32(v) | Literal::Date32(v) => ("true", format!("(int){}", v as i64)),
        // i64::MIN has no literal in C; spell every value through its bits.
        Literal::Int64(v) => ("true", format!("(i64){}ULL", v as u64)),
        Literal::Float64(v) => (
            "true",
            format!("__longlong_as_double({}LL)", v.to_bits() as i64),
        ),
        Literal::Decimal128 { value, .. } => (
            "true",
            format!("make_i128({}LL, {}ULL)", (value >> 64) as i64, value as u64),
        ),
    }
}

fn arith_c(
    op: ArithOp,
    (lt, rt): (GpuType, GpuType),
    checked: bool,
    (a, b): (&str, &str),
    err: &str,
) -> Result<String, GpuError> {
    let checked = if checked { "true" } else { "false" };
    Ok(match (lt, op) {
        (GpuType::Date32, ArithOp::Sub) => format!("((i64){a} - (i64){b})"),
        (GpuType::Int32, ArithOp::Add) => format!("add_i32({a}, {b}, {checked}, &{err})"),
        (GpuType::Int32, ArithOp::Sub) => format!("sub_i32({a}, {b}, {checked}, &{err})"),
        (GpuType::Int32, ArithOp::Mul) => format!("mul_i32({a}, {b}, {checked}, &{err})"),
        (GpuType::Int32, ArithOp::Div) => format!("div_i32({a}, {b}, false, &{err})"),
        (GpuType::Int32, ArithOp::Mod) => format!("div_i32({a}, {b}, true, &{err})"),
        (GpuType::Int64, ArithOp::Add) => format!("add_i64({a}, {b}, {checked}, &{err})"),
        (GpuType::Int64, ArithOp::Sub) => format!("sub_i64({a}, {b}, {checked}, &{err})"),
        (GpuType::Int64, ArithOp::Mul) => format!("mul_i64({a}, {b}, {checked}, &{err})"),
        (GpuType::Int64, ArithOp::Div) => format!("div_i64({a}, {b}, false, &{err})"),
        (GpuType::Int64, ArithOp::Mod) => format!("div_i64({a}, {b}, true, &{err})"),
        (GpuType::Float64, ArithOp::Add) => format!("add_f64({a}, {b})"),
        (GpuType::Float64, ArithOp::Sub) => format!("sub_f64({a}, {b})"),
        (GpuType::Float64, ArithOp::Mul) => format!("mul_f64({a}, {b})"),
        (GpuType::Float64, ArithOp::Div) => format!("div_f64({a}, {b}, false)"),
        (GpuType::Float64, ArithOp::Mod) => format!("div_f64({a}, {b}, true)"),
        (GpuType::Decimal128 { scale: s1, .. }, _) => {
            let GpuType::Decimal128 { scale: s2, .. } = rt else {
                return Err(GpuError::Unsupported(format!(
                    "{op:?} of {lt:?} and {rt:?}"
                )));
            };
            // Arrow checks decimal arithmetic for overflow even in its wrapping forms.
            let checked = "true";
            let scale = s1.max(s2);
            let (ra, rb) = (scale - s1, scale - s2);
            match op {
                ArithOp::Add => format!(
                    "add_i128(rescale_i128({a}, {ra}, {checked}, &{err}), rescale_i128({b}, {rb}, {checked}, &{err}), {checked}, &{err})"
                ),
                ArithOp::Sub => format!(
                    "sub_i128(rescale_i128({a}, {ra}, {checked}, &{err}), rescale_i128({b}, {rb}, {checked}, &{err}), {checked}, &{err})"
                ),
                ArithOp::Mul => format!("mul_i128({a}, {b}, {checked}, &{err})"),
                ArithOp::Div | ArithOp::Mod => {
                    return Err(GpuError::Unsupported(
                        "decimal division and remainder".to_string(),
                    ))
                }
            }
        }
        _ => {
            return Err(GpuError::Unsupported(format!(
                "{op:?} of {lt:?} and {rt:?}"
            )))
        }
    })
}

fn input_params(inputs: &[(usize, GpuType)]) -> String {
    (0..inputs.len())
        .map(|slot| format!(", const u8* data{slot}, const u8* valid{slot}"))
        .collect()
}

fn inputs_of(columns: &[usize], types: impl Fn(usize) -> Option<GpuType>) -> Vec<(usize, GpuType)> {
    columns
        .iter()
        .filter_map(|&c| types(c).map(|t| (c, t)))
        .collect()
}

/// The two kernels of a fused filter + projection.
pub fn filter_project_source(spec: &FilterProject) -> Result<KernelSource, GpuError> {
    spec.output_schema()?;
    let mut types = std::collections::HashMap::new();
    for expr in spec
        .predicate
        .iter()
        .chain(spec.projections.iter().map(|p| &p.expr))
    {
        collect_column_types(expr, &mut types);
    }
    let inputs = inputs_of(&spec.input_columns(), |c| types.get(&c).copied());
    let params = input_params(&inputs);
    let mut source = prelude();

    let predicate = match &spec.predicate {
        Some(p) => {
            let mut e = Emitter::new(&inputs);
            let n = e.emit(p)?;
            Some((e.out, n))
        }
        None => None,
    };

    if let Some((body, n)) = &predicate {
        let _ = write!(
            source,
            r#"
extern "C" __global__ void {FP_COUNT}(i64 num_rows{params}, u32* block_counts, u32* error_word) {{
    i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    u32 err = 0;
    bool keep = false;
    if (row < num_rows) {{
{body}        keep = ok{n} && v{n};
    }}
    int kept = __syncthreads_count(keep);
    if (threadIdx.x == 0) block_counts[blockIdx.x] = (u32)kept;
    if (err) atomicOr(error_word, err);
}}
"#
        );
    }

    let mut out_params = String::new();
    let mut projection_body = String::new();
    for (j, projection) in spec.projections.iter().enumerate() {
        let data_type = projection.expr.data_type()?;
        let out_type = match data_type {
            GpuType::Boolean => "u8",
            other => c_type(other),
        };
        let _ = write!(out_params, ", {out_type}* out{j}, u8* out_valid{j}");
        let mut e = Emitter::new(&inputs);
        let n = e.emit(&projection.expr)?;
        // Each projection in its own block: their locals reuse the same names.
        projection_body.push_str("        {\n");
        projection_body.push_str(&e.out);
        let _ = writeln!(
            projection_body,
            "        out{j}[pos] = ({out_type})v{n};\n        out_valid{j}[pos] = ok{n} ? 1 : 0;\n        }}"
        );
    }

    if spec.row_numbers {
        out_params.push_str(", u32* out_rows");
        projection_body.push_str("        out_rows[pos] = (u32)row;\n");
    }
    let (keep, position) = match &predicate {
        Some((body, n)) => (
            format!("{body}        keep = ok{n} && v{n};\n"),
            "block_offsets[blockIdx.x] + rank",
        ),
        None => ("        keep = true;\n".to_string(), "(u32)row"),
    };
    let _ = write!(
        source,
        r#"
extern "C" __global__ void {FP_WRITE}(i64 num_rows{params}, const u32* block_offsets{out_params}, u32* error_word) {{
    __shared__ u32 warp_offsets[32];
    i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    u32 err = 0;
    bool keep = false;
    if (row < num_rows) {{
{keep}    }}
    u32 rank = rank_in_block(keep, warp_offsets);
    if (keep) {{
        u32 pos = {position};
{projection_body}    }}
    if (err) atomicOr(error_word, err);
}}
"#
    );
    Ok(KernelSource { source, inputs })
}

fn collect_column_types(expr: &GpuExpr, types: &mut std::collections::HashMap<usize, GpuType>) {
    match expr {
        GpuExpr::Column { index, data_type } => {
            types.insert(*index, *data_type);
        }
        GpuExpr::Literal(_) => {}
        GpuExpr::Compare { left, right, .. }
        | GpuExpr::Arith { left, right, .. }
        | GpuExpr::And(left, right)
        | GpuExpr::Or(left, right) => {
            collect_column_types(left, types);
            collect_column_types(right, types);
        }
        GpuExpr::Not(e)
        | GpuExpr::IsNull(e)
        | GpuExpr::IsNotNull(e)
        | GpuExpr::Cast { input: e, .. } => collect_column_types(e, types),
    }
}

/// How one aggregate keeps its state in the hash table: the arrays it adds to the kernel's
/// parameters, in order.
pub fn accumulator_arrays(
    function: AggregateFunction,
    input: Option<GpuType>,
) -> Vec<AccumulatorArray> {
    use AccumulatorArray::*;
    match (function, input) {
        (AggregateFunction::Count, _) => vec![Count],
        (AggregateFunction::Sum | AggregateFunction::Avg, Some(GpuType::Float64)) => {
            vec![Count, SumF64]
        }
        (AggregateFunction::Sum | AggregateFunction::Avg, Some(GpuType::Decimal128 { .. })) => {
            vec![Count, SumLow, SumHigh]
        }
        (AggregateFunction::Sum | AggregateFunction::Avg, _) => vec![Count, SumI64],
        (AggregateFunction::Min, _) => vec![Count, Min],
        (AggregateFunction::Max, _) => vec![Count, Max],
    }
}

/// One per-slot array of the aggregation hash table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccumulatorArray {
    /// u64: rows counted (COUNT), or non-null inputs seen (to tell an empty SUM/MIN/MAX).
    Count,
    /// u64 wrapping sum of i64 values.
    SumI64,
    /// double.
    SumF64,
    /// u64 low and high words of a 128-bit sum.
    SumLow,
    SumHigh,
    /// i64, starting at i64::MAX / i64::MIN; floats as their total-order bits.
    Min,
    Max,
}

/// The init and update kernels of a partial aggregate.
pub fn aggregate_source(spec: &PartialAggregate) -> Result<KernelSource, GpuError> {
    spec.output_schema()?;
    let mut columns: Vec<(usize, GpuType)> = spec
        .group_by
        .iter()
        .map(|(i, t, _)| (*i, *t))
        .chain(spec.aggregates.iter().filter_map(|c| c.input))
        .collect();
    columns.sort_by_key(|(i, _)| *i);
    columns.dedup_by_key(|(i, _)| *i);
    let inputs = columns;
    let params = input_params(&inputs);
    let slot_of = |index: usize| inputs.iter().position(|(i, _)| *i == index).unwrap_or(0);
    let key_count = spec.group_by.len();

    let mut acc_params = String::new();
    let mut init_body = String::new();
    let mut update_body = String::new();
    // Without GROUP BY every row updates one slot: each block sums into shared memory first and
    // one thread merges the block's states, instead of every row contending for one address.
    let global = key_count == 0;
    let mut block_declare = String::new();
    let mut block_init = String::new();
    let mut block_merge = String::new();
    let target = |a: usize| {
        if global {
            format!("block_acc{a}")
        } else {
            format!("acc{a}[slot]")
        }
    };
    let mut array = 0;
    for call in &spec.aggregates {
        let input_type = call.input.map(|(_, t)| t);
        let (valid, value) = match call.input {
            None => ("true".to_string(), "0".to_string()),
            Some((index, t)) => {
                let slot = slot_of(index);
                let load = match t {
                    GpuType::Boolean => format!("(i64)bit_at(data{slot}, row)"),
                    GpuType::Float64 => format!("((const double*)data{slot})[row]"),
                    GpuType::Decimal128 { .. } => format!("((const i128*)data{slot})[row]"),
                    _ => format!("(i64)((const {}*)data{slot})[row]", c_type(t)),
                };
                (format!("valid_at(valid{slot}, row)"), load)
            }
        };
        let _ = writeln!(update_body, "    if ({valid}) {{");
        for kind in accumulator_arrays(call.function, input_type) {
            let a = array;
            array += 1;
            let (t, t_next) = (target(a), target(a + 1));
            let (c_ty, init, update) = match kind {
                AccumulatorArray::Count => {
                    ("u64", "0ULL".to_string(), format!("atomicAdd(&{t}, 1ULL);"))
                }
                AccumulatorArray::SumI64 => (
                    "u64",
                    "0ULL".to_string(),
                    format!("atomicAdd(&{t}, (u64)(i64)({value}));"),
                ),
                AccumulatorArray::SumF64 => (
                    "double",
                    "0.0".to_string(),
                    format!("atomicAdd(&{t}, {value});"),
                ),
                AccumulatorArray::SumLow => (
                    "u64",
                    "0ULL".to_string(),
                    format!(
                        "i128 d = {value}; u64 add_lo = (u64)d; u64 old_lo = atomicAdd(&{t}, add_lo); u64 carry = (old_lo + add_lo < old_lo) ? 1ULL : 0ULL; atomicAdd(&{t_next}, (u64)(d >> 64) + carry);"
                    ),
                ),
                AccumulatorArray::SumHigh => ("u64", "0ULL".to_string(), String::new()),
                AccumulatorArray::Min | AccumulatorArray::Max => {
                    let ordered = if input_type == Some(GpuType::Float64) {
                        format!("f64_order({value})")
                    } else {
                        value.clone()
                    };
                    let (start, f) = if kind == AccumulatorArray::Min {
                        ("9223372036854775807LL", "atomicMin")
                    } else {
                        ("(-9223372036854775807LL - 1)", "atomicMax")
                    };
                    ("i64", start.to_string(), format!("{f}(&{t}, (i64)({ordered}));"))
                }
            };
            let _ = write!(acc_params, ", {c_ty}* acc{a}");
            let _ = writeln!(init_body, "    acc{a}[slot] = {init};");
            let _ = writeln!(block_declare, "    __shared__ {c_ty} block_acc{a};");
            let _ = writeln!(block_init, "        block_acc{a} = {init};");
            let merge = match kind {
                AccumulatorArray::Count | AccumulatorArray::SumI64 | AccumulatorArray::SumF64 => {
                    format!("atomicAdd(&acc{a}[0], block_acc{a});")
                }
                AccumulatorArray::SumLow => format!(
                    "u64 old_lo = atomicAdd(&acc{a}[0], block_acc{a}); u64 carry = (old_lo + block_acc{a} < old_lo) ? 1ULL : 0ULL; atomicAdd(&acc{n}[0], block_acc{n} + carry);",
                    n = a + 1
                ),
                AccumulatorArray::SumHigh => String::new(),
                AccumulatorArray::Min => format!("atomicMin(&acc{a}[0], block_acc{a});"),
                AccumulatorArray::Max => format!("atomicMax(&acc{a}[0], block_acc{a});"),
            };
            if !merge.is_empty() {
                let _ = writeln!(block_merge, "        {{ {merge} }}");
            }
            if !update.is_empty() {
                let _ = writeln!(update_body, "        {{ {update} }}");
            }
        }
        let _ = writeln!(update_body, "    }}");
    }

    let mut key_loads = String::new();
    let mut key_compare = String::from("true");
    let mut key_store = String::new();
    for (k, (index, t, _)) in spec.group_by.iter().enumerate() {
        let slot = slot_of(*index);
        let load = match t {
            GpuType::Boolean => format!("(i64)bit_at(data{slot}, row)"),
            _ => format!("(i64)((const {}*)data{slot})[row]", c_type(*t)),
        };
        let _ = writeln!(
            key_loads,
            "    bool key_ok{k} = valid_at(valid{slot}, row);\n    i64 key{k} = key_ok{k} ? {load} : 0;\n    if (!key_ok{k}) nulls |= {}u;\n    hash = mix64(hash ^ (u64)key{k});",
            1u32 << k
        );
        let _ = write!(
            key_compare,
            " && ((volatile i64*)slot_keys)[slot * {key_count} + {k}] == key{k}"
        );
        let _ = writeln!(
            key_store,
            "            slot_keys[slot * {key_count} + {k}] = key{k};"
        );
    }
    let keys_param = if key_count > 0 {
        ", i64* slot_keys"
    } else {
        ""
    };

    let update_kernel = if global {
        format!(
            r#"extern "C" __global__ void {AGG_UPDATE}(i64 num_rows{params}, u64 mask, u64 max_probes, u32* slot_state, u32* slot_nulls{acc_params}, u32* error_word) {{
{block_declare}    if (threadIdx.x == 0) {{
{block_init}    }}
    __syncthreads();
    i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (row < num_rows) {{
{update_body}    }}
    __syncthreads();
    if (threadIdx.x == 0) {{
{block_merge}        // The one group exists once any block ran.
        if (blockIdx.x == 0) slot_state[0] = 2u;
    }}
}}
"#
        )
    } else {
        String::new()
    };
    let keyed_update = format!(
        r#"extern "C" __global__ void {AGG_UPDATE}(i64 num_rows{params}, u64 mask, u64 max_probes, u32* slot_state, u32* slot_nulls{keys_param}{acc_params}, u32* error_word) {{
    i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= num_rows) return;
    u32 nulls = 0;
    u64 hash = 0x9e3779b97f4a7c15ULL;
{key_loads}    hash = mix64(hash ^ nulls);
    u64 slot = hash & mask;
    bool found = false;
    // A long chain means a crowded table: give up (TABLE_FULL) and let the host grow it.
    for (u64 probe = 0; probe <= mask && probe < max_probes; probe++) {{
        u32 state = atomicCAS(&slot_state[slot], 0u, 1u);
        if (state == 0u) {{
{key_store}            slot_nulls[slot] = nulls;
            __threadfence();
            atomicExch(&slot_state[slot], 2u);
            found = true;
            break;
        }}
        // Another thread is publishing this slot's keys: wait until they are visible.
        while (atomicAdd(&slot_state[slot], 0u) == 1u) {{ }}
        __threadfence();
        if (((volatile u32*)slot_nulls)[slot] == nulls{key_compare_tail}) {{
            found = true;
            break;
        }}
        slot = (slot + 1) & mask;
    }}
    if (!found) {{
        atomicOr(error_word, ERR_TABLE_FULL);
        return;
    }}
{update_body}}}
"#,
        key_compare_tail = key_compare.trim_start_matches("true"),
    );
    let source = format!(
        r#"{prelude}
extern "C" __global__ void {AGG_INIT}(u64 capacity{acc_params}) {{
    u64 slot = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (slot >= capacity) return;
{init_body}}}

{update}"#,
        prelude = prelude(),
        update = if global { update_kernel } else { keyed_update },
    );
    Ok(KernelSource { source, inputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AggregateCall, Projection};

    #[test]
    fn filter_project_source_names_its_kernels_and_inputs() {
        let spec = FilterProject {
            predicate: Some(GpuExpr::compare(
                CompareOp::Gt,
                GpuExpr::column(2, GpuType::Float64),
                GpuExpr::Literal(Literal::Float64(1.5)),
            )),
            projections: vec![Projection {
                expr: GpuExpr::arith(
                    ArithOp::Add,
                    GpuExpr::column(0, GpuType::Int64),
                    GpuExpr::Literal(Literal::Int64(i64::MIN)),
                    true,
                ),
                name: "x".into(),
            }],
            row_numbers: true,
        };
        let generated = filter_project_source(&spec).unwrap();
        assert_eq!(
            generated.inputs,
            vec![(0, GpuType::Int64), (2, GpuType::Float64)]
        );
        assert!(generated.source.contains("void fp_count("));
        assert!(generated.source.contains("void fp_write("));
        assert!(generated.source.contains("(i64)9223372036854775808ULL"));
        assert!(generated.source.contains("out_rows[pos] = (u32)row;"));
    }

    #[test]
    fn aggregate_source_has_one_array_per_state() {
        let spec = PartialAggregate {
            group_by: vec![(1, GpuType::Int32, "k".into())],
            aggregates: vec![AggregateCall {
                function: AggregateFunction::Avg,
                input: Some((0, GpuType::Float64)),
                name: "avg(x)".into(),
            }],
        };
        let generated = aggregate_source(&spec).unwrap();
        assert!(generated.source.contains("u64* acc0, double* acc1"));
    }
}
