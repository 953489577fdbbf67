//! The workloads a fault run drives, each with the invariant it checks afterwards:
//!
//! - **registers**: read, write and compare-and-set on a few keys; each key's history must be
//!   linearizable ([`super::linearizable`]).
//! - **set**: inserts of unique ids; every acknowledged id is there at the end, no failed one
//!   is, and nothing else is.
//! - **bank**: transfers between two accounts of one branch (a branch lives in one
//!   partition), each logged in `transfers` in the same transaction. Every audit sees each
//!   branch's total unchanged; at the end every acknowledged transfer is logged, no failed one
//!   is, and every balance is its start plus its logged transfers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::{bounded, Clock, Failure, Outcome, Session, Tally};
use super::linearizable::{Call, RegisterOp};

pub const REGISTER_KEYS: i64 = 12;
pub const BRANCHES: i64 = 12;
pub const ACCOUNTS_PER_BRANCH: i64 = 4;
pub const INITIAL_BALANCE: i64 = 100;

/// A pause between one worker's operations, so that the workload leaves the 2-core machine
/// room for the nodes' own work (failure detection must not starve).
const PACE: Duration = Duration::from_millis(5);

/// Creates and fills the workloads' tables through `client`.
pub async fn create_tables(client: &tokio_postgres::Client) {
    let registers: Vec<String> = (1..=REGISTER_KEYS).map(|k| format!("({k}, 0)")).collect();
    let accounts: Vec<String> = (1..=BRANCHES)
        .flat_map(|b| {
            (1..=ACCOUNTS_PER_BRANCH).map(move |a| format!("({b}, {a}, {INITIAL_BALANCE})"))
        })
        .collect();
    client
        .batch_execute(&format!(
            "create table registers (k bigint primary key, v bigint not null) \
               with (partitions = 6);
             insert into registers values {};
             create table items (id bigint primary key, worker int not null) \
               with (partitions = 6);
             create table accounts (branch int, id int, balance bigint not null, \
               primary key (branch, id)) with (partitions = 6, partition_key = 'branch');
             create table transfers (branch int, id bigint, from_account int not null, \
               to_account int not null, amount bigint not null, primary key (branch, id)) \
               with (partitions = 6, partition_key = 'branch');
             insert into accounts values {};",
            registers.join(", "),
            accounts.join(", ")
        ))
        .await
        .expect("create the workload tables");
}

/// Each key's calls, and the outcomes.
#[derive(Default)]
pub struct RegisterHistory {
    pub calls: BTreeMap<i64, Vec<Call>>,
    pub tally: Tally,
}

#[derive(Default)]
pub struct SetHistory {
    pub ok: BTreeSet<i64>,
    pub failed: BTreeSet<i64>,
    pub unknown: BTreeSet<i64>,
    /// When each acknowledged insert returned (µs), for the availability figures.
    pub acknowledged_at: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub branch: i64,
    pub id: i64,
    pub from: i64,
    pub to: i64,
    pub amount: i64,
}

#[derive(Default)]
pub struct BankHistory {
    pub ok: Vec<Transfer>,
    /// With what each failed transfer was told.
    pub failed: Vec<(Transfer, String)>,
    pub unknown: Vec<Transfer>,
    pub audits: usize,
    pub violations: Vec<String>,
}

/// The running workers; [`Workers::finish`] stops them and gathers their histories.
pub struct Workers {
    stop: Arc<AtomicBool>,
    registers: Vec<tokio::task::JoinHandle<RegisterHistory>>,
    sets: Vec<tokio::task::JoinHandle<SetHistory>>,
    banks: Vec<tokio::task::JoinHandle<BankHistory>>,
}

pub struct Histories {
    pub registers: RegisterHistory,
    pub set: SetHistory,
    pub bank: BankHistory,
}

