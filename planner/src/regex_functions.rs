//! PostgreSQL's regular expression functions that DataFusion lacks or answers differently:
//! `substring(text from pattern)`, `regexp_split_to_array(text, pattern [, flags])` and
//! `regexp_match(text, pattern [, flags])` (DataFusion's drops the groups that matched nothing,
//! where PostgreSQL has NULL elements).
//!
//! Patterns run on Rust's `regex` crate, which covers what PostgreSQL's advanced regular
//! expressions are mostly used for; back-references and look-around are refused with an
//! error naming the pattern. As in PostgreSQL, `.` matches a newline unless the `n` flag
//! asks for newline-sensitive matching.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use regex::Regex;

/// A pattern with PostgreSQL's flags (`i`, `c`, `n`/`m`, `s`, `x`) applied, for `function`.
fn compile(function: &str, pattern: &str, flags: &str) -> Result<Regex> {
    let mut case_insensitive = false;
    let mut newline_sensitive = false;
    let mut extended = false;
    for flag in flags.chars() {
        match flag {
            'i' => case_insensitive = true,
            'c' => case_insensitive = false,
            'n' | 'm' => newline_sensitive = true,
            's' => newline_sensitive = false,
            'x' => extended = true,
            'g' => return exec_err!("{function}() does not support the \"global\" option"),
            other => return exec_err!("invalid regular expression option: \"{other}\""),
        }
    }
    let mut prefix = String::from("(?");
    prefix.push(if newline_sensitive { 'm' } else { 's' });
    if case_insensitive {
        prefix.push('i');
    }
    if extended {
        prefix.push('x');
    }
    prefix.push(')');
    Regex::new(&format!("{prefix}{pattern}")).map_err(|e| {
        DataFusionError::Execution(format!("invalid regular expression \"{pattern}\": {e}"))
    })
}

fn strings(array: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(array, &DataType::Utf8)?)
}

/// Compiles each row's pattern, reusing the last one while it repeats (a constant pattern is
/// compiled once).
struct Patterns {
    function: &'static str,
    last: Option<(String, String, Regex)>,
}

impl Patterns {
    fn new(function: &'static str) -> Self {
        Patterns {
            function,
            last: None,
        }
    }

    fn get(&mut self, pattern: &str, flags: &str) -> Result<&Regex> {
        let fresh = !matches!(&self.last, Some((p, f, _)) if p == pattern && f == flags);
        if fresh {
            let re = compile(self.function, pattern, flags)?;
            self.last = Some((pattern.to_string(), flags.to_string(), re));
        }
        match &self.last {
            Some((_, _, re)) => Ok(re),
            None => exec_err!("no regular expression compiled"),
        }
    }
}

/// `substring(text from pattern)`: the part matching the pattern's first parenthesized group
/// (or the whole match when it has none), NULL when nothing matches. Registered under a name
/// of its own (`substring` is DataFusion's `substr`), which plans shipped to other nodes use.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SubstringMatch {
    signature: Signature,
}

