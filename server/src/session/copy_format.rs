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
        // One check for the whole record; an escape may still have split a character
        // across two fields, which the boundary checks catch.
        let invalid =
            || ServerError::InvalidText("invalid byte sequence for encoding \"UTF8\"".into());
        let record = std::str::from_utf8(&self.bytes).map_err(|_| invalid())?;
        let mut start = 0;
        for (field, column) in self.fields.iter().zip(&mut self.columns) {
            match field {
                None => column.append_null(),
                Some(end) => {
                    let text = record.get(start..*end).ok_or_else(invalid)?;
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
        // Most chunks are parsed where they lie; only a record left unfinished by the last
        // chunk, or a last record without its newline, needs a copy.
        let joined;
        let last = chunk.last().or(self.pending.last());
        let unterminated = end && last.is_some_and(|b| *b != b'\n');
        let buf: &[u8] = if self.pending.is_empty() && !unterminated {
            chunk
        } else {
            let mut b = std::mem::take(&mut self.pending);
            b.extend_from_slice(chunk);
            if unterminated {
                b.push(b'\n');
            }
            joined = b;
            &joined
        };
        let f = &self.format;
        let mut start = 0;
        while let Some(length) = record_length(&buf[start..], f) {
            let mut line = &buf[start..start + length];
            start += length + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
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
        self.pending = buf[start..].to_vec();
        Ok(())
    }
}

/// The length of the first record of `buf` without its newline, or `None` when `buf` holds
/// no complete record. A newline inside CSV quotes or after a text-format backslash belongs
/// to the record.
fn record_length(buf: &[u8], f: &CopyFormat) -> Option<usize> {
    let mut i = 0;
    if !f.csv {
        loop {
            i += memchr::memchr2(b'\n', b'\\', &buf[i..])?;
            if buf[i] == b'\n' {
                return Some(i);
            }
            if i + 1 >= buf.len() {
                return None;
            }
            i += 2;
        }
    }
    loop {
        i += memchr::memchr2(b'\n', f.quote, &buf[i..])?;
        if buf[i] == b'\n' {
            return Some(i);
        }
        // Inside quotes until the closing quote; an escaped quote or escape does not close.
        i += 1;
        loop {
            i += memchr::memchr2(f.quote, f.escape, &buf[i..])?;
            let b = buf[i];
            if b == f.escape && f.escape != f.quote && i + 1 < buf.len() {
                i += 2;
                continue;
            }
            if b == f.quote {
                if f.escape == f.quote && i + 1 < buf.len() && buf[i + 1] == f.quote {
                    i += 2;
                    continue;
                }
                i += 1;
                break;
            }
            i += 1;
        }
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
        while let Some(slash) = memchr::memchr(b'\\', &raw[i..]) {
            v.extend_from_slice(&raw[i..i + slash]);
            i += slash;
            if i + 1 >= raw.len() {
                break;
            }
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
        }
        v.extend_from_slice(&raw[i..]);
        out.end_field(false);
    }
}

fn parse_csv(line: &[u8], f: &CopyFormat, out: &mut ParsedColumns) {
    let mut field_start = out.bytes.len();
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
    loop {
        // Unquoted: up to the next delimiter or opening quote.
        let Some(next) = memchr::memchr2(f.delimiter, f.quote, &line[i..]) else {
            out.bytes.extend_from_slice(&line[i..]);
            break;
        };
        out.bytes.extend_from_slice(&line[i..i + next]);
        i += next;
        if line[i] == f.delimiter {
            end_field(out, field_start, was_quoted);
            field_start = out.bytes.len();
            was_quoted = false;
            i += 1;
            continue;
        }
        // Quoted: up to the closing quote, with escaped quotes and escapes taken literally.
        was_quoted = true;
        i += 1;
        loop {
            let Some(next) = memchr::memchr2(f.quote, f.escape, &line[i..]) else {
                out.bytes.extend_from_slice(&line[i..]);
                i = line.len();
                break;
            };
            out.bytes.extend_from_slice(&line[i..i + next]);
            i += next;
            let b = line[i];
            if b == f.escape
                && i + 1 < line.len()
                && (line[i + 1] == f.quote || line[i + 1] == f.escape)
                && (f.escape != f.quote || line[i + 1] == f.quote)
            {
                out.bytes.push(line[i + 1]);
                i += 2;
                continue;
            }
            i += 1;
            if b == f.quote {
                break;
            }
            out.bytes.push(b);
        }
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

    type Records = Vec<Vec<Option<String>>>;

    /// The records `input` holds when it arrives in two chunks split at `at`.
    fn records_split(format: CopyFormat, columns: usize, input: &[u8], at: usize) -> Records {
        let mut reader = CopyReader::new(format);
        let mut out = ParsedColumns::new(columns);
        let (a, b) = input.split_at(at);
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

    /// The records `input` holds, each field as text or None for NULL: the same wherever
    /// the stream is cut into chunks, since records may straddle them.
    fn records(format: CopyFormat, columns: usize, input: &[u8]) -> Records {
        let whole = records_split(format.clone(), columns, input, input.len());
        for at in 0..input.len() {
            assert_eq!(
                records_split(format.clone(), columns, input, at),
                whole,
                "split at {at}"
            );
        }
        whole
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
    fn escapes_and_line_ends_wherever_the_chunks_end() {
        // Text: a backslash keeps a newline in the field, `\\` is one backslash, octal
        // escapes build one character from its bytes, CR LF ends a record.
        let t = CopyFormat::new(false);
        assert_eq!(
            records(t, 2, b"a\\\nb\tc\\\\\n\\303\\251\t\\N\r\n"),
            vec![
                vec![Some("a\nb".into()), Some("c\\".into())],
                vec![Some("\u{e9}".into()), None],
            ]
        );
        // CSV with ESCAPE '\': escaped quotes and escapes inside quotes, literal outside.
        let mut c = CopyFormat::new(true);
        c.escape = b'\\';
        assert_eq!(
            records(c, 2, b"\"a\\\"b\\\\\",c\\d\n\"x\ny\",\"\"\n"),
            vec![
                vec![Some("a\"b\\".into()), Some("c\\d".into())],
                vec![Some("x\ny".into()), Some("".into())],
            ]
        );
    }

    #[test]
    fn records_of_the_wrong_width_or_encoding_are_refused() {
        let mut reader = CopyReader::new(CopyFormat::new(true));
        let mut out = ParsedColumns::new(2);
        assert!(reader.read(b"1,2,3\n", false, &mut out).is_err());
        let mut reader = CopyReader::new(CopyFormat::new(true));
        assert!(reader.read(b"1,\xff\n", false, &mut out).is_err());
        // Each field valid on its own or not at all: a character split by escapes is refused.
        let mut reader = CopyReader::new(CopyFormat::new(false));
        let mut out = ParsedColumns::new(2);
        assert!(reader.read(b"\\303\t\\251\n", false, &mut out).is_err());
    }
}
