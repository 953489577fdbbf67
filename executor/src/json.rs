//! PostgreSQL's `json` and `jsonb` values, which Shoal holds as text.
//!
//! A `json` value is the text the client sent, checked; a `jsonb` value is written in
//! PostgreSQL's canonical form (keys sorted by length then bytes, the last of duplicate keys
//! kept, numbers as `numeric` prints them, `", "` and `": "` between items), so that what a
//! jsonb column returns and how two jsonb values compare match PostgreSQL. This module parses
//! both, writes the canonical form, and implements the operators' semantics (`->`, `#>`, `?`,
//! `@>`, `||`, `-`) on parsed trees; the planner wraps them in SQL functions and the writer
//! uses [`canonical_jsonb`] on every value stored in a jsonb column.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::ExecError;

/// How deep arrays and objects may nest: the parser, the writer and `Drop` recurse, and a
/// debug build's frames must fit a 2 MiB thread stack at this depth with room to spare.
const MAX_DEPTH: usize = 256;

/// The two SQL types, which differ in how a value (or a part of one) is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonType {
    /// Written as it was received (parts of it as they appear in the text).
    Json,
    /// Written in canonical form.
    Jsonb,
}

impl JsonType {
    pub fn name(self) -> &'static str {
        match self {
            JsonType::Json => "json",
            JsonType::Jsonb => "jsonb",
        }
    }
}

/// One parsed value: what it is, and the text it was parsed from (empty for values built by
/// an operator, which are only ever written as jsonb).
#[derive(Debug, Clone)]
pub struct JsonNode<'a> {
    pub value: JsonValue<'a>,
    raw: &'a str,
}

#[derive(Debug, Clone)]
pub enum JsonValue<'a> {
    Null,
    Bool(bool),
    /// The number as written (checked against JSON's grammar).
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<JsonNode<'a>>),
    /// Members in the order of the text (json) or canonical order without duplicates (jsonb).
    Object(Vec<(Cow<'a, str>, JsonNode<'a>)>),
}

impl<'a> JsonNode<'a> {
    fn built(value: JsonValue<'a>) -> Self {
        JsonNode { value, raw: "" }
    }

