//! `TableWriteExec`: the fragment that applies INSERT, UPDATE or DELETE rows produced by its
//! input to one table inside the statement's transaction, and returns the row count (the
//! single-row `count` column DataFusion expects from DML plans).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{FutureExt, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use shoal_storage::{Store, Txn};

use shoal_coord::NodeId;

use crate::forwarded_writes::{RowsWrite, Written};
use crate::fragment_exec::scan_leaf;
use crate::routed_writes::{
    keeps_partition_key, other_leaders, rows_by_leader, visible_rows, WriteTarget,
};
use crate::two_phase::PartRef;
use crate::{
    ConflictAction, ExecError, FragmentExec, PartitionScanExec, RemoteFragments, RowIdAllocator,
    TableHandle,
};

/// How a cluster node's INSERT, UPDATE or DELETE reaches rows other nodes lead.
#[derive(Clone)]
pub struct Forwarding {
    pub remote: Arc<RemoteFragments>,
    /// The statement commits on its own: when all its rows belong to one other node, that
    /// node commits them at once (no transaction across nodes is needed).
    pub autocommit: bool,
}

impl Forwarding {
    /// The part of the statement's transaction that `node` takes rows in, or `None` when
    /// `node` commits them at once.
    fn part_at(
        &self,
        txn: &Txn,
        node: NodeId,
        alone: bool,
        table: &TableHandle,
    ) -> DfResult<Option<PartRef>> {
        if self.autocommit && alone && !self.remote.writes_elsewhere(txn) {
            return Ok(None);
        }
        self.remote
            .join_part(txn, node, &table.qualified_name())
            .map(Some)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

/// What a `TableWriteExec` does with each input row.
#[derive(Debug, Clone, Copy)]
pub enum WriteKind {
    /// Input rows are new rows in the table's visible schema.
    Insert(ConflictAction),
    /// Input rows are new rows handed to the statement's bulk load.
    BulkInsert,
    /// Input rows are the old rows followed by their row key.
    Delete,
    /// Input rows are the new rows followed by the old row key.
    Update,
}

/// Rows written by a statement, kept for its RETURNING clause.
pub type ReturningSink = Arc<Mutex<Vec<RecordBatch>>>;

/// The bulk load a COPY outside a transaction block feeds.
pub type BulkSink = Arc<Mutex<Option<shoal_storage::BulkLoad>>>;

pub struct TableWriteExec {
    input: Arc<dyn ExecutionPlan>,
    table: TableHandle,
    txn: Arc<Txn>,
    store: Store,
    row_ids: Arc<RowIdAllocator>,
    kind: WriteKind,
    returning: Option<ReturningSink>,
    conflicts: Option<ReturningSink>,
    bulk: Option<BulkSink>,
    /// The node writing (it writes only the partitions it leads).
    local_node: NodeId,
    /// In a cluster: rows, and UPDATEs and DELETEs over other nodes' partitions, go to the
    /// nodes that lead them.
    forward: Option<Forwarding>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for TableWriteExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableWriteExec({:?})", self.kind)
    }
}

/// The partitions an UPDATE's or DELETE's input reads, by the node that leads them; `None`
/// when the input is not one scan with filters and projections above it (a join, an index
/// lookup, which reads every partition).
fn read_partitions_by_leader(input: &Arc<dyn ExecutionPlan>) -> Option<BTreeMap<NodeId, Vec<u32>>> {
    let scan = scan_leaf(input)?;
    let partitions = &scan.table().def.partitions;
    let mut by_leader: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
    for p in scan.table_partitions()? {
        by_leader
            .entry(partitions.get(p as usize)?.leader)
            .or_default()
            .push(p);
    }
    Some(by_leader)
}

/// `plan` (one scan leaf) reading only `partitions`, without fragments: the form in which it
/// runs whole on the node leading them.
fn restricted_to(
    plan: &Arc<dyn ExecutionPlan>,
    partitions: &[u32],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        return scan
            .only_partitions(partitions)
            .map(|s| Arc::new(s) as Arc<dyn ExecutionPlan>)
            .ok_or_else(|| DataFusionError::Internal("an index lookup cannot be split".into()));
    }
    if let Some(fragment) = plan.downcast_ref::<FragmentExec>() {
        return restricted_to(fragment.subtree(), partitions);
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| restricted_to(c, partitions))
        .collect::<DfResult<Vec<_>>>()?;
    plan.clone().replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// The row count a count batch carries.
fn row_count(batch: &RecordBatch) -> u64 {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .map(|c| c.iter().flatten().sum())
        .unwrap_or(0)
}

/// The statement's result: how many rows it wrote.
fn count_batch(count: u64) -> DfResult<RecordBatch> {
    RecordBatch::try_new(
        count_schema(),
        vec![Arc::new(UInt64Array::from(vec![count]))],
    )
    .map_err(DataFusionError::from)
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl TableWriteExec {
    /// (table id, kind, with RETURNING) of an UPDATE or DELETE that may run on another node
    /// as it is.
    pub fn shippable(&self) -> Option<(u32, WriteKind, bool)> {
        let plain = self.conflicts.is_none() && self.bulk.is_none();
        match self.kind {
            WriteKind::Update | WriteKind::Delete if plain => {
                Some((self.table.id(), self.kind, self.returning.is_some()))
            }
            _ => None,
        }
    }

    /// An UPDATE or DELETE that is not forwarded: the form in which one runs on the node
    /// that leads its rows.
    #[allow(clippy::too_many_arguments)]
    pub fn plain(
        input: Arc<dyn ExecutionPlan>,
        table: TableHandle,
        txn: Arc<Txn>,
        store: Store,
        row_ids: Arc<RowIdAllocator>,
        kind: WriteKind,
        local_node: NodeId,
        returning: Option<ReturningSink>,
    ) -> Self {
        Self::new(
            input, table, txn, store, row_ids, kind, returning, None, None, local_node, None,
        )
    }

    /// `forward`: in a cluster, how to reach the nodes that lead other partitions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        table: TableHandle,
        txn: Arc<Txn>,
        store: Store,
        row_ids: Arc<RowIdAllocator>,
        kind: WriteKind,
        returning: Option<ReturningSink>,
        conflicts: Option<ReturningSink>,
        bulk: Option<BulkSink>,
        local_node: NodeId,
        forward: Option<Forwarding>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        TableWriteExec {
            input,
            table,
            txn,
            store,
            row_ids,
            kind,
            returning,
            conflicts,
            bulk,
            local_node,
            forward,
            properties,
        }
    }
}

impl DisplayAs for TableWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "TableWriteExec: {:?} into {}.{}",
            self.kind, self.table.def.schema, self.table.def.name
        )
    }
}

