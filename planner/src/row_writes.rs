//! UPDATE and DELETE as writes of the rows their input produces.
//!
//! DataFusion plans an UPDATE or DELETE by handing the table provider the filters it finds
//! above the target's scan. A WHERE clause the optimizer turns into something else arrives as
//! no filter at all, which means "every row": an `IN` or `EXISTS` subquery becomes a semi
//! join, `WHERE false` an empty relation (apache/datafusion#24654). So before optimization
//! each UPDATE or DELETE node of a plan is rewritten here into a write of the rows its input
//! yields: the target is read through a variant of the table that also yields each row's
//! storage key, the input ends in the new (UPDATE) or stored (DELETE) rows followed by that
//! key, and the write is planned as an insert into [`RowWriteTable`], whose `insert_into`
//! builds the UPDATE's or DELETE's `TableWriteExec`. Whatever the WHERE clause (subqueries,
//! joins of `UPDATE ... FROM`, constants) then filters the rows with DataFusion's own
//! semantics, and EXPLAIN shows the plan that runs.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::{provider_as_source, source_as_provider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    DmlStatement, Expr, ExprSchemable, LogicalPlan, Projection, TableScanBuilder, TableSource,
    WriteOp,
};
use datafusion::physical_plan::ExecutionPlan;
use shoal_executor::{WriteKind, ROW_KEY_COLUMN};

use crate::ShoalTable;

/// The target of a rewritten UPDATE or DELETE: its rows, each followed by its storage key,
/// are "inserted" into it, which updates or deletes them.
#[derive(Debug)]
pub struct RowWriteTable {
    /// The table, with the row key column.
    table: ShoalTable,
    kind: WriteKind,
}

#[async_trait]
impl TableProvider for RowWriteTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Internal(
            "the target of an UPDATE or DELETE is not read through its write".into(),
        ))
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.table.writer(state, input, self.kind)
    }
}

/// `plan` with each UPDATE and DELETE written as explained in the module comment.
pub fn plan_row_writes(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Dml(dml) = &node else {
            return Ok(Transformed::no(node));
        };
        let kind = match dml.op {
            WriteOp::Update => WriteKind::Update,
            WriteOp::Delete => WriteKind::Delete,
            _ => return Ok(Transformed::no(node)),
        };
        let table = keyed_table(&dml.target)?;
        let keyed = provider_as_source(Arc::new(table.clone()));
        let input = with_row_keys(&dml.input, table.id(), &keyed)?.ok_or_else(|| {
            DataFusionError::Plan(format!("{} reads no rows of {}", dml.op, dml.table_name))
        })?;
        let rows = rows_and_keys(&table, kind, &dml.input, input)?;
        let target = provider_as_source(Arc::new(RowWriteTable { table, kind }));
        Ok(Transformed::yes(LogicalPlan::Dml(DmlStatement::new(
            dml.table_name.clone(),
            target,
            WriteOp::Insert(InsertOp::Append),
            Arc::new(rows),
        ))))
    })
    .map(|t| t.data)
}

/// The Shoal table `source` reads, in its variant with the row key column.
fn keyed_table(source: &Arc<dyn TableSource>) -> DfResult<ShoalTable> {
    let provider = source_as_provider(source)?;
    let any: &dyn Any = provider.as_ref();
    any.downcast_ref::<ShoalTable>()
        .map(ShoalTable::with_row_keys)
        .ok_or_else(|| DataFusionError::NotImplemented("UPDATE or DELETE of this relation".into()))
}

/// `plan` with its first scan of table `table_id` (outside subqueries) reading `keyed`
/// instead, so that the row key column reaches the top; `None` when it has no such scan.
fn with_row_keys(
    plan: &LogicalPlan,
    table_id: u32,
    keyed: &Arc<dyn TableSource>,
) -> DfResult<Option<LogicalPlan>> {
    if let LogicalPlan::TableScan(scan) = plan {
        if keyed_table(&scan.source).is_ok_and(|t| t.id() == table_id) {
            let scan = TableScanBuilder::new(scan.table_name.clone(), keyed.clone())
                .with_filters(scan.filters.clone())
                .with_fetch(scan.fetch)
                .build()?;
            return Ok(Some(LogicalPlan::TableScan(scan)));
        }
        return Ok(None);
    }
    let inputs = plan.inputs();
    for (i, input) in inputs.iter().enumerate() {
        if let Some(replaced) = with_row_keys(input, table_id, keyed)? {
            let mut new_inputs: Vec<LogicalPlan> = inputs.iter().map(|p| (*p).clone()).collect();
            new_inputs[i] = replaced;
            return plan
                .with_new_exprs(plan.expressions(), new_inputs)
                .map(Some);
        }
    }
    Ok(None)
}

/// The rows the write takes: for an UPDATE the new rows (DataFusion's projection of the SET
/// list, each value cast to its column's type), for a DELETE the stored rows, each followed
/// by the row key.
fn rows_and_keys(
    table: &ShoalTable,
    kind: WriteKind,
    original: &LogicalPlan,
    rewritten: LogicalPlan,
) -> DfResult<LogicalPlan> {
    let fields = table.visible_fields();
    let (values, source) = match (kind, rewritten) {
        (WriteKind::Update, LogicalPlan::Projection(p)) => (p.expr, Arc::unwrap_or_clone(p.input)),
        (WriteKind::Update, _) => {
            return Err(DataFusionError::Internal(format!(
                "an UPDATE planned without its SET list: {original}"
            )))
        }
        (_, source) => {
            let columns: Vec<Expr> = source
                .schema()
                .columns()
                .into_iter()
                .take(fields.len())
                .map(Expr::Column)
                .collect();
            (columns, source)
        }
    };
    let schema: &DFSchema = source.schema();
    let mut exprs = Vec::with_capacity(fields.len() + 1);
    for (value, field) in values.into_iter().zip(fields.iter()) {
        let value = match value {
            Expr::Alias(alias) => *alias.expr,
            other => other,
        };
        exprs.push(
            value
                .cast_to(field.data_type(), schema)?
                .alias(field.name()),
        );
    }
    let (qualifier, _) = schema.qualified_field_with_unqualified_name(ROW_KEY_COLUMN)?;
    exprs.push(Expr::Column(Column::new(
        qualifier.cloned(),
        ROW_KEY_COLUMN,
    )));
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(source),
    )?))
}
