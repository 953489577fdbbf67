//! The physical optimizer rule that moves a partition's filter, projection and partial
//! aggregate onto the GPU: `ProjectionExec` over `FilterExec` becomes one
//! [`GpuFilterProjectExec`], a lone filter or projection too, and a partial `AggregateExec`
//! becomes a [`GpuPartialAggregateExec`] feeding DataFusion's final aggregate unchanged.
//!
//! It runs last, after the cluster's push-down: it leaves the subtrees of `FragmentExec`s alone
//! (a fragment's leader runs this rule on the fragment it receives, for its own device), so only
//! operators that run on this node are replaced.
//!
//! `SET shoal.gpu` decides: `off` leaves the plan alone; `auto` (the default) replaces operators
//! only when the node has a GPU, and each chunk then runs where the cost model says it is
//! faster; `on` sends every chunk to the device, or to the CPU reference of the device
//! operators when the node has none (so the path is testable anywhere). An operator with
//! something the device cannot compute stays as it is, under a pass-through
//! [`GpuNotUsedExec`] whose EXPLAIN line says why.

use std::sync::{Arc, OnceLock};

use datafusion::common::extensions_options;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::{ConfigExtension, ConfigOptions};
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use shoal_gpu::{CpuReference, CudaBackend, FilterProject, GpuType, Projection, TopN};

use crate::device_exec::{
    GpuFilterProjectExec, GpuNotUsedExec, GpuPartialAggregateExec, GpuTopNExec, OutputColumn,
    Placement,
};
use crate::device_translate::{translate_expr, translate_partial_aggregate};
use crate::FragmentExec;

extensions_options! {
    /// The session's `shoal.gpu` setting, as the optimizer rule reads it.
    pub struct GpuOptions {
        /// `auto`, `on` or `off`.
        pub mode: String, default = "auto".to_string()
    }
}

impl ConfigExtension for GpuOptions {
    const PREFIX: &'static str = "shoal_gpu";
}

impl GpuOptions {
    pub fn with_mode(mode: GpuMode) -> Self {
        GpuOptions {
            mode: mode.as_str().to_string(),
        }
    }
}

/// `SET shoal.gpu = auto | on | off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMode {
    Auto,
    On,
    Off,
}

impl GpuMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(GpuMode::Auto),
            "on" | "true" | "1" => Some(GpuMode::On),
            "off" | "false" | "0" => Some(GpuMode::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GpuMode::Auto => "auto",
            GpuMode::On => "on",
            GpuMode::Off => "off",
        }
    }
}

/// The node's device backend, opened once; the error is why there is none.
fn cuda() -> Result<Arc<CudaBackend>, String> {
    static BACKEND: OnceLock<Result<Arc<CudaBackend>, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| CudaBackend::open().map(Arc::new).map_err(|e| e.to_string()))
        .clone()
}

/// Where device operators run under `mode`, or None to leave the plan alone.
pub fn placement_for(mode: GpuMode) -> Option<Placement> {
    if mode == GpuMode::Off {
        return None;
    }
    match cuda() {
        Ok(backend) => {
            let device = shoal_gpu::probe().describe();
            Some(Placement {
                backend,
                forced: mode == GpuMode::On,
                device,
            })
        }
        Err(reason) if mode == GpuMode::On => Some(Placement {
            backend: Arc::new(CpuReference),
            forced: true,
            device: reason,
        }),
        Err(_) => None,
    }
}

#[derive(Debug, Default)]
pub struct OffloadToDevice;

impl OffloadToDevice {
    /// Rewrites `plan` for `mode`; also what a fragment's leader runs on the fragment.
    pub fn rewrite_plan(
        plan: Arc<dyn ExecutionPlan>,
        mode: GpuMode,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(placement) = placement_for(mode) else {
            return Ok(plan);
        };
        place(plan, &placement)
    }
}

