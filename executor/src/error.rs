use shoal_storage::StorageError;
use thiserror::Error;

/// What went wrong while executing a fragment or writing rows.
#[derive(Debug, Error)]
pub enum ExecError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// etcd (the cluster's metadata) failed a request a write needed (a commit decision).
    #[error(transparent)]
    Metadata(#[from] shoal_coord::CoordError),
    #[error("duplicate key value violates unique constraint \"{constraint}\"")]
    UniqueViolation { constraint: String },
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNullViolation { table: String, column: String },
    #[error("value too long for type {type_name}")]
    StringTooLong { type_name: String },
    #[error("invalid input syntax for type {type_name}: \"{value}\"")]
    InvalidInput { type_name: String, value: String },
    /// Text that is not a json (or jsonb) value; `detail` says what is wrong with it.
    #[error("invalid input syntax for type {type_name}: {detail}")]
    InvalidJson { type_name: String, detail: String },
    /// jsonb cannot hold NUL characters (PostgreSQL's text cannot either).
    #[error("unsupported Unicode escape sequence: \\u0000 cannot be converted to text")]
    UnsupportedUnicodeEscape,
    /// A function or operator met an argument it does not apply to (an array length of a
    /// JSON object, a key deleted from a scalar, a malformed `format()` string, ...).
    #[error("{0}")]
    InvalidParameterValue(String),
    /// A date or time read by a pattern (`to_date`) names a day or hour that does not exist.
    #[error("date/time field value out of range: \"{0}\"")]
    DatetimeFieldOutOfRange(String),
    /// Text does not fit the date/time pattern it is read by.
    #[error("{0}")]
    InvalidDatetimeFormat(String),
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A statement on one node needs partitions other nodes lead in a way Shoal cannot serve
    /// yet (cluster mode): an UPDATE or DELETE reading several nodes, RETURNING or ON
    /// CONFLICT DO UPDATE on another node's rows, REPEATABLE READ across nodes.
    #[error("partitions {partitions} of relation \"{table}\" are led by other nodes than node {local_node}: this statement cannot run across nodes yet")]
    PartitionsElsewhere {
        table: String,
        local_node: u64,
        partitions: String,
    },
    /// The node leading a partition a statement needs is down or cannot be reached.
    #[error("partition {partition} of relation \"{table}\" is unavailable: its leader, node {node}, {reason}")]
    PartitionUnavailable {
        table: String,
        partition: u32,
        node: u64,
        reason: String,
    },
    /// The node a forwarded write must go to is down.
    #[error("relation \"{table}\" cannot be written: node {node}, which leads the partitions this statement writes, is down")]
    WriteLeaderDown { table: String, node: u64 },
    /// A partition's leader changed while the statement ran; running it again finds the new one.
    #[error("could not serialize access: a partition of relation \"{table}\" changed leader during the statement")]
    LeaderChanged { table: String },
    /// The leader of a partition answered with an error while running a fragment.
    #[error("{message}")]
    Remote {
        node: u64,
        sqlstate: &'static str,
        message: String,
    },
    /// A node was asked to prepare its part of a transaction it no longer holds (it rolled
    /// the part back: the node restarted, or the part sat unused too long).
    #[error("could not serialize access: the writes of transaction {id} on node {node} were rolled back before it committed")]
    PartGone { id: String, node: u64 },
    /// A prepared part was sent another statement (a bug of the node running the transaction).
    #[error("transaction {id} is prepared on this node and takes no more statements")]
    PartPrepared { id: String },
    /// A node holding part of the transaction is down; the transaction cannot commit.
    #[error("node {node}, which holds writes of this transaction, is down")]
    PartUnreachable { node: u64 },
    /// A node holding a prepared part decided the transaction had been abandoned first.
    #[error("could not serialize access: transaction {id} was rolled back by a node holding part of it, which did not hear from this node in time")]
    TransactionAborted { id: String },
    /// etcd did not confirm the commit decision: the transaction may have committed or not;
    /// every node settles it the same way once etcd answers again.
    #[error("the outcome of transaction {id} is unknown: the decision could not be recorded ({reason}); it will be settled the same way on every node")]
    CommitOutcomeUnknown { id: String, reason: String },
    #[error("background task failed: {0}")]
    TaskFailed(String),
}
