//! Writing rows of one table inside a transaction: inserts (with primary-key and unique-index
//! uniqueness and `ON CONFLICT DO NOTHING`), deletes and updates by storage key, each keeping
//! the table's secondary index entries in step. All methods block on RocksDB: call them from a
//! blocking thread.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use shoal_coord::{NodeId, SqlType};
use shoal_storage::{keys, RowEncoder, Store, Txn};

use crate::index_entries::{
    entries_of, first_taken, put_entries, stored_entries_of, unique_violation, write_entries,
};
use crate::{json, ExecError, TableHandle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConflictAction {
    /// A duplicate primary key fails the statement with a unique violation.
    Error,
    /// A row whose primary key exists is skipped (`ON CONFLICT DO NOTHING`).
    DoNothing,
    /// A row whose primary key exists is set aside for an update (`ON CONFLICT DO UPDATE`).
    SetAside,
}

/// Rows a write touched, for the command tag and RETURNING.
#[derive(Debug)]
pub struct WriteOutcome {
    pub rows: u64,
    /// The rows as written (inserted or new versions), in the table's visible schema.
    pub written: Vec<RecordBatch>,
    /// Proposed rows whose key already existed, under [`ConflictAction::SetAside`].
    pub conflicting: Option<RecordBatch>,
}

/// Hands out hidden row ids for tables without a primary key. An id is a sequence number
/// shifted left by [`NODE_BITS`] with the allocating node's id in the low bits, so that ids of
/// different nodes never meet when a partition moves to another node. Each table's sequence
/// starts after the largest id already stored here, so ids stay unique across restarts.
#[derive(Debug, Default)]
pub struct RowIdAllocator {
    next: Mutex<HashMap<u32, i64>>,
}

/// Low bits of a hidden row id that hold the node that allocated it.
const NODE_BITS: u32 = 16;

impl RowIdAllocator {
    fn allocate(
        &self,
        store: &Store,
        table: &TableHandle,
        node: NodeId,
        n: usize,
    ) -> Result<Vec<i64>, ExecError> {
        let tag = (node % (1 << NODE_BITS)) as i64;
        let mut next = self.next.lock();
        let first = match next.get(&table.id()) {
            Some(v) => *v,
            None => {
                let mut max = 0i64;
                for p in 0..table.partition_count() {
                    let start = keys::partition_start(table.id(), p);
                    let end = keys::partition_end(table.id(), p);
                    if let Some(k) = store.last_key_in(&start, &end)? {
                        if let Some(bytes) = k.get(start.len()..start.len() + 8) {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(bytes);
                            max = max.max((u64::from_be_bytes(b) ^ (1 << 63)) as i64);
                        }
                    }
                }
                (max >> NODE_BITS) + 1
            }
        };
        next.insert(table.id(), first + n as i64);
        Ok((first..first + n as i64)
            .map(|seq| (seq << NODE_BITS) | tag)
            .collect())
    }
}

pub struct TableWriter<'a> {
    table: &'a TableHandle,
    txn: &'a Txn,
    store: &'a Store,
    row_ids: &'a RowIdAllocator,
    /// The node writing: it may only write the partitions it leads.
    local_node: NodeId,
    /// The partitions `local_node` leads, ascending.
    local_partitions: Vec<u32>,
    /// The local partitions that take new rows of a table keyed by a hidden row id: those
    /// not moving to another node.
    open_partitions: Vec<u32>,
}

impl<'a> TableWriter<'a> {
    pub fn new(
        table: &'a TableHandle,
        txn: &'a Txn,
        store: &'a Store,
        row_ids: &'a RowIdAllocator,
        local_node: NodeId,
    ) -> Self {
        let local_partitions = table
            .def
            .partitions
            .iter()
            .filter(|p| p.leader == local_node)
            .map(|p| p.index)
            .collect();
        let open_partitions = table
            .def
            .partitions
            .iter()
            .filter(|p| p.leader == local_node && p.moving_to.is_none())
            .map(|p| p.index)
            .collect();
        TableWriter {
            table,
            txn,
            store,
            row_ids,
            local_node,
            local_partitions,
            open_partitions,
        }
    }

    /// Refuses to write `partition` unless this node leads it: this node's storage holds none
    /// of the other partitions' rows (their writes are sent to their leaders, see
    /// `TableWriteExec`).
    fn check_leads(&self, partition: u32) -> Result<(), ExecError> {
        if self.local_partitions.binary_search(&partition).is_ok() {
            return Ok(());
        }
        let leader = self
            .table
            .def
            .partitions
            .get(partition as usize)
            .map(|p| p.leader)
            .unwrap_or_default();
        Err(ExecError::PartitionsElsewhere {
            table: self.table.qualified_name(),
            local_node: self.local_node,
            partitions: format!("{partition} (node {leader})"),
        })
    }

