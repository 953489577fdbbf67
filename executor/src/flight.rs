//! Fragments between nodes over Arrow Flight.
//!
//! The sending node asks the leader of a partition for one output partition of a fragment with
//! `DoGet`; the ticket carries the partition it expects the receiver to lead (and at which
//! epoch) and the fragment in datafusion-proto's encoding. The leader refuses with
//! `FAILED_PRECONDITION` when it does not lead that partition at that epoch (the sender then
//! re-reads its catalog and tries again), otherwise it rebuilds the fragment over its own
//! storage, runs it, and streams the Arrow batches back. Errors carry their SQLSTATE in the
//! `x-shoal-sqlstate` metadata, so a client sees the leader's error as if it were local.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::arrow::array::UInt64Array;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use shoal_coord::{ClusterView, MetaStore, NodeId};
use shoal_storage::Store;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::forwarded_writes::{RowsHeader, StatementHeader, Written};
use crate::fragment_codec::FragmentCodec;
use crate::fragment_exec::scan_leaf;
use crate::partition_moves::partition_copy;
use crate::routed_writes::write_rows;
use crate::two_phase::{
    PartRef, Parts, SpanningTxn, ABORT_ACTION, COMMIT_ACTION, PREPARE_ACTION, ROLLBACK_TO_ACTION,
};
use crate::{ExecError, RowIdAllocator, TableHandle, TableWriter};

/// Largest Flight message either side accepts (batches are split well below it).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const SQLSTATE_HEADER: &str = "x-shoal-sqlstate";
/// The action that runs another node's UPDATE or DELETE here (see
/// [`crate::forwarded_writes`]).
pub(crate) const WRITE_ACTION: &str = "write";
/// Every request carries the cluster's secret: the Flight port serves no one else.
const SECRET_HEADER: &str = "x-shoal-cluster-secret";
/// Attempts to reach a partition's leader before giving up (backoff doubles from 50 ms).
const ATTEMPTS: u32 = 6;

/// What the receiver must lead, and what to run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TicketHeader {
    table_id: u32,
    partition: u32,
    epoch: u64,
    leader: NodeId,
    /// The fragment's output partition to run.
    output_partition: usize,
    /// The sending session's `shoal.gpu`, applied by the leader to the fragment.
    #[serde(default)]
    gpu_mode: Option<String>,
    /// The transaction whose part (on the leader) the fragment reads through, so that a
    /// transaction sees the rows it wrote there.
    #[serde(default)]
    part: Option<PartRef>,
    /// Not a fragment: the partition's stored entries, for the node it moves to.
    #[serde(default)]
    copy: bool,
    /// The other tables of a co-partitioned join, each with the epoch at which the receiver
    /// must lead its partition `partition` too.
    #[serde(default)]
    also: Vec<(u32, u64)>,
}

impl TicketHeader {
    /// The ticket of a pull of a moving partition from its leader.
    pub(crate) fn partition_copy(
        table_id: u32,
        partition: u32,
        epoch: u64,
        leader: NodeId,
    ) -> Self {
        TicketHeader {
            table_id,
            partition,
            epoch,
            leader,
            output_partition: 0,
            gpu_mode: None,
            part: None,
            copy: true,
            also: Vec::new(),
        }
    }
}

/// `header length (u32 LE) | header | payload`: a ticket (JSON header, fragment in
/// datafusion-proto's encoding) or a statement for a transaction's part (its id, the plan).
pub(crate) fn frame(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(4 + header.len() + payload.len());
    framed.extend_from_slice(&(header.len() as u32).to_le_bytes());
    framed.extend_from_slice(header);
    framed.extend_from_slice(payload);
    framed
}

pub(crate) fn unframe(framed: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = framed
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u32::from_le_bytes(b) as usize)?;
    let header = framed.get(4..4 + len)?;
    Some((header, &framed[4 + len..]))
}

