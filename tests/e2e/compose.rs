//! The compose cluster (`compose/`): images built from this machine's files (no registry),
//! etcd and three nodes brought up with Compose, psql against every node, one node stopped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use shoal_tests::{free_port, shoal_bin, wait_until};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// `docker compose` (v2) where installed, else `docker-compose` (v1).
fn compose_command() -> Vec<&'static str> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

/// A compose project on ports picked here; `down -v` and its images removed when dropped.
struct Project {
    name: String,
    ports: [u16; 3],
    env: Vec<(&'static str, String)>,
    images: [String; 2],
}

impl Project {
    fn run(&self, args: &[&str]) -> Output {
        let compose = compose_command();
        let mut cmd = Command::new(compose[0]);
        cmd.args(&compose[1..])
            .args(["-p", &self.name, "-f"])
            .arg(repo_root().join("compose/docker-compose.yml"))
            .args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("run compose")
    }

    fn psql(&self, node: usize, sql: &str) -> Output {
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "shoal", "-d", "shoal", "-X", "-tA"])
            .args(["-p", &self.ports[node].to_string(), "-c", sql])
            .env("PGPASSWORD", "compose-test")
            .env("PGCONNECT_TIMEOUT", "3")
            .output()
            .expect("run psql")
    }

    fn psql_ok(&self, node: usize, sql: &str) -> String {
        let out = self.psql(node, sql);
        assert!(
            out.status.success(),
            "psql on node {}: {sql}: {}",
            node + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans"]);
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.images[0], &self.images[1]])
            .output();
    }
}

#[test]
fn compose_cluster_serves_on_every_node_and_sees_a_stopped_one() {
    let tag = format!("e2e-{}", std::process::id());
    let shoal_image = format!("shoal:{tag}");
    let etcd_image = format!("shoal-etcd:{tag}");
    let built = Command::new("bash")
        .arg(repo_root().join("compose/build-local-images.sh"))
        .arg(shoal_bin())
        .env("SHOAL_IMAGE", &shoal_image)
        .env("ETCD_IMAGE", &etcd_image)
        .output()
        .expect("run build-local-images.sh (is Docker installed?)");
    assert!(
        built.status.success(),
        "building images: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ports = [free_port(), free_port(), free_port()];
    let project = Project {
        name: format!("shoal{tag}"),
        ports,
        env: vec![
            ("SHOAL_IMAGE", shoal_image.clone()),
            ("ETCD_IMAGE", etcd_image.clone()),
            ("SHOAL_PASSWORD", "compose-test".into()),
            ("SHOAL1_PORT", ports[0].to_string()),
            ("SHOAL2_PORT", ports[1].to_string()),
            ("SHOAL3_PORT", ports[2].to_string()),
        ],
        images: [shoal_image.clone(), etcd_image.clone()],
    };
    let up = project.run(&["up", "-d", "--no-build"]);
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    for node in 0..3 {
        assert!(
            wait_until(Duration::from_secs(60), || project
                .psql(node, "select 1")
                .status
                .success()),
            "node {} accepts psql",
            node + 1
        );
    }
    assert_eq!(
        project.psql_ok(0, "select count(*) from shoal.nodes where state = 'up'"),
        "3"
    );
    project.psql_ok(
        0,
        "create table readings (id int primary key, sensor int, value float8) with (partitions = 6)",
    );
    // One statement per row, through node 2: each reaches its partition's leader.
    let inserts: Vec<String> = (1..=60)
        .map(|i| format!("insert into readings values ({i}, {}, {i}.5)", i % 4))
        .collect();
    project.psql_ok(1, &inserts.join("; "));
    for node in 0..3 {
        assert_eq!(
            project.psql_ok(
                node,
                "select count(*), sum(id), count(distinct sensor) from readings"
            ),
            "60|1830|4"
        );
    }

    let stopped = project.run(&["stop", "shoal3"]);
    assert!(stopped.status.success());
    assert!(
        wait_until(Duration::from_secs(15), || {
            project
                .psql(0, "select state from shoal.nodes where node_id = 3")
                .stdout
                .starts_with(b"down")
        }),
        "node 1 sees node 3 down"
    );
    // `docker compose stop` sends SIGTERM: node 3 handed its partitions to their followers
    // before it stopped, so every row is still served, and written.
    assert_eq!(
        project.psql_ok(
            0,
            "select count(*), sum(id), count(distinct sensor) from readings"
        ),
        "60|1830|4"
    );
    project.psql_ok(1, "insert into readings values (61, 1, 61.5)");
    assert_eq!(
        project.psql_ok(0, "select count(*) from shoal.partitions where leader = 3"),
        "0"
    );
}
