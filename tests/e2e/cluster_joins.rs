//! Co-partitioned joins in a cluster: tables partitioned on the join key with the same
//! partition count keep partition `i` on one node, their join (and what runs per partition
//! above it) runs there, and only partial results travel. When a node joins, each partition
//! `i` of the group moves with the others; joins stay right while they are led apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{join, start_nodes, Etcd};
use shoal_tests::{explain, row, texts};

const ORDERS: i64 = 600;

/// Order `k` has `k % 4` lines; line `n` of it has quantity `k + n`.
fn lines_of(k: i64) -> impl Iterator<Item = (i64, i64)> {
    (1..=k % 4).map(move |n| (n, k + n))
}

fn status_of(k: i64) -> &'static str {
    ["F", "O", "P"][(k % 3) as usize]
}

/// `select o_status, count(*), sum(l_qty) ... group by o_status`, computed here.
fn expected_by_status() -> Vec<Vec<Option<String>>> {
    ["F", "O", "P"]
        .iter()
        .map(|s| {
            let lines: Vec<i64> = (1..=ORDERS)
                .filter(|k| status_of(*k) == *s)
                .flat_map(|k| lines_of(k).map(|(_, q)| q))
                .collect();
            row(&[
                s,
                &lines.len().to_string(),
                &lines.iter().sum::<i64>().to_string(),
            ])
        })
        .collect()
}

const BY_STATUS: &str = "select o_status, count(*), sum(l_qty) from orders \
     join lineitem on o_orderkey = l_orderkey group by o_status order by o_status";

/// Pairs of partitions of the same index that are led by different nodes.
const LED_APART: &str = "select count(*) from shoal.partitions a join shoal.partitions b \
     on a.partition = b.partition where a.table_name = 'orders' \
     and b.table_name = 'lineitem' and a.leader <> b.leader";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_of_tables_partitioned_alike_run_at_their_leaders() {
    let etcd = Etcd::start();
    let mut nodes_ = start_nodes(&etcd, 3);
    let c1 = nodes_[0].connect().await;
    c1.batch_execute(
        "create table orders (o_orderkey bigint primary key, o_custkey int, o_status text) \
             with (partitions = 6);
         create table lineitem (l_orderkey bigint, l_linenumber int, l_qty bigint, \
             primary key (l_orderkey, l_linenumber)) \
             with (partitions = 6, partition_key = 'l_orderkey')",
    )
    .await
    .unwrap();
    let err = c1
        .batch_execute(
            "create table bad (a int, b int, primary key (a)) with (partition_key = 'b')",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P16"), "{err}");
    // A UNIQUE constraint is checked where rows are written: across nodes it must include the
    // partition key, so that equal values share a partition.
    let err = c1
        .batch_execute("create table emails (id int primary key, email text unique)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    c1.batch_execute(
        "create table codes (id int, line int, code text, primary key (id, line), \
             unique (code, id)) with (partition_key = 'id');
         drop table codes",
    )
    .await
    .unwrap();
    assert_eq!(texts(&c1, LED_APART).await, vec![row(&["0"])]);

    let orders: Vec<String> = (1..=ORDERS)
        .map(|k| format!("({k}, {}, '{}')", k % 50, status_of(k)))
        .collect();
    let lines: Vec<String> = (1..=ORDERS)
        .flat_map(|k| lines_of(k).map(move |(n, q)| format!("({k}, {n}, {q})")))
        .collect();
    let c2 = nodes_[1].connect().await;
    c2.batch_execute(&format!("insert into orders values {}", orders.join(", ")))
        .await
        .unwrap();
    let c3 = nodes_[2].connect().await;
    c3.batch_execute(&format!("insert into lineitem values {}", lines.join(", ")))
        .await
        .unwrap();

    let expected = expected_by_status();
    let orders_without_lines = (1..=ORDERS).filter(|k| k % 4 == 0).count();
    for c in [&c1, &c2, &c3] {
        assert_eq!(texts(c, BY_STATUS).await, expected);
        assert_eq!(
            texts(
                c,
                "select count(*), count(l_orderkey) from orders \
                 left join lineitem on o_orderkey = l_orderkey"
            )
            .await,
            vec![row(&[
                &(lines.len() + orders_without_lines).to_string(),
                &lines.len().to_string()
            ])]
        );
        assert_eq!(
            texts(
                c,
                "select count(*) from orders where not exists \
                 (select 1 from lineitem where l_orderkey = o_orderkey)"
            )
            .await,
            vec![row(&[&orders_without_lines.to_string()])]
        );
        // Rows are found by their whole key at the leader of their partition key's partition.
        assert_eq!(
            texts(
                c,
                "select l_qty from lineitem where l_orderkey = 7 and l_linenumber = 3"
            )
            .await,
            vec![row(&["10"])]
        );
    }

    // The join and the partial aggregate above it run in one fragment at the leaders; no
    // input is repartitioned on the join key.
    let plan = explain(&c1, BY_STATUS).await;
    let fragment = plan
        .find("FragmentExec: tables=public.orders ⋈ public.lineitem")
        .unwrap_or_else(|| panic!("{plan}"));
    let join_at = plan
        .find("HashJoinExec")
        .unwrap_or_else(|| panic!("{plan}"));
    let partial = plan
        .find("mode=Partial")
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(fragment < partial && partial < join_at, "{plan}");
    assert!(
        !plan
            .lines()
            .any(|l| l.contains("RepartitionExec") && l.contains("orderkey")),
        "{plan}"
    );
    // Only partial aggregates travel: at most one row per status from each partition.
    let analyzed = explain(&c1, &format!("analyze {BY_STATUS}")).await;
    let shipped = shoal_tests::fragment_output_rows(&analyzed);
    assert!(
        shipped > 0 && shipped <= 6 * 3,
        "{shipped} rows: {analyzed}"
    );

    // A fourth node takes a partition of each table, one after the other; joins read
    // through the first node all along stay right, also while the two are led apart.
    let stop = Arc::new(AtomicBool::new(false));
    let reading = stop.clone();
    let reader_client = nodes_[0].connect().await;
    let reader_expected = expected.clone();
    let reader = tokio::spawn(async move {
        let mut reads = 0;
        while !reading.load(Ordering::Relaxed) {
            assert_eq!(
                texts(&reader_client, BY_STATUS).await,
                reader_expected,
                "a join during the move"
            );
            reads += 1;
        }
        reads
    });
    nodes_.push(join(&etcd));
    let watcher = nodes_[3].connect().await;
    let started = Instant::now();
    let led_by_4 = "select table_name, count(*) from shoal.partitions \
                    where leader = 4 group by table_name order by table_name";
    loop {
        let moved = texts(&watcher, led_by_4).await;
        let apart = texts(&watcher, LED_APART).await;
        if moved == vec![row(&["lineitem", "1"]), row(&["orders", "1"])]
            && apart == vec![row(&["0"])]
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the group did not move: {moved:?}, {apart:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    for n in &nodes_ {
        let c = n.connect().await;
        assert_eq!(texts(&c, BY_STATUS).await, expected);
    }
    let plan = explain(&watcher, BY_STATUS).await;
    assert!(
        plan.contains("tables=public.orders ⋈ public.lineitem"),
        "{plan}"
    );
}
