//! What travels between nodes: an aggregate over a million rows spread over three nodes
//! ships partial groups from each partition's leader, never the rows.

use shoal_tests::cluster::{start_nodes, Etcd};
use shoal_tests::{explain, row, texts};

/// The bytes a node received from the others, as its /metrics counts them.
async fn bytes_received(node: &shoal_tests::Node) -> f64 {
    let metrics = shoal_tests::http_get(node.metrics_port, "/metrics").await;
    metrics
        .lines()
        .filter(|l| l.starts_with("shoal_fragment_bytes_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An aggregate over a million rows spread over three nodes ships one partial row per group
/// and partition, not the rows: what travels is bounded by groups × partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_over_a_million_rows_ships_partial_groups_only() {
    let etcd = Etcd::start();
    let nodes_ = start_nodes(&etcd, 3);
    let c = nodes_[0].connect().await;
    c.batch_execute(
        "create table big (id bigint primary key, k int) with (partitions = 6);
         insert into big select g, g % 10 from generate_series(1, 1000000) as s(g)",
    )
    .await
    .unwrap();
    let query = "select k, count(*), sum(id) from big group by k order by k";
    let before = bytes_received(&nodes_[0]).await;
    let answer = texts(&c, query).await;
    let shipped = bytes_received(&nodes_[0]).await - before;
    let expected: Vec<Vec<Option<String>>> = (0..10i64)
        .map(|k| {
            let sum: i64 = (1..=1_000_000i64).filter(|g| g % 10 == k).sum();
            row(&[&k.to_string(), "100000", &sum.to_string()])
        })
        .collect();
    assert_eq!(answer, expected);
    // 10 groups × 4 remote partitions of three small columns, with Arrow framing: kilobytes,
    // where the rows themselves would be megabytes.
    assert!(
        shipped > 0.0 && shipped < 64.0 * 1024.0,
        "{shipped} bytes shipped"
    );
    let analyzed = explain(&c, &format!("analyze {query}")).await;
    let rows = shoal_tests::fragment_output_rows(&analyzed);
    assert!(
        rows > 0 && rows <= 10 * 6,
        "{rows} rows shipped: {analyzed}"
    );
}