    /// `jsonb_typeof` / `json_typeof`.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            JsonValue::Null => "null",
            JsonValue::Bool(_) => "boolean",
            JsonValue::Number(_) => "number",
            JsonValue::String(_) => "string",
            JsonValue::Array(_) => "array",
            JsonValue::Object(_) => "object",
        }
    }

    /// The value as a value of `ty` prints: its own text for json, canonical for jsonb.
    pub fn to_text(&self, ty: JsonType) -> Cow<'a, str> {
        match ty {
            JsonType::Json if !self.raw.is_empty() => Cow::Borrowed(self.raw),
            _ => {
                let mut out = String::new();
                write_canonical(self, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// What `->>` and `#>>` return: strings unquoted, `null` as SQL NULL, the rest as text.
    pub fn to_unquoted_text(&self, ty: JsonType) -> Option<Cow<'a, str>> {
        match &self.value {
            JsonValue::Null => None,
            JsonValue::String(s) => Some(s.clone()),
            _ => Some(self.to_text(ty)),
        }
    }

    /// `->` with a key: the member's value (the last one of that name, as PostgreSQL's json).
    pub fn get_key(&self, key: &str) -> Option<&JsonNode<'a>> {
        match &self.value {
            JsonValue::Object(members) => {
                members.iter().rev().find(|(k, _)| k == key).map(|m| &m.1)
            }
            _ => None,
        }
    }

    /// `->` with an index; negative indexes count from the end.
    pub fn get_index(&self, index: i64) -> Option<&JsonNode<'a>> {
        let JsonValue::Array(items) = &self.value else {
            return None;
        };
        let i = if index < 0 {
            items.len() as i64 + index
        } else {
            index
        };
        usize::try_from(i).ok().and_then(|i| items.get(i))
    }

    /// `#>`: each path element is a key for objects and an integer index for arrays; a NULL
    /// element, a missing key or an element that is not an index makes the answer NULL.
    pub fn get_path(&self, path: &[Option<&str>]) -> Option<&JsonNode<'a>> {
        let mut node = self;
        for step in path {
            let step = (*step)?;
            node = match &node.value {
                JsonValue::Object(_) => node.get_key(step)?,
                JsonValue::Array(_) => node.get_index(step.trim().parse().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// `json_array_length`.
    pub fn array_length(&self) -> Result<usize, ExecError> {
        match &self.value {
            JsonValue::Array(items) => Ok(items.len()),
            JsonValue::Object(_) => {
                Err(invalid_parameter("cannot get array length of a non-array"))
            }
            _ => Err(invalid_parameter("cannot get array length of a scalar")),
        }
    }

    /// `jsonb ? key`: a key of an object, a string element of an array, or the string itself.
    pub fn has_key(&self, key: &str) -> bool {
        match &self.value {
            JsonValue::Object(members) => members.iter().any(|(k, _)| k == key),
            JsonValue::Array(items) => items
                .iter()
                .any(|i| matches!(&i.value, JsonValue::String(s) if s == key)),
            JsonValue::String(s) => s == key,
            _ => false,
        }
    }

    /// `a @> b` as PostgreSQL defines it: objects contain objects whose every member they hold
    /// (recursively), arrays contain arrays whose every element matches one of theirs, scalars
    /// equal scalars, and a top-level array also contains a bare scalar it holds.
    pub fn contains(&self, other: &JsonNode<'_>) -> bool {
        if let (JsonValue::Array(items), false) = (&self.value, other.is_container()) {
            return items
                .iter()
                .any(|i| !i.is_container() && scalar_eq(i, other));
        }
        deep_contains(self, other)
    }

    fn is_container(&self) -> bool {
        matches!(self.value, JsonValue::Array(_) | JsonValue::Object(_))
    }

    /// `jsonb || jsonb`: objects merge (the right side wins), arrays concatenate, and any other
    /// pair becomes an array of both (a scalar or object joining an array joins as an element).
    pub fn concat(self, other: JsonNode<'a>) -> JsonNode<'a> {
        let value = match (self.value, other.value) {
            (JsonValue::Object(mut left), JsonValue::Object(right)) => {
                left.extend(right);
                return canonical_object(left);
            }
            (JsonValue::Array(mut left), JsonValue::Array(right)) => {
                left.extend(right);
                JsonValue::Array(left)
            }
            (JsonValue::Array(mut left), right) => {
                left.push(JsonNode::built(right));
                JsonValue::Array(left)
            }
            (left, JsonValue::Array(right)) => {
                let mut items = vec![JsonNode::built(left)];
                items.extend(right);
                JsonValue::Array(items)
            }
            (left, right) => JsonValue::Array(vec![JsonNode::built(left), JsonNode::built(right)]),
        };
        JsonNode::built(value)
    }

    /// `jsonb - text`: the object without that key, or the array without string elements equal
    /// to it.
    pub fn delete_key(self, key: &str) -> Result<JsonNode<'a>, ExecError> {
        let value = match self.value {
            JsonValue::Object(members) => {
                JsonValue::Object(members.into_iter().filter(|(k, _)| k != key).collect())
            }
            JsonValue::Array(items) => JsonValue::Array(
                items
                    .into_iter()
                    .filter(|i| !matches!(&i.value, JsonValue::String(s) if s == key))
                    .collect(),
            ),
            _ => return Err(invalid_parameter("cannot delete from scalar")),
        };
        Ok(JsonNode::built(value))
    }

    /// `jsonb - integer`: the array without that element (negative counts from the end; out
    /// of range leaves it as it is).
    pub fn delete_index(self, index: i64) -> Result<JsonNode<'a>, ExecError> {
        match self.value {
            JsonValue::Array(mut items) => {
                let i = if index < 0 {
                    items.len() as i64 + index
                } else {
                    index
                };
                if let Ok(i) = usize::try_from(i) {
                    if i < items.len() {
                        items.remove(i);
                    }
                }
                Ok(JsonNode::built(JsonValue::Array(items)))
            }
            JsonValue::Object(_) => Err(invalid_parameter(
                "cannot delete from object using integer index",
            )),
            _ => Err(invalid_parameter("cannot delete from scalar")),
        }
    }
}

fn deep_contains(a: &JsonNode<'_>, b: &JsonNode<'_>) -> bool {
    match (&a.value, &b.value) {
        (JsonValue::Object(left), JsonValue::Object(right)) => right.iter().all(|(key, want)| {
            let Some((_, have)) = left.iter().rev().find(|(k, _)| k == key) else {
                return false;
            };
            if want.is_container() {
                same_kind(have, want) && deep_contains(have, want)
            } else {
                !have.is_container() && scalar_eq(have, want)
            }
        }),
        (JsonValue::Array(left), JsonValue::Array(right)) => right.iter().all(|want| {
            left.iter().any(|have| {
                if want.is_container() {
                    same_kind(have, want) && deep_contains(have, want)
                } else {
                    !have.is_container() && scalar_eq(have, want)
                }
            })
        }),
        (JsonValue::Array(_) | JsonValue::Object(_), _) => false,
        _ => !b.is_container() && scalar_eq(a, b),
    }
}

fn same_kind(a: &JsonNode<'_>, b: &JsonNode<'_>) -> bool {
    std::mem::discriminant(&a.value) == std::mem::discriminant(&b.value)
}

/// Scalars are equal when of the same kind and value; numbers compare as numbers (`1.0 = 1`).
fn scalar_eq(a: &JsonNode<'_>, b: &JsonNode<'_>) -> bool {
    match (&a.value, &b.value) {
        (JsonValue::Null, JsonValue::Null) => true,
        (JsonValue::Bool(x), JsonValue::Bool(y)) => x == y,
        (JsonValue::String(x), JsonValue::String(y)) => x == y,
        (JsonValue::Number(x), JsonValue::Number(y)) => {
            without_trailing_zeros(&canonical_number(x))
                == without_trailing_zeros(&canonical_number(y))
        }
        _ => false,
    }
}

fn without_trailing_zeros(n: &str) -> &str {
    if n.contains('.') {
        n.trim_end_matches('0').trim_end_matches('.')
    } else {
        n
    }
}

fn invalid_parameter(message: &str) -> ExecError {
    ExecError::InvalidParameterValue(message.to_string())
}

/// Parses `text` as a value of `ty` (for jsonb, objects are put in canonical order).
pub fn parse(text: &str, ty: JsonType) -> Result<JsonNode<'_>, ExecError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        ty,
    };
    let node = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != text.len() {
        return Err(parser.error("Expected end of input"));
    }
    Ok(node)
}

