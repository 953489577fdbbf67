//! `ComputedTable`: a read-only view whose rows are computed from live server state at each
//! scan (`pg_stat_activity`, `shoal.partitions`). The computation runs on a blocking thread,
//! since it may read storage.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

type Compute = Arc<dyn Fn(SchemaRef) -> DfResult<RecordBatch> + Send + Sync>;

pub(crate) struct ComputedTable {
    name: &'static str,
    schema: SchemaRef,
    compute: Compute,
}

impl ComputedTable {
    pub(crate) fn new(name: &'static str, schema: SchemaRef, compute: Compute) -> Self {
        ComputedTable {
            name,
            schema,
            compute,
        }
    }
}

impl std::fmt::Debug for ComputedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

#[async_trait]
impl TableProvider for ComputedTable {
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
        let compute = self.compute.clone();
        let schema = self.schema.clone();
        let batch = tokio::task::spawn_blocking(move || compute(schema))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema.clone(), projection.cloned())
            .map(|e| e as Arc<dyn ExecutionPlan>)
    }
}
