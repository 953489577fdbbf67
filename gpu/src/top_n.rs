//! Top-N: the first `limit` rows of a batch in the order of one fixed-width column (ASC or DESC,
//! NULLS FIRST or LAST), ties in input order. Both backends share the host side here: each
//! value's 64-bit order key (its unsigned order is the SQL order; floats in IEEE total order, as
//! arrow sorts them) and the final ordering of the candidate rows. The CUDA backend narrows the
//! candidates on the device first (a radix select of the limit-th key, then the rows at or
//! below it); the CPU reference takes every row as a candidate.

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type};

use crate::codegen::{c_type, prelude, KernelSource, TOPN_COUNT, TOPN_HISTOGRAM, TOPN_WRITE};
use crate::error::GpuError;
use crate::expr::GpuType;

/// ORDER BY one column LIMIT `limit`, over the columns of the input batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TopN {
    pub key: (usize, GpuType),
    pub descending: bool,
    pub nulls_first: bool,
    pub limit: usize,
}

impl TopN {
    pub fn check(&self) -> Result<(), GpuError> {
        match self.key.1 {
            GpuType::Int32 | GpuType::Int64 | GpuType::Date32 | GpuType::Float64 => Ok(()),
            other => Err(GpuError::Unsupported(format!(
                "ORDER BY a {other:?} column"
            ))),
        }
    }

    pub fn cache_key(&self) -> String {
        format!("{self:?}")
    }
}

const SIGN: u64 = 1 << 63;

/// The order key of a non-null value given as its i64 (integers, dates) or f64 bits.
pub fn order_key(data_type: GpuType, raw: i64, descending: bool) -> u64 {
    let ascending = match data_type {
        GpuType::Float64 => {
            // f64::total_cmp's integer, then the sign flipped to order as unsigned.
            let ordered = raw ^ ((((raw >> 63) as u64) >> 1) as i64);
            (ordered as u64) ^ SIGN
        }
        _ => (raw as u64) ^ SIGN,
    };
    if descending {
        !ascending
    } else {
        ascending
    }
}

/// The order key of row `row`, None when it is null.
pub fn row_key(array: &dyn Array, spec: &TopN, row: usize) -> Option<u64> {
    if array.is_null(row) {
        return None;
    }
    let raw = match spec.key.1 {
        GpuType::Int32 => array.as_primitive::<Int32Type>().value(row) as i64,
        GpuType::Date32 => array.as_primitive::<Date32Type>().value(row) as i64,
        GpuType::Int64 => array.as_primitive::<Int64Type>().value(row),
        GpuType::Float64 => array.as_primitive::<Float64Type>().value(row).to_bits() as i64,
        _ => return None,
    };
    Some(order_key(spec.key.1, raw, spec.descending))
}

/// The first `limit` rows among `candidates` (input positions, ascending) in the spec's order,
/// ties in input order.
pub fn ordered_rows(
    batch: &RecordBatch,
    spec: &TopN,
    candidates: impl Iterator<Item = usize>,
) -> Result<RecordBatch, GpuError> {
    spec.check()?;
    let array = batch.column(spec.key.0).as_ref();
    let mut nulls = Vec::new();
    let mut keyed = Vec::new();
    for row in candidates {
        match row_key(array, spec, row) {
            Some(key) => keyed.push((key, row)),
            None => nulls.push(row),
        }
    }
    // Stable: equal keys keep their input order.
    keyed.sort_by_key(|(key, _)| *key);
    let values = keyed.into_iter().map(|(_, row)| row);
    let order: Vec<u32> = if spec.nulls_first {
        nulls
            .into_iter()
            .chain(values)
            .take(spec.limit)
            .map(|r| r as u32)
            .collect()
    } else {
        values
            .chain(nulls)
            .take(spec.limit)
            .map(|r| r as u32)
            .collect()
    };
    Ok(take_record_batch(batch, &UInt32Array::from(order))?)
}

