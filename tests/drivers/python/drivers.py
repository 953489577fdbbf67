"""Exercises the Python PostgreSQL drivers the way applications use them.

Usage: python drivers.py HOST PORT USER PASSWORD DBNAME

Runs every check against the server given and prints one JSON object per line:
{"check": NAME, "ok": true, "value": ...} or {"check": NAME, "ok": false, "error": ...}.
Each check asserts what the driver must see (values round-trip, errors carry their SQLSTATE,
a rollback undoes) and returns a value that tests/e2e/drivers.rs compares with the same
check's value on PostgreSQL 15. Checks create their own tables, named after the check.
"""

import asyncio
import datetime
import decimal
import io
import json
import sys
import traceback
import uuid

HOST, PORT, USER, PASSWORD, DBNAME = sys.argv[1:6]
PORT = int(PORT)

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def canonical(value):
    """A JSON form of driver values that is equal exactly when the values are."""
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes:" + bytes(value).hex()
    return type(value).__name__ + ":" + str(value)


def expect(actual, wanted, what):
    if actual != wanted:
        raise AssertionError(f"{what}: got {actual!r}, wanted {wanted!r}")


UTC = datetime.timezone.utc
# One row of every common scalar type, as Python values, in the column order of TYPED_TABLE.
TYPED_ROW = (
    1,
    -32768,
    9007199254740993,
    decimal.Decimal("12345.67"),
    1.5,
    2.718281828459045,
    "héllo, wörld",
    "short",
    True,
    datetime.date(2024, 2, 29),
    datetime.time(13, 45, 30, 250000),
    datetime.datetime(2024, 2, 29, 13, 45, 30, 123456),
    datetime.datetime(2024, 2, 29, 13, 45, 30, 123456, tzinfo=UTC),
    b"\x00\x01\xfe\xff",
)
TYPED_COLUMNS = (
    "id int primary key, i2 smallint, i8 bigint, n numeric(10,2), f4 real, "
    "f8 double precision, t text, vc varchar(20), b boolean, d date, tm time, ts timestamp, "
    "tstz timestamptz, by bytea"
)
TYPED_NAMES = "id, i2, i8, n, f4, f8, t, vc, b, d, tm, ts, tstz, by"


def psycopg2_connect():
    import psycopg2

    conn = psycopg2.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DBNAME
    )
    with conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
    conn.commit()
    return conn


@check
def psycopg2_types_round_trip():
    conn = psycopg2_connect()
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE p2_types ({TYPED_COLUMNS})")
    cur.execute(
        f"INSERT INTO p2_types ({TYPED_NAMES}) VALUES ({', '.join(['%s'] * len(TYPED_ROW))})",
        TYPED_ROW,
    )
    cur.execute(f"SELECT {TYPED_NAMES} FROM p2_types WHERE id = %s", (1,))
    row = cur.fetchone()
    row = row[:-1] + (bytes(row[-1]),)  # psycopg2 reads bytea as a memoryview
    expect(row, TYPED_ROW, "row read back")
    described = [(d.name, d.type_code) for d in cur.description]
    conn.commit()
    conn.close()
    return {"row": row, "description": described}


@check
def psycopg2_unconstrained_numeric_keeps_its_scale():
    conn = psycopg2_connect()
    cur = conn.cursor()
    cur.execute("CREATE TABLE p2_numeric (id int primary key, n numeric)")
    cur.execute("INSERT INTO p2_numeric VALUES (1, 3.25), (2, 10), (3, 0.125)")
    cur.execute("SELECT n FROM p2_numeric ORDER BY id")
    values = [r[0] for r in cur.fetchall()]
    expect(values, [decimal.Decimal("3.25"), decimal.Decimal("10"), decimal.Decimal("0.125")], "scales")
    conn.commit()
    conn.close()
    return values


