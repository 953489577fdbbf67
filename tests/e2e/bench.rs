//! The benchmark script (`scripts/bench.sh`) end to end at a tiny scale, so that the one
//! command of the benchmarks keeps working: it starts its own PostgreSQL 15 and Shoal, runs
//! pgbench, COPY and the 22 TPC-H queries, and checks every Shoal answer against PostgreSQL's.
//! The same TPC-H load and queries run on a 3-node Shoal cluster the script starts. The
//! figures themselves are not asserted; that Shoal ran every workload and gave PostgreSQL's
//! answers is.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use shoal_tests::shoal_bin;

#[test]
fn bench_script_answers_tpch_like_postgres_and_runs_every_workload() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new("bash")
        .arg(repo.join("scripts/bench.sh"))
        .args(["--scale", "0.01", "--runs", "1", "--profile", "dev"])
        .args(["--pgbench-scale", "1", "--pgbench-seconds", "2"])
        .arg("--shoal-bin")
        .arg(shoal_bin())
        .arg("--out")
        .arg(out.path())
        .env(
            "SHOAL_BENCH_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench"),
        )
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "scripts/bench.sh failed:\n{stdout}\n{stderr}"
    );

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    let tpch = report["tpch"].as_array().expect("tpch results");
    assert_eq!(tpch.len(), 22, "{stdout}");
    for q in tpch {
        assert_eq!(q["shoal"]["status"], "ok", "{q}");
        assert!(
            q["check"].as_str().is_some_and(|c| c.starts_with("same")),
            "Shoal's answer differs: {q}"
        );
        assert_eq!(q["cluster"]["status"], "ok", "{q}");
        assert!(
            q["cluster_check"]
                .as_str()
                .is_some_and(|c| c.starts_with("same")),
            "the cluster's answer differs: {q}"
        );
        assert!(q["cluster"]["bytes_shipped"].as_f64().is_some(), "{q}");
    }
    let shipped: f64 = tpch
        .iter()
        .filter_map(|q| q["cluster"]["bytes_shipped"].as_f64())
        .sum();
    assert!(shipped > 0.0, "the cluster's queries read other nodes");
    let pgbench = report["pgbench"].as_array().expect("pgbench results");
    // 2 scripts x 2 protocol modes x 2 client counts x 2 systems.
    assert_eq!(pgbench.len(), 16, "{stdout}");
    for r in pgbench {
        assert!(r["tps"].as_f64().is_some_and(|t| t > 0.0), "{r}");
        assert_eq!(r["failed"], 0, "{r}");
    }
    let lineitem: Vec<&Value> = report["copy"]
        .as_array()
        .expect("copy results")
        .iter()
        .filter(|r| r["table"] == "lineitem")
        .collect();
    assert_eq!(
        lineitem.len(),
        3,
        "PostgreSQL, Shoal and DuckDB load lineitem"
    );
    assert!(
        lineitem.windows(2).all(|w| w[0]["rows"] == w[1]["rows"]),
        "{lineitem:?}"
    );
    let cluster_lineitem = report["cluster_copy"]
        .as_array()
        .expect("cluster copy results")
        .iter()
        .find(|r| r["table"] == "lineitem")
        .expect("the cluster loads lineitem");
    assert_eq!(cluster_lineitem["rows"], lineitem[0]["rows"]);
    let markdown = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(markdown.contains("| q22 |"), "{markdown}");
    assert!(
        markdown.contains("## TPC-H on a 3-node Shoal cluster"),
        "{markdown}"
    );
    let png = std::fs::read(out.path().join("ratios.png")).expect("ratios.png");
    assert!(png.starts_with(b"\x89PNG"), "ratios.png is a PNG");
}
