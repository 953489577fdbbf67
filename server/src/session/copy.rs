//! COPY FROM STDIN and COPY TO STDOUT in text and CSV formats.
//!
//! COPY FROM parses the incoming stream record by record (keeping only an unfinished record
//! between CopyData messages, see `copy_format.rs`) and inserts every [`FLUSH_ROWS`] rows
//! through the ordinary INSERT path (casts, defaults, NOT NULL). Each insert runs as a task of
//! its own while the next rows are parsed, so parsing and writing overlap. Outside a
//! transaction block the rows feed a bulk load (`shoal_storage::BulkLoad`: sorted runs on
//! disk, one atomic ingestion at the end), so memory stays flat whatever the input size, and
//! [`BULK_INSERTS`] inserts run at once, since the load checks uniqueness only at its end;
//! inside a block they join the block's transaction one insert at a time, each seeing the
//! rows of the one before. Either way the load applies completely or not at all.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget};
use futures::StreamExt;
use pgwire::api::portal::Format;
use shoal_coord::MetaStore;
use shoal_executor::{BulkSink, ExecError};
use shoal_planner::ddl::{ident_name, object_name};
use shoal_planner::DmlOptions;
use shoal_storage::{StorageError, Txn};
use tokio::task::JoinHandle;

pub use super::copy_format::CopyFormat;
use super::copy_format::{format_line, parse_options, CopyReader, ParsedColumns};
use super::{Outcome, Session};
use crate::error::{ServerError, ServerResult};
use crate::wire::encode;

/// Rows parsed before they are inserted: enough that planning the INSERT is a small part of
/// its cost, few enough that the batches of the inserts running at once stay small.
const FLUSH_ROWS: usize = 8192;
/// Inserts of one bulk load running at once: casting and encoding rows is the costly part of
/// a load, and it parallelizes.
const BULK_INSERTS: usize = 2;

/// An unfinished COPY FROM STDIN.
pub struct CopyIn {
    target: String,
    column_list: String,
    reader: CopyReader,
    parsed: ParsedColumns,
    txn: Arc<Txn>,
    implicit: bool,
    /// Outside a transaction block: the bulk load the rows go to.
    bulk: Option<BulkSink>,
    table_name: String,
    /// The inserts of earlier batches of rows that are still running, oldest first.
    inserting: VecDeque<JoinHandle<ServerResult<u64>>>,
    count: u64,
}