@check
def psycopg2_transactions_and_errors():
    import psycopg2
    import psycopg2.errors

    conn = psycopg2_connect()
    cur = conn.cursor()
    cur.execute("CREATE TABLE p2_tx (id int primary key, v text)")
    conn.commit()
    cur.executemany("INSERT INTO p2_tx VALUES (%s, %s)", [(1, "a"), (2, "b")])
    conn.rollback()
    cur.execute("SELECT count(*) FROM p2_tx")
    expect(cur.fetchone()[0], 0, "rows after rollback")
    cur.executemany("INSERT INTO p2_tx VALUES (%s, %s)", [(1, "a"), (2, "b")])
    conn.commit()
    try:
        cur.execute("INSERT INTO p2_tx VALUES (%s, %s)", (1, "again"))
        raise AssertionError("duplicate key accepted")
    except psycopg2.errors.UniqueViolation as e:
        code = e.pgcode
    try:
        cur.execute("SELECT 1")
        raise AssertionError("statement accepted in a failed transaction")
    except psycopg2.errors.InFailedSqlTransaction as e:
        failed = e.pgcode
    conn.rollback()
    cur.execute("UPDATE p2_tx SET v = %s WHERE id = %s", ("z", 2))
    updated = cur.rowcount
    conn.commit()
    cur.execute("SELECT id, v FROM p2_tx ORDER BY id")
    rows = cur.fetchall()
    expect(rows, [(1, "a"), (2, "z")], "rows after commit")
    conn.close()
    return {"codes": [code, failed], "updated": updated, "rows": rows}


@check
def psycopg2_named_cursor():
    conn = psycopg2_connect()
    cur = conn.cursor()
    cur.execute("CREATE TABLE p2_many (id int primary key, v text)")
    cur.executemany(
        "INSERT INTO p2_many VALUES (%s, %s)", [(i, f"v{i}") for i in range(250)]
    )
    conn.commit()
    named = conn.cursor(name="p2_named")
    named.itersize = 40
    named.execute("SELECT id, v FROM p2_many WHERE id >= %s ORDER BY id", (10,))
    first = named.fetchmany(5)
    rest = list(named)
    named.close()
    expect([r[0] for r in first + rest], list(range(10, 250)), "ids fetched")
    conn.commit()
    conn.close()
    return {"first": first, "count": len(rest)}


@check
def psycopg2_copy():
    conn = psycopg2_connect()
    cur = conn.cursor()
    cur.execute("CREATE TABLE p2_copy (id int primary key, v text, d date)")
    data = io.StringIO("1,one,2024-01-01\n2,\"t,wo\",\n3,three,2024-12-31\n")
    cur.copy_expert("COPY p2_copy FROM STDIN WITH (FORMAT csv)", data)
    out = io.StringIO()
    cur.copy_expert("COPY (SELECT * FROM p2_copy ORDER BY id) TO STDOUT", out)
    conn.commit()
    text = out.getvalue()
    expect(text, "1\tone\t2024-01-01\n2\tt,wo\t\\N\n3\tthree\t2024-12-31\n", "COPY out")
    conn.close()
    return text


def psycopg3_connect(**kw):
    import psycopg

    conn = psycopg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DBNAME, **kw
    )
    conn.execute("SET TimeZone = 'UTC'")
    conn.commit()
    return conn


@check
def psycopg3_binary_parameters_and_results():
    conn = psycopg3_connect()
    conn.execute(f"CREATE TABLE p3_types ({TYPED_COLUMNS})")
    placeholders = ", ".join(["%b"] * len(TYPED_ROW))
    conn.execute(f"INSERT INTO p3_types ({TYPED_NAMES}) VALUES ({placeholders})", TYPED_ROW)
    cur = conn.cursor(binary=True)
    cur.execute(f"SELECT {TYPED_NAMES} FROM p3_types WHERE id = %b", (1,))
    binary_row = cur.fetchone()
    expect(binary_row, TYPED_ROW, "row read back in binary")
    text_row = conn.execute(
        f"SELECT {TYPED_NAMES} FROM p3_types WHERE id = %s", (1,)
    ).fetchone()
    expect(text_row, TYPED_ROW, "row read back in text")
    conn.commit()
    conn.close()
    return [binary_row, [d.type_code for d in cur.description]]


@check
def psycopg3_prepared_statements():
    conn = psycopg3_connect(prepare_threshold=0)
    conn.execute("CREATE TABLE p3_prep (id int primary key, v text)")
    for i in range(5):
        conn.execute("INSERT INTO p3_prep VALUES (%s, %s)", (i, f"v{i}"))
    got = [
        conn.execute("SELECT v FROM p3_prep WHERE id = %s", (i,)).fetchone()[0]
        for i in range(5)
    ]
    expect(got, [f"v{i}" for i in range(5)], "prepared selects")
    conn.commit()
    conn.close()
    return got