/// The kernels of a top-N: a 256-bin histogram of the next eight bits of the order keys that
/// match the prefix chosen so far (one radix-select pass), and the count/write pair that lists,
/// in input order, the non-null rows whose key is at most the threshold.
pub fn kernel_source(spec: &TopN) -> Result<KernelSource, GpuError> {
    spec.check()?;
    let (index, data_type) = spec.key;
    let raw = match data_type {
        GpuType::Float64 => "((const i64*)data0)[row]".to_string(),
        other => format!("(i64)((const {}*)data0)[row]", c_type(other)),
    };
    let ascending = match data_type {
        GpuType::Float64 => "((u64)f64_order(__longlong_as_double(raw))) ^ 0x8000000000000000ULL",
        _ => "((u64)raw) ^ 0x8000000000000000ULL",
    };
    let key = if spec.descending {
        format!("~({ascending})")
    } else {
        ascending.to_string()
    };
    let source = format!(
        r#"{prelude}
__device__ __forceinline__ u64 order_key_at(const u8* data0, i64 row) {{
    i64 raw = {raw};
    return {key};
}}

extern "C" __global__ void {TOPN_HISTOGRAM}(i64 num_rows, const u8* data0, const u8* valid0, u64 prefix, u64 mask, u32 shift, u32* histogram) {{
    __shared__ u32 bins[256];
    for (u32 i = threadIdx.x; i < 256; i += blockDim.x) bins[i] = 0;
    __syncthreads();
    i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (row < num_rows && valid_at(valid0, row)) {{
        u64 k = order_key_at(data0, row);
        if ((k & mask) == prefix) atomicAdd(&bins[(k >> shift) & 255u], 1u);
    }}
    __syncthreads();
    for (u32 i = threadIdx.x; i < 256; i += blockDim.x) {{
        if (bins[i]) atomicAdd(&histogram[i], bins[i]);
    }}
}}

extern "C" __global__ void {TOPN_COUNT}(i64 num_rows, const u8* data0, const u8* valid0, u64 threshold, u32* block_counts) {{
    i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    bool keep = row < num_rows && valid_at(valid0, row) && order_key_at(data0, row) <= threshold;
    int kept = __syncthreads_count(keep);
    if (threadIdx.x == 0) block_counts[blockIdx.x] = (u32)kept;
}}

extern "C" __global__ void {TOPN_WRITE}(i64 num_rows, const u8* data0, const u8* valid0, u64 threshold, const u32* block_offsets, u32* out_rows) {{
    __shared__ u32 warp_offsets[32];
    i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    bool keep = row < num_rows && valid_at(valid0, row) && order_key_at(data0, row) <= threshold;
    u32 rank = rank_in_block(keep, warp_offsets);
    if (keep) out_rows[block_offsets[blockIdx.x] + rank] = (u32)row;
}}
"#,
        prelude = prelude(),
    );
    Ok(KernelSource {
        source,
        inputs: vec![(index, data_type)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_order_like_sql() {
        let asc = |t, v: i64| order_key(t, v, false);
        assert!(asc(GpuType::Int64, i64::MIN) < asc(GpuType::Int64, -1));
        assert!(asc(GpuType::Int64, -1) < asc(GpuType::Int64, 0));
        assert!(asc(GpuType::Int64, 0) < asc(GpuType::Int64, i64::MAX));
        let f = |v: f64| order_key(GpuType::Float64, v.to_bits() as i64, false);
        assert!(f(f64::NEG_INFINITY) < f(-1.5));
        assert!(f(-1.5) < f(-0.0));
        assert!(f(-0.0) < f(0.0));
        assert!(f(0.0) < f(2.0));
        assert!(f(2.0) < f(f64::INFINITY));
        assert!(f(f64::INFINITY) < f(f64::NAN));
        let desc = |v: i64| order_key(GpuType::Int32, v, true);
        assert!(desc(5) < desc(-5));
    }
}
