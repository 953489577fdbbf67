//! Subqueries that DataFusion cannot turn into joins, planned as [`PerRowSubqueryExec`] (the
//! subquery run for each outer row) instead of failing: correlated scalar subqueries, and
//! `EXISTS` / `IN` subqueries in a select list or under an `OR`.
//!
//! Two rules find them, with one rewrite: an analyzer rule takes those that DataFusion's
//! invariant check would reject (not aggregated, so possibly more than one row: PostgreSQL
//! allows them and fails only when a row does return two) or that read the outer row
//! outside a filter (`FROM unnest(outer.a)`), and an optimizer rule, after
//! DataFusion's own decorrelation, takes those still left (under a `CASE`, limited by
//! `LIMIT 1`, with a recursive CTE). Each subquery of a projection or filter becomes a
//! [`PerRowSubquery`] node below it that appends the subquery's value as a column, and the
//! expression reads that column. A subquery under `CASE WHEN c THEN ...` is guarded by `c`,
//! so that it runs only for the rows that use it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    and, col, Case, Expr, Extension, Filter, LogicalPlan, Projection, Subquery,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use shoal_executor::{PerRowSubqueryExec, PerRowSubquerySpec, SubqueryValue};

/// Installs the physical planning of [`PerRowSubquery`] nodes (the rules that make them are
/// added with [`analyzer_rule`] and [`optimizer_rule`]).
pub(crate) fn install(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder.with_query_planner(Arc::new(ShoalQueryPlanner))
}

pub(crate) fn analyzer_rule() -> Arc<dyn AnalyzerRule + Send + Sync> {
    Arc::new(UndecorrelatableSubqueries)
}

pub(crate) fn optimizer_rule() -> Arc<dyn OptimizerRule + Send + Sync> {
    Arc::new(LeftoverSubqueries)
}

/// A subquery evaluated for each row of `input`, appended as column `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PerRowSubquery {
    input: Arc<LogicalPlan>,
    subquery: Subquery,
    kind: Kind,
    guard: Option<Expr>,
    name: String,
    schema: DFSchemaRef,
}

/// What the appended column holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    /// The subquery's single value (NULL without rows).
    Scalar,
    /// Whether it returns a row.
    Exists { negated: bool },
    /// Whether `probe` (an expression of the outer row) is among its values.
    In { probe: Expr, negated: bool },
}

impl Kind {
    /// The kind of a subquery expression, with its subquery; None for other expressions.
    fn of(expr: &Expr) -> Option<(Subquery, Kind)> {
        Some(match expr {
            Expr::ScalarSubquery(s) => (s.clone(), Kind::Scalar),
            Expr::Exists(e) => (e.subquery.clone(), Kind::Exists { negated: e.negated }),
            Expr::InSubquery(i) => (
                i.subquery.clone(),
                Kind::In {
                    probe: i.expr.as_ref().clone(),
                    negated: i.negated,
                },
            ),
            _ => return None,
        })
    }
}

impl PartialOrd for PerRowSubquery {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.name.partial_cmp(&other.name)
    }
}

impl PerRowSubquery {
    fn try_new(
        input: Arc<LogicalPlan>,
        subquery: Subquery,
        kind: Kind,
        guard: Option<Expr>,
        name: String,
    ) -> DfResult<Self> {
        let data_type = match kind {
            Kind::Scalar => subquery.subquery.schema().field(0).data_type().clone(),
            Kind::Exists { .. } | Kind::In { .. } => DataType::Boolean,
        };
        let field = Field::new(&name, data_type, true);
        let appended =
            DFSchema::new_with_metadata(vec![(None, Arc::new(field))], Default::default())?;
        let mut schema = input.schema().as_ref().clone();
        schema.merge(&appended);
        Ok(PerRowSubquery {
            input,
            subquery,
            kind,
            guard,
            name,
            schema: Arc::new(schema),
        })
    }
}

impl UserDefinedLogicalNodeCore for PerRowSubquery {
    fn name(&self) -> &str {
        "PerRowSubquery"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// The guard, then the probe of an IN.
    fn expressions(&self) -> Vec<Expr> {
        let mut exprs: Vec<Expr> = self.guard.iter().cloned().collect();
        if let Kind::In { probe, .. } = &self.kind {
            exprs.push(probe.clone());
        }
        exprs
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PerRowSubquery: {}", self.name)?;
        if let Some(g) = &self.guard {
            write!(f, " where {g}")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let input = inputs
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("PerRowSubquery needs an input".into()))?;
        let mut exprs = exprs.into_iter();
        let guard = match self.guard {
            Some(_) => exprs.next(),
            None => None,
        };
        let kind = match &self.kind {
            Kind::In { probe, negated } => Kind::In {
                probe: exprs.next().unwrap_or_else(|| probe.clone()),
                negated: *negated,
            },
            other => other.clone(),
        };
        PerRowSubquery::try_new(
            Arc::new(input),
            self.subquery.clone(),
            kind,
            guard,
            self.name.clone(),
        )
    }
}

/// Correlated scalar subqueries that DataFusion's invariant check would reject.
#[derive(Debug)]
struct UndecorrelatableSubqueries;

impl AnalyzerRule for UndecorrelatableSubqueries {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        Ok(plan
            .transform_up(|node| {
                let node = sort_keys_computed_below(node)?;
                rewrite_node(node, &|e| match e {
                    Expr::ScalarSubquery(s) => {
                        !s.outer_ref_columns.is_empty()
                            && (!at_most_one_row(&s.subquery)
                                || correlated_outside_filters(&s.subquery))
                    }
                    _ => false,
                })
            })?
            .data)
    }

