//! CREATE INDEX on a table whose partitions several nodes lead: each node writes the entries
//! of the rows it holds (index entries live with their rows' partition), inside a part of the
//! creating statement's transaction, so that the whole build commits or rolls back at once
//! (see [`crate::two_phase`]). Each node also writes the table's fence in that part: a writer
//! of that node that read the fence before the build and commits after it fails with 40001
//! instead of committing a row without its entry, as on a single node.

use std::sync::Arc;

use arrow_flight::Action;
use serde::{Deserialize, Serialize};
use shoal_coord::NodeId;
use shoal_storage::{keys, Txn};
use tonic::Status;

use crate::flight::FragmentService;
use crate::two_phase::PartRef;
use crate::{build_index, ExecError, RemoteFragments, TableHandle};

/// The action that builds an index's entries on the node that receives it.
pub(crate) const BUILD_INDEX_ACTION: &str = "build_index";

#[derive(Debug, Serialize, Deserialize)]
struct IndexBuild {
    part: PartRef,
    table_id: u32,
    index: u32,
}

impl RemoteFragments {
    /// Has `node` write, in its part of `txn`, the entries of index `index` of table
    /// `table` for the rows it holds; returns how many rows it indexed.
    pub async fn build_index_at(
        &self,
        txn: &Txn,
        node: NodeId,
        table: &TableHandle,
        index: u32,
    ) -> Result<u64, ExecError> {
        let part = self.join_part(txn, node, &table.qualified_name())?;
        let body = serde_json::to_vec(&IndexBuild {
            part,
            table_id: table.id(),
            index,
        })
        .map_err(|e| ExecError::TaskFailed(e.to_string()))?;
        let answer = self.node_action(node, BUILD_INDEX_ACTION, body).await?;
        <[u8; 8]>::try_from(answer.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| ExecError::TaskFailed(format!("node {node} sent no index row count")))
    }
}

impl FragmentService {
    /// The receiving side of [`RemoteFragments::build_index_at`]: `None` for other actions.
    pub(crate) async fn index_action(&self, action: &Action) -> Result<Option<Vec<u8>>, Status> {
        if action.r#type != BUILD_INDEX_ACTION {
            return Ok(None);
        }
        let build: IndexBuild = serde_json::from_slice(&action.body)
            .map_err(|_| Status::invalid_argument("malformed index build"))?;
        // The creating node waited for every node to apply the catalog with the index.
        let table = self
            .meta
            .catalog()
            .table_by_id(build.table_id)
            .map(|def| TableHandle::new(Arc::new(def.clone())))
            .filter(|t| t.secondary_indexes.iter().any(|i| i.oid == build.index))
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "index {} of table {} is not in node {}'s catalog",
                    build.index, build.table_id, self.local_node
                ))
            })?;
        let txn = self
            .parts
            .txn_for(&build.part)
            .map_err(|e| self.exec_status(e))?;
        let indexed = tokio::task::spawn_blocking(move || -> Result<u64, ExecError> {
            let indexed = build_index(&table, build.index, &txn)?;
            txn.put(&keys::fence_key(table.id()), b"index")?;
            Ok(indexed)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| self.exec_status(e))?;
        Ok(Some(indexed.to_le_bytes().to_vec()))
    }
}
