//! The tokio-postgres driver checks: what a Rust application does through it (typed binary
//! parameters and results, statements whose parameter types the server infers, portals read
//! in batches, COPY in and out, SQLSTATEs and nested transactions), each turned into a JSON
//! value so that the driver test compares Shoal's answers with PostgreSQL's, as it does for
//! the Python and Java drivers.

use std::future::Future;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::drivers::DriverCheck;

type CheckResult = Result<Value, tokio_postgres::Error>;

/// Runs every check on a fresh connection to `conn`, in order.
pub async fn run_tokio_postgres_checks(conn: &str) -> Vec<DriverCheck> {
    let mut out = Vec::new();
    out.push(check(conn, "tokio_postgres_binary_round_trip", binary_round_trip).await);
    out.push(
        check(
            conn,
            "tokio_postgres_inferred_parameter_types",
            inferred_types,
        )
        .await,
    );
    out.push(check(conn, "tokio_postgres_portal_batches", portal_batches).await);
    out.push(check(conn, "tokio_postgres_copy_in_and_out", copy_in_and_out).await);
    out.push(
        check(
            conn,
            "tokio_postgres_errors_and_savepoints",
            errors_and_savepoints,
        )
        .await,
    );
    out
}

async fn check<F, Fut>(conn: &str, name: &str, f: F) -> DriverCheck
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = CheckResult>,
{
    let outcome = match tokio_postgres::connect(conn, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            f(client).await.map_err(describe)
        }
        Err(e) => Err(describe(e)),
    };
    DriverCheck {
        name: name.to_string(),
        outcome,
    }
}

/// The server's SQLSTATE and message, or the client's own error.
fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Every common type sent as a binary parameter and read back as a binary result.
async fn binary_round_trip(client: Client) -> CheckResult {
    let date = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).expect("valid date");
    let timestamp = date
        .and_hms_micro_opt(13, 14, 15, 123_456)
        .expect("valid time");
    let instant = timestamp.and_utc();
    let id = uuid::Uuid::parse_str("12345678-1234-5678-1234-567812345678").expect("valid uuid");
    let doc = json!({"k": [1, 2], "s": "x"});
    let row = client
        .query_one(
            "SELECT $1::int2, $2::int4, $3::int8, $4::float4, $5::float8, $6::bool, $7::text, \
             $8::bytea, $9::date, $10::timestamp, $11::timestamptz, $12::uuid, $13::jsonb, \
             $14::int4[], $15::text[], $16::int4",
            &[
                &-7i16,
                &2_000_000_000i32,
                &-9_000_000_000_000i64,
                &1.5f32,
                &-2.25e300f64,
                &true,
                &"héllo",
                &vec![0u8, 255, 10],
                &date,
                &timestamp,
                &instant,
                &id,
                &doc,
                &vec![Some(1i32), None, Some(3)],
                &vec!["a".to_string(), "b c".to_string()],
                &None::<i32>,
            ],
        )
        .await?;
    Ok(json!([
        row.try_get::<_, i16>(0)?,
        row.try_get::<_, i32>(1)?,
        row.try_get::<_, i64>(2)?,
        row.try_get::<_, f32>(3)?,
        row.try_get::<_, f64>(4)?,
        row.try_get::<_, bool>(5)?,
        row.try_get::<_, String>(6)?,
        row.try_get::<_, Vec<u8>>(7)?,
        row.try_get::<_, chrono::NaiveDate>(8)?.to_string(),
        row.try_get::<_, chrono::NaiveDateTime>(9)?.to_string(),
        row.try_get::<_, chrono::DateTime<chrono::Utc>>(10)?
            .to_rfc3339(),
        row.try_get::<_, uuid::Uuid>(11)?.to_string(),
        row.try_get::<_, Value>(12)?,
        row.try_get::<_, Vec<Option<i32>>>(13)?,
        row.try_get::<_, Vec<String>>(14)?,
        row.try_get::<_, Option<i32>>(15)?,
    ]))
}

