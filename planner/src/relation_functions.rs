//! Catalog functions that answer from a session's view of the metadata: `pg_get_indexdef`,
//! `pg_get_constraintdef`, `pg_get_viewdef`, `pg_get_userbyid`, `pg_table_is_visible`,
//! `pg_relation_is_publishable`, the names `regclass` and `regnamespace` print
//! (`reg_output`), and the size functions
//! `pg_relation_size` / `pg_total_relation_size` / `pg_table_size` / `pg_indexes_size`, which
//! ask storage how many bytes a table's rows and its index entries take.
//!
//! They replace `datafusion-pg-catalog`'s placeholders of the same names (which answer a fixed
//! value), and are registered per session so that they see the session's uncommitted DDL.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use shoal_coord::{Catalog, MetaStore};
use shoal_storage::{keys, Store};

use crate::pg_relations::{constraint_definition, index_definition, quote_ident, OWNER_OID};
use crate::reg_output;

/// What a lookup needs besides its arguments.
struct Sources {
    meta: Arc<dyn MetaStore>,
    store: Store,
}

/// Answers one row: the catalog snapshot, the relation OID, and the row's other arguments.
type Lookup = fn(&Sources, &Catalog, i64, &[ArrayRef], usize) -> Option<Answer>;

enum Answer {
    Text(String),
    Bool(bool),
    Int(i64),
}

/// A function of an OID (and optional further arguments) answered from the catalog.
struct CatalogLookup {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    sources: Arc<Sources>,
    lookup: Lookup,
}

impl std::fmt::Debug for CatalogLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for CatalogLookup {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CatalogLookup {}

impl std::hash::Hash for CatalogLookup {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for CatalogLookup {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.returns.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let catalog = self.sources.meta.catalog();
        let oids: ArrayRef = match arrays[0].data_type() {
            // `pg_relation_size('t')`: PostgreSQL reads the text as a regclass.
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let names = cast(&arrays[0], &DataType::Utf8)?;
                Arc::new(Int64Array::from_iter(
                    names
                        .as_string::<i32>()
                        .iter()
                        .map(|n| n.and_then(|n| relation_oid(&catalog, n))),
                ))
            }
            _ => cast(&arrays[0], &DataType::Int64)?,
        };
        let oids = oids.as_primitive::<Int64Type>();
        let answers: Vec<Option<Answer>> = (0..rows)
            .map(|row| {
                if oids.is_null(row) {
                    return None;
                }
                (self.lookup)(&self.sources, &catalog, oids.value(row), &arrays[1..], row)
            })
            .collect();
        let array: ArrayRef = match self.returns {
            DataType::Boolean => {
                Arc::new(BooleanArray::from_iter(answers.into_iter().map(
                    |a| match a {
                        Some(Answer::Bool(b)) => Some(b),
                        _ => None,
                    },
                )))
            }
            DataType::Int64 => Arc::new(Int64Array::from_iter(answers.into_iter().map(
                |a| match a {
                    Some(Answer::Int(i)) => Some(i),
                    _ => None,
                },
            ))),
            _ => Arc::new(StringArray::from_iter(answers.into_iter().map(
                |a| match a {
                    Some(Answer::Text(s)) => Some(s),
                    _ => None,
                },
            ))),
        };
        Ok(crate::functions::scalar_or_array(&args.args, array))
    }
}

/// The OID of a relation named as `name` or `schema.name`; an unqualified name is looked up
/// as PostgreSQL's default search path does: pg_catalog, then public.
fn relation_oid(c: &Catalog, name: &str) -> Option<i64> {
    use crate::pg_relations::{INFORMATION_SCHEMA_OID, PG_CATALOG_OID};
    // `'16387'::regclass` is the relation with that OID.
    if let Ok(oid) = name.trim().parse::<u32>() {
        return Some(oid.into());
    }
    let unquote = |s: &str| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => s.to_lowercase(),
    };
    let (schema, name) = match name.trim().split_once('.') {
        Some((schema, name)) => (Some(unquote(schema)), unquote(name)),
        None => (None, unquote(name.trim())),
    };
    let system = match schema.as_deref() {
        None | Some("pg_catalog") => Some(PG_CATALOG_OID),
        Some("information_schema") => Some(INFORMATION_SCHEMA_OID),
        Some(_) => None,
    };
    if let Some(oid) = system.and_then(|ns| crate::pg15_catalog::system_relation_oid(ns, &name)) {
        return Some(oid.into());
    }
    let schema = schema.unwrap_or_else(|| "public".to_string());
    if let Some(t) = c.table(&schema, &name) {
        return Some(t.id.into());
    }
    if let Some((_, index)) = c.index(&schema, &name) {
        return Some(index.oid.into());
    }
    c.view(&schema, &name).map(|v| v.oid.into())
}

