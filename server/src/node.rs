//! The state one node shares between all its connections: metadata, storage, the base query
//! context, the session registry and metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use pgwire::api::ConnectionManager;
use pgwire::messages::startup::SecretKey;
use shoal_coord::{
    ClusterConfig, ClusterView, EmbeddedMetaStore, EtcdCluster, MetaStore, SingleNode,
};
use shoal_executor::{Parts, RemoteFragments, RowIdAllocator};
use shoal_planner::{ActivityRow, ActivitySource};
use shoal_storage::{Store, StoreOptions};

use crate::config::StartArgs;
use crate::error::{ServerError, ServerResult};
use crate::metrics::Metrics;

/// One connected session as the registry (and pg_stat_activity) sees it.
pub struct SessionEntry {
    pub pid: i32,
    pub user: String,
    pub application_name: Mutex<String>,
    pub client_addr: String,
    pub client_port: i32,
    pub backend_start: i64,
    pub secret: Mutex<Option<SecretKey>>,
    /// (state, query text, query start in µs since the epoch)
    pub activity: Mutex<(String, String, Option<i64>)>,
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<i32, Arc<SessionEntry>>>,
    next_pid: AtomicI32,
}

impl SessionRegistry {
    pub fn allocate_pid(&self) -> i32 {
        // Start where PostgreSQL backends usually are, so pids look familiar.
        10_000 + self.next_pid.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register(&self, entry: Arc<SessionEntry>) {
        self.sessions.lock().insert(entry.pid, entry);
    }

    pub fn remove(&self, pid: i32) {
        self.sessions.lock().remove(&pid);
    }

    pub fn get(&self, pid: i32) -> Option<Arc<SessionEntry>> {
        self.sessions.lock().get(&pid).cloned()
    }

    pub fn count(&self) -> usize {
        self.sessions.lock().len()
    }
}

impl ActivitySource for SessionRegistry {
    fn sessions(&self) -> Vec<ActivityRow> {
        let mut rows: Vec<ActivityRow> = self
            .sessions
            .lock()
            .values()
            .map(|s| {
                let (state, query, start) = s.activity.lock().clone();
                ActivityRow {
                    pid: s.pid,
                    user: s.user.clone(),
                    application_name: s.application_name.lock().clone(),
                    client_addr: s.client_addr.clone(),
                    client_port: s.client_port,
                    backend_start: s.backend_start,
                    query_start: start,
                    state,
                    query,
                }
            })
            .collect();
        rows.sort_by_key(|r| r.pid);
        rows
    }
}

/// 32 random bytes as hex: a cluster's secret if this node is its first.
fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Node {
    pub args: StartArgs,
    pub meta: Arc<dyn MetaStore>,
    /// This node among the others: a single node alone, or a member of an etcd cluster.
    pub cluster: Arc<dyn ClusterView>,
    pub store: Store,
    pub row_ids: Arc<RowIdAllocator>,
    pub base: SessionContext,
    pub sessions: Arc<SessionRegistry>,
    /// In a cluster: how statements reach other nodes, and how transactions that wrote on
    /// several nodes commit.
    pub remote: Option<Arc<RemoteFragments>>,
    /// In a cluster: this node's parts of transactions run by nodes.
    pub parts: Option<Arc<Parts>>,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<ConnectionManager>,
}

impl Node {
    /// Opens (or creates) the data directory, joins the cluster when `--etcd` is given, and
    /// builds the shared query context. `sql_address` is where the listener is bound.
    pub fn open(
        args: StartArgs,
        sql_address: std::net::SocketAddr,
        flight_address: Option<std::net::SocketAddr>,
    ) -> ServerResult<Arc<Node>> {
        std::fs::create_dir_all(&args.data_dir).map_err(|e| {
            ServerError::Internal(format!(
                "cannot create data directory {}: {e}",
                args.data_dir.display()
            ))
        })?;
        shoal_executor::set_resident_limit(args.resident_bytes);
        let store = Store::open(
            &args.data_dir.join("rocksdb"),
            StoreOptions {
                sync_commits: args.fsync,
                block_cache_bytes: args.block_cache_bytes,
                // A cluster commits transactions across nodes in two phases (see
                // shoal_storage's prepared transactions).
                lock_every_write: !args.etcd.is_empty(),
            },
        )?;
        let sql_address = args
            .advertise
            .clone()
            .unwrap_or_else(|| sql_address.to_string());
        let (meta, cluster): (Arc<dyn MetaStore>, Arc<dyn ClusterView>) = if args.etcd.is_empty() {
            (
                Arc::new(EmbeddedMetaStore::open(&args.data_dir)?),
                Arc::new(SingleNode { sql_address }),
            )
        } else {
            let flight_address = args
                .flight_advertise
                .clone()
                .or_else(|| flight_address.map(|a| a.to_string()))
                .unwrap_or_default();
            let cluster = EtcdCluster::join(ClusterConfig {
                endpoints: args.etcd.clone(),
                cluster_name: args.cluster_name.clone(),
                node_id: args.node_id,
                sql_address,
                flight_address,
                lease_ttl: std::time::Duration::from_secs(args.lease_ttl_secs.max(1)),
                proposed_secret: random_token(),
                data_dir: args.data_dir.clone(),
            })?;
            (cluster.clone(), cluster)
        };
        let row_ids = Arc::new(RowIdAllocator::default());
        let sessions = Arc::new(SessionRegistry::default());
        let (remote, parts) = if args.etcd.is_empty() {
            (None, None)
        } else {
            let parts = Parts::new(store.clone(), cluster.clone());
            let recovered = parts.recover()?;
            if recovered > 0 {
                tracing::info!(
                    recovered,
                    "prepared transaction parts wait for their decision"
                );
            }
            let remote = RemoteFragments::new(meta.clone(), cluster.clone(), parts.clone());
            shoal_executor::replicate_through(&store, remote.clone());
            (Some(remote), Some(parts))
        };
        let base = shoal_planner::base_context(
            meta.clone(),
            cluster.clone(),
            remote.clone(),
            store.clone(),
            row_ids.clone(),
            sessions.clone(),
        )?;
        Ok(Arc::new(Node {
            args,
            meta,
            cluster,
            store,
            row_ids,
            base,
            sessions,
            remote,
            parts,
            metrics: Arc::new(Metrics::new()),
            connections: Arc::new(ConnectionManager::new()),
        }))
    }

