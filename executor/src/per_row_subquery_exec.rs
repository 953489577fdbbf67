//! `PerRowSubqueryExec`: the value of a correlated scalar subquery for each input row, computed
//! by running the subquery with the row's values in place of its outer references.
//!
//! DataFusion decorrelates the correlated subqueries it can turn into joins (an aggregate over
//! an equality correlation); the rest, common in client catalog queries (a subquery under a
//! `CASE`, one limited to one row by `LIMIT 1`, one with a recursive CTE), would fail to plan.
//! This operator is their fallback: it appends one column holding the subquery's value for each
//! row. Rows where the guard (the `CASE` condition the subquery sits under) is not true get
//! NULL without running it, and rows with the same outer values share one run. Each run plans
//! and executes the subquery, so this suits catalog-sized inputs, not large tables.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;
use parking_lot::Mutex;

/// Appends the value of one correlated scalar subquery to every row of its input.
pub struct PerRowSubqueryExec {
    input: Arc<dyn ExecutionPlan>,
    runner: Arc<SubqueryRunner>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

/// What running the subquery for one row needs; shared by the output partitions.
struct SubqueryRunner {
    /// The subquery, with `OuterReferenceColumn`s where the row's values go.
    subquery: Arc<LogicalPlan>,
    /// The input column index of each outer reference.
    outer: Vec<(Column, usize)>,
    /// Only rows where this is true run the subquery; the others get NULL.
    guard: Option<Arc<dyn PhysicalExpr>>,
    output: FieldRef,
    state: SessionState,
    /// Values already computed, by outer values.
    known: Mutex<HashMap<Vec<ScalarValue>, ScalarValue>>,
}

impl PerRowSubqueryExec {
    /// `outer` maps each column the subquery references in the outer query to its index in
    /// `input`'s schema; `output` is the appended column.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        subquery: Arc<LogicalPlan>,
        outer: Vec<(Column, usize)>,
        guard: Option<Arc<dyn PhysicalExpr>>,
        output: FieldRef,
        state: SessionState,
    ) -> Self {
        let (schema, properties) = appended(&input, &output);
        PerRowSubqueryExec {
            input,
            runner: Arc::new(SubqueryRunner {
                subquery,
                outer,
                guard,
                output,
                state,
                known: Mutex::new(HashMap::new()),
            }),
            schema,
            properties,
        }
    }
}

/// The schema and properties of `input` with the `output` column appended.
fn appended(input: &Arc<dyn ExecutionPlan>, output: &FieldRef) -> (SchemaRef, Arc<PlanProperties>) {
    let mut fields: Vec<FieldRef> = input.schema().fields().iter().cloned().collect();
    fields.push(output.clone());
    let schema = Arc::new(Schema::new(fields));
    let properties = Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        input.properties().output_partitioning().clone(),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ));
    (schema, properties)
}

impl fmt::Debug for PerRowSubqueryExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PerRowSubqueryExec({})", self.runner.output.name())
    }
}

impl DisplayAs for PerRowSubqueryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let outer: Vec<String> = self
            .runner
            .outer
            .iter()
            .map(|(c, _)| c.flat_name())
            .collect();
        write!(
            f,
            "PerRowSubqueryExec: {} per row of [{}]",
            self.runner.output.name(),
            outer.join(", ")
        )?;
        if let Some(g) = &self.runner.guard {
            write!(f, " where {g}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for PerRowSubqueryExec {
    fn name(&self) -> &'static str {
        "PerRowSubqueryExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        match &self.runner.guard {
            Some(g) => f(g),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.into_iter().next() else {
            return Err(DataFusionError::Internal(
                "PerRowSubqueryExec needs one child".into(),
            ));
        };
        let (schema, properties) = appended(&input, &self.runner.output);
        Ok(Arc::new(PerRowSubqueryExec {
            input,
            runner: self.runner.clone(),
            schema,
            properties,
        }))
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
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let runner = self.runner.clone();
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let batches = input.then(move |batch| {
            let runner = runner.clone();
            let schema = schema.clone();
            async move {
                let batch = batch?;
                let column = runner.column_for(&batch).await?;
                let mut columns = batch.columns().to_vec();
                columns.push(column);
                Ok(RecordBatch::try_new(schema, columns)?)
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, batches)))
    }
}

impl SubqueryRunner {
    /// The subquery's value for each row of `batch`.
    async fn column_for(&self, batch: &RecordBatch) -> DfResult<ArrayRef> {
        let data_type = self.output.data_type();
        if batch.num_rows() == 0 {
            return Ok(new_empty_array(data_type));
        }
        let guard = match &self.guard {
            Some(g) => Some(g.evaluate(batch)?.into_array(batch.num_rows())?),
            None => None,
        };
        let mut values = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let wanted = guard
                .as_ref()
                .map(|g| g.as_boolean().is_valid(row) && g.as_boolean().value(row))
                .unwrap_or(true);
            if !wanted {
                values.push(ScalarValue::try_from(data_type)?);
                continue;
            }
            let outer = self
                .outer
                .iter()
                .map(|(_, i)| ScalarValue::try_from_array(batch.column(*i), row))
                .collect::<DfResult<Vec<_>>>()?;
            let known = self.known.lock().get(&outer).cloned();
            let value = match known {
                Some(v) => v,
                None => {
                    let v = self.run(&outer).await?;
                    self.known.lock().insert(outer, v.clone());
                    v
                }
            };
            values.push(value);
        }
        ScalarValue::iter_to_array(values)
    }

    /// Plans and runs the subquery with `outer` in place of its outer references.
    async fn run(&self, outer: &[ScalarValue]) -> DfResult<ScalarValue> {
        let bound = self
            .subquery
            .as_ref()
            .clone()
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform(|e| match &e {
                        Expr::OuterReferenceColumn(field, column) => {
                            let Some(at) = self.outer.iter().position(|(c, _)| c == column) else {
                                return Ok(Transformed::no(e));
                            };
                            let value = outer[at].cast_to(field.data_type())?;
                            Ok(Transformed::yes(Expr::Literal(value, None)))
                        }
                        _ => Ok(Transformed::no(e)),
                    })
                })
            })?
            .data;
        let plan = self.state.create_physical_plan(&bound).await?;
        let batches = collect(plan, self.state.task_ctx()).await?;
        let mut rows = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .flat_map(|b| (0..b.num_rows()).map(move |i| (b, i)));
        let value = match rows.next() {
            None => ScalarValue::try_from(self.output.data_type())?,
            Some((b, i)) => ScalarValue::try_from_array(b.column(0), i)?,
        };
        if rows.next().is_some() {
            return Err(DataFusionError::Execution(
                "more than one row returned by a subquery used as an expression".into(),
            ));
        }
        value.cast_to(self.output.data_type())
    }
}
