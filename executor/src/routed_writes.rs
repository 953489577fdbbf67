//! The rows of one INSERT, UPDATE or DELETE routed to the nodes that lead them (cluster mode).
//!
//! An INSERT's rows go to the leaders of their partitions. An UPDATE or DELETE whose input is
//! one scan that keeps each row in its partition runs whole at each leader (see
//! `TableWriteExec`); any other one (over a join, an index lookup, with a partition key that
//! changes) is read here and its rows are written by row key at their leaders. Such a
//! statement first expects a part of its transaction on every node leading a partition of
//! the table, so that its reads there go through those parts at one snapshot per statement and
//! what it writes there is checked against what it read, as on a single node. A row whose
//! partition key moves it to another node's partition is deleted at its old leader and
//! inserted at its new one.
//!
//! [`write_rows`] is the writing itself, shared by this node and the leaders that receive
//! forwarded rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::error::ArrowError;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use shoal_coord::NodeId;
use shoal_storage::{keys, Store, Txn};

use crate::forwarded_writes::{RowsWrite, Written};
use crate::{
    ExecError, Forwarding, FragmentExec, RowIdAllocator, TableHandle, TableWriter, WriteOutcome,
};

/// The table a statement writes, with what writing it here needs.
#[derive(Clone)]
pub(crate) struct WriteTarget {
    pub table: TableHandle,
    pub txn: Arc<Txn>,
    pub store: Store,
    pub row_ids: Arc<RowIdAllocator>,
    pub local_node: NodeId,
}

