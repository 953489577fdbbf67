//! Real client drivers for the driver tests: a Python virtual environment with the drivers of
//! `tests/drivers/python/requirements.txt`, installed from PyPI on first use and kept under the
//! target directory; pgJDBC from Debian's `libpostgresql-jdbc-java` with `JdbcChecks.java`
//! compiled by the machine's javac. Both programs print one JSON line per check, parsed here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One check of `drivers.py` as it ran against one server.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverCheck {
    pub name: String,
    /// The check's value (compared across servers), or its error text.
    pub outcome: Result<serde_json::Value, String>,
}

pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("drivers/python")
}

/// Debian's pgJDBC jar (42.5.5 on bookworm, the version of the recorded traffic).
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// The venv's python, creating the venv and installing the pinned drivers when the
/// requirements changed since the last install. Panics with pip's output when that fails:
/// the test command runs where PyPI is reachable.
pub fn python_venv(cache_dir: &Path) -> PathBuf {
    let venv = cache_dir.join("driver-venv");
    let python = venv.join("bin/python");
    let requirements = python_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let stamp = venv.join("installed-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return python;
    }
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements));
    std::fs::write(&stamp, wanted).expect("write the venv stamp");
    python
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `drivers.py` against one server; `only` limits it to the named checks.
pub fn run_python_checks(
    python: &Path,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    only: &[&str],
) -> Vec<DriverCheck> {
    run_checks(
        Command::new(python)
            .arg(python_dir().join("drivers.py"))
            .args(["127.0.0.1", &port.to_string(), user, password, db])
            .args(only),
    )
}

/// Compiles `JdbcChecks.java` into `cache_dir` and returns the classpath to run it with.
pub fn jdbc_classpath(cache_dir: &Path) -> String {
    assert!(
        Path::new(JDBC_JAR).exists(),
        "{JDBC_JAR} is missing: run scripts/install-deps.sh (libpostgresql-jdbc-java)"
    );
    let classes = cache_dir.join("jdbc-classes");
    std::fs::create_dir_all(&classes).expect("create the class directory");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("drivers/java/JdbcChecks.java");
    run(Command::new("javac")
        .args(["-cp", JDBC_JAR, "-d"])
        .arg(&classes)
        .arg(source));
    format!("{JDBC_JAR}:{}", classes.display())
}

pub fn run_jdbc_checks(
    classpath: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Vec<DriverCheck> {
    run_checks(
        Command::new("java")
            .args(["-cp", classpath, "JdbcChecks"])
            .args(["127.0.0.1", &port.to_string(), user, password, db]),
    )
}

fn run_checks(cmd: &mut Command) -> Vec<DriverCheck> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd:?} crashed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{cmd:?} printed {line:?}: {e}"));
            let name = v["check"].as_str().unwrap_or_default().to_string();
            let outcome = if v["ok"].as_bool() == Some(true) {
                Ok(v["value"].clone())
            } else {
                Err(v["error"].as_str().unwrap_or_default().to_string())
            };
            DriverCheck { name, outcome }
        })
        .collect()
}

/// The checks listed in `tests/drivers/known_gaps.txt`, with the text Shoal's answer contains.
pub fn known_gaps() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("drivers/known_gaps.txt");
    std::fs::read_to_string(&path)
        .expect("known_gaps.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(" | "))
        .map(|(check, text)| (check.trim().to_string(), text.trim().to_string()))
        .collect()
}

/// What is wrong with the checks as they ran on Shoal, compared with PostgreSQL: a check that
/// fails on PostgreSQL itself, is missing, or differs (unless it is a known gap, which must
/// differ exactly as listed). Empty when all is as expected.
pub fn differences(
    postgres: &[DriverCheck],
    shoal: &[DriverCheck],
    gaps: &[(String, String)],
) -> Vec<String> {
    let mut out = Vec::new();
    for want in postgres {
        if let Err(e) = &want.outcome {
            out.push(format!("{}: fails on PostgreSQL itself: {e}", want.name));
            continue;
        }
        let Some(got) = shoal.iter().find(|a| a.name == want.name) else {
            out.push(format!("{}: did not run on Shoal", want.name));
            continue;
        };
        let gap = gaps.iter().find(|(check, _)| *check == want.name);
        match (gap, got.outcome == want.outcome) {
            (None, true) => {}
            (None, false) => out.push(format!(
                "{}:\n  shoal:    {:?}\n  postgres: {:?}",
                want.name, got.outcome, want.outcome
            )),
            (Some(_), true) => out.push(format!(
                "{}: now behaves as on PostgreSQL: remove it from known_gaps.txt",
                want.name
            )),
            (Some((_, text)), false) => {
                let answer = match &got.outcome {
                    Ok(v) => v.to_string(),
                    Err(e) => e.clone(),
                };
                if !answer.contains(text.as_str()) {
                    out.push(format!(
                        "{}: a known gap, but Shoal's answer no longer contains {text:?}: {answer}",
                        want.name
                    ));
                }
            }
        }
    }
    out
}
