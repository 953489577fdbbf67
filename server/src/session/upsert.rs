//! `INSERT ... ON CONFLICT (key) DO UPDATE SET ... [WHERE ...]`: the insert sets aside every
//! proposed row whose primary key already exists; those rows are then joined, as `excluded`,
//! with the stored rows and the SET list is evaluated over the join, inside the same
//! transaction and statement.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, ConflictTarget, DoUpdate, Expr, Insert, TableObject,
};
use shoal_coord::MetaStore;
use shoal_executor::{ExecError, Forwarding, TableHandle};
use shoal_planner::ddl::{ident_name, object_name};
use shoal_planner::{DmlOptions, DML_TABLE_PREFIX};
use shoal_storage::Txn;

use super::dml::{scratch_context, SCRATCH_TABLE};
use super::Session;
use crate::error::{ServerError, ServerResult};

pub(crate) struct Upsert {
    schema: String,
    table: String,
    /// The name the SET list uses for the stored row (the table or its alias).
    alias: String,
    target: Option<Vec<String>>,
    /// (column, SQL expression) pairs.
    assignments: Vec<(String, String)>,
    selection: Option<Expr>,
}

impl Upsert {
    pub(crate) fn new(
        insert: &Insert,
        target: Option<ConflictTarget>,
        update: DoUpdate,
    ) -> ServerResult<Self> {
        let TableObject::TableName(name) = &insert.table else {
            return Err(ServerError::NotSupported(
                "INSERT into a table function".into(),
            ));
        };
        let (schema, table) = object_name(name)?;
        let alias = insert
            .table_alias
            .as_ref()
            .map(|a| ident_name(&a.alias))
            .unwrap_or_else(|| table.clone());
        let target = match target {
            Some(ConflictTarget::Columns(cols)) => Some(cols.iter().map(ident_name).collect()),
            Some(ConflictTarget::OnConstraint(_)) => None,
            None => {
                return Err(ServerError::Syntax(
                    "ON CONFLICT DO UPDATE requires inference specification or constraint name"
                        .into(),
                ))
            }
        };
        let mut assignments = Vec::new();
        for a in update.assignments {
            let AssignmentTarget::ColumnName(c) = a.target else {
                return Err(ServerError::NotSupported(
                    "tuple assignments in ON CONFLICT".into(),
                ));
            };
            let column =
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .map(ident_name)
                    .unwrap_or_default();
            assignments.push((column, a.value.to_string()));
        }
        Ok(Upsert {
            schema,
            table,
            alias,
            target,
            assignments,
            selection: update.selection,
        })
    }
}

impl Session {
    /// Updates the stored rows that `proposed` rows collided with, wherever they are led;
    /// returns how many were updated and their new versions.
    pub(super) async fn apply_upsert(
        &self,
        upsert: &Upsert,
        proposed: Vec<RecordBatch>,
        txn: Arc<Txn>,
        autocommit: bool,
    ) -> ServerResult<(u64, Vec<RecordBatch>)> {
        let catalog = self.meta.catalog();
        let def = catalog
            .table(&upsert.schema, &upsert.table)
            .ok_or_else(|| shoal_coord::CoordError::RelationNotFound(upsert.table.clone()))?;
        let handle = TableHandle::new(Arc::new(def.clone()));
        let key_names: Vec<String> = handle
            .key_columns
            .iter()
            .map(|i| handle.schema.field(*i).name().clone())
            .collect();
        if let Some(target) = &upsert.target {
            let mut t = target.clone();
            let mut k = key_names.clone();
            t.sort();
            k.sort();
            if t != k {
                return Err(ServerError::NotSupported(
                    "ON CONFLICT on columns other than the primary key".into(),
                ));
            }
        }
        let proposed: Vec<RecordBatch> =
            proposed.into_iter().filter(|b| b.num_rows() > 0).collect();
        let Some(first) = proposed.first() else {
            return Ok((0, Vec::new()));
        };
        let excluded = Arc::new(MemTable::try_new(first.schema(), vec![proposed])?);
        let state = self.statement_state(txn.clone(), DmlOptions::default());
        let ctx = scratch_context(state, excluded)?;
        let alias = &upsert.alias;
        let columns: Vec<String> = handle
            .schema
            .fields()
            .iter()
            .map(|f| {
                let name = f.name();
                match upsert.assignments.iter().find(|(c, _)| c == name) {
                    Some((_, value)) => format!("{value} AS \"{name}\""),
                    None => format!("\"{alias}\".\"{name}\""),
                }
            })
            .collect();
        let join: Vec<String> = key_names
            .iter()
            .map(|k| format!("\"{alias}\".\"{k}\" = excluded.\"{k}\""))
            .collect();
        let mut sql = format!(
            "SELECT {}, \"{alias}\".{} FROM \"{}\".\"{DML_TABLE_PREFIX}{}\" AS \"{alias}\" JOIN {SCRATCH_TABLE} AS excluded ON {}",
            columns.join(", "),
            shoal_executor::ROW_KEY_COLUMN,
            upsert.schema,
            def.id,
            join.join(" AND ")
        );
        if let Some(w) = &upsert.selection {
            sql.push_str(&format!(" WHERE {w}"));
        }
        let batches = ctx.sql(&sql).await?.collect().await?;
        let visible = handle.schema.fields().len();
        let mut fields = handle.nullable_schema().fields().to_vec();
        fields.push(Arc::new(Field::new(
            shoal_executor::ROW_KEY_COLUMN,
            DataType::Binary,
            false,
        )));
        let schema = Arc::new(Schema::new(fields));
        let mut updates = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut columns = Vec::with_capacity(visible + 1);
            for (i, field) in schema.fields().iter().enumerate() {
                columns.push(cast(batch.column(i), field.data_type()).map_err(ExecError::from)?);
            }
            updates.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
        let forward = self
            .node
            .remote
            .clone()
            .map(|remote| Forwarding { remote, autocommit });
        Ok(shoal_executor::update_by_row_key(
            handle,
            txn,
            self.node.store.clone(),
            self.node.row_ids.clone(),
            self.node.cluster.local_node(),
            forward,
            updates,
        )
        .await?)
    }
}
