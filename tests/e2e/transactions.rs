//! Transactions: atomicity, snapshot isolation, write conflicts (40001), the failed state
//! (25P02), savepoints, and constraint violations that change nothing.

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

    b.batch_execute("begin").await.unwrap();
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

#[tokio::test]
async fn write_write_conflict_is_a_serialization_failure() {
    let node = Node::start();
    let a = node.connect().await;
    let b = node.connect().await;
    a.batch_execute("create table k (id int primary key, v int)")
        .await
        .unwrap();
    a.batch_execute("insert into k values (1, 0)")
        .await
        .unwrap();
    a.batch_execute("begin").await.unwrap();
    b.batch_execute("begin").await.unwrap();
    a.batch_execute("update k set v = 1 where id = 1")
        .await
        .unwrap();
    b.batch_execute("update k set v = 2 where id = 1")
        .await
        .unwrap();
    a.batch_execute("commit").await.unwrap();
    let err = b
        .batch_execute("commit")
        .await
        .expect_err("second writer must fail");
    assert_eq!(code(&err), Some("40001"), "{err}");
    let v: i32 = a
        .query_one("select v from k where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
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
