//! Clusters for tests: a real etcd (Debian's `etcd-server`) on loopback ports, and Shoal nodes
//! that join it. Everything is stopped when dropped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until, Node};

/// A one-member etcd on loopback; killed when dropped.
pub struct Etcd {
    pub client_url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// `etcd` from PATH or Debian's location, or `ETCD_BIN`.
fn etcd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ETCD_BIN") {
        return PathBuf::from(p);
    }
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

impl Etcd {
    pub fn start() -> Etcd {
        // etcd cannot report a port it picked itself: pick two, and try again if another
        // process took one between the check and etcd's bind.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut child = Command::new(etcd_bin())
                .args(["--name", "e1", "--data-dir"])
                .arg(dir.path())
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("e1={peer_url}")])
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd (apt-get install etcd-server)");
            let up = wait_until(Duration::from_secs(20), || {
                matches!(child.try_wait(), Ok(None))
                    && TcpStream::connect(("127.0.0.1", client)).is_ok()
            });
            if up {
                return Etcd {
                    client_url,
                    child,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("etcd did not start");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
