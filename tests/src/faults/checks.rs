//! The checks of a fault run, once its faults are healed: every partition has all its copies
//! back with equal logs, every node answers the same, each workload's invariant holds, and
//! every replica holds exactly its leader's data.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::history::Clock;
use super::linearizable::{check_register, Call, RegisterOp};
use super::workloads::{self, Histories, Transfer, ACCOUNTS_PER_BRANCH, INITIAL_BALANCE};
use super::FaultCluster;
use crate::texts;

/// How long a healed cluster may take to give every partition its copies back.
const REPAIR_PATIENCE: Duration = Duration::from_secs(90);

/// Connects to every node (each is up once the faults are healed).
async fn clients(cluster: &FaultCluster) -> Vec<tokio_postgres::Client> {
    let mut clients = Vec::new();
    for node in &cluster.nodes {
        clients.push(node.connect().await);
    }
    clients
}

/// (table, partition) → (leader, followers, epoch), and this node's log positions.
type Configurations = BTreeMap<(String, i64), (String, String, String)>;

async fn configurations(
    client: &tokio_postgres::Client,
) -> Option<(Configurations, BTreeMap<(String, i64), String>)> {
    let rows = client
        .simple_query(
            "select table_name, partition, leader, followers, epoch, log_position, moving_to \
             from shoal.partitions",
        )
        .await
        .ok()?;
    let mut configs = BTreeMap::new();
    let mut positions = BTreeMap::new();
    for row in rows {
        let tokio_postgres::SimpleQueryMessage::Row(r) = row else {
            continue;
        };
        let text = |i: usize| r.get(i).unwrap_or("").to_string();
        if r.get(6).is_some() {
            return None; // still moving
        }
        let key = (text(0), text(1).parse().ok()?);
        if r.get(5).is_some() {
            positions.insert(key.clone(), text(5));
        }
        configs.insert(key, (text(2), text(3), text(4)));
    }
    Some((configs, positions))
}

/// Waits until every node sees the same configurations, each partition has as many copies as
/// the cluster has nodes (up to 3), on distinct nodes, and every copy's log position equals
/// its leader's.
pub async fn wait_for_replicas(cluster: &FaultCluster) -> Result<(), String> {
    let wanted = cluster.nodes.len().min(3);
    let deadline = tokio::time::Instant::now() + REPAIR_PATIENCE;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = Vec::new();
        for node in &cluster.nodes {
            let Ok(Ok((client, connection))) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&node.conn_string(), tokio_postgres::NoTls),
            )
            .await
            else {
                break;
            };
            tokio::spawn(connection);
            match configurations(&client).await {
                Some(c) => seen.push(c),
                None => break,
            }
        }
        if seen.len() < cluster.nodes.len() {
            last = "not every node answered, or a partition was still moving".into();
            continue;
        }
        let first = &seen[0].0;
        if seen.iter().any(|(c, _)| c != first) {
            last = "the nodes saw different configurations".into();
            continue;
        }
        let short: Vec<_> = first
            .iter()
            .filter(|(_, (_, followers, _))| {
                followers.split(',').filter(|f| !f.is_empty()).count() + 1 < wanted
            })
            .collect();
        if !short.is_empty() {
            last = format!("partitions short of copies: {short:?}");
            continue;
        }
        let mut unequal = Vec::new();
        for (key, (leader, followers, _)) in first {
            let position = |node: &str| -> Option<String> {
                let i: usize = node.parse().ok()?;
                seen.get(i.checked_sub(1)?)?.1.get(key).cloned()
            };
            let lead = position(leader);
            for f in followers.split(',').filter(|f| !f.is_empty()) {
                if position(f) != lead {
                    unequal.push(format!(
                        "{key:?} node {f} at {:?}, leader at {lead:?}",
                        position(f)
                    ));
                }
            }
        }
        if unequal.is_empty() {
            return Ok(());
        }
        last = format!("followers behind their leader: {unequal:?}");
    }
    Err(format!(
        "the cluster did not repair within {REPAIR_PATIENCE:?} of healing: {last}"
    ))
}

