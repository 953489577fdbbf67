//! Differential compatibility checks: the same client traffic against Shoal and a real
//! PostgreSQL 15, compared.
//!
//! Two kinds of checks, each with a stable id:
//! - `<client>/<n>`: the n-th recorded statement of a client (`tests/compat/client_queries.json`,
//!   from psql, pgJDBC, asyncpg, psycopg, pg8000, SQLAlchemy, node-postgres, postgres.js and the
//!   DBeaver/Metabase/Grafana/pgAdmin/pgcli startup queries). Statements of one client run in
//!   order on one connection. A statement with `$n` parameters is prepared (Parse + Describe,
//!   what drivers do first) instead of run. It passes when both servers answer the same way: the
//!   same column names and row count, or the same SQLSTATE. The OIDs that recorded statements
//!   name as literals are replaced by each server's OID for the same relation.
//! - `psql/<command>`: a psql meta-command whose whole output must match PostgreSQL's after the
//!   fields that must differ are masked (ports, sizes, access methods, OIDs).
//!
//! The report (`docs/compatibility.md`) and the baseline of passing checks
//! (`tests/compat/baseline.txt`) are written by `scripts/compat-report.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::slt_tally::Tally;

/// What one server answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Rows { columns: Vec<String>, rows: usize },
    Error { code: String, message: String },
}

impl Answer {
    fn summary(&self) -> String {
        match self {
            Answer::Rows { columns, rows } => format!("{rows} rows of ({})", columns.join(", ")),
            Answer::Error { code, message } => {
                let first_line = message.lines().next().unwrap_or_default();
                format!("error {code}: {first_line}")
            }
        }
    }
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub id: String,
    pub client: String,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
}

pub fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

pub fn schema_sql() -> String {
    std::fs::read_to_string(compat_dir().join("schema.sql")).expect("tests/compat/schema.sql")
}

/// The recorded statements, by client, in recording order.
pub fn client_queries() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(compat_dir().join("client_queries.json"))
        .expect("tests/compat/client_queries.json");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid JSON");
    let mut by_client: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries {
        let (Some(client), Some(sql)) = (e["client"].as_str(), e["sql"].as_str()) else {
            continue;
        };
        by_client
            .entry(client.to_string())
            .or_default()
            .push(sql.to_string());
    }
    by_client
}

fn has_parameters(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    bytes
        .windows(2)
        .any(|w| w[0] == b'$' && w[1].is_ascii_digit())
}

async fn answer(client: &Client, sql: &str) -> Answer {
    let error = |e: tokio_postgres::Error| Answer::Error {
        code: e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| "none".into()),
        message: e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string()),
    };
    if has_parameters(sql) {
        return match client.prepare(sql).await {
            Ok(st) => Answer::Rows {
                columns: st.columns().iter().map(|c| c.name().to_string()).collect(),
                rows: 0,
            },
            Err(e) => error(e),
        };
    }
    match client.simple_query(sql).await {
        Ok(messages) => {
            let (mut columns, mut rows) = (Vec::new(), 0);
            for m in messages {
                match m {
                    SimpleQueryMessage::RowDescription(cols) => {
                        columns = cols.iter().map(|c| c.name().to_string()).collect();
                        rows = 0;
                    }
                    SimpleQueryMessage::Row(_) => rows += 1,
                    _ => {}
                }
            }
            Answer::Rows { columns, rows }
        }
        Err(e) => error(e),
    }
}

/// The OIDs that the schema's relations had where the traffic was recorded: psql, pgJDBC and
/// SQLAlchemy send a relation's OID as a literal once they have looked it up. Each server gets
/// these statements with its own OID for the same relation.
const RECORDED_OIDS: &[(&str, &str, &str)] = &[
    ("16387", "public", "customers"),
    ("16399", "sales", "orders"),
    ("16411", "public", "v_orders"),
];

/// The server's own OID for each relation of [`RECORDED_OIDS`], by recorded OID.
async fn local_oids(client: &Client) -> Vec<(&'static str, String)> {
    let mut oids = Vec::new();
    for (recorded, schema, name) in RECORDED_OIDS {
        let sql = format!(
            "select c.oid::text from pg_catalog.pg_class c join pg_catalog.pg_namespace n \
             on n.oid = c.relnamespace where n.nspname = '{schema}' and c.relname = '{name}'"
        );
        let messages = client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("OID of {schema}.{name}: {e}"));
        let oid = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        });
        let oid = oid.unwrap_or_else(|| panic!("{schema}.{name} has no OID"));
        oids.push((*recorded, oid));
    }
    oids
}

