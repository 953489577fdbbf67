//! The functions behind PostgreSQL's JSON operators and the json/jsonb functions that read a
//! document: `->`/`json_object_field`, `->>`, `#>`/`json_extract_path`, `#>>`, `?`, `?|`, `?&`,
//! `@>`, `<@`, `||`, `-`, `json_typeof`, `json_array_length`, and the casts to json and jsonb.
//!
//! Each comes as a `json_*` and a `jsonb_*` function. Which of the two types a document is
//! comes from its field's `shoal.pg_type` tag (a jsonb column, a `::jsonb` cast, the result of
//! another of these functions), or, for untagged text, from the function's name as PostgreSQL
//! would resolve an untyped literal. Results that are documents are tagged the same way, so
//! clients see json or jsonb and operators chain (`doc -> 'a' ->> 'b'`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Int32Builder, ListBuilder, StringArray,
    StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use shoal_executor::json::{self, JsonNode, JsonType, JsonValue};
use shoal_executor::{ExecError, PG_TYPE_METADATA_KEY};

/// What a function does with its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// `doc -> key` / `doc -> index` (by the argument's type).
    Get,
    /// `doc ->> key` / `doc ->> index`.
    GetText,
    /// `doc #> '{a,b}'`: the path as one text array (or array literal).
    PathArray,
    /// `doc #>> '{a,b}'`.
    PathArrayText,
    /// `json_extract_path(doc, 'a', 'b')`: the path as the remaining arguments.
    PathArgs,
    PathArgsText,
    Typeof,
    ArrayLength,
    /// `doc ? key`.
    Exists,
    /// `doc ?| keys`.
    ExistsAny,
    /// `doc ?& keys`.
    ExistsAll,
    /// `a @> b`.
    Contains,
    /// `a <@ b`.
    Contained,
    /// `a || b`.
    Concat,
    /// `doc - key`, `doc - index`, `doc - keys`.
    Delete,
    /// A cast to the type: checks json, writes jsonb canonically.
    Input,
    /// The parts behind the set-returning functions, each as an array that the planner
    /// unnests (`naming.rs`): the elements of an array document, as documents or as `->>`
    /// writes them, the keys of an object, and its values (as documents or text).
    Elements,
    ElementsText,
    Keys,
    Values,
    ValuesText,
}

impl Access {
    fn returns_document(self) -> bool {
        matches!(
            self,
            Access::Get | Access::PathArray | Access::PathArgs | Access::Input
        )
    }
}