    /// The leader of each row's partition. Rows of a table keyed by a hidden row id go to a
    /// partition of this node that is not moving (see [`Self::keys_of`]), or, when it has
    /// none, to the leader of the first partition that is not moving.
    pub fn row_leaders(&self, batch: &RecordBatch) -> Result<Vec<NodeId>, ExecError> {
        if self.table.has_hidden_row_id() {
            let partitions = &self.table.def.partitions;
            let node = match self.open_partitions.is_empty() {
                false => self.local_node,
                true => partitions
                    .iter()
                    .find(|p| p.moving_to.is_none())
                    .or(partitions.first())
                    .map(|p| p.leader)
                    .unwrap_or(self.local_node),
            };
            return Ok(vec![node; batch.num_rows()]);
        }
        let key_columns: Vec<ArrayRef> = self
            .table
            .key_columns
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let partitions = &self.table.def.partitions;
        (0..batch.num_rows())
            .map(|row| {
                let pk = keys::encode_primary_key(&key_columns, row)?;
                let p = self.table.partition_of_row(&key_columns, row, &pk)? as usize;
                Ok(partitions.get(p).map(|p| p.leader).unwrap_or_default())
            })
            .collect()
    }

    /// Checks that this node leads the partitions of these storage keys.
    fn check_keys(&self, row_keys: &[Vec<u8>]) -> Result<(), ExecError> {
        for key in row_keys {
            if let Some((_, partition)) = keys::partition_of_key(key) {
                self.check_leads(partition)?;
            }
        }
        Ok(())
    }

    /// `batch` as it is stored: its constraints checked, its uuids in PostgreSQL's canonical
    /// form (lower case, hyphenated) and its jsonb values in jsonb's, as PostgreSQL prints
    /// whatever form was written.
    pub(crate) fn checked(&self, batch: &RecordBatch) -> Result<RecordBatch, ExecError> {
        self.check_constraints(batch)?;
        let mut columns = batch.columns().to_vec();
        let mut changed = false;
        for (i, column) in self.table.def.visible_columns().enumerate() {
            let Some(values) = batch.column(i).as_string_opt::<i32>() else {
                continue;
            };
            let canonical: StringArray = match column.sql_type {
                SqlType::Uuid if values.iter().flatten().any(|v| canonical_uuid(v) != v) => {
                    values.iter().map(|v| v.map(canonical_uuid)).collect()
                }
                SqlType::Jsonb => values
                    .iter()
                    .map(|v| v.map(json::canonical_jsonb).transpose())
                    .collect::<Result<_, _>>()?,
                _ => continue,
            };
            columns[i] = Arc::new(canonical);
            changed = true;
        }
        Ok(match changed {
            true => RecordBatch::try_new(batch.schema(), columns)?,
            false => batch.clone(),
        })
    }

