//! SQL surface and storage behaviour: DDL, types, views, partition pruning in EXPLAIN, and a
//! restart that finds the catalog and the rows again.

use shoal_tests::{texts, Node};

#[tokio::test]
async fn explain_shows_fragments_and_pruning() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table f (id int primary key, g int) with (partitions = 8)")
        .await
        .unwrap();
    c.batch_execute("insert into f select cast(value as int), cast(value % 3 as int) from generate_series(1, 1000) as s(value)")
        .await
        .unwrap();
    let plan = texts(&c, "explain select g, count(*) from f group by g").await;
    let text: String = plan
        .iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    assert!(text.contains("fragments=8 of 8"), "{text}");
    assert!(
        text.contains("mode=Partial"),
        "partial aggregation per fragment: {text}"
    );
    let plan = texts(&c, "explain select * from f where id = 42").await;
    let text: String = plan
        .iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    assert!(text.contains("point_lookup keys=1"), "{text}");
    let plan = texts(&c, "explain select * from f where id in (1, 2, 3)").await;
    let text: String = plan
        .iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    assert!(text.contains("point_lookup keys=3"), "{text}");
    // Through the extended protocol too: Describe announces the one QUERY PLAN column.
    let rows = c
        .query("explain select * from f where id = 7", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].columns()[0].name(), "QUERY PLAN");
    let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        plan.iter().any(|l| l.contains("point_lookup keys=1")),
        "{plan:?}"
    );
    let rows = texts(&c, "select g, count(*) from f group by g order by g").await;
    assert_eq!(
        rows,
        vec![
            vec![Some("0".into()), Some("333".into())],
            vec![Some("1".into()), Some("334".into())],
            vec![Some("2".into()), Some("333".into())],
        ]
    );
    assert_eq!(
        texts(&c, "select g from f where id = 42").await,
        vec![vec![Some("0".into())]]
    );
}

#[tokio::test]
async fn catalog_and_rows_survive_restart() {
    let mut node = Node::start();
    {
        let c = node.connect().await;
        c.batch_execute(
            "create schema app; \
             create table app.users (id bigint primary key, email varchar(50) not null, joined date, tags text[], profile jsonb); \
             insert into app.users values (1, 'a@x.org', '2024-02-03', ARRAY['x','y'], '{\"k\":1}'); \
             create view app.v as select id, email from app.users; \
             alter table app.users add column active boolean default true",
        )
        .await
        .unwrap();
    }
    node.restart();
    let c = node.connect().await;
    assert_eq!(
        texts(
            &c,
            "select id, email, joined, tags, profile, active from app.users"
        )
        .await,
        vec![vec![
            Some("1".into()),
            Some("a@x.org".into()),
            Some("2024-02-03".into()),
            Some("{x,y}".into()),
            Some("{\"k\": 1}".into()),
            Some("t".into()),
        ]]
    );
    assert_eq!(texts(&c, "select email from app.v").await.len(), 1);
    let err = c
        .simple_query("create table app.users (id int)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P07"));
}

#[tokio::test]
async fn partitions_have_log_positions_that_survive_restart() {
    let mut node = Node::start();
    {
        let c = node.connect().await;
        c.batch_execute("create table one (id int primary key) with (partitions = 1)")
            .await
            .unwrap();
        for i in 0..3 {
            c.execute("insert into one values ($1)", &[&i])
                .await
                .unwrap();
        }
        c.batch_execute("begin; insert into one values (100); rollback")
            .await
            .unwrap();
    }
    node.restart();
    let c = node.connect().await;
    let q = "select partition, leader, epoch, log_position from shoal.partitions where table_name = 'one'";
    assert_eq!(
        texts(&c, q).await,
        vec![vec![
            Some("0".into()),
            Some("1".into()),
            Some("1".into()),
            Some("3".into())
        ]]
    );
    c.batch_execute("delete from one where id = 0")
        .await
        .unwrap();
    assert_eq!(texts(&c, q).await[0][3], Some("4".into()));
}