fn external(e: ExecError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The visible columns of an input batch, every one nullable (see
/// [`TableHandle::nullable_schema`]): the rows as the writer takes them.
pub(crate) fn visible_rows(
    table: &TableHandle,
    batch: &RecordBatch,
) -> Result<RecordBatch, ArrowError> {
    let visible = table.schema.fields().len();
    RecordBatch::try_new(
        table.nullable_schema(),
        batch.columns()[..visible.min(batch.num_columns())].to_vec(),
    )
}

/// The visible columns of `batch` (see [`visible_rows`]) and the row key column that
/// follows them.
pub(crate) fn split_row_keys(
    table: &TableHandle,
    batch: &RecordBatch,
) -> Result<(RecordBatch, ArrayRef), ExecError> {
    let row_keys = batch
        .columns()
        .get(table.schema.fields().len())
        .cloned()
        .ok_or_else(|| {
            ExecError::TaskFailed("rows to update or delete without their row keys".into())
        })?;
    Ok((visible_rows(table, batch)?, row_keys))
}

/// Writes `batches` with `writer` (here, in its transaction). Blocking.
pub(crate) fn write_rows(
    writer: &TableWriter,
    table: &TableHandle,
    write: RowsWrite,
    batches: &[RecordBatch],
    returning: bool,
) -> Result<Written, ExecError> {
    let mut written = Written::default();
    for batch in batches {
        let outcome = match write {
            RowsWrite::Insert(action) => writer.insert(batch, action)?,
            RowsWrite::Update => {
                let (rows, row_keys) = split_row_keys(table, batch)?;
                writer.update(row_keys.as_ref(), &rows)?
            }
            RowsWrite::Delete => {
                let (rows, row_keys) = split_row_keys(table, batch)?;
                WriteOutcome {
                    rows: writer.delete(row_keys.as_ref())?,
                    written: vec![rows],
                    conflicting: None,
                }
            }
        };
        written.rows += outcome.rows;
        if returning {
            written.returned.extend(outcome.written);
        }
        written.conflicting.extend(outcome.conflicting);
    }
    Ok(written)
}

/// `batch`'s rows split by the node `leaders` names for each, ascending by node.
fn split_by_node(
    batch: &RecordBatch,
    leaders: &[NodeId],
    into: &mut BTreeMap<NodeId, Vec<RecordBatch>>,
) -> DfResult<()> {
    let nodes: BTreeSet<NodeId> = leaders.iter().copied().collect();
    if nodes.len() == 1 {
        into.entry(leaders[0]).or_default().push(batch.clone());
        return Ok(());
    }
    for node in nodes {
        let mask: BooleanArray = leaders.iter().map(|l| Some(*l == node)).collect();
        into.entry(node)
            .or_default()
            .push(filter_record_batch(batch, &mask)?);
    }
    Ok(())
}

/// New rows split by the node that leads their partition.
pub(crate) fn rows_by_leader(
    writer: &TableWriter,
    rows: Vec<RecordBatch>,
) -> DfResult<BTreeMap<NodeId, Vec<RecordBatch>>> {
    let mut split = BTreeMap::new();
    for batch in rows {
        let leaders = writer.row_leaders(&batch).map_err(external)?;
        split_by_node(&batch, &leaders, &mut split)?;
    }
    Ok(split)
}

/// Whether an UPDATE's input (new rows, then the old row key) leaves every partition key
/// column as it was, so that each row stays in its partition: the partition key columns are
/// plain references to themselves.
pub(crate) fn keeps_partition_key(input: &Arc<dyn ExecutionPlan>, table: &TableHandle) -> bool {
    if table.has_hidden_row_id() {
        return true;
    }
    if let Some(fragment) = input.downcast_ref::<FragmentExec>() {
        return keeps_partition_key(fragment.subtree(), table);
    }
    let Some(projection) = input.downcast_ref::<ProjectionExec>() else {
        return false;
    };
    let source = projection.input().schema();
    table.partition_key_columns().iter().all(|c| {
        projection
            .expr()
            .get(*c)
            .and_then(|e| e.expr.downcast_ref::<Column>())
            .and_then(|col| source.fields().get(col.index()))
            .is_some_and(|f| f.name() == table.schema.field(*c).name())
    })
}

/// The nodes other than this one that lead a partition of the target's table.
pub(crate) fn other_leaders(target: &WriteTarget) -> BTreeSet<NodeId> {
    target
        .table
        .def
        .partitions
        .iter()
        .map(|p| p.leader)
        .filter(|n| *n != target.local_node)
        .collect()
}

impl WriteTarget {
    pub(crate) fn writer(&self) -> TableWriter<'_> {
        TableWriter::new(
            &self.table,
            &self.txn,
            &self.store,
            &self.row_ids,
            self.local_node,
        )
    }

    /// The leader of the partition each row key names.
    fn key_leaders(&self, row_keys: &dyn Array) -> Vec<NodeId> {
        let partitions = &self.table.def.partitions;
        row_keys
            .as_binary::<i32>()
            .iter()
            .map(|key| {
                key.and_then(keys::partition_of_key)
                    .and_then(|(_, p)| partitions.get(p as usize))
                    .map(|p| p.leader)
                    .unwrap_or(self.local_node)
            })
            .collect()
    }

    /// Writes `rows` at `node`: here on a blocking thread, or forwarded in part `part`.
    pub(crate) async fn write_at(
        &self,
        forward: &Forwarding,
        node: NodeId,
        write: RowsWrite,
        rows: Vec<RecordBatch>,
        part: Option<crate::two_phase::PartRef>,
        returning: bool,
    ) -> DfResult<Written> {
        if node != self.local_node {
            return forward
                .remote
                .write_rows_at(node, &self.table, write, rows, part, returning)
                .await;
        }
        self.write_here(write, rows, returning).await
    }

    /// Writes `rows` here, in the statement's transaction, on a blocking thread.
    async fn write_here(
        &self,
        write: RowsWrite,
        rows: Vec<RecordBatch>,
        returning: bool,
    ) -> DfResult<Written> {
        let target = self.clone();
        tokio::task::spawn_blocking(move || {
            write_rows(&target.writer(), &target.table, write, &rows, returning)
        })
        .await
        .map_err(|e| external(ExecError::TaskFailed(e.to_string())))?
        .map_err(external)
    }

    /// Expects a part of the transaction on every other node leading a partition of the
    /// table, before the statement reads: see the module comment.
    pub(crate) fn expect_parts(&self, forward: &Forwarding) -> DfResult<()> {
        for node in other_leaders(self) {
            forward
                .remote
                .expect_part(&self.txn, node, &self.table.qualified_name())
                .map_err(external)?;
        }
        Ok(())
    }

    /// Applies rows of an UPDATE (new rows, then the old row key) or DELETE (stored rows,
    /// then their row key) read here at the leaders of their rows, in the parts
    /// [`Self::expect_parts`] expected.
    pub(crate) async fn update_or_delete_by_key(
        &self,
        forward: &Forwarding,
        delete: bool,
        rows: Vec<RecordBatch>,
        returning: bool,
    ) -> DfResult<Written> {
        let writer = self.writer();
        let (mut updates, mut deletes, mut inserts) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for batch in rows.iter().filter(|b| b.num_rows() > 0) {
            let (visible, row_keys) = split_row_keys(&self.table, batch).map_err(external)?;
            let old = self.key_leaders(row_keys.as_ref());
            if delete {
                split_by_node(batch, &old, &mut deletes)?;
                continue;
            }
            let new = match self.table.has_hidden_row_id() {
                true => old.clone(),
                false => writer.row_leaders(&visible).map_err(external)?,
            };
            let stays: BooleanArray = old.iter().zip(&new).map(|(o, n)| Some(o == n)).collect();
            let moves = datafusion::arrow::compute::not(&stays)?;
            let pick = |mask: &BooleanArray, leaders: &[NodeId]| -> Vec<NodeId> {
                leaders
                    .iter()
                    .zip(mask.iter())
                    .filter(|(_, m)| m == &Some(true))
                    .map(|(l, _)| *l)
                    .collect()
            };
            split_by_node(
                &filter_record_batch(batch, &stays)?,
                &pick(&stays, &old),
                &mut updates,
            )?;
            if moves.true_count() > 0 {
                split_by_node(
                    &filter_record_batch(batch, &moves)?,
                    &pick(&moves, &old),
                    &mut deletes,
                )?;
                split_by_node(
                    &filter_record_batch(&visible, &moves)?,
                    &pick(&moves, &new),
                    &mut inserts,
                )?;
            }
        }
        let nodes: BTreeSet<NodeId> = [&updates, &deletes, &inserts]
            .into_iter()
            .flat_map(|m| m.keys().copied())
            .collect();
        // Each node deletes the rows leaving it, then updates, then inserts the rows arriving,
        // so that rows may trade keys within one statement; nodes run side by side.
        let mut runs = Vec::new();
        for node in nodes {
            let part = match node == self.local_node {
                true => None,
                false => Some(
                    forward
                        .remote
                        .join_part(&self.txn, node, &self.table.qualified_name())
                        .map_err(external)?,
                ),
            };
            let steps = [
                (
                    RowsWrite::Delete,
                    deletes.remove(&node),
                    delete && returning,
                ),
                (RowsWrite::Update, updates.remove(&node), returning),
                (
                    RowsWrite::Insert(crate::ConflictAction::Error),
                    inserts.remove(&node),
                    returning,
                ),
            ];
            runs.push(async move {
                let mut total = Written::default();
                for (write, rows, returning) in steps {
                    let Some(rows) = rows else { continue };
                    let written = self
                        .write_at(forward, node, write, rows, part.clone(), returning)
                        .await?;
                    // A moved row counts once, as its update.
                    if delete || write != RowsWrite::Delete {
                        total.rows += written.rows;
                    }
                    total.returned.extend(written.returned);
                }
                Ok::<_, DataFusionError>(total)
            });
        }
        let mut total = Written::default();
        for run in futures::future::join_all(runs).await {
            let run = run?;
            total.rows += run.rows;
            total.returned.extend(run.returned);
        }
        Ok(total)
    }
}

/// Applies the rows of an UPDATE that this node read (new rows in the table's visible
/// schema, each followed by the row key of the version it replaces): here, or, in a cluster
/// (`forward`), at the leaders of their rows. Returns how many rows changed and their new
/// versions.
pub async fn update_by_row_key(
    table: TableHandle,
    txn: Arc<Txn>,
    store: Store,
    row_ids: Arc<RowIdAllocator>,
    local_node: NodeId,
    forward: Option<Forwarding>,
    rows: Vec<RecordBatch>,
) -> DfResult<(u64, Vec<RecordBatch>)> {
    let target = WriteTarget {
        table,
        txn,
        store,
        row_ids,
        local_node,
    };
    let written = match forward {
        Some(forward) if !other_leaders(&target).is_empty() => {
            target.expect_parts(&forward)?;
            target
                .update_or_delete_by_key(&forward, false, rows, true)
                .await?
        }
        _ => target.write_here(RowsWrite::Update, rows, true).await?,
    };
    Ok((written.rows, written.returned))
}
