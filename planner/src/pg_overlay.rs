//! Shoal's additions to pg_catalog on top of `datafusion-pg-catalog`: views over live server
//! state such as `pg_stat_activity`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;
use datafusion::prelude::SessionContext;

use crate::computed::ComputedTable;

use crate::{PlannerError, DATABASE_NAME};

/// One session as `pg_stat_activity` shows it.
#[derive(Debug, Clone)]
pub struct ActivityRow {
    pub pid: i32,
    pub user: String,
    pub application_name: String,
    pub client_addr: String,
    pub client_port: i32,
    /// Microseconds since the Unix epoch.
    pub backend_start: i64,
    pub query_start: Option<i64>,
    /// `active`, `idle`, `idle in transaction`, `idle in transaction (aborted)`.
    pub state: String,
    pub query: String,
}

/// Where `pg_stat_activity` reads the live sessions from (implemented by the server).
pub trait ActivitySource: Send + Sync {
    fn sessions(&self) -> Vec<ActivityRow>;
}

pub(crate) fn install(
    ctx: &SessionContext,
    activity: Arc<dyn ActivitySource>,
) -> Result<(), PlannerError> {
    let catalog = ctx
        .catalog(DATABASE_NAME)
        .ok_or_else(|| PlannerError::InvalidDefinition("catalog missing".into()))?;
    let inner = catalog
        .schema("pg_catalog")
        .ok_or_else(|| PlannerError::InvalidDefinition("pg_catalog missing".into()))?;
    let mut extra: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    extra.insert(
        "pg_stat_activity".into(),
        Arc::new(ComputedTable::new(
            "pg_stat_activity",
            activity_schema(),
            Arc::new(move |schema| activity_batch(activity.as_ref(), schema)),
        )),
    );
    catalog.register_schema("pg_catalog", Arc::new(Overlay { inner, extra }))?;
    Ok(())
}

struct Overlay {
    inner: Arc<dyn SchemaProvider>,
    extra: HashMap<String, Arc<dyn TableProvider>>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCatalogOverlay")
    }
}

#[async_trait]
impl SchemaProvider for Overlay {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(self.extra.keys().cloned());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self.extra.get(name) {
            Some(t) => Ok(Some(t.clone())),
            None => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.extra.contains_key(name) || self.inner.table_exist(name)
    }
}

fn activity_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    Arc::new(Schema::new(vec![
        Field::new("datname", DataType::Utf8, true),
        Field::new("pid", DataType::Int32, false),
        Field::new("usename", DataType::Utf8, true),
        Field::new("application_name", DataType::Utf8, true),
        Field::new("client_addr", DataType::Utf8, true),
        Field::new("client_port", DataType::Int32, true),
        Field::new("backend_start", ts.clone(), true),
        Field::new("query_start", ts, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("query", DataType::Utf8, true),
        Field::new("backend_type", DataType::Utf8, true),
    ]))
}

fn activity_batch(source: &dyn ActivitySource, schema: SchemaRef) -> DfResult<RecordBatch> {
    let rows = source.sessions();
    let text = |f: &dyn Fn(&ActivityRow) -> Option<String>| {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let ts = |f: &dyn Fn(&ActivityRow) -> Option<i64>| {
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                .with_timezone("+00:00"),
        )
    };
    let batch = RecordBatch::try_new(
        schema,
        vec![
            text(&|_| Some(DATABASE_NAME.to_string())),
            Arc::new(Int32Array::from(
                rows.iter().map(|r| r.pid).collect::<Vec<_>>(),
            )),
            text(&|r| Some(r.user.clone())),
            text(&|r| Some(r.application_name.clone())),
            text(&|r| Some(r.client_addr.clone())),
            Arc::new(Int32Array::from(
                rows.iter().map(|r| Some(r.client_port)).collect::<Vec<_>>(),
            )),
            ts(&|r| Some(r.backend_start)),
            ts(&|r| r.query_start),
            text(&|r| Some(r.state.clone())),
            text(&|r| Some(r.query.clone())),
            text(&|_| Some("client backend".to_string())),
        ],
    )?;
    Ok(batch)
}
