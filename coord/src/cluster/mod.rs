//! Cluster mode: the catalog, the member list and the coordinator election in etcd.
//!
//! A node joins with [`EtcdCluster::join`]: it takes (or is given) a node id, registers under
//! a lease it keeps alive, reads every key of the cluster once and then follows them with one
//! watch, so that [`MetaStore::catalog`] and [`ClusterView::nodes`] answer from memory. It also
//! stands in the coordinator election; etcd's rule (the oldest candidate key leads) decides,
//! and every node computes the winner from the same keys.
//!
//! Catalog changes ([`MetaStore::update`]) take etcd's DDL lock, read the newest catalog, apply
//! the change, write it back only if nobody else did meanwhile (compare on the catalog's
//! revision and on the lock key still existing), and then wait until every live node reports
//! that it applied the new revision: DDL is visible everywhere when the statement returns.
//!
//! etcd-client is async; callers of this crate are not. All etcd traffic runs on a small runtime
//! of its own, so a caller blocking on it (a DDL statement) never starves the server's runtime
//! of the threads etcd needs. Campaigns run on a client without a request timeout: a timeout
//! would cancel the waiting campaign and silently drop the candidate.

mod coordinator;
mod keys;
mod meta;
mod state;
mod tasks;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use parking_lot::{Mutex, RwLock};
use tokio::runtime::Runtime;
use tokio::sync::{watch, Notify};

use crate::{Catalog, ClusterView, CoordError, NodeId, NodeInfo, NodeStatus};
use keys::Keys;
use state::{Change, ClusterState};

/// How a node joins a cluster (`shoal start --etcd ...`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    /// Several clusters may share one etcd: each keeps its keys under `/shoal/<name>/`.
    pub cluster_name: String,
    /// The id to take on first start; later starts reuse the id stored in `data_dir`.
    pub node_id: Option<NodeId>,
    pub sql_address: String,
    /// Where other nodes send this node fragments (Arrow Flight).
    pub flight_address: String,
    /// A node whose heartbeats stop is considered down this long after the last one.
    pub lease_ttl: Duration,
    /// A fresh random token: becomes the cluster's secret if the cluster has none yet.
    pub proposed_secret: String,
    pub data_dir: PathBuf,
}

/// A node's membership in a cluster, and the cluster's metadata as this node caches it.
pub struct EtcdCluster {
    keys: Keys,
    node_id: NodeId,
    info: NodeInfo,
    client: Client,
    runtime: &'static Runtime,
    state: Arc<RwLock<ClusterState>>,
    /// Woken whenever the cached state changes.
    changed: Arc<Notify>,
    /// The node's current lease; replaced when a lease is lost and the node registers again.
    lease: watch::Sender<i64>,
    lease_ttl: Duration,
    /// The catalog revision this node last reported as applied.
    reported: AtomicI64,
    /// One catalog change of this node at a time (etcd's lock serializes the nodes).
    updating: Mutex<()>,
    /// The candidacy this node won the coordinator election with, while its lease lasts.
    leadership: Mutex<Option<coordinator::Leadership>>,
    /// The token nodes of this cluster show each other (kept in etcd: whoever may read the
    /// catalog may talk to the nodes).
    secret: String,
    /// Set when the node leaves on purpose: its lease is revoked and not taken again.
    leaving: std::sync::atomic::AtomicBool,
    /// Until when (ns since `base`) this node's lease is certainly alive in etcd: the time a
    /// renewal that etcd confirmed was sent, plus the TTL, less a margin for clock drift.
    lease_certain_until: AtomicU64,
    base: std::time::Instant,
    /// The etcd revision at which the current lease was registered, and the newest revision
    /// this node's cache has seen: after a lost lease the node may have missed a failover of
    /// its partitions, so it is sure of leading nothing until its cache has caught up.
    lease_revision: AtomicI64,
    seen_revision: AtomicI64,
}

fn unavailable(e: etcd_client::Error) -> CoordError {
    CoordError::Unavailable(e.to_string())
}

/// How long a caller waiting for etcd (a catalog change, a transaction's decision) waits at
/// most: a commit that must drop a follower holds its partition's commit order meanwhile.
const ETCD_PATIENCE: Duration = Duration::from_secs(10);

/// How long a start waits for etcd to answer before giving up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

