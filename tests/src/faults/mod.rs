//! The fault harness: a Shoal cluster on hosts of their own (network namespaces on one
//! machine), a three-member etcd, workloads whose every outcome is recorded, faults injected
//! on a schedule, and checks of the invariants once the faults are healed. In the manner of
//! Jepsen: the checks look only at what clients were told and what the database holds at the
//! end, never at Shoal's internals.
//!
//! [`run`] drives a whole run and returns its [`Report`]; `e2e/cluster_faults.rs` runs the
//! short schedule in CI and `scripts/fault-schedule.sh` a long random one.

pub mod checks;
pub mod etcd;
pub mod history;
pub mod linearizable;
pub mod net;
pub mod workloads;

use std::fmt::Write as _;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Node;
use etcd::EtcdCluster;
use history::Clock;
use net::{Host, Network};
use workloads::Workers;

/// Seconds of the nodes' leases (as in the other cluster tests).
const LEASE_TTL_SECS: &str = "2";
const SQL_PORT: u16 = 5432;

/// A fault, held for a while and then healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL node i; it starts again when the fault is healed.
    KillNode(usize),
    /// SIGSTOP node i; SIGCONT when healed.
    PauseNode(usize),
    /// Drop every packet between nodes i and j.
    CutNodes(usize, usize),
    /// Drop every packet between node i and every etcd member.
    CutFromEtcd(usize),
    /// SIGKILL an etcd member that does not lead.
    KillEtcdFollower,
    /// SIGKILL the member etcd's leader is on now.
    KillEtcdLeader,
    /// SIGKILL every node; all start again when healed.
    RestartCluster,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::KillNode(i) => write!(f, "SIGKILL node {}", i + 1),
            Fault::PauseNode(i) => write!(f, "SIGSTOP node {}", i + 1),
            Fault::CutNodes(i, j) => write!(f, "partition node {} | node {}", i + 1, j + 1),
            Fault::CutFromEtcd(i) => write!(f, "partition node {} | etcd", i + 1),
            Fault::KillEtcdFollower => write!(f, "SIGKILL an etcd follower"),
            Fault::KillEtcdLeader => write!(f, "SIGKILL the etcd leader"),
            Fault::RestartCluster => write!(f, "SIGKILL and restart every node"),
        }
    }
}

/// One fault of a schedule: what, and for how long before it is healed.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub fault: Fault,
    pub hold: Duration,
}

/// The short schedule: every kind of fault once (the full restart first, so that the nodes'
/// counters see the rest), pauses shorter and longer than the lease.
pub fn short_schedule() -> Vec<Step> {
    let step = |fault, ms| Step {
        fault,
        hold: Duration::from_millis(ms),
    };
    vec![
        step(Fault::RestartCluster, 500),
        step(Fault::KillNode(2), 3_000),
        step(Fault::PauseNode(1), 800),
        step(Fault::PauseNode(0), 4_000),
        step(Fault::CutNodes(0, 2), 4_000),
        step(Fault::CutFromEtcd(1), 4_000),
        step(Fault::KillEtcdFollower, 3_000),
        step(Fault::KillEtcdLeader, 3_000),
    ]
}

/// A random schedule lasting about `total`, one fault every ~`every` (its hold included).
pub fn random_schedule(nodes: usize, total: Duration, every: Duration, seed: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut planned = Duration::ZERO;
    while planned < total {
        let node = rng.random_range(0..nodes);
        let other = (node + rng.random_range(1..nodes)) % nodes;
        let fault = match rng.random_range(0..12) {
            0..3 => Fault::KillNode(node),
            3..6 => Fault::PauseNode(node),
            6..8 => Fault::CutNodes(node, other),
            8..10 => Fault::CutFromEtcd(node),
            10 => Fault::KillEtcdLeader,
            _ => match rng.random_bool(0.5) {
                true => Fault::KillEtcdFollower,
                false => Fault::RestartCluster,
            },
        };
        let hold = Duration::from_millis(rng.random_range(500..=6_000));
        steps.push(Step { fault, hold });
        planned += every;
    }
    steps
}

