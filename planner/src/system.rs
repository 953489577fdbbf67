//! The `shoal` schema: Shoal's own system views, readable by any client. `shoal.partitions`
//! lists every partition with its leader, followers, configuration epoch and log position.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::prelude::SessionContext;
use shoal_coord::MetaStore;
use shoal_storage::Store;

use crate::computed::ComputedTable;
use crate::{PlannerError, DATABASE_NAME};

pub(crate) fn install(
    ctx: &SessionContext,
    meta: Arc<dyn MetaStore>,
    store: Store,
) -> Result<(), PlannerError> {
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table(
        "partitions".into(),
        Arc::new(ComputedTable::new(
            "shoal.partitions",
            partitions_schema(),
            Arc::new(move |schema| partitions_batch(meta.as_ref(), &store, schema)),
        )),
    )?;
    let catalog = ctx
        .catalog(DATABASE_NAME)
        .ok_or_else(|| PlannerError::InvalidDefinition("catalog missing".into()))?;
    catalog.register_schema(SYSTEM_SCHEMA, schema)?;
    Ok(())
}

/// The schema of Shoal's system views.
pub(crate) const SYSTEM_SCHEMA: &str = "shoal";

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

fn partitions_batch(
    meta: &dyn MetaStore,
    store: &Store,
    schema: SchemaRef,
) -> DfResult<RecordBatch> {
    let catalog = meta.catalog();
    let mut rows = Vec::new();
    for t in catalog.tables.values() {
        for p in &t.partitions {
            let position = store
                .partition_log_position(t.id, p.index)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            rows.push((t.schema.as_str(), t.name.as_str(), p, position));
        }
    }
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
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
    )?)
}
