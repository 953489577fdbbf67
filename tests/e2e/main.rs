//! End-to-end tests: real `shoal` processes, real clients. One binary for all of them.

mod bad_input;
mod bench;
mod catalog;
mod cluster;
mod cluster_dml;
mod cluster_failover;
mod cluster_faults;
mod cluster_joins;
mod cluster_moves;
mod cluster_shipping;
mod cluster_writes;
mod compat;
mod compose;
mod crash;
mod drivers;
mod gpu;
mod indexes;
mod pgbench;
mod point_reads;
mod psql;
mod resident;
mod slt_files;
mod sql;
mod startup;
mod transactions;
mod wire;
