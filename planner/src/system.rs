//! The `shoal` schema: Shoal's own system views, readable by any client. `shoal.partitions`
//! lists every partition with its leader, followers, configuration epoch, log position and the
//! node it is moving to, if any;
//! `shoal.nodes` every node of the cluster with its address, state and role;
//! `shoal.replicas` every copy of each partition this node leads, with its state and lag as the
//! leader knows them;
//! `shoal.partition_digests` the row count and digest of every partition copy this node holds,
//! so that replicas can be compared (it reads all of them: not for routine monitoring).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::prelude::SessionContext;
use shoal_coord::{ClusterView, MetaStore};
use shoal_executor::RemoteFragments;
use shoal_storage::Store;

use crate::computed::ComputedTable;
use crate::{PlannerError, DATABASE_NAME};

pub(crate) fn install(
    ctx: &SessionContext,
    meta: Arc<dyn MetaStore>,
    cluster: Arc<dyn ClusterView>,
    remote: Option<Arc<RemoteFragments>>,
    store: Store,
) -> Result<(), PlannerError> {
    let schema = Arc::new(MemorySchemaProvider::new());
    let (nodes_meta, local_node) = (meta.clone(), cluster.local_node());
    schema.register_table(
        "nodes".into(),
        Arc::new(ComputedTable::new(
            "shoal.nodes",
            nodes_schema(),
            Arc::new(move |schema| nodes_batch(cluster.as_ref(), nodes_meta.as_ref(), schema)),
        )),
    )?;
    let (digests_meta, digests_store) = (meta.clone(), store.clone());
    let (replicas_meta, replicas_store) = (meta.clone(), store.clone());
    schema.register_table(
        "replicas".into(),
        Arc::new(ComputedTable::new(
            "shoal.replicas",
            replicas_schema(),
            Arc::new(move |schema| {
                replicas_batch(
                    replicas_meta.as_ref(),
                    remote.as_deref(),
                    &replicas_store,
                    local_node,
                    schema,
                )
            }),
        )),
    )?;
    schema.register_table(
        "partitions".into(),
        Arc::new(ComputedTable::new(
            "shoal.partitions",
            partitions_schema(),
            Arc::new(move |schema| partitions_batch(meta.as_ref(), local_node, &store, schema)),
        )),
    )?;
    schema.register_table(
        "partition_digests".into(),
        Arc::new(ComputedTable::new(
            "shoal.partition_digests",
            digests_schema(),
            Arc::new(move |schema| {
                digests_batch(digests_meta.as_ref(), local_node, &digests_store, schema)
            }),
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

fn nodes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("node_id", DataType::Int64, false),
        Field::new("address", DataType::Utf8, false),
        Field::new("flight_address", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("coordinator", DataType::Boolean, false),
        Field::new("local", DataType::Boolean, false),
        Field::new("partitions_led", DataType::Int64, false),
        Field::new("catalog_revision", DataType::Int64, false),
        Field::new(
            "down_since",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            true,
        ),
    ]))
}

fn nodes_batch(
    cluster: &dyn ClusterView,
    meta: &dyn MetaStore,
    schema: SchemaRef,
) -> DfResult<RecordBatch> {
    let nodes = cluster.nodes();
    let catalog = meta.catalog();
    let led = |id: u64| {
        catalog
            .tables
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader == id)
            .count() as i64
    };
    let local = cluster.local_node();
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(
                nodes.iter().map(|n| n.info.id as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                nodes.iter().map(|n| n.info.sql_address.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                nodes.iter().map(|n| n.info.flight_address.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(nodes.iter().map(|n| {
                if n.live {
                    "up"
                } else {
                    "down"
                }
            }))),
            Arc::new(BooleanArray::from_iter(
                nodes.iter().map(|n| Some(n.coordinator)),
            )),
            Arc::new(BooleanArray::from_iter(
                nodes.iter().map(|n| Some(n.info.id == local)),
            )),
            Arc::new(Int64Array::from_iter_values(
                nodes.iter().map(|n| led(n.info.id)),
            )),
            Arc::new(Int64Array::from_iter_values(
                nodes.iter().map(|n| n.catalog_revision),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    nodes
                        .iter()
                        .map(|n| n.down_since_ms.map(|ms| ms as i64 * 1000)),
                )
                .with_timezone("+00:00"),
            ),
        ],
    )?)
}