#[tokio::test]
async fn ddl_and_dml_round_trip() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute(
        "create table t (id int primary key, name text default 'none', qty int); \
         insert into t (id, qty) values (1, 5), (2, 6), (3, 7); \
         update t set qty = qty * 10 where id >= 2; \
         delete from t where id = 1; \
         alter table t rename column qty to amount; \
         alter table t drop column name",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&c, "select * from t order by id").await,
        vec![
            vec![Some("2".into()), Some("60".into())],
            vec![Some("3".into()), Some("70".into())],
        ]
    );
    let rows = c
        .query(
            "insert into t values (9, 90), (8, 80) returning id, amount * 2 as doubled",
            &[],
        )
        .await
        .unwrap();
    let mut got: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    got.sort();
    assert_eq!(got, vec![(8, 160), (9, 180)]);
    c.batch_execute("begin; truncate t; rollback")
        .await
        .unwrap();
    assert_eq!(
        texts(&c, "select count(*) from t").await,
        vec![vec![Some("4".into())]]
    );
    c.batch_execute("truncate t").await.unwrap();
    assert_eq!(
        texts(&c, "select count(*) from t").await,
        vec![vec![Some("0".into())]]
    );
    let err = c.simple_query("select * from missing").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));
    let err = c.simple_query("selec 1").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42601"));
    let err = c
        .simple_query("create table bad (a int check (a > 0), b int)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"));
    // VACUUM and ANALYZE do nothing, but what they name must exist.
    c.batch_execute("vacuum t; vacuum (verbose) t; analyze t (id, amount); vacuum; analyze")
        .await
        .unwrap();
    for (sql, code) in [
        ("vacuum missing", "42P01"),
        ("analyze public.missing", "42P01"),
        ("analyze t (nosuch)", "42703"),
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some(code), "{sql}: {err}");
    }
}

#[tokio::test]
async fn too_long_strings_are_refused_with_22001() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table codes (id int primary key, code varchar(3))")
        .await
        .unwrap();
    let err = c
        .simple_query("insert into codes values (1, 'abcd')")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22001"), "{err}");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert_eq!(message, "value too long for type character varying(3)");
    c.batch_execute("insert into codes values (1, 'abc')")
        .await
        .unwrap();
}

/// A join of tables on their whole primary keys, with as many partitions as the node runs
/// streams, joins partition by partition: neither input is shuffled.
#[tokio::test]
async fn joins_on_the_partition_key_are_not_shuffled() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute(
        "create table a (id int primary key, v text) with (partitions = 4);
         create table b (id int primary key, w int) with (partitions = 4);
         create table c8 (id int primary key) with (partitions = 8);
         create table p (x int, y text, primary key (x, y)) with (partitions = 4);
         create table q (x int, y text, n int, primary key (x, y)) with (partitions = 4);
         insert into a select g, 'v' || g from generate_series(1, 100) as s(g);
         insert into b select g, g from generate_series(50, 150) as s(g);
         insert into c8 select g from generate_series(1, 10) as s(g);",
    )
    .await
    .unwrap();
    let plan = shoal_tests::explain(&c, "select count(*) from a join b on a.id = b.id").await;
    assert!(plan.contains("mode=Partitioned"), "{plan}");
    assert_eq!(plan.matches("partitioned_by_key").count(), 2, "{plan}");
    assert!(!plan.contains("Hash([id@"), "{plan}");
    assert_eq!(
        texts(&c, "select count(*), sum(w) from a join b on a.id = b.id").await,
        vec![shoal_tests::row(&["51", "3825"])]
    );
    // Key columns in another order than the key's, and extra join keys, still match.
    let plan = shoal_tests::explain(
        &c,
        "select * from p join q on p.y = q.y and p.x = q.x and p.x = q.n",
    )
    .await;
    assert_eq!(plan.matches("partitioned_by_key").count(), 2, "{plan}");
    // Part of a key, or another partition count: shuffled as usual.
    for other in [
        "select * from p join q on p.x = q.x",
        "select * from a join c8 on a.id = c8.id",
        "select * from a join b on a.id = b.w",
    ] {
        let plan = shoal_tests::explain(&c, other).await;
        assert!(!plan.contains("partitioned_by_key"), "{other}: {plan}");
    }
}