/// `'name'::regclass`: the relation's OID, which `invoke_with_args` found by name
/// (`relation_oid`); an unknown name is NULL.
fn relation_in(_: &Sources, _: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    Some(Answer::Int(oid))
}

/// Registers the functions on a session's context, reading `meta` (the session's metadata).
pub(crate) fn register(ctx: &SessionContext, meta: Arc<dyn MetaStore>, store: Store) {
    let sources = Arc::new(Sources { meta, store });
    let arities = |n: &[usize]| {
        Signature::one_of(
            n.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Stable,
        )
    };
    let functions: [(&'static str, &[usize], DataType, Lookup); 13] = [
        (reg_output::REGCLASS_IN, &[1], DataType::Int64, relation_in),
        (
            reg_output::REGCLASS_OUT,
            &[1],
            DataType::Utf8,
            relation_name,
        ),
        (
            reg_output::REGNAMESPACE_OUT,
            &[1],
            DataType::Utf8,
            namespace_name,
        ),
        ("pg_get_indexdef", &[1, 3], DataType::Utf8, index_def),
        (
            "pg_get_constraintdef",
            &[1, 2],
            DataType::Utf8,
            constraint_def,
        ),
        ("pg_get_userbyid", &[1], DataType::Utf8, user_name),
        ("pg_table_is_visible", &[1], DataType::Boolean, visible),
        ("pg_relation_size", &[1, 2], DataType::Int64, relation_bytes),
        ("pg_table_size", &[1], DataType::Int64, relation_bytes),
        ("pg_total_relation_size", &[1], DataType::Int64, total_bytes),
        ("pg_indexes_size", &[1], DataType::Int64, index_bytes),
        ("pg_get_viewdef", &[1, 2], DataType::Utf8, view_def),
        (
            "pg_relation_is_publishable",
            &[1],
            DataType::Boolean,
            publishable,
        ),
    ];
    for (name, n, returns, lookup) in functions {
        ctx.register_udf(ScalarUDF::new_from_impl(CatalogLookup {
            name,
            signature: arities(n),
            returns,
            sources: sources.clone(),
            lookup,
        }));
    }
}

fn index_def(_: &Sources, c: &Catalog, oid: i64, rest: &[ArrayRef], row: usize) -> Option<Answer> {
    let (table, index) = c.index_by_oid(u32::try_from(oid).ok()?)?;
    // pg_get_indexdef(index, column, pretty): column > 0 asks for that key column alone.
    let column = rest
        .first()
        .and_then(|a| cast(a, &DataType::Int64).ok())
        .map(|a| a.as_primitive::<Int64Type>().value(row))
        .unwrap_or(0);
    if column > 0 {
        let id = index.columns.get(column as usize - 1)?;
        let name = &table.columns.iter().find(|c| c.id == *id)?.name;
        return Some(Answer::Text(quote_ident(name)));
    }
    Some(Answer::Text(index_definition(table, index)))
}

fn view_def(_: &Sources, c: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    let view = c.views.values().find(|v| i64::from(v.oid) == oid)?;
    Some(Answer::Text(crate::pg_views::definition(view)))
}

/// Whether a publication could include the relation: tables can, other relations cannot.
fn publishable(_: &Sources, c: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    let oid = u32::try_from(oid).ok()?;
    if c.tables.contains_key(&oid) {
        return Some(Answer::Bool(true));
    }
    let other = c.views.values().any(|v| v.oid == oid) || c.index_by_oid(oid).is_some();
    other.then_some(Answer::Bool(false))
}

fn constraint_def(_: &Sources, c: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    c.tables.values().find_map(|t| {
        t.indexes
            .iter()
            .find(|i| i.constraint_oid.map(i64::from) == Some(oid))
            .map(|i| Answer::Text(constraint_definition(t, i)))
    })
}

/// Every object is owned by the bootstrap superuser (OID 10 in pg_class and friends), which is
/// the first superuser the node created.
fn user_name(_: &Sources, c: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    let (owner_role_oid, owner_role) = crate::pg_shared::DATABASE_OWNER_ROLE;
    if oid == owner_role_oid as i64 {
        return Some(Answer::Text(owner_role.to_string()));
    }
    let user = if oid == OWNER_OID as i64 {
        crate::pg_shared::bootstrap(c)
    } else {
        c.users.values().find(|u| u.oid as i64 == oid)
    };
    let name = match user {
        Some(u) => u.name.clone(),
        None => format!("unknown (OID={oid})"),
    };
    Some(Answer::Text(name))
}

/// A relation's name as `regclass` prints it: qualified by its schema unless the search path
/// finds it (`visible`), quoted where needed; an unknown OID prints as its number.
fn relation_name(
    s: &Sources,
    c: &Catalog,
    oid: i64,
    rest: &[ArrayRef],
    row: usize,
) -> Option<Answer> {
    let named =
        u32::try_from(oid)
            .ok()
            .and_then(|id| match crate::pg15_catalog::system_relation(id) {
                Some((namespace, name)) => {
                    crate::pg_relations::namespace_name(c, namespace.into()).map(|s| (s, name))
                }
                None => user_relation(c, id).map(|(schema, name)| (schema.to_string(), name)),
            });
    let Some((schema, name)) = named else {
        return Some(Answer::Text(oid.to_string()));
    };
    Some(Answer::Text(match visible(s, c, oid, rest, row) {
        Some(Answer::Bool(true)) => quote_ident(name),
        _ => format!("{}.{}", quote_ident(&schema), quote_ident(name)),
    }))
}

/// The schema and name of the user's table, index or view with OID `oid`.
fn user_relation(c: &Catalog, oid: u32) -> Option<(&str, &str)> {
    if let Some(t) = c.table_by_id(oid) {
        return Some((&t.schema, &t.name));
    }
    if let Some((t, index)) = c.index_by_oid(oid) {
        return Some((&t.schema, &index.name));
    }
    let view = c.views.values().find(|v| v.oid == oid)?;
    Some((&view.schema, &view.name))
}

/// A schema's name as `regnamespace` prints it; an unknown OID prints as its number.
fn namespace_name(_: &Sources, c: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    let name = crate::pg_relations::namespace_name(c, oid);
    Some(Answer::Text(match name {
        Some(name) => quote_ident(&name),
        None => oid.to_string(),
    }))
}

/// Whether an unqualified name finds the relation: PostgreSQL's default search path is
/// `"$user", public` after the implicit pg_catalog.
fn visible(_: &Sources, c: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    let oid = u32::try_from(oid).ok()?;
    if let Some((namespace, _)) = crate::pg15_catalog::system_relation(oid) {
        return Some(Answer::Bool(
            namespace == crate::pg_relations::PG_CATALOG_OID,
        ));
    }
    let (schema, _) = user_relation(c, oid)?;
    Some(Answer::Bool(schema == "public"))
}

/// The bytes a table's rows, or a secondary index's entries, take in storage (keys and values
/// counted by reading them). A primary key's index has no entries apart from the rows: 0.
fn relation_bytes(s: &Sources, c: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    let oid = u32::try_from(oid).ok()?;
    let (start, end) = match (c.table_by_id(oid), c.index_by_oid(oid)) {
        (Some(t), _) => (keys::table_start(t.id), keys::table_end(t.id)),
        (None, Some((_, index))) if index.primary => return Some(Answer::Int(0)),
        (None, Some((t, index))) => (
            keys::index_start(t.id, index.oid),
            keys::index_end(t.id, index.oid),
        ),
        (None, None) => return None,
    };
    bytes_in(s, &start, &end)
}

/// A table's rows and the entries of all its indexes.
fn total_bytes(
    s: &Sources,
    c: &Catalog,
    oid: i64,
    rest: &[ArrayRef],
    row: usize,
) -> Option<Answer> {
    let Some(Answer::Int(rows)) = relation_bytes(s, c, oid, rest, row) else {
        return None;
    };
    match index_bytes(s, c, oid, rest, row) {
        Some(Answer::Int(indexes)) => Some(Answer::Int(rows + indexes)),
        _ => Some(Answer::Int(rows)),
    }
}

/// The entries of all a table's indexes.
fn index_bytes(s: &Sources, c: &Catalog, oid: i64, _: &[ArrayRef], _: usize) -> Option<Answer> {
    let table = c.table_by_id(u32::try_from(oid).ok()?)?;
    let (start, end) = (
        keys::table_indexes_start(table.id),
        keys::table_indexes_end(table.id),
    );
    bytes_in(s, &start, &end)
}

fn bytes_in(s: &Sources, start: &[u8], end: &[u8]) -> Option<Answer> {
    let footprint = off_the_runtime(|| s.store.footprint(start, end)).ok()?;
    Some(Answer::Int(footprint.bytes as i64))
}

/// Runs storage work that may take a while without stalling the runtime's other tasks.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
