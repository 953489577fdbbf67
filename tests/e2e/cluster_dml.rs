//! UPDATE, DELETE and INSERT ... ON CONFLICT over rows of several nodes: with RETURNING, over
//! subqueries (read here, written by row key at the leaders), changing the partition key (the
//! row moves to another node), and inside blocks that commit or roll back. After each
//! statement every node sees the same rows as a model kept by the test.

use std::collections::BTreeMap;

use shoal_tests::cluster::{start_nodes, Etcd};
use shoal_tests::{explain, row, texts};

/// The expected rows of `accounts`: id → (owner, balance).
type Model = BTreeMap<i64, (String, i64)>;

fn as_rows(model: &Model) -> Vec<Vec<Option<String>>> {
    model
        .iter()
        .map(|(id, (owner, balance))| row(&[&id.to_string(), owner, &balance.to_string()]))
        .collect()
}

/// Every node holds exactly the model's rows, and finds each of them by its key.
async fn check(clients: &[tokio_postgres::Client], model: &Model, step: &str) {
    let expected = as_rows(model);
    for (i, c) in clients.iter().enumerate() {
        let stored = texts(c, "select id, owner, balance from accounts order by id").await;
        assert_eq!(stored, expected, "node {} after {step}", i + 1);
    }
    for (n, id) in model.keys().step_by(7).enumerate() {
        let c = &clients[n % clients.len()];
        let found = texts(c, &format!("select balance from accounts where id = {id}")).await;
        assert_eq!(
            found,
            vec![row(&[&model[id].1.to_string()])],
            "{id} after {step}"
        );
    }
}