impl Workers {
    /// Starts `per_workload` workers of each workload over the nodes' connection strings,
    /// spread over the nodes.
    pub fn start(targets: &[String], per_workload: usize, clock: Clock, seed: u64) -> Workers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Workers {
            stop: stop.clone(),
            registers: Vec::new(),
            sets: Vec::new(),
            banks: Vec::new(),
        };
        for w in 0..per_workload {
            let session = |offset: usize| Session::new(targets.to_vec(), w + offset);
            let rng = |salt: u64| StdRng::seed_from_u64(seed ^ ((w as u64) << 8) ^ salt);
            let worker = w as i64 + 1;
            workers.registers.push(tokio::spawn(register_worker(
                worker,
                session(0),
                clock,
                stop.clone(),
                rng(1),
            )));
            workers.sets.push(tokio::spawn(set_worker(
                worker,
                session(1),
                clock,
                stop.clone(),
            )));
            workers.banks.push(tokio::spawn(bank_worker(
                worker,
                session(2),
                stop.clone(),
                rng(2),
            )));
        }
        workers
    }

    pub async fn finish(self) -> Histories {
        self.stop.store(true, Ordering::Relaxed);
        let mut histories = Histories {
            registers: RegisterHistory::default(),
            set: SetHistory::default(),
            bank: BankHistory::default(),
        };
        for h in self.registers {
            let done = h.await.expect("register worker");
            for (k, calls) in done.calls {
                histories
                    .registers
                    .calls
                    .entry(k)
                    .or_default()
                    .extend(calls);
            }
            let t = &mut histories.registers.tally;
            t.ok += done.tally.ok;
            t.failed += done.tally.failed;
            t.unknown += done.tally.unknown;
        }
        for h in self.sets {
            let done = h.await.expect("set worker");
            let s = &mut histories.set;
            s.ok.extend(done.ok);
            s.failed.extend(done.failed);
            s.unknown.extend(done.unknown);
            s.acknowledged_at.extend(done.acknowledged_at);
        }
        histories.set.acknowledged_at.sort_unstable();
        for h in self.banks {
            let done = h.await.expect("bank worker");
            let b = &mut histories.bank;
            b.ok.extend(done.ok);
            b.failed.extend(done.failed);
            b.unknown.extend(done.unknown);
            b.audits += done.audits;
            b.violations.extend(done.violations);
        }
        histories
    }
}

/// Waits a little after a node could not be reached or an operation failed.
async fn back_off(session: &mut Session, failure: Option<&Failure>) {
    if failure.is_none_or(|f| f.connection_lost) {
        session.reset();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The session's client after the pace between operations; None, after backing off, when
/// no node could be reached.
async fn paced_client(session: &mut Session) -> Option<&tokio_postgres::Client> {
    tokio::time::sleep(PACE).await;
    if session.client().await.is_none() {
        back_off(session, None).await;
        return None;
    }
    // Connected now: this returns the same client without connecting again.
    session.client().await
}

async fn register_worker(
    worker: i64,
    mut session: Session,
    clock: Clock,
    stop: Arc<AtomicBool>,
    mut rng: StdRng,
) -> RegisterHistory {
    let mut history = RegisterHistory::default();
    let mut last_read: BTreeMap<i64, i64> = BTreeMap::new();
    let mut sequence = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let Some(client) = paced_client(&mut session).await else {
            continue;
        };
        let key = rng.random_range(1..=REGISTER_KEYS);
        sequence += 1;
        let fresh = (worker << 32) | sequence;
        let invoked = clock.micros();
        let (op, result) = match rng.random_range(0..10) {
            0..4 => {
                let read =
                    bounded(client.query_one("select v from registers where k = $1", &[&key]))
                        .await
                        .map(|row| row.get::<_, i64>(0));
                if let Ok(v) = read {
                    last_read.insert(key, v);
                }
                let value = read.as_ref().map_or(0, |v| *v);
                (RegisterOp::Read(value), read.map(|_| ()))
            }
            4..7 => {
                let write = bounded(
                    client.execute("update registers set v = $2 where k = $1", &[&key, &fresh]),
                )
                .await;
                (RegisterOp::Write(fresh), write.map(|_| ()))
            }
            _ => {
                let from = last_read.get(&key).copied().unwrap_or(0);
                let swap = bounded(client.execute(
                    "update registers set v = $3 where k = $1 and v = $2",
                    &[&key, &from, &fresh],
                ))
                .await;
                let op = RegisterOp::Cas {
                    from,
                    to: fresh,
                    swapped: swap.as_ref().is_ok_and(|n| *n == 1),
                };
                (op, swap.map(|_| ()))
            }
        };
        let returned = clock.micros();
        let outcome = match result {
            Ok(()) => Outcome::Ok,
            Err(f) => {
                back_off(&mut session, Some(&f)).await;
                f.outcome
            }
        };
        history.tally.add(outcome);
        let returned = match (outcome, op) {
            (Outcome::Ok, _) => Some(returned),
            // A read whose answer never came tells nothing; a failed call did nothing.
            (Outcome::Unknown, RegisterOp::Read(_)) | (Outcome::Failed, _) => continue,
            (Outcome::Unknown, _) => None,
        };
        history.calls.entry(key).or_default().push(Call {
            op,
            invoked,
            returned,
        });
    }
    history
}

async fn set_worker(
    worker: i64,
    mut session: Session,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> SetHistory {
    let mut history = SetHistory::default();
    let mut sequence = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let Some(client) = paced_client(&mut session).await else {
            continue;
        };
        sequence += 1;
        let id = (worker << 32) | sequence;
        let inserted = bounded(client.execute(
            "insert into items values ($1, $2)",
            &[&id, &(worker as i32)],
        ))
        .await;
        match inserted {
            Ok(_) => {
                history.ok.insert(id);
                history.acknowledged_at.push(clock.micros());
            }
            Err(f) => {
                match f.outcome {
                    Outcome::Failed => history.failed.insert(id),
                    _ => history.unknown.insert(id),
                };
                back_off(&mut session, Some(&f)).await;
            }
        }
    }
    history
}

async fn bank_worker(
    worker: i64,
    mut session: Session,
    stop: Arc<AtomicBool>,
    mut rng: StdRng,
) -> BankHistory {
    let mut history = BankHistory::default();
    let mut sequence = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let Some(client) = paced_client(&mut session).await else {
            continue;
        };
        sequence += 1;
        if sequence % 8 == 0 {
            match audit(client).await {
                Ok(Some(violation)) => history.violations.push(violation),
                Ok(None) => history.audits += 1,
                Err(f) => back_off(&mut session, Some(&f)).await,
            }
            continue;
        }
        let from = rng.random_range(1..=ACCOUNTS_PER_BRANCH);
        let transfer = Transfer {
            branch: rng.random_range(1..=BRANCHES),
            id: (worker << 32) | sequence,
            from,
            to: from % ACCOUNTS_PER_BRANCH + 1,
            amount: rng.random_range(1..=5),
        };
        match transfer_once(client, &transfer).await {
            Ok(()) => history.ok.push(transfer),
            Err(f) => {
                match f.outcome {
                    Outcome::Failed => history.failed.push((transfer, f.detail.clone())),
                    _ => history.unknown.push(transfer),
                }
                back_off(&mut session, Some(&f)).await;
            }
        }
    }
    history
}