pub(crate) fn encode_ticket(header: &TicketHeader, plan: &[u8]) -> Vec<u8> {
    frame(&serde_json::to_vec(header).unwrap_or_default(), plan)
}

fn decode_ticket(ticket: &[u8]) -> Result<(TicketHeader, &[u8]), Status> {
    let bad = || Status::invalid_argument("malformed fragment ticket");
    let (header, plan) = unframe(ticket).ok_or_else(bad)?;
    let header = serde_json::from_slice(header).map_err(|_| bad())?;
    Ok((header, plan))
}

/// A statement sent to run here: its header and the plan.
fn decode_statement(body: &[u8]) -> Result<(StatementHeader, &[u8]), Status> {
    let bad = || Status::invalid_argument("malformed statement");
    let (header, plan) = unframe(body).ok_or_else(bad)?;
    Ok((serde_json::from_slice(header).map_err(|_| bad())?, plan))
}

/// A leader's answer to a forwarded write, as the messages of its response.
fn answer_messages(written: Written) -> Result<Vec<Vec<u8>>, Status> {
    written
        .into_messages()
        .map_err(|e| Status::internal(e.to_string()))
}

/// The receiving side: runs fragments for the partitions this node leads.
pub struct FragmentService {
    /// The token every request must carry (the cluster's secret).
    secret: String,
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) local_node: NodeId,
    pub(crate) store: Store,
    row_ids: Arc<RowIdAllocator>,
    /// The node's base query context: the functions fragments may call.
    context: SessionContext,
    /// The server's mapping of errors to SQLSTATEs.
    sqlstate_of: fn(&DataFusionError) -> &'static str,
    /// Memory one fragment may use (the node's per-statement limit).
    memory_limit: usize,
    /// This node's parts of transactions run by nodes.
    pub(crate) parts: Arc<Parts>,
    /// How this node reaches the others (to pull a partition moving here).
    pub(crate) remote: Arc<RemoteFragments>,
}

impl FragmentService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster: &dyn ClusterView,
        meta: Arc<dyn MetaStore>,
        store: Store,
        row_ids: Arc<RowIdAllocator>,
        context: SessionContext,
        sqlstate_of: fn(&DataFusionError) -> &'static str,
        memory_limit: usize,
        remote: Arc<RemoteFragments>,
    ) -> Self {
        let local_node = cluster.local_node();
        FragmentService {
            secret: cluster.secret().to_string(),
            meta,
            local_node,
            store,
            row_ids,
            context,
            sqlstate_of,
            memory_limit,
            parts: remote.parts.clone(),
            remote,
        }
    }

    pub(crate) fn exec_status(&self, e: ExecError) -> Status {
        self.error_status(&DataFusionError::External(Box::new(e)))
    }

    /// A task context for one request, with a memory pool of its own: a fragment that needs
    /// more than the limit fails (53200) instead of starving the node.
    fn task_context(&self) -> Result<Arc<TaskContext>, Status> {
        let state = self.context.state();
        let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(self.memory_limit)))
            .build_arc()
            .map_err(|e| self.error_status(&e))?;
        Ok(SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .build()
            .task_ctx())
    }

    /// The tonic service to serve on the node's Flight address.
    pub fn into_server(self) -> FlightServiceServer<FragmentService> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn error_status(&self, e: &DataFusionError) -> Status {
        error_status(e, self.sqlstate_of)
    }

    /// Refuses a request that does not carry the cluster's secret.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let shown = request
            .metadata()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if self.secret.is_empty() || !same_bytes(shown, self.secret.as_bytes()) {
            return Err(Status::unauthenticated("not a node of this cluster"));
        }
        Ok(())
    }
}

/// A write sent here for partitions this node does not lead (any more): the sender's catalog
/// is older than this node's, and the statement is to be planned again.
fn stale_routing(e: ExecError) -> ExecError {
    match e {
        ExecError::PartitionsElsewhere { table, .. } => ExecError::LeaderChanged { table },
        other => other,
    }
}

