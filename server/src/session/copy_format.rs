//! The text and CSV formats of COPY: its options, records parsed from the incoming byte
//! stream straight into one string column per target column (no allocation per field), and
//! rows formatted for COPY TO.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};

use crate::error::{ServerError, ServerResult};

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

pub(super) fn parse_options(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> ServerResult<CopyFormat> {
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

/// Records parsed so far, as one string column per target column.
pub(super) struct ParsedColumns {
    columns: Vec<StringBuilder>,
    pub rows: usize,
    /// The current record's unescaped bytes, field after field, and each field's end
    /// (`None`: NULL); kept between records to reuse their allocations.
    bytes: Vec<u8>,
    fields: Vec<Option<usize>>,
}

impl ParsedColumns {
    pub fn new(columns: usize) -> Self {
        ParsedColumns {
            columns: (0..columns).map(|_| StringBuilder::new()).collect(),
            rows: 0,
            bytes: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// The columns of the records parsed so far, which starts over.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        self.columns
            .iter_mut()
            .map(|c| Arc::new(c.finish()) as ArrayRef)
            .collect()
    }

    /// Ends the current field: NULL, or the bytes pushed since the previous field.
    fn end_field(&mut self, null: bool) {
        self.fields.push((!null).then_some(self.bytes.len()));
    }

    /// Moves the parsed record into the columns.
    fn end_record(&mut self) -> ServerResult<()> {
        if self.fields.len() != self.columns.len() {
            return Err(ServerError::InvalidText(format!(
                "COPY row has {} columns, expected {}",
                self.fields.len(),
                self.columns.len()
            )));
        }
        let mut start = 0;
        for (field, column) in self.fields.iter().zip(&mut self.columns) {
            match field {
                None => column.append_null(),
                Some(end) => {
                    let text = std::str::from_utf8(&self.bytes[start..*end]).map_err(|_| {
                        ServerError::InvalidText(
                            "invalid byte sequence for encoding \"UTF8\"".into(),
                        )
                    })?;
                    column.append_value(text);
                    start = *end;
                }
            }
        }
        self.rows += 1;
        self.forget_record();
        Ok(())
    }

    fn forget_record(&mut self) {
        self.bytes.clear();
        self.fields.clear();
    }
}

/// Where parsing of a COPY stream stands between two chunks of it.
pub(super) struct CopyReader {
    pub format: CopyFormat,
    /// The unfinished record at the end of the last chunk.
    pending: Vec<u8>,
    skip_header: bool,
    /// `\.` ended the data; the rest of the stream is ignored.
    pub finished: bool,
}

impl CopyReader {
    pub fn new(format: CopyFormat) -> Self {
        CopyReader {
            skip_header: format.header,
            format,
            pending: Vec::new(),
            finished: false,
        }
    }

    /// Parses the complete records of `chunk` (after what was pending) into `out`, keeping
    /// an unfinished one for the next chunk; `end` marks the end of the stream, where the
    /// last record needs no newline.
    pub fn read(&mut self, chunk: &[u8], end: bool, out: &mut ParsedColumns) -> ServerResult<()> {
        if self.finished {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        if end && !buf.is_empty() && buf.last() != Some(&b'\n') {
            buf.push(b'\n');
        }
        let f = &self.format;
        let mut start = 0;
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
                    self.finished = true;
                    return Ok(());
                }
                if f.csv {
                    parse_csv(line, f, out);
                } else {
                    parse_text(line, f, out);
                }
                if self.skip_header {
                    self.skip_header = false;
                    out.forget_record();
                } else {
                    out.end_record()?;
                }
            }
            i += 1;
        }
        self.pending = buf[start..].to_vec();
        Ok(())
    }
}

fn parse_text(line: &[u8], f: &CopyFormat, out: &mut ParsedColumns) {
    for raw in line.split(|b| *b == f.delimiter) {
        if raw == f.null.as_bytes() {
            out.end_field(true);
            continue;
        }
        let v = &mut out.bytes;
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
        out.end_field(false);
    }
}

fn parse_csv(line: &[u8], f: &CopyFormat, out: &mut ParsedColumns) {
    let mut field_start = out.bytes.len();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut i = 0;
    // An unquoted field equal to the NULL string is NULL; a quoted one never is.
    let end_field = |out: &mut ParsedColumns, start: usize, was_quoted: bool| {
        let null = !was_quoted && out.bytes[start..] == *f.null.as_bytes();
        if null {
            out.bytes.truncate(start);
        }
        out.end_field(null);
    };
    while i < line.len() {
        let b = line[i];
        if quoted {
            if b == f.escape
                && i + 1 < line.len()
                && (line[i + 1] == f.quote || line[i + 1] == f.escape)
                && (f.escape != f.quote || line[i + 1] == f.quote)
            {
                out.bytes.push(line[i + 1]);
                i += 2;
                continue;
            }
            if b == f.quote {
                quoted = false;
            } else {
                out.bytes.push(b);
            }
        } else if b == f.quote {
            quoted = true;
            was_quoted = true;
        } else if b == f.delimiter {
            end_field(out, field_start, was_quoted);
            field_start = out.bytes.len();
            was_quoted = false;
        } else {
            out.bytes.push(b);
        }
        i += 1;
    }
    end_field(out, field_start, was_quoted);
}

pub(super) fn format_line(fields: &[Option<&[u8]>], f: &CopyFormat) -> Bytes {
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
    use datafusion::arrow::array::Array;

    use super::*;

    /// The records `input` holds, each field as text or None for NULL.
    fn records(format: CopyFormat, columns: usize, input: &[u8]) -> Vec<Vec<Option<String>>> {
        let mut reader = CopyReader::new(format);
        let mut out = ParsedColumns::new(columns);
        // Split the input anywhere: records may straddle chunks.
        let (a, b) = input.split_at(input.len() / 2);
        reader.read(a, false, &mut out).unwrap();
        reader.read(b, true, &mut out).unwrap();
        let columns: Vec<_> = out.columns.iter_mut().map(|c| c.finish()).collect();
        (0..out.rows)
            .map(|r| {
                columns
                    .iter()
                    .map(|c| (!c.is_null(r)).then(|| c.value(r).to_string()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn text_and_csv_fields() {
        let t = CopyFormat::new(false);
        assert_eq!(
            records(t, 3, b"1\ta\\tb\t\\N\n2\t\\101\t"),
            vec![
                vec![Some("1".into()), Some("a\tb".into()), None],
                vec![Some("2".into()), Some("A".into()), Some("".into())]
            ]
        );
        let mut c = CopyFormat::new(true);
        c.header = true;
        assert_eq!(
            records(
                c.clone(),
                4,
                b"h1,h2,h3,h4\r\n1,\"x,\"\"y\"\"\",,\"\"\n\"multi\nline\",2,3,4\n\\.\nignored"
            ),
            vec![
                vec![
                    Some("1".into()),
                    Some("x,\"y\"".into()),
                    None,
                    Some("".into())
                ],
                vec![
                    Some("multi\nline".into()),
                    Some("2".into()),
                    Some("3".into()),
                    Some("4".into())
                ]
            ]
        );
        let line = format_line(&[Some(b"a,b"), None, Some(b"")], &c);
        assert_eq!(&line[..], b"\"a,b\",,\"\"\n");
    }

    #[test]
    fn records_of_the_wrong_width_or_encoding_are_refused() {
        let mut reader = CopyReader::new(CopyFormat::new(true));
        let mut out = ParsedColumns::new(2);
        assert!(reader.read(b"1,2,3\n", false, &mut out).is_err());
        let mut reader = CopyReader::new(CopyFormat::new(true));
        assert!(reader.read(b"1,\xff\n", false, &mut out).is_err());
    }
}