/// The hosts, the etcd members and the nodes. Dropping it kills every process, then deletes
/// the namespaces.
pub struct FaultCluster {
    pub nodes: Vec<Node>,
    pub node_hosts: Vec<Host>,
    pub etcd: EtcdCluster,
    pub network: Network,
}

impl FaultCluster {
    /// Three etcd members and `n` nodes (ids 1..=n), each on its own host.
    pub fn start(n: usize) -> FaultCluster {
        let mut network = Network::new();
        let etcd = EtcdCluster::start(&mut network, 3);
        network.run(etcd.wait_for_leader());
        let node_hosts: Vec<Host> = (1..=n)
            .map(|i| network.add_host(&format!("node{i}")))
            .collect();
        let endpoints = etcd.endpoints();
        let nodes = node_hosts
            .iter()
            .map(|host| {
                let flight = format!("{}:0", host.address);
                Node::start_on(
                    &host.address,
                    SQL_PORT,
                    Some(&host.namespace),
                    &[
                        "--etcd",
                        &endpoints,
                        "--cluster-name",
                        "faults",
                        "--lease-ttl-secs",
                        LEASE_TTL_SECS,
                        "--flight-listen",
                        &flight,
                    ],
                )
            })
            .collect();
        FaultCluster {
            nodes,
            node_hosts,
            etcd,
            network,
        }
    }

    /// Every node's connection string (fixed: a node keeps its address and port).
    pub fn targets(&self) -> Vec<String> {
        self.nodes.iter().map(Node::conn_string).collect()
    }

    /// Injects `step.fault`, holds it, heals it. Returns what was done, in words.
    async fn inject(&mut self, step: Step) -> String {
        let mut what = step.fault.to_string();
        match step.fault {
            Fault::KillNode(i) => self.nodes[i].kill(),
            Fault::PauseNode(i) => self.nodes[i].pause(),
            Fault::CutNodes(i, j) => self.network.cut(&self.node_hosts[i], &self.node_hosts[j]),
            Fault::CutFromEtcd(i) => {
                for member in &self.etcd.members {
                    self.network.cut(&self.node_hosts[i], &member.host);
                }
            }
            Fault::KillEtcdLeader | Fault::KillEtcdFollower => {
                let leader = self.etcd.wait_for_leader().await;
                let victim = match step.fault {
                    Fault::KillEtcdLeader => leader,
                    _ => (leader + 1) % self.etcd.members.len(),
                };
                self.etcd.kill(victim);
                let _ = write!(what, " (e{})", victim + 1);
            }
            Fault::RestartCluster => self.nodes.iter_mut().for_each(Node::kill),
        }
        tokio::time::sleep(step.hold).await;
        match step.fault {
            Fault::KillNode(i) => tokio::task::block_in_place(|| self.nodes[i].start_again()),
            Fault::PauseNode(i) => self.nodes[i].resume(),
            Fault::CutNodes(..) | Fault::CutFromEtcd(_) => self.network.heal(),
            Fault::KillEtcdLeader | Fault::KillEtcdFollower => {
                for i in 0..self.etcd.members.len() {
                    if !self.etcd.members[i].is_running() {
                        self.etcd.restart(i);
                    }
                }
                self.etcd.wait_for_leader().await;
            }
            Fault::RestartCluster => tokio::task::block_in_place(|| {
                // Started together, as after a power cut: each waits for etcd, not for the
                // others.
                std::thread::scope(|scope| {
                    for node in self.nodes.iter_mut() {
                        scope.spawn(move || node.start_again());
                    }
                });
            }),
        }
        what
    }
}

/// A fault as it happened: when (µs since the run began), what, for how long, and the
/// longest time after it began during which no insert was acknowledged.
pub struct Injected {
    pub at: u64,
    pub what: String,
    pub hold: Duration,
    pub longest_pause: Duration,
}

/// What a run did and found.
pub struct Report {
    pub nodes: usize,
    pub duration: Duration,
    pub injected: Vec<Injected>,
    pub histories: workloads::Histories,
    pub metrics: checks::MetricSums,
    /// Every invariant that did not hold, in words; empty when all held.
    pub problems: Vec<String>,
}

