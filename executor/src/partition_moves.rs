//! Moving a partition's leadership to another node, with its rows (rebalancing).
//!
//! The coordinator runs [`RemoteFragments::move_partition`]: it marks the partition moving in
//! the catalog, asks the new node to pull it (`DoAction("pull_partition")`), hands the
//! partition over with a new epoch, and asks the old leader to drop its copy. The new node
//! pulls with a `DoGet` ticket flagged `copy`: the old leader stops new writers of the
//! partition, waits for the open ones to finish (so the copy misses no commit) and streams
//! the partition's stored entries (`key`, `value` binary columns), which the new node stores
//! as they are. Until the hand-over, reads go on at the old leader and writes to the
//! partition fail with 40001; afterwards the old leader refuses fragments for it (epoch
//! check) and senders ask the new one. A move that fails on the way is given up: the old
//! leader takes writes again and the new node drops what it copied. A move to a follower
//! copies nothing: once the old leader has closed the partition, the follower takes the log
//! entries it lacks (`FragmentService::catch_up_for_move`), and a given-up move leaves its
//! copy alone.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use datafusion::arrow::array::{Array, BinaryArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use shoal_coord::{NodeId, PartitionMove};
use shoal_storage::{Entry, Store};
use tonic::transport::Channel;
use tonic::Status;

use crate::flight::{encode_ticket, remote_exec_error, with_secret, TicketHeader};
use crate::two_phase::blocking;
use crate::{ExecError, FragmentService, RemoteFragments};

/// How long the old leader waits for the partition's open writers before giving up the move.
const DRAIN_PATIENCE: Duration = Duration::from_secs(10);

pub(crate) const PULL_ACTION: &str = "pull_partition";
pub(crate) const DROP_ACTION: &str = "drop_partition";
pub(crate) const REOPEN_ACTION: &str = "reopen_partition";

/// A partition to pull, drop or reopen; `from` and `epoch` say where a pull reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartitionRef {
    pub table_id: u32,
    pub partition: u32,
    pub from: NodeId,
    pub epoch: u64,
    /// A pull by a follower of the partition: it holds every entry the leader acknowledged,
    /// so it catches up from the leader's log instead of clearing its copy and copying the
    /// partition (a copy cut short would leave a follower without rows).
    #[serde(default)]
    pub follower: bool,
}

impl From<&PartitionMove> for PartitionRef {
    fn from(m: &PartitionMove) -> Self {
        PartitionRef {
            table_id: m.table_id,
            partition: m.partition,
            from: m.from,
            epoch: m.epoch,
            follower: false,
        }
    }
}

fn entries_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, false),
    ]))
}

