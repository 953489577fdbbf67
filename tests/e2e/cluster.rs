//! Cluster mode with a real etcd and three `shoal` processes: one catalog for all nodes (DDL
//! visible everywhere when it returns), partitions placed across the live nodes, membership
//! with leases (a killed node is down within seconds) and the coordinator election.

use std::time::{Duration, Instant};

use shoal_coord::{ClusterConfig, EtcdCluster};
use shoal_tests::cluster::{join, start_nodes, Etcd, LEASE_TTL_SECS};
use shoal_tests::{explain, row, texts};

/// `shoal.nodes` as one node sees it: (id, state, coordinator, local).
async fn nodes(c: &tokio_postgres::Client) -> Vec<(String, String, String, String)> {
    texts(
        c,
        "select node_id, state, coordinator, local from shoal.nodes order by node_id",
    )
    .await
    .into_iter()
    .map(|r| {
        let v: Vec<String> = r.into_iter().map(|x| x.unwrap_or_default()).collect();
        (v[0].clone(), v[1].clone(), v[2].clone(), v[3].clone())
    })
    .collect()
}

fn coordinator_of(view: &[(String, String, String, String)]) -> Vec<String> {
    view.iter()
        .filter(|n| n.2 == "t")
        .map(|n| n.0.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_catalog_and_place_partitions_across_each_other() {
    let etcd = Etcd::start();
    let nodes_ = start_nodes(&etcd, 3);
    let mut clients = Vec::new();
    for n in &nodes_ {
        clients.push(n.connect().await);
    }

    // Every node sees the same three live nodes, the same single coordinator, and itself.
    let mut coordinators = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let view = nodes(c).await;
        let ids: Vec<&str> = view.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"], "node {i}: {view:?}");
        assert!(view.iter().all(|n| n.1 == "up"), "{view:?}");
        assert_eq!(view[i].3, "t", "each node knows which one it is: {view:?}");
        let coordinator = coordinator_of(&view);
        assert_eq!(coordinator.len(), 1, "{view:?}");
        coordinators.push(coordinator[0].clone());
    }
    assert!(coordinators.windows(2).all(|w| w[0] == w[1]));

    // DDL through node 1 is visible on nodes 2 and 3 as soon as it returns: no waiting.
    clients[0]
        .batch_execute("create table t (id int primary key, v text) with (partitions = 6)")
        .await
        .unwrap();
    for c in &clients[1..] {
        let cols = texts(
            c,
            "select column_name from information_schema.columns \
             where table_name = 't' order by ordinal_position",
        )
        .await;
        assert_eq!(cols, vec![row(&["id"]), row(&["v"])]);
        let leaders = texts(
            c,
            "select leader, count(*) from shoal.partitions where table_name = 't' \
             group by leader order by leader",
        )
        .await;
        // Balanced: two partitions led by each node.
        assert_eq!(
            leaders,
            vec![row(&["1", "2"]), row(&["2", "2"]), row(&["3", "2"])]
        );
    }
    // And the other way round, through node 3.
    clients[2]
        .batch_execute("create schema sales")
        .await
        .unwrap();
    for c in &clients[..2] {
        let found = texts(
            c,
            "select nspname from pg_namespace where nspname = 'sales'",
        )
        .await;
        assert_eq!(found, vec![row(&["sales"])]);
    }
    let duplicate = clients[1]
        .batch_execute("create schema sales")
        .await
        .unwrap_err();
    assert_eq!(duplicate.code().map(|c| c.code()), Some("42P06"));

    // A one-partition table lives wholly on one node: through that node it is a table.
    clients[1]
        .batch_execute("create table solo (id int primary key, v text) with (partitions = 1)")
        .await
        .unwrap();
    let leader: usize = texts(
        &clients[1],
        "select leader from shoal.partitions where table_name = 'solo'",
    )
    .await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let c = &clients[leader - 1];
    c.batch_execute(
        "insert into solo values (1, 'a'), (2, 'b'); update solo set v = 'B' where id = 2",
    )
    .await
    .unwrap();
    assert_eq!(
        texts(c, "select id, v from solo order by id").await,
        vec![row(&["1", "a"]), row(&["2", "B"])]
    );
    // Another node forwards an autocommit INSERT to the leader, which commits it...
    let other = &clients[leader % 3];
    other
        .batch_execute("insert into solo values (3, 'c')")
        .await
        .unwrap();
    assert_eq!(
        texts(other, "select v from solo where id = 3").await,
        vec![row(&["c"])]
    );
    let duplicate = other
        .batch_execute("insert into solo values (3, 'again')")
        .await
        .unwrap_err();
    assert_eq!(
        duplicate.code().map(|c| c.code()),
        Some("23505"),
        "{duplicate}"
    );
    // ...and inside a transaction block it is part of the block: seen by the block's own
    // reads, undone by ROLLBACK (tests/e2e/cluster_writes.rs commits such blocks).
    other.batch_execute("begin").await.unwrap();
    other
        .batch_execute("insert into solo values (4, 'd')")
        .await
        .unwrap();
    assert_eq!(
        texts(other, "select count(*) from solo").await,
        vec![row(&["4"])]
    );
    assert_eq!(
        texts(c, "select count(*) from solo").await,
        vec![row(&["3"])]
    );
    other.batch_execute("rollback").await.unwrap();
    assert_eq!(
        texts(c, "select count(*) from solo").await,
        vec![row(&["3"])]
    );
}

/// Inserts `(id, id % 5, 'v<id>')` for every id through `c`, one autocommit statement each
/// (each is committed by the leader of its row's partition).
async fn load(c: &tokio_postgres::Client, table: &str, ids: std::ops::RangeInclusive<i32>) {
    for id in ids {
        let sql = format!("insert into {table} values ({id}, {}, 'v{id}')", id % 5);
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_at_the_partition_leaders_and_merge_on_any_node() {
    let etcd = Etcd::start();
    let mut nodes_ = start_nodes(&etcd, 3);
    let mut clients = Vec::new();
    for n in &nodes_ {
        clients.push(n.connect().await);
    }
    clients[0]
        .batch_execute(
            "create table t (id int primary key, k int not null, v text) \
               with (partitions = 6, replicas = 1);
             create table u (id int primary key, k int, v text) with (partitions = 3)",
        )
        .await
        .unwrap();
    load(&clients[0], "t", 1..=300).await;
    load(&clients[1], "u", 1..=40).await;
    // A table without a primary key takes rows through any node, even one that leads none of
    // its partitions.
    clients[0]
        .batch_execute("create table events (what text) with (partitions = 1)")
        .await
        .unwrap();
    for c in &clients {
        c.batch_execute("insert into events values ('e'), ('f')")
            .await
            .unwrap();
    }
    assert_eq!(
        texts(
            &clients[1],
            "select what, count(*) from events group by what order by what"
        )
        .await,
        vec![row(&["e", "3"]), row(&["f", "3"])]
    );
    // The expected answers, computed here from the same rows.
    let ids: Vec<i64> = (1..=300).collect();
    let groups: Vec<Vec<Option<String>>> = (0..5)
        .map(|k| {
            let members: Vec<i64> = ids.iter().copied().filter(|i| i % 5 == k).collect();
            let mut texts_: Vec<String> = members.iter().map(|i| format!("v{i}")).collect();
            texts_.sort();
            row(&[
                &k.to_string(),
                &members.len().to_string(),
                &members.iter().sum::<i64>().to_string(),
                &texts_[0],
                &texts_[texts_.len() - 1],
            ])
        })
        .collect();
    for c in &clients {
        assert_eq!(
            texts(
                c,
                "select count(*), sum(id), avg(id), min(v), max(id) from t"
            )
            .await,
            vec![row(&["300", "45150", "150.5000000000000000", "v1", "300"])]
        );
        assert_eq!(
            texts(
                c,
                "select k, count(*), sum(id), min(v), max(v) from t group by k order by k"
            )
            .await,
            groups
        );
        assert_eq!(
            texts(
                c,
                "select id, v from t where k = 3 order by id desc limit 3"
            )
            .await,
            vec![
                row(&["298", "v298"]),
                row(&["293", "v293"]),
                row(&["288", "v288"])
            ]
        );
        // Point lookups reach whichever node holds the key.
        assert_eq!(
            texts(c, "select v from t where id in (7, 77, 177) order by v").await,
            vec![row(&["v177"]), row(&["v7"]), row(&["v77"])]
        );
        // A join of two distributed tables, merged here.
        assert_eq!(
            texts(
                c,
                "select count(*), sum(t.k + u.k) from t join u on t.id = u.id"
            )
            .await,
            vec![row(&["40", "160"])]
        );
        assert_eq!(
            texts(
                c,
                "select count(*) from t where id not in (select id from u)"
            )
            .await,
            vec![row(&["260"])]
        );
    }

    // EXPLAIN: the partial aggregate runs inside the fragment, the final one here.
    let plan = explain(&clients[0], "select k, count(*) from t group by k").await;
    let fragment = plan
        .find("FragmentExec")
        .unwrap_or_else(|| panic!("{plan}"));
    let partial = plan
        .find("mode=Partial")
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        fragment < partial,
        "the partial aggregate is in the fragment:\n{plan}"
    );
    assert!(
        plan.contains("not pushed: rows are repartitioned across partitions here"),
        "{plan}"
    );
    assert!(plan.contains("@node2") && plan.contains("@node3"), "{plan}");
    // A table with fewer partitions than the node runs streams is spread over more of them,
    // after its filter: the filter still runs at the leaders.
    let plan = explain(&clients[0], "select id from u where k = 3").await;
    let fragment = plan
        .find("FragmentExec")
        .unwrap_or_else(|| panic!("{plan}"));
    let filter = plan.find("FilterExec").unwrap_or_else(|| panic!("{plan}"));
    assert!(fragment < filter, "the filter is in the fragment:\n{plan}");

    // Only partial results travel: at most one row per group from each remote partition.
    let analyzed = explain(&clients[0], "analyze select k, count(*) from t group by k").await;
    let shipped = shoal_tests::fragment_output_rows(&analyzed);
    assert!(
        shipped > 0 && shipped <= 6 * 5,
        "{shipped} rows shipped: {analyzed}"
    );

    // /metrics counts what came back from other nodes, by statement kind.
    let metrics = shoal_tests::http_get(nodes_[0].metrics_port, "/metrics").await;
    let received = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shoal_fragment_bytes_received_total{kind=\"select\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(received > 0.0, "{metrics}");

    // A leader's error reaches the client with its SQLSTATE: row 7 lives on one node, so two
    // of these three fail there.
    for c in &clients {
        let err = c
            .query("select id / (k - k) from t where id = 7", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("22012"), "{err}");
    }

    // UPDATE and DELETE by key run whole at the key's leader, through any node.
    for (i, c) in clients.iter().enumerate() {
        let id = 7 + i as i32;
        let changed = c
            .execute("update t set v = 'changed' where id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(changed, 1, "through node {}", i + 1);
    }
    assert_eq!(
        clients[0]
            .execute("delete from t where id in (10)", &[])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        texts(
            &clients[2],
            "select id, v from t where id between 7 and 10 order by id"
        )
        .await,
        vec![
            row(&["7", "changed"]),
            row(&["8", "changed"]),
            row(&["9", "changed"])
        ]
    );
    // One that reads several nodes' partitions runs on each of them, over its partitions.
    let changed = clients[1]
        .execute("update t set v = 'everywhere' where k = 4", &[])
        .await
        .unwrap();
    assert_eq!(changed, 60);
    assert_eq!(
        texts(
            &clients[0],
            "select count(*), min(id) from t where v = 'everywhere'"
        )
        .await,
        vec![row(&["60", "4"])]
    );

    // A dead node's partitions without followers (`replicas = 1`) fail fast, by name; other
    // tables keep working. (Replicated partitions get a new leader: see cluster_failover.)
    clients[0]
        .batch_execute("create table near (id int primary key) with (partitions = 1, replicas = 1)")
        .await
        .unwrap();
    let near_leader = texts(
        &clients[0],
        "select leader from shoal.partitions where table_name = 'near'",
    )
    .await;
    nodes_[2].kill();
    let started = Instant::now();
    let err = clients[0]
        .query("select count(*) from t", &[])
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(LEASE_TTL_SECS + 6),
        "{:?}",
        started.elapsed()
    );
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("unavailable") && message.contains("node 3"),
        "{message}"
    );
    if near_leader != vec![row(&["3"])] {
        let leader: usize = near_leader[0][0].as_deref().unwrap().parse().unwrap();
        assert_eq!(
            texts(&clients[leader - 1], "select count(*) from near").await,
            vec![row(&["0"])]
        );
    }

    // Back on its data directory, its partitions serve again.
    nodes_[2].restart();
    let mut answer = Vec::new();
    for _ in 0..100 {
        match clients[0].simple_query("select count(*) from t").await {
            Ok(_) => {
                answer = texts(&clients[0], "select count(*) from t").await;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answer, vec![row(&["299"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_marked_down_and_the_coordinator_moves() {
    let etcd = Etcd::start();
    let mut nodes_ = start_nodes(&etcd, 3);
    let first = nodes_[0].connect().await;
    let view = nodes(&first).await;
    let coordinator: usize = coordinator_of(&view)[0].parse().unwrap();
    // Watch from a node that survives.
    let observer_index = if coordinator == 1 { 1 } else { 0 };
    let observer = nodes_[observer_index].connect().await;

    nodes_[coordinator - 1].kill();
    let killed_at = Instant::now();
    let mut after = Vec::new();
    while killed_at.elapsed() < Duration::from_secs(LEASE_TTL_SECS + 8) {
        after = nodes(&observer).await;
        let down = after[coordinator - 1].1 == "down";
        let moved = coordinator_of(&after)
            .first()
            .is_some_and(|c| *c != coordinator.to_string());
        if down && moved {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed_at.elapsed();
    assert_eq!(after[coordinator - 1].1, "down", "{after:?}");
    // The new coordinator records since when.
    assert!(
        wait_for(
            &observer,
            &format!(
            "select 1 from shoal.nodes where node_id = {coordinator} and down_since is not null"
        )
        )
        .await,
        "the coordinator records the node down"
    );
    let new_coordinator = coordinator_of(&after);
    assert_eq!(new_coordinator.len(), 1, "{after:?}");
    assert_ne!(new_coordinator[0], coordinator.to_string());
    // A lease is at most TTL old when the process dies; etcd expires it within about a second.
    assert!(
        took < Duration::from_secs(LEASE_TTL_SECS + 3),
        "down after {took:?}"
    );

    // The catalog keeps working without the old coordinator.
    observer
        .batch_execute("create table after_failover (id int)")
        .await
        .unwrap();

    // The node comes back on its data directory with its old id, and sees the new table.
    nodes_[coordinator - 1].restart();
    let back = nodes_[coordinator - 1].connect().await;
    let view = nodes(&back).await;
    assert_eq!(view.len(), 3, "{view:?}");
    assert!(
        wait_for(
            &back,
            "select 1 from shoal.nodes where down_since is null having count(*) = 3"
        )
        .await,
        "the coordinator records the node up again"
    );
    assert!(view.iter().all(|n| n.1 == "up"), "{view:?}");
    assert_eq!(
        view[coordinator - 1].3,
        "t",
        "same node id after restart: {view:?}"
    );
    let tables = texts(
        &back,
        "select count(*) from pg_tables where tablename = 'after_failover'",
    )
    .await;
    assert_eq!(tables, vec![row(&["1"])]);

    // A fourth node joins with the next id.
    let fourth = join(&etcd);
    let c = fourth.connect().await;
    let view = nodes(&c).await;
    assert_eq!(view.len(), 4, "{view:?}");
    assert_eq!(view[3].3, "t");
}

/// Polls `sql` on `c` for a few seconds until it returns a row.
async fn wait_for(c: &tokio_postgres::Client, sql: &str) -> bool {
    for _ in 0..100 {
        if !texts(c, sql).await.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn config(etcd: &Etcd, dir: &std::path::Path) -> ClusterConfig {
    ClusterConfig {
        endpoints: vec![etcd.client_url.clone()],
        cluster_name: "fence".into(),
        node_id: None,
        sql_address: "127.0.0.1:1".into(),
        flight_address: "127.0.0.1:2".into(),
        lease_ttl: Duration::from_secs(LEASE_TTL_SECS),
        data_dir: dir.to_path_buf(),
        proposed_secret: "test-secret".into(),
    }
}

/// The coordinator's writes are fenced by its candidacy: once its lease is gone (as after a
/// pause longer than the lease), its writes change nothing even before it notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_coordinator_changes_nothing() {
    let etcd = Etcd::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = {
        let config = config(&etcd, dir_a.path());
        tokio::task::spawn_blocking(move || EtcdCluster::join(config))
            .await
            .unwrap()
            .unwrap()
    };
    let start = Instant::now();
    while !a.is_coordinator() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.is_coordinator(), "the only node is elected");
    let b = {
        let config = config(&etcd, dir_b.path());
        tokio::task::spawn_blocking(move || EtcdCluster::join(config))
            .await
            .unwrap()
            .unwrap()
    };
    let mut etcd_client = etcd_client::Client::connect([etcd.client_url.as_str()], None)
        .await
        .unwrap();
    let down_key = "/shoal/fence/down/99";

    let a2 = a.clone();
    let wrote = tokio::task::spawn_blocking(move || a2.record_down(99))
        .await
        .unwrap();
    assert!(wrote.unwrap(), "the coordinator records decisions");
    etcd_client.delete(down_key, None).await.unwrap();

    // Node a's lease ends under it; node b takes over.
    etcd_client.lease_revoke(a.lease_id()).await.unwrap();
    let a2 = a.clone();
    let wrote = tokio::task::spawn_blocking(move || a2.record_down(99))
        .await
        .unwrap();
    assert!(!wrote.unwrap(), "a deposed coordinator's write is refused");
    let found = etcd_client.get(down_key, None).await.unwrap();
    assert!(found.kvs().is_empty(), "nothing was written");
    let start = Instant::now();
    while !b.is_coordinator() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.is_coordinator() && !a.is_coordinator());
}

/// The same analytic queries on a three-node cluster, a single Shoal node and PostgreSQL 15,
/// over the same rows, give the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_answers_as_one_node_and_postgres_do() {
    let pg = shoal_tests::pg::Postgres::start()
        .unwrap_or_else(|| panic!("PostgreSQL 15 is missing: run scripts/install-deps.sh"));
    pg.create_database("shoal").await;
    let (reference, conn) =
        tokio_postgres::connect(&pg.conn_string("shoal"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let single_node = shoal_tests::Node::start();
    let single = single_node.connect().await;
    let etcd = Etcd::start();
    let nodes_ = start_nodes(&etcd, 3);
    let mut cluster = Vec::new();
    for n in &nodes_ {
        cluster.push(n.connect().await);
    }

    let schema = "create table customer (c_id int primary key, name text not null, nation int not null,
                                         meta jsonb not null) with (partitions = 3);
                  create table orders (o_id int primary key, cust int not null, status text not null,
                                       total numeric(12,2) not null, day date not null) with (partitions = 6)";
    let pg_schema = schema
        .replace(" with (partitions = 3)", "")
        .replace(" with (partitions = 6)", "");
    reference.batch_execute(&pg_schema).await.unwrap();
    single.batch_execute(schema).await.unwrap();
    cluster[0].batch_execute(schema).await.unwrap();

    let customers: Vec<String> = (1..=50)
        .map(|c| {
            let tier = ["gold", "silver", "bronze"][c % 3];
            let vip = if c % 5 == 0 { r#", "vip": true"# } else { "" };
            let meta = format!(r#"{{"tier": "{tier}", "rank": {c}{vip}}}"#);
            format!("({c}, 'customer {c:02}', {}, '{meta}')", c % 7)
        })
        .collect();
    let orders: Vec<String> = (1..=500)
        .map(|o| {
            let status = ["open", "shipped", "returned"][o % 3];
            let total = format!("{}.{:02}", (o * 37) % 1000, (o * 13) % 100);
            format!(
                "({o}, {}, '{status}', {total}, date '2026-01-01' + {})",
                (o * 7) % 50 + 1,
                o % 90
            )
        })
        .collect();
    // One statement per table, through different nodes: each writes the rows of every node
    // in one transaction across nodes.
    for (i, (table, rows)) in [("customer", &customers), ("orders", &orders)]
        .into_iter()
        .enumerate()
    {
        let all = format!("insert into {table} values {}", rows.join(", "));
        reference.batch_execute(&all).await.unwrap();
        single.batch_execute(&all).await.unwrap();
        cluster[i + 1].batch_execute(&all).await.unwrap();
    }

    let queries = [
        "select count(*), sum(total), min(total), max(total), min(day), max(day) from orders",
        "select status, count(*), sum(total) from orders group by status order by status",
        "select c.nation, count(*), sum(o.total) from orders o join customer c on o.cust = c.c_id \
         group by c.nation order by c.nation",
        "select o_id, total from orders order by total desc, o_id limit 7",
        "select cust, count(*) as n from orders where status <> 'returned' group by cust \
         having count(*) > 6 order by n desc, cust limit 5",
        "select count(distinct cust), count(distinct day) from orders where total > 500",
        "select name from customer where c_id in (select cust from orders where total > 990) order by name",
        "select extract(month from day) as m, count(*) from orders group by m order by m",
        "select c_id, name from customer c where not exists \
         (select 1 from orders o where o.cust = c.c_id and o.total > 960) order by c_id",
        "select o_id, rank() over (partition by cust order by total desc) from orders \
         where cust = 8 order by o_id",
        // Functions planned by Shoal (JSON operators, regular expressions) run at the leaders.
        "select c_id, meta ->> 'tier', meta -> 'rank' from customer \
         where meta @> '{\"tier\": \"gold\"}' and meta ? 'vip' order by c_id",
        "select substring(name from '[0-9]+$') as n, meta #>> '{tier}' from customer \
         where (meta ->> 'rank')::int > 45 order by n",
    ];
    for q in queries {
        let expected = texts(&reference, q).await;
        assert!(!expected.is_empty(), "{q} returns rows");
        assert_eq!(texts(&single, q).await, expected, "single node: {q}");
        for (i, c) in cluster.iter().enumerate() {
            assert_eq!(texts(c, q).await, expected, "cluster node {}: {q}", i + 1);
        }
    }
}

/// etcd dies and comes back: queries keep running on the cached catalog meanwhile, catalog
/// changes fail cleanly, and once etcd is back the nodes register again and DDL works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_rides_out_an_etcd_restart() {
    let mut etcd = Etcd::start();
    let nodes_ = start_nodes(&etcd, 2);
    let (a, b) = (nodes_[0].connect().await, nodes_[1].connect().await);
    a.batch_execute("create table kv (k int primary key, g int, v text) with (partitions = 4)")
        .await
        .unwrap();
    load(&a, "kv", 1..=20).await;

    etcd.kill();
    // Reads need neither etcd nor a catalog change: both nodes still answer, across nodes.
    for c in [&a, &b] {
        assert_eq!(
            texts(c, "select count(*), sum(k) from kv").await,
            vec![row(&["20", "210"])]
        );
    }
    let started = Instant::now();
    let err = b
        .batch_execute("create table during (id int)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("58000"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    etcd.restart();
    let mut created = false;
    for _ in 0..100 {
        if b.batch_execute("create table after (id int)").await.is_ok() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "DDL works again once etcd is back");
    assert_eq!(
        texts(
            &a,
            "select count(*) from pg_tables where tablename in ('after', 'during')"
        )
        .await,
        vec![row(&["1"])]
    );
    let mut both_up = false;
    for _ in 0..100 {
        let up = texts(&a, "select count(*) from shoal.nodes where state = 'up'").await;
        if up == vec![row(&["2"])] {
            both_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(both_up, "both nodes registered again");
    assert_eq!(
        texts(&b, "select count(*) from kv").await,
        vec![row(&["20"])]
    );
}
