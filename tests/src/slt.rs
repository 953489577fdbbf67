//! A sqllogictest-rs database over tokio-postgres's simple query protocol, formatting values
//! the way sqllogictest-rs's `postgres` engine does (NULL as `NULL`, empty strings as
//! `(empty)`), so `.slt` files blessed on PostgreSQL run unchanged against Shoal.

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::SimpleQueryMessage;

/// Connects a client for a test database, its connection driven by a spawned task.
pub async fn connect(conn: String) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .map_err(DbError)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub struct SimpleDb {
    pub client: tokio_postgres::Client,
}

#[derive(Debug)]
pub struct DbError(pub tokio_postgres::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(e) => write!(f, "db error: {}: {}", e.code().code(), e.message()),
            None => write!(f, "db error: {}", self.0),
        }
    }
}

impl std::error::Error for DbError {}

#[async_trait]
impl sqllogictest::AsyncDB for SimpleDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let messages = self.client.simple_query(sql).await.map_err(DbError)?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::Row(r) => {
                    let row: Vec<String> = (0..r.len())
                        .map(|i| match r.get(i) {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(v) => v.to_string(),
                        })
                        .collect();
                    rows.push(row);
                }
                SimpleQueryMessage::RowDescription(d) => columns = Some(d.len()),
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(count)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "postgres"
    }
}
