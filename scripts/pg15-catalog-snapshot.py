#!/usr/bin/env python3
"""Writes planner/pg15/*.arrow: PostgreSQL 15's own catalog rows, read from a fresh server.

Shoal serves pg_type, pg_proc, pg_operator, ... and the rows of pg_class/pg_attribute that
describe PostgreSQL's system relations from these files, so that clients which read the whole
catalog (DBeaver's type list, pgcli's completion, pgJDBC's type map) see what PostgreSQL 15
shows. Each file keeps the column names and Arrow types of the export that
`datafusion-pg-catalog` ships for the same relation, so the rest of the planner reads both the
same way; only the rows change.

Run it again after a PostgreSQL 15 minor upgrade (needs Debian's postgresql-15 and pyarrow):
    python3 scripts/pg15-catalog-snapshot.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "planner" / "pg15"
BIN = Path("/usr/lib/postgresql/15/bin")

# Relations whose every row is PostgreSQL's own (a fresh database has no user rows in them).
WHOLE = [
    "pg_aggregate", "pg_am", "pg_amop", "pg_amproc", "pg_cast", "pg_collation",
    "pg_conversion", "pg_language", "pg_opclass", "pg_operator", "pg_opfamily", "pg_proc",
    "pg_range", "pg_ts_config", "pg_ts_dict", "pg_ts_parser", "pg_ts_template", "pg_type",
    "pg_description", "pg_extension",
]
SYSTEM_NAMESPACES = "('pg_catalog', 'pg_toast', 'information_schema')"
# Relations of which only the rows describing system relations are taken; Shoal adds the
# rows of its users' relations to them at query time.
FILTERED = {
    "pg_class": f"relnamespace in (select oid from pg_namespace where nspname in {SYSTEM_NAMESPACES})",
    "pg_attribute": "attrelid in (select c.oid from pg_class c join pg_namespace n on "
    f"n.oid = c.relnamespace where n.nspname in {SYSTEM_NAMESPACES})",
}
# Privileges name the superuser of the server they were read from, which is not Shoal's:
# NULL is PostgreSQL's "the owner's default privileges".
ACL_COLUMNS = {"typacl", "proacl", "relacl", "attacl", "nspacl"}


def reference_exports() -> Path:
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1"], cwd=ROOT))
    for p in meta["packages"]:
        if p["name"] == "datafusion-pg-catalog":
            return Path(p["manifest_path"]).parent / "pg_catalog_arrow_exports"
    sys.exit("datafusion-pg-catalog is not a dependency")


def as_postgres(args):
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + args


def start_server(tmp: Path) -> int:
    data = tmp / "data"
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    subprocess.check_call(as_postgres([str(BIN / "initdb"), "-D", str(data), "--auth=trust",
                                       "-U", "postgres", "--encoding=UTF8",
                                       "--locale=C.UTF-8"]), stdout=subprocess.DEVNULL)
    port = 54000 + os.getpid() % 1000
    subprocess.check_call(as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-w", "-o",
                                       f"-p {port} -k {tmp} -c listen_addresses=''",
                                       "start"]), stdout=subprocess.DEVNULL)
    return port


def unescape(field: str):
    """One field of COPY's text format: \\N is NULL, backslash escapes otherwise."""
    if field == "\\N":
        return None
    if "\\" not in field:
        return field
    out, i = [], 0
    escapes = {"t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "\\": "\\"}
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 1 < len(field):
            out.append(escapes.get(field[i + 1], field[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def convert(value, arrow_type):
    if value is None:
        return None
    if pa.types.is_boolean(arrow_type):
        return value == "true"
    if pa.types.is_integer(arrow_type):
        return int(value)
    if pa.types.is_floating(arrow_type):
        return float(value)
    return value


def rows_of(tmp: Path, port: int, sql: str):
    text = subprocess.check_output(as_postgres([
        str(BIN / "psql"), "-X", "-h", str(tmp), "-p", str(port), "-U", "postgres",
        "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f"copy ({sql}) to stdout"]))
    for line in text.decode().split("\n"):
        if line:
            yield [unescape(f) for f in line.split("\t")]


def snapshot(tmp: Path, port: int, relation: str, schema: pa.Schema, where: str):
    columns = [r[0] for r in rows_of(tmp, port, (
        "select attname from pg_attribute where attnum > 0 and not attisdropped and "
        f"attrelid = 'pg_catalog.{relation}'::regclass"))]
    select = []
    for field in schema:
        if field.name == "oid" and "oid" in columns or field.name in columns:
            expr = "NULL" if field.name in ACL_COLUMNS else f"{field.name}::text"
        else:
            expr = "NULL"
        select.append(f"{expr} as {field.name}")
    order = "oid" if "oid" in columns else "1, 2"
    if relation == "pg_attribute":
        order = "attrelid, attnum"
    sql = f"select {', '.join(select)} from pg_catalog.{relation} where {where} order by {order}"
    rows = list(rows_of(tmp, port, sql))
    arrays = [pa.array([convert(r[i], f.type) for r in rows], type=f.type)
              for i, f in enumerate(schema)]
    table = pa.Table.from_arrays(arrays, schema=schema)
    with ipc.new_file(OUT / f"{relation}.arrow", schema) as writer:
        writer.write_table(table)
    print(f"{relation}: {len(rows)} rows")


def main():
    exports = reference_exports()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        port = start_server(tmp)
        try:
            time.sleep(0.5)
            for relation in WHOLE + list(FILTERED):
                schema = ipc.open_file(exports / f"{relation}.feather").schema
                snapshot(tmp, port, relation, schema, FILTERED.get(relation, "true"))
        finally:
            subprocess.call(as_postgres([str(BIN / "pg_ctl"), "-D", str(tmp / "data"),
                                         "-m", "fast", "stop"]), stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
