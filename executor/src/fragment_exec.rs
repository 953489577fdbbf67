//! `FragmentExec`: the part of a plan that runs next to a table's partitions, wherever their
//! leaders are. Its subtree has one leaf, a [`PartitionScanExec`], and only operators that keep
//! the scan's partitions apart (filters, projections, partial aggregates, per-partition sorts
//! and limits); so output partition `i` of the subtree depends on table partition `i` alone.
//! For each output partition it runs the subtree here when this node leads the partition, and
//! otherwise sends it to the leader ([`RemoteFragments::fetch`]) and streams back what the
//! leader computed: partial results, not rows.
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
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;

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
    table_id: u32,
    table_name: String,
    /// The table partition each output partition of `subtree` reads (None: it reads nothing).
    partitions: Vec<Option<u32>>,
    /// `subtree` in the form it travels in.
    encoded: Arc<Vec<u8>>,
    remote: Arc<RemoteFragments>,
    /// The reading transaction: a leader that holds a part of it reads through that part.
    txn_id: u64,
    /// The operator above the fragment that could not join it, and why (for EXPLAIN).
    boundary: Option<String>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for FragmentExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FragmentExec")
            .field("table", &self.table_name)
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

impl FragmentExec {
    /// Wraps `subtree` if some partition it reads is led by another node. `Ok(None)`: every
    /// partition is local (nothing to ship). An error: the subtree cannot travel.
    pub fn try_new(
        subtree: Arc<dyn ExecutionPlan>,
        remote: Arc<RemoteFragments>,
    ) -> DfResult<Option<FragmentExec>> {
        let scan = scan_leaf(&subtree).ok_or_else(|| {
            DataFusionError::Internal("a fragment needs one partition scan as its leaf".into())
        })?;
        let table = scan.table();
        let Some(read) = scan.table_partitions() else {
            return Err(DataFusionError::NotImplemented(
                "index lookups over partitions led by several nodes".into(),
            ));
        };
        let local = remote.local_node();
        if read
            .iter()
            .all(|p| table.def.partitions.get(*p as usize).map(|d| d.leader) == Some(local))
        {
            return Ok(None);
        }
        let outputs = subtree.properties().partitioning.partition_count();
        let partitions = (0..outputs).map(|i| read.get(i).copied()).collect();
        let encoded = Arc::new(FragmentCodec::encode(subtree.clone())?);
        let txn_id = scan.txn().id();
        Ok(Some(FragmentExec {
            table_id: table.id(),
            table_name: table.qualified_name(),
            subtree,
            partitions,
            encoded,
            remote,
            txn_id,
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
            table_id: self.table_id,
            table_name: self.table_name.clone(),
            partitions: self.partitions.clone(),
            encoded: self.encoded.clone(),
            remote: self.remote.clone(),
            txn_id: self.txn_id,
            boundary: Some(reason),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// (partition, leader) of every partition read, in the catalog's current state.
    fn placement(&self) -> Vec<(u32, Option<u64>)> {
        self.partitions
            .iter()
            .flatten()
            .map(|p| (*p, self.remote.leader_of(self.table_id, *p).map(|(l, _)| l)))
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
                None => format!("{p}@?"),
            })
            .collect();
        write!(
            f,
            "FragmentExec: table={}, local=[{}] remote=[{}]",
            self.table_name,
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
        let leader = self.remote.leader_of(self.table_id, table_partition);
        if leader.map(|(l, _)| l) == Some(self.remote.local_node()) {
            // Led here: the subtree runs here, on this node's device where it pays.
            return crate::OffloadToDevice::rewrite_plan(self.subtree.clone(), gpu_mode)?
                .execute(partition, context);
        }
        let request = FragmentRequest {
            table_id: self.table_id,
            table_name: self.table_name.clone(),
            partition: table_partition,
            output_partition: partition,
            plan: self.encoded.clone(),
            gpu_mode,
            txn_id: self.txn_id,
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
