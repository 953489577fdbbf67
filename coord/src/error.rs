use thiserror::Error;

/// What went wrong while reading or changing metadata.
#[derive(Debug, Error)]
pub enum CoordError {
    #[error("schema \"{0}\" does not exist")]
    SchemaNotFound(String),
    #[error("schema \"{0}\" already exists")]
    SchemaExists(String),
    #[error("schema \"{0}\" is not empty")]
    SchemaNotEmpty(String),
    #[error("relation \"{0}\" does not exist")]
    RelationNotFound(String),
    #[error("relation \"{0}\" already exists")]
    RelationExists(String),
    #[error("column \"{column}\" of relation \"{table}\" does not exist")]
    ColumnNotFound { table: String, column: String },
    #[error("column \"{column}\" of relation \"{table}\" already exists")]
    ColumnExists { table: String, column: String },
    #[error("{0}")]
    InvalidDefinition(String),
    /// Another session changed the catalog while this transaction block held DDL.
    #[error("could not serialize access: the catalog changed during this transaction")]
    CatalogChanged,
    /// A partition's configuration is no longer the one a change was decided on.
    #[error("could not serialize access: partition {partition} of table {table} is no longer at epoch {epoch}")]
    ConfigurationChanged {
        table: u32,
        partition: u32,
        epoch: u64,
    },
    /// A node acted as a partition's leader after another took over.
    #[error("could not serialize access: node {leader} no longer leads partition {partition} of table {table}")]
    LeaderChanged {
        table: u32,
        partition: u32,
        leader: u64,
    },
    /// The data of a transaction with DDL could not be committed.
    #[error("{0}")]
    DataCommitFailed(String),
    /// CREATE TABLE in a cluster whose nodes are all down (as this node's cache sees them).
    #[error("no live node to place partitions on")]
    NoLiveNodes,
    /// etcd could not be reached or answered with an error; the change was not made.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The node could not join the cluster (its id is taken by a live process, ...).
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("metadata file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
}