    fn name(&self) -> &str {
        "per_row_undecorrelatable_subqueries"
    }
}

/// A sort whose keys hold subqueries (`ORDER BY CASE WHEN x IN (SELECT ...) ...`, Grafana's),
/// which DataFusion plans only in projections and filters: the keys are computed by a
/// projection below the sort, and a projection above drops them again.
fn sort_keys_computed_below(node: LogicalPlan) -> DfResult<LogicalPlan> {
    let LogicalPlan::Sort(sort) = &node else {
        return Ok(node);
    };
    if !sort.expr.iter().any(|s| has_subquery(&s.expr)) {
        return Ok(node);
    }
    let columns = output_columns(&sort.input);
    let mut computed = columns.clone();
    let mut keys = Vec::new();
    for (i, key) in sort.expr.iter().enumerate() {
        let mut key = key.clone();
        if has_subquery(&key.expr) {
            let name = format!("__shoal_sort_key_{i}");
            computed.push(key.expr.clone().alias(&name));
            key.expr = col(Column::new_unqualified(name));
        }
        keys.push(key);
    }
    let below = LogicalPlan::Projection(Projection::try_new(computed, sort.input.clone())?);
    let sorted = LogicalPlan::Sort(datafusion::logical_expr::Sort {
        expr: keys,
        input: Arc::new(below),
        fetch: sort.fetch,
    });
    Ok(LogicalPlan::Projection(Projection::try_new(
        columns,
        Arc::new(sorted),
    )?))
}

/// The columns `plan` outputs, as expressions.
fn output_columns(plan: &LogicalPlan) -> Vec<Expr> {
    plan.schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect()
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(false)
}

/// Whether DataFusion accepts `plan` as a correlated scalar subquery: topped by an aggregate
/// (under projections and aliases, maybe with a HAVING filter), or at most one row.
fn at_most_one_row(plan: &LogicalPlan) -> bool {
    let mut inner = plan;
    while let LogicalPlan::Projection(Projection { input, .. })
    | LogicalPlan::SubqueryAlias(datafusion::logical_expr::SubqueryAlias {
        input, ..
    }) = inner
    {
        inner = input;
    }
    match inner {
        LogicalPlan::Aggregate(_) => true,
        LogicalPlan::Filter(f) => matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)),
        _ => plan.max_rows().is_some_and(|n| n <= 1),
    }
}

