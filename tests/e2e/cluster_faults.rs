//! Fault runs (see `shoal_tests::faults`): three nodes and a three-member etcd, each on a host
//! of its own, with registers, a set and a bank running through them while faults are
//! injected; afterwards every invariant must hold and every replica must match its leader.
//!
//! The short schedule runs in CI; `scripts/fault-schedule.sh` runs the long one.

use std::time::Duration;

use shoal_tests::faults::{self, random_schedule, short_schedule};

#[test]
fn every_invariant_holds_through_the_short_fault_schedule() {
    let report = faults::run(3, &short_schedule(), Duration::from_secs(3), 7);
    let text = report.markdown();
    println!("{text}");
    assert!(report.problems.is_empty(), "{text}");
    let h = &report.histories;
    // The run did something: each workload had acknowledged operations on either side of
    // the faults.
    assert!(
        h.set.ok.len() > 100 && h.bank.ok.len() > 50 && h.registers.tally.ok > 100,
        "{text}"
    );
    // Counted since each node's last start (the full restart comes first): the partitions of
    // the killed and the paused nodes changed configurations.
    assert!(
        report.metrics.failovers > 0,
        "partitions failed over: {text}"
    );
    assert!(report.metrics.configuration_changes > 0, "{text}");
}

/// The long schedule: `SHOAL_FAULT_MINUTES` (10) of random faults every ~20 s; the report
/// goes to `SHOAL_FAULT_REPORT` (target/fault-report.md of the workspace) and stdout.
#[test]
#[ignore = "10 minutes; run by scripts/fault-schedule.sh"]
fn every_invariant_holds_through_the_long_fault_schedule() {
    let minutes: u64 = std::env::var("SHOAL_FAULT_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("SHOAL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let every = Duration::from_secs(20);
    let steps = random_schedule(3, Duration::from_secs(minutes * 60), every, seed);
    // Holds last up to 6 s: the quiet after each makes a fault every ~20 s.
    let settle = every - Duration::from_secs(6);
    let report = faults::run(3, &steps, settle, seed);
    let text = format!(
        "# Fault schedule: {minutes} min, seed {seed}\n\n{}",
        report.markdown()
    );
    let path = std::env::var("SHOAL_FAULT_REPORT").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fault-report.md").to_string()
    });
    std::fs::write(&path, &text).expect("write the report");
    println!("{text}\n(written to {path})");
    assert!(report.problems.is_empty(), "{text}");
}