/// One transfer in one transaction. A failure before COMMIT was sent means it did not
/// happen (the transaction is rolled back, or dies with its connection).
async fn transfer_once(client: &tokio_postgres::Client, t: &Transfer) -> Result<(), Failure> {
    let before_commit = async {
        bounded(client.batch_execute("begin")).await?;
        for (account, delta) in [(t.from, -t.amount), (t.to, t.amount)] {
            bounded(client.execute(
                "update accounts set balance = balance + $3 where branch = $1 and id = $2",
                &[&(t.branch as i32), &(account as i32), &delta],
            ))
            .await?;
        }
        bounded(client.execute(
            "insert into transfers values ($1, $2, $3, $4, $5)",
            &[
                &(t.branch as i32),
                &t.id,
                &(t.from as i32),
                &(t.to as i32),
                &t.amount,
            ],
        ))
        .await
    };
    if let Err(f) = before_commit.await {
        if !f.connection_lost {
            let _ = bounded(client.batch_execute("rollback")).await;
        }
        return Err(Failure {
            outcome: Outcome::Failed,
            detail: format!("before COMMIT: {}", f.detail),
            ..f
        });
    }
    bounded(client.batch_execute("commit")).await
}

/// Reads every branch's total at once; Some(what is wrong) when one is not what it started at.
async fn audit(client: &tokio_postgres::Client) -> Result<Option<String>, Failure> {
    let totals = branch_totals(client).await?;
    let expected = ACCOUNTS_PER_BRANCH * INITIAL_BALANCE;
    let wrong: Vec<_> = totals.iter().filter(|(_, t)| **t != expected).collect();
    Ok((totals.len() as i64 != BRANCHES || !wrong.is_empty())
        .then(|| format!("an audit saw branch totals {totals:?} (each must be {expected})")))
}

/// Each branch's total balance, read in one statement.
pub async fn branch_totals(client: &tokio_postgres::Client) -> Result<BTreeMap<i64, i64>, Failure> {
    let rows = bounded(client.query(
        "select branch::bigint, sum(balance)::bigint from accounts group by branch",
        &[],
    ))
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
