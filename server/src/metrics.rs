//! Prometheus metrics and the `/metrics` HTTP endpoint.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Metrics {
    pub registry: Registry,
    pub connections: IntGauge,
    pub connections_total: IntCounter,
    pub queries: IntCounterVec,
    pub errors: IntCounterVec,
    pub latency: HistogramVec,
    pub statement_restarts: IntCounter,
    pub point_reads: IntCounter,
    pub rows_scanned: IntCounter,
    pub bytes_scanned: IntCounter,
    pub bytes_shipped: IntCounterVec,
    pub batches_shipped: IntCounterVec,
    /// Partitions this node, as coordinator, gave a new leader because theirs was down.
    pub failovers: IntCounter,
    /// Followers this node, as coordinator, added to partitions short of copies.
    pub replicas_added: IntCounter,
    pub configuration_changes: IntCounter,
    pub replica_lag: IntGauge,
    /// Reads the largest lag of a follower of the partitions this node leads, at each scrape
    /// (set on a cluster node).
    pub lag_source: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("shoal".into()), None).expect("static prefix");
        let connections = IntGauge::new("connections", "Open client connections").expect("static");
        let connections_total =
            IntCounter::new("connections_total", "Client connections accepted").expect("static");
        let queries = IntCounterVec::new(
            Opts::new("queries_total", "Statements executed, by kind"),
            &["kind"],
        )
        .expect("static");
        let errors = IntCounterVec::new(
            Opts::new("errors_total", "Statements failed, by SQLSTATE"),
            &["sqlstate"],
        )
        .expect("static");
        let latency = HistogramVec::new(
            HistogramOpts::new("query_duration_seconds", "Statement latency, by kind").buckets(
                vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
            ),
            &["kind"],
        )
        .expect("static");
        let statement_restarts = IntCounter::new(
            "statement_restarts_total",
            "READ COMMITTED writes run again because a row changed after their snapshot",
        )
        .expect("static");
        let point_reads = IntCounter::new(
            "point_reads_total",
            "SELECTs of one primary key read straight from storage, without a query plan",
        )
        .expect("static");
        let rows_scanned =
            IntCounter::new("rows_scanned_total", "Rows read by scan fragments").expect("static");
        let bytes_scanned =
            IntCounter::new("bytes_scanned_total", "Bytes read by scan fragments").expect("static");
        let bytes_shipped = IntCounterVec::new(
            Opts::new(
                "fragment_bytes_received_total",
                "Bytes of Arrow batches received from fragments run by other nodes, by statement kind",
            ),
            &["kind"],
        )
        .expect("static");
        let batches_shipped = IntCounterVec::new(
            Opts::new(
                "fragment_batches_received_total",
                "Arrow batches received from fragments run by other nodes, by statement kind",
            ),
            &["kind"],
        )
        .expect("static");
        let failovers = IntCounter::new(
            "failovers_total",
            "Partitions this node (as coordinator) gave a follower to lead because their leader was down",
        )
        .expect("static");
        let replicas_added = IntCounter::new(
            "replicas_added_total",
            "Followers this node (as coordinator) added to partitions short of copies",
        )
        .expect("static");
        let configuration_changes = IntCounter::new(
            "configuration_changes_total",
            "Partition configuration changes (followers removed or added, promotions, hand-overs, moves) this node recorded",
        )
        .expect("static");
        let replica_lag = IntGauge::new(
            "replica_lag_entries",
            "Log entries the furthest-behind follower of a partition this node leads lacks, as far as it knows",
        )
        .expect("static");
        for c in [
            Box::new(connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(configuration_changes.clone()),
            Box::new(replica_lag.clone()),
            Box::new(failovers.clone()),
            Box::new(replicas_added.clone()),
            Box::new(connections_total.clone()),
            Box::new(queries.clone()),
            Box::new(errors.clone()),
            Box::new(latency.clone()),
            Box::new(statement_restarts.clone()),
            Box::new(point_reads.clone()),
            Box::new(rows_scanned.clone()),
            Box::new(bytes_scanned.clone()),
            Box::new(bytes_shipped.clone()),
            Box::new(batches_shipped.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            connections,
            connections_total,
            queries,
            errors,
            latency,
            statement_restarts,
            point_reads,
            rows_scanned,
            bytes_scanned,
            bytes_shipped,
            batches_shipped,
            failovers,
            replicas_added,
            configuration_changes,
            replica_lag,
            lag_source: std::sync::OnceLock::new(),
        }
    }

    /// The metrics in Prometheus' text format. Reads the store (replica lag): call it off the
    /// async runtime.
    pub fn render(&self) -> String {
        let changes = shoal_executor::configuration_changes_total();
        self.configuration_changes
            .inc_by(changes.saturating_sub(self.configuration_changes.get()));
        if let Some(lag) = self.lag_source.get() {
            self.replica_lag.set(lag() as i64);
        }
        // Scan counters live in the executor; bring these counters up to its totals.
        let (rows, bytes) = shoal_executor::scan_totals();
        self.rows_scanned
            .inc_by(rows.saturating_sub(self.rows_scanned.get()));
        self.bytes_scanned
            .inc_by(bytes.saturating_sub(self.bytes_scanned.get()));
        for (kind, bytes, batches) in shoal_executor::shipped_totals() {
            let (b, n) = (
                self.bytes_shipped.with_label_values(&[kind]),
                self.batches_shipped.with_label_values(&[kind]),
            );
            b.inc_by(bytes.saturating_sub(b.get()));
            n.inc_by(batches.saturating_sub(n.get()));
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` (any other path gets 404) with a minimal HTTP/1.0 responder.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                socket.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics") {
                let body = tokio::task::spawn_blocking(move || metrics.render())
                    .await
                    .unwrap_or_default();
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{}",
                    body.len(),
                    body
                )
            } else {
                "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
            };
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
