//! Transactions: atomicity, READ COMMITTED and REPEATABLE READ, writers of the same row waiting
//! for each other, write conflicts (40001) and deadlocks (40P01), the failed state (25P02),
//! savepoints, and constraint violations that change nothing.

use std::time::Duration;

use shoal_tests::Node;

fn code(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

#[tokio::test]
async fn commit_rollback_and_snapshot_reads() {
    let node = Node::start();
    let a = node.connect().await;
    let b = node.connect().await;
    a.batch_execute("create table acct (id int primary key, balance int not null)")
        .await
        .unwrap();
    a.batch_execute("insert into acct values (1, 100), (2, 100)")
        .await
        .unwrap();

    b.batch_execute("begin isolation level repeatable read")
        .await
        .unwrap();
    let before: i64 = b
        .query_one("select sum(balance) from acct", &[])
        .await
        .unwrap()
        .get(0);
    a.batch_execute("begin; update acct set balance = balance - 30 where id = 1; update acct set balance = balance + 30 where id = 2; commit")
        .await
        .unwrap();
    // b still sees its snapshot.
    let during: i64 = b
        .query_one("select balance from acct where id = 1", &[])
        .await
        .unwrap()
        .get::<_, i32>(0) as i64;
    assert_eq!(before, 200);
    assert_eq!(during, 100);
    b.batch_execute("commit").await.unwrap();
    let after: i32 = b
        .query_one("select balance from acct where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, 70);

    a.batch_execute("begin; update acct set balance = 0; rollback")
        .await
        .unwrap();
    let total: i64 = a
        .query_one("select sum(balance) from acct", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 200);
}

/// A table `k` with the row (1, 0), and two connections.
async fn one_row(node: &Node) -> (tokio_postgres::Client, tokio_postgres::Client) {
    let a = node.connect().await;
    let b = node.connect().await;
    a.batch_execute("create table k (id int primary key, v int); insert into k values (1, 0)")
        .await
        .unwrap();
    (a, b)
}

async fn value(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select v from k where id = 1", &[])
        .await
        .unwrap()
        .get(0)
}

/// `a` updates the row in an open block; `b` runs `b_sql` in the background. Returns `b`'s
/// result once `a` has committed, after checking that `b` waited for it.
async fn second_writer(
    a: &tokio_postgres::Client,
    b: tokio_postgres::Client,
    b_sql: &'static str,
) -> (tokio_postgres::Client, Result<(), tokio_postgres::Error>) {
    a.batch_execute("begin; update k set v = v + 1 where id = 1")
        .await
        .unwrap();
    let second = tokio::spawn(async move {
        let r = b.batch_execute(b_sql).await;
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second writer must wait");
    a.batch_execute("commit").await.unwrap();
    second.await.unwrap()
}

#[tokio::test]
async fn read_committed_writer_waits_and_updates_the_committed_row() {
    let node = Node::start();
    let (a, b) = one_row(&node).await;
    let (_b, r) = second_writer(&a, b, "begin; update k set v = v + 10 where id = 1; commit").await;
    r.unwrap();
    // Neither update is lost: the second one applied to the first one's committed row.
    assert_eq!(value(&a).await, 11);
}

#[tokio::test]
async fn repeatable_read_writer_waits_then_fails_with_40001() {
    let node = Node::start();
    let (a, b) = one_row(&node).await;
    let (b, r) = second_writer(
        &a,
        b,
        "begin isolation level repeatable read; select 1; update k set v = v + 10 where id = 1",
    )
    .await;
    let err = r.expect_err("the second writer must fail");
    assert_eq!(code(&err), Some("40001"), "{err}");
    b.batch_execute("rollback").await.unwrap();
    assert_eq!(value(&a).await, 1);
}

#[tokio::test]
async fn concurrent_increments_lose_nothing() {
    let node = Node::start();
    let (a, _) = one_row(&node).await;
    let mut workers = Vec::new();
    for i in 0..4 {
        let c = node.connect().await;
        workers.push(tokio::spawn(async move {
            for _ in 0..25 {
                // Half the clients in explicit blocks, half in autocommit.
                let sql = if i % 2 == 0 {
                    "begin; update k set v = v + 1 where id = 1; commit"
                } else {
                    "update k set v = v + 1 where id = 1"
                };
                c.batch_execute(sql).await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for w in workers {
        w.await.unwrap().unwrap();
    }
    assert_eq!(value(&a).await, 100);
}

#[tokio::test]
async fn crossed_updates_end_in_one_deadlock_error() {
    let node = Node::start();
    let (a, b) = one_row(&node).await;
    a.batch_execute("insert into k values (2, 0)")
        .await
        .unwrap();
    a.batch_execute("begin; update k set v = 1 where id = 1")
        .await
        .unwrap();
    b.batch_execute("begin; update k set v = 2 where id = 2")
        .await
        .unwrap();
    let first = tokio::spawn(async move {
        let r = a.batch_execute("update k set v = 1 where id = 2").await;
        (a, r)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = b
        .batch_execute("update k set v = 2 where id = 1")
        .await
        .expect_err("closing the cycle must fail");
    assert_eq!(code(&err), Some("40P01"), "{err}");
    b.batch_execute("rollback").await.unwrap();
    let (a, r) = first.await.unwrap();
    r.unwrap();
    a.batch_execute("commit").await.unwrap();
    let rows = a.query("select v from k order by id", &[]).await.unwrap();
    let v: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(v, vec![1, 1]);
}

#[tokio::test]
async fn statement_timeout_ends_a_lock_wait() {
    let node = Node::start();
    let (a, b) = one_row(&node).await;
    a.batch_execute("begin; update k set v = 5 where id = 1")
        .await
        .unwrap();
    b.batch_execute("set statement_timeout = 200")
        .await
        .unwrap();
    let err = b
        .batch_execute("update k set v = 6 where id = 1")
        .await
        .expect_err("the wait must time out");
    assert_eq!(code(&err), Some("57014"), "{err}");
    // The abandoned waiter holds nothing: the holder commits, the row is writable again.
    a.batch_execute("commit").await.unwrap();
    b.batch_execute("update k set v = 7 where id = 1")
        .await
        .unwrap();
    assert_eq!(value(&a).await, 7);
}

#[tokio::test]
async fn set_transaction_isolation_applies_before_the_first_query() {
    let node = Node::start();
    let c = node.connect().await;
    let level = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
    };
    let show = "show transaction_isolation";
    assert_eq!(
        level(c.simple_query(show).await.unwrap()).as_deref(),
        Some("read committed")
    );
    c.batch_execute("begin; set transaction isolation level repeatable read")
        .await
        .unwrap();
    assert_eq!(
        level(c.simple_query(show).await.unwrap()).as_deref(),
        Some("repeatable read")
    );
    c.batch_execute("select 1").await.unwrap();
    let err = c
        .batch_execute("set transaction isolation level read committed")
        .await
        .expect_err("after a query the level is fixed");
    assert_eq!(code(&err), Some("25001"), "{err}");
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(
        level(c.simple_query(show).await.unwrap()).as_deref(),
        Some("read committed")
    );
}

#[tokio::test]
async fn errors_abort_the_block_until_rollback() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table u (id int primary key)")
        .await
        .unwrap();
    c.batch_execute("insert into u values (1)").await.unwrap();
    c.batch_execute("begin").await.unwrap();
    c.batch_execute("insert into u values (2)").await.unwrap();
    let err = c
        .batch_execute("insert into u values (1)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("23505"));
    let err = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&err), Some("25P02"));
    c.batch_execute("rollback").await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from u", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the block's insert of 2 was rolled back");
}

#[tokio::test]
async fn savepoints_undo_part_of_a_transaction() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table s (id int primary key)")
        .await
        .unwrap();
    c.batch_execute(
        "begin; insert into s values (1); savepoint a; insert into s values (2); \
         rollback to savepoint a; insert into s values (3); release savepoint a; commit",
    )
    .await
    .unwrap();
    let ids: Vec<i32> = c
        .query("select id from s order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 3]);
    // A savepoint also rescues a failed block.
    c.batch_execute("begin; insert into s values (4); savepoint b")
        .await
        .unwrap();
    assert!(c.batch_execute("insert into s values (1)").await.is_err());
    c.batch_execute("rollback to savepoint b; insert into s values (5); commit")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("select count(*) from s", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
}

#[tokio::test]
async fn constraint_violations_change_nothing() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table p (id int primary key, name text not null)")
        .await
        .unwrap();
    c.batch_execute("insert into p values (1, 'a')")
        .await
        .unwrap();
    let err = c
        .batch_execute("insert into p values (2, 'b'), (1, 'dup')")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("23505"));
    let err = c
        .batch_execute("insert into p values (3, 'c'), (4, null)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("23502"));
    let err = c
        .batch_execute("update p set name = null")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("23502"));
    let rows = c.query("select id, name from p", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "a");
    c.batch_execute("insert into p values (1, 'x') on conflict do nothing")
        .await
        .unwrap();
    let name: String = c
        .query_one("select name from p where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "a");
}

#[tokio::test]
async fn serializable_is_refused_not_faked() {
    let node = Node::start();
    let c = node.connect().await;
    let err = c
        .batch_execute("begin isolation level serializable")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("0A000"));
}

async fn count(c: &tokio_postgres::Client, table: &str) -> Result<i64, tokio_postgres::Error> {
    let sql = format!("select count(*) from {table}");
    c.query_one(sql.as_str(), &[]).await.map(|r| r.get(0))
}

#[tokio::test]
async fn ddl_in_a_block_is_private_until_commit_and_undone_by_rollback() {
    let node = Node::start();
    let a = node.connect().await;
    let b = node.connect().await;
    a.batch_execute("begin; create table x (id int primary key); insert into x values (1), (2)")
        .await
        .unwrap();
    assert_eq!(count(&a, "x").await.unwrap(), 2);
    let err = count(&b, "x").await.unwrap_err();
    assert_eq!(
        code(&err),
        Some("42P01"),
        "other sessions do not see the new table"
    );
    a.batch_execute("rollback").await.unwrap();
    assert_eq!(code(&count(&a, "x").await.unwrap_err()), Some("42P01"));

    a.batch_execute("begin; create table y (id int primary key); insert into y values (1); commit")
        .await
        .unwrap();
    assert_eq!(count(&b, "y").await.unwrap(), 1);

    b.batch_execute("begin; drop table y; rollback")
        .await
        .unwrap();
    assert_eq!(
        count(&a, "y").await.unwrap(),
        1,
        "a rolled-back DROP keeps the rows"
    );
    b.batch_execute("begin; alter table y add column note text default 'n'; rollback")
        .await
        .unwrap();
    let cols = a.query("select * from y", &[]).await.unwrap();
    assert_eq!(
        cols[0].len(),
        1,
        "a rolled-back ADD COLUMN leaves no column"
    );
    b.batch_execute("begin; drop table y; commit")
        .await
        .unwrap();
    assert_eq!(code(&count(&a, "y").await.unwrap_err()), Some("42P01"));
}

#[tokio::test]
async fn concurrent_ddl_makes_a_ddl_block_fail_with_40001() {
    let node = Node::start();
    let a = node.connect().await;
    let b = node.connect().await;
    a.batch_execute("begin; create table mine (id int primary key); insert into mine values (1)")
        .await
        .unwrap();
    b.batch_execute("create table theirs (id int primary key)")
        .await
        .unwrap();
    let err = a.batch_execute("commit").await.unwrap_err();
    assert_eq!(code(&err), Some("40001"), "{err}");
    let err = a.simple_query("select * from mine").await.unwrap_err();
    assert_eq!(code(&err), Some("42P01"));
    b.simple_query("select * from theirs").await.unwrap();
}
