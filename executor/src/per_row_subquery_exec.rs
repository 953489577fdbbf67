//! `PerRowSubqueryExec`: the value of a subquery for each input row (a scalar subquery's value,
//! or whether `EXISTS` / `IN` holds), computed by running the subquery with the row's values in
//! place of its outer references.
//!
//! DataFusion decorrelates the correlated subqueries it can turn into joins (an aggregate over
//! an equality correlation); the rest, common in client catalog queries (a subquery under a
//! `CASE`, one limited to one row by `LIMIT 1`, one with a recursive CTE, an `EXISTS` in a
//! select list), would fail to plan. This operator is their fallback: it appends one column
//! holding the subquery's value for each row. Rows where the guard (the `CASE` condition the
//! subquery sits under) is not true get NULL without running it, and rows with the same outer
//! values share one run. Each run plans and executes the subquery, so this suits
//! catalog-sized inputs, not large tables.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, AsArray};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
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

/// What the appended column holds for a row.
pub enum SubqueryValue {
    /// The subquery's single value, NULL without rows, an error with two.
    Scalar,
    /// Whether the subquery returns a row.
    Exists { negated: bool },
    /// Whether `probe`'s value is among the subquery's, with SQL's NULL rules.
    In {
        probe: Arc<dyn PhysicalExpr>,
        negated: bool,
    },
}

/// The subquery of a [`PerRowSubqueryExec`] and how its result becomes the column.
pub struct PerRowSubquerySpec {
    /// The subquery, with `OuterReferenceColumn`s where the row's values go.
    pub subquery: Arc<LogicalPlan>,
    pub value: SubqueryValue,
    /// The input column index of each outer reference.
    pub outer: Vec<(Column, usize)>,
    /// Only rows where this is true run the subquery; the others get NULL.
    pub guard: Option<Arc<dyn PhysicalExpr>>,
    /// The appended column.
    pub output: FieldRef,
}

/// What running the subquery for one row needs; shared by the output partitions.
struct SubqueryRunner {
    spec: PerRowSubquerySpec,
    state: SessionState,
    /// The subquery's rows (first column) already computed, by outer values.
    known: Mutex<HashMap<Vec<ScalarValue>, Arc<Vec<ScalarValue>>>>,
}

impl PerRowSubqueryExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        spec: PerRowSubquerySpec,
        state: SessionState,
    ) -> Self {
        let (schema, properties) = appended(&input, &spec.output);
        PerRowSubqueryExec {
            input,
            runner: Arc::new(SubqueryRunner {
                spec,
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
        write!(f, "PerRowSubqueryExec({})", self.runner.spec.output.name())
    }
}

impl DisplayAs for PerRowSubqueryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let outer: Vec<String> = self
            .runner
            .spec
            .outer
            .iter()
            .map(|(c, _)| c.flat_name())
            .collect();
        write!(
            f,
            "PerRowSubqueryExec: {} per row of [{}]",
            self.runner.spec.output.name(),
            outer.join(", ")
        )?;
        if let Some(g) = &self.runner.spec.guard {
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
        if let Some(g) = &self.runner.spec.guard {
            if f(g)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        match &self.runner.spec.value {
            SubqueryValue::In { probe, .. } => f(probe),
            _ => Ok(TreeNodeRecursion::Continue),
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
        let (schema, properties) = appended(&input, &self.runner.spec.output);
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
    /// The column's value for each row of `batch`.
    async fn column_for(&self, batch: &RecordBatch) -> DfResult<ArrayRef> {
        let spec = &self.spec;
        let data_type = spec.output.data_type();
        if batch.num_rows() == 0 {
            return Ok(new_empty_array(data_type));
        }
        let rows = batch.num_rows();
        let guard = match &spec.guard {
            Some(g) => Some(g.evaluate(batch)?.into_array(rows)?),
            None => None,
        };
        let probe = match &spec.value {
            SubqueryValue::In { probe, .. } => Some(probe.evaluate(batch)?.into_array(rows)?),
            _ => None,
        };
        let mut values = Vec::with_capacity(rows);
        for row in 0..rows {
            let wanted = guard
                .as_ref()
                .map(|g| g.as_boolean().is_valid(row) && g.as_boolean().value(row))
                .unwrap_or(true);
            if !wanted {
                values.push(ScalarValue::try_from(data_type)?);
                continue;
            }
            let found = self.rows_for(batch, row).await?;
            let value = match &spec.value {
                SubqueryValue::Scalar => match found.as_slice() {
                    [] => ScalarValue::try_from(data_type)?,
                    [one] => one.cast_to(data_type)?,
                    _ => {
                        return Err(DataFusionError::Execution(
                            "more than one row returned by a subquery used as an expression".into(),
                        ))
                    }
                },
                SubqueryValue::Exists { negated } => {
                    ScalarValue::Boolean(Some(found.is_empty() == *negated))
                }
                SubqueryValue::In { negated, .. } => {
                    let probe = probe.as_ref().map(|p| ScalarValue::try_from_array(p, row));
                    let probe = probe.transpose()?.unwrap_or(ScalarValue::Null);
                    let is_in = member(&probe, &found)?;
                    ScalarValue::Boolean(is_in.map(|b| b != *negated))
                }
            };
            values.push(value);
        }
        column_of(&values, data_type)
    }

    /// The subquery's rows (first column) for the outer values of `batch`'s `row`.
    async fn rows_for(&self, batch: &RecordBatch, row: usize) -> DfResult<Arc<Vec<ScalarValue>>> {
        let outer = self
            .spec
            .outer
            .iter()
            .map(|(_, i)| ScalarValue::try_from_array(batch.column(*i), row))
            .collect::<DfResult<Vec<_>>>()?;
        if let Some(known) = self.known.lock().get(&outer).cloned() {
            return Ok(known);
        }
        let found = Arc::new(self.run(&outer).await?);
        self.known.lock().insert(outer, found.clone());
        Ok(found)
    }

    /// Plans and runs the subquery with `outer` in place of its outer references.
    async fn run(&self, outer: &[ScalarValue]) -> DfResult<Vec<ScalarValue>> {
        let bound = self
            .spec
            .subquery
            .as_ref()
            .clone()
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform(|e| match &e {
                        Expr::OuterReferenceColumn(field, column) => {
                            let at = self.spec.outer.iter().position(|(c, _)| c == column);
                            let Some(at) = at else {
                                return Ok(Transformed::no(e));
                            };
                            let value = outer[at].cast_to(field.data_type())?;
                            Ok(Transformed::yes(Expr::Literal(value, None)))
                        }
                        _ => Ok(Transformed::no(e)),
                    })
                })
            })?
            .data
            // A correlated FROM item (`FROM unnest(outer.a)`) was planned as a subquery
            // node; bound, it is a plain relation.
            .transform_up(|node| match node {
                LogicalPlan::Subquery(s) => Ok(Transformed::yes(Arc::unwrap_or_clone(s.subquery))),
                other => Ok(Transformed::no(other)),
            })?
            .data;
        let plan = self.state.create_physical_plan(&bound).await?;
        let batches = collect(plan, self.state.task_ctx()).await?;
        let mut values = Vec::new();
        for b in batches.iter().filter(|b| b.num_columns() > 0) {
            for i in 0..b.num_rows() {
                values.push(ScalarValue::try_from_array(b.column(0), i)?);
            }
        }
        Ok(values)
    }
}

