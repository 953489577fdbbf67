//! Secondary indexes over the wire: uniqueness through COPY and across a restart, and
//! equality predicates answered through an index (EXPLAIN shows `index_lookup`) with the same
//! rows a full scan finds.

use shoal_tests::{explain, row, texts, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equality_predicates_read_through_indexes() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute(
        "create table items (id int primary key, sku text, shelf int, bin bigint); \
         insert into items select cast(value as int) as id, 'sku-' || value as sku, \
         cast(value % 10 as int) as shelf, value % 7 as bin from generate_series(1, 3000) as s(value); \
         create unique index items_sku on items (sku); \
         create index items_place on items (shelf, bin)",
    )
    .await
    .unwrap();
    let cases = [
        ("select id from items where sku = 'sku-42'", "items_sku"),
        (
            "select id from items where sku in ('sku-1', 'sku-2', 'nope')",
            "items_sku",
        ),
        ("select id from items where shelf = 3", "items_place"),
        (
            "select id from items where shelf = 3 and bin in (1, 2)",
            "items_place",
        ),
    ];
    for (sql, index) in cases {
        assert!(
            explain(&c, sql)
                .await
                .contains(&format!("index_lookup index={index}")),
            "{sql}: {}",
            explain(&c, sql).await
        );
        // The same rows as a scan that cannot use the index (the predicate is not a bare column).
        let scanned = sql
            .replace("sku =", "sku || '' =")
            .replace("sku in", "sku || '' in")
            .replace("shelf =", "shelf + 0 =");
        assert!(!explain(&c, &scanned).await.contains("index_lookup"));
        let mut want = texts(&c, &scanned).await;
        let mut got = texts(&c, sql).await;
        want.sort();
        got.sort();
        assert!(!want.is_empty(), "{sql}");
        assert_eq!(got, want, "{sql}");
    }
    // Index entries count in the sizes; the primary key's index is the rows themselves.
    assert_eq!(
        texts(
            &c,
            "select pg_indexes_size('items') > 0, pg_relation_size('items_sku') > 0, \
             pg_total_relation_size('items') = pg_relation_size('items') + pg_indexes_size('items'), \
             pg_relation_size('items_pkey')"
        )
        .await,
        vec![row(&["t", "t", "t", "0"])]
    );
    // Entries follow updates and deletes.
    c.batch_execute(
        "update items set sku = 'moved' where id = 42; delete from items where id = 43",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "select id from items where sku = 'moved'").await,
        vec![row(&["42"])]
    );
    assert!(
        texts(&c, "select id from items where sku in ('sku-42', 'sku-43')")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_indexes_hold_across_copy_and_restart() {
    use futures::SinkExt;
    let mut node = Node::start();
    let c = node.connect().await;
    c.batch_execute(
        "create table people (id int primary key, email text); \
         insert into people values (1, 'a@x'); \
         create unique index people_email on people (email)",
    )
    .await
    .unwrap();
    // COPY outside a block takes the transactional path for an indexed table: a duplicate
    // email fails the whole COPY.
    let sink = c.copy_in("copy people from stdin").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"2\tb@x\n3\ta@x\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    assert_eq!(
        texts(&c, "select count(*) from people").await,
        vec![row(&["1"])]
    );

    node.restart();
    let c = node.connect().await;
    let dup = c
        .batch_execute("insert into people values (4, 'a@x')")
        .await;
    assert_eq!(
        dup.unwrap_err().code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    c.batch_execute(
        "update people set email = 'c@x' where id = 1; insert into people values (4, 'a@x')",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "select id, email from people order by id").await,
        vec![row(&["1", "c@x"]), row(&["4", "a@x"])]
    );
}
