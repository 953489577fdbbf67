//! Distributed planning: the last physical optimizer rule of a cluster node. It wraps every
//! scan that reads partitions led by other nodes in a [`FragmentExec`], then grows the fragment
//! upwards through every operator that works on each partition alone (filters, projections,
//! partial aggregates, per-partition sorts and top-N, local limits, DataFusion's cooperative
//! yielding wrapper), as GreptimeDB's MergeScan
//! and TiKV's coprocessor do: those run at the partition's leader and only their output
//! travels. A partitioned join of two tables partitioned alike joins their fragments into one,
//! which keeps growing above the join. The first operator that combines partitions (a merge,
//! a repartition, a final aggregate, another join) stays on this node, and EXPLAIN says so on
//! the fragment.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, Partitioning, ReplaceChildrenOptions,
};
use shoal_executor::{FragmentExec, PartitionScanExec, RemoteFragments};

#[derive(Debug)]
pub(crate) struct PushToLeaders {
    remote: Arc<RemoteFragments>,
}

impl PushToLeaders {
    pub fn new(remote: Arc<RemoteFragments>) -> Self {
        PushToLeaders { remote }
    }
}

/// Whether one of `plan`'s own expressions reads the result of a scalar subquery, which a
/// `ScalarSubqueryExec` above computes on this node: the leader could not read it.
fn reads_scalar_subquery(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply_expressions(&mut |expr| {
        expr.apply(|e| {
            found |= e.downcast_ref::<ScalarSubqueryExpr>().is_some();
            Ok(match found {
                true => TreeNodeRecursion::Stop,
                false => TreeNodeRecursion::Continue,
            })
        })
    });
    found
}

/// Why `plan` cannot run inside a fragment below it; `None` when it works per partition.
fn boundary(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    if reads_scalar_subquery(plan) {
        return Some("it reads a scalar subquery's result, computed here".into());
    }
    if plan.is::<FilterExec>()
        || plan.is::<ProjectionExec>()
        || plan.is::<LocalLimitExec>()
        || plan.is::<CooperativeExec>()
    {
        return None;
    }
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        return match agg.mode() {
            AggregateMode::Partial => None,
            _ => Some("the final aggregate merges the partial ones".into()),
        };
    }
    if let Some(sort) = plan.downcast_ref::<SortExec>() {
        return (!sort.preserve_partitioning()).then(|| "the sort spans all partitions".into());
    }
    Some(match (plan.name(), plan.children().len()) {
        ("RepartitionExec", _) => "rows are repartitioned across partitions here".into(),
        ("CoalescePartitionsExec" | "SortPreservingMergeExec", _) => {
            "the partitions are merged here".into()
        }
        (name, 0 | 1) => format!("{name} combines partitions"),
        (name, _) => format!("{name} combines several inputs"),
    })
}

/// Whether `plan` is a scan under operators that each work on one partition alone.
fn per_partition_chain(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.is::<PartitionScanExec>() {
        return true;
    }
    match plan.children()[..] {
        [child] => boundary(plan).is_none() && per_partition_chain(child),
        _ => false,
    }
}

fn replace_child(
    plan: Arc<dyn ExecutionPlan>,
    index: usize,
    child: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let mut children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    children[index] = child;
    plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

impl PushToLeaders {
    fn rewrite(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> DfResult<Transformed<Arc<dyn ExecutionPlan>>> {
        if plan.is::<PartitionScanExec>() {
            return Ok(
                match FragmentExec::try_new(plan.clone(), self.remote.clone())? {
                    Some(fragment) => Transformed::yes(Arc::new(fragment)),
                    None => Transformed::no(plan),
                },
            );
        }
        if let Some(swapped) = self.below_round_robin(&plan)? {
            return Ok(Transformed::yes(swapped));
        }
        let children = plan.children();
        if !children.iter().any(|c| c.is::<FragmentExec>()) {
            return Ok(Transformed::no(plan));
        }
        if let Some(joined) = self.co_partitioned_join(&plan)? {
            return Ok(Transformed::yes(joined));
        }
        let reason = match boundary(&plan) {
            None => {
                let grown = children[0]
                    .downcast_ref::<FragmentExec>()
                    .and_then(|f| f.absorb(plan.clone()));
                match grown {
                    Some(grown) => return Ok(Transformed::yes(Arc::new(grown))),
                    None => format!("{} cannot be shipped", plan.name()),
                }
            }
            Some(reason) => reason,
        };
        let mut marked = plan.clone();
        for (index, child) in children.iter().enumerate() {
            let Some(fragment) = child.downcast_ref::<FragmentExec>() else {
                continue;
            };
            marked = replace_child(marked, index, Arc::new(fragment.bounded(reason.clone())))?;
        }
        Ok(Transformed::yes(marked))
    }
}

impl PushToLeaders {
    /// `plan` over a round-robin repartition of a fragment, with `plan` moved into the
    /// fragment, when `plan` filters, projects or partially aggregates each partition alone:
    /// DataFusion spreads a table with fewer partitions than its target over more streams, and
    /// doing that before a filter ships every row. Sorts stay above (a round-robin would mix
    /// the sorted runs).
    fn below_round_robin(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let movable = plan.is::<FilterExec>()
            || plan.is::<ProjectionExec>()
            || plan.is::<CooperativeExec>()
            || plan
                .downcast_ref::<AggregateExec>()
                .is_some_and(|a| *a.mode() == AggregateMode::Partial);
        let [child] = plan.children()[..] else {
            return Ok(None);
        };
        let round_robin = child
            .downcast_ref::<RepartitionExec>()
            .filter(|r| matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)));
        let (Some(repartition), true) = (round_robin, movable) else {
            return Ok(None);
        };
        let Some(fragment) = repartition.input().downcast_ref::<FragmentExec>() else {
            return Ok(None);
        };
        let Some(grown) = fragment.absorb(plan.clone()) else {
            return Ok(None);
        };
        let reason = boundary(child).unwrap_or_default();
        let grown: Arc<dyn ExecutionPlan> = Arc::new(grown.bounded(reason));
        Ok(Some(replace_child(child.clone(), 0, grown)?))
    }
}

impl PushToLeaders {
    /// A partitioned hash join over fragments reading partitions of the same index (tables
    /// partitioned alike, see `co_partitioned_joins.rs`) as one fragment: the join runs where
    /// both partitions are.
    fn co_partitioned_join(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let partitioned = plan
            .downcast_ref::<HashJoinExec>()
            .is_some_and(|j| *j.partition_mode() == PartitionMode::Partitioned);
        if !partitioned {
            return Ok(None);
        }
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for child in plan.children() {
            match child.downcast_ref::<FragmentExec>() {
                Some(f) => inputs.push(f.subtree().clone()),
                // A side whose partitions are all here joins the fragment as it is, if it
                // works per partition all the way down to its scan.
                None if per_partition_chain(child) => inputs.push(child.clone()),
                None => return Ok(None),
            }
        }
        let joined = plan.clone().replace_children(
            inputs,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?;
        // Tables that are not partitioned alike cannot travel as one: the join stays here.
        Ok(FragmentExec::try_new(joined, self.remote.clone())
            .ok()
            .flatten()
            .map(|f| Arc::new(f) as Arc<dyn ExecutionPlan>))
    }
}

impl PhysicalOptimizerRule for PushToLeaders {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| self.rewrite(node)).map(|t| t.data)
    }

    fn name(&self) -> &str {
        "push_to_leaders"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
