//! A throwaway PostgreSQL 15 server (Debian's `postgresql-15`) for differential tests: its own
//! data directory, a free loopback port, trust auth, stopped on drop. As root, the server runs
//! as the `postgres` user, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    pub port: u16,
    /// The bootstrap superuser's name.
    pub superuser: String,
    child: Child,
    _dir: tempfile::TempDir,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Starts a server, or returns None when PostgreSQL 15 is not installed.
    pub fn start() -> Option<Postgres> {
        Self::start_as("postgres")
    }

    /// Starts a server whose bootstrap superuser is `superuser`.
    pub fn start_as(superuser: &str) -> Option<Postgres> {
        let bin = PathBuf::from(BIN);
        if !bin.join("postgres").exists() {
            return None;
        }
        let root = is_root();
        let dir = tempfile::tempdir().ok()?;
        let data = dir.path().join("data");
        if root {
            let _ = Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(dir.path())
                .status();
            let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        }
        let status = command(&bin.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "-U",
                superuser,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        assert!(status.success(), "initdb failed");
        // A port picked free can be taken by a parallel test before postgres binds it; then
        // postgres exits and we try another.
        for _ in 0..5 {
            let port = free_port();
            let mut child = command(&bin.join("postgres"), root)
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(dir.path())
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start postgres");
            let mut exited = false;
            // postmaster.pid's status line says "ready" once connections are accepted, which
            // a connect() alone cannot tell apart from someone else listening on the port.
            let ready = crate::wait_until(Duration::from_secs(30), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited || is_ready(&data)
            });
            if ready && !exited {
                return Some(Postgres {
                    port,
                    superuser: superuser.to_string(),
                    child,
                    _dir: dir,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("postgres did not start");
    }

    pub fn conn_string(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={db}",
            self.port, self.superuser
        )
    }

    pub async fn create_database(&self, db: &str) {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_string("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to postgres");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!("create database {db}"))
            .await
            .expect("create database");
    }
}

/// Whether the server in `data` accepts connections (postmaster.pid's last line).
fn is_ready(data: &Path) -> bool {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .map(|pid| pid.lines().any(|l| l.trim() == "ready"))
        .unwrap_or(false)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGTERM through `kill`, since the child may be runuser's.
        let _ = Command::new("pkill")
            .arg("-TERM")
            .arg("-P")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