impl EtcdCluster {
    /// Connects to etcd, registers this node and starts following the cluster.
    pub fn join(config: ClusterConfig) -> Result<Arc<EtcdCluster>, CoordError> {
        let runtime: &'static Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("shoal-coord")
                .enable_all()
                .build()
                .map_err(|e| CoordError::Join(format!("cannot start etcd runtime: {e}")))?,
        ));
        let cluster = bridge(runtime, Self::join_async(config, runtime))??;
        let cluster = Arc::new(cluster);
        runtime.spawn(tasks::keep_alive(cluster.clone()));
        runtime.spawn(tasks::follow(cluster.clone()));
        runtime.spawn(tasks::campaign(cluster.clone()));
        runtime.spawn(coordinator::coordinate(cluster.clone()));
        Ok(cluster)
    }

    async fn join_async(
        config: ClusterConfig,
        runtime: &'static Runtime,
    ) -> Result<EtcdCluster, CoordError> {
        let keys = Keys::new(&config.cluster_name);
        let mut client = connect(&config.endpoints).await?;
        let node_id = node_id(&mut client, &keys, &config).await?;
        let info = NodeInfo {
            id: node_id,
            sql_address: config.sql_address.clone(),
            flight_address: config.flight_address.clone(),
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default(),
        };
        let base = std::time::Instant::now();
        let lease = register(&mut client, &keys, &info, config.lease_ttl).await?;
        // The first node to start writes the empty catalog; the others find it.
        let empty = serde_json::to_vec(&Catalog::default())
            .map_err(|e| CoordError::Unavailable(format!("cannot encode the catalog: {e}")))?;
        client
            .txn(
                Txn::new()
                    .when([Compare::create_revision(
                        keys.catalog(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then([TxnOp::put(keys.catalog(), empty, None)]),
            )
            .await
            .map_err(unavailable)?;
        let secret = cluster_secret(&mut client, &keys, &config.proposed_secret).await?;
        let (lease_tx, _) = watch::channel(lease);
        let cluster = EtcdCluster {
            keys,
            node_id,
            info,
            client,
            runtime,
            state: Arc::new(RwLock::new(ClusterState::default())),
            changed: Arc::new(Notify::new()),
            lease: lease_tx,
            lease_ttl: config.lease_ttl,
            reported: AtomicI64::new(0),
            updating: Mutex::new(()),
            leadership: Mutex::new(None),
            secret,
            leaving: std::sync::atomic::AtomicBool::new(false),
            lease_certain_until: AtomicU64::new(0),
            base,
            lease_revision: AtomicI64::new(0),
            seen_revision: AtomicI64::new(0),
        };
        // Granted after `base`: certain until its TTL from then (less the margin).
        cluster.lease_renewed(base, config.lease_ttl);
        cluster.reload().await?;
        cluster.report_applied().await?;
        tracing::info!(node = node_id, "joined the cluster");
        Ok(cluster)
    }

    /// Runs `fut` on the etcd runtime and waits for it from any thread.
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, CoordError>> + Send + 'static,
    ) -> Result<T, CoordError> {
        bridge(self.runtime, async move {
            tokio::time::timeout(ETCD_PATIENCE, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(CoordError::Unavailable(format!(
                        "etcd did not answer within {ETCD_PATIENCE:?}"
                    )))
                })
        })?
    }

    fn current_lease(&self) -> i64 {
        *self.lease.borrow()
    }

    /// Reads every key of the cluster and replaces the cache (keeping a newer catalog);
    /// returns the revision the read saw.
    async fn reload(&self) -> Result<i64, CoordError> {
        let mut client = self.client.clone();
        let resp = client
            .get(self.keys.prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut fresh = ClusterState::default();
        for kv in resp.kvs() {
            fresh.apply(&self.keys, &Change::put(kv));
        }
        {
            let mut state = self.state.write();
            if state.catalog_revision > fresh.catalog_revision {
                fresh.catalog = state.catalog.clone();
                fresh.catalog_revision = state.catalog_revision;
            }
            *state = fresh;
        }
        self.seen(revision);
        self.changed.notify_waiters();
        Ok(revision)
    }

    /// Publishes the catalog revision this node serves, if newer than the last one published.
    async fn report_applied(&self) -> Result<(), CoordError> {
        let revision = self.state.read().catalog_revision;
        if revision <= self.reported.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut client = self.client.clone();
        client
            .put(
                self.keys.applied(self.node_id),
                revision.to_string(),
                Some(PutOptions::new().with_lease(self.current_lease())),
            )
            .await
            .map_err(unavailable)?;
        self.reported.fetch_max(revision, Ordering::SeqCst);
        Ok(())
    }

    /// Whether this node holds the coordinator election now (as its cache sees it).
    pub fn is_coordinator(&self) -> bool {
        self.state.read().coordinator() == Some(self.node_id)
    }

    /// Whether the node is leaving (see `ClusterView::leave`).
    pub(super) fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The lease this node's keys live under now.
    pub fn lease_id(&self) -> i64 {
        self.current_lease()
    }

    /// Records that etcd confirmed a grant or renewal of `ttl` that was sent at `sent`.
    pub(super) fn lease_renewed(&self, sent: std::time::Instant, ttl: Duration) {
        let margin = (ttl / 10).max(Duration::from_millis(100));
        let until = sent.saturating_duration_since(self.base) + ttl.saturating_sub(margin);
        self.lease_certain_until
            .fetch_max(until.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Records that the cache has seen etcd up to `revision`.
    pub(super) fn seen(&self, revision: i64) {
        self.seen_revision.fetch_max(revision, Ordering::SeqCst);
    }
}

impl ClusterView for EtcdCluster {
    fn local_node(&self) -> NodeId {
        self.node_id
    }

    fn leadership_certain(&self) -> bool {
        let now = self.base.elapsed().as_nanos() as u64;
        now < self.lease_certain_until.load(Ordering::SeqCst)
            && self.seen_revision.load(Ordering::SeqCst)
                >= self.lease_revision.load(Ordering::SeqCst)
    }

    fn secret(&self) -> &str {
        &self.secret
    }

    fn nodes(&self) -> Vec<NodeStatus> {
        self.state.read().statuses()
    }

    fn decide(&self, id: &str, commit: bool) -> Result<bool, CoordError> {
        let key = self.keys.decision(id);
        let mut client = self.client.clone();
        self.block(async move {
            let outcome = if commit { COMMIT } else { ABORT };
            let response = client
                .txn(
                    Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.clone(), outcome, None)])
                        .or_else([TxnOp::get(key.clone(), None)]),
                )
                .await
                .map_err(unavailable)?;
            if response.succeeded() {
                return Ok(commit);
            }
            for answer in response.op_responses() {
                if let TxnOpResponse::Get(get) = answer {
                    if let Some(kv) = get.kvs().first() {
                        return Ok(kv.value() == COMMIT.as_bytes());
                    }
                }
            }
            // Forgotten between the compare and the read: only after every part applied it.
            Err(CoordError::Unavailable(format!(
                "the outcome of transaction {key} was removed while it was read"
            )))
        })
    }

    fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let lease = self.current_lease();
        let mut client = self.client.clone();
        let revoked = self.block(async move {
            match tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await {
                Ok(answer) => answer.map(|_| ()).map_err(unavailable),
                Err(_) => Err(CoordError::Unavailable(
                    "etcd did not answer in time".into(),
                )),
            }
        });
        if let Err(e) = revoked {
            tracing::warn!(error = %e, "could not revoke this node's lease: it expires by itself");
        }
    }

    fn forget_decision(&self, id: &str) -> Result<(), CoordError> {
        let key = self.keys.decision(id);
        let mut client = self.client.clone();
        self.block(async move {
            client.delete(key, None).await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn decisions(&self) -> Result<Vec<(String, bool)>, CoordError> {
        let prefix = self.keys.decision("");
        let mut client = self.client.clone();
        self.block(async move {
            let response = client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(unavailable)?;
            Ok(response
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let id = kv.key_str().ok()?.strip_prefix(prefix.as_str())?;
                    Some((id.to_string(), kv.value() == COMMIT.as_bytes()))
                })
                .collect())
        })
    }
}

/// The recorded outcomes of a transaction spanning nodes.
const COMMIT: &str = "commit";
const ABORT: &str = "abort";

/// Runs `fut` on `runtime` and waits for its result on the calling thread, which may belong to
/// another runtime (so `Runtime::block_on`, which refuses that, is not an option).
fn bridge<T: Send + 'static>(
    runtime: &'static Runtime,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, CoordError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| CoordError::Unavailable("the etcd runtime stopped".into()))
}