@check
def psycopg3_server_side_cursor():
    conn = psycopg3_connect()
    conn.execute("CREATE TABLE p3_many (id int primary key, v text)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO p3_many VALUES (%s, %s)", [(i, f"v{i}") for i in range(300)]
        )
    conn.commit()
    with conn.transaction():
        with conn.cursor(name="p3_server") as cur:
            cur.itersize = 64
            cur.execute("SELECT id, v FROM p3_many WHERE id < %s ORDER BY id", (200,))
            names = [d.name for d in cur.description]
            first = cur.fetchmany(3)
            rest = cur.fetchall()
    expect([r[0] for r in first + rest], list(range(200)), "ids fetched")
    conn.close()
    return {"names": names, "first": first, "rest": len(rest)}


@check
def psycopg3_copy():
    conn = psycopg3_connect()
    conn.execute("CREATE TABLE p3_copy (id int primary key, v text, n numeric(8,2))")
    rows = [(i, f"row {i}" if i % 3 else None, decimal.Decimal(i) / 4) for i in range(50)]
    with conn.cursor() as cur:
        with cur.copy("COPY p3_copy (id, v, n) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        with cur.copy("COPY (SELECT * FROM p3_copy ORDER BY id) TO STDOUT") as copy:
            back = [tuple(r) for r in copy.rows()]
    conn.commit()
    expect(len(back), 50, "rows copied out")
    expect(back[2], ("2", "row 2", "0.50"), "a row copied out")
    conn.close()
    return back[:5]


async def asyncpg_connect():
    import asyncpg

    conn = await asyncpg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=DBNAME
    )
    await conn.execute("SET TimeZone = 'UTC'")
    return conn


@check
def asyncpg_binary_types():
    async def run():
        conn = await asyncpg_connect()
        await conn.execute(f"CREATE TABLE ap_types ({TYPED_COLUMNS})")
        placeholders = ", ".join(f"${i + 1}" for i in range(len(TYPED_ROW)))
        await conn.execute(
            f"INSERT INTO ap_types ({TYPED_NAMES}) VALUES ({placeholders})", *TYPED_ROW
        )
        row = await conn.fetchrow(f"SELECT {TYPED_NAMES} FROM ap_types WHERE id = $1", 1)
        expect(tuple(row), TYPED_ROW, "row read back")
        await conn.close()
        return tuple(row)

    return asyncio.run(run())


@check
def asyncpg_uuid_interval_array_json_types():
    async def run():
        conn = await asyncpg_connect()
        extra = await conn.fetchrow(
            "SELECT $1::uuid AS u, $2::interval AS i, $3::int[] AS a, $4::text[] AS t, "
            "$5::jsonb AS j",
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            datetime.timedelta(days=3, seconds=7),
            [1, None, 3],
            ["x", "y z"],
            '{"k": [1, 2]}',
        )
        await conn.close()
        return tuple(extra)

    return asyncio.run(run())


@check
def asyncpg_prepared_and_transactions():
    async def run():
        conn = await asyncpg_connect()
        await conn.execute("CREATE TABLE ap_prep (id int primary key, v text)")
        await conn.executemany(
            "INSERT INTO ap_prep VALUES ($1, $2)", [(i, f"v{i}") for i in range(20)]
        )
        stmt = await conn.prepare("SELECT id, v FROM ap_prep WHERE id >= $1 ORDER BY id")
        params = [t.name for t in stmt.get_parameters()]
        attrs = [(a.name, a.type.name) for a in stmt.get_attributes()]
        first = await stmt.fetch(17)
        second = await stmt.fetchval(5)
        try:
            async with conn.transaction():
                await conn.execute("DELETE FROM ap_prep")
                raise RuntimeError("undo")
        except RuntimeError:
            pass
        left = await conn.fetchval("SELECT count(*) FROM ap_prep")
        expect(left, 20, "rows after the rolled back block")
        rows = []
        async with conn.transaction():
            async for r in conn.cursor("SELECT id FROM ap_prep ORDER BY id", prefetch=6):
                rows.append(r[0])
        expect(rows, list(range(20)), "rows through a cursor")
        await conn.close()
        return {
            "params": params,
            "attrs": attrs,
            "first": [tuple(r) for r in first],
            "second": second,
        }

    return asyncio.run(run())


@check
def asyncpg_pool_reset():
    import asyncpg

    async def run():
        pool = await asyncpg.create_pool(
            host=HOST,
            port=PORT,
            user=USER,
            password=PASSWORD,
            database=DBNAME,
            min_size=1,
            max_size=1,
        )
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'changed'")
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with pool.acquire() as conn:
            same = pid == await conn.fetchval("SELECT pg_backend_pid()")
            name = await conn.fetchval("SHOW application_name")
        await pool.close()
        expect(same, True, "the pool reused its connection")
        expect(name, "", "application_name after the pool's reset")
        return name

    return asyncio.run(run())