/// The first column of a RETURNING result, sorted.
async fn returned_ids(c: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = texts(c, sql)
        .await
        .into_iter()
        .map(|r| r[0].as_deref().unwrap_or_default().parse().unwrap())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_deletes_and_upserts_span_nodes() {
    let etcd = Etcd::start();
    let nodes_ = start_nodes(&etcd, 3);
    let mut clients = Vec::new();
    for n in &nodes_ {
        clients.push(n.connect().await);
    }
    let values: Vec<String> = (1..=120).map(|i| format!("({i}, 'o{i}', {i})")).collect();
    clients[0]
        .batch_execute(&format!(
            "create table accounts (id bigint primary key, owner text, balance bigint) \
                 with (partitions = 6);
             create table flags (id bigint primary key) with (partitions = 6);
             insert into accounts values {};
             insert into flags select id from accounts where id % 10 = 0",
            values.join(", ")
        ))
        .await
        .unwrap();
    assert_eq!(
        texts(
            &clients[0],
            "select count(distinct leader) from shoal.partitions where table_name = 'accounts'"
        )
        .await,
        vec![row(&["3"])],
        "the table spans every node"
    );
    let mut model: Model = (1..=120).map(|i| (i, (format!("o{i}"), i))).collect();

    // RETURNING of an UPDATE and a DELETE that run whole at each leader.
    let ids = returned_ids(
        &clients[0],
        "update accounts set balance = balance + 1 where id <= 30 returning id, balance",
    )
    .await;
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
    for id in 1..=30 {
        model.get_mut(&id).unwrap().1 += 1;
    }
    let ids = returned_ids(
        &clients[1],
        "delete from accounts where id > 110 returning id",
    )
    .await;
    assert_eq!(ids, (111..=120).collect::<Vec<_>>());
    model.retain(|id, _| *id <= 110);
    check(&clients, &model, "UPDATE and DELETE ... RETURNING").await;

    // Over a subquery: read here, written at the rows' leaders.
    let flagged = clients[2]
        .execute(
            "update accounts set owner = 'flagged' where id in (select id from flags)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(flagged, 11);
    for id in (10..=110).step_by(10) {
        model.get_mut(&id).unwrap().0 = "flagged".into();
    }
    let ids = returned_ids(
        &clients[0],
        "delete from accounts where id in (select id + 1 from flags) returning id",
    )
    .await;
    assert_eq!(ids, (11..=101).step_by(10).collect::<Vec<_>>());
    model.retain(|id, _| id % 10 != 1 || *id == 1);
    check(&clients, &model, "UPDATE and DELETE over a subquery").await;

    // A new key moves each row to the node leading its new partition.
    let moved = clients[1]
        .execute(
            "update accounts set id = id + 1000 where id between 40 and 59",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(moved, 18);
    let leaving: Vec<i64> = model.range(40..=59).map(|(id, _)| *id).collect();
    for id in leaving {
        let v = model.remove(&id).unwrap();
        model.insert(id + 1000, v);
    }
    // One row by its key: the nodes whose partitions it never reads take no part.
    for (i, c) in clients.iter().enumerate() {
        let (from, to) = (100 - i as i64, 9000 + i as i64);
        let moved = c
            .execute(
                &format!("update accounts set id = {to} where id = {from}"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(moved, 1, "through node {}", i + 1);
        let v = model.remove(&from).unwrap();
        model.insert(to, v);
    }
    check(&clients, &model, "UPDATE of the key").await;
    // A new key that is taken fails the statement on every node.
    let err = clients[0]
        .execute("update accounts set id = id + 1 where id in (2, 1041)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    check(&clients, &model, "a failed UPDATE of the key").await;

    // ON CONFLICT DO UPDATE on rows of every node, some stored and some new.
    let proposed: Vec<String> = (1..=20)
        .chain(2001..=2020)
        .map(|i| format!("({i}, 'up', 5)"))
        .collect();
    let ids = returned_ids(
        &clients[2],
        &format!(
            "insert into accounts values {} on conflict (id) do update \
             set balance = accounts.balance + excluded.balance returning id",
            proposed.join(", ")
        ),
    )
    .await;
    assert_eq!(ids, (1..=20).chain(2001..=2020).collect::<Vec<_>>());
    for id in (1..=20).chain(2001..=2020) {
        model
            .entry(id)
            .and_modify(|v| v.1 += 5)
            .or_insert(("up".into(), 5));
    }
    // ON CONFLICT DO NOTHING hands back only the rows it inserted.
    let proposed: Vec<String> = (1..=10)
        .chain(3001..=3010)
        .map(|i| format!("({i}, 'new', 1)"))
        .collect();
    let ids = returned_ids(
        &clients[0],
        &format!(
            "insert into accounts values {} on conflict do nothing returning id",
            proposed.join(", ")
        ),
    )
    .await;
    assert_eq!(ids, (3001..=3010).collect::<Vec<_>>());
    for id in 3001..=3010 {
        model.insert(id, ("new".into(), 1));
    }
    check(&clients, &model, "INSERT ... ON CONFLICT").await;

    // In a block: a rollback undoes routed writes on every node, a commit applies them.
    let block = "update accounts set balance = 0 where id in (select id from flags);
         update accounts set id = id + 5000 where id < 10;
         insert into accounts values (3001, 'again', 9), (4001, 'fresh', 9)
             on conflict (id) do update set owner = excluded.owner";
    clients[1]
        .batch_execute(&format!("begin; {block}; rollback"))
        .await
        .unwrap();
    check(&clients, &model, "a rolled back block").await;
    clients[1]
        .batch_execute(&format!("begin; {block}; commit"))
        .await
        .unwrap();
    for id in (10..=110).step_by(10) {
        if let Some(v) = model.get_mut(&id) {
            v.1 = 0;
        }
    }
    for id in 1..10 {
        if let Some(v) = model.remove(&id) {
            model.insert(id + 5000, v);
        }
    }
    model.get_mut(&3001).unwrap().0 = "again".into();
    model.insert(4001, ("fresh".into(), 9));
    check(&clients, &model, "a committed block").await;
}

/// CREATE INDEX on a table spread across nodes: every node indexes the rows it holds, in one
/// transaction across nodes, so a unique index refuses duplicates of rows stored before it
/// on every node, and a failed build leaves no index anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_built_on_every_node() {
    let etcd = Etcd::start();
    let nodes_ = start_nodes(&etcd, 3);
    let mut clients = Vec::new();
    for n in &nodes_ {
        clients.push(n.connect().await);
    }
    let lines: Vec<String> = (1..=60)
        .flat_map(|id| (1..=2).map(move |line| format!("({id}, {line}, 'c{id}-{line}', {line})")))
        .collect();
    clients[0]
        .batch_execute(&format!(
            "create table codes (id bigint, line int, code text, n int, primary key (id, line)) \
                 with (partitions = 6, partition_key = 'id');
             insert into codes values {}",
            lines.join(", ")
        ))
        .await
        .unwrap();
    clients[1]
        .batch_execute(
            "create index codes_n on codes (n);
             create unique index codes_code on codes (id, code)",
        )
        .await
        .unwrap();
    for c in &clients {
        assert_eq!(
            texts(
                c,
                "select indexname from pg_indexes where tablename = 'codes' order by 1"
            )
            .await,
            vec![
                row(&["codes_code"]),
                row(&["codes_n"]),
                row(&["codes_pkey"])
            ]
        );
    }
    // Rows stored before the index, on every node, are in it.
    for id in 1..=60 {
        let c = &clients[id as usize % 3];
        let err = c
            .execute(
                &format!("insert into codes values ({id}, 9, 'c{id}-1', 0)"),
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{id}: {err}");
    }
    // Reads follow the index at each partition's leader.
    let plan = explain(&clients[2], "select id, line from codes where n = 2").await;
    assert!(
        plan.contains("FragmentExec") && plan.contains("index_lookup index=codes_n"),
        "{plan}"
    );
    for c in &clients {
        assert_eq!(
            texts(c, "select count(*), sum(id) from codes where n = 2").await,
            vec![row(&["60", "1830"])]
        );
        assert_eq!(
            texts(c, "select line from codes where n in (1, 5) and id = 8").await,
            vec![row(&["1"])]
        );
    }
    clients[1]
        .batch_execute("update codes set code = 'moved' where n = 2 and id > 30")
        .await
        .unwrap();
    assert_eq!(
        texts(
            &clients[0],
            "select count(*) from codes where code = 'moved'"
        )
        .await,
        vec![row(&["30"])]
    );
    // A unique index whose values repeat fails on the node holding them, and on none is it
    // left behind.
    clients[2]
        .batch_execute("insert into codes values (7, 3, 'x3', 1)")
        .await
        .unwrap();
    let err = clients[0]
        .batch_execute("create unique index codes_n_unique on codes (id, n)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    // Across nodes a unique index must include the partition key.
    let err = clients[0]
        .batch_execute("create unique index codes_code_alone on codes (code)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    // Inside a block the other nodes could not see the index yet.
    let err = clients[0]
        .batch_execute("begin; create index codes_line on codes (line)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    clients[0].batch_execute("rollback").await.unwrap();
    for c in &clients {
        assert_eq!(
            texts(
                c,
                "select count(*) from pg_indexes where tablename = 'codes'"
            )
            .await,
            vec![row(&["3"])]
        );
        assert_eq!(
            texts(c, "select count(*), sum(n) from codes").await,
            vec![row(&["121", "181"])]
        );
    }
}
