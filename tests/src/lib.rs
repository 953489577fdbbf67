//! Test harness for Shoal's end-to-end tests: starts real `shoal` processes on free loopback
//! ports with their own data directories, connects real clients, and stops everything on drop.
//!
//! The tests live in `e2e/` (one integration-test binary, so the stack links once). They need
//! the `shoal` binary built first (`cargo build --bin shoal`); set `SHOAL_BIN` to use another.

pub mod cluster;
pub mod compat;
pub mod drivers;
pub mod faults;
pub mod pg;
pub mod slt;
pub mod slt_extended;
pub mod slt_tally;
pub mod tokio_checks;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Password of the bootstrap superuser in every test node.
pub const PASSWORD: &str = "test-password";
pub const USER: &str = "shoal";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("loopback is available")
}

/// The port of a printed `host:port` address (0 when it does not parse).
fn port_of(addr: &str) -> u16 {
    addr.trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// The `shoal` binary of the same build as this executable (target/<profile>/shoal, beside a
/// binary or one level above a test binary in deps/), or `SHOAL_BIN`.
pub fn shoal_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SHOAL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("executable path");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("shoal"))
        .collect();
    candidates
        .iter()
        .find(|bin| bin.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} is missing: run `cargo build --bin shoal` before the tests",
                candidates[candidates.len() - 1].display()
            )
        })
}

/// SIGKILLs the process in `child`, if any, and reaps it.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A running `shoal` node; killed (SIGKILL) when dropped.
pub struct Node {
    /// The address the node listens on (and clients reach it at).
    pub address: String,
    pub port: u16,
    pub metrics_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
    /// Environment variables of the process, on top of the test's (fault injection).
    pub env: Vec<(String, String)>,
    /// The network namespace the process runs in (a host of `faults::net`), if not the test's.
    namespace: Option<String>,
    /// The SQL port asked for; 0 lets the kernel pick a new one at every start.
    wanted_port: u16,
}

impl Node {
    /// Starts a node with SCRAM auth on a fresh data directory.
    pub fn start() -> Node {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Node {
        Self::start_on("127.0.0.1", 0, None, extra)
    }

    /// Starts a node listening for clients on `address:port` (any port for 0; other listeners
    /// always on any port), inside network namespace `namespace` when given.
    pub fn start_on(address: &str, port: u16, namespace: Option<&str>, extra: &[&str]) -> Node {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut node = Node {
            address: address.to_string(),
            port: 0,
            metrics_port: 0,
            data_dir: dir,
            child: None,
            _tmp: Some(tmp),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            namespace: namespace.map(str::to_string),
            wanted_port: port,
        };
        node.spawn();
        node
    }

    /// Starts the process on ports the kernel picks (port 0), so that parallel tests never race
    /// for a port someone else took between "is it free?" and "bind".
    fn spawn(&mut self) {
        let mut cmd = match &self.namespace {
            Some(namespace) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", namespace]).arg(shoal_bin());
                cmd
            }
            None => Command::new(shoal_bin()),
        };
        let listen = format!("{}:{}", self.address, self.wanted_port);
        let any_port = format!("{}:0", self.address);
        cmd.arg("start")
            .args(["--listen", &listen, "--metrics-listen", &any_port])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra)
            .env("SHOAL_PASSWORD", PASSWORD)
            .env("SHOAL_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start shoal");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut metrics_port = 0;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("shoal metrics on ") {
                    metrics_port = port_of(addr);
                } else if let Some(addr) = line.strip_prefix("shoal listening on ") {
                    let _ = tx.send((port_of(addr), metrics_port));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((port, metrics_port)) => {
                self.port = port;
                self.metrics_port = metrics_port;
            }
            Err(_) => {
                let _ = child.kill();
                panic!("shoal did not start listening within 60 s");
            }
        }
        self.child = Some(child);
    }

    /// SIGKILLs the process, as a crash would.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Stops the process with SIGTERM, as an operator would, and waits until it exits; how
    /// long that took. Killed after 30 s.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("shoal did not stop within 30 s of SIGTERM");
    }

    /// Starts the process again after [`Node::stop`], on the same data directory (new ports).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts the process again on the same data directory (new ports).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes the process (SIGSTOP), as a long GC pause or a stalled VM would: it holds its
    /// sockets and state but answers nothing until [`Node::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn conn_string(&self) -> String {
        format!(
            "host={} port={} user={USER} password={PASSWORD} dbname=shoal",
            self.address, self.port
        )
    }

    /// A connected tokio-postgres client (its connection task is spawned).
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_string(), tokio_postgres::NoTls)
            .await
            .expect("connect to shoal");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The rows of a simple query, every value as PostgreSQL's text form (None for NULL).
/// `EXPLAIN sql`, its lines joined into one text.
pub async fn explain(c: &tokio_postgres::Client, sql: &str) -> String {
    texts(c, &format!("explain {sql}"))
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rows the first `FragmentExec` of an `EXPLAIN ANALYZE` output (its lines as one text)
/// received from the nodes that ran it.
pub fn fragment_output_rows(analyzed: &str) -> usize {
    let line = analyzed
        .lines()
        .find(|l| l.contains("FragmentExec"))
        .unwrap_or_else(|| panic!("no fragment in {analyzed}"));
    line.split("output_rows=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no output_rows in {line}"))
}

pub async fn texts(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| match e.as_db_error() {
            Some(db) => panic!("{sql}: {} ({})", db.message(), db.code().code()),
            None => panic!("{sql}: {e}"),
        })
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// An expected row of [`texts`]: every value present.
pub fn row(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The raw HTTP/1.0 response to `GET path` on a loopback port (the metrics endpoint).
pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