@check
def asyncpg_copy_records():
    async def run():
        conn = await asyncpg_connect()
        await conn.execute("CREATE TABLE ap_copy (id int primary key, v text, ts timestamp)")
        rows = [(i, f"v{i}", datetime.datetime(2024, 1, 1, 0, 0, i)) for i in range(30)]
        result = await conn.copy_records_to_table("ap_copy", records=rows)
        back = await conn.fetch("SELECT id, v, ts FROM ap_copy ORDER BY id")
        expect([tuple(r) for r in back], rows, "rows copied in")
        await conn.close()
        return result

    return asyncio.run(run())


@check
def pg8000_untyped_parameters():
    import pg8000.native

    conn = pg8000.native.Connection(
        USER, host=HOST, port=PORT, password=PASSWORD, database=DBNAME
    )
    conn.run("SET TimeZone = 'UTC'")
    conn.run("CREATE TABLE p8_types (id int primary key, n numeric(6,2), t text, d date, b bool)")
    conn.run(
        "INSERT INTO p8_types VALUES (:id, :n, :t, :d, :b)",
        id=1,
        n=decimal.Decimal("3.25"),
        t="x'y",
        d=datetime.date(2020, 5, 17),
        b=False,
    )
    rows = conn.run("SELECT id, n, t, d, b FROM p8_types WHERE id = :id AND t = :t", id=1, t="x'y")
    expect(
        rows,
        [[1, decimal.Decimal("3.25"), "x'y", datetime.date(2020, 5, 17), False]],
        "row read back",
    )
    columns = [c["name"] for c in conn.columns]
    total = conn.run("SELECT CAST(:a AS int) + :b AS s", a=2, b=3)
    conn.close()
    return {"rows": rows, "columns": columns, "sum": total}


def sqlalchemy_schema(metadata):
    from sqlalchemy import (
        Boolean,
        Column,
        DateTime,
        Index,
        Integer,
        Numeric,
        String,
        Table,
        Text,
    )

    return Table(
        "sa_items",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(40), nullable=False),
        Column("price", Numeric(10, 2)),
        Column("note", Text),
        Column("active", Boolean, nullable=False),
        Column("created", DateTime),
        Index("sa_items_name_idx", "name"),
    )


def sqlalchemy_inspect(conn):
    from sqlalchemy import inspect

    insp = inspect(conn)
    columns = [
        (c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns("sa_items")
    ]
    indexes = sorted(
        (i["name"], i["column_names"], bool(i["unique"])) for i in insp.get_indexes("sa_items")
    )
    return {
        "tables": sorted(t for t in insp.get_table_names() if t.startswith("sa_")),
        "columns": columns,
        "pk": insp.get_pk_constraint("sa_items")["constrained_columns"],
        "indexes": indexes,
    }


def sqlalchemy_psycopg2_engine():
    from sqlalchemy import create_engine

    return create_engine(f"postgresql+psycopg2://{USER}:{PASSWORD}@{HOST}:{PORT}/{DBNAME}")


@check
def sqlalchemy_core_psycopg2():
    from sqlalchemy import MetaData, delete, select, update

    engine = sqlalchemy_psycopg2_engine()
    metadata = MetaData()
    items = sqlalchemy_schema(metadata)
    metadata.create_all(engine)
    created = datetime.datetime(2023, 3, 4, 5, 6, 7)
    with engine.begin() as conn:
        conn.execute(
            items.insert(),
            [
                {"id": i, "name": f"item {i}", "price": decimal.Decimal(i) + decimal.Decimal("0.99"),
                 "note": None, "active": i % 2 == 0, "created": created}
                for i in range(1, 6)
            ],
        )
        conn.execute(update(items).where(items.c.id == 2).values(note="updated"))
        conn.execute(delete(items).where(items.c.id == 5))
    with engine.connect() as conn:
        rows = conn.execute(
            select(items.c.id, items.c.price, items.c.note).where(items.c.active).order_by(items.c.id)
        ).all()
    engine.dispose()
    expect([r[0] for r in rows], [2, 4], "active items")
    return [tuple(r) for r in rows]


@check
def sqlalchemy_inspect_psycopg2():
    """Reads the schema that sqlalchemy_core_psycopg2 created."""
    engine = sqlalchemy_psycopg2_engine()
    with engine.connect() as conn:
        shape = sqlalchemy_inspect(conn)
    engine.dispose()
    expect(shape["pk"], ["id"], "primary key")
    return shape


@check
def sqlalchemy_orm_round_trip():
    from sqlalchemy import ForeignKey, String, create_engine, select
    from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

    class Base(DeclarativeBase):
        pass

    class Author(Base):
        __tablename__ = "sa_authors"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        name: Mapped[str] = mapped_column(String(50))

    class Book(Base):
        __tablename__ = "sa_books"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        title: Mapped[str] = mapped_column(String(80))
        author_id: Mapped[int] = mapped_column()

    engine = create_engine(
        f"postgresql+psycopg://{USER}:{PASSWORD}@{HOST}:{PORT}/{DBNAME}"
    )
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            [
                Author(id=1, name="Le Guin"),
                Author(id=2, name="Lem"),
                Book(id=10, title="The Dispossessed", author_id=1),
                Book(id=11, title="Solaris", author_id=2),
                Book(id=12, title="Earthsea", author_id=1),
            ]
        )
        session.commit()
    with Session(engine) as session:
        book = session.get(Book, 11)
        book.title = "Solaris (1961)"
        session.commit()
        titles = session.execute(
            select(Author.name, Book.title)
            .join(Book, Book.author_id == Author.id)
            .order_by(Book.id)
        ).all()
    engine.dispose()
    expect(len(titles), 3, "joined rows")
    return [tuple(t) for t in titles]


