//! Starting nodes: TLS (optional and required), a clear refusal when the data directory is
//! already in use, and `options=-c` settings from the startup packet.

use std::process::Command;

use shoal_tests::{Node, PASSWORD, USER};

fn psql(port: u16, sslmode: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-At", "-c", sql])
        .arg(format!(
            "host=127.0.0.1 port={port} user={USER} dbname=shoal sslmode={sslmode}"
        ))
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("run psql")
}

fn have_tools() -> bool {
    let ok = Command::new("psql").arg("--version").output().is_ok()
        && Command::new("openssl").arg("version").output().is_ok();
    assert!(
        ok || std::env::var("CI").is_err(),
        "CI must have psql and openssl"
    );
    ok
}

#[test]
fn tls_is_negotiated_and_can_be_required() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let cert_s = cert.to_str().unwrap();
    let key_s = key.to_str().unwrap();

    let node = Node::start_with(&["--tls-cert", cert_s, "--tls-key", key_s]);
    let out = psql(node.port, "require", "select 41 + 1");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = psql(node.port, "disable", "select 1");
    assert!(
        out.status.success(),
        "plain connections are allowed unless TLS is required"
    );

    let strict = Node::start_with(&["--tls-cert", cert_s, "--tls-key", key_s, "--tls-required"]);
    let out = psql(strict.port, "disable", "select 1");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires TLS"));
    let out = psql(strict.port, "require", "select 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused() {
    let node = Node::start();
    let out = Command::new(shoal_tests::shoal_bin())
        .args([
            "start",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(node.data_dir())
        .env("SHOAL_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by another process"), "{err}");
}

#[tokio::test]
async fn startup_options_become_session_settings() {
    let node = Node::start();
    let conn = format!(
        "{} options='-c statement_timeout=1234 -c application_name=tester'",
        node.conn_string()
    );
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let t: String = c
        .query_one("select current_setting('statement_timeout')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, "1234");
    let rows = c
        .query(
            "select application_name from pg_stat_activity where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "tester");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(shoal_tests::shoal_bin())
        .args(["start", "--metrics-listen", "off", "--listen"])
        .arg(format!("127.0.0.1:{}", node.port))
        .arg("--data-dir")
        .arg(dir.path())
        .env("SHOAL_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );
}
