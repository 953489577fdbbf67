//! DataFusion catalog over Shoal's metadata: one schema provider per schema in the catalog
//! snapshot, resolving tables to [`ShoalTable`] and views to DataFusion `ViewTable`s.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{col, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use parking_lot::RwLock;
use shoal_coord::{MetaStore, NodeId};
use shoal_executor::{RemoteFragments, RowIdAllocator};
use shoal_storage::Store;

use crate::pg_relations::LiveCatalogSchema;
use crate::table::{ShoalTable, DML_TABLE_PREFIX};

/// The single database every connection sees (current_database()).
pub const DATABASE_NAME: &str = "shoal";

pub struct ShoalCatalog {
    meta: Arc<dyn MetaStore>,
    /// The node planning here.
    local_node: NodeId,
    /// How this node reaches the others (cluster mode).
    remote: Option<Arc<RemoteFragments>>,
    store: Store,
    row_ids: Arc<RowIdAllocator>,
    /// Plans view bodies; shares this catalog, so views may read tables and other views.
    view_planner: SessionContext,
    /// Schemas served by other providers (pg_catalog).
    extra: Arc<RwLock<HashMap<String, Arc<dyn SchemaProvider>>>>,
}

impl std::fmt::Debug for ShoalCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShoalCatalog")
    }
}

impl ShoalCatalog {
    /// The same catalog seen through another metadata view (a session's, which keeps the DDL
    /// of its open transaction block private).
    pub fn with_meta(&self, meta: Arc<dyn MetaStore>) -> ShoalCatalog {
        ShoalCatalog {
            meta,
            local_node: self.local_node,
            remote: self.remote.clone(),
            store: self.store.clone(),
            row_ids: self.row_ids.clone(),
            view_planner: self.view_planner.clone(),
            extra: self.extra.clone(),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The catalog snapshot this view of the metadata shows now.
    pub(crate) fn meta_snapshot(&self) -> Arc<shoal_coord::Catalog> {
        self.meta.catalog()
    }

    /// pg_catalog with its relation catalogs (pg_class, pg_attribute, ...) computed from this
    /// catalog's metadata.
    fn pg_catalog(&self) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.extra.read().get("pg_catalog").cloned()?;
        Some(Arc::new(LiveCatalogSchema::new(
            inner,
            self.with_meta(self.meta.clone()),
        )))
    }

    pub fn new(
        meta: Arc<dyn MetaStore>,
        local_node: NodeId,
        remote: Option<Arc<RemoteFragments>>,
        store: Store,
        row_ids: Arc<RowIdAllocator>,
        view_planner: SessionContext,
    ) -> Self {
        ShoalCatalog {
            meta,
            local_node,
            remote,
            store,
            row_ids,
            view_planner,
            extra: Arc::new(RwLock::new(HashMap::new())),
        }
    }
}

impl CatalogProvider for ShoalCatalog {
    /// The `shoal` schema of system views is left out, as it is of pg_namespace: it is found
    /// by name, but information_schema and pg_tables do not offer it to BI tools as the
    /// user's data.
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.meta.catalog().schemas.keys().cloned().collect();
        names.extend(
            self.extra
                .read()
                .keys()
                .filter(|k| k.as_str() != crate::system::SYSTEM_SCHEMA)
                .cloned(),
        );
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == "pg_catalog" {
            return self.pg_catalog();
        }
        if let Some(s) = self.extra.read().get(name) {
            return Some(s.clone());
        }
        if !self.meta.catalog().schemas.contains_key(name) {
            return None;
        }
        Some(Arc::new(ShoalSchema {
            name: name.to_string(),
            catalog: self.with_meta(self.meta.clone()),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        Ok(self.extra.write().insert(name.to_string(), schema))
    }
}

struct ShoalSchema {
    name: String,
    catalog: ShoalCatalog,
}

impl std::fmt::Debug for ShoalSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShoalSchema({})", self.name)
    }
}

#[async_trait]
impl SchemaProvider for ShoalSchema {
    fn table_names(&self) -> Vec<String> {
        let catalog = self.catalog.meta.catalog();
        let tables = catalog
            .tables
            .values()
            .filter(|t| t.schema == self.name)
            .map(|t| t.name.clone());
        let views = catalog
            .views
            .values()
            .filter(|v| v.schema == self.name)
            .map(|v| v.name.clone());
        tables.chain(views).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let catalog = self.catalog.meta.catalog();
        if let Some(id) = name.strip_prefix(DML_TABLE_PREFIX) {
            let id: u32 = id
                .parse()
                .map_err(|_| DataFusionError::Plan(format!("bad table reference {name}")))?;
            return Ok(catalog.table_by_id(id).map(|t| {
                Arc::new(ShoalTable::new(
                    Arc::new(t.clone()),
                    self.catalog.local_node,
                    self.catalog.remote.clone(),
                    self.catalog.store.clone(),
                    self.catalog.row_ids.clone(),
                    true,
                )) as Arc<dyn TableProvider>
            }));
        }
        if let Some(t) = catalog.table(&self.name, name) {
            return Ok(Some(Arc::new(
                ShoalTable::new(
                    Arc::new(t.clone()),
                    self.catalog.local_node,
                    self.catalog.remote.clone(),
                    self.catalog.store.clone(),
                    self.catalog.row_ids.clone(),
                    false,
                )
                .with_defaults(&self.catalog.view_planner)?,
            )));
        }
        let Some(view) = catalog.view(&self.name, name) else {
            // pg_catalog is implicitly first on PostgreSQL's search path.
            let pg_catalog = self.catalog.pg_catalog();
            return match pg_catalog {
                Some(p) if self.name == "public" => p.table(name).await,
                _ => Ok(None),
            };
        };
        let mut plan = self
            .catalog
            .view_planner
            .sql(&view.query)
            .await?
            .into_unoptimized_plan();
        if !view.columns.is_empty() {
            let exprs: Vec<_> = plan
                .schema()
                .columns()
                .into_iter()
                .zip(view.columns.iter())
                .map(|(c, alias)| col(c).alias(alias))
                .collect();
            plan = LogicalPlanBuilder::from(plan).project(exprs)?.build()?;
        }
        Ok(Some(Arc::new(ViewTable::new(
            plan,
            Some(view.query.clone()),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        let catalog = self.catalog.meta.catalog();
        catalog.table(&self.name, name).is_some() || catalog.view(&self.name, name).is_some()
    }
}
