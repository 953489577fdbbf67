//! Point reads: the one row a full primary key names, read through a transaction and decoded
//! straight into an Arrow batch of zero or one row. The server's fast path for
//! `SELECT columns FROM table WHERE key = value` calls this without building a DataFusion plan,
//! whose planning costs far more than the read itself; the key lookups of scans find their
//! storage keys with the same [`point_key`].

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use shoal_storage::{keys, RowDecoder, Txn};

use crate::{ExecError, TableHandle};

/// Where the row of one primary key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointKey {
    pub partition: u32,
    /// The full storage key.
    pub key: Vec<u8>,
}

/// `value` as type `t`, when the cast keeps it exactly: a value that does not survive the cast
/// (or is NULL) cannot equal any stored key.
pub fn exact_cast(value: &ScalarValue, t: &DataType) -> Option<ArrayRef> {
    let cast = value.cast_to(t).ok()?;
    if cast.is_null() || cast.cast_to(&value.data_type()).ok().as_ref() != Some(value) {
        return None;
    }
    cast.to_array().ok()
}

/// The storage key of the row whose primary key is `values` (one per key column, in key
/// order); `None` when no stored row can have it (a NULL, or a value outside the column's type).
pub fn point_key(table: &TableHandle, values: &[ScalarValue]) -> Option<PointKey> {
    if table.key_columns.is_empty() || values.len() != table.key_columns.len() {
        return None;
    }
    let arrays = table
        .key_columns
        .iter()
        .zip(values)
        .map(|(c, v)| exact_cast(v, table.schema.field(*c).data_type()))
        .collect::<Option<Vec<ArrayRef>>>()?;
    let pk = keys::encode_primary_key(&arrays, 0).ok()?;
    let partition = table.partition_of_row(&arrays, 0, &pk).ok()?;
    Some(PointKey {
        partition,
        key: keys::row_key(table.id(), partition, &pk),
    })
}

/// Reads the row at `key` as `txn` sees it, decoding the visible columns `projection` (in
/// output order); no key reads nothing. Blocks on storage: call it from a blocking thread.
pub fn read_point(
    table: &TableHandle,
    txn: &Txn,
    key: Option<&PointKey>,
    projection: &[usize],
) -> Result<RecordBatch, ExecError> {
    let row = match key {
        Some(k) => txn.get(&k.key)?,
        None => None,
    };
    decode_point(table, key, row, projection)
}

/// [`read_point`] when the row can be read from memory without blocking; `None` otherwise.
pub fn read_point_if_cached(
    table: &TableHandle,
    txn: &Txn,
    key: Option<&PointKey>,
    projection: &[usize],
) -> Result<Option<RecordBatch>, ExecError> {
    let row = match key {
        Some(k) => match txn.get_if_cached(&k.key)? {
            Some(row) => row,
            None => return Ok(None),
        },
        None => None,
    };
    decode_point(table, key, row, projection).map(Some)
}

fn decode_point(
    table: &TableHandle,
    key: Option<&PointKey>,
    row: Option<Vec<u8>>,
    projection: &[usize],
) -> Result<RecordBatch, ExecError> {
    let mut decoder = RowDecoder::new(&table.layout, projection, 1);
    if let (Some(key), Some(row)) = (key, row) {
        decoder.push(&row)?;
        crate::scan::count_scanned(1, key.key.len() + row.len());
    }
    Ok(decoder.finish()?)
}
