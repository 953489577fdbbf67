//! The `shoal` schema: Shoal's own system views, readable by any client. `shoal.partitions`
//! lists every partition with its leader, followers, configuration epoch and log position.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use shoal_coord::MetaStore;
use shoal_storage::Store;

use crate::{PlannerError, DATABASE_NAME};

pub(crate) fn install(
    ctx: &SessionContext,
    meta: Arc<dyn MetaStore>,
    store: Store,
) -> Result<(), PlannerError> {
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table(
        "partitions".into(),
        Arc::new(PartitionsTable {
            meta,
            store,
            schema: partitions_schema(),
        }),
    )?;
    let catalog = ctx
        .catalog(DATABASE_NAME)
        .ok_or_else(|| PlannerError::InvalidDefinition("catalog missing".into()))?;
    catalog.register_schema("shoal", schema)?;
    Ok(())
}

fn partitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_schema", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("partition", DataType::Int64, false),
        Field::new("leader", DataType::Int64, false),
        Field::new("followers", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("log_position", DataType::Int64, false),
    ]))
}

struct PartitionsTable {
    meta: Arc<dyn MetaStore>,
    store: Store,
    schema: SchemaRef,
}

impl std::fmt::Debug for PartitionsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shoal.partitions")
    }
}

#[async_trait]
impl TableProvider for PartitionsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let catalog = self.meta.catalog();
        let store = self.store.clone();
        let tables: Vec<_> = catalog.tables.values().cloned().collect();
        // Log positions may need a RocksDB read each: off the async runtime.
        let rows = tokio::task::spawn_blocking(move || {
            let mut rows = Vec::new();
            for t in tables {
                for p in &t.partitions {
                    let position = store.partition_log_position(t.id, p.index)?;
                    rows.push((t.schema.clone(), t.name.clone(), p.clone(), position));
                }
            }
            Ok::<_, shoal_storage::StorageError>(rows)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.2.index as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.2.leader as i64),
                )),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| {
                    r.2.followers
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                }))),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.2.epoch as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.3 as i64),
                )),
            ],
        )?;
        MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema.clone(), projection.cloned())
            .map(|e| e as Arc<dyn ExecutionPlan>)
    }
}
