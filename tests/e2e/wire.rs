//! Protocol-level behaviour through tokio-postgres: startup, SCRAM, simple and extended
//! queries, binary results, portals, COPY, cancel, metrics.

use futures::{SinkExt, StreamExt};
use shoal_tests::{Node, PASSWORD};
use tokio_postgres::types::Type;

#[tokio::test]
async fn startup_reports_postgres_parameters_and_version() {
    let node = Node::start();
    let client = node.connect().await;
    let row = client.query_one("select version()", &[]).await.unwrap();
    let v: String = row.get(0);
    assert!(v.starts_with("PostgreSQL 15."), "{v}");
    let rows = client.simple_query("show server_version").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("15.8"))
    );
    let iso: String = client
        .query_one("select current_setting('transaction_isolation')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(iso, "read committed");
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let node = Node::start();
    let bad = format!(
        "host=127.0.0.1 port={} user=shoal password=nope dbname=shoal",
        node.port
    );
    let err = tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .err()
        .expect("wrong password must fail");
    let code = err.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("28P01"), "{err}");
    let good = format!(
        "host=127.0.0.1 port={} user=shoal password={PASSWORD} dbname=shoal",
        node.port
    );
    assert!(tokio_postgres::connect(&good, tokio_postgres::NoTls)
        .await
        .is_ok());
}

#[tokio::test]
async fn extended_protocol_with_inferred_parameters_and_binary_results() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute(
        "create table items (id bigint primary key, name text not null, price numeric(10,2), \
         qty int, ok boolean, day date, at timestamp, score float8)",
    )
    .await
    .unwrap();
    let insert = c
        .prepare("insert into items (id, name, qty, ok, score, day) values ($1, $2, $3, $4, $5, cast($6 as date))")
        .await
        .unwrap();
    assert_eq!(insert.params()[0], Type::INT8);
    assert_eq!(insert.params()[1], Type::TEXT);
    assert_eq!(insert.params()[2], Type::INT4);
    // A cast on the placeholder types it, as in PostgreSQL.
    assert_eq!(insert.params()[5], Type::DATE);
    for i in 0..20i64 {
        c.execute(
            &insert,
            &[
                &i,
                &format!("item{i}"),
                &(i as i32 * 2),
                &(i % 2 == 0),
                &(i as f64 / 4.0),
                &chrono::NaiveDate::from_ymd_opt(2024, 1, (i % 28) as u32 + 1).unwrap(),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("insert {i}: {e}"));
    }
    let select = c
        .prepare("select id, name, qty, ok, score from items where id = $1")
        .await
        .unwrap();
    // Executed more than once: the cached plan is reused with new parameters.
    for i in [3i64, 4, 19] {
        let row = c.query_one(&select, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), i);
        assert_eq!(row.get::<_, String>(1), format!("item{i}"));
        assert_eq!(row.get::<_, i32>(2), i as i32 * 2);
        assert_eq!(row.get::<_, bool>(3), i % 2 == 0);
        assert_eq!(row.get::<_, f64>(4), i as f64 / 4.0);
    }
    let n: i64 = c
        .query_one("select count(*) from items where qty >= $1", &[&10i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 15);
}

#[tokio::test]
async fn portals_with_row_limits_resume_inside_a_transaction() {
    let node = Node::start();
    let mut c = node.connect().await;
    c.batch_execute("create table nums (n int primary key)")
        .await
        .unwrap();
    c.batch_execute(
        "insert into nums select cast(value as int) from generate_series(1, 100) as g(value)",
    )
    .await
    .unwrap();
    let tx = c.transaction().await.unwrap();
    let stmt = tx.prepare("select n from nums order by n").await.unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 30).await.unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 30);
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    tx.commit().await.unwrap();
    assert_eq!(seen, (1..=100).collect::<Vec<i32>>());
}

