//! pgbench against Shoal: initialization (client- and server-side data generation, VACUUM
//! ANALYZE), then the built-in TPC-B-like and select-only scripts in every protocol mode, with
//! several clients writing the same branch row. Every transaction must succeed (READ COMMITTED
//! writers wait for each other instead of failing), and TPC-B's balances must add up afterwards.

use std::process::{Command, Output};

use shoal_tests::{Node, PASSWORD, USER};

fn pgbench(node: &Node, args: &[&str]) -> Output {
    Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &node.port.to_string(), "-U", USER])
        .args(args)
        .arg("shoal")
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("pgbench runs (postgresql-client-15 is installed by the test command)")
}

fn assert_ran_clean(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "{what} had failures:\n{stdout}\n{stderr}"
    );
    assert!(
        !stderr.contains("ERROR"),
        "{what} reported errors:\n{stderr}"
    );
}

async fn sum(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn tpcb_and_select_only_run_without_failures_in_every_protocol_mode() {
    let node = Node::start();
    // Client-side generation (COPY ... WITH (freeze on)), then server-side generation; each
    // drops and recreates the tables and ends with VACUUM ANALYZE.
    for steps in ["dtgv", "dtGv"] {
        let init = pgbench(&node, &["-i", "-I", steps, "-s", "1"]);
        assert!(
            init.status.success(),
            "pgbench -i -I {steps} failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    for mode in ["simple", "extended", "prepared"] {
        // Without -n pgbench also vacuums and truncates pgbench_history first.
        let tpcb = pgbench(&node, &["-c", "4", "-j", "2", "-t", "8", "-M", mode]);
        assert_ran_clean(&tpcb, &format!("TPC-B -M {mode}"));
        let select_only = pgbench(&node, &["-n", "-S", "-c", "2", "-t", "10", "-M", mode]);
        assert_ran_clean(&select_only, &format!("select-only -M {mode}"));
    }
    let c = node.connect().await;
    // Every transaction added its delta to one account, one teller and the branch: the three
    // totals agree whatever the interleaving. Each run truncates the history first.
    let accounts = sum(&c, "select sum(abalance)::bigint from pgbench_accounts").await;
    let tellers = sum(&c, "select sum(tbalance)::bigint from pgbench_tellers").await;
    let branches = sum(&c, "select sum(bbalance)::bigint from pgbench_branches").await;
    assert_eq!(accounts, tellers);
    assert_eq!(tellers, branches);
    let history = sum(&c, "select count(*) from pgbench_history").await;
    assert_eq!(history, 4 * 8, "the last TPC-B run's transactions");
}