pub(crate) fn substring_match_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(SubstringMatch {
        signature: Signature::string(2, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for SubstringMatch {
    fn name(&self) -> &str {
        "pg_substring_regex"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (texts, patterns) = (strings(&arrays[0])?, strings(&arrays[1])?);
        let (texts, patterns) = (texts.as_string::<i32>(), patterns.as_string::<i32>());
        let mut compiled = Patterns::new("substring");
        let mut out = StringBuilder::new();
        for (text, pattern) in texts.iter().zip(patterns.iter()) {
            let (Some(text), Some(pattern)) = (text, pattern) else {
                out.append_null();
                continue;
            };
            let re = compiled.get(pattern, "")?;
            let found = match re.captures_len() {
                1 => re.find(text).map(|m| m.as_str()),
                _ => re.captures(text).and_then(|c| c.get(1)).map(|m| m.as_str()),
            };
            out.append_option(found);
        }
        let result: ArrayRef = Arc::new(out.finish());
        Ok(crate::functions::scalar_or_array(&args.args, result))
    }
}

/// The pieces of `text` between the matches of `re`. As PostgreSQL's, a match of nothing at
/// the start or end of the text, or right after another match, does not split.
fn split<'t>(re: &Regex, text: &'t str) -> Vec<&'t str> {
    let mut pieces = Vec::new();
    let mut piece_start = 0;
    let mut search_from = 0;
    while search_from <= text.len() {
        let Some(m) = re.find_at(text, search_from) else {
            break;
        };
        let empty = m.start() == m.end();
        if empty && (m.start() == 0 || m.start() == text.len() || m.start() == piece_start) {
            // Step over one character and look again.
            search_from = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        pieces.push(&text[piece_start..m.start()]);
        piece_start = m.end();
        search_from = if empty {
            m.end() + text[m.end()..].chars().next().map_or(1, char::len_utf8)
        } else {
            m.end()
        };
    }
    pieces.push(&text[piece_start..]);
    pieces
}

/// What a function returning a text array does with the matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ArrayOf {
    /// `regexp_split_to_array`: the pieces between matches.
    Pieces,
    /// `regexp_match`: the first match's groups (NULL for a group that matched nothing), or
    /// the whole match for a pattern without groups; NULL when nothing matches.
    FirstMatchGroups,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpArray {
    name: &'static str,
    of: ArrayOf,
    signature: Signature,
}

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    let mut udfs: Vec<ScalarUDF> = [
        ("regexp_split_to_array", ArrayOf::Pieces),
        ("regexp_match", ArrayOf::FirstMatchGroups),
    ]
    .into_iter()
    .map(|(name, of)| {
        ScalarUDF::new_from_impl(RegexpArray {
            name,
            of,
            signature: Signature::one_of(
                vec![TypeSignature::String(2), TypeSignature::String(3)],
                Volatility::Immutable,
            ),
        })
    })
    .collect();
    udfs.push(substring_match_udf());
    udfs
}

impl ScalarUDFImpl for RegexpArray {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(
            DataType::Utf8,
            true,
        ))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let arrays = arrays.iter().map(strings).collect::<Result<Vec<_>>>()?;
        let texts = arrays[0].as_string::<i32>();
        let patterns = arrays[1].as_string::<i32>();
        let flags = arrays.get(2).map(|f| f.as_string::<i32>());
        let mut compiled = Patterns::new(self.name);
        let mut out = ListBuilder::new(StringBuilder::new());
        for row in 0..texts.len() {
            let flag = match flags {
                Some(f) if f.is_null(row) => None,
                Some(f) => Some(f.value(row)),
                None => Some(""),
            };
            let (true, true, Some(flag)) = (texts.is_valid(row), patterns.is_valid(row), flag)
            else {
                out.append_null();
                continue;
            };
            let re = compiled.get(patterns.value(row), flag)?;
            let text = texts.value(row);
            match self.of {
                ArrayOf::Pieces => {
                    for piece in split(re, text) {
                        out.values().append_value(piece);
                    }
                    out.append(true);
                }
                ArrayOf::FirstMatchGroups => match re.captures(text) {
                    None => out.append_null(),
                    Some(groups) if groups.len() == 1 => {
                        out.values()
                            .append_option(groups.get(0).map(|m| m.as_str()));
                        out.append(true);
                    }
                    Some(groups) => {
                        for group in groups.iter().skip(1) {
                            out.values().append_option(group.map(|m| m.as_str()));
                        }
                        out.append(true);
                    }
                },
            }
        }
        let result: ArrayRef = Arc::new(out.finish());
        Ok(crate::functions::scalar_or_array(&args.args, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_as_postgres_does() {
        let re = |p: &str| compile("split", p, "").unwrap();
        assert_eq!(split(&re(""), "hello"), vec!["h", "e", "l", "l", "o"]);
        assert_eq!(
            split(&re(r"\s+"), "the quick  fox"),
            vec!["the", "quick", "fox"]
        );
        assert_eq!(split(&re(","), ",a,"), vec!["", "a", ""]);
        assert_eq!(split(&re(r"\s*"), "a b"), vec!["a", "b"]);
        assert_eq!(split(&re("x"), ""), vec![""]);
        assert_eq!(split(&re(""), "é"), vec!["é"]);
    }

    #[test]
    fn flags() {
        assert!(compile("f", "A", "i").unwrap().is_match("a"));
        assert!(compile("f", "a.b", "").unwrap().is_match("a\nb"));
        assert!(!compile("f", "a.b", "n").unwrap().is_match("a\nb"));
        assert!(compile("f", "a", "q").is_err());
        assert!(compile("f", "(a", "").is_err());
    }
}
