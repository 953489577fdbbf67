//! The entries rows have in a table's secondary indexes (key layout in
//! `shoal_storage::keys::index_entry`): computed from rows being written, or from the stored
//! versions of rows being replaced or deleted, which are read back for the purpose.

use std::collections::HashSet;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use shoal_storage::{keys, RowDecoder, ScanControl, Txn};

use crate::{ExecError, TableHandle};

/// One row's entry in one index. Two entries are the same only if they point at the same row:
/// a unique index's key alone does not say which row holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IndexEntry {
    pub key: Vec<u8>,
    /// The entry's value: the storage key of the row.
    pub row_key: Vec<u8>,
    /// Which of the table's secondary indexes (position in `TableHandle::secondary_indexes`).
    pub index: usize,
}

/// The entries of every row of `batch` (in the table's visible schema), whose storage keys are
/// `row_keys`: one list per row.
pub(crate) fn entries_of(
    table: &TableHandle,
    batch: &RecordBatch,
    row_keys: &[Vec<u8>],
) -> Result<Vec<Vec<IndexEntry>>, ExecError> {
    let per_index: Vec<Vec<ArrayRef>> = table
        .secondary_indexes
        .iter()
        .map(|i| i.columns.iter().map(|c| batch.column(*c).clone()).collect())
        .collect();
    entries_from_columns(table, &per_index, row_keys)
}

/// The entries the stored versions of the rows at `row_keys` have (as this statement sees
/// them). A key with no stored row has none.
pub(crate) fn stored_entries_of(
    table: &TableHandle,
    txn: &Txn,
    row_keys: &[Vec<u8>],
) -> Result<Vec<IndexEntry>, ExecError> {
    if table.secondary_indexes.is_empty() {
        return Ok(Vec::new());
    }
    let mut projection: Vec<usize> = table
        .secondary_indexes
        .iter()
        .flat_map(|i| i.columns.iter().copied())
        .collect();
    projection.sort_unstable();
    projection.dedup();
    let mut decoder = RowDecoder::new(&table.layout, &projection, row_keys.len());
    let mut found = Vec::with_capacity(row_keys.len());
    for key in row_keys {
        if let Some(value) = txn.get(key)? {
            decoder.push(&value)?;
            found.push(key.clone());
        }
    }
    let stored = decoder.finish()?;
    let per_index: Vec<Vec<ArrayRef>> = table
        .secondary_indexes
        .iter()
        .map(|i| {
            i.columns
                .iter()
                .map(|c| {
                    let at = projection.iter().position(|p| p == c).unwrap_or(0);
                    stored.column(at).clone()
                })
                .collect()
        })
        .collect();
    Ok(entries_from_columns(table, &per_index, &found)?
        .into_iter()
        .flatten()
        .collect())
}

fn entries_from_columns(
    table: &TableHandle,
    per_index: &[Vec<ArrayRef>],
    row_keys: &[Vec<u8>],
) -> Result<Vec<Vec<IndexEntry>>, ExecError> {
    row_keys
        .iter()
        .enumerate()
        .map(|(row, row_key)| {
            table
                .secondary_indexes
                .iter()
                .zip(per_index)
                .enumerate()
                .map(|(index, (def, columns))| {
                    let key =
                        keys::index_entry(table.id(), def.oid, def.unique, columns, row, row_key)?;
                    Ok(IndexEntry {
                        key,
                        row_key: row_key.clone(),
                        index,
                    })
                })
                .collect()
        })
        .collect()
}

/// Writes a row's new entries: each one in a unique index must not be taken yet. Entries in
/// `unchanged` (the row had them before) are left as they are.
pub(crate) fn put_entries(
    table: &TableHandle,
    txn: &Txn,
    entries: &[IndexEntry],
    unchanged: &HashSet<IndexEntry>,
) -> Result<(), ExecError> {
    if let Some(taken) = first_taken(table, txn, entries, unchanged)? {
        return Err(unique_violation(table, taken));
    }
    write_entries(txn, entries, unchanged)
}