/// Replaces what can run on the device, from the top down (so that a projection meets the
/// filter below it before the filter could be replaced alone), and puts a [`GpuNotUsedExec`]
/// with the reason above each candidate that stays on the CPU. Fragments are left to the node
/// that runs them.
fn place(plan: Arc<dyn ExecutionPlan>, placement: &Placement) -> DfResult<Arc<dyn ExecutionPlan>> {
    if plan.is::<FragmentExec>() {
        return Ok(plan);
    }
    let (node, note) = match offload(&plan, placement) {
        Ok(device) => (device, None),
        Err(reason) => (plan, (!reason.is_empty()).then_some(reason)),
    };
    let children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
    let mut placed = Vec::with_capacity(children.len());
    let mut changed = false;
    for child in &children {
        let new_child = place(child.clone(), placement)?;
        changed |= !Arc::ptr_eq(&new_child, child);
        placed.push(new_child);
    }
    let node = if changed {
        node.replace_children(
            placed,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?
    } else {
        node
    };
    Ok(match note {
        Some(reason) => Arc::new(GpuNotUsedExec::new(node, reason)),
        None => node,
    })
}

/// The device form of `plan`, or why there is none (empty: not a candidate at all).
fn offload(
    plan: &Arc<dyn ExecutionPlan>,
    placement: &Placement,
) -> Result<Arc<dyn ExecutionPlan>, String> {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        offload_aggregate(aggregate, placement)
    } else if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let exprs: Vec<NamedExpr> = projection
            .expr()
            .iter()
            .map(|p| (p.expr.clone(), p.alias.clone()))
            .collect();
        let fused = match projection.input().downcast_ref::<FilterExec>() {
            Some(filter) => offload_through_filter(filter, exprs.clone(), plan, placement),
            None => Err(String::new()),
        };
        // Without the filter below when that one cannot go (it stays under its own note).
        fused.or_else(|_| offload_filter_project(projection.input(), None, exprs, plan, placement))
    } else if let Some(sort) = plan.downcast_ref::<SortExec>() {
        offload_top_n(sort, placement)
    } else if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        // Every output column of the filter, as it is.
        let exprs = filter
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), i));
                (column, field.name().clone())
            })
            .collect();
        offload_through_filter(filter, exprs, plan, placement)
    } else {
        Err(String::new())
    }
}

/// `filter`, then `exprs` over its output, as one device operator.
fn offload_through_filter(
    filter: &FilterExec,
    exprs: Vec<NamedExpr>,
    replaced: &Arc<dyn ExecutionPlan>,
    placement: &Placement,
) -> Result<Arc<dyn ExecutionPlan>, String> {
    // The device operator has no row limit of its own to stop at.
    if filter.fetch().is_some() {
        return Err("a filter that stops at a row limit".into());
    }
    let exprs = through_filter_projection(exprs, filter)?;
    offload_filter_project(
        filter.input(),
        Some(filter.predicate().clone()),
        exprs,
        replaced,
        placement,
    )
}

/// A projection's expression and the name of its output column.
type NamedExpr = (Arc<dyn PhysicalExpr>, String);

/// `exprs` over a filter's output, rewritten over the filter's input (a filter may drop
/// columns itself).
fn through_filter_projection(
    exprs: Vec<NamedExpr>,
    filter: &FilterExec,
) -> Result<Vec<NamedExpr>, String> {
    let Some(kept) = filter.projection() else {
        return Ok(exprs);
    };
    let kept: Vec<usize> = kept.iter().copied().collect();
    let input_schema = filter.input().schema();
    exprs
        .into_iter()
        .map(|(expr, name)| {
            let rewritten = expr
                .transform(|e| {
                    Ok(match e.downcast_ref::<Column>() {
                        Some(column) => {
                            let index = *kept.get(column.index()).ok_or_else(|| {
                                datafusion::error::DataFusionError::Internal(format!(
                                    "column {column} is not in the filter's output"
                                ))
                            })?;
                            let name = input_schema.field(index).name();
                            Transformed::yes(Arc::new(Column::new(name, index)) as _)
                        }
                        None => Transformed::no(e),
                    })
                })
                .map_err(|e| e.to_string())?
                .data;
            Ok((rewritten, name))
        })
        .collect()
}