impl ExecutionPlan for TableWriteExec {
    fn name(&self) -> &'static str {
        "TableWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("TableWriteExec needs an input".into()))?;
        Ok(Arc::new(TableWriteExec::new(
            input,
            self.table.clone(),
            self.txn.clone(),
            self.store.clone(),
            self.row_ids.clone(),
            self.kind,
            self.returning.clone(),
            self.conflicts.clone(),
            self.bulk.clone(),
            self.local_node,
            self.forward.clone(),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.clone();
        let target = WriteTarget {
            table: self.table.clone(),
            txn: self.txn.clone(),
            store: self.store.clone(),
            row_ids: self.row_ids.clone(),
            local_node: self.local_node,
        };
        let kind = self.kind;
        let returning = self.returning.clone();
        let conflicts = self.conflicts.clone();
        let bulk = self.bulk.clone();
        let forward = self.forward.clone();
        let fut = async move {
            if let (WriteKind::Update | WriteKind::Delete, Some(forward)) = (kind, &forward) {
                let keeps_rows_in_place =
                    matches!(kind, WriteKind::Delete) || keeps_partition_key(&input, &target.table);
                let by_leader = read_partitions_by_leader(&input)
                    .filter(|_| keeps_rows_in_place)
                    .filter(|b| b.keys().any(|node| *node != target.local_node));
                if let Some(by_leader) = by_leader {
                    let written = run_at_leaders(
                        &target, forward, &input, kind, by_leader, &returning, &context,
                    )
                    .await?;
                    return count_batch(written);
                }
                if !other_leaders(&target).is_empty() {
                    target.expect_parts(forward)?;
                    let rows = read_all(&input, &context).await?;
                    let delete = matches!(kind, WriteKind::Delete);
                    let written = target
                        .update_or_delete_by_key(forward, delete, rows, returning.is_some())
                        .await?;
                    if let Some(sink) = &returning {
                        sink.lock().extend(written.returned);
                    }
                    return count_batch(written.rows);
                }
            }
            // Read every input row before writing, so that an UPDATE never sees its own output.
            let mut batches = read_all(&input, &context).await?;
            let table = target.table.clone();
            let rows = batches
                .iter()
                .map(|b| visible_rows(&table, b).map_err(DataFusionError::from))
                .collect::<DfResult<Vec<_>>>()?;
            // Rows other nodes lead go to them, all at once; this node writes its own after.
            let (mut rows, mut sent) = (rows, 0);
            let mut returned_elsewhere = Vec::new();
            // RETURNING of an insert that writes every row or fails, whose rows went to
            // several nodes: every row as it is stored, in the statement's order.
            let mut returned_in_order = None;
            if let (WriteKind::Insert(action), Some(forward)) = (kind, &forward) {
                let writer = target.writer();
                if returning.is_some() && action == ConflictAction::Error {
                    let checked = rows
                        .iter()
                        .map(|r| writer.checked(r))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    returned_in_order = Some(checked);
                }
                let mut by_leader = rows_by_leader(&writer, rows)?;
                let mine = by_leader.remove(&target.local_node).unwrap_or_default();
                // Rows set aside for ON CONFLICT DO UPDATE are updated later in the statement:
                // their node must keep them in a part until then.
                let alone =
                    mine.is_empty() && by_leader.len() == 1 && action != ConflictAction::SetAside;
                let return_rows = returning.is_some() && returned_in_order.is_none();
                let mut sends = Vec::new();
                for (node, batches) in by_leader {
                    let part = forward.part_at(&target.txn, node, alone, &table)?;
                    sends.push(forward.remote.write_rows_at(
                        node,
                        &table,
                        RowsWrite::Insert(action),
                        batches,
                        part,
                        return_rows,
                    ));
                }
                for written in futures::future::join_all(sends).await {
                    let written = written?;
                    sent += written.rows;
                    returned_elsewhere.extend(written.returned);
                    if let Some(sink) = &conflicts {
                        sink.lock().extend(written.conflicting);
                    }
                }
                // Only this node's rows are left; UPDATE and DELETE inputs stay whole.
                rows = mine;
                batches = rows.clone();
            }
            let local_returning = returning.clone().filter(|_| returned_in_order.is_none());
            let count = tokio::task::spawn_blocking(move || -> Result<u64, ExecError> {
                let writer = target.writer();
                // The row key, for UPDATE and DELETE, follows the visible columns.
                let visible = target.table.schema.fields().len();
                let mut count = 0;
                for (batch, rows) in batches.iter().zip(rows) {
                    let written = match kind {
                        WriteKind::Insert(action) => writer.insert(&rows, action)?,
                        WriteKind::BulkInsert => writer.insert_bulk(&rows, bulk.as_ref())?,
                        WriteKind::Delete => {
                            let n = writer.delete(batch.column(visible).as_ref())?;
                            crate::WriteOutcome {
                                rows: n,
                                written: vec![rows],
                                conflicting: None,
                            }
                        }
                        WriteKind::Update => {
                            writer.update(batch.column(visible).as_ref(), &rows)?
                        }
                    };
                    count += written.rows;
                    if let (Some(sink), Some(c)) = (&conflicts, written.conflicting) {
                        sink.lock().push(c);
                    }
                    if let Some(sink) = &local_returning {
                        sink.lock().extend(written.written);
                    }
                }
                Ok(count)
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(ExecError::TaskFailed(e.to_string()))))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
            if let Some(sink) = &returning {
                let mut sink = sink.lock();
                sink.extend(returned_in_order.unwrap_or_default());
                sink.extend(returned_elsewhere);
            }
            count_batch(count + sent)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(fut),
        )))
    }
}

