//! Client compatibility, proven against a real PostgreSQL 15: recorded client traffic and psql
//! meta-commands run on both (see `shoal_tests::compat`). Checks listed as passing in
//! `tests/compat/baseline.txt` must keep passing. With `SHOAL_COMPAT_REPORT=<file>` (what
//! `scripts/compat-report.sh` sets) the report and the baseline are written instead.

use std::path::{Path, PathBuf};

use shoal_tests::compat::{self, CheckResult, SltFileResult};
use shoal_tests::slt_tally::{tally_file, Engine, Tally};
use shoal_tests::{pg::Postgres, Node, PASSWORD, USER};

use crate::slt_files::slt_files;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_answer_like_postgres() {
    // The reference server's bootstrap superuser has the name of Shoal's, and it keeps only
    // the databases Shoal has (`postgres` and `shoal`; Shoal has no template databases), so
    // that role and database listings compare.
    let Some(pg) = Postgres::start_as(USER) else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have PostgreSQL 15 installed (/usr/lib/postgresql/15/bin)"
        );
        return;
    };
    // The same user and database names on both sides, so that owners and names match.
    let admin = compat::connect(&pg.conn_string("postgres")).await;
    for sql in [
        format!("alter role {USER} password '{PASSWORD}'"),
        "create database shoal".to_string(),
        "alter database template0 is_template false".to_string(),
        "alter database template1 is_template false".to_string(),
        "drop database template0".to_string(),
        "drop database template1".to_string(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let pg_conn = format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname=shoal",
        pg.port
    );
    let node = Node::start();
    let schema = compat::schema_sql();
    for conn in [pg_conn.as_str(), &node.conn_string()] {
        compat::connect(conn)
            .await
            .batch_execute(&schema)
            .await
            .unwrap_or_else(|e| panic!("schema on {conn}: {e}"));
    }
    let mut results: Vec<CheckResult> =
        compat::run_client_checks(&pg_conn, &node.conn_string()).await;
    results.extend(compat::run_psql_checks(
        pg.port, node.port, USER, PASSWORD, "shoal",
    ));

    let baseline_path = compat::compat_dir().join("baseline.txt");
    if let Ok(report_path) = std::env::var("SHOAL_COMPAT_REPORT") {
        let slt = slt_results().await;
        std::fs::write(&report_path, compat::report(&results, &slt)).unwrap();
        compat::write_baseline(&baseline_path, &results);
        return;
    }
    // What still differs, for whoever runs this with --nocapture.
    for r in results.iter().filter(|r| !r.passed) {
        eprintln!("differs: {}: {}", r.id, r.detail);
    }
    let regressions: Vec<String> = compat::baseline(&baseline_path)
        .into_iter()
        .filter_map(|id| match results.iter().find(|r| r.id == id) {
            Some(r) if r.passed => None,
            Some(r) => Some(format!("{id}: {}", r.detail)),
            None => Some(format!("{id}: no longer checked")),
        })
        .collect();
    assert!(
        regressions.is_empty(),
        "checks that passed before fail now:\n{}",
        regressions.join("\n")
    );
}

/// Every `.slt` file of `tests/slt` and, when present, of the shared SQLite corpus
/// (`../shared/slt`), run record by record through both wire engines on a fresh node each.
async fn slt_results() -> Vec<SltFileResult> {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/slt");
    let mut files: Vec<(String, PathBuf)> = slt_files()
        .into_iter()
        .map(|f| (format!("tests/slt/{}", name(&f)), f))
        .collect();
    let mut corpus = Vec::new();
    collect_tests(&shared, &mut corpus);
    corpus.sort();
    for f in corpus {
        let shown = f.strip_prefix(&shared).unwrap_or(&f).display().to_string();
        files.push((format!("shared/slt/{shown}"), f));
    }
    let mut results = Vec::new();
    for (shown, file) in files {
        // The two engines on two nodes at once: the shared corpus takes long enough to matter.
        let (simple_node, extended_node) = (Node::start(), Node::start());
        let (simple, extended) = tokio::join!(
            tally_file(simple_node.conn_string(), &file, Engine::Simple),
            tally_file(extended_node.conn_string(), &file, Engine::Extended)
        );
        // The runner names the file by its absolute path; the report names it as shown.
        let full = file.display().to_string();
        let shown_in = |mut t: Tally| {
            t.failures = t
                .failures
                .iter()
                .map(|e| e.replace(&full, &shown))
                .collect();
            t
        };
        results.push(SltFileResult {
            file: shown.clone(),
            simple: shown_in(simple),
            extended: shown_in(extended),
        });
    }
    results
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn collect_tests(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_tests(&p, out);
        } else if p.extension().is_some_and(|x| x == "test") {
            out.push(p);
        }
    }
}
