use shoal_storage::StorageError;
use thiserror::Error;

/// What went wrong while executing a fragment or writing rows.
#[derive(Debug, Error)]
pub enum ExecError {
    #[error(transparent)]
    Storage(#[from] StorageError),
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
    /// A statement on one node needs partitions other nodes lead in a way only a transaction
    /// across nodes could serve (cluster mode): writes to several nodes, writes to another
    /// node inside a transaction block, REPEATABLE READ reads of another node.
    #[error("partitions {partitions} of relation \"{table}\" are led by other nodes than node {local_node}: this statement would need a transaction across nodes, which is not supported yet")]
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
    #[error("background task failed: {0}")]
    TaskFailed(String),
}
