//! Writes that span the nodes of a cluster: multi-row INSERT, INSERT ... SELECT, COPY and
//! transaction blocks whose rows belong to partitions of several nodes commit everywhere or
//! nowhere (two-phase commit, decided in etcd), even when the node running the commit dies
//! right after deciding, or dies before deciding (then they all roll back, and the decision
//! they recorded is forgotten once the node is back).

use std::time::Duration;

use futures::SinkExt;
use shoal_tests::cluster::{start_nodes, Etcd};
use shoal_tests::{row, texts};

/// `(count, sum of id)` of `table` as `c` sees it.
async fn tally(c: &tokio_postgres::Client, table: &str) -> Vec<Vec<Option<String>>> {
    texts(c, &format!("select count(*), sum(id) from {table}")).await
}

fn values(ids: std::ops::RangeInclusive<i64>) -> String {
    ids.map(|i| format!("({i}, 'v{i}')"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Restarts `node` with `failpoint` set (debug builds of shoal exit there, see two_phase.rs),
/// waits until it leads a partition of each of `tables` again (followers take over its
/// partitions while it restarts, and the coordinator gives some back), runs `sql` through it,
/// and checks that the node died inside the commit instead of answering; the failpoint is
/// cleared for the node's next start.
async fn exits_inside_commit(
    node: &mut shoal_tests::Node,
    failpoint: &str,
    tables: &[&str],
    sql: &str,
) {
    node.env.push(("SHOAL_FAILPOINT".into(), failpoint.into()));
    node.restart();
    let client = node.connect().await;
    let id = texts(&client, "select node_id from shoal.nodes where local").await;
    for table in tables {
        let leads = format!(
            "select 1 from shoal.partitions where table_name = '{table}' and leader = {}",
            id[0][0].as_deref().unwrap_or("0")
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while texts(&client, &leads).await.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the node leads no partition of {table}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let lost = client.batch_execute(sql).await.unwrap_err();
    assert!(
        lost.code().is_none(),
        "the node exits before it answers: {lost}"
    );
    node.env.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_across_nodes_commit_everywhere_or_nowhere() {
    let etcd = Etcd::start();
    let nodes_ = start_nodes(&etcd, 3);
    let mut clients = Vec::new();
    for n in &nodes_ {
        clients.push(n.connect().await);
    }
    clients[0]
        .batch_execute(
            "create table spread (id bigint primary key, v text) with (partitions = 6);
             create table copied (id bigint primary key, v text) with (partitions = 6)",
        )
        .await
        .unwrap();
    let leaders = texts(
        &clients[0],
        "select count(distinct leader) from shoal.partitions where table_name = 'spread'",
    )
    .await;
    assert_eq!(leaders, vec![row(&["3"])], "the table spans every node");

    // One statement, rows of every node.
    clients[0]
        .batch_execute(&format!("insert into spread values {}", values(1..=200)))
        .await
        .unwrap();
    for c in &clients {
        assert_eq!(tally(c, "spread").await, vec![row(&["200", "20100"])]);
    }

    // A duplicate key on any node fails the statement everywhere.
    let err = clients[1]
        .batch_execute(&format!(
            "insert into spread values {}",
            values(201..=260) + ", (17, 'again')"
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    for c in &clients {
        assert_eq!(tally(c, "spread").await, vec![row(&["200", "20100"])]);
    }

    // A block sees its own rows on every node; ROLLBACK undoes them everywhere.
    let c = &clients[2];
    c.batch_execute(&format!(
        "begin; insert into spread values {}",
        values(301..=330)
    ))
    .await
    .unwrap();
    assert_eq!(tally(c, "spread").await, vec![row(&["230", "29565"])]);
    assert_eq!(
        tally(&clients[0], "spread").await,
        vec![row(&["200", "20100"])]
    );
    c.batch_execute("rollback").await.unwrap();
    for c in &clients {
        assert_eq!(tally(c, "spread").await, vec![row(&["200", "20100"])]);
    }

    // COMMIT applies a block's inserts and single-row updates on every node at once.
    c.batch_execute(&format!(
        "begin;
         insert into spread values {};
         update spread set v = 'changed' where id = 5;
         update spread set v = 'changed' where id = 6;
         delete from spread where id = 7;
         commit",
        values(301..=330)
    ))
    .await
    .unwrap();
    for c in &clients {
        assert_eq!(tally(c, "spread").await, vec![row(&["229", "29558"])]);
        assert_eq!(
            texts(c, "select id from spread where v = 'changed' order by id").await,
            vec![row(&["5"]), row(&["6"])]
        );
    }

    // UPDATE and DELETE without a key run on every node over its partitions, in a block
    // too.
    let odd = clients[0]
        .execute("update spread set v = upper(v) where id % 2 = 1", &[])
        .await
        .unwrap();
    assert_eq!(odd, 114);
    c.batch_execute("begin; delete from spread where id > 300")
        .await
        .unwrap();
    assert_eq!(tally(c, "spread").await, vec![row(&["199", "20093"])]);
    c.batch_execute("rollback").await.unwrap();
    for c in &clients {
        assert_eq!(tally(c, "spread").await, vec![row(&["229", "29558"])]);
        assert_eq!(
            texts(c, "select count(*) from spread where v like 'V%'").await,
            vec![row(&["113"])]
        );
    }

    // ROLLBACK TO SAVEPOINT undoes what the block wrote since, on every node; nested
    // savepoints and a failed statement too.
    c.batch_execute(&format!(
        "begin;
         insert into spread values {};
         savepoint a;
         insert into spread values {};
         update spread set v = 'gone' where id <= 20;
         savepoint b;
         delete from spread where id > 400",
        values(501..=510),
        values(401..=420)
    ))
    .await
    .unwrap();
    c.batch_execute("rollback to savepoint b").await.unwrap();
    assert_eq!(tally(c, "spread").await, vec![row(&["259", "42823"])]);
    c.batch_execute("rollback to savepoint a").await.unwrap();
    assert_eq!(tally(c, "spread").await, vec![row(&["239", "34613"])]);
    let err = c
        .batch_execute(&format!(
            "insert into spread values {}",
            values(601..=640) + ", (1, 'dup')"
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    c.batch_execute("rollback to savepoint a; commit")
        .await
        .unwrap();
    for c in &clients {
        assert_eq!(tally(c, "spread").await, vec![row(&["239", "34613"])]);
        assert_eq!(
            texts(c, "select count(*) from spread where v = 'gone'").await,
            vec![row(&["0"])]
        );
    }
    c.batch_execute("delete from spread where id > 500")
        .await
        .unwrap();

    // INSERT ... SELECT reads every node and writes every node.
    let copied = clients[1]
        .execute(
            "insert into copied select id + 1000, v from spread where id <= 100",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(copied, 99);

    // COPY streams the rows of each node to it, in one transaction.
    let sink = clients[2].copy_in("copy copied from stdin").await.unwrap();
    futures::pin_mut!(sink);
    for chunk in 0..4i64 {
        let data: String = (0..2500)
            .map(|i| format!("{}\tcopied\n", 10_000 + chunk * 2500 + i))
            .collect();
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 10_000);
    let expected_sum: i64 = (1..=100).filter(|i| *i != 7).map(|i| i + 1000).sum::<i64>()
        + (10_000..20_000).sum::<i64>();
    for c in &clients {
        assert_eq!(
            tally(c, "copied").await,
            vec![row(&["10099", &expected_sum.to_string()])]
        );
    }
    // A COPY that meets a duplicate on any node leaves nothing.
    let sink = clients[0].copy_in("copy copied from stdin").await.unwrap();
    futures::pin_mut!(sink);
    let data: String = (30_000..30_100)
        .chain([10_500])
        .map(|i| format!("{i}\tagain\n"))
        .collect();
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    for c in &clients {
        assert_eq!(
            tally(c, "copied").await,
            vec![row(&["10099", &expected_sum.to_string()])]
        );
    }

    // INSERT ... RETURNING over rows of every node hands back every row as stored (uuids in
    // canonical form, defaults filled in), in the statement's order.
    clients[0]
        .batch_execute(
            "create table tagged (id bigint primary key, u uuid, n int default 7) \
             with (partitions = 6)",
        )
        .await
        .unwrap();
    let ids: Vec<i64> = (1..=30).map(|i| (i * 37) % 101).collect();
    let values: Vec<String> = ids
        .iter()
        .map(|i| format!("({i}, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD38{i:04}')"))
        .collect();
    let returned = texts(
        &clients[1],
        &format!(
            "insert into tagged (id, u) values {} returning id, u, n",
            values.join(", ")
        ),
    )
    .await;
    let expected: Vec<Vec<Option<String>>> = ids
        .iter()
        .map(|i| {
            row(&[
                &i.to_string(),
                &format!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd38{i:04}"),
                "7",
            ])
        })
        .collect();
    assert_eq!(returned, expected);
    for c in &clients {
        assert_eq!(
            texts(c, "select count(*), count(distinct u) from tagged").await,
            vec![row(&["30", "30"])]
        );
    }
    // TRUNCATE empties the table on every node.
    clients[2].batch_execute("truncate tagged").await.unwrap();
    for c in &clients {
        assert_eq!(
            texts(c, "select count(*) from tagged").await,
            vec![row(&["0"])]
        );
    }
}

/// The node running a commit dies right after etcd recorded the decision: the other nodes
/// apply their prepared parts once they see it is gone. Its own part of a replicated table is
/// settled by the follower that takes over each of its partitions (which kept a copy of the
/// prepared part); its part of a table without followers is applied when it comes back on its
/// data directory. Nobody sees half of the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_survives_the_death_of_the_node_running_it() {
    let etcd = Etcd::start();
    let mut nodes_ = start_nodes(&etcd, 3);
    let setup = nodes_[0].connect().await;
    setup
        .batch_execute(
            "create table spread (id bigint primary key, v text) with (partitions = 6);
             create table solo (id bigint primary key, v text) with (partitions = 6, replicas = 1)",
        )
        .await
        .unwrap();
    // Its partitions hold part of the rows: the transaction really spans it.
    for table in ["spread", "solo"] {
        assert_ne!(
            texts(
                &setup,
                &format!(
                    "select count(*) from shoal.partitions where table_name = '{table}' and leader = 1"
                )
            )
            .await,
            vec![row(&["0"])]
        );
    }
    exits_inside_commit(
        &mut nodes_[0],
        "exit-after-commit-decision",
        &["spread", "solo"],
        &format!(
            "begin; insert into spread values {rows}; insert into solo values {rows}; commit",
            rows = values(1..=60)
        ),
    )
    .await;

    // Node 1 stays down: its followers take its partitions of `spread` over, with its part.
    let survivor = nodes_[1].connect().await;
    let mut seen = String::new();
    for _ in 0..150 {
        match survivor
            .query_one("select count(*), coalesce(sum(id), 0) from spread", &[])
            .await
        {
            Ok(r) => {
                seen = format!("{} {}", r.get::<_, i64>(0), r.get::<_, i64>(1));
                if seen == "60 1830" {
                    break;
                }
            }
            Err(e) => seen = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen, "60 1830",
        "the failed-over partitions hold node 1's part"
    );

    nodes_[0].restart();
    let back = nodes_[0].connect().await;
    let mut settled = false;
    let mut last = String::new();
    for _ in 0..150 {
        // A part waiting for its decision has not applied its rows yet, and the others may
        // not see the restarted node up at once.
        match back.query_one("select count(*) from solo", &[]).await {
            Ok(r) if r.get::<_, i64>(0) == 60 => {
                settled = true;
                break;
            }
            Ok(r) => last = format!("{} rows", r.get::<_, i64>(0)),
            Err(e) => last = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "every part of the transaction is applied: {last}");
    for (i, n) in nodes_.iter().enumerate() {
        let c = n.connect().await;
        let mut seen = String::new();
        for _ in 0..150 {
            // The others see the restarted node up once its new registration reaches them.
            let both = "select count(*), coalesce(sum(id), 0) from spread union all \
                        select count(*), coalesce(sum(id), 0) from solo";
            match c.query(both, &[]).await {
                Ok(rows) => {
                    seen = rows
                        .iter()
                        .map(|r| format!("{} {}", r.get::<_, i64>(0), r.get::<_, i64>(1)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    break;
                }
                Err(e) => seen = format!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, "60 1830, 60 1830", "node {}", i + 1);
    }
}

/// The node running a commit dies with every part prepared and no decision recorded: the other
/// nodes record `abort` and roll their parts back, the node rolls back its own when it comes
/// back, and the coordinator then drops the decision from etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_without_a_decision_rolls_back_everywhere_and_is_forgotten() {
    let etcd = Etcd::start();
    let mut nodes_ = start_nodes(&etcd, 3);
    let setup = nodes_[1].connect().await;
    setup
        .batch_execute(&format!(
            "create table spread (id bigint primary key, v text) with (partitions = 6);
             insert into spread values {}",
            values(1..=10)
        ))
        .await
        .unwrap();
    exits_inside_commit(
        &mut nodes_[0],
        "exit-before-commit-decision",
        &["spread"],
        &format!("insert into spread values {}", values(101..=160)),
    )
    .await;
    // The other nodes see it down and record `abort`; the record stays while nothing shows
    // that the run which could still propose `commit` is over.
    let mut decided = Vec::new();
    for _ in 0..300 {
        decided = etcd.keys_containing("/txns/").await;
        if !decided.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(decided.len(), 1, "the abort is recorded: {decided:?}");
    nodes_[0].restart();

    // The same keys can be written once every prepared part let go of them.
    let retried = tokio::time::timeout(
        Duration::from_secs(60),
        setup.batch_execute(&format!("insert into spread values {}", values(101..=160))),
    )
    .await;
    assert!(
        matches!(retried, Ok(Ok(()))),
        "the rows of the lost transaction are free: {retried:?}"
    );
    for (i, n) in nodes_.iter().enumerate() {
        let c = n.connect().await;
        assert_eq!(
            tally(&c, "spread").await,
            vec![row(&["70", "7885"])],
            "node {}",
            i + 1
        );
    }
    let mut left = Vec::new();
    for _ in 0..300 {
        left = etcd.keys_containing("/txns/").await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left.is_empty(),
        "decisions nobody needs are dropped: {left:?}"
    );
}