/// Compares in time independent of where the inputs differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `message` as a request carrying the cluster's secret.
pub(crate) fn with_secret<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = secret.parse() {
        request.metadata_mut().insert(SECRET_HEADER, value);
    }
    request
}

/// An error as a status, its SQLSTATE in the metadata.
fn error_status(e: &DataFusionError, sqlstate_of: fn(&DataFusionError) -> &'static str) -> Status {
    let mut status = Status::internal(e.to_string());
    if let Ok(code) = sqlstate_of(e).parse() {
        status.metadata_mut().insert(SQLSTATE_HEADER, code);
    }
    status
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A response of one message.
fn single<T: Send + 'static>(message: T) -> Response<BoxStream<T>> {
    Response::new(Box::pin(futures::stream::once(async { Ok(message) })))
}

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not part of Shoal's fragment service"
    )))
}

#[tonic::async_trait]
impl FlightService for FragmentService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.authenticate(&request)?;
        let ticket = request.into_inner().ticket;
        let (header, plan) = decode_ticket(&ticket)?;
        let catalog = self.meta.catalog();
        // The partition of `table` this node leads at `epoch`, if it does.
        let led_at = |table: u32, epoch: u64| {
            catalog
                .table_by_id(table)
                .and_then(|t| t.partitions.get(header.partition as usize))
                .filter(|p| p.leader == self.local_node && p.epoch == epoch)
        };
        let led = led_at(header.table_id, header.epoch);
        let leads_also = header.also.iter().all(|(t, e)| led_at(*t, *e).is_some());
        if led.is_none() || header.leader != self.local_node || !leads_also {
            return Err(Status::failed_precondition(format!(
                "node {} does not lead partition {} of table {} at epoch {}",
                self.local_node, header.partition, header.table_id, header.epoch
            )));
        }
        // A copy for a move or a new follower: the partition stays closed to writers until
        // the coordinator that asked for it reopens it here (or hands it over).
        if header.copy {
            let pages =
                partition_copy(self.store.clone(), header.table_id, header.partition).await?;
            let flight = FlightDataEncoderBuilder::new()
                .build(pages)
                .map_err(Status::from);
            return Ok(Response::new(Box::pin(flight)));
        }
        let txn = match &header.part {
            Some(part) => self.parts.txn_for(part).map_err(|e| self.exec_status(e))?,
            None => Arc::new(self.store.begin()),
        };
        let task = self.task_context()?;
        let codec = FragmentCodec::decoder(catalog, txn);
        let fragment = codec
            .decode(plan, &task)
            .map_err(|e| self.error_status(&e))?;
        // This node's device runs what it can of the fragment, as the sender's session asked.
        let gpu_mode = header
            .gpu_mode
            .as_deref()
            .and_then(crate::GpuMode::parse)
            .unwrap_or(crate::GpuMode::Auto);
        // Checked arithmetic does not travel in the encoded plan.
        let fragment =
            crate::CheckedArithmetic::rewrite_plan(fragment).map_err(|e| self.error_status(&e))?;
        let fragment = crate::OffloadToDevice::rewrite_plan(fragment, gpu_mode)
            .map_err(|e| self.error_status(&e))?;
        let batches = fragment
            .execute(header.output_partition, task)
            .map_err(|e| self.error_status(&e))?;
        let sqlstate_of = self.sqlstate_of;
        let batches =
            batches.map_err(move |e| FlightError::Tonic(Box::new(error_status(&e, sqlstate_of))));
        let flight = FlightDataEncoderBuilder::new()
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("Handshake")
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported("GetSchema")
    }

    /// Rows another node sent here to insert, update or delete, because this node leads
    /// their partitions: written in a part of the sender's transaction, or in a transaction
    /// of this node committed at once.
    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.authenticate(&request)?;
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty write"))?;
        let header: RowsHeader = first
            .flight_descriptor
            .as_ref()
            .and_then(|d| serde_json::from_slice(&d.cmd).ok())
            .ok_or_else(|| Status::invalid_argument("write without a header"))?;
        let flight = futures::stream::once(async { Ok(first) })
            .chain(incoming)
            .map_err(FlightError::from);
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(flight)
            .try_collect()
            .await
            .map_err(Status::from)?;
        let catalog = self.meta.catalog();
        let def = catalog
            .table_by_id(header.table_id)
            .ok_or_else(|| Status::failed_precondition("table not in this node's catalog"))?;
        let table = TableHandle::new(Arc::new(def.clone()));
        let part = match &header.part {
            Some(part) => Some(self.parts.txn_for(part).map_err(|e| self.exec_status(e))?),
            None => None,
        };
        let (store, row_ids, local) = (self.store.clone(), self.row_ids.clone(), self.local_node);
        let written = tokio::task::spawn_blocking(move || -> Result<Written, ExecError> {
            let txn = part.clone().unwrap_or_else(|| Arc::new(store.begin()));
            let writer = TableWriter::new(&table, &txn, &store, &row_ids, local);
            let written = write_rows(&writer, &table, header.write, &batches, header.returning)?;
            if part.is_none() {
                txn.commit()?;
            }
            Ok(written)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| self.exec_status(stale_routing(e)))?;
        let messages = answer_messages(written)?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            messages.into_iter().map(|m| {
                Ok(PutResult {
                    app_metadata: m.into(),
                })
            }),
        ))))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("DoExchange")
    }

    /// `write`: an UPDATE or DELETE plan of another node's autocommit statement that reads
    /// only partitions this node leads: run here, reads and writes in one transaction.
    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.authenticate(&request)?;
        let action = request.into_inner();
        let answer = match self.partition_action(&action).await? {
            Some(answer) => Some(answer),
            None => match self.replication_action(&action).await? {
                Some(answer) => Some(answer),
                None => self.index_action(&action).await?,
            },
        };
        if let Some(answer) = answer {
            return Ok(single(arrow_flight::Result {
                body: answer.into(),
            }));
        }
        if action.r#type == ROLLBACK_TO_ACTION {
            let part: PartRef = serde_json::from_slice(&action.body)
                .map_err(|_| Status::invalid_argument("malformed part"))?;
            let parts = self.parts.clone();
            tokio::task::spawn_blocking(move || parts.rollback_to(&part.id, part.statement))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| self.exec_status(e))?;
            return Ok(single(arrow_flight::Result::default()));
        }
        let outcome = match action.r#type.as_str() {
            WRITE_ACTION => None,
            PREPARE_ACTION => Some(None),
            COMMIT_ACTION => Some(Some(true)),
            ABORT_ACTION => Some(Some(false)),
            other => return unsupported(&format!("action {other}")),
        };
        if let Some(outcome) = outcome {
            let id = String::from_utf8_lossy(&action.body).into_owned();
            let parts = self.parts.clone();
            tokio::task::spawn_blocking(move || match outcome {
                None => parts.prepare(&id),
                Some(commit) => parts.finish(&id, commit),
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| self.exec_status(e))?;
            return Ok(single(arrow_flight::Result::default()));
        }
        let (header, plan) = decode_statement(&action.body)?;
        let txn = match &header.part {
            Some(part) => self.parts.txn_for(part).map_err(|e| self.exec_status(e))?,
            None => Arc::new(self.store.begin()),
        };
        let returned = header.returning.then(crate::ReturningSink::default);
        let codec = FragmentCodec::write_decoder(
            self.meta.catalog(),
            txn.clone(),
            self.store.clone(),
            self.row_ids.clone(),
            self.local_node,
            returned.clone(),
        );
        let task = self.task_context()?;
        let statement = codec
            .decode(plan, &task)
            .map_err(|e| self.error_status(&e))?;
        // Sent by a node whose catalog was older: the rows it means may have moved away.
        let reads_elsewhere = scan_leaf(&statement).is_none_or(|scan| {
            let partitions = &scan.table().def.partitions;
            scan.table_partitions().is_none_or(|read| {
                read.iter().any(|p| {
                    partitions
                        .get(*p as usize)
                        .is_none_or(|d| d.leader != self.local_node || d.moving_to.is_some())
                })
            })
        });
        if reads_elsewhere {
            let table = scan_leaf(&statement)
                .map(|s| s.table().qualified_name())
                .unwrap_or_default();
            return Err(self.exec_status(ExecError::LeaderChanged { table }));
        }
        let counts: Vec<RecordBatch> = statement
            .execute(0, task)
            .map_err(|e| self.error_status(&e))?
            .try_collect()
            .await
            .map_err(|e| self.error_status(&e))?;
        let count: u64 = counts
            .iter()
            .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
            .flat_map(|c| c.iter().flatten())
            .sum();
        if header.part.is_none() {
            tokio::task::spawn_blocking(move || txn.commit())
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| self.exec_status(ExecError::from(e)))?;
        }
        let messages = answer_messages(Written {
            rows: count,
            returned: returned
                .map(|r| r.lock().drain(..).collect())
                .unwrap_or_default(),
            conflicting: Vec::new(),
        })?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            messages
                .into_iter()
                .map(|m| Ok(arrow_flight::Result { body: m.into() })),
        ))))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("ListActions")
    }
}