    /// Whether this node holds the coordinator election (as its cache of etcd says).
    pub fn coordinates(&self) -> bool {
        let local = self.cluster.local_node();
        self.cluster
            .nodes()
            .iter()
            .any(|n| n.info.id == local && n.coordinator)
    }

    /// Creates the bootstrap superuser on first start.
    pub fn bootstrap_superuser(&self) -> ServerResult<()> {
        let name = self.args.superuser.clone();
        if self.meta.catalog().users.contains_key(&name) {
            return Ok(());
        }
        let password = match (&self.args.password, self.args.auth) {
            (Some(p), _) => p.clone(),
            (None, crate::config::AuthMode::Trust) => String::new(),
            (None, crate::config::AuthMode::Scram) => {
                return Err(ServerError::Internal(format!(
                    "first start needs a password for superuser \"{name}\": pass --password or set SHOAL_PASSWORD (or use --auth trust for local development)"
                )))
            }
        };
        let user = crate::wire::auth::new_user(&name, &password);
        self.meta.update(&mut |c| {
            // Another node of the cluster may have created it meanwhile.
            if c.users.contains_key(&user.name) {
                return Ok(());
            }
            let mut u = user.clone();
            u.oid = c.allocate_oid();
            c.users.insert(u.name.clone(), u);
            Ok(())
        })?;
        Ok(())
    }
}
