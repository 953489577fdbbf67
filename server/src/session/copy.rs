//! COPY FROM STDIN and COPY TO STDOUT in text and CSV formats.
//!
//! COPY FROM parses the incoming stream record by record (keeping only an unfinished record
//! between CopyData messages) and inserts every 4096 rows through the ordinary INSERT path
//! (casts, defaults, NOT NULL). Outside a transaction block the rows feed a bulk load
//! (`shoal_storage::BulkLoad`: sorted runs on disk, one atomic ingestion at the end), so memory
//! stays flat whatever the input size; inside a block they join the block's transaction.
//! Either way the load applies completely or not at all.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget,
};
use futures::StreamExt;
use pgwire::api::portal::Format;
use shoal_coord::MetaStore;
use shoal_executor::{BulkSink, ExecError};
use shoal_planner::ddl::{ident_name, object_name};
use shoal_planner::DmlOptions;
use shoal_storage::{StorageError, Txn};

use super::{Outcome, Session};
use crate::error::{ServerError, ServerResult};
use crate::wire::encode;

const FLUSH_ROWS: usize = 4096;

#[derive(Debug, Clone)]
pub struct CopyFormat {
    pub csv: bool,
    pub delimiter: u8,
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

impl CopyFormat {
    fn new(csv: bool) -> Self {
        CopyFormat {
            csv,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { String::new() } else { "\\N".into() },
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }
}

/// An unfinished COPY FROM STDIN.
pub struct CopyIn {
    pub format: CopyFormat,
    pub columns: usize,
    target: String,
    column_list: String,
    pending: Vec<u8>,
    rows: Vec<Vec<Option<String>>>,
    skip_header: bool,
    txn: Arc<Txn>,
    implicit: bool,
    /// Outside a transaction block: the bulk load the rows go to.
    bulk: Option<BulkSink>,
    table_name: String,
    pub count: u64,
    finished: bool,
}

fn parse_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> ServerResult<CopyFormat> {
    let mut csv = false;
    for o in options {
        if let CopyOption::Format(f) = o {
            match f.value.to_lowercase().as_str() {
                "csv" => csv = true,
                "text" => csv = false,
                other => return Err(ServerError::NotSupported(format!("COPY format {other}"))),
            }
        }
    }
    if legacy.iter().any(|o| matches!(o, CopyLegacyOption::Csv(_))) {
        csv = true;
    }
    if legacy.iter().any(|o| matches!(o, CopyLegacyOption::Binary)) {
        return Err(ServerError::NotSupported("COPY binary format".into()));
    }
    let mut f = CopyFormat::new(csv);
    // Options Shoal does not implement are refused rather than ignored: ignoring FORCE_NULL or
    // an encoding would load other values than the client asked for.
    let unsupported = |what: String| Err(ServerError::NotSupported(format!("COPY option {what}")));
    for o in options {
        match o {
            CopyOption::Format(_) => {}
            // No hint bits to set: every committed row is visible to later snapshots anyway.
            CopyOption::Freeze(_) => {}
            CopyOption::Delimiter(c) => f.delimiter = *c as u8,
            CopyOption::Null(n) => f.null = n.clone(),
            CopyOption::Header(h) => f.header = *h,
            CopyOption::Quote(c) => f.quote = *c as u8,
            CopyOption::Escape(c) => f.escape = *c as u8,
            CopyOption::Encoding(e) if is_utf8(e) => {}
            other => return unsupported(other.to_string()),
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Delimiter(c) => f.delimiter = *c as u8,
            CopyLegacyOption::Null(n) => f.null = n.clone(),
            CopyLegacyOption::Header => f.header = true,
            CopyLegacyOption::Csv(list) => {
                for c in list {
                    match c {
                        CopyLegacyCsvOption::Header => f.header = true,
                        CopyLegacyCsvOption::Quote(q) => f.quote = *q as u8,
                        CopyLegacyCsvOption::Escape(e) => f.escape = *e as u8,
                        other => return unsupported(other.to_string()),
                    }
                }
            }
            other => return unsupported(other.to_string()),
        }
    }
    Ok(f)
}

/// Whether a COPY `ENCODING` names UTF-8, the only encoding Shoal's connections use.
fn is_utf8(encoding: &str) -> bool {
    matches!(
        encoding
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str(),
        "utf8" | "unicode"
    )
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
        let bulk = if implicit && !has_secondary_indexes {
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
            columns: names.len(),
            skip_header: format.header,
            format,
            target: format!("\"{schema}\".\"{table}\""),
            column_list: names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", "),
            pending: Vec::new(),
            rows: Vec::new(),
            txn,
            implicit,
            bulk,
            table_name,
            count: 0,
            finished: false,
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
        if copy.finished {
            return Ok(());
        }
        copy.pending.extend_from_slice(data);
        let records = split_records(copy)?;
        for r in records {
            if copy.skip_header {
                copy.skip_header = false;
                continue;
            }
            copy.rows.push(r);
        }
        if copy.rows.len() >= FLUSH_ROWS {
            self.copy_flush(copy).await?;
        }
        Ok(())
    }

