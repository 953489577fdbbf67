//! Co-partitioned joins: a hash join of two tables partitioned on the join key, with the same
//! partition count, needs no shuffle. Row `r` of either table lives in partition
//! `hash(partition key of r) % n`, with one hash for every table, so rows that join are in
//! partitions of the same index; joining partition `i` of one table with partition `i` of the
//! other gives every match. This physical optimizer rule finds such joins in the plans
//! DataFusion made (which hash-repartition both inputs, or collect the smaller one) and takes
//! the shuffles out, leaving a partitioned hash join over the two scans. In a cluster, the
//! placement keeps partition `i` of such tables on one node (see `shoal_coord::rebalance`),
//! so `PushToLeaders` ships the whole join there.
//!
//! DataFusion believes the join's inputs are partitioned by its own hash. That belief is only
//! relied on by an operator above that pairs the join's output partitions with partitions of
//! another input (another partitioned join, an interleave); such joins are left alone.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::InvariantLevel;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, PhysicalExpr, ReplaceChildrenOptions,
};
use shoal_executor::PartitionScanExec;

#[derive(Debug)]
pub(crate) struct CoPartitionedJoins {
    /// In a cluster the rule applies to every table; alone, only where a table has at least
    /// as many partitions as DataFusion's target (fewer would cost parallelism).
    cluster: bool,
}

impl CoPartitionedJoins {
    pub fn new(cluster: bool) -> Self {
        CoPartitionedJoins { cluster }
    }
}

fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// One input of a join with its shuffles taken out: the plan, and the scan at its leaf.
struct Unshuffled {
    plan: Arc<dyn ExecutionPlan>,
    scan: Arc<dyn ExecutionPlan>,
}

impl Unshuffled {
    fn scan(&self) -> &PartitionScanExec {
        self.scan
            .downcast_ref::<PartitionScanExec>()
            .expect("the leaf of an unshuffled input is a scan")
    }
}

/// `plan` without its repartitions and partition merges, when what remains between them and
/// a scan of whole partitions works on each partition alone (filters, projections).
fn unshuffle(plan: &Arc<dyn ExecutionPlan>) -> Option<Unshuffled> {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        scan.whole_partitions()?;
        return Some(Unshuffled {
            plan: plan.clone(),
            scan: plan.clone(),
        });
    }
    if let Some(r) = plan.downcast_ref::<RepartitionExec>() {
        return unshuffle(r.input());
    }
    if let Some(c) = plan.downcast_ref::<CoalescePartitionsExec>() {
        return unshuffle(c.input());
    }
    let per_partition = plan.is::<FilterExec>()
        || plan.is::<ProjectionExec>()
        || plan.is::<CooperativeExec>()
        || plan.name() == "CoalesceBatchesExec";
    let [child] = plan.children()[..] else {
        return None;
    };
    if !per_partition {
        return None;
    }
    let inner = unshuffle(child)?;
    let plan = plan
        .clone()
        .replace_children(vec![inner.plan], recompute())
        .ok()?;
    Some(Unshuffled {
        plan,
        scan: inner.scan,
    })
}

/// The scan output column that output column `index` of `plan` (a chain down to a scan)
/// passes through unchanged, if it does.
fn scan_column(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<usize> {
    if plan.is::<PartitionScanExec>() {
        return Some(index);
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let column = p.expr().get(index)?.expr.downcast_ref::<Column>()?.index();
        return scan_column(p.input(), column);
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let index = match f.projection() {
            Some(projection) => *projection.get(index)?,
            None => index,
        };
        return scan_column(f.input(), index);
    }
    let [child] = plan.children()[..] else {
        return None;
    };
    scan_column(child, index)
}

/// `plan` (a chain down to a scan) with its scan declaring itself partitioned on the scan
/// output `columns`, and the operators above it recomputing their properties from that.
fn declare_key_partitioning(
    plan: &Arc<dyn ExecutionPlan>,
    columns: &[usize],
) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        let declared = scan.with_key_partitioning(columns.to_vec());
        return Some(Arc::new(declared));
    }
    let [child] = plan.children()[..] else {
        return None;
    };
    let child = declare_key_partitioning(child, columns)?;
    plan.clone().replace_children(vec![child], recompute()).ok()
}

fn key_column(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    expr.downcast_ref::<Column>().map(|c| c.index())
}

/// Types whose equal values always have equal key encodings (floats do not: 0 and -0).
fn hashes_by_value(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Date32
            | DataType::Decimal128(..)
            | DataType::Timestamp(..)
            | DataType::Binary
            | DataType::FixedSizeBinary(_)
    )
}