/// Writes entries already checked with [`first_taken`] (those in `unchanged` are left alone).
pub(crate) fn write_entries(
    txn: &Txn,
    entries: &[IndexEntry],
    unchanged: &HashSet<IndexEntry>,
) -> Result<(), ExecError> {
    for e in entries.iter().filter(|e| !unchanged.contains(*e)) {
        txn.put(&e.key, &e.row_key)?;
    }
    Ok(())
}

/// The error for a value already taken in the secondary index at `position`.
pub(crate) fn unique_violation(table: &TableHandle, position: usize) -> ExecError {
    ExecError::UniqueViolation {
        constraint: table.secondary_indexes[position].name.clone(),
    }
}

/// The first unique index (by position) where one of `entries` is already taken.
pub(crate) fn first_taken(
    table: &TableHandle,
    txn: &Txn,
    entries: &[IndexEntry],
    unchanged: &HashSet<IndexEntry>,
) -> Result<Option<usize>, ExecError> {
    for e in entries {
        if table.secondary_indexes[e.index].unique
            && !unchanged.contains(e)
            && txn.get(&e.key)?.is_some()
        {
            return Ok(Some(e.index));
        }
    }
    Ok(None)
}

/// Rows read per round while building an index: the scan stops, the round's entries are
/// written, and the scan resumes after the last row (a transaction's iterator must not outlive
/// writes to the same transaction).
const BUILD_ROUND: usize = 1024;

/// Writes the entries of every stored row into the secondary index with OID `index`, checking
/// uniqueness as inserts do. Returns how many rows were indexed.
pub fn build_index(table: &TableHandle, index: u32, txn: &Txn) -> Result<u64, ExecError> {
    let Some(position) = table.secondary_indexes.iter().position(|i| i.oid == index) else {
        return Ok(0);
    };
    let only = TableHandle {
        secondary_indexes: vec![table.secondary_indexes[position].clone()],
        ..table.clone()
    };
    let (start, end) = (keys::table_start(table.id()), keys::table_end(table.id()));
    let none = HashSet::new();
    let mut after: Option<Vec<u8>> = None;
    let mut indexed = 0;
    loop {
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(BUILD_ROUND);
        txn.scan(&start, &end, after.as_deref(), |k, v| {
            rows.push((k.to_vec(), v.to_vec()));
            Ok(if rows.len() == BUILD_ROUND {
                ScanControl::Stop
            } else {
                ScanControl::Continue
            })
        })?;
        let Some((last, _)) = rows.last() else {
            return Ok(indexed);
        };
        after = Some(last.clone());
        let mut decoder =
            RowDecoder::new(&only.layout, &only.secondary_indexes[0].columns, rows.len());
        for (_, v) in &rows {
            decoder.push(v)?;
        }
        let columns = decoder.finish()?.columns().to_vec();
        let row_keys: Vec<Vec<u8>> = rows.into_iter().map(|(k, _)| k).collect();
        for entries in entries_from_columns(&only, &[columns], &row_keys)? {
            put_entries(&only, txn, &entries, &none)?;
            indexed += 1;
        }
    }
}

/// Deletes every entry of the index with OID `index` inside `txn` (DROP INDEX, so that a
/// rollback brings them back).
pub fn remove_index_entries(table: u32, index: u32, txn: &Txn) -> Result<u64, ExecError> {
    let (start, end) = (
        keys::index_start(table, index),
        keys::index_end(table, index),
    );
    let mut removed = 0;
    loop {
        let mut round: Vec<Vec<u8>> = Vec::with_capacity(BUILD_ROUND);
        txn.scan(&start, &end, None, |k, _| {
            round.push(k.to_vec());
            Ok(if round.len() == BUILD_ROUND {
                ScanControl::Stop
            } else {
                ScanControl::Continue
            })
        })?;
        if round.is_empty() {
            return Ok(removed);
        }
        for k in &round {
            txn.delete(k)?;
        }
        removed += round.len() as u64;
    }
}
