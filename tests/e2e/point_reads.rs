//! The point-read fast path (`SELECT ... WHERE key = value` read without a query plan): the
//! same answers, column names and wire types as the planned read, in both protocols, through
//! the transaction rules of READ COMMITTED and REPEATABLE READ.

use shoal_tests::{row, texts, Node};

/// `shoal_point_reads_total` of the node's /metrics.
async fn point_reads(node: &Node) -> u64 {
    let body = shoal_tests::http_get(node.metrics_port, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix("shoal_point_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no shoal_point_reads_total in /metrics:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_reads_answer_as_planned_reads() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute(
        "create table wide (id int primary key, name varchar(20), amount numeric(12,2), \
           at timestamptz, day date, ok boolean, ratio float8, raw bytea, tags int[], doc jsonb, \
           note text); \
         insert into wide values \
           (1, 'one', 12.50, '2024-01-02 03:04:05+00', '2024-01-02', true, 0.5, '\\x0102', \
            array[1,2], '{\"a\": 1}', null), \
           (-7, null, null, null, null, null, null, null, null, null, 'only a note'); \
         create table pairs (region text, n bigint, total float8, primary key (region, n)); \
         insert into pairs values ('north', 1, 1.5), ('north', 2, 2.5), ('south', 1, 3.5)",
    )
    .await
    .unwrap();
    let before = point_reads(&node).await;
    let cases = [
        "select * from wide where id = 1",
        "select * from wide where id = -7",
        "select * from wide where id = 2",
        "select * from wide where id = 3000000000",
        "select note as remark, id, w.amount from wide w where (w.id = 1)",
        "select total from pairs where n = 2 and region = 'north'",
        "select total, region from public.pairs where region = 'south' and 1 = n",
        "select total from pairs where region = 'east' and n = 1",
    ];
    for sql in cases {
        // `and true` keeps the query off the fast path: DataFusion plans it.
        let planned = texts(&c, &format!("{sql} and true")).await;
        assert_eq!(texts(&c, sql).await, planned, "{sql}");
    }
    let after_simple = point_reads(&node).await;
    assert_eq!(after_simple - before, cases.len() as u64);

    // Extended protocol: the statement is described by its plan, its rows come from the fast
    // path in binary; names, types and values must agree.
    let fast = c
        .query("select * from wide where id = $1", &[&1i32])
        .await
        .unwrap();
    let planned = c
        .query("select * from wide where id = $1 and true", &[&1i32])
        .await
        .unwrap();
    assert_eq!(fast.len(), 1);
    let describe = |r: &tokio_postgres::Row| -> Vec<(String, String)> {
        r.columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().name().to_string()))
            .collect()
    };
    assert_eq!(describe(&fast[0]), describe(&planned[0]));
    assert_eq!(fast[0].get::<_, Option<&str>>("name"), Some("one"));
    assert_eq!(fast[0].get::<_, Option<Vec<i32>>>("tags"), Some(vec![1, 2]));
    assert_eq!(fast[0].get::<_, Option<&[u8]>>("raw"), Some(&[1u8, 2][..]));
    assert_eq!(fast[0].get::<_, Option<f64>>("ratio"), Some(0.5));
    let totals = c
        .query(
            "select total from pairs where region = $1 and n = $2",
            &[&"north", &2i64],
        )
        .await
        .unwrap();
    assert_eq!(totals[0].get::<_, f64>(0), 2.5);
    let none = c
        .query(
            "select total from pairs where region = $1 and n = $2",
            &[&None::<&str>, &2i64],
        )
        .await
        .unwrap();
    assert!(none.is_empty(), "= NULL matches no row");
    assert_eq!(point_reads(&node).await - after_simple, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_reads_follow_transaction_visibility() {
    let node = Node::start();
    let a = node.connect().await;
    let b = node.connect().await;
    a.batch_execute(
        "create table acct (id int primary key, balance int); insert into acct values (1, 100)",
    )
    .await
    .unwrap();
    let balance = "select balance from acct where id = 1";

    // READ COMMITTED: a block sees its own write at once, others see it after COMMIT.
    a.batch_execute("begin; update acct set balance = 150 where id = 1")
        .await
        .unwrap();
    assert_eq!(texts(&a, balance).await, vec![row(&["150"])]);
    assert_eq!(texts(&b, balance).await, vec![row(&["100"])]);
    a.batch_execute("commit").await.unwrap();
    assert_eq!(texts(&b, balance).await, vec![row(&["150"])]);

    // REPEATABLE READ: the first read fixes the snapshot for the block.
    b.batch_execute("begin isolation level repeatable read")
        .await
        .unwrap();
    assert_eq!(texts(&b, balance).await, vec![row(&["150"])]);
    a.batch_execute("update acct set balance = 175 where id = 1")
        .await
        .unwrap();
    assert_eq!(texts(&b, balance).await, vec![row(&["150"])]);
    b.batch_execute("commit").await.unwrap();
    assert_eq!(texts(&b, balance).await, vec![row(&["175"])]);

    // A rolled-back insert leaves nothing to read, and a deleted row is gone.
    a.batch_execute(
        "begin; insert into acct values (2, 1); rollback; delete from acct where id = 1",
    )
    .await
    .unwrap();
    assert!(texts(&a, "select * from acct where id = 2")
        .await
        .is_empty());
    assert!(texts(&a, balance).await.is_empty());
    // Inside a failed block the read is refused like any statement.
    a.batch_execute("begin").await.unwrap();
    assert!(a.batch_execute("select 1/0").await.is_err());
    let err = a.simple_query(balance).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25P02"), "{err:?}");
    a.batch_execute("rollback").await.unwrap();
    assert!(point_reads(&node).await >= 8);
}