/// The longest stretch of [from, until] (µs) with no acknowledgement in `acknowledged`
/// (sorted).
pub fn longest_pause(acknowledged: &[u64], from: u64, until: u64) -> Duration {
    let mut longest = 0;
    let mut previous = from;
    for &t in acknowledged.iter().filter(|t| **t > from && **t <= until) {
        longest = longest.max(t - previous);
        previous = t;
    }
    longest = longest.max(until.saturating_sub(previous));
    Duration::from_micros(longest)
}

/// Every invariant that does not hold, in words.
pub async fn final_checks(
    cluster: &FaultCluster,
    histories: &mut Histories,
    clock: Clock,
) -> Vec<String> {
    let clients = clients(cluster).await;
    let mut problems = Vec::new();

    // Registers: a last read of every key joins its history, so a write lost at the end
    // shows too.
    for key in 1..=workloads::REGISTER_KEYS {
        let invoked = clock.micros();
        let row = clients[0]
            .query_one("select v from registers where k = $1", &[&key])
            .await
            .expect("read a register after healing");
        histories
            .registers
            .calls
            .entry(key)
            .or_default()
            .push(Call {
                op: RegisterOp::Read(row.get(0)),
                invoked,
                returned: Some(clock.micros()),
            });
    }
    let calls = histories.registers.calls.clone();
    let verdicts = tokio::task::spawn_blocking(move || {
        calls
            .into_iter()
            .map(|(key, calls)| (key, calls.len(), check_register(0, &calls)))
            .collect::<Vec<_>>()
    })
    .await
    .expect("linearizability checker");
    for (key, n, verdict) in verdicts {
        if let Err(e) = verdict {
            problems.push(format!("register {key} ({n} calls): {e}"));
        }
    }

    // Every node answers the same.
    let mut answers = Vec::new();
    for client in &clients {
        answers.push(everything(client).await);
    }
    if answers.iter().any(|a| a != &answers[0]) {
        problems.push("the nodes answered the final reads differently".into());
    }
    let (items, accounts, transfers) = &answers[0];
    problems.extend(check_set(&histories.set, items));
    problems.extend(check_bank(&histories.bank, accounts, transfers));
    problems.extend(histories.bank.violations.iter().cloned());
    problems.extend(check_digests(cluster, &clients).await);
    problems
}

type Everything = (
    BTreeSet<i64>,
    BTreeMap<(i64, i64), i64>,
    BTreeMap<(i64, i64), Transfer>,
);

/// The set's ids, every balance and every logged transfer, as one node reads them.
async fn everything(client: &tokio_postgres::Client) -> Everything {
    let number = |r: &Vec<Option<String>>, i: usize| -> i64 {
        r[i].as_deref().unwrap_or("0").parse().unwrap_or(i64::MIN)
    };
    let items = texts(client, "select id from items")
        .await
        .iter()
        .map(|r| number(r, 0))
        .collect();
    let accounts = texts(client, "select branch, id, balance from accounts")
        .await
        .iter()
        .map(|r| ((number(r, 0), number(r, 1)), number(r, 2)))
        .collect();
    let transfers = texts(
        client,
        "select branch, id, from_account, to_account, amount from transfers",
    )
    .await
    .iter()
    .map(|r| {
        let t = Transfer {
            branch: number(r, 0),
            id: number(r, 1),
            from: number(r, 2),
            to: number(r, 3),
            amount: number(r, 4),
        };
        ((t.branch, t.id), t)
    })
    .collect();
    (items, accounts, transfers)
}

fn check_set(set: &workloads::SetHistory, present: &BTreeSet<i64>) -> Vec<String> {
    let mut problems = Vec::new();
    let lost: Vec<_> = set.ok.difference(present).collect();
    if !lost.is_empty() {
        problems.push(format!("set: acknowledged inserts lost: {lost:?}"));
    }
    let appeared: Vec<_> = set.failed.intersection(present).collect();
    if !appeared.is_empty() {
        problems.push(format!(
            "set: inserts that failed are present: {appeared:?}"
        ));
    }
    let unexplained: Vec<_> = present
        .iter()
        .filter(|id| !set.ok.contains(id) && !set.unknown.contains(id))
        .collect();
    if !unexplained.is_empty() {
        problems.push(format!("set: ids nobody inserted: {unexplained:?}"));
    }
    problems
}