    /// NOT NULL, and the length limit of `varchar(n)` / `char(n)` columns.
    fn check_constraints(&self, batch: &RecordBatch) -> Result<(), ExecError> {
        for (i, field) in self.table.schema.fields().iter().enumerate() {
            if !field.is_nullable() && batch.column(i).null_count() > 0 {
                return Err(ExecError::NotNullViolation {
                    table: self.table.def.name.clone(),
                    column: field.name().clone(),
                });
            }
        }
        for (i, column) in self.table.def.visible_columns().enumerate() {
            let Some(values) = batch.column(i).as_string_opt::<i32>() else {
                continue;
            };
            let invalid = |value: &str| ExecError::InvalidInput {
                type_name: column.sql_type.pg_name(),
                value: value.to_string(),
            };
            match column.sql_type {
                SqlType::Varchar(Some(n)) | SqlType::Char(n) => {
                    let limit = n as usize;
                    // PostgreSQL accepts a longer value when the excess is only spaces.
                    let too_long = values.iter().flatten().any(|v| {
                        v.chars().count() > limit && v.trim_end_matches(' ').chars().count() > limit
                    });
                    if too_long {
                        return Err(ExecError::StringTooLong {
                            type_name: column.sql_type.pg_name(),
                        });
                    }
                }
                // Held as text, so checked here: the binary wire form of a uuid needs one.
                SqlType::Uuid => {
                    if let Some(bad) = values.iter().flatten().find(|v| !is_uuid(v)) {
                        return Err(invalid(bad));
                    }
                }
                // jsonb is parsed (and so checked) when it is made canonical.
                SqlType::Json => {
                    for v in values.iter().flatten() {
                        json::validate_json(v)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The storage key of each row of `batch` (allocating hidden row ids when needed).
    fn keys_of(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ExecError> {
        let key_columns: Vec<ArrayRef> = if self.table.has_hidden_row_id() {
            let ids =
                self.row_ids
                    .allocate(self.store, self.table, self.local_node, batch.num_rows())?;
            vec![Arc::new(Int64Array::from(ids))]
        } else {
            self.table
                .key_columns
                .iter()
                .map(|i| batch.column(*i).clone())
                .collect()
        };
        let hidden = self.table.has_hidden_row_id();
        if hidden && self.open_partitions.is_empty() {
            return Err(ExecError::PartitionsElsewhere {
                table: self.table.qualified_name(),
                local_node: self.local_node,
                partitions: "all".into(),
            });
        }
        (0..batch.num_rows())
            .map(|row| {
                let pk = keys::encode_primary_key(&key_columns, row)?;
                // A hidden row id means nothing to anyone: its row may live in any partition,
                // so it goes to one this node leads and keeps (on a single node: any).
                let partition = if hidden {
                    let open = &self.open_partitions;
                    open[keys::partition_of(&pk, open.len() as u32) as usize]
                } else {
                    let partition = self.table.partition_of_row(&key_columns, row, &pk)?;
                    self.check_leads(partition)?;
                    partition
                };
                Ok(keys::row_key(self.table.id(), partition, &pk))
            })
            .collect()
    }

    fn unique_violation(&self) -> ExecError {
        ExecError::UniqueViolation {
            constraint: self.table.primary_key_name(),
        }
    }

    pub fn insert(
        &self,
        batch: &RecordBatch,
        on_conflict: ConflictAction,
    ) -> Result<WriteOutcome, ExecError> {
        let batch = &self.checked(batch)?;
        let keys = self.keys_of(batch)?;
        let entries = entries_of(self.table, batch, &keys)?;
        let none = HashSet::new();
        let encoder = RowEncoder::new(&self.table.layout, batch)?;
        let mut value = Vec::with_capacity(64);
        let mut kept = Vec::with_capacity(batch.num_rows());
        for (row, key) in keys.iter().enumerate() {
            if !self.table.has_hidden_row_id() && self.txn.get(key)?.is_some() {
                match on_conflict {
                    ConflictAction::Error => return Err(self.unique_violation()),
                    ConflictAction::DoNothing | ConflictAction::SetAside => {
                        kept.push(false);
                        continue;
                    }
                }
            }
            if let Some(taken) = first_taken(self.table, self.txn, &entries[row], &none)? {
                // DO NOTHING skips a row that any unique index refuses, as PostgreSQL does
                // when no conflict target is named.
                if on_conflict != ConflictAction::DoNothing {
                    return Err(unique_violation(self.table, taken));
                }
                kept.push(false);
                continue;
            }
            encoder.encode(row, &mut value)?;
            self.txn.put(key, &value)?;
            write_entries(self.txn, &entries[row], &none)?;
            kept.push(true);
        }
        let rows = kept.iter().filter(|k| **k).count() as u64;
        let conflicting = (on_conflict == ConflictAction::SetAside && rows < kept.len() as u64)
            .then(|| {
                let set_aside: BooleanArray = kept.iter().map(|k| Some(!k)).collect();
                filter_record_batch(batch, &set_aside)
            })
            .transpose()?;
        let written = if rows as usize == batch.num_rows() {
            batch.clone()
        } else {
            filter_record_batch(batch, &BooleanArray::from(kept))?
        };
        Ok(WriteOutcome {
            rows,
            written: vec![written],
            conflicting,
        })
    }

    /// Hands the rows of `batch` to a bulk load instead of the transaction (COPY outside a
    /// transaction block). Uniqueness is checked when the load finishes. Rows are encoded
    /// before the load is locked, so that concurrent inserts of one COPY encode in parallel.
    pub fn insert_bulk(
        &self,
        batch: &RecordBatch,
        load: Option<&crate::BulkSink>,
    ) -> Result<WriteOutcome, ExecError> {
        let batch = &self.checked(batch)?;
        let keys = self.keys_of(batch)?;
        let encoder = RowEncoder::new(&self.table.layout, batch)?;
        let mut values = Vec::with_capacity(keys.len());
        for row in 0..keys.len() {
            let mut value = Vec::with_capacity(64);
            encoder.encode(row, &mut value)?;
            values.push(value);
        }
        // No load: the statement was planned without one, or the COPY was aborted meanwhile.
        let mut guard = load.map(|l| l.lock());
        let Some(load) = guard.as_mut().and_then(|g| g.as_mut()) else {
            return Err(ExecError::TaskFailed(
                "bulk insert without a bulk load".into(),
            ));
        };
        for (key, value) in keys.into_iter().zip(values) {
            load.add(key, value)?;
        }
        Ok(WriteOutcome {
            rows: batch.num_rows() as u64,
            written: vec![batch.clone()],
            conflicting: None,
        })
    }

    /// Deletes the rows with these storage keys (as produced by a scan with row keys).
    pub fn delete(&self, row_keys: &dyn Array) -> Result<u64, ExecError> {
        let row_keys = row_keys.as_binary::<i32>();
        let keys: Vec<Vec<u8>> = row_keys.iter().flatten().map(<[u8]>::to_vec).collect();
        self.check_keys(&keys)?;
        // Read before deleting: the delete checks that what was read is still current.
        let stale_entries = stored_entries_of(self.table, self.txn, &keys)?;
        for key in &keys {
            self.txn.delete(key)?;
        }
        for e in &stale_entries {
            self.txn.delete(&e.key)?;
        }
        Ok(row_keys.len() as u64)
    }

    /// Replaces the rows at `row_keys` with the rows of `new_rows` (same order). A changed
    /// primary key moves the row; moving onto an existing key is a unique violation.
    pub fn update(
        &self,
        row_keys: &dyn Array,
        new_rows: &RecordBatch,
    ) -> Result<WriteOutcome, ExecError> {
        let new_rows = &self.checked(new_rows)?;
        let row_keys = row_keys.as_binary::<i32>();
        let new_keys = if self.table.has_hidden_row_id() {
            row_keys
                .iter()
                .map(|k| k.unwrap_or_default().to_vec())
                .collect()
        } else {
            self.keys_of(new_rows)?
        };
        let encoder = RowEncoder::new(&self.table.layout, new_rows)?;
        let old_keys: Vec<Vec<u8>> = row_keys
            .iter()
            .map(|k| k.unwrap_or_default().to_vec())
            .collect();
        self.check_keys(&old_keys)?;
        // A row whose new key falls in another node's partition is moved there by the node
        // running the statement (see `routed_writes`), never written here.
        self.check_keys(&new_keys)?;
        let old_entries: HashSet<_> = stored_entries_of(self.table, self.txn, &old_keys)?
            .into_iter()
            .collect();
        let new_entries = entries_of(self.table, new_rows, &new_keys)?;
        // Delete every moved row and every entry that changes first, so that rows may trade
        // keys or unique values within one statement.
        let mut moved = Vec::new();
        for (row, old) in old_keys.iter().enumerate() {
            if *old != new_keys[row] {
                self.txn.delete(old)?;
                moved.push(row);
            }
        }
        let kept: HashSet<_> = new_entries.iter().flatten().cloned().collect();
        for e in old_entries.iter().filter(|e| !kept.contains(*e)) {
            self.txn.delete(&e.key)?;
        }
        let mut value = Vec::with_capacity(64);
        for (row, key) in new_keys.iter().enumerate() {
            if moved.binary_search(&row).is_ok() && self.txn.get(key)?.is_some() {
                return Err(self.unique_violation());
            }
            encoder.encode(row, &mut value)?;
            self.txn.put(key, &value)?;
            put_entries(self.table, self.txn, &new_entries[row], &old_entries)?;
        }
        Ok(WriteOutcome {
            rows: new_rows.num_rows() as u64,
            written: vec![new_rows.clone()],
            conflicting: None,
        })
    }
}

/// The forms PostgreSQL's uuid input accepts: 32 hex digits, optionally hyphenated after any
/// group of four and optionally in braces.
fn is_uuid(text: &str) -> bool {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let digits: Vec<char> = inner.chars().filter(|c| *c != '-').collect();
    digits.len() == 32
        && digits.iter().all(char::is_ascii_hexdigit)
        && !inner.starts_with('-')
        && !inner.ends_with('-')
        && !inner.contains("--")
}

/// A valid uuid (see [`is_uuid`]) as PostgreSQL prints it: `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`.
fn canonical_uuid(text: &str) -> String {
    let digits: String = text
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.len() != 32 {
        return text.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &digits[0..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..32]
    )
}