impl CoPartitionedJoins {
    /// The join without shuffles, when its inputs are tables partitioned alike on its key.
    fn unshuffled_join(
        &self,
        join: &HashJoinExec,
        config: &ConfigOptions,
    ) -> Option<Arc<dyn ExecutionPlan>> {
        if join.null_aware || join.on().is_empty() {
            return None;
        }
        if !matches!(
            join.partition_mode(),
            PartitionMode::Partitioned | PartitionMode::CollectLeft
        ) {
            return None;
        }
        let left = unshuffle(join.left())?;
        let right = unshuffle(join.right())?;
        let (l, r) = (left.scan(), right.scan());
        let count = l.table().partition_count();
        let all: Vec<u32> = (0..count).collect();
        if r.table().partition_count() != count
            || l.whole_partitions()? != all.as_slice()
            || r.whole_partitions()? != all.as_slice()
            || (!self.cluster && (count as usize) < config.execution.target_partitions)
        {
            return None;
        }
        // Each partition key column of the left table must be joined with the one at the
        // same place in the right table's partition key; other join keys do no harm (rows
        // equal on all of them are equal on the partition key, so in one partition).
        let (l_key, r_key) = (
            l.table().partition_key_columns(),
            r.table().partition_key_columns(),
        );
        if l_key.is_empty() || l_key.len() != r_key.len() {
            return None;
        }
        let mut l_scan_columns = Vec::new();
        let mut r_scan_columns = Vec::new();
        let mut pairs = Vec::new();
        for (a, b) in join.on() {
            let (a, b) = (
                scan_column(&left.plan, key_column(a)?)?,
                scan_column(&right.plan, key_column(b)?)?,
            );
            l_scan_columns.push(a);
            r_scan_columns.push(b);
            pairs.push((l.projected_column(a)?, r.projected_column(b)?));
        }
        let aligned = l_key.iter().zip(&r_key).all(|(lc, rc)| {
            let (lt, rt) = (
                l.table().schema.field(*lc).data_type(),
                r.table().schema.field(*rc).data_type(),
            );
            lt == rt && hashes_by_value(lt) && pairs.contains(&(*lc, *rc))
        });
        if !aligned {
            return None;
        }
        let left_plan = declare_key_partitioning(&left.plan, &l_scan_columns)?;
        let right_plan = declare_key_partitioning(&right.plan, &r_scan_columns)?;
        // Matching the two `i`th partitions works for every join type: a row without a
        // match in its partition has none anywhere.
        let joined = join
            .builder()
            .with_partition_mode(PartitionMode::Partitioned)
            .with_new_children(vec![left_plan, right_plan])
            .ok()?
            .reset_state()
            .recompute_properties()
            .build_exec()
            .ok()?;
        // DataFusion checks the inputs' declared partitioning again when the join runs.
        joined
            .check_invariants(InvariantLevel::Executable)
            .is_ok()
            .then_some(joined)
    }

    /// Rewrites `plan`; `paired`: an operator above pairs output partitions of this subtree
    /// with those of another input, so the subtree's partitioning must stay as planned.
    fn rewrite(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        paired: bool,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !paired {
            if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
                if let Some(unshuffled) = self.unshuffled_join(join, config) {
                    return Ok(unshuffled);
                }
            }
        }
        let children = plan.children();
        if children.is_empty() {
            return Ok(plan);
        }
        let merges = plan.is::<RepartitionExec>()
            || plan.is::<CoalescePartitionsExec>()
            || plan.is::<SortPreservingMergeExec>();
        let pairs_inputs = children.len() > 1 && !pairs_nothing(&plan);
        let child_paired = !merges && (paired || pairs_inputs);
        let mut changed = false;
        let mut new_children = Vec::with_capacity(children.len());
        for child in children {
            let new = self.rewrite(child.clone(), child_paired, config)?;
            changed |= !Arc::ptr_eq(&new, child);
            new_children.push(new);
        }
        if changed {
            plan.replace_children(new_children, recompute())
        } else {
            Ok(plan)
        }
    }
}

/// Whether a multi-input operator leaves its inputs' partitions unpaired: a join that
/// collects its build side into one table, or a union that appends partitions.
fn pairs_nothing(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return *join.partition_mode() == PartitionMode::CollectLeft;
    }
    matches!(
        plan.name(),
        "UnionExec" | "CrossJoinExec" | "NestedLoopJoinExec"
    )
}

impl PhysicalOptimizerRule for CoPartitionedJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.rewrite(plan, false, config)
    }

    fn name(&self) -> &str {
        "co_partitioned_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