/// The function `name` (whose untagged arguments are of type `default`).
pub(crate) fn udf(name: &str, default: JsonType, access: Access) -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonFunction {
        name: name.to_string(),
        default,
        access,
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

/// What each function does, by name without its `json_`/`jsonb_` prefix.
const FUNCTIONS: [(&str, Access); 21] = [
    ("object_field", Access::Get),
    ("object_field_text", Access::GetText),
    ("extract_path", Access::PathArgs),
    ("extract_path_text", Access::PathArgsText),
    ("typeof", Access::Typeof),
    ("array_length", Access::ArrayLength),
    ("in", Access::Input),
    // Names the planner gives `#>` and `#>>` (PostgreSQL's operators have none).
    ("extract_path_array", Access::PathArray),
    ("extract_path_array_text", Access::PathArrayText),
    ("exists", Access::Exists),
    ("exists_any", Access::ExistsAny),
    ("exists_all", Access::ExistsAll),
    ("contains", Access::Contains),
    ("contained", Access::Contained),
    ("concat", Access::Concat),
    ("delete", Access::Delete),
    // Not PostgreSQL's names: arrays that `json_array_elements(d)` and friends unnest.
    ("array_elements_array", Access::Elements),
    ("array_elements_text_array", Access::ElementsText),
    ("object_keys_array", Access::Keys),
    ("each_values_array", Access::Values),
    ("each_text_values_array", Access::ValuesText),
];

/// Operations PostgreSQL has for jsonb only.
fn jsonb_only(access: Access) -> bool {
    use Access::*;
    matches!(
        access,
        Exists | ExistsAny | ExistsAll | Contains | Contained | Concat | Delete
    )
}

/// The registered name of `access` on documents of type `ty` (so that a plan shipped to
/// another node finds the same function there).
pub(crate) fn function_name(ty: JsonType, access: Access) -> String {
    let suffix = FUNCTIONS
        .iter()
        .find(|(_, a)| *a == access)
        .map_or("unknown", |(suffix, _)| suffix);
    let ty = if jsonb_only(access) {
        JsonType::Jsonb
    } else {
        ty
    };
    format!("{}_{suffix}", ty.name())
}

/// Every function of this module under its json and jsonb names.
pub(crate) fn udfs() -> Vec<ScalarUDF> {
    let mut udfs = Vec::new();
    for (_, access) in FUNCTIONS {
        for ty in [JsonType::Json, JsonType::Jsonb] {
            if ty == JsonType::Json && jsonb_only(access) {
                continue;
            }
            udfs.push(udf(&function_name(ty, access), ty, access));
        }
    }
    udfs
}

/// The JSON type a field is tagged with, if any.
pub(crate) fn json_type_of(field: &Field) -> Option<JsonType> {
    match field
        .metadata()
        .get(PG_TYPE_METADATA_KEY)
        .map(String::as_str)
    {
        Some("json") => Some(JsonType::Json),
        Some("jsonb") => Some(JsonType::Jsonb),
        _ => None,
    }
}

/// A text field tagged as `ty`.
pub(crate) fn document_field(name: &str, ty: JsonType) -> Field {
    let meta = HashMap::from([(PG_TYPE_METADATA_KEY.to_string(), ty.name().to_string())]);
    Field::new(name, DataType::Utf8, true).with_metadata(meta)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonFunction {
    name: String,
    default: JsonType,
    access: Access,
    signature: Signature,
}

impl JsonFunction {
    /// The type of the document argument: its tag, else the function's own type. jsonb-only
    /// operations read jsonb whatever they are given.
    fn document_type(&self, field: &Field) -> JsonType {
        match self.access {
            Access::Input => self.default,
            _ if self.default == JsonType::Jsonb => JsonType::Jsonb,
            _ => json_type_of(field).unwrap_or(self.default),
        }
    }

    fn arity_ok(&self, n: usize) -> bool {
        match self.access {
            Access::Typeof
            | Access::ArrayLength
            | Access::Input
            | Access::Elements
            | Access::ElementsText
            | Access::Keys
            | Access::Values
            | Access::ValuesText => n == 1,
            Access::PathArgs | Access::PathArgsText => n >= 1,
            _ => n == 2,
        }
    }
}

fn to_exec(e: ExecError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The array as `Utf8`, whatever string (or other) type it came as.
fn utf8(array: &ArrayRef) -> Result<ArrayRef> {
    Ok(match array.data_type() {
        DataType::Utf8 => array.clone(),
        _ => cast(array, &DataType::Utf8)?,
    })
}

/// A path or key list argument: a text array, or text in PostgreSQL's array syntax (or one
/// key, as a list of one).
enum KeyList {
    Arrays(ArrayRef),
    Literals(ArrayRef),
    Single(ArrayRef),
}

impl KeyList {
    fn new(array: &ArrayRef) -> Result<KeyList> {
        Ok(match array.data_type() {
            DataType::List(_) => KeyList::Arrays(cast(
                array,
                &DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            )?),
            _ => KeyList::Literals(utf8(array)?),
        })
    }

    /// The keys of `row` (None for a NULL list).
    fn row(&self, row: usize) -> Result<Option<Vec<Option<String>>>> {
        match self {
            KeyList::Arrays(a) => {
                let list = a.as_list::<i32>();
                if list.is_null(row) {
                    return Ok(None);
                }
                let values = list.value(row);
                let values = values.as_string::<i32>();
                Ok(Some(values.iter().map(|v| v.map(str::to_string)).collect()))
            }
            KeyList::Single(a) => {
                let text = a.as_string::<i32>();
                Ok(text
                    .is_valid(row)
                    .then(|| vec![Some(text.value(row).to_string())]))
            }
            KeyList::Literals(a) => {
                let text = a.as_string::<i32>();
                if text.is_null(row) {
                    return Ok(None);
                }
                match parse_text_array(text.value(row)) {
                    Some(keys) => Ok(Some(keys)),
                    None => Err(to_exec(ExecError::InvalidInput {
                        type_name: "text[]".into(),
                        value: text.value(row).to_string(),
                    })),
                }
            }
        }
    }
}

/// A one-dimensional array literal (`{a,"b c",NULL}`) as its elements.
fn parse_text_array(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    if inner.trim().is_empty() {
        return Some(out);
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '}' || c == '"' {
                    return None;
                }
                chars.next();
                if c == '\\' {
                    item.push(chars.next()?);
                } else {
                    item.push(c);
                }
            }
            item.truncate(item.trim_end().len());
        }
        let is_null = !quoted && item.eq_ignore_ascii_case("null");
        out.push((!is_null).then_some(item));
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

impl ScalarUDFImpl for JsonFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.access {
            Access::ArrayLength => DataType::Int32,
            Access::Exists
            | Access::ExistsAny
            | Access::ExistsAll
            | Access::Contains
            | Access::Contained => DataType::Boolean,
            Access::Elements
            | Access::ElementsText
            | Access::Keys
            | Access::Values
            | Access::ValuesText => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
            }
            _ => DataType::Utf8,
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if !self.arity_ok(args.arg_fields.len()) {
            return exec_err!(
                "function {}() does not take {} arguments",
                self.name,
                args.arg_fields.len()
            );
        }
        let data_type = self.return_type(&[])?;
        let ty = match self.access {
            _ if self.access.returns_document() => self.document_type(&args.arg_fields[0]),
            Access::Concat | Access::Delete => JsonType::Jsonb,
            _ => return Ok(Arc::new(Field::new(self.name(), data_type, true))),
        };
        Ok(Arc::new(document_field(self.name(), ty)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        if !self.arity_ok(args.args.len()) {
            return exec_err!(
                "function {}() does not take {} arguments",
                self.name,
                args.args.len()
            );
        }
        let ty = self.document_type(&args.arg_fields[0]);
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let docs = utf8(&arrays[0])?;
        let docs = docs.as_string::<i32>();
        let result: ArrayRef = match self.access {
            Access::Input => Arc::new(
                docs.iter()
                    .map(|d| d.map(|d| input(d, ty)).transpose())
                    .collect::<Result<StringArray>>()?,
            ),
            Access::Typeof | Access::ArrayLength => {
                let mut names = StringBuilder::new();
                let mut lengths = Int32Builder::new();
                for doc in docs.iter() {
                    let Some(doc) = doc else {
                        names.append_null();
                        lengths.append_null();
                        continue;
                    };
                    let node = json::parse(doc, ty).map_err(to_exec)?;
                    if self.access == Access::Typeof {
                        names.append_value(node.type_name());
                    } else {
                        let n = node.array_length().map_err(to_exec)?;
                        lengths.append_value(i32::try_from(n).unwrap_or(i32::MAX));
                    }
                }
                match self.access {
                    Access::Typeof => Arc::new(names.finish()),
                    _ => Arc::new(lengths.finish()),
                }
            }
            Access::Get | Access::GetText => {
                let text = self.access == Access::GetText;
                let selector = &arrays[1];
                if selector.data_type().is_integer() {
                    let indexes = cast(selector, &DataType::Int64)?;
                    let indexes = indexes.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                    map_documents(docs, ty, text, |row, node| {
                        Ok(indexes
                            .is_valid(row)
                            .then(|| node.get_index(indexes.value(row)))
                            .flatten())
                    })?
                } else {
                    let keys = utf8(selector)?;
                    let keys = keys.as_string::<i32>();
                    map_documents(docs, ty, text, |row, node| {
                        Ok(keys
                            .is_valid(row)
                            .then(|| node.get_key(keys.value(row)))
                            .flatten())
                    })?
                }
            }
            Access::PathArray | Access::PathArrayText => {
                let paths = KeyList::new(&arrays[1])?;
                map_documents(
                    docs,
                    ty,
                    self.access == Access::PathArrayText,
                    |row, node| {
                        let Some(path) = paths.row(row)? else {
                            return Ok(None);
                        };
                        let steps: Vec<Option<&str>> = path.iter().map(Option::as_deref).collect();
                        Ok(node.get_path(&steps))
                    },
                )?
            }
            Access::PathArgs | Access::PathArgsText => {
                let steps = arrays[1..].iter().map(utf8).collect::<Result<Vec<_>>>()?;
                map_documents(
                    docs,
                    ty,
                    self.access == Access::PathArgsText,
                    |row, node| {
                        let path: Vec<Option<&str>> = steps
                            .iter()
                            .map(|s| {
                                let s = s.as_string::<i32>();
                                s.is_valid(row).then(|| s.value(row))
                            })
                            .collect();
                        Ok(node.get_path(&path))
                    },
                )?
            }
            Access::Exists | Access::ExistsAny | Access::ExistsAll => {
                // One key for `?` (text, never an array literal), a list for `?|` and `?&`.
                let keys = match self.access {
                    Access::Exists => KeyList::Single(utf8(&arrays[1])?),
                    _ => KeyList::new(&arrays[1])?,
                };
                let mut out = BooleanBuilder::with_capacity(rows);
                for row in 0..docs.len() {
                    let keys = keys.row(row)?;
                    let (Some(doc), Some(keys)) =
                        (docs.is_valid(row).then(|| docs.value(row)), keys)
                    else {
                        out.append_null();
                        continue;
                    };
                    let node = json::parse(doc, ty).map_err(to_exec)?;
                    let mut present = keys.iter().flatten().map(|k| node.has_key(k));
                    out.append_value(match self.access {
                        Access::ExistsAll => present.all(|p| p),
                        _ => present.any(|p| p),
                    });
                }
                Arc::new(out.finish())
            }
            Access::Contains => Arc::new(BooleanArray::from(jsonb_pairs(
                docs,
                &arrays[1],
                |a, b| a.contains(&b),
            )?)),
            Access::Contained => Arc::new(BooleanArray::from(jsonb_pairs(
                docs,
                &arrays[1],
                |a, b| b.contains(&a),
            )?)),
            Access::Concat => Arc::new(StringArray::from_iter(jsonb_pairs(
                docs,
                &arrays[1],
                |a, b| a.concat(b).to_text(JsonType::Jsonb).into_owned(),
            )?)),
            Access::Delete => delete(docs, &arrays[1])?,
            Access::Elements
            | Access::ElementsText
            | Access::Keys
            | Access::Values
            | Access::ValuesText => self.parts(docs, ty)?,
        };
        Ok(crate::functions::scalar_or_array(&args.args, result))
    }
}

impl JsonFunction {
    /// The parts of each document an `Elements`..`ValuesText` function lists.
    fn parts(&self, docs: &StringArray, ty: JsonType) -> Result<ArrayRef> {
        let mut out = ListBuilder::new(StringBuilder::new());
        let (set_function, wants_array) = match self.access {
            Access::Elements => ("array_elements", true),
            Access::ElementsText => ("array_elements_text", true),
            Access::Keys => ("object_keys", false),
            Access::Values => ("each", false),
            _ => ("each_text", false),
        };
        for doc in docs.iter() {
            let Some(doc) = doc else {
                out.append_null();
                continue;
            };
            let node = json::parse(doc, ty).map_err(to_exec)?;
            let kind = node.type_name();
            match (&node.value, wants_array) {
                (JsonValue::Array(items), true) => {
                    for item in items {
                        out.values().append_option(match self.access {
                            Access::Elements => Some(item.to_text(ty)),
                            _ => item.to_unquoted_text(ty),
                        });
                    }
                }
                (JsonValue::Object(members), false) => {
                    for (key, value) in members {
                        out.values().append_option(match self.access {
                            Access::Keys => Some(key.clone()),
                            Access::Values => Some(value.to_text(ty)),
                            _ => value.to_unquoted_text(ty),
                        });
                    }
                }
                (_, true) => {
                    let what = if kind == "object" {
                        "an object"
                    } else {
                        "a scalar"
                    };
                    return Err(to_exec(ExecError::InvalidParameterValue(format!(
                        "cannot extract elements from {what}"
                    ))));
                }
                (_, false) => {
                    let what = if kind == "array" {
                        "an array"
                    } else {
                        "a scalar"
                    };
                    return Err(to_exec(ExecError::InvalidParameterValue(format!(
                        "cannot call {}_{set_function} on {what}",
                        ty.name()
                    ))));
                }
            }
            out.append(true);
        }
        Ok(Arc::new(out.finish()))
    }
}

/// Each row's document and other document read as jsonb and given to `f` (None where either
/// is NULL).
fn jsonb_pairs<T>(
    docs: &StringArray,
    others: &ArrayRef,
    f: impl Fn(JsonNode<'_>, JsonNode<'_>) -> T,
) -> Result<Vec<Option<T>>> {
    let others = utf8(others)?;
    docs.iter()
        .zip(others.as_string::<i32>().iter())
        .map(|pair| match pair {
            (Some(doc), Some(other)) => {
                let a = json::parse(doc, JsonType::Jsonb).map_err(to_exec)?;
                let b = json::parse(other, JsonType::Jsonb).map_err(to_exec)?;
                Ok(Some(f(a, b)))
            }
            _ => Ok(None),
        })
        .collect()
}

fn input(text: &str, ty: JsonType) -> Result<String> {
    match ty {
        JsonType::Json => json::validate_json(text).map(|_| text.to_string()),
        JsonType::Jsonb => json::canonical_jsonb(text),
    }
    .map_err(to_exec)
}

/// Each document parsed as `ty` and mapped by `pick` to a part of it, written as a document
/// of `ty` or, with `as_text`, as `->>` writes it. NULL documents and parts give NULL.
fn map_documents<'d>(
    docs: &'d StringArray,
    ty: JsonType,
    as_text: bool,
    pick: impl for<'n> Fn(usize, &'n JsonNode<'d>) -> Result<Option<&'n JsonNode<'d>>>,
) -> Result<ArrayRef> {
    let mut out = StringBuilder::new();
    for (row, doc) in docs.iter().enumerate() {
        let Some(doc) = doc else {
            out.append_null();
            continue;
        };
        let node = json::parse(doc, ty).map_err(to_exec)?;
        let part = match pick(row, &node)? {
            None => None,
            Some(part) if as_text => part.to_unquoted_text(ty),
            Some(part) => Some(part.to_text(ty)),
        };
        out.append_option(part);
    }
    Ok(Arc::new(out.finish()))
}

/// `jsonb - key`, `jsonb - index` and `jsonb - keys`.
fn delete(docs: &StringArray, what: &ArrayRef) -> Result<ArrayRef> {
    let mut out = StringBuilder::new();
    let indexes = match what.data_type().is_integer() {
        true => Some(cast(what, &DataType::Int64)?),
        false => None,
    };
    let keys = match what.data_type() {
        DataType::List(_) => Some(KeyList::new(what)?),
        _ => None,
    };
    let key_text = utf8(what)?;
    let key_text = key_text.as_string::<i32>();
    for (row, doc) in docs.iter().enumerate() {
        let Some(doc) = doc.filter(|_| what.is_valid(row)) else {
            out.append_null();
            continue;
        };
        let mut node = json::parse(doc, JsonType::Jsonb).map_err(to_exec)?;
        if let Some(indexes) = &indexes {
            let i = indexes
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(row);
            node = node.delete_index(i).map_err(to_exec)?;
        } else if let Some(keys) = &keys {
            for key in keys.row(row)?.unwrap_or_default().iter().flatten() {
                node = node.delete_key(key).map_err(to_exec)?;
            }
        } else {
            node = node.delete_key(key_text.value(row)).map_err(to_exec)?;
        }
        out.append_value(node.to_text(JsonType::Jsonb));
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::parse_text_array;

    #[test]
    fn text_arrays() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(parse_text_array("{a, b}"), Some(vec![s("a"), s("b")]));
        assert_eq!(
            parse_text_array(r#"{"a,b",NULL,"NULL"}"#),
            Some(vec![s("a,b"), None, s("NULL")])
        );
        assert_eq!(parse_text_array("{}"), Some(vec![]));
        assert_eq!(parse_text_array(r#"{a\,b}"#), Some(vec![s("a,b")]));
        assert_eq!(parse_text_array("a,b"), None);
        assert_eq!(parse_text_array("{a}x"), None);
    }
}