/// The sending side: where partitions are led and how to reach their leaders.
pub struct RemoteFragments {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) cluster: Arc<dyn ClusterView>,
    /// One HTTP/2 channel per node address, opened on first use.
    channels: Mutex<HashMap<String, FlightServiceClient<Channel>>>,
    /// Transactions of this node that wrote on other nodes, by local transaction id.
    pub(crate) spanning: Mutex<HashMap<u64, Arc<SpanningTxn>>>,
    /// This node's parts of transactions (its own prepared writes land here when their
    /// decision cannot be learned).
    pub(crate) parts: Arc<Parts>,
    /// What each follower of the partitions this node leads acknowledged.
    pub(crate) acknowledged: crate::replica_status::Acknowledged,
    /// Parts of this node's transactions still to be told how they ended.
    pub(crate) untold: Mutex<Vec<crate::two_phase::Untold>>,
}

impl std::fmt::Debug for RemoteFragments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteFragments(node {})", self.local_node())
    }
}

/// One output partition of a fragment, to be run by its partition's leader.
pub(crate) struct FragmentRequest {
    /// The tables read (id, qualified name): one, or those of a co-partitioned join.
    pub tables: Vec<(u32, String)>,
    /// The partition read, in every table.
    pub partition: u32,
    pub output_partition: usize,
    pub plan: Arc<Vec<u8>>,
    pub gpu_mode: crate::GpuMode,
    /// The reading transaction (its local id) and its current statement.
    pub txn_id: u64,
    pub statement: u64,
}