/// Every row of every output partition of `input`.
async fn read_all(
    input: &Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
) -> DfResult<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for p in 0..input.properties().partitioning.partition_count() {
        let mut stream = input.execute(p, context.clone())?;
        while let Some(b) = stream.next().await {
            batches.push(b?);
        }
    }
    Ok(batches)
}

/// Runs an UPDATE or DELETE whole on each node that leads some of the partitions it reads,
/// over those partitions, reading and writing in one transaction (part) there; returns how
/// many rows it changed, its RETURNING rows in `returning`.
async fn run_at_leaders(
    target: &WriteTarget,
    forward: &Forwarding,
    input: &Arc<dyn ExecutionPlan>,
    kind: WriteKind,
    by_leader: BTreeMap<NodeId, Vec<u32>>,
    returning: &Option<ReturningSink>,
    context: &Arc<TaskContext>,
) -> DfResult<u64> {
    let alone = by_leader.len() == 1;
    let mut runs = Vec::new();
    for (node, partitions) in by_leader {
        let statement: Arc<dyn ExecutionPlan> = Arc::new(TableWriteExec::plain(
            restricted_to(input, &partitions)?,
            target.table.clone(),
            target.txn.clone(),
            target.store.clone(),
            target.row_ids.clone(),
            kind,
            target.local_node,
            returning.clone(),
        ));
        if node == target.local_node {
            let context = context.clone();
            runs.push(
                async move {
                    let counts: Vec<RecordBatch> =
                        statement.execute(0, context)?.try_collect().await?;
                    Ok(Written {
                        rows: counts.iter().map(row_count).sum(),
                        ..Written::default()
                    })
                }
                .boxed(),
            );
        } else {
            let part = forward.part_at(&target.txn, node, alone, &target.table)?;
            let (remote, table) = (forward.remote.clone(), target.table.clone());
            let returning = returning.is_some();
            runs.push(
                async move {
                    remote
                        .write_at(node, &table, statement, part, returning)
                        .await
                }
                .boxed(),
            );
        }
    }
    let mut count = 0;
    for run in futures::future::join_all(runs).await {
        let written = run?;
        count += written.rows;
        if let Some(sink) = returning {
            sink.lock().extend(written.returned);
        }
    }
    Ok(count)
}
