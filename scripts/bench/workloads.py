"""The workloads: pgbench, a bulk load of TPC-H with COPY, and the 22 TPC-H queries.

Every function takes a server from `servers.py` (or a DuckDB connection) and returns plain
dicts that `report.py` turns into tables; nothing here prints.
"""

import datetime
import decimal
import glob
import math
import os
import re
import subprocess
import time
from pathlib import Path

import psycopg

TPCH_DIR = Path(__file__).resolve().parent / "tpch"
# Load order: small tables first, lineitem (the one whose rate is reported) last.
TPCH_TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]


# ---------------------------------------------------------------------------------------------
# pgbench


def pgbench_env(server):
    return dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(server.port), PGUSER=server.user,
                PGDATABASE=server.dbname)


# pgbench's tables, created with their primary keys before `pgbench -i -I Gv` fills them. The
# default `pgbench -i` adds the keys afterwards with ALTER TABLE ... ADD PRIMARY KEY, which
# Shoal does not support yet (a table's key is its storage key); declared up front, both
# systems get the same tables and indexes.
PGBENCH_TABLES = [
    "DROP TABLE IF EXISTS pgbench_history, pgbench_tellers, pgbench_accounts, pgbench_branches",
    "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, "
    "filler char(22))",
    "CREATE TABLE pgbench_tellers (tid int NOT NULL PRIMARY KEY, bid int, tbalance int, "
    "filler char(84))",
    "CREATE TABLE pgbench_accounts (aid int NOT NULL PRIMARY KEY, bid int, abalance int, "
    "filler char(84))",
    "CREATE TABLE pgbench_branches (bid int NOT NULL PRIMARY KEY, bbalance int, filler char(88))",
]


def pgbench_init(server, scale):
    """Creates pgbench's tables with their keys, then `pgbench -i` generates the rows on the
    server and vacuums; returns the seconds taken."""
    start = time.monotonic()
    with server.connect() as c:
        for statement in PGBENCH_TABLES:
            c.execute(statement)
    out = subprocess.run(["pgbench", "-i", "-I", "Gv", "-s", str(scale), "-q"],
                         env=pgbench_env(server), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench -i on {server.name} failed:\n{out.stderr}")
    return time.monotonic() - start


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def pgbench_run(server, workdir, select_only, mode, clients, seconds):
    """One timed pgbench run; latency percentiles come from its per-transaction log."""
    tag = f"{server.name}-{'S' if select_only else 'tpcb'}-{mode}-{clients}".lower()
    prefix = workdir / "pgbench-logs" / tag
    prefix.parent.mkdir(exist_ok=True)
    threads = min(clients, os.cpu_count() or 1)
    args = ["pgbench", "-n", "-M", mode, "-c", str(clients), "-j", str(threads),
            "-T", str(seconds), "-l", f"--log-prefix={prefix}"]
    if select_only:
        args.append("-S")
    out = subprocess.run(args, env=pgbench_env(server), capture_output=True, text=True)
    result = {"system": server.name, "script": "select-only" if select_only else "TPC-B",
              "mode": mode, "clients": clients, "seconds": seconds}
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if out.returncode != 0 or not tps:
        result.update(error=(out.stderr or out.stdout).strip()[-500:])
        return result
    latencies = []
    for path in glob.glob(f"{prefix}.*"):
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    latencies.append(int(fields[2]) / 1000.0)
        os.remove(path)
    latencies.sort()
    result.update(tps=float(tps.group(1)), failed=int(failed.group(1)) if failed else 0,
                  transactions=len(latencies), p50_ms=percentile(latencies, 50),
                  p95_ms=percentile(latencies, 95), p99_ms=percentile(latencies, 99))
    return result


# ---------------------------------------------------------------------------------------------
# TPC-H data: generation and bulk load


def generate_tpch(datadir: Path, scale, tpchgen):
    """CSV files from tpchgen-cli, kept between runs of the same scale."""
    done = datadir / ".complete"
    if not done.exists():
        datadir.mkdir(parents=True, exist_ok=True)
        subprocess.run([tpchgen, "csv", "-s", str(scale), f"--output-dir={datadir}",
                        "--overwrite"], check=True, stdout=subprocess.DEVNULL)
        done.touch()
    return {t: datadir / f"{t}.csv" for t in TPCH_TABLES}


def schema_statements():
    text = (TPCH_DIR / "schema.sql").read_text()
    return [s.strip() for s in text.split(";") if s.strip()]


# Shoal's physical design: lineitem is partitioned by its order (and partsupp by its part), so
# that their joins with orders (and part) run partition by partition, without a shuffle and,
# in a cluster, at the partitions' leaders.
SHOAL_PARTITION_KEYS = {"lineitem": "l_orderkey", "partsupp": "ps_partkey"}


def shoal_schema_statements():
    statements = []
    for statement in schema_statements():
        table = statement.split()[2]
        if table in SHOAL_PARTITION_KEYS:
            statement += f" WITH (partition_key = '{SHOAL_PARTITION_KEYS[table]}')"
        statements.append(statement)
    return statements


def count_rows(path: Path):
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b"")) - 1


