//! The drivers applications use, installed for real and run against Shoal and a real
//! PostgreSQL 15: psycopg2, psycopg 3, asyncpg, pg8000 and SQLAlchemy (`drivers.py`), and
//! pgJDBC (`JdbcChecks.java`), and tokio-postgres (`shoal_tests::tokio_checks`). Every check
//! must pass on both servers and return the same values, except the known gaps of
//! `tests/drivers/known_gaps.txt`, which must differ exactly as listed.

use std::path::Path;

use shoal_tests::drivers::{
    differences, jdbc_classpath, known_gaps, python_venv, run_jdbc_checks, run_python_checks,
};
use shoal_tests::tokio_checks::run_tokio_postgres_checks;
use shoal_tests::{pg::Postgres, Node, PASSWORD, USER};

fn cache_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn reference_postgres() -> Postgres {
    Postgres::start().unwrap_or_else(|| {
        panic!("PostgreSQL 15 is needed (/usr/lib/postgresql/15/bin): run scripts/install-deps.sh")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_behave_as_on_postgres() {
    let python = python_venv(cache_dir());
    let pg = reference_postgres();
    pg.create_database("drivers").await;
    // `SHOAL_DRIVER_CHECKS=a,b` runs only those checks, for debugging one driver.
    let only_var = std::env::var("SHOAL_DRIVER_CHECKS").unwrap_or_default();
    let only: Vec<&str> = only_var.split(',').filter(|s| !s.is_empty()).collect();
    let expected = run_python_checks(&python, pg.port, "postgres", "unused", "drivers", &only);
    assert!(!expected.is_empty(), "drivers.py ran no checks");
    let node = Node::start();
    let actual = run_python_checks(&python, node.port, USER, PASSWORD, "shoal", &only);
    let diff = differences(&expected, &actual, &known_gaps());
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_behaves_as_on_postgres() {
    let classpath = jdbc_classpath(cache_dir());
    let pg = reference_postgres();
    pg.create_database("drivers").await;
    let expected = run_jdbc_checks(&classpath, pg.port, "postgres", "unused", "drivers");
    assert_eq!(
        expected.len(),
        5,
        "JdbcChecks ran every check: {expected:?}"
    );
    let node = Node::start();
    let actual = run_jdbc_checks(&classpath, node.port, USER, PASSWORD, "shoal");
    let diff = differences(&expected, &actual, &known_gaps());
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_behaves_as_on_postgres() {
    let pg = reference_postgres();
    pg.create_database("drivers").await;
    let expected = run_tokio_postgres_checks(&pg.conn_string("drivers")).await;
    let node = Node::start();
    let actual = run_tokio_postgres_checks(&node.conn_string()).await;
    let diff = differences(&expected, &actual, &known_gaps());
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}
