//! Coordination and metadata for Shoal.
//!
//! This crate owns the *catalog* (schemas, tables, columns, views, users) and the *partition map*
//! (which node leads each partition, its followers and epoch). Callers read an immutable
//! [`Catalog`] snapshot, so catalog lookups never wait on I/O, and change it through
//! [`MetaStore::update`], which applies a closure atomically and durably.
//!
//! In: catalog mutations from the planner (DDL) and the server (bootstrap user).
//! Out: `Arc<Catalog>` snapshots with stable table ids and partition layouts.
//!
//! Single-node mode uses [`EmbeddedMetaStore`] (a JSON document written with fsync + rename)
//! and [`SingleNode`] as its [`ClusterView`]; cluster mode uses [`EtcdCluster`], which is both:
//! the catalog, the member list and the coordinator election live in etcd and are cached on
//! every node through one watch. This crate must not depend on any other Shoal crate nor on the
//! storage engine.

mod block;
mod catalog;
mod cluster;
mod embedded;
mod error;
mod rebalance;
pub mod replicas;
mod types;
mod view;

pub use block::SessionMetaStore;
pub use catalog::{
    Catalog, ColumnDef, IndexDef, PartitionDef, SchemaDef, TableDef, UserDef, ViewDef,
};
pub use cluster::{ClusterConfig, EtcdCluster};
pub use embedded::EmbeddedMetaStore;
pub use error::CoordError;
pub use rebalance::PartitionMove;
pub use types::SqlType;
pub use view::{ClusterView, NodeInfo, NodeStatus, SingleNode, SINGLE_NODE_ID};

use std::sync::Arc;

/// Identifier of a node in the cluster; the single node is node 1.
pub type NodeId = u64;

/// A durable, atomically updated home for the catalog.
pub trait MetaStore: Send + Sync {
    /// The current catalog snapshot (cheap: an `Arc` clone).
    fn catalog(&self) -> Arc<Catalog>;

    /// Applies `change` to a copy of the catalog and persists it; the copy becomes the current
    /// snapshot only when `change` succeeds and the write is durable.
    fn update(
        &self,
        change: &mut dyn FnMut(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<Arc<Catalog>, CoordError>;

    /// [`MetaStore::update`] without waiting for the other nodes to apply the change: for
    /// changes that must not wait for a node that may be dead (a leader removing a follower
    /// that stopped answering; the nodes that matter learn the change when they need it).
    fn update_without_waiting(
        &self,
        change: &mut dyn FnMut(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<Arc<Catalog>, CoordError> {
        self.update(change)
    }
}
