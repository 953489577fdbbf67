//! Integer arithmetic that fails on overflow, as PostgreSQL's does.
//!
//! DataFusion's `+`, `-` and `*` wrap around by default: `9223372036854775807 + 1` would
//! answer `-9223372036854775808` where PostgreSQL fails with 22003 (`bigint out of range`).
//! [`CheckedArithmetic`] turns on the checked kernels of every arithmetic expression of the
//! plan's projections, filters and aggregate arguments, where SQL arithmetic is evaluated. The flag does not travel
//! in datafusion-proto, so a partition leader applies [`CheckedArithmetic::rewrite_plan`] again
//! to a fragment it decodes.
//!
//! Not covered: arithmetic in join conditions, GROUP BY keys and sort keys (DataFusion mostly
//! computes those in a projection below), unary minus, and aggregates that overflow their own
//! result type (`sum` of bigint).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::ExecutionPlan;

/// The physical optimizer rule (see the module comment).
#[derive(Debug, Default)]
pub struct CheckedArithmetic;

impl CheckedArithmetic {
    /// `plan` with checked `+`, `-` and `*` in its projections, filters and aggregate
    /// arguments.
    pub fn rewrite_plan(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                let mut changed = false;
                let mut exprs = Vec::with_capacity(projection.expr().len());
                for e in projection.expr() {
                    let checked = checked(e.expr.clone())?;
                    changed |= checked.transformed;
                    exprs.push(ProjectionExpr {
                        expr: checked.data,
                        alias: e.alias.clone(),
                    });
                }
                if !changed {
                    return Ok(Transformed::no(node));
                }
                let rebuilt = ProjectionExec::try_new_with_schema_metadata(
                    exprs,
                    projection.input().clone(),
                    &projection.schema(),
                )?;
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let predicate = checked(filter.predicate().clone())?;
                if !predicate.transformed {
                    return Ok(Transformed::no(node));
                }
                let rebuilt = FilterExecBuilder::from(filter)
                    .with_predicate(predicate.data)
                    .build()?;
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
            if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
                return checked_aggregate(aggregate)
                    .map(|a| a.map_or(Transformed::no(node.clone()), Transformed::yes));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }
}

/// `aggregate` with checked arithmetic in its functions' arguments, when it reads input rows
/// (a final aggregate's arguments are partial states) and has arithmetic there.
fn checked_aggregate(aggregate: &AggregateExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if matches!(
        aggregate.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned
    ) {
        return Ok(None);
    }
    let mut changed = false;
    let mut functions = Vec::with_capacity(aggregate.aggr_expr().len());
    for function in aggregate.aggr_expr() {
        let mut args = Vec::new();
        for arg in function.expressions() {
            let checked = checked(arg)?;
            changed |= checked.transformed;
            args.push(checked.data);
        }
        let order_by = function
            .order_bys()
            .iter()
            .map(|s| s.expr.clone())
            .collect();
        match function.with_new_expressions(args, order_by) {
            Some(rebuilt) => functions.push(Arc::new(rebuilt)),
            None => return Ok(None),
        }
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(Arc::new(aggregate.with_new_aggr_exprs(functions))))
}

/// `expr` with every unchecked `+`, `-` and `*` made checked.
fn checked(expr: Arc<dyn PhysicalExpr>) -> DfResult<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.transform_up(|e| {
        let Some(binary) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        let arithmetic = matches!(
            binary.op(),
            Operator::Plus | Operator::Minus | Operator::Multiply
        );
        // BinaryExpr does not say whether it is already checked: making it checked again
        // is harmless.
        if !arithmetic {
            return Ok(Transformed::no(e));
        }
        let checked = BinaryExpr::new(binary.left().clone(), *binary.op(), binary.right().clone())
            .with_fail_on_overflow(true);
        Ok(Transformed::yes(Arc::new(checked) as Arc<dyn PhysicalExpr>))
    })
}

impl PhysicalOptimizerRule for CheckedArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Self::rewrite_plan(plan)
    }

    fn name(&self) -> &str {
        "checked_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
