//! Order-preserving key encoding.
//!
//! A row key is `'r' | table id (u32 BE) | partition (u32 BE) | key columns`, where each key
//! column is encoded so that comparing the bytes compares the values ("memcomparable"): integers
//! big-endian with the sign bit flipped, floats with their bits turned so that negatives sort
//! first, strings and byte strings with `0x00` escaped as `0x00 0xFF` and ended by `0x00 0x01`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::*;

use crate::{Result, StorageError};

pub const ROW_PREFIX: u8 = b'r';
/// Secondary index entries: `'x' | table | index oid | key columns | row key`, see
/// [`index_entry`].
pub const INDEX_PREFIX: u8 = b'x';
/// Partition log entries: `'l' | table | partition | position (u64 BE)`.
pub const LOG_PREFIX: u8 = b'l';

/// The per-table fence: every transaction that writes a table reads it (for conflict
/// checking), and a bulk load writes it, so that transactions racing a bulk load fail with a
/// write conflict instead of overwriting loaded rows.
pub fn fence_key(table: u32) -> Vec<u8> {
    let mut k = vec![b'f'];
    k.extend_from_slice(&table.to_be_bytes());
    k
}

/// The (table, partition) a row key belongs to.
pub fn partition_of_key(key: &[u8]) -> Option<(u32, u32)> {
    if key.len() < 9 || key[0] != ROW_PREFIX {
        return None;
    }
    let table = u32::from_be_bytes([key[1], key[2], key[3], key[4]]);
    let partition = u32::from_be_bytes([key[5], key[6], key[7], key[8]]);
    Some((table, partition))
}

