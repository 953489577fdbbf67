//! `slt-survey [--extended] [--jobs N] FILE...`: runs each `.slt` file on a fresh Shoal node
//! (the `shoal` binary of the same build, or `SHOAL_BIN`), record by record, and prints how
//! many records pass and the distinct errors of those that do not. For finding what the
//! SQLite corpus still trips on without waiting for the whole compatibility report:
//!
//! ```text
//! cargo build --release --bin shoal --bin slt-survey
//! target/release/slt-survey ../shared/slt/select1.test ../shared/slt/evidence/*.test
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use shoal_tests::slt_tally::{tally_file, Engine};
use shoal_tests::Node;
use tokio::sync::Semaphore;

/// Distinct failures shown per file.
const SHOWN_FAILURES: usize = 8;

#[tokio::main]
async fn main() {
    let mut engine = Engine::Simple;
    let mut jobs = 1;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--extended" => engine = Engine::Extended,
            "--jobs" => {
                jobs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage("--jobs takes a number"))
            }
            _ if arg.starts_with("--") => usage(&format!("unknown option {arg}")),
            _ => files.push(PathBuf::from(arg)),
        }
    }
    if files.is_empty() {
        usage("no files given");
    }
    let permits = Arc::new(Semaphore::new(jobs));
    let mut tasks = Vec::new();
    for file in files {
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let node = Node::start();
            let started = std::time::Instant::now();
            let tally = tally_file(node.conn_string(), &file, engine).await;
            (file, tally, started.elapsed())
        }));
    }
    let (mut run, mut passed) = (0, 0);
    for task in tasks {
        let Ok((file, tally, took)) = task.await else {
            continue;
        };
        run += tally.run;
        passed += tally.passed();
        println!(
            "{}: {} of {} records pass ({:.1} s)",
            file.display(),
            tally.passed(),
            tally.run,
            took.as_secs_f64()
        );
        // Each kind of failure once, with the first record that showed it and how often.
        let mut distinct: Vec<(String, usize)> = Vec::new();
        for failure in &tally.failures {
            let head: String = failure.lines().take(6).collect::<Vec<_>>().join("\n    ");
            match distinct.iter_mut().find(|(d, _)| same_error(d, &head)) {
                Some((_, n)) => *n += 1,
                None => distinct.push((head, 1)),
            }
        }
        for (d, n) in distinct.iter().take(SHOWN_FAILURES) {
            println!("  - ({n}x) {d}");
        }
        if distinct.len() > SHOWN_FAILURES {
            println!(
                "  ... {} more distinct failures",
                distinct.len() - SHOWN_FAILURES
            );
        }
    }
    println!("total: {passed} of {run} records pass");
}

/// Two failures are the same kind when their first line agrees up to the `[SQL]` part.
fn same_error(a: &str, b: &str) -> bool {
    let key = |s: &str| {
        let first = s.lines().next().unwrap_or_default();
        first.split("[SQL]").next().unwrap_or_default().to_string()
    };
    key(a) == key(b)
}

fn usage(why: &str) -> ! {
    eprintln!("slt-survey: {why}\nusage: slt-survey [--extended] [--jobs N] FILE...");
    std::process::exit(2);
}
