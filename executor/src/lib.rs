//! Execution of Shoal fragments next to the data.
//!
//! In: a [`TableHandle`] (a table's metadata turned into Arrow terms), a transaction
//! ([`shoal_storage::Txn`]), and either a scan request (which partitions, which columns, which
//! primary keys) or record batches to write. Out: DataFusion [`ExecutionPlan`]s that stream
//! Arrow batches, one output partition per table partition (the per-partition *fragment*), and
//! row counts for writes. A scan of a whole partition keeps the columns it decoded in memory,
//! and the next scan of the same version of that partition reads them from there (`resident`).
//!
//! In a cluster, [`FragmentExec`] runs a fragment at the leader of each partition it reads:
//! locally, or by shipping it over Arrow Flight ([`FragmentService`] on the receiving node,
//! [`RemoteFragments`] on the sending one) with the plan in datafusion-proto's encoding and
//! the scan leaf as a [`ScanSpec`]. This crate must not depend on the planner or the server.
//!
//! [`ExecutionPlan`]: datafusion::physical_plan::ExecutionPlan

mod checked_arithmetic;
#[cfg(test)]
mod device_differential_tests;
mod device_exec;
mod device_translate;
mod error;
mod flight;
mod forwarded_writes;
mod fragment_codec;
mod fragment_exec;
mod index_entries;
pub mod json;
mod offload_to_device;
mod partition_moves;
mod per_row_subquery_exec;
mod point_read;
mod remote_index;
mod replica_changes;
mod replica_status;
mod replication;
mod resident;
mod routed_writes;
mod scan;
mod table;
mod two_phase;
mod write;
mod write_exec;

pub use checked_arithmetic::CheckedArithmetic;
pub use device_exec::{
    GpuFilterProjectExec, GpuNotUsedExec, GpuPartialAggregateExec, GpuTopNExec, OutputColumn,
    Placement,
};
pub use device_translate::{translate_expr, translate_partial_aggregate};
pub use error::ExecError;
pub use flight::{FragmentService, RemoteFragments};
pub use fragment_exec::{shipped_totals, FragmentExec, StatementKind};
pub use index_entries::{build_index, remove_index_entries};
pub use offload_to_device::{placement_for, GpuMode, GpuOptions, OffloadToDevice};
pub use per_row_subquery_exec::{PerRowSubqueryExec, PerRowSubquerySpec, SubqueryValue};
pub use point_read::{exact_cast, point_key, read_point, read_point_if_cached, PointKey};
pub use replica_status::{configuration_changes_total, replica_statuses, ReplicaStatus};
pub use replication::replicate_through;
pub use resident::{resident_bytes, set_resident_limit, DEFAULT_RESIDENT_BYTES};
pub use routed_writes::update_by_row_key;
pub use scan::{scan_totals, IndexLookup, KeyLookup, PartitionScanExec, ScanSpec, ROW_KEY_COLUMN};
pub use table::{arrow_type_of, SecondaryIndex, TableHandle, PG_TYPE_METADATA_KEY};
pub use two_phase::{Parts, IDLE_PART_LIMIT};
pub use write::{ConflictAction, RowIdAllocator, TableWriter, WriteOutcome};
pub use write_exec::{BulkSink, Forwarding, ReturningSink, TableWriteExec, WriteKind};