/// `probe IN (values)` with SQL's NULLs: true when some value equals it; otherwise NULL when
/// the probe or some value is NULL; otherwise false (also for no values at all).
/// One array of `data_type` from the per-row values. A list value can differ from `data_type`
/// in its element field's metadata alone (`cast_to` keeps it), and `iter_to_array` refuses to
/// mix such values, so nested values are cast one by one.
fn column_of(values: &[ScalarValue], data_type: &DataType) -> DfResult<ArrayRef> {
    if !data_type.is_nested() {
        return ScalarValue::iter_to_array(values.iter().cloned());
    }
    let arrays = values
        .iter()
        .map(|v| Ok(cast(&v.to_array()?, data_type)?))
        .collect::<DfResult<Vec<ArrayRef>>>()?;
    let parts: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    Ok(concat(&parts)?)
}

fn member(probe: &ScalarValue, values: &[ScalarValue]) -> DfResult<Option<bool>> {
    if values.is_empty() {
        return Ok(Some(false));
    }
    if probe.is_null() {
        return Ok(None);
    }
    let mut saw_null = false;
    for v in values {
        if v.is_null() {
            saw_null = true;
        } else if v.cast_to(&probe.data_type())? == *probe {
            return Ok(Some(true));
        }
    }
    Ok(if saw_null { None } else { Some(false) })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::array::{Int32Array, ListArray};
    use datafusion::arrow::datatypes::{Field, Int32Type};

    use super::*;

    #[test]
    fn list_values_whose_element_field_differs_in_metadata_make_one_column() {
        let tagged = Field::new_list_field(DataType::Int32, true).with_metadata(HashMap::from([(
            "pg.oid_alias".to_string(),
            "oid".to_string(),
        )]));
        let tagged_list = ListArray::from_iter_primitive::<Int32Type, _, _>([Some([Some(26)])]);
        let tagged_list = ListArray::new(
            Arc::new(tagged),
            tagged_list.offsets().clone(),
            Arc::new(Int32Array::from(vec![26])),
            None,
        );
        let plain = DataType::new_list(DataType::Int32, true);
        let values = [
            ScalarValue::List(Arc::new(tagged_list)),
            ScalarValue::try_from(&plain).unwrap(),
        ];
        let column = column_of(&values, &plain).unwrap();
        assert_eq!(column.data_type(), &plain);
        assert_eq!(column.len(), 2);
        assert!(column.is_null(1));
        assert_eq!(
            column
                .as_list::<i32>()
                .value(0)
                .as_primitive::<Int32Type>()
                .values(),
            &[26]
        );
    }
}
