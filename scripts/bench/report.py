"""Turns a run's results into `report.md` (figures, ratios, machine, versions, command line),
`ratios.png` (Shoal's speed over PostgreSQL's per workload) and `report.json` (everything, for
the test that runs the benchmark at a tiny scale and for comparing runs)."""

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

# The targets, each as (what, ratio that must be reached, which way).
TARGETS = {
    "select_only_prepared_8": 0.5,  # Shoal TPS / PostgreSQL TPS, at least
    "tpch_geomean": 0.5,  # Shoal time / PostgreSQL time, at most
    "copy_lineitem": 1.0,  # Shoal rows/s / PostgreSQL rows/s, at least
}


def geomean(values):
    values = [v for v in values if v and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def fmt(value, digits=3):
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def tps_ratios(results):
    """Shoal's TPS over PostgreSQL's per pgbench run, keyed by (script, mode, clients), for the
    runs that succeeded on both, in the order they ran."""
    tps = {(r["system"], r["script"], r["mode"], r["clients"]): r.get("tps")
           for r in results["pgbench"]}
    ratios = {}
    for (system, script, mode, clients), value in tps.items():
        pg = tps.get(("PostgreSQL", script, mode, clients))
        if system == "Shoal" and value and pg:
            ratios[(script, mode, clients)] = value / pg
    return ratios


def summarize(results):
    """The headline ratios, computed once for the Markdown report, the plot and the JSON."""
    summary = {}
    summary["select_only_prepared_8"] = tps_ratios(results).get(("select-only", "prepared", 8))
    copy = {(r["system"], r["table"]): r for r in results["copy"]}
    s, p = copy.get(("Shoal", "lineitem")), copy.get(("PostgreSQL", "lineitem"))
    if s and p and s["seconds"] and p["seconds"]:
        summary["copy_lineitem"] = p["seconds"] / s["seconds"]
    else:
        summary["copy_lineitem"] = None
    in_mean = [q for q in results["tpch"] if q["in_geomean"]]
    summary["tpch_geomean"] = geomean([q["shoal_over_pg"] for q in in_mean])
    summary["tpch_duckdb_geomean"] = geomean([q["duckdb_over_pg"] for q in in_mean])
    summary["tpch_queries_in_geomean"] = len(in_mean)
    summary["tpch_answers_checked"] = sum(1 for q in results["tpch"]
                                          if q["check"].startswith("same"))
    summary["tpch_answers_wrong"] = [q["query"] for q in results["tpch"] if q["check"] == "DIFFERENT"]
    summary["tpch_shoal_errors"] = [q["query"] for q in results["tpch"]
                                    if q["shoal"]["status"] != "ok"]
    on_cluster = [q for q in results["tpch"] if "cluster" in q]
    summary["cluster_geomean"] = geomean([q["cluster_over_pg"] for q in on_cluster
                                          if q["in_geomean"] and q["cluster_over_pg"]])
    summary["cluster_answers_wrong"] = [q["query"] for q in on_cluster
                                        if q["cluster_check"] == "DIFFERENT"]
    summary["cluster_errors"] = [q["query"] for q in on_cluster
                                 if q["cluster"]["status"] != "ok"]
    return summary


def write_markdown(path, results, summary):
    meta = results["meta"]
    lines = [
        "# Shoal side by side with PostgreSQL 15 and DuckDB",
        "",
        f"Run of {meta['date']} on {meta['machine']}.",
        "",
        f"- Command: `{meta['command']}`",
        f"- Shoal {meta['shoal_commit']} ({meta['shoal_profile']} build), "
        f"PostgreSQL {meta['postgres_version']}, DuckDB {meta['duckdb_version']}, "
        f"{meta['tpchgen_version']}, {meta['pgbench_version']}",
        f"- PostgreSQL settings: {', '.join(f'{k}={v}' for k, v in meta['postgres_settings'].items())}; "
        f"Shoal: `{' '.join(meta.get('shoal_args', ['--fsync', 'true']))}`. Both fsync every commit.",
        f"- TPC-H scale factor {meta['scale']}, best of {meta['runs']} runs per query (a run "
        f"after the first finds the columns it scans resident in Shoal's memory, as it finds "
        f"its pages in PostgreSQL's buffers; the first run's time is shown beside), "
        f"PostgreSQL statement timeout {meta['timeout_s']} s; pgbench scale {meta['pgbench_scale']}, "
        f"{meta['pgbench_seconds']} s per run.",
        "",
        "## Targets",
        "",
        "| what | ratio | target |",
        "|---|---|---|",
        f"| pgbench select-only, `-M prepared`, 8 clients: Shoal TPS / PostgreSQL TPS "
        f"| {fmt(summary['select_only_prepared_8'])} | ≥ {TARGETS['select_only_prepared_8']} |",
        f"| TPC-H geometric mean of Shoal time / PostgreSQL time "
        f"({summary['tpch_queries_in_geomean']} queries) | {fmt(summary['tpch_geomean'])} "
        f"| ≤ {TARGETS['tpch_geomean']} (DuckDB: {fmt(summary['tpch_duckdb_geomean'])}) |",
        f"| COPY lineitem: Shoal rows/s / PostgreSQL rows/s | {fmt(summary['copy_lineitem'])} "
        f"| ≥ {TARGETS['copy_lineitem']} |",
        "",
        f"TPC-H answers identical to PostgreSQL's (or to DuckDB's where PostgreSQL timed out): "
        f"{summary['tpch_answers_checked']} of {len(results['tpch'])}; "
        f"different: {', '.join(summary['tpch_answers_wrong']) or 'none'}; "
        f"Shoal errors or timeouts: {', '.join(summary['tpch_shoal_errors']) or 'none'}.",
        "",
        "## pgbench",
        "",
        "| script | mode | clients | system | TPS | p50 ms | p95 ms | p99 ms | failed | Shoal/PG TPS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = tps_ratios(results)
    for r in results["pgbench"]:
        ratio = (ratios.get((r["script"], r["mode"], r["clients"]))
                 if r["system"] == "Shoal" else None)
        if "error" in r:
            lines.append(f"| {r['script']} | {r['mode']} | {r['clients']} | {r['system']} | "
                         f"error: {(r['error'].splitlines() or ['(no output)'])[-1]} | | | | | |")
            continue
        lines.append(f"| {r['script']} | {r['mode']} | {r['clients']} | {r['system']} | "
                     f"{r['tps']:.0f} | {fmt(r['p50_ms'])} | {fmt(r['p95_ms'])} | "
                     f"{fmt(r['p99_ms'])} | {r['failed']} | {fmt(ratio, 2)} |")
    lines += ["", "## Bulk load: COPY FROM STDIN (CSV)", "",
              "| table | system | rows | MB | seconds | rows/s | MB/s |", "|---|---|---|---|---|---|---|"]
    for r in results["copy"]:
        mb = r["bytes"] / 1e6
        lines.append(f"| {r['table']} | {r['system']} | {r['rows']} | {mb:.1f} | "
                     f"{fmt(r['seconds'])} | {r['rows'] / r['seconds']:.0f} | "
                     f"{mb / r['seconds']:.1f} |")
    lines += ["", "DuckDB loads with its own `COPY ... FROM 'file'`, in process, for reference.",
              "", "## TPC-H", "",
              "| query | PostgreSQL s | Shoal s | Shoal first run s | DuckDB s | Shoal/PG | "
              "DuckDB/PG | answer |",
              "|---|---|---|---|---|---|---|---|"]
    for q in results["tpch"]:
        def cell(side, key="seconds"):
            r = q[side]
            return fmt(r.get(key)) if r["status"] == "ok" else r["status"]
        lines.append(f"| {q['query']} | {cell('pg')} | {cell('shoal')} | "
                     f"{cell('shoal', 'first_seconds')} | {cell('duckdb')} | "
                     f"{fmt(q['shoal_over_pg'], 2)} | {fmt(q['duckdb_over_pg'], 2)} | "
                     f"{q['check']} |")
    out_of_mean = [q["query"] for q in results["tpch"] if not q["in_geomean"]]
    lines += ["", "Kept out of the geometric mean: Q17 and Q20 (PostgreSQL runs their correlated "
              "subqueries once per outer row, tens of seconds from scale 0.1), and any query "
              "that failed or timed out on one side. Here: "
              f"{', '.join(out_of_mean) or 'none'}."]
    errors = [(q["query"], side, q[side]["error"]) for q in results["tpch"]
              for side in ("pg", "shoal", "duckdb") if q[side].get("error")]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {q} on {side}: `{e}`" for q, side, e in errors]
    lines += cluster_lines(results, summary)
    lines += ["", "![Shoal's speed over PostgreSQL's](ratios.png)", ""]
    path.write_text("\n".join(lines))


def cluster_lines(results, summary):
    """The TPC-H queries on the Shoal cluster: time, ratios, and what travelled between nodes
    next to what the query returned."""
    on_cluster = [q for q in results["tpch"] if "cluster" in q]
    if not on_cluster:
        return ["", "No cluster run (`--cluster-nodes 0`)."]
    nodes = results["meta"].get("cluster_nodes")
    lines = ["", f"## TPC-H on a {nodes}-node Shoal cluster", "",
             f"etcd and {nodes} Shoal nodes on this machine (each with 1/{nodes} of the single "
             "server's block cache), loaded with the same COPY through the first node, which "
             "runs every query. Bytes shipped: Arrow batches the first node received from "
             "fragments the other nodes ran, per run.", "",
             f"Geometric mean cluster/PostgreSQL: {fmt(summary['cluster_geomean'], 2)}.", "",
             "| query | cluster s | single Shoal s | cluster/PG | bytes shipped | result rows "
             "| answer |",
             "|---|---|---|---|---|---|---|"]
    for q in on_cluster:
        c = q["cluster"]
        seconds = fmt(c["seconds"]) if c["status"] == "ok" else c["status"]
        single = fmt(q["shoal"]["seconds"]) if q["shoal"]["status"] == "ok" else q["shoal"]["status"]
        lines.append(f"| {q['query']} | {seconds} | {single} | {fmt(q['cluster_over_pg'], 2)} | "
                     f"{c['bytes_shipped']:.0f} | {q['rows']} | {q['cluster_check']} |")
    loads = results.get("cluster_copy", [])
    lineitem = next((r for r in loads if r["table"] == "lineitem"), None)
    if lineitem and lineitem["seconds"]:
        lines += ["", f"COPY lineitem into the cluster: {lineitem['rows'] / lineitem['seconds']:.0f} "
                  f"rows/s ({lineitem['bytes'] / lineitem['seconds'] / 2**20:.1f} MB/s)."]
    errors = [(q["query"], q["cluster"]["error"]) for q in on_cluster if q["cluster"].get("error")]
    if errors:
        lines += ["", "Errors on the cluster:", ""] + [f"- {q}: `{e}`" for q, e in errors]
    return lines


def write_plot(path, results, summary):
    """One bar per workload: Shoal's speed over PostgreSQL's (and DuckDB's for TPC-H), on a log
    scale, so that bars right of 1 are where Shoal is faster."""
    labels, shoal, duck = [], [], []
    for (script, mode, clients), ratio in tps_ratios(results).items():
        labels.append(f"pgbench {script} {mode} c{clients}")
        shoal.append(ratio)
        duck.append(None)
    if summary["copy_lineitem"]:
        labels.append("COPY lineitem")
        shoal.append(summary["copy_lineitem"])
        duck.append(None)
    for q in results["tpch"]:
        if q["shoal_over_pg"]:
            labels.append(f"TPC-H {q['query']}")
            shoal.append(1 / q["shoal_over_pg"])
            duck.append(1 / q["duckdb_over_pg"] if q["duckdb_over_pg"] else None)
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(labels) + 1.5))
    ys = range(len(labels))
    ax.barh([y - 0.2 for y in ys], shoal, height=0.4, label="Shoal", color="#1f77b4")
    ax.barh([y + 0.2 for y in ys], [d or 0 for d in duck], height=0.4, label="DuckDB",
            color="#ff7f0e")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speed relative to PostgreSQL 15 (> 1: faster)")
    ax.legend(loc="lower right")
    ax.set_title(f"TPC-H SF {results['meta']['scale']}, pgbench, COPY")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(out_dir, results):
    summary = summarize(results)
    results["summary"] = summary
    write_markdown(out_dir / "report.md", results, summary)
    write_plot(out_dir / "ratios.png", results, summary)
    (out_dir / "report.json").write_text(json.dumps(results, indent=1, default=str))
    return summary
