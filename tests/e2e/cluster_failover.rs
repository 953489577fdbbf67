//! Replication and failover: every partition of a 3-node cluster has two followers, kept in
//! step by its leader; SIGKILL of a leader's node, then of the coordinator's, loses no
//! acknowledged write, and writes to the dead nodes' partitions go on once a follower leads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{start_nodes, Etcd};
use shoal_tests::texts;

/// Each partition's (leader, followers, epoch), as `client`'s node sees the catalog.
async fn configurations(client: &tokio_postgres::Client) -> BTreeMap<i64, (i64, Vec<i64>, i64)> {
    texts(
        client,
        "select partition, leader, followers, epoch from shoal.partitions where table_name = 'kv'",
    )
    .await
    .into_iter()
    .map(|r| {
        let n = |i: usize| r[i].as_deref().unwrap_or("0").parse::<i64>().unwrap();
        let followers = r[2]
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|f| !f.is_empty())
            .map(|f| f.parse().unwrap())
            .collect();
        (n(0), (n(1), followers, n(3)))
    })
    .collect()
}

/// Each partition's log position on `client`'s node (for partitions it holds a copy of).
async fn log_positions(client: &tokio_postgres::Client) -> BTreeMap<i64, i64> {
    texts(
        client,
        "select partition, log_position from shoal.partitions \
         where table_name = 'kv' and log_position is not null",
    )
    .await
    .into_iter()
    .map(|r| {
        let n = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
        (n(0), n(1))
    })
    .collect()
}