fn check_bank(
    bank: &workloads::BankHistory,
    accounts: &BTreeMap<(i64, i64), i64>,
    logged: &BTreeMap<(i64, i64), Transfer>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let missing: Vec<_> = bank
        .ok
        .iter()
        .filter(|t| logged.get(&(t.branch, t.id)) != Some(t))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("bank: acknowledged transfers lost: {missing:?}"));
    }
    let attempted: BTreeMap<(i64, i64), &Transfer> = bank
        .ok
        .iter()
        .chain(&bank.unknown)
        .map(|t| ((t.branch, t.id), t))
        .collect();
    let failed: BTreeMap<(i64, i64), &String> = bank
        .failed
        .iter()
        .map(|(t, why)| ((t.branch, t.id), why))
        .collect();
    for (key, t) in logged {
        if let Some(why) = failed.get(key) {
            problems.push(format!(
                "bank: a transfer that failed ({why}) is logged: {t:?}"
            ));
        } else if attempted.get(key) != Some(&t) {
            problems.push(format!("bank: a logged transfer nobody made: {t:?}"));
        }
    }
    let mut expected: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for t in logged.values() {
        *expected
            .entry((t.branch, t.from))
            .or_insert(INITIAL_BALANCE) -= t.amount;
        *expected.entry((t.branch, t.to)).or_insert(INITIAL_BALANCE) += t.amount;
    }
    for (key, balance) in accounts {
        let wanted = expected.get(key).copied().unwrap_or(INITIAL_BALANCE);
        if *balance != wanted {
            problems.push(format!(
                "bank: account {key:?} holds {balance}, its logged transfers make {wanted}"
            ));
        }
    }
    if accounts.len() as i64 != workloads::BRANCHES * ACCOUNTS_PER_BRANCH {
        problems.push(format!("bank: {} accounts at the end", accounts.len()));
    }
    problems
}

/// Every copy of every partition holds the same rows: each node's digests of the copies it
/// holds (`shoal.partition_digests`) agree with the leader's.
async fn check_digests(cluster: &FaultCluster, clients: &[tokio_postgres::Client]) -> Vec<String> {
    let mut copies: BTreeMap<(String, String), BTreeMap<usize, (String, String)>> = BTreeMap::new();
    for (i, client) in clients.iter().enumerate() {
        for r in texts(
            client,
            "select table_name, partition, row_count, digest from shoal.partition_digests",
        )
        .await
        {
            let text = |i: usize| r[i].clone().unwrap_or_default();
            copies
                .entry((text(0), text(1)))
                .or_default()
                .insert(i + 1, (text(2), text(3)));
        }
    }
    let mut problems = Vec::new();
    let wanted = cluster.nodes.len().min(3);
    for (partition, holders) in &copies {
        let distinct: BTreeSet<_> = holders.values().collect();
        if distinct.len() != 1 || holders.len() != wanted {
            problems.push(format!(
                "replicas of {partition:?} differ (node → rows, digest): {holders:?}"
            ));
        }
    }
    if copies.len() != 4 * 6 {
        problems.push(format!("{} partitions have digests, not 24", copies.len()));
    }
    problems
}

/// Sums over every node of counters of its `/metrics` (each counts since the node's last
/// start).
#[derive(Debug, Default, Clone, Copy)]
pub struct MetricSums {
    pub failovers: u64,
    pub replicas_added: u64,
    pub configuration_changes: u64,
}

pub async fn metric_sums(cluster: &FaultCluster) -> MetricSums {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sums = MetricSums::default();
    for node in &cluster.nodes {
        let Ok(mut s) =
            tokio::net::TcpStream::connect((node.address.as_str(), node.metrics_port)).await
        else {
            continue;
        };
        let mut text = String::new();
        if s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.is_err()
            || s.read_to_string(&mut text).await.is_err()
        {
            continue;
        }
        for line in text.lines() {
            let value = |name: &str| {
                line.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            sums.failovers += value("shoal_failovers_total ");
            sums.replicas_added += value("shoal_replicas_added_total ");
            sums.configuration_changes += value("shoal_configuration_changes_total ");
        }
    }
    sums
}