/// The cluster's secret: the one in etcd, or `proposed` when this node is the first.
async fn cluster_secret(
    client: &mut Client,
    keys: &Keys,
    proposed: &str,
) -> Result<String, CoordError> {
    let first = Txn::new()
        .when([Compare::create_revision(keys.secret(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(keys.secret(), proposed, None)])
        .or_else([TxnOp::get(keys.secret(), None)]);
    let resp = client.txn(first).await.map_err(unavailable)?;
    if resp.succeeded() {
        return Ok(proposed.to_string());
    }
    resp.op_responses()
        .into_iter()
        .find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .and_then(|kv| kv.value_str().ok().map(str::to_string)),
            _ => None,
        })
        .ok_or_else(|| CoordError::Join("the cluster's secret cannot be read".into()))
}

/// A new lease of `ttl` (whole seconds, at least one, as etcd counts them).
async fn grant_lease(client: &mut Client, ttl: Duration) -> Result<i64, CoordError> {
    let seconds = ttl.as_secs().max(1) as i64;
    Ok(client
        .lease_grant(seconds, None)
        .await
        .map_err(unavailable)?
        .id())
}

/// Connects to etcd, waiting for it to come up (a cluster's processes may start together).
async fn connect(endpoints: &[String]) -> Result<Client, CoordError> {
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        // A connection into a cut network or to a frozen member fails its requests within
        // seconds rather than when TCP gives up (minutes), and a member without a leader
        // answers at once; etcd refuses keep-alive pings more often than every 5 s.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let attempt = match Client::connect(endpoints, Some(options)).await {
            // A connected channel proves little: ask for something.
            Ok(mut client) => match client
                .get("/shoal/", Some(GetOptions::new().with_count_only()))
                .await
            {
                Ok(_) => return Ok(client),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(CoordError::Join(format!(
                "etcd at {} did not answer: {attempt}",
                endpoints.join(",")
            )));
        }
        tracing::warn!(error = %attempt, "etcd not reachable yet; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The node's id: the one its data directory remembers, else the one configured, else a new
/// one from the cluster's counter. Written to the data directory before it is used.
async fn node_id(
    client: &mut Client,
    keys: &Keys,
    config: &ClusterConfig,
) -> Result<NodeId, CoordError> {
    let path = config.data_dir.join("node_id");
    let io = |source| CoordError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let stored: NodeId = text.trim().parse().map_err(|_| CoordError::Corrupt {
            path: path.display().to_string(),
            reason: format!("not a node id: {text:?}"),
        })?;
        if let Some(wanted) = config.node_id.filter(|w| *w != stored) {
            return Err(CoordError::Join(format!(
                "--node-id {wanted} conflicts with node id {stored} stored in {}",
                path.display()
            )));
        }
        return Ok(stored);
    }
    let id = match config.node_id {
        Some(id) => id,
        None => allocate_node_id(client, keys).await?,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(io)?;
    std::fs::write(&path, format!("{id}\n")).map_err(io)?;
    Ok(id)
}

async fn allocate_node_id(client: &mut Client, keys: &Keys) -> Result<NodeId, CoordError> {
    loop {
        let resp = client
            .get(keys.next_node_id(), None)
            .await
            .map_err(unavailable)?;
        let (next, revision) = match resp.kvs().first() {
            Some(kv) => (
                std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse::<NodeId>().ok())
                    .unwrap_or(1),
                kv.mod_revision(),
            ),
            None => (1, 0),
        };
        // Ids taken explicitly (--node-id) are skipped.
        let taken = client
            .get(keys.member(next), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(unavailable)?
            .count()
            > 0;
        let swap = Txn::new()
            .when([Compare::mod_revision(
                keys.next_node_id(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(
                keys.next_node_id(),
                (next + 1).to_string(),
                None,
            )]);
        if client.txn(swap).await.map_err(unavailable)?.succeeded() && !taken {
            return Ok(next);
        }
    }
}

/// A node's info as its live and member keys hold it.
fn encode_info(info: &NodeInfo) -> Result<Vec<u8>, CoordError> {
    serde_json::to_vec(info)
        .map_err(|e| CoordError::Unavailable(format!("cannot encode node info: {e}")))
}

/// Puts the node's live key (under a new lease, returned) and member record. A live key of
/// the same id means another process runs as this node, or this node's previous process died
/// less than a lease ago: wait out one lease, then refuse.
async fn register(
    client: &mut Client,
    keys: &Keys,
    info: &NodeInfo,
    lease_ttl: Duration,
) -> Result<i64, CoordError> {
    let value = encode_info(info)?;
    let deadline = tokio::time::Instant::now() + lease_ttl * 2 + Duration::from_secs(1);
    loop {
        // A lease per attempt: one granted before waiting out the previous run's key would
        // expire unused (nothing keeps it alive yet).
        let lease = grant_lease(client, lease_ttl).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                keys.live(info.id),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(
                    keys.live(info.id),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(keys.member(info.id), value.clone(), None),
            ]);
        if client.txn(txn).await.map_err(unavailable)?.succeeded() {
            return Ok(lease);
        }
        // Unused: let it go now rather than at its expiry.
        let _ = client.lease_revoke(lease).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(CoordError::Join(format!(
                "node {} is already registered by a live process",
                info.id
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
