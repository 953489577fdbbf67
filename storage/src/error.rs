use thiserror::Error;

/// What went wrong inside the storage layer.
#[derive(Debug, Error)]
pub enum StorageError {
    /// Another transaction committed a write to a key this transaction also wrote, after this
    /// transaction's snapshot was taken (snapshot isolation's first-committer-wins rule).
    #[error("could not serialize access due to concurrent update")]
    WriteConflict,
    /// READ COMMITTED: a row this statement is about to write was changed and committed by
    /// another transaction after the statement's snapshot. The caller runs the statement again
    /// on a new snapshot (PostgreSQL re-checks the row; a restart gives the same answer).
    #[error("could not serialize access due to concurrent update")]
    RowChangedSinceStatementStart,
    /// Two transactions wait for each other's row locks; the one that closed the cycle fails.
    #[error("deadlock detected")]
    Deadlock,
    /// The statement waiting for a row lock was cancelled or timed out.
    #[error("canceling statement while it waited for a row lock")]
    Interrupted,
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("data directory {path} is locked by another process")]
    DirectoryLocked { path: String },
    #[error("stored row is corrupt: {0}")]
    CorruptRow(String),
    #[error("type {0} cannot be stored")]
    UnsupportedType(String),
    #[error("type {0} cannot be part of a primary key")]
    UnsupportedKeyType(String),
    /// A bulk load met a key twice, or a key that is already stored.
    #[error("duplicate key value in bulk load")]
    DuplicateKey,
    #[error("transaction is already finished")]
    TransactionFinished,
    /// A prepared transaction (the first phase of a distributed commit) takes no more writes.
    #[error("transaction is prepared: it can only commit or roll back")]
    TransactionPrepared,
    /// The partition is being handed to another node: it takes no new writers meanwhile.
    #[error("could not serialize access: partition {partition} of table {table} is moving to another node; retry the transaction")]
    PartitionMoving { table: u32, partition: u32 },
    /// A follower was sent an entry of a configuration that a failover has closed.
    #[error(
        "partition {partition} of table {table} is sealed at epoch {epoch}: its leader changed"
    )]
    PartitionSealed {
        table: u32,
        partition: u32,
        epoch: u64,
    },
    /// A follower was sent an entry that does not follow its log: it missed entries.
    #[error(
        "the log of partition {partition} of table {table} expects entry {expected}, not {got}"
    )]
    LogGap {
        table: u32,
        partition: u32,
        expected: u64,
        got: u64,
    },
    /// A replica holds another entry at a log position than the one its leader sent (a leader
    /// that restarted reused a position whose entry it had sent but not applied): it must
    /// leave the configuration and come back with a full copy.
    #[error("the log of partition {partition} of table {table} holds another entry at {position} than its leader's")]
    LogDiverged {
        table: u32,
        partition: u32,
        position: u64,
    },
    /// A replica asked for log entries that were trimmed already: it needs a full copy.
    #[error("the log of partition {partition} of table {table} no longer holds the entries after {after}")]
    LogTruncated {
        table: u32,
        partition: u32,
        after: u64,
    },
    /// The followers refused a commit (this node no longer leads at that epoch): nothing was
    /// applied.
    #[error("could not serialize access: the partition's leader changed during the commit ({0}); retry the transaction")]
    ReplicationRefused(String),
    /// A read of a cluster node that cannot be sure it still leads (its lease in etcd was not
    /// renewed in time, or it has not caught up with etcd since): what it holds may be stale.
    #[error("this node cannot be sure it still leads the partitions it reads (its etcd lease was not renewed in time); retry the statement")]
    LeadershipUncertain,
    /// The commit is applied here but some followers may lack it and could not be removed from
    /// the configuration: its outcome cannot be promised.
    #[error("the commit's replication could not be confirmed ({0}); its outcome is unknown")]
    ReplicationUnconfirmed(String),
    /// A bulk load met a table that a prepared distributed transaction wrote.
    #[error("a transaction spanning nodes is committing rows of this table")]
    PreparedWriterActive,
}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        match e.kind() {
            rocksdb::ErrorKind::Busy | rocksdb::ErrorKind::TryAgain => StorageError::WriteConflict,
            _ => StorageError::Engine(e.into_string()),
        }
    }
}