/// Starts a cluster of `nodes`, runs the workloads through `steps` (with `settle` of quiet
/// before, between and after faults), heals everything, waits for every partition to have its
/// replicas back, and checks the invariants.
pub fn run(nodes: usize, steps: &[Step], settle: Duration, seed: u64) -> Report {
    let mut cluster = FaultCluster::start(nodes);
    let path = cluster.network.switch_path();
    net::run_in_namespace(&path, async {
        let setup = cluster.nodes[0].connect().await;
        workloads::create_tables(&setup).await;
        drop(setup);
        let clock = Clock::start();
        let workers = Workers::start(&cluster.targets(), 2, clock, seed);
        let mut injected = Vec::new();
        tokio::time::sleep(settle).await;
        for step in steps {
            let at = clock.micros();
            let what = cluster.inject(*step).await;
            injected.push(Injected {
                at,
                what,
                hold: step.hold,
                longest_pause: Duration::ZERO,
            });
            tokio::time::sleep(settle).await;
        }
        // Quiet first: a follower's log position matches its leader's only between commits.
        let mut histories = workers.finish().await;
        let mut problems = Vec::new();
        if let Err(e) = checks::wait_for_replicas(&cluster).await {
            problems.push(e);
        }
        let duration = Duration::from_micros(clock.micros());
        for (i, fault) in injected.iter_mut().enumerate() {
            let until = injected_end(steps, i, fault.at, settle);
            fault.longest_pause =
                checks::longest_pause(&histories.set.acknowledged_at, fault.at, until);
        }
        problems.extend(checks::final_checks(&cluster, &mut histories, clock).await);
        let metrics = checks::metric_sums(&cluster).await;
        Report {
            nodes,
            duration,
            injected,
            histories,
            metrics,
            problems,
        }
    })
}

/// Where a fault's window of observation ends: the next fault's start (or the settle after).
fn injected_end(steps: &[Step], i: usize, at: u64, settle: Duration) -> u64 {
    at + (steps[i].hold + settle).as_micros() as u64
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let h = &self.histories;
        let _ = writeln!(
            out,
            "{} nodes, 3 etcd members, lease {LEASE_TTL_SECS} s; ran {:.0} s with {} faults. \
             Summed over the nodes' /metrics (each since its last start): {} failovers, {} \
             re-created replicas, {} configuration changes.\n",
            self.nodes,
            self.duration.as_secs_f64(),
            self.injected.len(),
            self.metrics.failovers,
            self.metrics.replicas_added,
            self.metrics.configuration_changes
        );
        let _ = writeln!(
            out,
            "| at (s) | fault | held | longest pause in acknowledged inserts |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        for f in &self.injected {
            let _ = writeln!(
                out,
                "| {:.1} | {} | {:.1} s | {:.2} s |",
                f.at as f64 / 1e6,
                f.what,
                f.hold.as_secs_f64(),
                f.longest_pause.as_secs_f64()
            );
        }
        let _ = writeln!(out, "\n| workload | outcomes | check |");
        let _ = writeln!(out, "|---|---|---|");
        let _ = writeln!(
            out,
            "| registers ({} keys) | {} | linearizable per key |",
            workloads::REGISTER_KEYS,
            h.registers.tally
        );
        let _ = writeln!(
            out,
            "| set | {} ok, {} failed, {} unknown | every acknowledged id present, no failed one |",
            h.set.ok.len(),
            h.set.failed.len(),
            h.set.unknown.len()
        );
        let _ = writeln!(
            out,
            "| bank | {} ok, {} failed, {} unknown; {} audits | totals constant, transfers logged |",
            h.bank.ok.len(),
            h.bank.failed.len(),
            h.bank.unknown.len(),
            h.bank.audits
        );
        if self.problems.is_empty() {
            let _ = writeln!(
                out,
                "\nEvery invariant held, and every replica matched its leader."
            );
        } else {
            let _ = writeln!(out, "\n**Invariants that did not hold:**\n");
            for p in &self.problems {
                let _ = writeln!(out, "- {p}");
            }
        }
        out
    }
}
