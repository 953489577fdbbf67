//! The `shoal` server: a PostgreSQL-wire front end over Shoal's planner and executor.
//!
//! In: client connections (TCP, optionally TLS) speaking the PostgreSQL protocol v3, and the
//! node's configuration. Out: query results, command tags and errors with SQLSTATEs (mapped in
//! exactly one place, [`error`]), plus Prometheus metrics on `/metrics`.
//!
//! The server owns sessions and transactions; it depends on the planner, executor, storage and
//! coord crates, and nothing depends on it.

pub mod config;
pub mod error;
mod failover;
pub mod metrics;
pub mod node;
mod rebalance;
pub mod session;
pub mod wire;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::StartArgs;
use crate::node::Node;

/// Opens the data directory, binds the listeners and serves until the process is stopped.
pub async fn start(args: StartArgs) -> Result<(), String> {
    let data_dir = args.data_dir.clone();
    // Bound first: a cluster node registers the address it really listens on (port 0 included).
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // Other nodes send fragments and rows here; a node alone takes none.
    let flight =
        if args.etcd.is_empty() {
            None
        } else {
            Some(TcpListener::bind(args.flight_listen).await.map_err(|e| {
                format!("cannot listen on {} for fragments: {e}", args.flight_listen)
            })?)
        };
    let flight_addr = flight
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(|e| e.to_string())?;
    let node = tokio::task::spawn_blocking(move || Node::open(args, local, flight_addr))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
    if let (Some(flight), Some(parts), Some(remote)) =
        (flight, node.parts.clone(), node.remote.clone())
    {
        let service = shoal_executor::FragmentService::new(
            node.cluster.as_ref(),
            node.meta.clone(),
            node.store.clone(),
            node.row_ids.clone(),
            node.base.clone(),
            error::datafusion_state,
            node.args.query_memory_bytes,
            remote,
        );
        tokio::spawn(parts.resolve_forever());
        if let Some(remote) = node.remote.clone() {
            tokio::spawn(remote.retell_forever());
        }
        tokio::spawn(rebalance::rebalance_forever(node.clone()));
        tokio::spawn(failover::fail_over_forever(node.clone()));
        tracing::info!(address = ?flight_addr, "taking fragments from other nodes");
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(flight))
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the fragment service stopped");
            }
        });
    }
    node.bootstrap_superuser().map_err(|e| e.to_string())?;
    let tls = match (&node.args.tls_cert, &node.args.tls_key) {
        (Some(cert), Some(key)) => Some(
            wire::listener::tls_acceptor(cert, key)
                .map_err(|e| format!("cannot load TLS certificate or key: {e}"))?,
        ),
        _ => None,
    };
    if node.args.metrics_listen != "off" {
        let metrics = TcpListener::bind(&node.args.metrics_listen)
            .await
            .map_err(|e| {
                format!(
                    "cannot listen on {} for metrics: {e}",
                    node.args.metrics_listen
                )
            })?;
        let metrics_addr = metrics.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(address = %metrics_addr, "metrics at /metrics");
        // Printed before the readiness line so that a caller who asked for port 0 learns both.
        println!("shoal metrics on {metrics_addr}");
        if let Some(remote) = node.remote.clone() {
            let store = node.store.clone();
            let _ = node
                .metrics
                .lag_source
                .set(Box::new(move || remote.largest_replica_lag(&store)));
        }
        tokio::spawn(metrics::serve(metrics, node.metrics.clone()));
    }
    tracing::info!(
        address = %local,
        data_dir = %node.args.data_dir.display(),
        auth = ?node.args.auth,
        tls = tls.is_some(),
        node = node.cluster.local_node(),
        "shoal is listening for PostgreSQL clients"
    );
    // A line for scripts and tests that wait for readiness (and passed port 0 to learn the port).
    println!("shoal listening on {local}");
    tokio::select! {
        _ = wire::listener::serve(Arc::clone(&node), listener, tls) => {}
        _ = stop_requested() => {
            if let Some(remote) = node.remote.clone() {
                let started = std::time::Instant::now();
                // Bounded: with etcd away the hand-over cannot happen, and the followers
                // take over once the lease expires instead.
                match tokio::time::timeout(HAND_OVER_LIMIT, remote.hand_over_all(node.store.clone())).await {
                    Ok(handed) => tracing::info!(handed, took_ms = started.elapsed().as_millis() as u64, "partitions handed to their followers before stopping"),
                    Err(_) => tracing::warn!("the hand-over did not finish in time: stopping anyway"),
                }
            }
        }
    }
    Ok(())
}

/// How long a stopping node tries to hand its partitions over.
const HAND_OVER_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves on SIGTERM or SIGINT: the node hands its partitions over, then stops.
async fn stop_requested() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
