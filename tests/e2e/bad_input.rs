//! Hostile input: malformed frames, huge lengths, half-sent messages and connection floods get
//! an error or a closed connection, and the server keeps serving everyone else.

use std::time::Duration;

use shoal_tests::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn startup_message(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in [("user", user), ("database", "shoal")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// Connects and completes a trust-mode startup, up to ReadyForQuery.
async fn started(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup_message("shoal")).await.unwrap();
    read_until_ready(&mut s).await;
    s
}

/// Reads until an idle ReadyForQuery; returns everything the server sent up to it.
async fn read_until_ready(s: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == [b'Z', 0, 0, 0, 5, b'I']) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the server answers")
            .unwrap();
        assert!(n > 0, "server closed the connection");
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

/// Reads until the server closes; returns everything it sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

fn has_error_code(bytes: &[u8], code: &str) -> bool {
    let needle = format!("C{code}\0");
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn still_serves(node: &Node) {
    let c = node.connect().await;
    let n: i64 = c
        .query_one("select count(*) from generate_series(1, 10)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
}

#[tokio::test]
async fn malformed_frames_get_08p01_and_the_server_survives() {
    let node = Node::start_with(&["--auth", "trust", "--max-message-bytes", "1048576"]);

    // Garbage instead of a startup packet.
    let mut s = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    s.write_all(b"\x00\x00\x00\x02garbage garbage garbage")
        .await
        .unwrap();
    let out = read_to_close(&mut s).await;
    assert!(has_error_code(&out, "08P01"), "{out:?}");

    // A typed message whose length is under 4.
    let mut s = started(node.port).await;
    s.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    assert!(has_error_code(&read_to_close(&mut s).await, "08P01"));

    // A 1 GiB length: refused before anything is buffered.
    let mut s = started(node.port).await;
    s.write_all(&[b'Q', 0x40, 0, 0, 0]).await.unwrap();
    s.write_all(b"select 1").await.unwrap();
    assert!(has_error_code(&read_to_close(&mut s).await, "08P01"));

    // Half a message, then the client goes away.
    let mut s = started(node.port).await;
    s.write_all(&[b'Q', 0, 0, 0, 100, b's', b'e'])
        .await
        .unwrap();
    drop(s);

    // Random bytes after a good startup.
    let mut s = started(node.port).await;
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let _ = s.write_all(&noise).await;
    let _ = read_to_close(&mut s).await;

    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_at_once() {
    let node = Node::start_with(&["--auth", "trust", "--max-connections", "300"]);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let port = node.port;
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                return 'x';
            };
            if s.write_all(&startup_message("shoal")).await.is_err() {
                return 'x';
            }
            let mut first = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut first)).await {
                // 'R' = authentication ok, 'E' = refused (53300 beyond the limit).
                Ok(Ok(_)) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    first[0] as char
                }
                _ => 'x',
            }
        }));
    }
    let mut accepted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            'R' => accepted += 1,
            'E' => refused += 1,
            _ => {}
        }
    }
    assert!(accepted >= 100, "accepted {accepted}");
    assert_eq!(accepted + refused, 1000, "every client got an answer");
    still_serves(&node).await;
}

/// Splits a server byte stream into (type, body) messages.
fn messages(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]])
            as usize;
        if at + 1 + len > bytes.len() {
            break;
        }
        out.push((bytes[at], bytes[at + 5..at + 1 + len].to_vec()));
        at += 1 + len;
    }
    out
}

#[tokio::test]
async fn startup_parameters_and_empty_queries() {
    let node = Node::start_with(&["--auth", "trust"]);
    let mut s = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    s.write_all(&startup_message("shoal")).await.unwrap();
    let seen = read_until_ready(&mut s).await;
    let params: std::collections::HashMap<String, String> = messages(&seen)
        .into_iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, body)| {
            let mut parts = body
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned());
            (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            )
        })
        .collect();
    for (name, value) in [
        ("server_version", "15.8"),
        ("server_version_num", "150008"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
        ("IntervalStyle", "postgres"),
        ("is_superuser", "on"),
        ("session_authorization", "shoal"),
    ] {
        assert_eq!(
            params.get(name).map(String::as_str),
            Some(value),
            "{name}: {params:?}"
        );
    }
    assert!(params.contains_key("application_name"));

    // An empty and a comment-only query each get EmptyQueryResponse ('I'), then ReadyForQuery.
    for q in ["", "-- just a comment", " ; "] {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((q.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(q.as_bytes());
        msg.push(0);
        s.write_all(&msg).await.unwrap();
        let got = read_until_ready(&mut s).await;
        let types: Vec<u8> = messages(&got).into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, vec![b'I', b'Z'], "query {q:?}");
    }
}

/// Long expression chains make DataFusion's planner recurse deeply; the node answers them (or
/// refuses them with an error) instead of overflowing a thread stack and aborting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_expressions_do_not_abort_the_node() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create table tab0 (pk int primary key, col0 int)")
        .await
        .unwrap();
    let ors: Vec<String> = (0..300)
        .map(|i| format!("(col0 > {i} and col0 < {})", i + 5))
        .collect();
    let queries = [
        format!("select pk from tab0 where {}", ors.join(" or ")),
        format!("select {}", vec!["1"; 2000].join(" + ")),
        format!("select {}1{}", "(".repeat(40), ")".repeat(40)),
    ];
    for q in &queries {
        let _ = c.simple_query(q).await;
    }
    let alive = node.connect().await;
    let rows = alive
        .simple_query("select 1")
        .await
        .expect("the node is still up");
    assert!(!rows.is_empty());
    let sum = c
        .query_one(&format!("select {}", vec!["1::int8"; 500].join(" + ")), &[])
        .await
        .unwrap();
    assert_eq!(sum.get::<_, i64>(0), 500);
}