/// Statements prepared without types: the server says what each parameter and column is.
async fn inferred_types(client: Client) -> CheckResult {
    client
        .batch_execute(
            "CREATE TABLE tp_items (id bigint PRIMARY KEY, name text NOT NULL, \
             price numeric(10,2), added date)",
        )
        .await?;
    let insert = client
        .prepare("INSERT INTO tp_items (id, name, added) VALUES ($1, $2, $3)")
        .await?;
    let select = client
        .prepare(
            "SELECT id, name, price, added FROM tp_items WHERE id > $1 AND name <> $2 ORDER BY id",
        )
        .await?;
    let date = chrono::NaiveDate::from_ymd_opt(2023, 5, 1).expect("valid date");
    for id in 1..=3i64 {
        client
            .execute(&insert, &[&id, &format!("item {id}"), &date])
            .await?;
    }
    let rows = client.query(&select, &[&1i64, &"item 3"]).await?;
    let names = |types: &[Type]| {
        types
            .iter()
            .map(|t| t.name().to_string())
            .collect::<Vec<_>>()
    };
    Ok(json!({
        "insert_params": names(insert.params()),
        "select_params": names(select.params()),
        "select_columns": select
            .columns()
            .iter()
            .map(|c| format!("{} {}", c.name(), c.type_().name()))
            .collect::<Vec<_>>(),
        "rows": rows
            .iter()
            .map(|r| Ok(json!([r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?])))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?,
    }))
}

/// A portal bound once and executed with a row limit until it runs out (portal suspension).
async fn portal_batches(mut client: Client) -> CheckResult {
    client
        .batch_execute(
            "CREATE TABLE tp_batches (n int PRIMARY KEY); \
             INSERT INTO tp_batches SELECT * FROM generate_series(1, 10)",
        )
        .await?;
    let tx = client.transaction().await?;
    let portal = tx
        .bind("SELECT n FROM tp_batches WHERE n > $1 ORDER BY n", &[&2i32])
        .await?;
    let mut batches = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 3).await?;
        if rows.is_empty() {
            break;
        }
        let values = rows
            .iter()
            .map(|r| r.try_get::<_, i32>(0))
            .collect::<Result<Vec<_>, _>>()?;
        batches.push(values);
    }
    tx.commit().await?;
    Ok(json!(batches))
}

/// COPY FROM STDIN in CSV through a sink, then COPY TO STDOUT read as a stream.
async fn copy_in_and_out(client: Client) -> CheckResult {
    client
        .batch_execute("CREATE TABLE tp_copy (id int PRIMARY KEY, note text, at date)")
        .await?;
    let sink = client
        .copy_in("COPY tp_copy FROM STDIN WITH (FORMAT csv)")
        .await?;
    let mut sink = Box::pin(sink);
    let data = "1,first,2024-01-01\n2,\"with, comma\",\n3,,2024-12-31\n";
    sink.send(bytes::Bytes::from(data)).await?;
    let copied = sink.as_mut().finish().await?;
    let stream = client
        .copy_out("COPY (SELECT * FROM tp_copy ORDER BY id) TO STDOUT")
        .await?;
    let mut stream = Box::pin(stream);
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk?);
    }
    Ok(json!({"copied": copied, "out": String::from_utf8_lossy(&text)}))
}

/// SQLSTATEs of a unique violation and of a statement in an aborted block; a nested
/// transaction (SAVEPOINT) rolled back while its parent commits.
async fn errors_and_savepoints(mut client: Client) -> CheckResult {
    client
        .batch_execute("CREATE TABLE tp_tx (id int PRIMARY KEY, v text)")
        .await?;
    client
        .execute("INSERT INTO tp_tx VALUES (1, 'one')", &[])
        .await?;
    let duplicate = client
        .execute("INSERT INTO tp_tx VALUES (1, 'again')", &[])
        .await
        .err()
        .and_then(|e| e.code().map(|c| c.code().to_string()));
    let tx = client.transaction().await?;
    let failed = tx.execute("SELECT 1/0", &[]).await.err();
    let aborted = tx
        .execute("SELECT 1", &[])
        .await
        .err()
        .and_then(|e| e.code().map(|c| c.code().to_string()));
    tx.rollback().await?;
    let mut tx = client.transaction().await?;
    tx.execute("INSERT INTO tp_tx VALUES (2, 'kept')", &[])
        .await?;
    let inner = tx.transaction().await?;
    inner
        .execute("INSERT INTO tp_tx VALUES (3, 'undone')", &[])
        .await?;
    inner.rollback().await?;
    tx.commit().await?;
    let rows = client
        .query("SELECT id, v FROM tp_tx ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| Ok(json!([r.try_get::<_, i32>(0)?, r.try_get::<_, String>(1)?])))
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    Ok(json!({
        "duplicate": duplicate,
        "division": failed.and_then(|e| e.code().map(|c| c.code().to_string())),
        "aborted": aborted,
        "rows": rows,
    }))
}
