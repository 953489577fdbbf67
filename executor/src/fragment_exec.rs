//! `FragmentExec`: the part of a plan that runs next to a table's partitions, wherever their
//! leaders are. Its subtree has one leaf, a [`PartitionScanExec`], and only operators that keep
//! the scan's partitions apart (filters, projections, partial aggregates, per-partition sorts
//! and limits); so output partition `i` of the subtree depends on table partition `i` alone.
//! Or its subtree is a partitioned hash join of two such subtrees reading partitions of the
//! same index (tables partitioned alike, see the planner's `co_partitioned_joins.rs`), with
//! such operators above it: then output partition `i` depends on partition `i` of each table.
//! For each output partition it runs the subtree here when this node leads the partition(s),
//! and otherwise sends it to the leader ([`RemoteFragments::fetch`]) and streams back what the
//! leader computed: partial results, not rows. When the partitions `i` of a join's tables are
//! led by different nodes (a co-location group in the middle of a move), partition `i` runs
//! here, over one fragment per table.
//!
//! Where each partition runs is decided when it executes, from the catalog of that moment, so
//! a cached plan follows leadership changes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use shoal_coord::NodeId;
use shoal_storage::Txn;

use crate::flight::{FragmentRequest, RemoteFragments};
use crate::fragment_codec::FragmentCodec;
use crate::PartitionScanExec;

/// The kind of statement (`select`, `update`, ...) a plan runs for, set by the server in the
/// session config, so that shipped bytes are counted per kind.
#[derive(Debug, Clone, Copy)]
pub struct StatementKind(pub &'static str);

/// (bytes, batches) received from other nodes' fragments, by statement kind.
static SHIPPED: Mutex<BTreeMap<&'static str, (u64, u64)>> = Mutex::new(BTreeMap::new());

/// Bytes (Arrow buffer sizes) and batches this node has received from other nodes' fragments,
/// by statement kind.
pub fn shipped_totals() -> Vec<(&'static str, u64, u64)> {
    SHIPPED
        .lock()
        .iter()
        .map(|(kind, (bytes, batches))| (*kind, *bytes, *batches))
        .collect()
}

pub struct FragmentExec {
    subtree: Arc<dyn ExecutionPlan>,
    /// The tables read, by id and qualified name: one, or the two sides of a join.
    tables: Vec<(u32, String)>,
    /// The table partition each output partition of `subtree` reads, in every table (None:
    /// it reads nothing).
    partitions: Vec<Option<u32>>,
    /// For a join: `subtree` with one fragment per table under the join, run here for a
    /// partition whose tables are led by different nodes.
    split: Option<Arc<dyn ExecutionPlan>>,
    /// `subtree` in the form it travels in.
    encoded: Arc<Vec<u8>>,
    remote: Arc<RemoteFragments>,
    /// The reading transaction: a leader that holds a part of it reads through that part.
    txn: Arc<Txn>,
    /// The operator above the fragment that could not join it, and why (for EXPLAIN).
    boundary: Option<String>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for FragmentExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FragmentExec")
            .field("tables", &self.tables)
            .field("partitions", &self.partitions)
            .finish()
    }
}

/// The one PartitionScanExec leaf of a subtree, if it has exactly one leaf and that is it.
pub(crate) fn scan_leaf(plan: &Arc<dyn ExecutionPlan>) -> Option<&PartitionScanExec> {
    match plan.children().as_slice() {
        [] => plan.downcast_ref::<PartitionScanExec>(),
        [only] => scan_leaf(only),
        _ => None,
    }
}

/// The scans at the leaves of a fragment's subtree and the table partition each of its output
/// partitions reads in all of them; `None` when it cannot be a fragment (see the module).
fn leaves(plan: &Arc<dyn ExecutionPlan>) -> Option<(Vec<&PartitionScanExec>, Vec<u32>)> {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        return Some((vec![scan], scan.table_partitions()?));
    }
    // Operators that move rows between partitions never travel (nor do fragments nest).
    if plan.is::<FragmentExec>()
        || plan.is::<RepartitionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
    {
        return None;
    }
    match plan.children().as_slice() {
        [only] => leaves(only),
        [left, right] => {
            let join = plan.downcast_ref::<HashJoinExec>()?;
            if *join.partition_mode() != PartitionMode::Partitioned {
                return None;
            }
            let (mut scans, read) = leaves(left)?;
            let (right_scans, right_read) = leaves(right)?;
            if read != right_read {
                return None;
            }
            scans.extend(right_scans);
            Some((scans, read))
        }
        _ => None,
    }
}