    /// Ends a COPY FROM STDIN successfully: loads the rest and commits an implicit transaction.
    pub async fn copy_done(&self, copy: &mut CopyIn) -> ServerResult<u64> {
        if !copy.pending.is_empty() && !copy.finished {
            copy.pending.push(b'\n');
            let records = split_records(copy)?;
            for r in records {
                if copy.skip_header {
                    copy.skip_header = false;
                    continue;
                }
                copy.rows.push(r);
            }
        }
        self.copy_flush(copy).await?;
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
            self.commit_implicit(copy.txn.clone()).await?;
        }
        Ok(copy.count)
    }

    pub fn copy_abort(&self, copy: &CopyIn) {
        if let Some(load) = copy.bulk.as_ref().and_then(|b| b.lock().take()) {
            load.abort();
        }
        if copy.implicit {
            copy.txn.rollback();
        } else {
            self.fail_block();
        }
    }

    async fn copy_flush(&self, copy: &mut CopyIn) -> ServerResult<()> {
        if copy.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut copy.rows);
        let fields: Vec<Field> = (0..copy.columns)
            .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(copy.columns);
        for i in 0..copy.columns {
            let values: StringArray = rows.iter().map(|r| r.get(i).cloned().flatten()).collect();
            columns.push(Arc::new(values));
        }
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
        let batches = ctx.sql(&sql).await?.collect().await?;
        for b in batches {
            if let Some(c) = b
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            {
                copy.count += c.values().iter().sum::<u64>();
            }
        }
        Ok(())
    }
}

/// Splits complete records off the pending bytes, leaving an unfinished one behind.
fn split_records(copy: &mut CopyIn) -> ServerResult<Vec<Vec<Option<String>>>> {
    let mut records = Vec::new();
    let buf = std::mem::take(&mut copy.pending);
    let mut start = 0;
    let f = copy.format.clone();
    let mut i = 0;
    let mut in_quotes = false;
    while i < buf.len() {
        let b = buf[i];
        if f.csv {
            if in_quotes {
                if b == f.escape && f.escape != f.quote && i + 1 < buf.len() {
                    i += 2;
                    continue;
                }
                if b == f.quote {
                    if f.escape == f.quote && i + 1 < buf.len() && buf[i + 1] == f.quote {
                        i += 2;
                        continue;
                    }
                    in_quotes = false;
                }
            } else if b == f.quote {
                in_quotes = true;
            }
        } else if b == b'\\' && i + 1 < buf.len() {
            i += 2;
            continue;
        }
        if b == b'\n' && !in_quotes {
            let mut line = &buf[start..i];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            start = i + 1;
            if line == b"\\." {
                copy.finished = true;
                break;
            }
            let record = if f.csv {
                parse_csv(line, &f)?
            } else {
                parse_text(line, &f)?
            };
            if record.len() != copy.columns {
                return Err(ServerError::InvalidText(format!(
                    "COPY row has {} columns, expected {}",
                    record.len(),
                    copy.columns
                )));
            }
            records.push(record);
        }
        i += 1;
    }
    if !copy.finished {
        copy.pending = buf[start..].to_vec();
    }
    Ok(records)
}

fn utf8(bytes: Vec<u8>) -> ServerResult<String> {
    String::from_utf8(bytes)
        .map_err(|_| ServerError::InvalidText("invalid byte sequence for encoding \"UTF8\"".into()))
}