#[tokio::test]
async fn copy_options_shoal_does_not_implement_are_refused() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table opts (id int primary key, name text)")
        .await
        .unwrap();
    for sql in [
        "copy opts from stdin with (format csv, force_null (name))",
        "copy opts from stdin with (encoding 'latin1')",
        "copy opts to stdout with (format csv, force_quote (name))",
    ] {
        // tokio-postgres reads the next COPY after a refused one as an unexpected message, on
        // PostgreSQL too: each statement gets its own connection.
        let c = node.connect().await;
        let err = match c.copy_in::<_, bytes::Bytes>(sql).await {
            Ok(_) => panic!("{sql} was accepted"),
            Err(e) => e,
        };
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED),
            "{sql}: {err}"
        );
    }
    // UTF-8 under any of its names, and FREEZE (pgbench -i sends `freeze on`), are accepted.
    let sink = c
        .copy_in("copy opts from stdin with (format csv, encoding 'UTF-8', freeze on)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1,a\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
}

#[tokio::test]
async fn copy_in_and_out_text_and_csv() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table people (id int primary key, name text, note text)")
        .await
        .unwrap();
    let sink = c.copy_in("copy people from stdin").await.unwrap();
    futures::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!("{i}\tname {i}\t\\N\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 10_000);

    let sink = c
        .copy_in("copy people (id, name, note) from stdin with (format csv, header)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"id,name,note\n10000,\"quoted, name\",\"line\nbreak\"\n10001,,x\n",
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);

    let row = c
        .query_one("select name, note from people where id = 10000", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "quoted, name");
    assert_eq!(row.get::<_, String>(1), "line\nbreak");
    let row = c
        .query_one("select name from people where id = 10001", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);

    let out = c
        .copy_out("copy (select id, name from people where id < 3 order by id) to stdout with (format csv)")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = out.map(|r| r.unwrap()).collect().await;
    let text: String = chunks.iter().map(|b| String::from_utf8_lossy(b)).collect();
    assert_eq!(text, "0,name 0\n1,name 1\n2,name 2\n");
}

#[tokio::test]
async fn a_failed_copy_loads_nothing() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table c (id int primary key, v int)")
        .await
        .unwrap();
    let sink = c.copy_in("copy c from stdin").await.unwrap();
    futures::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\t{i}\n"));
    }
    data.push_str("5000\tnot-a-number\n");
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let err = sink
        .finish()
        .await
        .expect_err("bad value must fail the COPY");
    assert!(err.as_db_error().is_some(), "{err}");
    let n: i64 = c
        .query_one("select count(*) from c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn cancel_request_stops_a_running_query() {
    let node = Node::start();
    let c = node.connect().await;
    let token = c.cancel_token();
    let slow = tokio::spawn(async move {
        c.simple_query("select count(*) from generate_series(1, 3000000000) a(x) where x % 7 = 3")
            .await
    });
    // A cancel that arrives before the query starts does nothing (as in PostgreSQL): keep
    // asking until the query has ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !slow.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "cancel must stop the query"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    }
    let result = slow.await.unwrap();
    let err = result.expect_err("canceled query must fail");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
}

#[tokio::test]
async fn pg_cancel_backend_stops_another_session() {
    let node = Node::start();
    let victim = node.connect().await;
    let admin = node.connect().await;
    let pid: i32 = victim
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let slow = tokio::spawn(async move {
        victim
            .simple_query(
                "select count(*) from generate_series(1, 3000000000) a(x) where x % 7 = 3",
            )
            .await
    });
    let sql = format!("select pg_cancel_backend({pid})");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut signalled = false;
    while !slow.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_cancel_backend must stop the query"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // False once the victim's connection has closed after its query ended.
        let sent: bool = admin.query_one(sql.as_str(), &[]).await.unwrap().get(0);
        signalled |= sent;
    }
    assert!(signalled, "pg_cancel_backend found the session");
    let result = slow.await.unwrap();
    let err = result.expect_err("canceled query must fail");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
}