fn partitions_schema() -> SchemaRef {
    partition_view_schema(vec![
        Field::new("leader", DataType::Int64, false),
        Field::new("followers", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("log_position", DataType::Int64, true),
        Field::new("moving_to", DataType::Int64, true),
    ])
}

/// One row per partition; the log position is that of this node's copy, known only for
/// partitions it leads or follows (a follower's equals its leader's once it has every
/// entry); `moving_to` names the node a partition is moving to.
fn partitions_batch(
    meta: &dyn MetaStore,
    local_node: u64,
    store: &Store,
    schema: SchemaRef,
) -> DfResult<RecordBatch> {
    let catalog = meta.catalog();
    let mut rows = Vec::new();
    for t in catalog.tables.values() {
        for p in &t.partitions {
            let holds_copy = p.leader == local_node || p.followers.contains(&local_node);
            let position = holds_copy
                .then(|| store.partition_log_position(t.id, p.index))
                .transpose()
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            rows.push((t.schema.as_str(), t.name.as_str(), p, position));
        }
    }
    let mut columns = partition_columns(rows.iter().map(|r| (r.0, r.1, r.2.index)));
    columns.extend([
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.2.leader as i64),
        )) as ArrayRef,
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
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| r.3.map(|p| p as i64)),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| r.2.moving_to.map(|n| n as i64)),
        )),
    ]);
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn digests_schema() -> SchemaRef {
    partition_view_schema(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("row_count", DataType::Int64, false),
        Field::new("digest", DataType::Utf8, false),
    ])
}

/// One row per partition copy this node holds (as leader or follower): its rows and a digest
/// of its rows and index entries, equal on every copy that holds the same data.
fn digests_batch(
    meta: &dyn MetaStore,
    local_node: u64,
    store: &Store,
    schema: SchemaRef,
) -> DfResult<RecordBatch> {
    let catalog = meta.catalog();
    let mut rows = Vec::new();
    for t in catalog.tables.values() {
        for p in &t.partitions {
            let role = if p.leader == local_node {
                "leader"
            } else if p.followers.contains(&local_node) {
                "follower"
            } else {
                continue;
            };
            let digest = store
                .partition_digest(t.id, p.index)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            rows.push((t.schema.as_str(), t.name.as_str(), p.index, role, digest));
        }
    }
    let mut columns = partition_columns(rows.iter().map(|r| (r.0, r.1, r.2)));
    columns.extend([
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))) as ArrayRef,
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.4.rows as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| format!("{:016x}", r.4.digest)),
        )),
    ]);
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn replicas_schema() -> SchemaRef {
    partition_view_schema(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("node_id", DataType::Int64, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("log_position", DataType::Int64, true),
        Field::new("lag", DataType::Int64, true),
    ])
}

/// Every copy of each partition this node leads (see `shoal_executor::ReplicaStatus`); a
/// single node leads every partition and has no followers.
fn replicas_batch(
    meta: &dyn MetaStore,
    remote: Option<&RemoteFragments>,
    store: &Store,
    local_node: u64,
    schema: SchemaRef,
) -> DfResult<RecordBatch> {
    let catalog = meta.catalog();
    let statuses = match remote {
        Some(remote) => remote.replica_statuses(store),
        None => shoal_executor::replica_statuses(&catalog, local_node, store, |_, _, _| None),
    }
    .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let named: Vec<_> = statuses
        .iter()
        .filter_map(|s| {
            let t = catalog.table_by_id(s.table_id)?;
            Some((t.schema.as_str(), t.name.as_str(), s))
        })
        .collect();
    let mut columns = partition_columns(named.iter().map(|r| (r.0, r.1, r.2.partition)));
    columns.extend([
        Arc::new(Int64Array::from_iter_values(
            named.iter().map(|r| r.2.epoch as i64),
        )) as ArrayRef,
        Arc::new(Int64Array::from_iter_values(
            named.iter().map(|r| r.2.node as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            named.iter().map(|r| r.2.role),
        )),
        Arc::new(StringArray::from_iter_values(
            named.iter().map(|r| r.2.state),
        )),
        Arc::new(Int64Array::from_iter(
            named.iter().map(|r| r.2.log_position.map(|p| p as i64)),
        )),
        Arc::new(Int64Array::from_iter(
            named.iter().map(|r| r.2.lag.map(|l| l as i64)),
        )),
    ]);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The schema of a view with a row per partition (or partition copy): the partition's table
/// and index first, then `rest`.
fn partition_view_schema(rest: Vec<Field>) -> SchemaRef {
    let mut fields = vec![
        Field::new("table_schema", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("partition", DataType::Int64, false),
    ];
    fields.extend(rest);
    Arc::new(Schema::new(fields))
}

/// The first columns of such a view, from each row's (table schema, table name, partition).
fn partition_columns<'a>(
    rows: impl Iterator<Item = (&'a str, &'a str, u32)> + Clone,
) -> Vec<ArrayRef> {
    vec![
        Arc::new(StringArray::from_iter_values(rows.clone().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.clone().map(|r| r.1))),
        Arc::new(Int64Array::from_iter_values(rows.map(|r| r.2 as i64))),
    ]
}