fn parse_text(line: &[u8], f: &CopyFormat) -> ServerResult<Vec<Option<String>>> {
    let mut out = Vec::new();
    for raw in line.split(|b| *b == f.delimiter) {
        if raw == f.null.as_bytes() {
            out.push(None);
            continue;
        }
        let mut v = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && i + 1 < raw.len() {
                let c = raw[i + 1];
                i += 2;
                match c {
                    b'n' => v.push(b'\n'),
                    b't' => v.push(b'\t'),
                    b'r' => v.push(b'\r'),
                    b'b' => v.push(8),
                    b'f' => v.push(12),
                    b'v' => v.push(11),
                    b'0'..=b'7' => {
                        let mut n = (c - b'0') as u32;
                        let mut k = 0;
                        while k < 2 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                            n = n * 8 + (raw[i] - b'0') as u32;
                            i += 1;
                            k += 1;
                        }
                        v.push(n as u8);
                    }
                    other => v.push(other),
                }
            } else {
                v.push(raw[i]);
                i += 1;
            }
        }
        out.push(Some(utf8(v)?));
    }
    Ok(out)
}

fn parse_csv(line: &[u8], f: &CopyFormat) -> ServerResult<Vec<Option<String>>> {
    let mut out = Vec::new();
    let mut field = Vec::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut i = 0;
    loop {
        if i >= line.len() {
            break;
        }
        let b = line[i];
        if quoted {
            if b == f.escape
                && i + 1 < line.len()
                && (line[i + 1] == f.quote || line[i + 1] == f.escape)
                && (f.escape != f.quote || line[i + 1] == f.quote)
            {
                field.push(line[i + 1]);
                i += 2;
                continue;
            }
            if b == f.quote {
                quoted = false;
            } else {
                field.push(b);
            }
        } else if b == f.quote {
            quoted = true;
            was_quoted = true;
        } else if b == f.delimiter {
            out.push(csv_value(std::mem::take(&mut field), was_quoted, f)?);
            was_quoted = false;
        } else {
            field.push(b);
        }
        i += 1;
    }
    out.push(csv_value(field, was_quoted, f)?);
    Ok(out)
}

fn csv_value(field: Vec<u8>, quoted: bool, f: &CopyFormat) -> ServerResult<Option<String>> {
    if !quoted && field == f.null.as_bytes() {
        return Ok(None);
    }
    utf8(field).map(Some)
}

fn format_line(fields: &[Option<&[u8]>], f: &CopyFormat) -> Bytes {
    let mut out = Vec::new();
    for (i, v) in fields.iter().enumerate() {
        if i > 0 {
            out.push(f.delimiter);
        }
        match v {
            None => out.extend_from_slice(f.null.as_bytes()),
            Some(v) if f.csv => {
                let needs_quotes = v.is_empty()
                    || v.iter()
                        .any(|b| *b == f.delimiter || *b == f.quote || *b == b'\n' || *b == b'\r');
                if needs_quotes {
                    out.push(f.quote);
                    for b in v.iter() {
                        if *b == f.quote || *b == f.escape {
                            out.push(f.escape);
                        }
                        out.push(*b);
                    }
                    out.push(f.quote);
                } else {
                    out.extend_from_slice(v);
                }
            }
            Some(v) => {
                for b in v.iter() {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b if *b == f.delimiter => {
                            out.push(b'\\');
                            out.push(*b);
                        }
                        b => out.push(*b),
                    }
                }
            }
        }
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_csv_fields() {
        let t = CopyFormat::new(false);
        assert_eq!(
            parse_text(b"1\ta\\tb\t\\N", &t).unwrap(),
            vec![Some("1".into()), Some("a\tb".into()), None]
        );
        let c = CopyFormat::new(true);
        assert_eq!(
            parse_csv(b"1,\"x,\"\"y\"\"\",,\"\"", &c).unwrap(),
            vec![
                Some("1".into()),
                Some("x,\"y\"".into()),
                None,
                Some("".into())
            ]
        );
        let line = format_line(&[Some(b"a,b"), None, Some(b"")], &c);
        assert_eq!(&line[..], b"\"a,b\",,\"\"\n");
    }
}
