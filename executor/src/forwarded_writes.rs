//! Writes sent to the nodes that lead their rows: the sending side of a forwarded INSERT
//! (Flight `DoPut`, rows as Arrow batches) and of an UPDATE or DELETE run whole at a leader
//! (Flight `DoAction("write")`), committed at once or inside a part of the sender's
//! transaction (see [`crate::two_phase`]). The receiving side is `FragmentService` in
//! [`crate::flight`].

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightData, FlightDescriptor};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use shoal_coord::NodeId;
use tonic::Status;

use crate::flight::{frame, remote_error, with_secret, WRITE_ACTION, WRITE_IN_PART_ACTION};
use crate::fragment_codec::FragmentCodec;
use crate::{ConflictAction, ExecError, RemoteFragments, TableHandle};

/// What a forwarded INSERT does with a row whose key exists.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum OnConflict {
    Error,
    DoNothing,
}

impl From<OnConflict> for ConflictAction {
    fn from(c: OnConflict) -> Self {
        match c {
            OnConflict::Error => ConflictAction::Error,
            OnConflict::DoNothing => ConflictAction::DoNothing,
        }
    }
}

/// The descriptor of a forwarded INSERT (the first message's command).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InsertHeader {
    pub table_id: u32,
    pub action: OnConflict,
    /// The transaction whose part on the leader takes the rows; without one, the leader
    /// commits them at once.
    #[serde(default)]
    pub part: Option<String>,
}

impl RemoteFragments {
    /// Sends rows of an INSERT to `leader`, which leads all their partitions, and returns how
    /// many it inserted: committed at once (an autocommit statement whose rows all go there)
    /// or in transaction `part`. Not retried: a failure after sending leaves the outcome
    /// unknown, as for a timed-out statement.
    pub(crate) async fn insert_at(
        &self,
        leader: NodeId,
        table: &TableHandle,
        action: ConflictAction,
        rows: Vec<RecordBatch>,
        part: Option<String>,
    ) -> Result<u64, DataFusionError> {
        let table_name = table.qualified_name();
        let action = match action {
            ConflictAction::Error => OnConflict::Error,
            ConflictAction::DoNothing => OnConflict::DoNothing,
            ConflictAction::SetAside => {
                return Err(DataFusionError::External(Box::new(
                    ExecError::PartitionsElsewhere {
                        table: table_name,
                        local_node: self.local_node(),
                        partitions: format!("led by node {leader} (ON CONFLICT DO UPDATE)"),
                    },
                )))
            }
        };
        let mut client = self.leader_client(leader, &table_name)?;
        let header = serde_json::to_vec(&InsertHeader {
            table_id: table.id(),
            action,
            part,
        })
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let messages: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(header)))
            .build(futures::stream::iter(rows.into_iter().map(Ok)))
            .try_collect()
            .await
            .map_err(|e| remote_error(e, leader))?;
        let mut results = client
            .do_put(with_secret(
                futures::stream::iter(messages),
                self.cluster.secret(),
            ))
            .await
            .map_err(|s| remote_error(FlightError::Tonic(Box::new(s)), leader))?
            .into_inner();
        let result = results
            .message()
            .await
            .map_err(|s| remote_error(FlightError::Tonic(Box::new(s)), leader))?;
        row_count(result.map(|r| r.app_metadata), leader)
    }
}

impl RemoteFragments {
    /// Runs an UPDATE or DELETE at `leader`, which leads every partition it reads, and
    /// returns the rows it changed: committed at once (autocommit) or in transaction `part`.
    /// Not retried: a failure after sending leaves the outcome unknown, as for a timed-out
    /// statement.
    pub(crate) async fn write_at(
        &self,
        leader: NodeId,
        table: &TableHandle,
        statement: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        part: Option<String>,
    ) -> Result<u64, DataFusionError> {
        let mut client = self.leader_client(leader, &table.qualified_name())?;
        let plan = FragmentCodec::encode(statement)?;
        let action = match part {
            Some(id) => Action {
                r#type: WRITE_IN_PART_ACTION.into(),
                body: frame(id.as_bytes(), &plan).into(),
            },
            None => Action {
                r#type: WRITE_ACTION.into(),
                body: plan.into(),
            },
        };
        let tonic_error = |s: Status| remote_error(FlightError::Tonic(Box::new(s)), leader);
        let mut results = client
            .do_action(with_secret(action, self.cluster.secret()))
            .await
            .map_err(tonic_error)?
            .into_inner();
        let result = results.message().await.map_err(tonic_error)?;
        row_count(result.map(|r| r.body), leader)
    }
}

/// The row count a leader answered a forwarded write with (8 bytes, little-endian).
fn row_count(answer: Option<impl AsRef<[u8]>>, leader: NodeId) -> Result<u64, DataFusionError> {
    let bytes = answer.ok_or_else(|| {
        remote_error(
            FlightError::protocol("the leader sent no row count"),
            leader,
        )
    })?;
    <[u8; 8]>::try_from(bytes.as_ref())
        .map(u64::from_le_bytes)
        .map_err(|_| remote_error(FlightError::protocol("bad row count"), leader))
}