#[tokio::test]
async fn statement_timeout_cancels_with_57014() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("set statement_timeout = '200ms'")
        .await
        .unwrap();
    let err = c
        .simple_query("select count(*) from generate_series(1, 3000000000) a(x) where x % 7 = 3")
        .await
        .expect_err("must time out");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    // The session stays usable.
    c.simple_query("select 1").await.unwrap();
}

#[tokio::test]
async fn pg_stat_activity_and_metrics() {
    let node = Node::start();
    let a = node.connect().await;
    let b = node.connect().await;
    let pid_b: i32 = b
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let rows = a
        .query(
            "select pid, state, query from pg_stat_activity order by pid",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 2);
    assert!(rows.iter().any(|r| r.get::<_, i32>(0) == pid_b));
    let mine = rows
        .iter()
        .find(|r| r.get::<_, String>(1) == "active")
        .expect("the querying session is active");
    assert!(mine.get::<_, String>(2).contains("pg_stat_activity"));

    let _ = a.simple_query("select * from no_such_table").await;
    a.batch_execute("create table m (id int primary key); insert into m values (1), (2), (3)")
        .await
        .unwrap();
    a.simple_query("select * from m").await.unwrap();
    let body = shoal_tests::http_get(node.metrics_port, "/metrics").await;
    assert!(body.contains("shoal_connections "), "{body}");
    assert!(
        body.contains("shoal_queries_total{kind=\"select\"}"),
        "{body}"
    );
    assert!(
        body.contains("shoal_errors_total{sqlstate=\"42P01\"}"),
        "{body}"
    );
    assert!(
        body.contains("shoal_query_duration_seconds_bucket"),
        "{body}"
    );
    let counter = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(counter("shoal_rows_scanned_total "), 3, "{body}");
    assert!(counter("shoal_bytes_scanned_total ") > 0, "{body}");
}

#[tokio::test]
async fn copy_outside_a_block_refuses_duplicates_and_loads_nothing() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table d (id int primary key, v text); insert into d values (7, 'old')")
        .await
        .unwrap();
    for data in ["1\ta\n2\tb\n1\tagain\n", "3\tc\n7\tclash\n"] {
        let sink = c.copy_in("copy d from stdin").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(data.as_bytes()))
            .await
            .unwrap();
        let err = sink
            .finish()
            .await
            .expect_err("duplicate keys must fail the COPY");
        assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    }
    let rows = c.query("select id, v from d", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "old");
    // Inside a block, COPY joins the transaction and rolls back with it.
    c.batch_execute("begin").await.unwrap();
    let sink = c.copy_in("copy d from stdin").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"10\tx\n11\ty\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let n: i64 = c
        .query_one("select count(*) from d", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    c.batch_execute("rollback").await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from d", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_copy_keeps_server_memory_flat() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table big (id bigint primary key, payload text)")
        .await
        .unwrap();
    let pid = node.pid().unwrap();
    let before = peak_rss_kib(pid);
    let sink = c.copy_in("copy big from stdin").await.unwrap();
    futures::pin_mut!(sink);
    let filler = "x".repeat(520);
    let mut sent = 0usize;
    for chunk in 0..100i64 {
        let data: String = (0..5000)
            .map(|i| format!("{}\t{filler}\n", chunk * 5000 + i))
            .collect();
        sent += data.len();
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 500_000);
    let grew_mib = peak_rss_kib(pid).saturating_sub(before) / 1024;
    let sent_mib = (sent / (1024 * 1024)) as u64;
    eprintln!("COPY of {sent_mib} MiB: server peak memory grew by {grew_mib} MiB");
    assert!(
        sent_mib >= 240,
        "the load is large enough to tell: {sent_mib} MiB"
    );
    // Buffers are bounded (two 16 MiB sorted runs, the batches of two inserts, RocksDB's
    // memtables): ~110-125 MiB whatever the input; a transaction holding the whole load grew
    // by ~700 MiB here.
    assert!(
        grew_mib < 160,
        "server memory grew by {grew_mib} MiB for a {sent_mib} MiB COPY"
    );
    let n: i64 = c
        .query_one("select count(*) from big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 500_000);
}