/// The old leader's side of a pull: closes the partition to new writers, waits for the open
/// ones, then streams its entries page by page.
pub(crate) async fn partition_copy(
    store: Store,
    table: u32,
    partition: u32,
) -> Result<impl Stream<Item = Result<RecordBatch, FlightError>> + Send, Status> {
    let closing = store.clone();
    let drained = tokio::task::spawn_blocking(move || {
        closing.close_partition(table, partition, DRAIN_PATIENCE)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?;
    if !drained {
        let open = crate::replica_changes::describe_writers(&store, table, partition);
        tracing::warn!(
            table,
            partition,
            open,
            "open writers keep a partition from being copied"
        );
        return Err(Status::unavailable(format!(
            "transactions writing partition {partition} of table {table} did not finish within {DRAIN_PATIENCE:?} ({open})"
        )));
    }
    let pages =
        futures::stream::try_unfold((store, None::<Vec<u8>>), move |(store, after)| async move {
            let reader = store.clone();
            let page = tokio::task::spawn_blocking(move || {
                reader.partition_entries(table, partition, after.as_deref())
            })
            .await
            .map_err(|e| FlightError::ExternalError(Box::new(e)))?
            .map_err(|e| FlightError::ExternalError(Box::new(e)))?;
            let Some((last, _)) = page.last() else {
                return Ok(None);
            };
            let last = last.clone();
            let keys = BinaryArray::from_iter_values(page.iter().map(|(k, _)| k.as_slice()));
            let values = BinaryArray::from_iter_values(page.iter().map(|(_, v)| v.as_slice()));
            let batch =
                RecordBatch::try_new(entries_schema(), vec![Arc::new(keys), Arc::new(values)])
                    .map_err(FlightError::Arrow)?;
            Ok(Some((batch, (store, Some(last)))))
        });
    Ok(pages)
}

/// The entries of a pulled batch.
fn entries_of(batch: &RecordBatch) -> Result<Vec<Entry>, ExecError> {
    let column = |i: usize| {
        batch
            .columns()
            .get(i)
            .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
            .ok_or_else(|| ExecError::TaskFailed("a partition copy sent a malformed batch".into()))
    };
    let (keys, values) = (column(0)?, column(1)?);
    Ok((0..keys.len())
        .map(|i| (keys.value(i).to_vec(), values.value(i).to_vec()))
        .collect())
}

impl RemoteFragments {
    /// Runs action `kind` on `node` with `body`; the body of its answer.
    pub(crate) async fn node_action(
        &self,
        node: NodeId,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, ExecError> {
        let address = self
            .address_of(node)
            .ok_or(ExecError::PartUnreachable { node })?;
        let client = self.client(&address)?;
        self.send_action(client, kind, body)
            .await
            .map_err(|s| remote_exec_error(FlightError::Tonic(Box::new(s)), node))
    }

    /// Sends action `kind` with `body` through `client` and gathers the body of its answer.
    pub(crate) async fn send_action(
        &self,
        mut client: FlightServiceClient<Channel>,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let request = Action {
            r#type: kind.into(),
            body: body.into(),
        };
        let mut answers = client
            .do_action(with_secret(request, self.cluster.secret()))
            .await?
            .into_inner();
        let mut answer = Vec::new();
        while let Some(message) = answers.message().await? {
            answer.extend_from_slice(&message.body);
        }
        Ok(answer)
    }

    /// The new leader's side of a pull: copies the partition from `r.from` into `store`
    /// (after dropping whatever an earlier, unfinished copy left). How many entries it copied.
    pub(crate) async fn pull_partition(
        &self,
        store: Store,
        r: PartitionRef,
    ) -> Result<u64, ExecError> {
        let response = self.close_for_copy(&r).await?;
        // The leader answers once the partition is closed and its writers are done, so no
        // commit reaches this node's copy (as a follower's) after it is cleared here.
        let clearing = store.clone();
        blocking(move || Ok(clearing.drop_partition_data(r.table_id, r.partition)?)).await?;
        let flight = response.map_err(FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(flight);
        let mut copied = 0;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| remote_exec_error(e, r.from))?;
            let entries = entries_of(&batch)?;
            copied += entries.len() as u64;
            let writer = store.clone();
            blocking(move || Ok(writer.put_entries(&entries)?)).await?;
        }
        Ok(copied)
    }

    /// Asks the leader `r.from` for a copy of the partition: it answers once the partition is
    /// closed to writers and its open writers are done, then streams the partition's entries.
    /// It stays closed until the move or copy is finished or given up.
    pub(crate) async fn close_for_copy(
        &self,
        r: &PartitionRef,
    ) -> Result<tonic::Streaming<arrow_flight::FlightData>, ExecError> {
        let address = self
            .address_of(r.from)
            .ok_or(ExecError::PartUnreachable { node: r.from })?;
        let mut client = self.client(&address)?;
        let header = TicketHeader::partition_copy(r.table_id, r.partition, r.epoch, r.from);
        let ticket = Ticket {
            ticket: encode_ticket(&header, &[]).into(),
        };
        let response = client
            .do_get(with_secret(ticket, self.cluster.secret()))
            .await
            .map_err(|s| remote_exec_error(FlightError::Tonic(Box::new(s)), r.from))?;
        Ok(response.into_inner())
    }

    /// Moves a partition's leadership and rows as `m` says (see the module comment); how many
    /// entries were copied. Run by the coordinator.
    pub async fn move_partition(&self, m: PartitionMove) -> Result<u64, ExecError> {
        let (meta, start) = (self.meta.clone(), m.clone());
        blocking(move || Ok(meta.update(&mut |c| c.start_move(&start)).map(|_| ())?)).await?;
        let pull = PartitionRef {
            follower: m.old_leader_follows(&self.meta.catalog()),
            ..PartitionRef::from(&m)
        };
        let body = serde_json::to_vec(&pull).map_err(|e| ExecError::TaskFailed(e.to_string()))?;
        let pulled = self.node_action(m.to, PULL_ACTION, body).await;
        let copied = match pulled.and_then(|answer| {
            <[u8; 8]>::try_from(answer.as_slice())
                .map(u64::from_le_bytes)
                .map_err(|_| ExecError::TaskFailed("a pull answered no count".into()))
        }) {
            Ok(copied) => copied,
            Err(e) => {
                self.cancel_move(m.table_id, m.partition, m.from, m.to)
                    .await;
                return Err(e);
            }
        };
        let follows = m.old_leader_follows(&self.meta.catalog());
        let (meta, finish) = (self.meta.clone(), m.clone());
        if let Err(e) =
            blocking(move || Ok(meta.update(&mut |c| c.finish_move(&finish)).map(|_| ())?)).await
        {
            self.cancel_move(m.table_id, m.partition, m.from, m.to)
                .await;
            return Err(e);
        }
        crate::replica_status::configuration_changed();
        // A leader handing over to its follower follows in its place and keeps its copy,
        // which the closed partition kept equal to the new leader's.
        let action = if follows { REOPEN_ACTION } else { DROP_ACTION };
        let gone = PartitionRef::from(&m);
        // Left behind if this fails: harmless, as a later pull there clears it first.
        if let Err(e) = self
            .node_action(
                m.from,
                action,
                serde_json::to_vec(&gone).unwrap_or_default(),
            )
            .await
        {
            tracing::warn!(node = m.from, action, error = %e, "the old leader did not take the end of a move");
        }
        Ok(copied)
    }

    /// Gives up a move of `partition` of `table_id` from `from` to `to` (one that failed, or
    /// that a previous coordinator left unfinished).
    pub async fn cancel_move(&self, table_id: u32, partition: u32, from: NodeId, to: NodeId) {
        let meta = self.meta.clone();
        let cancelled = blocking(move || {
            Ok(meta
                .update(&mut |c| {
                    c.cancel_move(table_id, partition);
                    Ok(())
                })
                .map(|_| ())?)
        })
        .await;
        if let Err(e) = cancelled {
            tracing::warn!(error = %e, "could not give up a partition move");
            return;
        }
        let r = PartitionRef {
            table_id,
            partition,
            from,
            epoch: 0,
            follower: false,
        };
        let body = serde_json::to_vec(&r).unwrap_or_default();
        // A follower the move was for keeps its copy: it is still a follower.
        let to_follows = self
            .meta
            .catalog()
            .table_by_id(table_id)
            .and_then(|t| t.partitions.get(partition as usize))
            .is_some_and(|p| p.followers.contains(&to));
        let mut actions = vec![(from, REOPEN_ACTION)];
        if !to_follows {
            actions.push((to, DROP_ACTION));
        }
        for (node, action) in actions {
            if let Err(e) = self.node_action(node, action, body.clone()).await {
                tracing::warn!(node, action, error = %e, "a node did not take a given-up move");
            }
        }
    }
}

impl FragmentService {
    /// Pulls, drops or reopens a partition as `action` asks (see [`crate::partition_moves`]);
    /// `None` for other actions.
    pub(crate) async fn partition_action(
        &self,
        action: &Action,
    ) -> Result<Option<Vec<u8>>, Status> {
        if ![PULL_ACTION, DROP_ACTION, REOPEN_ACTION].contains(&action.r#type.as_str()) {
            return Ok(None);
        }
        let r: PartitionRef = serde_json::from_slice(&action.body)
            .map_err(|_| Status::invalid_argument("malformed partition"))?;
        let store = self.store.clone();
        if action.r#type == PULL_ACTION {
            let copied = if r.follower {
                self.catch_up_for_move(&r).await?
            } else {
                self.remote
                    .pull_partition(store, r)
                    .await
                    .map_err(|e| self.exec_status(e))?
            };
            return Ok(Some(copied.to_le_bytes().to_vec()));
        }
        if action.r#type == REOPEN_ACTION {
            store.reopen_partition(r.table_id, r.partition);
            return Ok(Some(Vec::new()));
        }
        let holds = self
            .meta
            .catalog()
            .table_by_id(r.table_id)
            .and_then(|t| t.partitions.get(r.partition as usize))
            .is_some_and(|p| p.leader == self.local_node || p.followers.contains(&self.local_node));
        if holds {
            return Err(Status::failed_precondition(format!(
                "node {} leads or follows partition {} of table {}: it keeps its rows",
                self.local_node, r.partition, r.table_id
            )));
        }
        tokio::task::spawn_blocking(move || store.drop_partition_data(r.table_id, r.partition))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| self.exec_status(ExecError::from(e)))?;
        Ok(Some(Vec::new()))
    }
}
