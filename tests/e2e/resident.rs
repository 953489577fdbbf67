//! Resident columns over the wire: a second scan of unchanged partitions reads their decoded
//! columns from memory, a write to a partition makes only its own columns stale, and no
//! transaction ever reads another version of a partition than its snapshot's (its own writes
//! included). The answers are compared with those of a node that keeps no columns.

use shoal_tests::{explain, texts, Node};

async fn sorted(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = texts(c, sql).await;
    rows.sort();
    rows
}

/// The sum of a metric over every operator line of an EXPLAIN ANALYZE output.
fn metric(analyzed: &str, name: &str) -> usize {
    let key = format!("{name}=");
    analyzed
        .match_indices(&key)
        .filter_map(|(at, _)| {
            let digits: String = analyzed[at + key.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<usize>().ok()
        })
        .sum()
}

const SETUP: &str = "create table events (id bigint primary key, kind int, amount bigint, \
                     note text) with (partitions = 4); \
                     insert into events select i, cast(i % 5 as int), i * 3, 'n' || i \
                     from generate_series(1, 20000) as s(i)";
const QUERY: &str = "select kind, count(*), sum(amount), max(note) from events \
                     where amount > 10 group by kind";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_columns_serve_repeated_scans_until_their_partition_is_written() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute(SETUP).await.unwrap();
    // A node that keeps nothing answers every query from RocksDB: the reference.
    let reference = Node::start_with(&["--resident-bytes", "0"]);
    let r = reference.connect().await;
    r.batch_execute(SETUP).await.unwrap();

    let analyze = format!("analyze {QUERY}");
    let first = explain(&c, &analyze).await;
    assert_eq!(metric(&first, "resident_batches"), 0, "{first}");
    // 5,000 rows a partition: one batch each.
    let second = explain(&c, &analyze).await;
    assert_eq!(metric(&second, "resident_batches"), 4, "{second}");
    assert_eq!(sorted(&c, QUERY).await, sorted(&r, QUERY).await);
    let other_columns = "select kind, sum(amount) from events group by kind";
    assert_eq!(
        sorted(&c, other_columns).await,
        sorted(&r, other_columns).await
    );

    // One row in one partition: that partition is read again, the others are not.
    let insert = "insert into events values (20001, 1, 1000000, 'zz')";
    c.batch_execute(insert).await.unwrap();
    r.batch_execute(insert).await.unwrap();
    let after_write = explain(&c, &analyze).await;
    assert_eq!(metric(&after_write, "resident_batches"), 3, "{after_write}");
    let with_row = sorted(&c, QUERY).await;
    assert_eq!(with_row, sorted(&r, QUERY).await);
    assert!(with_row.iter().any(|row| row[3].as_deref() == Some("zz")));

    // A transaction reads its own writes, then, rolled back, the resident columns again.
    c.batch_execute("begin; delete from events where kind = 2")
        .await
        .unwrap();
    let own = sorted(&c, QUERY).await;
    assert_eq!(own.len(), 4, "kind 2 is deleted: {own:?}");
    assert!(own.iter().all(|row| row[0].as_deref() != Some("2")));
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(sorted(&c, QUERY).await, with_row);

    // A snapshot older than the resident columns reads its own version, before and after
    // newer columns are kept; the newest data is read once it is over.
    let old = node.connect().await;
    old.batch_execute("begin isolation level repeatable read")
        .await
        .unwrap();
    assert_eq!(sorted(&old, QUERY).await, with_row);
    let update = "update events set amount = amount + 1 where id <= 10";
    c.batch_execute(update).await.unwrap();
    r.batch_execute(update).await.unwrap();
    let newest = sorted(&c, QUERY).await;
    assert_eq!(newest, sorted(&r, QUERY).await);
    assert_ne!(newest, with_row);
    assert_eq!(sorted(&old, QUERY).await, with_row);
    assert_eq!(sorted(&c, QUERY).await, newest);
    old.batch_execute("commit").await.unwrap();
    assert_eq!(sorted(&old, QUERY).await, newest);

    // The device operators (here their CPU reference) read the same columns.
    c.batch_execute("set shoal.gpu = on").await.unwrap();
    let on_device = explain(&c, &analyze).await;
    assert!(on_device.contains("GpuFilterProjectExec"), "{on_device}");
    assert_eq!(metric(&on_device, "resident_batches"), 4, "{on_device}");
    assert_eq!(sorted(&c, QUERY).await, newest);

    // A bulk load makes every partition's columns stale.
    let copy = c
        .copy_in::<_, bytes::Bytes>("copy events from stdin")
        .await
        .unwrap();
    futures::pin_mut!(copy);
    use futures::SinkExt;
    copy.send(bytes::Bytes::from_static(b"30001\t4\t500\tcopied\n"))
        .await
        .unwrap();
    copy.finish().await.unwrap();
    let after_load = explain(&c, &analyze).await;
    assert_eq!(metric(&after_load, "resident_batches"), 0, "{after_load}");
    let loaded = sorted(&c, QUERY).await;
    assert!(loaded.iter().any(|row| row[3].as_deref() == Some("zz")));
    assert_ne!(loaded, newest);
}