impl RemoteFragments {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        cluster: Arc<dyn ClusterView>,
        parts: Arc<Parts>,
    ) -> Arc<Self> {
        Arc::new(RemoteFragments {
            meta,
            cluster,
            channels: Mutex::new(HashMap::new()),
            spanning: Mutex::new(HashMap::new()),
            parts,
            acknowledged: Default::default(),
            untold: Mutex::new(Vec::new()),
        })
    }

    /// The part of local transaction `txn_id` that `node` holds, if it holds one, for the
    /// transaction's statement `statement`.
    fn part_at(&self, txn_id: u64, statement: u64, node: NodeId) -> Option<PartRef> {
        let spanning = self.spanning.lock().get(&txn_id).cloned()?;
        spanning.use_part(node, statement)
    }

    pub fn local_node(&self) -> NodeId {
        self.cluster.local_node()
    }

    /// The partition's leader and epoch in this node's current catalog.
    pub(crate) fn leader_of(&self, table_id: u32, partition: u32) -> Option<(NodeId, u64)> {
        self.meta
            .catalog()
            .table_by_id(table_id)
            .and_then(|t| t.partitions.get(partition as usize))
            .map(|p| (p.leader, p.epoch))
    }

    /// Where `node` takes fragments, if it is alive.
    pub(crate) fn address_of(&self, node: NodeId) -> Option<String> {
        self.cluster
            .nodes()
            .into_iter()
            .find(|n| n.info.id == node && n.live && !n.info.flight_address.is_empty())
            .map(|n| n.info.flight_address)
    }

    /// A client for `leader`, to which a write is forwarded, or the error the statement gets
    /// when that node is down.
    pub(crate) fn leader_client(
        &self,
        leader: NodeId,
        table: &str,
    ) -> Result<FlightServiceClient<Channel>, DataFusionError> {
        let Some(address) = self.address_of(leader) else {
            return Err(DataFusionError::External(Box::new(
                ExecError::WriteLeaderDown {
                    table: table.to_string(),
                    node: leader,
                },
            )));
        };
        self.client(&address)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    pub(crate) fn client(&self, address: &str) -> Result<FlightServiceClient<Channel>, ExecError> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let endpoint = Channel::from_shared(format!("http://{address}"))
            .map_err(|e| ExecError::TaskFailed(format!("bad node address {address}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            // A connection whose packets stopped (a partition, a node frozen or gone without
            // a reset) fails its requests within seconds instead of holding them, and the
            // transactions waiting on them, until TCP gives up minutes later.
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let client = FlightServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        channels.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Asks the partition's leader to run the request and streams its batches. A leader that
    /// refuses (it does not lead at that epoch) or cannot be reached is asked again, after
    /// re-reading the catalog, with backoff; a leader that is down fails the request at once.
    pub(crate) async fn fetch(
        self: Arc<Self>,
        request: FragmentRequest,
    ) -> Result<impl Stream<Item = Result<RecordBatch, DataFusionError>>, DataFusionError> {
        let (table_id, table_name) = request.tables.first().cloned().unwrap_or_default();
        let leader_changed = || {
            DataFusionError::External(Box::new(ExecError::LeaderChanged {
                table: table_name.clone(),
            }))
        };
        let unavailable = |node: NodeId, reason: String| {
            DataFusionError::External(Box::new(ExecError::PartitionUnavailable {
                table: table_name.clone(),
                partition: request.partition,
                node,
                reason,
            }))
        };
        let mut delay = Duration::from_millis(50);
        let mut last_refusal = String::new();
        for _ in 0..ATTEMPTS {
            let (leader, epoch) = self
                .leader_of(table_id, request.partition)
                .ok_or_else(leader_changed)?;
            if leader == self.local_node() {
                // Leadership moved here while the statement ran: it must be planned again.
                return Err(leader_changed());
            }
            // A join's other tables: their partitions must still be led by the same node.
            let mut also = Vec::new();
            for (table, _) in request.tables.iter().skip(1) {
                match self.leader_of(*table, request.partition) {
                    Some((l, e)) if l == leader => also.push((*table, e)),
                    _ => return Err(leader_changed()),
                }
            }
            let Some(address) = self.address_of(leader) else {
                return Err(unavailable(leader, "is down".into()));
            };
            let mut client = self
                .client(&address)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let header = TicketHeader {
                table_id,
                partition: request.partition,
                epoch,
                leader,
                output_partition: request.output_partition,
                gpu_mode: Some(request.gpu_mode.as_str().to_string()),
                part: self.part_at(request.txn_id, request.statement, leader),
                copy: false,
                also,
            };
            let ticket = Ticket {
                ticket: encode_ticket(&header, &request.plan).into(),
            };
            match client
                .do_get(with_secret(ticket, self.cluster.secret()))
                .await
            {
                Ok(response) => {
                    let flight = response.into_inner().map_err(FlightError::from);
                    let batches = FlightRecordBatchStream::new_from_flight_data(flight)
                        .map_err(move |e| remote_error(e, leader));
                    return Ok(batches);
                }
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::FailedPrecondition | tonic::Code::Unavailable
                    ) =>
                {
                    last_refusal = status.message().to_string();
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(status) => {
                    return Err(remote_error(FlightError::Tonic(Box::new(status)), leader))
                }
            }
        }
        let leader = self
            .leader_of(table_id, request.partition)
            .map(|(l, _)| l)
            .unwrap_or(0);
        Err(unavailable(
            leader,
            format!("did not take the fragment after {ATTEMPTS} attempts: {last_refusal}"),
        ))
    }
}

/// A leader's error as this node reports it: its message and SQLSTATE.
pub(crate) fn remote_error(e: FlightError, node: NodeId) -> DataFusionError {
    DataFusionError::External(Box::new(remote_exec_error(e, node)))
}

pub(crate) fn remote_exec_error(e: FlightError, node: NodeId) -> ExecError {
    let (message, sqlstate) = match &e {
        FlightError::Tonic(status) => (
            status.message().to_string(),
            status
                .metadata()
                .get(SQLSTATE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(intern_sqlstate)
                .unwrap_or("XX000"),
        ),
        other => (other.to_string(), "XX000"),
    };
    ExecError::Remote {
        node,
        sqlstate,
        message,
    }
}

/// SQLSTATEs are five characters of [0-9A-Z]; each distinct one is stored once.
fn intern_sqlstate(code: &str) -> &'static str {
    static SEEN: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    if code.len() != 5
        || !code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return "XX000";
    }
    let mut seen = SEEN.lock();
    let seen = seen.get_or_insert_with(HashSet::new);
    if let Some(known) = seen.get(code) {
        return known;
    }
    // Peers are Shoal nodes: the codes they send are the few Shoal maps errors to.
    if seen.len() >= 512 {
        return "XX000";
    }
    let leaked: &'static str = Box::leak(code.to_string().into_boxed_str());
    seen.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_garbage_is_refused() {
        let header = TicketHeader {
            table_id: 16384,
            partition: 3,
            epoch: 2,
            leader: 5,
            output_partition: 1,
            gpu_mode: Some("on".into()),
            part: Some(PartRef {
                id: "2-1700-9".into(),
                statement: 4,
            }),
            copy: false,
            also: vec![(16390, 4)],
        };
        let ticket = encode_ticket(&header, b"plan bytes");
        let (back, plan) = decode_ticket(&ticket).unwrap();
        assert_eq!((back.table_id, back.partition, back.epoch), (16384, 3, 2));
        assert_eq!((back.leader, back.output_partition), (5, 1));
        assert_eq!(back.also, vec![(16390, 4)]);
        assert_eq!(plan, b"plan bytes");
        assert!(decode_ticket(b"\xff\xff\xff\xff{}").is_err());
        assert!(decode_ticket(b"").is_err());
        assert_eq!(back.part, header.part);
        let statement = StatementHeader {
            part: header.part.clone(),
            returning: true,
        };
        let framed = frame(&serde_json::to_vec(&statement).unwrap(), b"update");
        let (back, plan) = decode_statement(&framed).unwrap();
        assert_eq!(
            (back.part, back.returning, plan),
            (header.part, true, &b"update"[..])
        );
        assert!(decode_statement(b"\x09\0\0\0short").is_err());
    }

    #[test]
    fn only_well_formed_sqlstates_are_kept() {
        assert_eq!(intern_sqlstate("22012"), "22012");
        assert_eq!(intern_sqlstate("42P01"), "42P01");
        assert_eq!(intern_sqlstate("bad"), "XX000");
        assert_eq!(intern_sqlstate("22o12"), "XX000");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
        assert!(!same_bytes(b"", b"x"));
    }
}