fn offload_filter_project(
    input: &Arc<dyn ExecutionPlan>,
    predicate: Option<Arc<dyn PhysicalExpr>>,
    exprs: Vec<NamedExpr>,
    replaced: &Arc<dyn ExecutionPlan>,
    placement: &Placement,
) -> Result<Arc<dyn ExecutionPlan>, String> {
    let schema = input.schema();
    let device_predicate = predicate
        .as_ref()
        .map(|p| translate_expr(p, &schema))
        .transpose()?;
    let mut projections = Vec::new();
    let mut outputs = Vec::new();
    for (expr, name) in &exprs {
        match translate_expr(expr, &schema) {
            Ok(device) => {
                outputs.push(OutputColumn::Device(projections.len()));
                projections.push(Projection {
                    expr: device,
                    name: name.clone(),
                });
            }
            Err(reason) => match expr.downcast_ref::<Column>() {
                Some(column) => outputs.push(OutputColumn::Carried(column.index())),
                None => return Err(reason),
            },
        }
    }
    // A projection that only picks columns costs nothing on the CPU: not a candidate.
    let computes = projections
        .iter()
        .any(|p| !matches!(p.expr, shoal_gpu::GpuExpr::Column { .. }));
    if device_predicate.is_none() && !computes {
        return Err(String::new());
    }
    let row_numbers = outputs
        .iter()
        .any(|o| matches!(o, OutputColumn::Carried(_)));
    let spec = FilterProject {
        predicate: device_predicate,
        projections,
        row_numbers,
    };
    Ok(Arc::new(GpuFilterProjectExec::new(
        input.clone(),
        spec,
        outputs,
        predicate,
        exprs.into_iter().map(|(e, _)| e).collect(),
        placement.clone(),
        replaced.schema(),
    )))
}

fn offload_top_n(sort: &SortExec, placement: &Placement) -> Result<Arc<dyn ExecutionPlan>, String> {
    // A sort without a limit is not a top-N.
    let limit = sort.fetch().ok_or_else(String::new)?;
    let [order] = sort.expr().as_ref() else {
        return Err("ORDER BY several expressions".into());
    };
    let column = order
        .expr
        .downcast_ref::<Column>()
        .ok_or_else(|| format!("ORDER BY the expression {}", order.expr))?;
    let input_schema = sort.input().schema();
    let data_type = GpuType::from_arrow(input_schema.field(column.index()).data_type())
        .map_err(|e| e.to_string())?;
    let spec = TopN {
        key: (column.index(), data_type),
        descending: order.options.descending,
        nulls_first: order.options.nulls_first,
        limit,
    };
    spec.check().map_err(|e| e.to_string())?;
    Ok(Arc::new(GpuTopNExec::new(
        sort.input().clone(),
        spec,
        placement.clone(),
        sort.properties().clone(),
    )))
}

fn offload_aggregate(
    aggregate: &AggregateExec,
    placement: &Placement,
) -> Result<Arc<dyn ExecutionPlan>, String> {
    if *aggregate.mode() != AggregateMode::Partial {
        return Err(String::new());
    }
    if aggregate.limit_options().is_some() {
        return Err("an aggregate that stops at a row limit".into());
    }
    let spec = translate_partial_aggregate(aggregate)?;
    Ok(Arc::new(GpuPartialAggregateExec::new(
        aggregate.input().clone(),
        spec,
        placement.clone(),
        Arc::new(aggregate.clone()),
    )))
}

impl PhysicalOptimizerRule for OffloadToDevice {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mode = config
            .extensions
            .get::<GpuOptions>()
            .and_then(|o| GpuMode::parse(&o.mode))
            .unwrap_or(GpuMode::Auto);
        OffloadToDevice::rewrite_plan(plan, mode)
    }

    fn name(&self) -> &str {
        "offload_to_device"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