def copy_load(server, files):
    """Creates the TPC-H tables and loads each with COPY FROM STDIN (CSV), timing each table."""
    results = []
    statements = shoal_schema_statements() if server.shoal else schema_statements()
    with server.connect() as c:
        for statement in statements:
            c.execute(statement)
        for table in TPCH_TABLES:
            path = files[table]
            size = path.stat().st_size
            start = time.monotonic()
            with c.cursor() as cur:
                with cur.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            copy.write(chunk)
                loaded = cur.rowcount
            elapsed = time.monotonic() - start
            results.append({"system": server.name, "table": table, "rows": loaded,
                            "bytes": size, "seconds": elapsed})
        # PostgreSQL plans from statistics; Shoal accepts ANALYZE too. Not part of the load time.
        c.execute("ANALYZE")
    return results


def duckdb_load(con, files):
    results = []
    for statement in schema_statements():
        con.execute(statement)
    for table in TPCH_TABLES:
        path = files[table]
        start = time.monotonic()
        con.execute(f"COPY {table} FROM '{path}' (FORMAT csv, HEADER true)")
        elapsed = time.monotonic() - start
        rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        results.append({"system": "DuckDB", "table": table, "rows": rows,
                        "bytes": path.stat().st_size, "seconds": elapsed})
    return results


# ---------------------------------------------------------------------------------------------
# TPC-H queries


def tpch_queries():
    return [(p.stem, p.read_text()) for p in sorted(TPCH_DIR.glob("q*.sql"))]


def _best_of(runs, run_once):
    """Times `run_once` `runs` times: the best time, the first (before anything the run itself
    left in memory), and the rows of the last run."""
    best = first = None
    rows = None
    for _ in range(runs):
        start = time.monotonic()
        rows = run_once()
        elapsed = time.monotonic() - start
        first = elapsed if first is None else first
        best = elapsed if best is None else min(best, elapsed)
    return {"status": "ok", "seconds": best, "first_seconds": first, "rows": rows}


def run_query_server(server, sql, runs, timeout_s):
    """Best of `runs` executions over the wire; a statement that passes `timeout_s` is
    cancelled by the server (statement_timeout) and reported as such."""
    with server.connect() as c:
        c.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
        try:
            return _best_of(runs, lambda: c.execute(sql).fetchall())
        except psycopg.errors.QueryCanceled:
            return {"status": "timeout", "seconds": None, "rows": None}
        except psycopg.Error as e:
            return {"status": "error", "seconds": None, "rows": None,
                    "error": f"{e.sqlstate}: {str(e).strip()}"}


def run_query_duckdb(con, sql, runs):
    try:
        return _best_of(runs, lambda: con.execute(sql).fetchall())
    except Exception as e:  # DuckDB raises its own exception classes
        return {"status": "error", "seconds": None, "rows": None, "error": str(e)}


def _normalize(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        return float(value)
    if isinstance(value, str):
        # CHAR(n) comes back blank-padded from PostgreSQL.
        return value.rstrip()
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return str(value)


def _sort_key(row):
    return tuple((0, "") if v is None else (1, round(v, 4)) if isinstance(v, float) else (2, str(v))
                 for v in row)


def _rows_match(a, b):
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return False
        for va, vb in zip(ra, rb):
            if isinstance(va, float) and isinstance(vb, float):
                if not math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-6):
                    return False
            elif va != vb:
                return False
    return True


def same_answer(actual, expected):
    """Whether two result sets agree: values compared numerically (decimal and float answers
    of the same aggregate agree to 1e-6) and strings without CHAR padding; rows in the same
    order, or in another order that only reorders ties of the ORDER BY."""
    a = [[_normalize(v) for v in row] for row in actual]
    e = [[_normalize(v) for v in row] for row in expected]
    if _rows_match(a, e):
        return True
    return _rows_match(sorted(a, key=_sort_key), sorted(e, key=_sort_key))
