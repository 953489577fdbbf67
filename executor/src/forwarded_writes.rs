//! Writes sent to the nodes that lead their rows: the sending side of rows written at a leader
//! (Flight `DoPut`: new rows to insert, or rows to update or delete by their row key, as Arrow
//! batches) and of an UPDATE or DELETE run whole at a leader (Flight `DoAction("write")`),
//! committed at once or inside a part of the sender's transaction (see [`crate::two_phase`]).
//! The receiving side is `FragmentService` in [`crate::flight`].
//!
//! A leader answers with the number of rows written, then, when asked, the rows themselves
//! (for RETURNING) and the proposed rows whose key existed (for ON CONFLICT DO UPDATE), each
//! batch in one message as an Arrow IPC stream.

use std::io::Cursor;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightData, FlightDescriptor};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use shoal_coord::NodeId;
use tonic::Status;

use crate::flight::{frame, remote_error, unframe, with_secret, WRITE_ACTION};
use crate::fragment_codec::FragmentCodec;
use crate::two_phase::PartRef;
use crate::{ConflictAction, RemoteFragments, TableHandle};

/// What a leader does with the rows of a forwarded write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RowsWrite {
    /// The rows are new rows in the table's visible schema.
    Insert(ConflictAction),
    /// The rows are new versions followed by the row key of the version they replace.
    Update,
    /// The rows are stored rows followed by their row key.
    Delete,
}

/// The descriptor of a forwarded write (the first message's command).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RowsHeader {
    pub table_id: u32,
    pub write: RowsWrite,
    /// The transaction part on the leader that takes the rows; without one, the leader
    /// commits them at once.
    pub part: Option<PartRef>,
    /// Send back the rows as written, for RETURNING.
    pub returning: bool,
}

/// The header of an UPDATE or DELETE run whole at a leader; the plan follows it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatementHeader {
    pub part: Option<PartRef>,
    pub returning: bool,
}

/// What a leader wrote for a forwarded write.
#[derive(Debug, Default)]
pub struct Written {
    pub rows: u64,
    /// The rows as written (asked for RETURNING).
    pub returned: Vec<RecordBatch>,
    /// Proposed rows whose key existed (`ON CONFLICT DO UPDATE`).
    pub conflicting: Vec<RecordBatch>,
}

/// Tags of the messages after the row count.
const RETURNED: &[u8] = b"returned";
const CONFLICTING: &[u8] = b"conflicting";

impl Written {
    /// The leader's answer, one message each: the row count, then every returned and every
    /// conflicting batch.
    pub(crate) fn into_messages(self) -> Result<Vec<Vec<u8>>, ArrowError> {
        let mut messages = vec![self.rows.to_le_bytes().to_vec()];
        for (tag, batches) in [(RETURNED, self.returned), (CONFLICTING, self.conflicting)] {
            for batch in batches.iter().filter(|b| b.num_rows() > 0) {
                messages.push(frame(tag, &ipc_bytes(batch)?));
            }
        }
        Ok(messages)
    }

    /// Reads a leader's answer back.
    fn from_messages(messages: Vec<Vec<u8>>, leader: NodeId) -> Result<Self, DataFusionError> {
        let bad = |what: &str| remote_error(FlightError::protocol(what.to_string()), leader);
        let mut messages = messages.into_iter();
        let count = messages
            .next()
            .ok_or_else(|| bad("the leader sent no row count"))?;
        let rows = <[u8; 8]>::try_from(count.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| bad("bad row count"))?;
        let mut written = Written {
            rows,
            ..Written::default()
        };
        for message in messages {
            let (tag, ipc) = unframe(&message).ok_or_else(|| bad("malformed rows"))?;
            let batches =
                StreamReader::try_new(Cursor::new(ipc), None)?.collect::<Result<Vec<_>, _>>()?;
            match tag {
                RETURNED => written.returned.extend(batches),
                CONFLICTING => written.conflicting.extend(batches),
                _ => return Err(bad("rows of an unknown kind")),
            }
        }
        Ok(written)
    }
}

/// `batch` as an Arrow IPC stream.
fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(bytes)
}

impl RemoteFragments {
    /// Sends rows of `table` to `leader`, which leads all their partitions, to insert,
    /// update or delete there: committed at once (an autocommit statement whose rows all go
    /// there) or in transaction part `part`. Not retried: a failure after sending leaves the
    /// outcome unknown, as for a timed-out statement.
    pub(crate) async fn write_rows_at(
        &self,
        leader: NodeId,
        table: &TableHandle,
        write: RowsWrite,
        rows: Vec<RecordBatch>,
        part: Option<PartRef>,
        returning: bool,
    ) -> Result<Written, DataFusionError> {
        let mut client = self.leader_client(leader, &table.qualified_name())?;
        let header = serde_json::to_vec(&RowsHeader {
            table_id: table.id(),
            write,
            part,
            returning,
        })
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let messages: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(header)))
            .build(futures::stream::iter(rows.into_iter().map(Ok)))
            .try_collect()
            .await
            .map_err(|e| remote_error(e, leader))?;
        let tonic_error = |s: Status| remote_error(FlightError::Tonic(Box::new(s)), leader);
        let answers: Vec<Vec<u8>> = client
            .do_put(with_secret(
                futures::stream::iter(messages),
                self.cluster.secret(),
            ))
            .await
            .map_err(tonic_error)?
            .into_inner()
            .map_ok(|r| r.app_metadata.to_vec())
            .try_collect()
            .await
            .map_err(tonic_error)?;
        Written::from_messages(answers, leader)
    }

    /// Runs an UPDATE or DELETE at `leader`, which leads every partition it reads, and
    /// returns what it changed: committed at once (autocommit) or in transaction part `part`.
    /// Not retried: a failure after sending leaves the outcome unknown, as for a timed-out
    /// statement.
    pub(crate) async fn write_at(
        &self,
        leader: NodeId,
        table: &TableHandle,
        statement: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        part: Option<PartRef>,
        returning: bool,
    ) -> Result<Written, DataFusionError> {
        let mut client = self.leader_client(leader, &table.qualified_name())?;
        let plan = FragmentCodec::encode(statement)?;
        let header = serde_json::to_vec(&StatementHeader { part, returning })
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let action = Action {
            r#type: WRITE_ACTION.into(),
            body: frame(&header, &plan).into(),
        };
        let tonic_error = |s: Status| remote_error(FlightError::Tonic(Box::new(s)), leader);
        let answers: Vec<Vec<u8>> = client
            .do_action(with_secret(action, self.cluster.secret()))
            .await
            .map_err(tonic_error)?
            .into_inner()
            .map_ok(|r| r.body.to_vec())
            .try_collect()
            .await
            .map_err(tonic_error)?;
        Written::from_messages(answers, leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn written_rows_travel_as_count_then_tagged_batches() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y")])),
            ],
        )
        .unwrap();
        let written = Written {
            rows: 7,
            returned: vec![batch.clone(), batch.slice(0, 0)],
            conflicting: vec![batch.slice(1, 1)],
        };
        let messages = written.into_messages().unwrap();
        assert_eq!(messages.len(), 3, "the empty batch is not sent");
        let back = Written::from_messages(messages, 2).unwrap();
        assert_eq!(back.rows, 7);
        assert_eq!(back.returned, vec![batch.clone()]);
        assert_eq!(back.conflicting, vec![batch.slice(1, 1)]);
        assert!(Written::from_messages(Vec::new(), 2).is_err());
    }
}