/// A follower's copy of a prepared transaction's writes to one partition:
/// `'q' | table | partition | id` (see `crate::replication`).
pub fn prepared_copy_key(table: u32, partition: u32, id: &str) -> Vec<u8> {
    let mut k = prepared_copies_start(table, partition);
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn prepared_copies_start(table: u32, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'q');
    k.extend_from_slice(&table.to_be_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub fn prepared_copies_end(table: u32, partition: u32) -> Vec<u8> {
    let mut k = prepared_copies_start(table, partition);
    // Ids are ASCII: no byte of theirs reaches 0xFF.
    k.push(0xFF);
    k
}

/// The key of a partition's log entry at `position`.
pub fn log_key(table: u32, partition: u32, position: u64) -> Vec<u8> {
    let mut k = log_start(table, partition);
    k.extend_from_slice(&position.to_be_bytes());
    k
}

/// The position a log key (see [`log_key`]) names.
pub fn log_position_of(key: &[u8]) -> Option<u64> {
    key.get(9..17)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

pub fn log_start(table: u32, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(LOG_PREFIX);
    k.extend_from_slice(&table.to_be_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub fn log_end(table: u32, partition: u32) -> Vec<u8> {
    let mut k = log_start(table, partition);
    k.extend_from_slice(&[0xFF; 9]);
    k
}

/// The first key of a table (inclusive).
pub fn table_start(table: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(5);
    k.push(ROW_PREFIX);
    k.extend_from_slice(&table.to_be_bytes());
    k
}

/// The first key after a table (exclusive end).
pub fn table_end(table: u32) -> Vec<u8> {
    table_start(table.wrapping_add(1))
}

pub fn partition_start(table: u32, partition: u32) -> Vec<u8> {
    let mut k = table_start(table);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub fn partition_end(table: u32, partition: u32) -> Vec<u8> {
    match partition.checked_add(1) {
        Some(next) => partition_start(table, next),
        None => table_end(table),
    }
}

/// Appends the memcomparable encoding of `array[row]` to `out`. Key columns are never NULL.
pub fn encode_key_value(array: &ArrayRef, row: usize, out: &mut Vec<u8>) -> Result<()> {
    fn be_flip_i64(v: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
    }
    fn bytes(b: &[u8], out: &mut Vec<u8>) {
        for &byte in b {
            out.push(byte);
            if byte == 0 {
                out.push(0xFF);
            }
        }
        out.extend_from_slice(&[0x00, 0x01]);
    }
    match array.data_type() {
        DataType::Boolean => out.push(array.as_boolean().value(row) as u8),
        DataType::Int16 => be_flip_i64(array.as_primitive::<Int16Type>().value(row) as i64, out),
        DataType::Int32 => be_flip_i64(array.as_primitive::<Int32Type>().value(row) as i64, out),
        DataType::Int64 => be_flip_i64(array.as_primitive::<Int64Type>().value(row), out),
        DataType::Date32 => be_flip_i64(array.as_primitive::<Date32Type>().value(row) as i64, out),
        DataType::Time64(TimeUnit::Microsecond) => be_flip_i64(
            array.as_primitive::<Time64MicrosecondType>().value(row),
            out,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => be_flip_i64(
            array.as_primitive::<TimestampMicrosecondType>().value(row),
            out,
        ),
        DataType::Float32 => {
            let v = array.as_primitive::<Float32Type>().value(row) as f64;
            out.extend_from_slice(&sortable_f64(v).to_be_bytes());
        }
        DataType::Float64 => {
            let v = array.as_primitive::<Float64Type>().value(row);
            out.extend_from_slice(&sortable_f64(v).to_be_bytes());
        }
        DataType::Decimal128(_, _) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            out.extend_from_slice(&((v as u128) ^ (1 << 127)).to_be_bytes());
        }
        DataType::Utf8 => bytes(array.as_string::<i32>().value(row).as_bytes(), out),
        DataType::Binary => bytes(array.as_binary::<i32>().value(row), out),
        other => return Err(StorageError::UnsupportedKeyType(other.to_string())),
    }
    Ok(())
}

fn sortable_f64(v: f64) -> u64 {
    // -0.0 and 0.0 are equal in SQL; NaN sorts last as in PostgreSQL.
    let v = if v == 0.0 { 0.0 } else { v };
    let bits = v.to_bits();
    if bits & (1 << 63) != 0 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The first key of an index (inclusive); with `table_indexes_end(table)`, or the next
/// index's start, it bounds the index's entries.
pub fn index_start(table: u32, index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(INDEX_PREFIX);
    k.extend_from_slice(&table.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub fn index_end(table: u32, index: u32) -> Vec<u8> {
    match index.checked_add(1) {
        Some(next) => index_start(table, next),
        None => table_indexes_end(table),
    }
}

/// The range of every index entry of a table.
pub fn table_indexes_start(table: u32) -> Vec<u8> {
    let mut k = vec![INDEX_PREFIX];
    k.extend_from_slice(&table.to_be_bytes());
    k
}

pub fn table_indexes_end(table: u32) -> Vec<u8> {
    table_indexes_start(table.wrapping_add(1))
}

/// The key of one row's entry in an index. Each column is `0x01` and its memcomparable value,
/// or `0x02` for NULL (so NULLs sort last, as in a PostgreSQL btree). The row key follows,
/// except in a unique index when no column is NULL: then the key is the indexed values alone,
/// so two rows with the same values write the same key and cannot both commit. (NULLs are
/// distinct, as in PostgreSQL, so they keep the row key.) The entry's value is the row key.
pub fn index_entry(
    table: u32,
    index: u32,
    unique: bool,
    columns: &[ArrayRef],
    row: usize,
    row_key: &[u8],
) -> Result<Vec<u8>> {
    let mut k = index_start(table, index);
    let mut has_null = false;
    for c in columns {
        if c.is_null(row) {
            has_null = true;
            k.push(0x02);
        } else {
            k.push(0x01);
            encode_key_value(c, row, &mut k)?;
        }
    }
    if !unique || has_null {
        k.extend_from_slice(row_key);
    }
    Ok(k)
}

/// Encodes the key columns of one row (without the table/partition prefix).
pub fn encode_primary_key(columns: &[ArrayRef], row: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(16);
    for c in columns {
        if c.is_null(row) {
            return Err(StorageError::CorruptRow("NULL in primary key".into()));
        }
        encode_key_value(c, row, &mut out)?;
    }
    Ok(out)
}

/// The partition a primary key belongs to: FNV-1a of its encoding. Stable across versions and
/// platforms, since it decides where rows live on disk.
pub fn partition_of(encoded_pk: &[u8], partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in encoded_pk {
        hash ^= *b as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (hash % partitions.max(1) as u64) as u32
}

/// The full RocksDB key of a row.
pub fn row_key(table: u32, partition: u32, encoded_pk: &[u8]) -> Vec<u8> {
    let mut k = partition_start(table, partition);
    k.extend_from_slice(encoded_pk);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    fn enc(a: ArrayRef) -> Vec<Vec<u8>> {
        (0..a.len())
            .map(|i| encode_primary_key(std::slice::from_ref(&a), i).unwrap())
            .collect()
    }

    #[test]
    fn integers_sort_like_their_values() {
        let keys = enc(Arc::new(Int64Array::from(vec![
            i64::MIN,
            -5,
            -1,
            0,
            1,
            7,
            i64::MAX,
        ])));
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn floats_sort_like_their_values() {
        let keys = enc(Arc::new(Float64Array::from(vec![
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            1e-9,
            3.0,
            f64::INFINITY,
        ])));
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn strings_sort_bytewise_and_prefixes_first() {
        let keys = enc(Arc::new(StringArray::from(vec![
            "", "a", "a\0", "a\0b", "ab", "b",
        ])));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    #[test]
    fn unique_entries_collide_on_equal_values_but_not_on_nulls() {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(1), None, None]));
        let entry = |row: usize, unique| {
            index_entry(
                7,
                9,
                unique,
                std::slice::from_ref(&values),
                row,
                &[row as u8],
            )
            .unwrap()
        };
        assert_eq!(entry(0, true), entry(1, true));
        assert_ne!(entry(2, true), entry(3, true));
        assert_ne!(entry(0, false), entry(1, false));
        assert!(entry(0, true).starts_with(&index_start(7, 9)));
        assert!(entry(3, false) < index_end(7, 9));
        assert!(entry(0, false) < entry(2, false), "NULL sorts last");
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        let p = partition_of(b"hello", 8);
        assert_eq!(p, partition_of(b"hello", 8));
        assert!(p < 8);
    }
}
