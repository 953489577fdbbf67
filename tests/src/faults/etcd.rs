//! A three-member etcd cluster, one member per host of a [`Network`], so that a member can be
//! killed, or cut off, on its own.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::net::{Host, Network};
use crate::cluster::etcd_bin;
use crate::kill_child;

/// One member: its host, data directory and process (None while killed).
pub struct EtcdMember {
    pub host: Host,
    pub name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    initial_cluster: String,
    token: String,
}

impl EtcdMember {
    pub fn client_url(&self) -> String {
        format!("http://{}:2379", self.host.address)
    }

    fn peer_url(&self) -> String {
        format!("http://{}:2380", self.host.address)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl EtcdCluster {
    /// Starts `n` members on new hosts of `network` (named etcd1..). Members find each other
    /// by their fixed peer addresses; the cluster is usable once a leader is elected, which
    /// [`EtcdCluster::wait_for_leader`] waits for.
    pub fn start(network: &mut Network, n: usize) -> EtcdCluster {
        let members: Vec<EtcdMember> = (1..=n)
            .map(|i| EtcdMember {
                host: network.add_host(&format!("etcd{i}")),
                name: format!("e{i}"),
                dir: tempfile::tempdir().expect("temp dir"),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token: format!("shoal-faults-{}", std::process::id()),
        };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster
    }

    fn start_member(&mut self, i: usize) {
        let member = &self.members[i];
        let child = Command::new("ip")
            .args(["netns", "exec", &member.host.namespace])
            .arg(etcd_bin())
            .args(["--name", &member.name, "--data-dir"])
            .arg(member.dir.path())
            .args(["--listen-client-urls", &member.client_url()])
            .args(["--advertise-client-urls", &member.client_url()])
            .args(["--listen-peer-urls", &member.peer_url()])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Every member's client URL, as Shoal's `--etcd` takes them.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(EtcdMember::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        kill_child(&mut self.members[i].child);
    }

    /// Starts member `i` again on its data directory (it rejoins as the member it was).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.start_member(i);
    }

    /// The index of the member that leads now, asked of each running member; waits up to
    /// 20 s for one (an election takes about a second). Must run inside [`Network::run`].
    pub async fn wait_for_leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(leader) = self.leader().await {
                return leader;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd elected no leader in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn leader(&self) -> Option<usize> {
        for member in self.members.iter().filter(|m| m.is_running()) {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_millis(500));
            let Ok(mut client) =
                etcd_client::Client::connect([member.client_url()], Some(options)).await
            else {
                continue;
            };
            let Ok(status) = client.status().await else {
                continue;
            };
            let leader_id = status.leader();
            if leader_id == 0 {
                continue;
            }
            let Ok(list) = client.member_list().await else {
                continue;
            };
            let name = list
                .members()
                .iter()
                .find(|m| m.id() == leader_id)
                .map(|m| m.name().to_string())?;
            return self.members.iter().position(|m| m.name == name);
        }
        None
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            kill_child(&mut member.child);
        }
    }
}
