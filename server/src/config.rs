//! Command-line configuration of a node (`shoal start --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: a distributed SQL database that speaks PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub start: StartArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a single node on the embedded metadata store (the default command).
    Start(StartArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// SCRAM-SHA-256 password authentication (the default).
    Scram,
    /// Accept every connection without a password. For local development only.
    Trust,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// Address for PostgreSQL clients. The default avoids PostgreSQL's 5432.
    #[arg(long, env = "SHOAL_LISTEN", default_value = "127.0.0.1:15432")]
    pub listen: SocketAddr,
    /// Directory holding the data (RocksDB) and the catalog; created when missing.
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "./shoal-data")]
    pub data_dir: PathBuf,
    /// Name of the bootstrap superuser, created on first start.
    #[arg(long, env = "SHOAL_SUPERUSER", default_value = "shoal")]
    pub superuser: String,
    /// Password of the bootstrap superuser (required on first start with --auth scram).
    /// Prefer the SHOAL_PASSWORD environment variable: flags show up in `ps`.
    #[arg(long, env = "SHOAL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// How clients authenticate.
    #[arg(long, value_enum, default_value = "scram")]
    pub auth: AuthMode,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not negotiate TLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_required: bool,
    /// Address of the Prometheus /metrics endpoint; "off" disables it.
    #[arg(long, env = "SHOAL_METRICS_LISTEN", default_value = "127.0.0.1:19187")]
    pub metrics_listen: String,
    /// fsync the write-ahead log on every commit. `--fsync false` trades the last commits
    /// before an OS crash for latency (a crash of the process alone loses nothing).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Largest frontend message accepted, in bytes; larger ones get 08P01 and a closed
    /// connection.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Most concurrent client connections; further ones get 53300.
    #[arg(long, default_value_t = 200)]
    pub max_connections: usize,
    /// Memory one statement may use for sorts, joins and aggregations before it fails with
    /// 53200 (out of memory).
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub query_memory_bytes: usize,
    /// Memory for RocksDB's cache of uncompressed data blocks (PostgreSQL's shared_buffers
    /// plays this part), filled as data is read.
    #[arg(long, default_value_t = shoal_storage::DEFAULT_BLOCK_CACHE_BYTES)]
    pub block_cache_bytes: usize,
    /// Memory for decoded columns of whole partitions, kept after a scan read them so that the
    /// next scan of the same data decodes nothing (0 turns it off); the least recently used
    /// go first, and any write to a partition makes its columns stale.
    #[arg(long, default_value_t = shoal_executor::DEFAULT_RESIDENT_BYTES)]
    pub resident_bytes: usize,
    /// Partitions for tables created without `WITH (partitions = N)`.
    #[arg(long, default_value_t = 4)]
    pub default_partitions: u32,
    /// etcd endpoints (comma-separated `http://host:port`): join a cluster whose catalog,
    /// members and coordinator live there. Without it the node runs alone on the embedded
    /// metadata store.
    #[arg(long, env = "SHOAL_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Name of the cluster inside etcd (several clusters may share one etcd).
    #[arg(long, env = "SHOAL_CLUSTER", default_value = "shoal")]
    pub cluster_name: String,
    /// Node id to take when the data directory has none yet (default: the next free one).
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<u64>,
    /// Address other nodes and clients reach this node at (default: the --listen address).
    #[arg(long, env = "SHOAL_ADVERTISE")]
    pub advertise: Option<String>,
    /// Address other nodes send this node query fragments to (Arrow Flight; cluster mode only).
    #[arg(long, env = "SHOAL_FLIGHT_LISTEN", default_value = "127.0.0.1:15433")]
    pub flight_listen: SocketAddr,
    /// Address other nodes reach the Flight listener at (default: the --flight-listen address).
    #[arg(long, env = "SHOAL_FLIGHT_ADVERTISE")]
    pub flight_advertise: Option<String>,
    /// Copies of each partition of a new table, the leader's included, where the cluster has
    /// as many live nodes (fewer where it has fewer).
    #[arg(long, default_value_t = shoal_coord::replicas::DEFAULT_REPLICAS)]
    pub replication_factor: usize,
    /// Seconds a node may stay down before the coordinator copies the partitions it held to
    /// other nodes (until then it waits for the node to come back with its copies).
    #[arg(long, default_value_t = 30)]
    pub replica_repair_delay_secs: u64,
    /// Seconds after its last heartbeat at which a node counts as down (the etcd lease TTL).
    #[arg(long, default_value_t = 2)]
    pub lease_ttl_secs: u64,
}
