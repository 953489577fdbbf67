//! Storage for Shoal: RocksDB behind a small, Shoal-shaped API.
//!
//! In: Arrow record batches to write (with the table's [`RowLayout`]) and key ranges to read.
//! Out: Arrow record batches decoded straight from the stored rows, and transactions ([`Txn`])
//! at READ COMMITTED or REPEATABLE READ whose writers of the same row wait for each other
//! through row locks ([`locks`]). A transaction also names the version of a partition its
//! snapshot reads ([`PartitionVersion`], see `versions`).
//!
//! Keys are order-preserving: `'r' | table id | partition | primary key` (see [`keys`]), so every
//! partition is one contiguous key range and a primary-key lookup is one point read. Rows use a
//! compact positional format (see [`row`]). A commit that wrote partitions with followers hands
//! each partition's writes to a [`Replicator`] (the cluster's network lives behind it) before
//! it applies them, and a follower applies what its leader sent in log order (see
//! `replication`). Nothing outside this crate sees a RocksDB type; it must not depend on any
//! other Shoal crate.

mod bulk;
mod error;
#[cfg(test)]
mod isolation_tests;
pub mod keys;
mod locks;
mod moves;
mod prepared;
mod replication;
pub mod row;
mod store;
mod versions;

pub use bulk::BulkLoad;
pub use error::StorageError;
pub use moves::{Entry, PartitionDigest};
pub use replication::{ReplicatedEntry, ReplicationFailure, Replicator};
pub use row::{RowDecoder, RowEncoder, RowLayout};
pub use store::{
    Footprint, Isolation, ScanControl, Store, StoreOptions, Txn, DEFAULT_BLOCK_CACHE_BYTES,
};
pub use versions::PartitionVersion;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
