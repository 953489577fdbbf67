//! Clusters for tests: a real etcd (Debian's `etcd-server`) on loopback ports, and Shoal nodes
//! that join it. Everything is stopped when dropped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, kill_child, wait_until, Node};

/// A one-member etcd on loopback; killed when dropped.
pub struct Etcd {
    pub client_url: String,
    peer_url: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// `etcd` from PATH or Debian's location, or `ETCD_BIN`.
pub(crate) fn etcd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ETCD_BIN") {
        return PathBuf::from(p);
    }
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

fn spawn_etcd(dir: &std::path::Path, client_url: &str, peer_url: &str) -> Child {
    Command::new(etcd_bin())
        .args(["--name", "e1", "--data-dir"])
        .arg(dir)
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &format!("e1={peer_url}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd (apt-get install etcd-server)")
}

fn port_in(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Whether `child` runs and its client port accepts connections, within 20 s.
fn etcd_up(child: &mut Child, client_url: &str) -> bool {
    let port = port_in(client_url);
    wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(None)) && TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}

impl Etcd {
    pub fn start() -> Etcd {
        // etcd cannot report a port it picked itself: pick two, and try again if another
        // process took one between the check and etcd's bind.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let client_url = format!("http://127.0.0.1:{}", free_port());
            let peer_url = format!("http://127.0.0.1:{}", free_port());
            let mut child = spawn_etcd(dir.path(), &client_url, &peer_url);
            if etcd_up(&mut child, &client_url) {
                return Etcd {
                    client_url,
                    peer_url,
                    child: Some(child),
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("etcd did not start");
    }

    /// SIGKILLs etcd, as a crash would.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// The keys etcd holds that contain `part`.
    pub async fn keys_containing(&self, part: &str) -> Vec<String> {
        let mut client = etcd_client::Client::connect([self.client_url.as_str()], None)
            .await
            .expect("connect to etcd");
        let response = client
            .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
            .await
            .expect("read etcd");
        response
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter(|k| k.contains(part))
            .map(str::to_string)
            .collect()
    }

    /// Starts etcd again on its data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        let mut child = spawn_etcd(self.dir.path(), &self.client_url, &self.peer_url);
        assert!(etcd_up(&mut child, &self.client_url), "etcd restarts");
        self.child = Some(child);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Seconds of the nodes' leases in test clusters: a killed node is down this long after.
pub const LEASE_TTL_SECS: u64 = 2;

/// `n` nodes joined to `etcd` (started one after the other, so node ids are 1..=n).
pub fn start_nodes(etcd: &Etcd, n: usize) -> Vec<Node> {
    (0..n).map(|_| join(etcd)).collect()
}

/// One more node joined to `etcd`.
pub fn join(etcd: &Etcd) -> Node {
    let ttl = LEASE_TTL_SECS.to_string();
    Node::start_with(&[
        "--etcd",
        &etcd.client_url,
        "--cluster-name",
        "test",
        "--lease-ttl-secs",
        &ttl,
        "--flight-listen",
        "127.0.0.1:0",
    ])
}
