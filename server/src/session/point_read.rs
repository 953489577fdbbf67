//! The point-read fast path: a `SELECT ... WHERE key = value` over a full primary key
//! ([`PointSelect`]) whose row this node leads is read straight from storage in the
//! statement's transaction, with no DataFusion plan. Its answer is the one DataFusion would
//! give: same columns, same types, zero or one row.

use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::Statement;
use shoal_coord::MetaStore;
use shoal_planner::PointSelect;

use super::{Outcome, Session};
use crate::error::{ServerError, ServerResult};

impl Session {
    /// The outcome of `stmt` read through the fast path; `None` when it is not a point select
    /// or its row is led by another node (then it is planned as usual).
    pub(super) async fn point_read(
        &self,
        stmt: &Statement,
        params: Option<&ParamValues>,
    ) -> ServerResult<Option<Outcome>> {
        let Some(select) = PointSelect::recognize(stmt, &self.meta.catalog()) else {
            return Ok(None);
        };
        let Some(values) = select.key_values(params) else {
            return Ok(None);
        };
        let key = shoal_executor::point_key(&select.table, &values);
        if let Some(k) = &key {
            let leader = select
                .table
                .def
                .partitions
                .get(k.partition as usize)
                .map(|p| p.leader);
            if leader != Some(self.node.cluster.local_node()) {
                return Ok(None);
            }
        }
        let (txn, _implicit) = self.statement_txn()?;
        let PointSelect {
            table,
            projection,
            schema,
            ..
        } = select;
        // A key no stored row can have (NULL, out of range) reads nothing. A row in memory is
        // read here; one on disk is read on a blocking thread.
        let batch =
            match shoal_executor::read_point_if_cached(&table, &txn, key.as_ref(), &projection)? {
                Some(batch) => batch,
                None => tokio::task::spawn_blocking(move || {
                    shoal_executor::read_point(&table, &txn, key.as_ref(), &projection)
                })
                .await
                .map_err(|e| ServerError::Internal(e.to_string()))??,
            };
        self.node.metrics.point_reads.inc();
        // The fields carry the select list's names; the columns are the decoded ones.
        let batch = datafusion::arrow::record_batch::RecordBatch::try_new_with_options(
            schema.clone(),
            batch.columns().to_vec(),
            &datafusion::arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?;
        Ok(Some(super::transaction::rows_outcome(
            schema,
            vec![batch],
            "SELECT",
        )))
    }
}
