//! A private network of hosts on one machine: a "switch" network namespace holding a bridge,
//! and one namespace per host, joined to the bridge by a veth pair, each with its own address
//! (10.77.0.N). Processes of a host run inside its namespace (`ip netns exec`); the test's
//! clients run on a thread that entered the switch's namespace ([`Network::run`]).
//!
//! Why not 127.0.0.x addresses in one namespace: the kernel gives every loopback connection
//! the source address 127.0.0.1, whatever the destination, so a rule cannot tell node 2's
//! packets from node 3's. A namespace per host has real source addresses, and a partition is
//! a pair of iptables DROP rules inside the hosts' own namespaces, removed to heal.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` (iproute2) and `iptables`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// One host: a network namespace with one address on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub namespace: String,
    pub address: String,
}

/// The switch namespace and its hosts; every namespace is deleted when dropped (which also
/// kills nothing: the processes' owners stop them first).
pub struct Network {
    switch: String,
    hosts: Vec<Host>,
}

/// Runs `ip` (or another command) and panics with its error output when it fails: a fault test
/// whose network is not what it thinks would check nothing.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}); fault tests need iproute2"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {} (fault tests need root: CAP_NET_ADMIN and CAP_SYS_ADMIN)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

static NETWORKS: AtomicU32 = AtomicU32::new(0);

impl Network {
    /// A switch and no hosts yet. Namespace names carry the process id and a counter, so
    /// parallel tests and leftovers of a killed run never collide.
    pub fn new() -> Network {
        let tag = format!(
            "shoal{}n{}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{tag}-sw");
        run("ip", &["netns", "add", &switch]);
        let network = Network {
            switch,
            hosts: Vec::new(),
        };
        network.ip(&network.switch, &["link", "add", "br0", "type", "bridge"]);
        network.ip(&network.switch, &["link", "set", "br0", "up"]);
        network.ip(&network.switch, &["link", "set", "lo", "up"]);
        network.ip(
            &network.switch,
            &["addr", "add", "10.77.0.254/24", "dev", "br0"],
        );
        network
    }

    fn ip(&self, namespace: &str, args: &[&str]) {
        let mut all = vec!["-n", namespace];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// A new host named `name`, with the next address.
    pub fn add_host(&mut self, name: &str) -> Host {
        let n = self.hosts.len() + 1;
        assert!(n < 254, "a network holds at most 253 hosts");
        let namespace = format!("{}-{name}", self.switch.trim_end_matches("-sw"));
        let address = format!("10.77.0.{n}");
        run("ip", &["netns", "add", &namespace]);
        let (inside, outside) = (format!("v{n}"), format!("p{n}"));
        run(
            "ip",
            &[
                "link",
                "add",
                &inside,
                "netns",
                &namespace,
                "type",
                "veth",
                "peer",
                "name",
                &outside,
                "netns",
                &self.switch,
            ],
        );
        self.ip(&namespace, &["link", "set", &inside, "name", "eth0"]);
        self.ip(
            &namespace,
            &["addr", "add", &format!("{address}/24"), "dev", "eth0"],
        );
        self.ip(&namespace, &["link", "set", "eth0", "up"]);
        self.ip(&namespace, &["link", "set", "lo", "up"]);
        self.ip(&self.switch, &["link", "set", &outside, "master", "br0"]);
        self.ip(&self.switch, &["link", "set", &outside, "up"]);
        let host = Host {
            name: name.to_string(),
            namespace,
            address,
        };
        self.hosts.push(host.clone());
        host
    }

    /// Cuts `a` off from `b` in both directions (packets are dropped, as a failed link or
    /// switch drops them: connections hang rather than being refused).
    pub fn cut(&self, a: &Host, b: &Host) {
        for (host, peer) in [(a, b), (b, a)] {
            iptables(host, &["-A", "INPUT", "-s", &peer.address, "-j", "DROP"]);
            iptables(host, &["-A", "OUTPUT", "-d", &peer.address, "-j", "DROP"]);
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        for host in &self.hosts {
            iptables(host, &["-F", "INPUT"]);
            iptables(host, &["-F", "OUTPUT"]);
        }
    }

    /// Runs `f` on a thread inside the switch's namespace (so its sockets reach every host)
    /// with a tokio runtime, and returns what it returns. Threads the runtime starts inherit
    /// the namespace.
    pub fn run<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        run_in_namespace(&self.switch_path(), f)
    }

    /// The switch namespace's file, for [`run_in_namespace`].
    pub fn switch_path(&self) -> String {
        format!("/run/netns/{}", self.switch)
    }
}

/// [`Network::run`] for a caller that must hold the network mutably meanwhile.
pub fn run_in_namespace<T: Send>(path: &str, f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            let namespace =
                std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: setns only reads the descriptor, which stays open for the call, and
            // changes the namespace of this thread alone.
            let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                entered,
                0,
                "setns into {path}: {}",
                std::io::Error::last_os_error()
            );
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(f)
        });
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn iptables(host: &Host, args: &[&str]) {
    let mut all = vec!["netns", "exec", host.namespace.as_str(), "iptables", "-w"];
    all.extend_from_slice(args);
    run("ip", &all);
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "delete", &host.namespace])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.switch])
            .status();
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}
