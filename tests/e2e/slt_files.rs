//! Runs the `.slt` files in `tests/slt/` over the wire against Shoal, and against a real
//! PostgreSQL 15 started here (when installed) to prove the expected results are
//! PostgreSQL's.

use std::path::PathBuf;

use shoal_tests::slt::{connect, SimpleDb};
use shoal_tests::slt_extended::ExtendedDb;
use shoal_tests::{pg::Postgres, Node};

pub(crate) fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

pub(crate) async fn run_file(conn: String, file: &PathBuf) -> Result<(), String> {
    run_or_bless(conn, file, false).await
}

/// The same file through the extended protocol (binary results).
pub(crate) async fn run_file_extended(conn: String, file: &PathBuf) -> Result<(), String> {
    let mut runner = sqllogictest::Runner::new(move || {
        let conn = conn.clone();
        async move {
            Ok(ExtendedDb {
                client: connect(conn).await?,
            })
        }
    });
    runner.add_label("postgresql");
    runner
        .run_file_async(file)
        .await
        .map_err(|e| format!("{} (extended): {e}", file.display()))
}

/// With `bless`, rewrites the file's expected results with what the server returns (used
/// against PostgreSQL only: `SHOAL_SLT_BLESS=1 cargo test slt_files_pass_on_postgres`).
async fn run_or_bless(conn: String, file: &PathBuf, bless: bool) -> Result<(), String> {
    let mut runner = sqllogictest::Runner::new(move || {
        let conn = conn.clone();
        async move {
            Ok(SimpleDb {
                client: connect(conn).await?,
            })
        }
    });
    runner.add_label("postgresql");
    if bless {
        return runner
            .update_test_file(
                file,
                "\t",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| format!("{}: {e}", file.display()));
    }
    runner
        .run_file_async(file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass_on_shoal() {
    let mut failures = Vec::new();
    for file in slt_files() {
        let node = Node::start();
        if let Err(e) = run_file(node.conn_string(), &file).await {
            failures.push(e);
        }
        let node = Node::start();
        if let Err(e) = run_file_extended(node.conn_string(), &file).await {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass_on_postgres() {
    let Some(pg) = Postgres::start() else {
        // Without a local PostgreSQL 15 the expected results cannot be re-checked here; CI
        // installs it, so there this test always runs.
        assert!(
            std::env::var("CI").is_err(),
            "CI must have PostgreSQL 15 installed (/usr/lib/postgresql/15/bin)"
        );
        return;
    };
    let mut failures = Vec::new();
    for (i, file) in slt_files().into_iter().enumerate() {
        let db = format!("slt_{i}");
        pg.create_database(&db).await;
        let bless = std::env::var("SHOAL_SLT_BLESS").is_ok();
        if let Err(e) = run_or_bless(pg.conn_string(&db), &file, bless).await {
            failures.push(e);
        }
        let db = format!("slt_ext_{i}");
        pg.create_database(&db).await;
        if let Err(e) = run_file_extended(pg.conn_string(&db), &file).await {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The shared SQLite corpus blessed on PostgreSQL (`../shared/slt`), when present. Listed in
/// `SHOAL_SHARED_SLT` (comma-separated paths relative to it) to run a subset by hand; the
/// compatibility issue makes every file pass and adds it to CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by hand: SHOAL_SHARED_SLT=select1.test cargo test -- --ignored shared_slt"]
async fn shared_slt() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/slt");
    let list = std::env::var("SHOAL_SHARED_SLT").unwrap_or_else(|_| "select1.test".into());
    let mut failures = Vec::new();
    for f in list.split(',') {
        let node = Node::start();
        if let Err(e) = run_file(node.conn_string(), &root.join(f)).await {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