fn with_local_oids(sql: &str, oids: &[(&str, String)]) -> String {
    oids.iter().fold(sql.to_string(), |sql, (recorded, local)| {
        sql.replace(recorded, local)
    })
}

/// A client for `conn` (see [`crate::slt::connect`]); the checks cannot run without one.
pub async fn connect(conn: &str) -> Client {
    crate::slt::connect(conn.to_string())
        .await
        .unwrap_or_else(|e| panic!("connect to {conn}: {e}"))
}

/// Runs every recorded client's statements on both servers and compares the answers.
pub async fn run_client_checks(pg_conn: &str, shoal_conn: &str) -> Vec<CheckResult> {
    let mut results = Vec::new();
    for (client_name, statements) in client_queries() {
        let on_pg = connect(pg_conn).await;
        let on_shoal = connect(shoal_conn).await;
        let (pg_oids, shoal_oids) = (local_oids(&on_pg).await, local_oids(&on_shoal).await);
        for (i, sql) in statements.iter().enumerate() {
            let expected = answer(&on_pg, &with_local_oids(sql, &pg_oids)).await;
            let got = answer(&on_shoal, &with_local_oids(sql, &shoal_oids)).await;
            let passed = match (&expected, &got) {
                (Answer::Error { code: a, .. }, Answer::Error { code: b, .. }) => a == b,
                (a, b) => a == b,
            };
            results.push(CheckResult {
                id: format!("{client_name}/{}", i + 1),
                client: client_name.clone(),
                passed,
                detail: if passed {
                    String::new()
                } else {
                    format!(
                        "PostgreSQL: {}; Shoal: {}",
                        expected.summary(),
                        got.summary()
                    )
                },
            });
        }
    }
    results
}

/// The psql meta-commands compared whole.
pub const PSQL_COMMANDS: &[&str] = &[
    "\\l",
    "\\dn",
    "\\dt",
    "\\d",
    "\\d customers",
    "\\d+ customers",
    "\\d sales.orders",
    "\\d+ v_orders",
    "\\di",
    "\\dv",
    "\\df",
    "\\du",
    "\\dx",
    "\\conninfo",
];