/// `plan` with each single-table subtree below its joins wrapped in a fragment of its own.
fn split_by_table(
    plan: Arc<dyn ExecutionPlan>,
    remote: &Arc<RemoteFragments>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if scan_leaf(&plan).is_some() {
        return Ok(match FragmentExec::try_new(plan.clone(), remote.clone())? {
            Some(fragment) => Arc::new(fragment),
            None => plan,
        });
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| split_by_table(c.clone(), remote))
        .collect::<DfResult<Vec<_>>>()?;
    plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

impl FragmentExec {
    /// Wraps `subtree` if some partition it reads is led by another node. `Ok(None)`: every
    /// partition is local (nothing to ship). An error: the subtree cannot travel.
    pub fn try_new(
        subtree: Arc<dyn ExecutionPlan>,
        remote: Arc<RemoteFragments>,
    ) -> DfResult<Option<FragmentExec>> {
        if let Some(scan) = scan_leaf(&subtree) {
            if scan.table_partitions().is_none() {
                // An index lookup reads every partition here: fine while this node leads
                // them all (the planner looks up an index only then).
                let local = remote.local_node();
                if scan
                    .table()
                    .def
                    .partitions
                    .iter()
                    .all(|p| p.leader == local)
                {
                    return Ok(None);
                }
                return Err(DataFusionError::NotImplemented(
                    "index lookups over partitions led by several nodes".into(),
                ));
            }
        }
        let (scans, read) = leaves(&subtree).ok_or_else(|| {
            DataFusionError::Internal(
                "a fragment needs one partition scan, or a co-partitioned join, below it".into(),
            )
        })?;
        let local = remote.local_node();
        let led_here = |scan: &PartitionScanExec, p: u32| {
            scan.table()
                .def
                .partitions
                .get(p as usize)
                .map(|d| d.leader)
                == Some(local)
        };
        if scans.iter().all(|s| read.iter().all(|p| led_here(s, *p))) {
            return Ok(None);
        }
        let outputs = subtree.properties().partitioning.partition_count();
        let partitions = (0..outputs).map(|i| read.get(i).copied()).collect();
        let encoded = Arc::new(FragmentCodec::encode(subtree.clone())?);
        let txn = scans[0].txn().clone();
        let tables = scans
            .iter()
            .map(|s| (s.table().id(), s.table().qualified_name()))
            .collect();
        let split = match scans.len() {
            1 => None,
            _ => Some(split_by_table(subtree.clone(), &remote)?),
        };
        Ok(Some(FragmentExec {
            tables,
            subtree,
            partitions,
            split,
            encoded,
            remote,
            txn,
            boundary: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    pub fn subtree(&self) -> &Arc<dyn ExecutionPlan> {
        &self.subtree
    }

    /// The same fragment grown by `parent` (whose child was this fragment's subtree), if the
    /// result can still travel; `None` otherwise.
    pub fn absorb(&self, parent: Arc<dyn ExecutionPlan>) -> Option<FragmentExec> {
        let grown = parent
            .replace_children(
                vec![self.subtree.clone()],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )
            .ok()?;
        FragmentExec::try_new(grown, self.remote.clone())
            .ok()
            .flatten()
    }

    /// Records why the operator above does not run in the fragment.
    pub fn with_boundary(mut self, reason: String) -> Self {
        self.boundary = Some(reason);
        self
    }

    /// This fragment, recording why the operator above does not run in it (the subtree and
    /// its encoding are shared, not built again).
    pub fn bounded(&self, reason: String) -> FragmentExec {
        FragmentExec {
            subtree: self.subtree.clone(),
            tables: self.tables.clone(),
            partitions: self.partitions.clone(),
            split: self.split.clone(),
            encoded: self.encoded.clone(),
            remote: self.remote.clone(),
            txn: self.txn.clone(),
            boundary: Some(reason),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The node leading table partition `partition` of every table read, in the catalog's
    /// current state; `None` when it is unknown or the tables' partitions are led apart.
    fn leader_of(&self, partition: u32) -> Option<NodeId> {
        let mut leaders = self
            .tables
            .iter()
            .map(|(table, _)| self.remote.leader_of(*table, partition).map(|(l, _)| l));
        let first = leaders.next()??;
        leaders.all(|l| l == Some(first)).then_some(first)
    }

    /// (partition, leader) of every partition read, in the catalog's current state.
    fn placement(&self) -> Vec<(u32, Option<NodeId>)> {
        self.partitions
            .iter()
            .flatten()
            .map(|p| (*p, self.leader_of(*p)))
            .collect()
    }
}

impl DisplayAs for FragmentExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let local = self.remote.local_node();
        let (here, there): (Vec<_>, Vec<_>) = self
            .placement()
            .into_iter()
            .partition(|(_, leader)| *leader == Some(local));
        let here: Vec<String> = here.iter().map(|(p, _)| p.to_string()).collect();
        let there: Vec<String> = there
            .iter()
            .map(|(p, l)| match l {
                Some(l) => format!("{p}@node{l}"),
                None if self.split.is_some() => format!("{p}@split"),
                None => format!("{p}@?"),
            })
            .collect();
        let names: Vec<&str> = self.tables.iter().map(|(_, n)| n.as_str()).collect();
        write!(
            f,
            "FragmentExec: {}={}, local=[{}] remote=[{}]",
            if names.len() == 1 { "table" } else { "tables" },
            names.join(" ⋈ "),
            here.join(", "),
            there.join(", ")
        )?;
        if let Some(b) = &self.boundary {
            write!(f, ", not pushed: {b}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for FragmentExec {
    fn name(&self) -> &'static str {
        "FragmentExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.subtree.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.subtree]
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
        let Some(subtree) = children.into_iter().next() else {
            return Err(DataFusionError::Internal(
                "FragmentExec needs one child".into(),
            ));
        };
        match FragmentExec::try_new(subtree.clone(), self.remote.clone())? {
            Some(f) => Ok(Arc::new(match &self.boundary {
                Some(b) => f.with_boundary(b.clone()),
                None => f,
            })),
            None => Ok(subtree),
        }
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let Some(Some(table_partition)) = self.partitions.get(partition).copied() else {
            return self.subtree.execute(partition, context);
        };
        let gpu_mode = context
            .session_config()
            .options()
            .extensions
            .get::<crate::GpuOptions>()
            .and_then(|o| crate::GpuMode::parse(&o.mode))
            .unwrap_or(crate::GpuMode::Auto);
        let leader = self.leader_of(table_partition);
        if let (None, Some(split)) = (leader, &self.split) {
            // The tables' partitions are led apart: each travels alone and they join here.
            return split.execute(partition, context);
        }
        if leader == Some(self.remote.local_node()) {
            // Led here: the subtree runs here, on this node's device where it pays.
            return crate::OffloadToDevice::rewrite_plan(self.subtree.clone(), gpu_mode)?
                .execute(partition, context);
        }
        let request = FragmentRequest {
            tables: self.tables.clone(),
            partition: table_partition,
            output_partition: partition,
            plan: self.encoded.clone(),
            gpu_mode,
            txn_id: self.txn.id(),
            statement: self.txn.statement(),
        };
        let rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let bytes = MetricBuilder::new(&self.metrics).counter("bytes_shipped", partition);
        let batches = MetricBuilder::new(&self.metrics).counter("batches_shipped", partition);
        // From the request to the leader's last batch: the fragment's time as this node saw it.
        let remote_time = MetricBuilder::new(&self.metrics).subset_time("remote_time", partition);
        let kind = context
            .session_config()
            .get_extension::<StatementKind>()
            .map(|k| k.0)
            .unwrap_or("other");
        let started = std::time::Instant::now();
        let finished = futures::stream::once(async move {
            remote_time.add_duration(started.elapsed());
            None
        })
        .filter_map(futures::future::ready);
        let fetched = futures::stream::once(self.remote.clone().fetch(request))
            .try_flatten()
            .chain(finished)
            .inspect_ok(move |batch| {
                let size = batch.get_array_memory_size();
                rows.add(batch.num_rows());
                bytes.add(size);
                batches.add(1);
                let mut shipped = SHIPPED.lock();
                let totals = shipped.entry(kind).or_default();
                totals.0 += size as u64;
                totals.1 += 1;
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.subtree.schema(),
            fetched.boxed(),
        )))
    }
}