impl Session {
    pub(super) async fn copy(
        &self,
        source: CopySource,
        to: bool,
        target: CopyTarget,
        options: Vec<CopyOption>,
        legacy: Vec<CopyLegacyOption>,
    ) -> ServerResult<Outcome> {
        let format = parse_options(&options, &legacy)?;
        match (to, &target) {
            (false, CopyTarget::Stdin) | (true, CopyTarget::Stdout) => {}
            _ => {
                return Err(ServerError::NotSupported(
                    "COPY with files or programs (use STDIN/STDOUT)".into(),
                ))
            }
        }
        if to {
            let query = match source {
                CopySource::Table {
                    table_name,
                    columns,
                } => {
                    let cols = if columns.is_empty() {
                        "*".to_string()
                    } else {
                        columns
                            .iter()
                            .map(|c| format!("\"{}\"", ident_name(c)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let (schema, table) = object_name(&table_name)?;
                    format!("SELECT {cols} FROM \"{schema}\".\"{table}\"")
                }
                CopySource::Query(q) => q.to_string(),
            };
            return self.copy_out(&query, format).await;
        }
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(ServerError::Syntax("COPY FROM needs a table".into()));
        };
        let (schema, table) = object_name(&table_name)?;
        let catalog = self.meta.catalog();
        let def = catalog
            .table(&schema, &table)
            .ok_or_else(|| shoal_coord::CoordError::RelationNotFound(table.clone()))?;
        let names: Vec<String> = if columns.is_empty() {
            def.visible_columns().map(|c| c.name.clone()).collect()
        } else {
            columns.iter().map(ident_name).collect()
        };
        let (txn, implicit) = self.statement_txn()?;
        // A bulk load writes rows only; a table with secondary indexes takes the transactional
        // path, which maintains their entries.
        let has_secondary_indexes = def.indexes.iter().any(|i| !i.primary);
        // Rows of other nodes' partitions go to them in a transaction across nodes.
        let local = self.node.cluster.local_node();
        // A bulk load ingests files that replication does not carry: replicated tables load
        // through transactions.
        let all_led_here = def
            .partitions
            .iter()
            .all(|p| p.leader == local && p.followers.is_empty());
        let bulk = if implicit && !has_secondary_indexes && all_led_here {
            let store = self.node.store.clone();
            let (id, check) = (def.id, !def.primary_key.is_empty());
            let load = tokio::task::spawn_blocking(move || store.bulk_load(id, check))
                .await
                .map_err(|e| ServerError::Internal(e.to_string()))??;
            Some(Arc::new(parking_lot::Mutex::new(Some(load))))
        } else {
            None
        };
        let table_name = def.name.clone();
        let columns = names.len();
        *self.copy_in.lock().await = Some(CopyIn {
            reader: CopyReader::new(format),
            parsed: ParsedColumns::new(names.len()),
            target: format!("\"{schema}\".\"{table}\""),
            column_list: names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", "),
            txn,
            implicit,
            bulk,
            table_name,
            inserting: VecDeque::new(),
            count: 0,
        });
        Ok(Outcome::CopyIn { columns })
    }

    async fn copy_out(&self, query: &str, format: CopyFormat) -> ServerResult<Outcome> {
        let stmt = super::ddl::parse_one(query)?;
        let Outcome::Rows {
            schema, mut stream, ..
        } = self.run_dml_or_query(stmt, None).await?
        else {
            return Err(ServerError::Internal("COPY query returned no rows".into()));
        };
        let fields = Arc::new(encode::fields_for(&schema, &Format::UnifiedText)?);
        let mut lines = Vec::new();
        if format.header {
            let names: Vec<Option<&[u8]>> = schema
                .fields()
                .iter()
                .map(|f| Some(f.name().as_bytes()))
                .collect();
            lines.push(format_line(&names, &format));
        }
        let header = format.header;
        while let Some(batch) = stream.next().await {
            for row in encode::encode(fields.clone(), batch?) {
                let row = row.map_err(|e| ServerError::Internal(e.to_string()))?;
                lines.push(format_line(&encode::text_fields(&row), &format));
            }
        }
        // pgwire counts CopyData messages as rows: the header travels with the first row.
        if header && lines.len() > 1 {
            let first = lines.remove(1);
            let mut merged = lines[0].to_vec();
            merged.extend_from_slice(&first);
            lines[0] = Bytes::from(merged);
        }
        Ok(Outcome::CopyOut {
            format,
            columns: schema.fields().len(),
            lines,
        })
    }

    /// Takes the next chunk of a COPY FROM STDIN.
    pub async fn copy_data(&self, copy: &mut CopyIn, data: &[u8]) -> ServerResult<()> {
        copy.reader.read(data, false, &mut copy.parsed)?;
        if copy.parsed.rows >= FLUSH_ROWS {
            self.copy_flush(copy).await?;
        }
        Ok(())
    }

    /// Ends a COPY FROM STDIN successfully: loads the rest and commits an implicit transaction.
    pub async fn copy_done(&self, copy: &mut CopyIn) -> ServerResult<u64> {
        copy.reader.read(&[], true, &mut copy.parsed)?;
        self.copy_flush(copy).await?;
        copy_settle(copy).await?;
        if let Some(load) = copy.bulk.as_ref().and_then(|b| b.lock().take()) {
            let table = copy.table_name.clone();
            return tokio::task::spawn_blocking(move || load.finish())
                .await
                .map_err(|e| ServerError::Internal(e.to_string()))?
                .map_err(|e| match e {
                    StorageError::DuplicateKey => ExecError::UniqueViolation {
                        constraint: format!("{table}_pkey"),
                    }
                    .into(),
                    other => other.into(),
                });
        }
        if copy.implicit {
            self.commit_txn(copy.txn.clone()).await?;
        }
        Ok(copy.count)
    }

    pub async fn copy_abort(&self, copy: &mut CopyIn) {
        for inserting in copy.inserting.drain(..) {
            inserting.abort();
        }
        let bulk = copy.bulk.clone();
        // A cancelled insert may still hold the bulk load on a blocking thread: wait there.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(load) = bulk.as_ref().and_then(|b| b.lock().take()) {
                load.abort();
            }
        })
        .await;
        if copy.implicit {
            self.rollback_txn(copy.txn.clone()).await;
        }
        if !copy.implicit {
            self.fail_block();
        }
    }

    /// Starts inserting the rows parsed so far, once fewer inserts than allowed are running.
    async fn copy_flush(&self, copy: &mut CopyIn) -> ServerResult<()> {
        let running = if copy.bulk.is_some() { BULK_INSERTS } else { 1 };
        while copy.inserting.len() >= running {
            copy_settle_oldest(copy).await?;
        }
        if copy.parsed.rows == 0 {
            return Ok(());
        }
        let columns = copy.parsed.finish();
        let fields: Vec<Field> = (0..columns.len())
            .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let state = self.statement_state(
            copy.txn.clone(),
            DmlOptions {
                bulk: copy.bulk.clone(),
                ..DmlOptions::default()
            },
        );
        let rows = Arc::new(MemTable::try_new(schema, vec![vec![batch]])?);
        let ctx = super::dml::scratch_context(state, rows)?;
        let sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM {}",
            copy.target,
            copy.column_list,
            super::dml::SCRATCH_TABLE
        );
        copy.inserting
            .push_back(tokio::spawn(insert_rows(ctx, sql)));
        Ok(())
    }
}

/// Waits for every running insert of a COPY and counts their rows.
async fn copy_settle(copy: &mut CopyIn) -> ServerResult<()> {
    while !copy.inserting.is_empty() {
        copy_settle_oldest(copy).await?;
    }
    Ok(())
}

/// Waits for the oldest running insert of a COPY and counts its rows.
async fn copy_settle_oldest(copy: &mut CopyIn) -> ServerResult<()> {
    if let Some(inserting) = copy.inserting.pop_front() {
        copy.count += inserting
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
    }
    Ok(())
}

/// Runs one INSERT of a COPY; its count of rows.
async fn insert_rows(ctx: SessionContext, sql: String) -> ServerResult<u64> {
    let batches = ctx.sql(&sql).await?.collect().await?;
    Ok(batches
        .iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
        .map(|c| c.values().iter().sum::<u64>())
        .sum())
}
