//! Rebalancing: a node that joins a cluster takes partitions of existing tables, moved with
//! their rows while clients keep reading and writing. No committed write is lost, no read
//! sees a partition twice or not at all, and each moved partition has a new epoch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{join, start_nodes, Etcd};
use shoal_tests::{row, texts};

/// Whether an error asks the client to try again (a partition moving or changing leader).
fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().map(|c| c.code()) == Some("40001")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_partitions_while_clients_read_and_write() {
    let etcd = Etcd::start();
    let mut nodes_ = start_nodes(&etcd, 2);
    let setup = nodes_[0].connect().await;
    setup
        .batch_execute("create table kv (id bigint primary key, v text) with (partitions = 6)")
        .await
        .unwrap();
    let rows: Vec<String> = (1..=3000).map(|i| format!("({i}, 'v{i}')")).collect();
    setup
        .batch_execute(&format!("insert into kv values {}", rows.join(", ")))
        .await
        .unwrap();

    // A writer through node 2 and a reader through node 1 run through the whole rebalancing.
    let stop = Arc::new(AtomicBool::new(false));
    let writer_client = nodes_[1].connect().await;
    let writing = stop.clone();
    let writer = tokio::spawn(async move {
        let mut committed = Vec::new();
        let mut id: i64 = 10_000;
        while !writing.load(Ordering::Relaxed) {
            id += 1;
            loop {
                match writer_client
                    .execute("insert into kv values ($1, 'w')", &[&id])
                    .await
                {
                    Ok(_) => break,
                    // Autocommit writes run again by themselves while a partition moves; a
                    // move slower than that pause reaches the client as 40001.
                    Err(e) if retryable(&e) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => panic!("insert {id}: {e:?}"),
                }
            }
            committed.push(id);
        }
        committed
    });
    let reader_client = nodes_[0].connect().await;
    let reading = stop.clone();
    let reader = tokio::spawn(async move {
        let mut reads = 0;
        while !reading.load(Ordering::Relaxed) {
            match reader_client
                .query_one("select count(*), sum(id) from kv where id <= 3000", &[])
                .await
            {
                Ok(r) => {
                    let (count, sum): (i64, i64) = (r.get(0), r.get(1));
                    assert_eq!((count, sum), (3000, 4_501_500), "a read during the move");
                    reads += 1;
                }
                // A read that meets a moved partition runs again by itself.
                Err(e) => panic!("read: {e:?}"),
            }
        }
        reads
    });

    nodes_.push(join(&etcd));
    let watcher = nodes_[2].connect().await;
    let started = Instant::now();
    let led_by_3 = "select count(*) from shoal.partitions where table_name = 'kv' and leader = 3";
    while texts(&watcher, led_by_3).await != vec![row(&["2"])] {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "node 3 took no partitions: {:?}",
            texts(
                &watcher,
                "select partition, leader, epoch from shoal.partitions where table_name = 'kv'"
            )
            .await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Leaders are even (2 each) and stay so; no move is left under way.
    assert_eq!(
        texts(
            &watcher,
            "select count(*) from shoal.partitions where moving_to is not null"
        )
        .await,
        vec![row(&["0"])]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let committed = writer.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(
        !committed.is_empty() && reads > 0,
        "{} writes, {reads} reads",
        committed.len()
    );

    assert_eq!(
        texts(
            &watcher,
            "select leader, count(*), min(epoch), max(epoch) from shoal.partitions \
             where table_name = 'kv' group by leader order by leader"
        )
        .await,
        vec![
            row(&["1", "2", "2", "2"]),
            row(&["2", "2", "2", "2"]),
            row(&["3", "2", "3", "3"])
        ],
        "node 3 first copied every partition as a new follower (epoch 2), then took the \
         leadership of two (epoch 3)"
    );
    assert_eq!(
        texts(
            &watcher,
            "select count(*) from shoal.partitions where table_name = 'kv' \
             and followers like '_,_'"
        )
        .await,
        vec![row(&["6"])],
        "every partition has two followers"
    );
    let expected = vec![row(&[
        &(3000 + committed.len()).to_string(),
        &(4_501_500 + committed.iter().sum::<i64>()).to_string(),
    ])];
    for n in &nodes_ {
        let c = n.connect().await;
        assert_eq!(
            texts(&c, "select count(*), sum(id) from kv").await,
            expected
        );
    }
    // The moved partitions take writes at their new leader.
    let more: Vec<String> = (20_001..=20_100).map(|i| format!("({i}, 'm')")).collect();
    watcher
        .batch_execute(&format!("insert into kv values {}", more.join(", ")))
        .await
        .unwrap();
    assert_eq!(
        texts(&setup, "select count(*) from kv where v = 'm'").await,
        vec![row(&["100"])]
    );
}

/// Waits (at most 90 s) until `node` leads `count` partitions of `table`, none of them moving.
async fn wait_until_led(c: &tokio_postgres::Client, table: &str, node: u64, count: usize) {
    let started = Instant::now();
    let led = format!(
        "select count(*) from shoal.partitions where table_name = '{table}' \
         and leader = {node} and moving_to is null"
    );
    while texts(c, &led).await != vec![row(&[&count.to_string()])] {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "node {node} did not take {count} partitions of {table}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A table keyed by hidden row ids moves too: its rows come along, and the nodes keep adding
/// rows (each picks a partition it leads and that is not moving) with ids that never meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_primary_key_moves_too() {
    let etcd = Etcd::start();
    let mut nodes_ = start_nodes(&etcd, 2);
    let c1 = nodes_[0].connect().await;
    let c2 = nodes_[1].connect().await;
    c1.batch_execute("create table events (v int) with (partitions = 4)")
        .await
        .unwrap();
    c1.batch_execute("insert into events select g from generate_series(1, 1000) as s(g)")
        .await
        .unwrap();
    c2.batch_execute("insert into events select g from generate_series(1001, 1010) as s(g)")
        .await
        .unwrap();
    nodes_.push(join(&etcd));
    let c3 = nodes_[2].connect().await;
    wait_until_led(&c3, "events", 3, 1).await;
    // Every node adds rows: to the partitions it leads now (node 3: the one it took).
    for (c, first) in [(&c1, 2001), (&c2, 3001), (&c3, 4001)] {
        let sql = format!(
            "insert into events select g from generate_series({first}, {}) as s(g)",
            first + 499
        );
        loop {
            match c.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e) if retryable(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{sql}: {e:?}"),
            }
        }
    }
    for c in [&c1, &c2, &c3] {
        assert_eq!(
            texts(c, "select count(*), count(distinct v), sum(v) from events").await,
            vec![row(&["2510", "2510", "5386305"])]
        );
    }
}

/// A table with a secondary index moves with its rows' index entries, and the index keeps
/// answering on the node that led the table alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_table_moves_with_its_index_entries() {
    let etcd = Etcd::start();
    let mut nodes_ = start_nodes(&etcd, 1);
    let c1 = nodes_[0].connect().await;
    c1.batch_execute(
        "create table items (id int primary key, cat int, name text) with (partitions = 4);
         insert into items select g, g % 10, 'n' || g from generate_series(1, 400) as s(g);
         create index items_cat on items (cat)",
    )
    .await
    .unwrap();
    let by_cat = "select count(*), sum(id) from items where cat = 3";
    let plan = shoal_tests::explain(&c1, by_cat).await;
    assert!(plan.contains("index_lookup"), "{plan}");
    assert_eq!(texts(&c1, by_cat).await, vec![row(&["40", "7920"])]);
    nodes_.push(join(&etcd));
    let c2 = nodes_[1].connect().await;
    wait_until_led(&c2, "items", 2, 2).await;
    for c in [&c1, &c2] {
        assert_eq!(texts(c, by_cat).await, vec![row(&["40", "7920"])]);
    }
    // Writes through either node keep the moved entries in step.
    c2.batch_execute("update items set cat = 3 where id in (1, 2, 5, 6)")
        .await
        .unwrap();
    c1.batch_execute("delete from items where id in (13, 23)")
        .await
        .unwrap();
    for c in [&c1, &c2] {
        assert_eq!(texts(c, by_cat).await, vec![row(&["42", "7898"])]);
    }
}