/// `text` in jsonb's canonical form (what a jsonb column stores and returns).
pub fn canonical_jsonb(text: &str) -> Result<String, ExecError> {
    let node = parse(text, JsonType::Jsonb)?;
    let mut out = String::with_capacity(text.len());
    write_canonical(&node, &mut out);
    Ok(out)
}

/// Checks that `text` is valid json.
pub fn validate_json(text: &str) -> Result<(), ExecError> {
    parse(text, JsonType::Json).map(|_| ())
}

/// Writes a parsed value canonically (objects built by operators are canonical already).
pub fn write_canonical(node: &JsonNode<'_>, out: &mut String) {
    match &node.value {
        JsonValue::Null => out.push_str("null"),
        JsonValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        JsonValue::Number(n) => out.push_str(&canonical_number(n)),
        JsonValue::String(s) => write_string(s, out),
        JsonValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        JsonValue::Object(members) => {
            out.push('{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(key, out);
                out.push_str(": ");
                write_canonical(value, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal as PostgreSQL writes one (`escape_json`).
pub fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON number as PostgreSQL's `numeric` prints it: no exponent, as many decimals as the
/// text implies (`1.50e1` is `15.0`, `1e2` is `100`), no sign on zero.
fn canonical_number(n: &str) -> Cow<'_, str> {
    if !n.contains(['e', 'E']) && !n.starts_with("-0") {
        return Cow::Borrowed(n);
    }
    let (negative, unsigned) = match n.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, n),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (
            &unsigned[..i],
            unsigned[i + 1..].parse::<i64>().unwrap_or(0),
        ),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = [int_part, frac_part].concat();
    let scale = frac_part.len() as i64 - exponent;
    let mut text = if scale <= 0 {
        let mut t = digits;
        t.extend(std::iter::repeat_n('0', (-scale) as usize));
        t
    } else {
        let scale = scale as usize;
        let padded = if digits.len() <= scale {
            format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
        } else {
            digits
        };
        let point = padded.len() - scale;
        format!("{}.{}", &padded[..point], &padded[point..])
    };
    let leading = text.len() - text.trim_start_matches('0').len();
    let keep_from = leading.min(text.find('.').map_or(text.len() - 1, |p| p - 1));
    text.drain(..keep_from);
    let is_zero = text.bytes().all(|b| b == b'0' || b == b'.');
    if negative && !is_zero {
        text.insert(0, '-');
    }
    Cow::Owned(text)
}

/// Members in jsonb's order: keys by length, then bytes; of duplicates the last is kept.
fn canonical_object<'a>(mut members: Vec<(Cow<'a, str>, JsonNode<'a>)>) -> JsonNode<'a> {
    // A stable sort keeps duplicates in text order, so the last of each run is the last given.
    members.sort_by(|(a, _), (b, _)| key_order(a, b));
    let mut out: Vec<(Cow<'a, str>, JsonNode<'a>)> = Vec::with_capacity(members.len());
    for member in members {
        match out.last_mut() {
            Some(last) if last.0 == member.0 => *last = member,
            _ => out.push(member),
        }
    }
    JsonNode::built(JsonValue::Object(out))
}

fn key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    ty: JsonType,
}

impl<'a> Parser<'a> {
    fn error(&self, detail: &str) -> ExecError {
        // PostgreSQL names json in this message for jsonb input too.
        ExecError::InvalidJson {
            type_name: "json".to_string(),
            detail: detail.to_string(),
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<JsonNode<'a>, ExecError> {
        if depth > MAX_DEPTH {
            return Err(self.error("The input nests arrays and objects too deeply."));
        }
        self.skip_whitespace();
        let start = self.pos;
        let value = match self.bytes.get(self.pos) {
            None => return Err(self.error("The input string ended unexpectedly.")),
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => JsonValue::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => JsonValue::Number(self.number()?),
            Some(_) => self.literal()?,
        };
        let node = JsonNode {
            value,
            raw: &self.text[start..self.pos],
        };
        Ok(match (self.ty, node.value) {
            (JsonType::Jsonb, JsonValue::Object(members)) => canonical_object(members),
            (_, value) => JsonNode { value, ..node },
        })
    }

    fn literal(&mut self) -> Result<JsonValue<'a>, ExecError> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let value = match &rest[..end] {
            b"true" => JsonValue::Bool(true),
            b"false" => JsonValue::Bool(false),
            b"null" => JsonValue::Null,
            _ => return Err(self.error("Token is invalid.")),
        };
        self.pos += end;
        Ok(value)
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), ExecError> {
        self.skip_whitespace();
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("Expected {what}.")))
        }
    }

    fn array(&mut self, depth: usize) -> Result<JsonValue<'a>, ExecError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(JsonValue::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(JsonValue::Array(items));
                }
                _ => return Err(self.error("Expected \",\" or \"]\".")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<JsonValue<'a>, ExecError> {
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_whitespace();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(JsonValue::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.error("Expected string."));
            }
            let key = self.string()?;
            self.expect(b':', "\":\"")?;
            members.push((key, self.value(depth + 1)?));
            self.skip_whitespace();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(JsonValue::Object(members));
                }
                _ => return Err(self.error("Expected \",\" or \"}\".")),
            }
        }
    }

    /// A string literal (the opening quote at `pos`), unescaped only when it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, ExecError> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(self.error("The input string ended unexpectedly.")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Borrowed(&self.text[start..self.pos - 1]));
                }
                Some(b'\\') => break,
                Some(b) if *b < 0x20 => {
                    return Err(
                        self.error(&format!("Character with value 0x{b:02x} must be escaped."))
                    )
                }
                Some(_) => self.pos += 1,
            }
        }
        let mut out = self.text[start..self.pos].to_string();
        loop {
            let rest = &self.text[self.pos..];
            let Some(c) = rest.chars().next() else {
                return Err(self.error("The input string ended unexpectedly."));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(Cow::Owned(out)),
                '\\' => {
                    let escaped = self.bytes.get(self.pos).copied();
                    self.pos += 1;
                    match escaped {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => out.push(self.unicode_escape()?),
                        _ => return Err(self.error("Escape sequence is invalid.")),
                    }
                }
                c if (c as u32) < 0x20 => {
                    return Err(self.error(&format!(
                        "Character with value 0x{:02x} must be escaped.",
                        c as u32
                    )))
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ExecError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("\"\\u\" must be followed by four hexadecimal digits."))?;
        self.pos += 4;
        Ok(u32::from_str_radix(digits, 16).unwrap_or(0))
    }

    /// The character of a `\uXXXX` escape (after the `u`), pairing surrogates.
    fn unicode_escape(&mut self) -> Result<char, ExecError> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if self.text.get(self.pos..self.pos + 2) != Some("\\u") {
                return Err(
                    self.error("Unicode high surrogate must not be followed by another character.")
                );
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("Unicode low surrogate must follow a high surrogate."));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else if (0xDC00..0xE000).contains(&first) {
            return Err(self.error("Unicode low surrogate must follow a high surrogate."));
        } else {
            first
        };
        match char::from_u32(code) {
            Some('\0') | None => Err(ExecError::UnsupportedUnicodeEscape),
            Some(c) => Ok(c),
        }
    }

    /// A number per JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<&'a str, ExecError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while p.bytes.get(p.pos).is_some_and(u8::is_ascii_digit) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let leading_zero = self.bytes.get(self.pos) == Some(&b'0');
        let whole = digits(self);
        let mut ok = whole > 0 && !(leading_zero && whole > 1);
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            ok &= digits(self) > 0;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            let exponent_start = self.pos;
            ok &= digits(self) > 0;
            // numeric's own limit on exponents; it also keeps canonical_number's output small.
            ok &= self.text[exponent_start..self.pos]
                .parse::<i64>()
                .is_ok_and(|e| e.abs() <= 16383);
        }
        // A number runs into a letter (`1x`) only in invalid input.
        ok &= !self
            .bytes
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(self.error("Token is invalid."));
        }
        Ok(&self.text[start..self.pos])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonb(text: &str) -> String {
        canonical_jsonb(text).unwrap()
    }

    #[test]
    fn jsonb_is_written_canonically() {
        assert_eq!(
            jsonb(r#"{"b":1.50e1, "a":[1,{"x":"\u00e9"}], "aa":null, "a": 2}"#),
            r#"{"a": 2, "b": 15.0, "aa": null}"#
        );
        assert_eq!(jsonb(" [ ] "), "[]");
        assert_eq!(jsonb(r#""\u0001\t\/""#), r#""\u0001\t/""#);
        assert_eq!(jsonb(r#""\ud83d\ude00""#), "\"\u{1F600}\"");
    }

    #[test]
    fn numbers_print_as_numeric_does() {
        for (input, want) in [
            ("1e2", "100"),
            ("1.5E-3", "0.0015"),
            ("100e-5", "0.00100"),
            ("12e-1", "1.2"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("-1.5e1", "-15"),
            ("0.1", "0.1"),
            ("0e5", "0"),
            ("10", "10"),
        ] {
            assert_eq!(canonical_number(input), want, "{input}");
        }
    }

    #[test]
    fn invalid_input_is_rejected() {
        for bad in [
            "",
            "x",
            "01",
            "1.",
            ".5",
            "-",
            "[1,]",
            "{\"a\"}",
            "{a:1}",
            "\"abc",
            "tru",
            "nul",
            "1 2",
            "\"\u{1}\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "1e",
            "[1",
        ] {
            assert!(parse(bad, JsonType::Json).is_err(), "{bad:?} parsed");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep, JsonType::Jsonb).is_err());
        assert!(matches!(
            parse("\"\\u0000\"", JsonType::Jsonb),
            Err(ExecError::UnsupportedUnicodeEscape)
        ));
    }

    #[test]
    fn json_parts_keep_their_text() {
        let doc = parse(r#"{"a": {"b" :1}, "a": [1, 2 ]}"#, JsonType::Json).unwrap();
        assert_eq!(doc.get_key("a").unwrap().to_text(JsonType::Json), "[1, 2 ]");
        let doc = parse(r#"{"a": {"b" :1}}"#, JsonType::Json).unwrap();
        assert_eq!(
            doc.get_key("a").unwrap().to_text(JsonType::Jsonb),
            r#"{"b": 1}"#
        );
        let path = doc.get_path(&[Some("a"), Some("b")]).unwrap();
        assert_eq!(path.to_unquoted_text(JsonType::Json).unwrap(), "1");
        assert!(doc.get_path(&[Some("a"), None]).is_none());
    }

    #[test]
    fn containment_follows_postgres() {
        let b = |t: &'static str| parse(t, JsonType::Jsonb).unwrap();
        assert!(b("[1,2]").contains(&b("1")));
        assert!(b(r#"{"a":[1,2,3],"b":1}"#).contains(&b(r#"{"a":[3]}"#)));
        assert!(!b(r#"{"a":[1,2]}"#).contains(&b(r#"{"a":1}"#)));
        assert!(b("[1.0]").contains(&b("[1]")));
        assert!(b("[[1,2]]").contains(&b("[[2]]")));
        assert!(!b("[[1,2]]").contains(&b("[2]")));
        assert!(b("{}").contains(&b("{}")));
        assert!(!b("1").contains(&b("[1]")));
    }

    #[test]
    fn concat_and_delete() {
        let b = |t: &'static str| parse(t, JsonType::Jsonb).unwrap();
        let text = |n: JsonNode<'_>| n.to_text(JsonType::Jsonb).into_owned();
        assert_eq!(
            text(b(r#"{"b":1}"#).concat(b(r#"{"a":2,"b":3}"#))),
            r#"{"a": 2, "b": 3}"#
        );
        assert_eq!(text(b("1").concat(b("[2]"))), "[1, 2]");
        assert_eq!(text(b(r#"{"a":1}"#).concat(b("2"))), r#"[{"a": 1}, 2]"#);
        assert_eq!(
            text(b(r#"["a","b","a"]"#).delete_key("a").unwrap()),
            r#"["b"]"#
        );
        assert_eq!(text(b("[1,2,3]").delete_index(-1).unwrap()), "[1, 2]");
        assert_eq!(text(b("[1,2,3]").delete_index(7).unwrap()), "[1, 2, 3]");
        assert!(b("1").delete_key("a").is_err());
        assert!(b(r#"{"a":1}"#).delete_index(0).is_err());
    }
}