/// Whether the subquery reads the outer row other than in a filter (`FROM unnest(outer.a)`,
/// a select list): DataFusion decorrelates only filters, and would leave the outer
/// reference in the plan it runs.
fn correlated_outside_filters(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        if !matches!(node, LogicalPlan::Filter(_))
            && node.expressions().iter().any(Expr::contains_outer)
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Correlated scalar subqueries, and any `EXISTS` or `IN` subquery, that DataFusion's
/// decorrelation left in place.
#[derive(Debug)]
struct LeftoverSubqueries;

impl OptimizerRule for LeftoverSubqueries {
    fn name(&self) -> &str {
        "per_row_leftover_subqueries"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        plan.transform_up(|node| {
            rewrite_node(node, &|e| match e {
                // Uncorrelated scalar subqueries DataFusion runs once itself.
                Expr::ScalarSubquery(s) => !s.outer_ref_columns.is_empty(),
                Expr::Exists(_) | Expr::InSubquery(_) => true,
                _ => false,
            })
        })
    }
}

/// Which subquery expressions a rule takes.
type Wanted<'a> = &'a dyn Fn(&Expr) -> bool;

/// Moves the wanted subqueries of a projection or filter into [`PerRowSubquery`] nodes.
fn rewrite_node(node: LogicalPlan, wanted: Wanted) -> DfResult<Transformed<LogicalPlan>> {
    let (mut exprs, mut input) = match &node {
        LogicalPlan::Projection(p) => (p.expr.clone(), p.input.clone()),
        LogicalPlan::Filter(f) => (vec![f.predicate.clone()], f.input.clone()),
        _ => return Ok(Transformed::no(node)),
    };
    let mut changed = false;
    loop {
        let found = exprs.iter().find_map(|e| first_subquery(e, None, wanted));
        let Some((target, guard)) = found else {
            break;
        };
        let Some((subquery, kind)) = Kind::of(&target) else {
            break;
        };
        let name = format!("__shoal_subquery_{}", input.schema().fields().len());
        exprs = exprs
            .into_iter()
            .map(|e| {
                e.transform_down(|e| match e == target {
                    true => Ok(Transformed::yes(col(Column::new_unqualified(&name)))),
                    false => Ok(Transformed::no(e)),
                })
                .map(|t| t.data)
            })
            .collect::<DfResult<_>>()?;
        let layer = PerRowSubquery::try_new(input, subquery, kind, guard, name)?;
        input = Arc::new(LogicalPlan::Extension(Extension {
            node: Arc::new(layer),
        }));
        changed = true;
    }
    if !changed {
        return Ok(Transformed::no(node));
    }
    let rewritten = match node {
        LogicalPlan::Projection(p) => {
            // Keep the output names the subqueries gave the columns.
            let named = exprs
                .into_iter()
                .zip(p.schema.iter())
                .map(|(e, (qualifier, field))| e.alias_qualified(qualifier.cloned(), field.name()))
                .collect();
            LogicalPlan::Projection(Projection::try_new(named, input)?)
        }
        LogicalPlan::Filter(f) => {
            let predicate = exprs.into_iter().next().unwrap_or(f.predicate);
            let filtered = LogicalPlan::Filter(Filter::try_new(predicate, input)?);
            // The appended columns are not the filter's output.
            let columns = output_columns(&f.input);
            LogicalPlan::Projection(Projection::try_new(columns, Arc::new(filtered))?)
        }
        other => other,
    };
    Ok(Transformed::yes(rewritten))
}

/// The first wanted subquery expression in `expr` (conditions before results) and the
/// condition under which its value is used.
fn first_subquery(
    expr: &Expr,
    guard: Option<Expr>,
    wanted: Wanted,
) -> Option<(Expr, Option<Expr>)> {
    match expr {
        e if wanted(e) => Some((e.clone(), guard)),
        Expr::Case(Case {
            expr: None,
            when_then_expr,
            else_expr,
        }) => {
            for (when, then) in when_then_expr {
                if let Some(found) = first_subquery(when, guard.clone(), wanted) {
                    return Some(found);
                }
                let under = match &guard {
                    Some(g) => and(g.clone(), when.as_ref().clone()),
                    None => when.as_ref().clone(),
                };
                if let Some(found) = first_subquery(then, Some(under), wanted) {
                    return Some(found);
                }
            }
            else_expr
                .as_ref()
                .and_then(|e| first_subquery(e, guard, wanted))
        }
        // Subqueries inside another subquery are its own business.
        Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => None,
        _ => {
            let mut found = None;
            let _ = expr.apply_children(|child| {
                found = first_subquery(child, guard.clone(), wanted);
                Ok(match found {
                    Some(_) => TreeNodeRecursion::Stop,
                    None => TreeNodeRecursion::Continue,
                })
            });
            found
        }
    }
}

/// DataFusion's planner with the physical planning of [`PerRowSubquery`] nodes.
#[derive(Debug)]
struct ShoalQueryPlanner;

#[async_trait]
impl QueryPlanner for ShoalQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(PerRowSubqueryPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct PerRowSubqueryPlanner;

#[async_trait]
impl ExtensionPlanner for PerRowSubqueryPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<PerRowSubquery>() else {
            return Ok(None);
        };
        let (Some(logical), Some(physical)) = (logical_inputs.first(), physical_inputs.first())
        else {
            return Err(DataFusionError::Internal(
                "PerRowSubquery needs an input".into(),
            ));
        };
        let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
            return Err(DataFusionError::Internal("a SessionState is needed".into()));
        };
        let input_schema = logical.schema();
        let outer = node
            .subquery
            .outer_ref_columns
            .iter()
            .filter_map(|e| match e {
                Expr::OuterReferenceColumn(_, c) => Some(c.clone()),
                _ => None,
            })
            .map(|c| {
                let at = input_schema.index_of_column(&c)?;
                Ok((c, at))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let guard = node
            .guard
            .as_ref()
            .map(|g| planner.create_physical_expr(g, input_schema, session, planning_ctx))
            .transpose()?;
        let value = match &node.kind {
            Kind::Scalar => SubqueryValue::Scalar,
            Kind::Exists { negated } => SubqueryValue::Exists { negated: *negated },
            Kind::In { probe, negated } => SubqueryValue::In {
                probe: planner.create_physical_expr(probe, input_schema, session, planning_ctx)?,
                negated: *negated,
            },
        };
        let output = node.schema.fields()[node.schema.fields().len() - 1].clone();
        Ok(Some(Arc::new(PerRowSubqueryExec::new(
            physical.clone(),
            PerRowSubquerySpec {
                subquery: node.subquery.subquery.clone(),
                value,
                outer,
                guard,
                output,
            },
            state.clone(),
        ))))
    }
}
