//! `pg_settings`: the session's settings, as `SHOW ALL` lists them, in PostgreSQL 15's columns.
//!
//! The table is shared by every session of a node, but each scan reads the settings of the
//! session that runs the query: the session is found in the query's configuration, where
//! [`crate::register_session_functions`] puts it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::pg_relations::text_list;
use crate::SessionInfo;

/// The session a query runs in, kept in its configuration.
pub(crate) struct SessionExtension(pub(crate) Arc<dyn SessionInfo>);

#[derive(Debug)]
pub(crate) struct PgSettingsTable {
    schema: SchemaRef,
}

impl PgSettingsTable {
    pub(crate) fn new() -> Self {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        PgSettingsTable {
            schema: Arc::new(Schema::new(vec![
                text("name"),
                text("setting"),
                text("unit"),
                text("category"),
                text("short_desc"),
                text("extra_desc"),
                text("context"),
                text("vartype"),
                text("source"),
                text("min_val"),
                text("max_val"),
                Field::new("enumvals", text_list(), true),
                text("boot_val"),
                text("reset_val"),
                text("sourcefile"),
                Field::new("sourceline", DataType::Int32, true),
                Field::new("pending_restart", DataType::Boolean, true),
            ])),
        }
    }

    fn rows(&self, settings: &[(String, String)]) -> DfResult<RecordBatch> {
        let n = settings.len();
        let column = |f: &dyn Fn(&str, &str) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from_iter(
                settings.iter().map(|(name, value)| f(name, value)),
            ))
        };
        let none = |_: &str, _: &str| None::<String>;
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                column(&|name, _| Some(name.to_string())),
                column(&|_, value| Some(value.to_string())),
                column(&none),
                column(&none),
                column(&none),
                column(&none),
                column(&|_, _| Some("user".into())),
                column(&|_, value| Some(vartype(value).into())),
                column(&|_, _| Some("default".into())),
                column(&none),
                column(&none),
                datafusion::arrow::array::new_null_array(self.schema.field(11).data_type(), n),
                // What the setting was at startup and at session start is not kept apart
                // from what it is now.
                column(&none),
                column(&none),
                column(&none),
                Arc::new(Int32Array::from(vec![None; n])),
                Arc::new(BooleanArray::from(vec![Some(false); n])),
            ],
        )?)
    }
}

/// The kind of value a setting takes, guessed from its value as PostgreSQL would declare it.
fn vartype(value: &str) -> &'static str {
    if matches!(value, "on" | "off") {
        "bool"
    } else if value.parse::<i64>().is_ok() {
        "integer"
    } else if value.parse::<f64>().is_ok() {
        "real"
    } else {
        "string"
    }
}

#[async_trait]
impl TableProvider for PgSettingsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Planning outside a session (no settings to show) sees an empty table.
        let settings = state
            .config()
            .get_extension::<SessionExtension>()
            .map(|s| s.0.all_settings())
            .unwrap_or_default();
        let batch = self.rows(&settings)?;
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