/// The ids `client` reads from `kv`.
async fn stored_ids(client: &tokio_postgres::Client) -> BTreeSet<i64> {
    client
        .query("select id from kv", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

/// Three nodes with a table `kv` of 6 partitions holding ids 1..=600, and a client of node
/// `through` (0-based).
async fn three_nodes_with_kv(
    etcd: &Etcd,
    through: usize,
) -> (Vec<shoal_tests::Node>, tokio_postgres::Client) {
    let nodes = start_nodes(etcd, 3);
    let client = nodes[through].connect().await;
    client
        .batch_execute("create table kv (id bigint primary key, v text) with (partitions = 6)")
        .await
        .unwrap();
    let rows: Vec<String> = (1..=600).map(|i| format!("({i}, 'v{i}')")).collect();
    client
        .batch_execute(&format!("insert into kv values {}", rows.join(", ")))
        .await
        .unwrap();
    (nodes, client)
}

/// What the writer saw: the ids acknowledged, and the longest time one insert took to be
/// acknowledged (retrying through errors).
struct Written {
    acknowledged: BTreeSet<i64>,
    longest_wait: Duration,
}

/// Inserts ids from `first` on, one at a time, each retried until it is acknowledged (or
/// found already stored, when an earlier try's outcome was lost with a dead node).
fn write_until(
    client: tokio_postgres::Client,
    first: i64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Written> {
    tokio::spawn(async move {
        let mut written = Written {
            acknowledged: BTreeSet::new(),
            longest_wait: Duration::ZERO,
        };
        let mut id = first;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            loop {
                match client
                    .execute("insert into kv values ($1, 'w')", &[&id])
                    .await
                {
                    Ok(_) => break,
                    Err(e) if e.code().map(|c| c.code()) == Some("23505") => break,
                    Err(e) => {
                        assert!(
                            started.elapsed() < Duration::from_secs(30),
                            "insert {id} failed for 30 s: {e:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            written.longest_wait = written.longest_wait.max(started.elapsed());
            written.acknowledged.insert(id);
            id += 1;
        }
        written
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_death_loses_no_acknowledged_write_and_a_follower_takes_over() {
    let etcd = Etcd::start();
    let (mut nodes, setup) = three_nodes_with_kv(&etcd, 1).await;
    let before = configurations(&setup).await;
    for (leader, followers, _) in before.values() {
        let mut all: Vec<i64> = followers.clone();
        all.push(*leader);
        all.sort();
        assert_eq!(all, [1, 2, 3], "every node holds a copy: {before:?}");
    }
    // Every follower's log has every entry of its leader's.
    let mut positions = BTreeMap::new();
    for node in &nodes {
        let c = node.connect().await;
        positions.insert(positions.len() + 1, log_positions(&c).await);
        // Each leader saw every follower of its partitions acknowledge its last entry.
        let replicas = texts(
            &c,
            "select role, state, lag from shoal.replicas where table_name = 'kv' \
             order by partition, node_id",
        )
        .await;
        assert_eq!(
            replicas.len(),
            3 * 2,
            "two partitions led here, three copies each: {replicas:?}"
        );
        for r in &replicas {
            let wanted = match r[0].as_deref() {
                Some("leader") => "leading",
                _ => "in sync",
            };
            assert_eq!(
                (r[1].as_deref(), r[2].as_deref()),
                (Some(wanted), Some("0")),
                "{replicas:?}"
            );
        }
    }
    for (partition, (leader, followers, _)) in &before {
        let at_leader = positions[&(*leader as usize)][partition];
        assert!(at_leader >= 1, "partition {partition} was written");
        for f in followers {
            assert_eq!(
                positions[&(*f as usize)][partition],
                at_leader,
                "partition {partition} on node {f}"
            );
        }
    }

    // Writes go on through node 2 while node 3, then node 1 (the coordinator: the oldest
    // candidacy) are killed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_until(nodes[1].connect().await, 1_000, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let led_by_3: Vec<i64> = before
        .iter()
        .filter(|(_, c)| c.0 == 3)
        .map(|(p, _)| *p)
        .collect();
    assert!(!led_by_3.is_empty(), "node 3 leads partitions: {before:?}");
    nodes[2].kill();
    let watcher = nodes[1].connect().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = configurations(&watcher).await;
        if now.values().all(|c| c.0 != 3 && !c.1.contains(&3)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 is still in configurations: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_3 = configurations(&watcher).await;
    for p in &led_by_3 {
        assert!(after_3[p].2 > before[p].2, "partition {p} got a new epoch");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    nodes[0].kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = configurations(&watcher).await;
        if now.values().all(|c| c.0 == 2 && c.1.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 does not lead everything: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    println!(
        "failover: {} inserts acknowledged, the longest took {:?} to be acknowledged",
        written.acknowledged.len(),
        written.longest_wait
    );
    assert!(written.acknowledged.len() > 20, "writes went on");

    // Node 2, alone, holds every row loaded before and every write acknowledged since.
    let stored = stored_ids(&watcher).await;
    let missing: Vec<_> = (1..=600)
        .chain(written.acknowledged.iter().copied())
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
    assert_eq!(
        stored.len(),
        600 + written.acknowledged.len(),
        "no row appears that was not written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_hands_over_and_copies_come_back_when_it_returns() {
    let etcd = Etcd::start();
    let (mut nodes, setup) = three_nodes_with_kv(&etcd, 0).await;
    let before = configurations(&setup).await;
    assert!(
        before.values().any(|c| c.0 == 3),
        "node 3 leads: {before:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_until(nodes[0].connect().await, 1_000, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    // SIGTERM: node 3 hands its partitions to their followers before it exits, so no
    // failover (which waits for the lease) is needed.
    let took = nodes[2].stop();
    println!("node 3 stopped {took:?} after SIGTERM");
    let handed = configurations(&setup).await;
    for (p, c) in &handed {
        assert_ne!(
            c.0, 3,
            "partition {p} is still led by the stopped node: {handed:?}"
        );
        assert!(
            !c.1.contains(&3) || before[p].0 != 3,
            "a leader handing over leaves"
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Back, node 3 copies every partition again and follows it; then it leads its share.
    nodes[2].start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = configurations(&setup).await;
        let full = now.values().all(|c| c.1.len() == 2);
        let leads = now.values().filter(|c| c.0 == 3).count();
        if full && leads == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copies or leadership did not come back: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    println!(
        "hand-over: {} inserts acknowledged, the longest took {:?} to be acknowledged",
        written.acknowledged.len(),
        written.longest_wait
    );

    // Every copy has the whole log, and node 3 alone serves every row once the others die.
    let mut positions = Vec::new();
    for node in &nodes {
        positions.push(log_positions(&node.connect().await).await);
    }
    assert!(
        positions.iter().all(|p| p == &positions[0] && p.len() == 6),
        "logs differ between copies: {positions:?}"
    );
    nodes[0].kill();
    nodes[1].kill();
    let survivor = nodes[2].connect().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = configurations(&survivor).await;
        if now.values().all(|c| c.0 == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 does not lead everything: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = stored_ids(&survivor).await;
    let expected: BTreeSet<i64> = (1..=600)
        .chain(written.acknowledged.iter().copied())
        .collect();
    assert_eq!(
        stored, expected,
        "node 3's copies hold exactly the acknowledged rows"
    );
}

/// How a node leaves in [`failover_timings`].
#[derive(Clone, Copy, Debug)]
enum Departure {
    /// SIGKILL: its followers take over once its lease expires.
    Killed,
    /// SIGTERM: it hands its partitions over before it exits.
    Stopped,
}

/// The `q`-quantile of `samples` (sorted here), nearest rank.
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// A measurement, not a check (run it with `scripts/failover-timings.sh`): node 3 of a
/// 3-node cluster leaves while a client writes through node 1, again and again, killed
/// (SIGKILL) or stopped (SIGTERM) in turn; after each departure it comes back, copies its
/// partitions and leads its share again. Prints, per kind of departure, the longest time one
/// insert took to be acknowledged (retrying through errors) around each departure: p50, p99
/// and max over `SHOAL_FAILOVER_RUNS` runs (10 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement that takes minutes: scripts/failover-timings.sh"]
async fn failover_timings() {
    let runs: usize = std::env::var("SHOAL_FAILOVER_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let etcd = Etcd::start();
    let mut nodes = start_nodes(&etcd, 3);
    let setup = nodes[0].connect().await;
    setup
        .batch_execute("create table kv (id bigint primary key, v text) with (partitions = 6)")
        .await
        .unwrap();
    let mut samples: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut next_id = 1_000_000i64;
    for run in 0..runs {
        for departure in [Departure::Killed, Departure::Stopped] {
            // Node 3 is back: it follows every partition and leads two.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let now = configurations(&setup).await;
                let full = now.values().all(|c| c.1.len() == 2);
                if full && now.values().filter(|c| c.0 == 3).count() == 2 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "run {run}: node 3 did not come back: {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let writer = write_until(nodes[0].connect().await, next_id, stop.clone());
            tokio::time::sleep(Duration::from_millis(500)).await;
            match departure {
                Departure::Killed => nodes[2].kill(),
                Departure::Stopped => {
                    nodes[2].stop();
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.store(true, Ordering::Relaxed);
            let written = writer.await.unwrap();
            next_id += 1_000_000;
            println!(
                "run {run} {departure:?}: {} inserts, the longest took {:?}",
                written.acknowledged.len(),
                written.longest_wait
            );
            samples
                .entry(match departure {
                    Departure::Killed => "SIGKILL",
                    Departure::Stopped => "SIGTERM",
                })
                .or_default()
                .push(written.longest_wait);
            nodes[2].start_again();
        }
    }
    for (kind, mut waits) in samples {
        println!(
            "{kind}: longest insert wait over {} runs: p50 {:?}, p99 {:?}, max {:?}",
            waits.len(),
            quantile(&mut waits, 0.5),
            quantile(&mut waits, 0.99),
            quantile(&mut waits, 1.0),
        );
    }
}

/// Bank transfers, each inside one branch (accounts are partitioned by branch, so a transfer
/// writes one partition), run through two nodes on every partition at once while the third
/// node is killed twice and comes back. Every read sees each branch's total unchanged, and so
/// does the end, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_totals_hold_while_a_leader_is_killed_and_comes_back() {
    const BRANCHES: i32 = 12;
    const ACCOUNTS: i32 = 5;
    let etcd = Etcd::start();
    let mut nodes = start_nodes(&etcd, 3);
    let setup = nodes[0].connect().await;
    setup
        .batch_execute(
            "create table accounts (branch int, id int, balance bigint not null, \
             primary key (branch, id)) with (partitions = 6, partition_key = 'branch')",
        )
        .await
        .unwrap();
    let rows: Vec<String> = (0..BRANCHES)
        .flat_map(|b| (0..ACCOUNTS).map(move |a| format!("({b}, {a}, 100)")))
        .collect();
    setup
        .batch_execute(&format!("insert into accounts values {}", rows.join(", ")))
        .await
        .unwrap();
    let totals = "select branch, sum(balance) from accounts group by branch order by branch";
    let expected: Vec<Vec<Option<String>>> = (0..BRANCHES)
        .map(|b| vec![Some(b.to_string()), Some((100 * ACCOUNTS).to_string())])
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let mut tellers = Vec::new();
    for (teller, node) in nodes[..2].iter().enumerate() {
        let (client, stop) = (node.connect().await, stop.clone());
        tellers.push(tokio::spawn(async move {
            // A small linear congruential generator: the tests take no random crate.
            let mut seed = 12_345u64 + teller as u64;
            let mut next = |n: u64| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 33) % n
            };
            let mut committed = 0;
            while !stop.load(Ordering::Relaxed) {
                let (b, from, to, amount) = (next(12), next(5), next(5), 1 + next(20));
                let transfer = format!(
                    "begin; \
                     update accounts set balance = balance - {amount} where branch = {b} and id = {from}; \
                     update accounts set balance = balance + {amount} where branch = {b} and id = {to}; \
                     commit"
                );
                match client.batch_execute(&transfer).await {
                    Ok(()) => committed += 1,
                    // Failed or unknown: either way the branch total must hold.
                    Err(_) => {
                        let _ = client.batch_execute("rollback").await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            committed
        }));
    }
    let auditor_client = nodes[0].connect().await;
    let (auditing, expected_totals) = (stop.clone(), expected.clone());
    let auditor = tokio::spawn(async move {
        let mut audits = 0;
        while !auditing.load(Ordering::Relaxed) {
            // A branch lives in one partition: its total is read at one snapshot.
            if let Ok(rows) = auditor_client.simple_query(totals).await {
                let seen: Vec<Vec<Option<String>>> = rows
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            Some((0..2).map(|i| r.get(i).map(str::to_string)).collect())
                        }
                        _ => None,
                    })
                    .collect();
                assert_eq!(seen, expected_totals, "a read during the faults");
                audits += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        audits
    });

    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        nodes[2].kill();
        tokio::time::sleep(Duration::from_secs(4)).await;
        nodes[2].start_again();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = texts(
                &setup,
                "select count(*) from shoal.partitions where table_name = 'accounts' \
                 and followers like '_,_'",
            )
            .await;
            if now == vec![vec![Some("6".to_string())]] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node 3 did not copy the partitions back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for t in tellers {
        committed += t.await.unwrap();
    }
    let audits = auditor.await.unwrap();
    println!("bank: {committed} transfers committed, {audits} audits");
    assert!(
        committed > 50 && audits > 10,
        "{committed} transfers, {audits} audits"
    );
    for node in &nodes {
        assert_eq!(texts(&node.connect().await, totals).await, expected);
    }
}