@check
def sqlalchemy_inspect_asyncpg():
    """Reads the schema that sqlalchemy_core_psycopg2 created."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run():
        engine = create_async_engine(
            f"postgresql+asyncpg://{USER}:{PASSWORD}@{HOST}:{PORT}/{DBNAME}"
        )
        async with engine.connect() as conn:
            shape = await conn.run_sync(sqlalchemy_inspect)
        await engine.dispose()
        return shape

    return asyncio.run(run())


@check
def superset_schema_browsing():
    """What Apache Superset asks when a database is added and its tables are browsed: the
    SQLAlchemy inspector through psycopg2, over the tables the checks above made (one with an
    index) and a view of its own, then a first page of the view as SQL Lab reads it."""
    from sqlalchemy import inspect, text

    engine = sqlalchemy_psycopg2_engine()
    with engine.begin() as conn:
        conn.execute(text("DROP VIEW IF EXISTS sa_author_names"))
        conn.execute(text("CREATE VIEW sa_author_names AS SELECT id, name FROM sa_authors"))
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        insp = inspect(conn)
        schema = insp.default_schema_name
        shape = {
            "default_schema": schema,
            "schemas": sorted(s for s in insp.get_schema_names() if s in ("public", "information_schema")),
            "tables": sorted(t for t in insp.get_table_names(schema) if t.startswith("sa_")),
            "views": sorted(v for v in insp.get_view_names(schema) if v.startswith("sa_")),
            "materialized_views": insp.get_materialized_view_names(schema),
        }
        for table in ("sa_items", "sa_authors", "sa_author_names"):
            shape[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in insp.get_columns(table, schema)
                ],
                "pk": insp.get_pk_constraint(table, schema)["constrained_columns"],
                "foreign_keys": [
                    (f["constrained_columns"], f["referred_table"], f["referred_columns"])
                    for f in insp.get_foreign_keys(table, schema)
                ],
                "indexes": sorted(
                    (i["name"], i["column_names"], bool(i["unique"]))
                    for i in insp.get_indexes(table, schema)
                ),
                "unique": insp.get_unique_constraints(table, schema),
                "comment": insp.get_table_comment(table, schema)["text"],
            }
        view = conn.execute(
            text("SELECT * FROM sa_author_names ORDER BY id LIMIT 100")
        ).all()
        shape["view_rows"] = [tuple(r) for r in view]
    engine.dispose()
    expect(shape["sa_items"]["pk"], ["id"], "primary key")
    return shape


def main():
    only = set(sys.argv[6:])
    for fn in CHECKS:
        if only and fn.__name__ not in only:
            continue
        try:
            result = {"check": fn.__name__, "ok": True, "value": canonical(fn())}
        except Exception as e:  # every failure is reported, and the next check runs
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            result = {"check": fn.__name__, "ok": False, "error": detail}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