/// psql's output for one command, with the fields that must differ masked.
pub fn psql_output(port: u16, user: &str, password: &str, db: &str, command: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(["-d", db, "-c", command])
        .env("PGPASSWORD", password)
        .output();
    match out {
        Ok(o) => mask(&format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => format!("psql did not run: {e}"),
    }
}

/// Masks what legitimately differs between two servers: port numbers, sizes, OIDs.
fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words: Vec<String> = Vec::new();
        for word in line.split(' ') {
            let bare = word.trim_end_matches(['.', ',']).trim_matches('"');
            let masked = if word.starts_with('"') && bare.parse::<u32>().is_ok() {
                "\"<port>\"".to_string()
            } else {
                word.to_string()
            };
            words.push(masked);
        }
        let line = words.join(" ");
        let line = mask_sizes(&line);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `16 kB`, `8192 bytes`, `0 bytes` become `<size>` (the column keeps its width).
fn mask_sizes(line: &str) -> String {
    let mut result = line.to_string();
    for unit in [" bytes", " kB", " MB"] {
        while let Some(pos) = result.find(unit) {
            let start = result[..pos]
                .rfind(|c: char| !c.is_ascii_digit())
                .map(|p| p + 1)
                .unwrap_or(0);
            if start == pos {
                break;
            }
            result.replace_range(start..pos + unit.len(), "<size>");
        }
    }
    result
}

pub fn run_psql_checks(
    pg_port: u16,
    shoal_port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Vec<CheckResult> {
    PSQL_COMMANDS
        .iter()
        .map(|command| {
            let expected = psql_output(pg_port, user, password, db, command);
            let got = psql_output(shoal_port, user, password, db, command);
            let passed = expected == got;
            CheckResult {
                id: format!("psql/{command}"),
                client: "psql meta-commands".into(),
                passed,
                detail: if passed {
                    String::new()
                } else {
                    first_difference(&expected, &got)
                },
            }
        })
        .collect()
}

fn first_difference(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    for i in 0..e.len().max(g.len()) {
        let (a, b) = (e.get(i).copied(), g.get(i).copied());
        if a != b {
            return format!(
                "line {}: PostgreSQL `{}`; Shoal `{}`",
                i + 1,
                a.unwrap_or("<none>").trim_end(),
                b.unwrap_or("<none>").trim_end()
            );
        }
    }
    String::new()
}

/// The ids of the checks recorded as passing.
pub fn baseline(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

pub fn write_baseline(path: &Path, results: &[CheckResult]) {
    let mut text = String::from(
        "# Compatibility checks that pass; the test suite fails if one of them stops passing.\n\
         # Written by scripts/compat-report.sh.\n",
    );
    for r in results.iter().filter(|r| r.passed) {
        text.push_str(&r.id);
        text.push('\n');
    }
    std::fs::write(path, text).expect("write baseline");
}

/// One `.slt` file's records on each wire engine.
pub struct SltFileResult {
    /// The file as the report names it.
    pub file: String,
    pub simple: Tally,
    pub extended: Tally,
}

/// The report: clients × checks, pass counts, and why each failing check fails.
pub fn report(results: &[CheckResult], slt: &[SltFileResult]) -> String {
    let mut by_client: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in results {
        let e = by_client.entry(&r.client).or_default();
        e.0 += 1;
        if r.passed {
            e.1 += 1;
        }
    }
    let total = results.len();
    let passed = results.iter().filter(|r| r.passed).count();
    let mut md = String::from(
        "# PostgreSQL compatibility report\n\n\
         Generated by `scripts/compat-report.sh`: every check runs against Shoal and against a\n\
         real PostgreSQL 15 started by the test, on the same schema (`tests/compat/schema.sql`).\n\
         A client statement passes when both servers answer alike (same column names and row\n\
         count, or the same SQLSTATE); statements with `$n` parameters are prepared and their\n\
         result columns compared. psql meta-commands pass when the whole output matches, with\n\
         ports and sizes masked. `tests/compat/baseline.txt` lists the passing checks: the test\n\
         suite fails when one of them stops passing.\n\n",
    );
    md.push_str(&format!(
        "**{passed} of {total} checks pass.**\n\n| client | checks | pass | fail |\n|---|---|---|---|\n"
    ));
    for (client, (n, p)) in &by_client {
        md.push_str(&format!("| {client} | {n} | {p} | {} |\n", n - p));
    }
    if !slt.is_empty() {
        let count = |f: fn(&SltFileResult) -> &Tally| -> (usize, usize) {
            slt.iter()
                .map(f)
                .fold((0, 0), |(p, n), t| (p + t.passed(), n + t.run))
        };
        let (simple_pass, simple_run) = count(|r| &r.simple);
        let (extended_pass, extended_run) = count(|r| &r.extended);
        let whole = slt
            .iter()
            .filter(|r| r.simple.failures.is_empty() && r.extended.failures.is_empty())
            .count();
        md.push_str(&format!(
            "\n## sqllogictest files\n\n{whole} of {} files pass whole on both wire engines. \
             Records passing: {simple_pass} of {simple_run} over the simple protocol, \
             {extended_pass} of {extended_run} over the extended protocol (binary results).\n\n\
             | file | simple | extended | first failure |\n|---|---|---|---|\n",
            slt.len()
        ));
        for r in slt {
            let first = r
                .simple
                .failures
                .first()
                .or(r.extended.failures.first())
                .map(|e| {
                    // The runner's message names the failing record; its first lines say why.
                    let why: String = e
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ");
                    why.replace('|', "\\|")
                        .chars()
                        .take(200)
                        .collect::<String>()
                })
                .unwrap_or_default();
            md.push_str(&format!(
                "| {} | {} / {} | {} / {} | {first} |\n",
                r.file,
                r.simple.passed(),
                r.simple.run,
                r.extended.passed(),
                r.extended.run
            ));
        }
    }
    md.push_str("\n## Failing checks\n\n| check | difference |\n|---|---|\n");
    for r in results.iter().filter(|r| !r.passed) {
        let detail = r.detail.replace('|', "\\|").replace('\n', " ");
        let detail: String = detail.chars().take(300).collect();
        md.push_str(&format!(
            "| `{}` | {} |\n",
            r.id.replace('|', "\\|"),
            detail
        ));
    }
    md
}
