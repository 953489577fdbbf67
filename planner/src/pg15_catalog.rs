//! PostgreSQL 15's own catalog rows, as a fresh PostgreSQL 15 database holds them.
//!
//! `planner/pg15/*.arrow` are written by `scripts/pg15-catalog-snapshot.py` from a real
//! PostgreSQL 15 server. Two kinds of relations come from them:
//! - relations whose rows are all built-in (pg_type, pg_proc, pg_operator, pg_cast, ...), served
//!   whole; pg_type also gets the row types of the users' relations (see [`user_row_types`]);
//! - the rows of pg_class and pg_attribute that describe PostgreSQL's system relations, to which
//!   `pg_relations` adds the rows of the users' relations.
//!
//! Tools that read the whole catalog (DBeaver's type list, pgcli's completion, pgJDBC's type
//! map) then see the same rows as on PostgreSQL 15. The files keep the column names and Arrow
//! types of the exports `datafusion-pg-catalog` ships, so both read the same way.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use shoal_coord::Catalog;

macro_rules! snapshot_files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("../pg15/", $name, ".arrow")))),*]
    };
}

/// Every relation of the snapshot, with its Arrow IPC file.
const FILES: &[(&str, &[u8])] = snapshot_files!(
    "pg_aggregate",
    "pg_am",
    "pg_amop",
    "pg_amproc",
    "pg_cast",
    "pg_collation",
    "pg_conversion",
    "pg_language",
    "pg_opclass",
    "pg_operator",
    "pg_opfamily",
    "pg_proc",
    "pg_range",
    "pg_ts_config",
    "pg_ts_dict",
    "pg_ts_parser",
    "pg_ts_template",
    "pg_type",
    "pg_description",
    "pg_extension",
    "pg_class",
    "pg_attribute",
);

/// The snapshot relations that hold only some of the rows clients see (the system relations'
/// own); `pg_relations` computes the rest.
const PARTIAL: &[&str] = &["pg_class", "pg_attribute"];

fn loaded() -> &'static HashMap<&'static str, RecordBatch> {
    static LOADED: OnceLock<HashMap<&'static str, RecordBatch>> = OnceLock::new();
    LOADED.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, bytes)| {
                // The files are part of the binary: one that does not read is a build defect.
                let batch = read(bytes)
                    .unwrap_or_else(|e| panic!("planner/pg15/{name}.arrow is unreadable: {e}"));
                (*name, batch)
            })
            .collect()
    })
}

fn read(bytes: &[u8]) -> DfResult<RecordBatch> {
    let reader = FileReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

/// The rows of a built-in relation served whole from the snapshot, if `relation` is one.
pub(crate) fn whole_relation(relation: &str) -> Option<RecordBatch> {
    if PARTIAL.contains(&relation) {
        return None;
    }
    loaded().get(relation).cloned()
}

/// The rows of pg_class or pg_attribute that describe PostgreSQL's system relations, in the
/// columns and types of `schema` (columns the snapshot lacks are NULL).
pub(crate) fn system_rows(relation: &str, schema: &SchemaRef) -> DfResult<RecordBatch> {
    conform(snapshot(relation)?, schema)
}

fn snapshot(relation: &str) -> DfResult<&'static RecordBatch> {
    loaded()
        .get(relation)
        .ok_or_else(|| DataFusionError::Internal(format!("{relation} is not in the snapshot")))
}

/// `batch`'s columns by name, cast to the types of `schema`.
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => cast(column, field.data_type())
                .unwrap_or_else(|_| new_null_array(field.data_type(), batch.num_rows())),
            None => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `schema` with every field nullable: system and user rows differ in which columns they
/// leave NULL.
pub(crate) fn nullable(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The system relations of the snapshot's pg_class: OID → (namespace OID, name).
fn system_relations() -> &'static HashMap<u32, (u32, String)> {
    static BY_OID: OnceLock<HashMap<u32, (u32, String)>> = OnceLock::new();
    BY_OID.get_or_init(|| {
        let Some(class) = loaded().get("pg_class") else {
            return HashMap::new();
        };
        let column = |name, data_type| {
            class
                .column_by_name(name)
                .and_then(|c| cast(c, data_type).ok())
        };
        let (Some(oids), Some(namespaces), Some(names)) = (
            column("oid", &DataType::Int32),
            column("relnamespace", &DataType::Int32),
            column("relname", &DataType::Utf8),
        ) else {
            return HashMap::new();
        };
        let (oids, namespaces, names) = (
            oids.as_primitive::<Int32Type>(),
            namespaces.as_primitive::<Int32Type>(),
            names.as_string::<i32>(),
        );
        (0..class.num_rows())
            .filter(|i| oids.is_valid(*i) && namespaces.is_valid(*i) && names.is_valid(*i))
            .map(|i| {
                let entry = (namespaces.value(i) as u32, names.value(i).to_string());
                (oids.value(i) as u32, entry)
            })
            .collect()
    })
}

/// The namespace OID and name of the system relation with OID `oid`.
pub(crate) fn system_relation(oid: u32) -> Option<(u32, &'static str)> {
    system_relations()
        .get(&oid)
        .map(|(namespace, name)| (*namespace, name.as_str()))
}

/// The OID of the system relation `name` in the namespace with OID `namespace`.
pub(crate) fn system_relation_oid(namespace: u32, name: &str) -> Option<u32> {
    system_relations()
        .iter()
        .find_map(|(oid, (ns, n))| (*ns == namespace && n == name).then_some(*oid))
}

/// pg_type as clients see it: PostgreSQL 15's built-in types, then a row type and its array
/// type for every table and view, as PostgreSQL creates them with the relation.
pub(crate) fn pg_type(
    catalog: &Catalog,
    namespace_of: impl Fn(&str) -> u32,
) -> DfResult<RecordBatch> {
    let builtin = snapshot("pg_type")?;
    let schema = nullable(builtin.schema().as_ref());
    let mut relations: Vec<(u32, u32, &str, &str)> = catalog
        .tables
        .values()
        .map(|t| (t.id, t.row_type_oid, t.schema.as_str(), t.name.as_str()))
        .collect();
    relations.extend(
        catalog
            .views
            .values()
            .map(|v| (v.oid, v.row_type_oid, v.schema.as_str(), v.name.as_str())),
    );
    // Relations created before row types were allocated have none.
    relations.retain(|r| r.1 != 0);
    let mut rows = Vec::with_capacity(relations.len() * 2);
    for (relation, row_type, schema_name, name) in relations {
        let namespace = namespace_of(schema_name);
        rows.push(user_row_type(row_type, name, namespace, relation));
        rows.push(user_array_type(row_type, name, namespace));
    }
    let user = rows_batch(&schema, &rows)?;
    Ok(concat_batches(
        &schema,
        [&conform(builtin, &schema)?, &user],
    )?)
}

type Row = HashMap<&'static str, ScalarValue>;

fn text(s: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(s.to_string()))
}

/// The pg_type columns every user type shares.
fn common_type_columns(oid: u32, name: String, namespace: u32) -> Row {
    HashMap::from([
        ("oid", ScalarValue::Int32(Some(oid as i32))),
        ("typname", ScalarValue::Utf8(Some(name))),
        ("typnamespace", ScalarValue::Int32(Some(namespace as i32))),
        (
            "typowner",
            ScalarValue::Int32(Some(crate::pg_relations::OWNER_OID)),
        ),
        ("typlen", ScalarValue::Int16(Some(-1))),
        ("typbyval", ScalarValue::Boolean(Some(false))),
        ("typispreferred", ScalarValue::Boolean(Some(false))),
        ("typisdefined", ScalarValue::Boolean(Some(true))),
        ("typdelim", text(",")),
        ("typmodin", text("-")),
        ("typmodout", text("-")),
        ("typalign", text("d")),
        ("typstorage", text("x")),
        ("typnotnull", ScalarValue::Boolean(Some(false))),
        ("typbasetype", ScalarValue::Int32(Some(0))),
        ("typtypmod", ScalarValue::Int32(Some(-1))),
        ("typndims", ScalarValue::Int32(Some(0))),
        ("typcollation", ScalarValue::Int32(Some(0))),
    ])
}

/// The composite type PostgreSQL creates for a table or view (`typtype 'c'`).
fn user_row_type(oid: u32, name: &str, namespace: u32, relation: u32) -> Row {
    let mut row = common_type_columns(oid, name.to_string(), namespace);
    row.extend([
        ("typtype", text("c")),
        ("typcategory", text("C")),
        ("typrelid", ScalarValue::Int32(Some(relation as i32))),
        ("typsubscript", text("-")),
        ("typelem", ScalarValue::Int32(Some(0))),
        ("typarray", ScalarValue::Int32(Some(oid as i32 + 1))),
        ("typinput", text("record_in")),
        ("typoutput", text("record_out")),
        ("typreceive", text("record_recv")),
        ("typsend", text("record_send")),
        ("typanalyze", text("-")),
    ]);
    row
}

/// The array type of a relation's row type, named `_name` as PostgreSQL names it.
fn user_array_type(row_type: u32, name: &str, namespace: u32) -> Row {
    let mut row = common_type_columns(row_type + 1, format!("_{name}"), namespace);
    row.extend([
        ("typtype", text("b")),
        ("typcategory", text("A")),
        ("typrelid", ScalarValue::Int32(Some(0))),
        ("typsubscript", text("array_subscript_handler")),
        ("typelem", ScalarValue::Int32(Some(row_type as i32))),
        ("typarray", ScalarValue::Int32(Some(0))),
        ("typinput", text("array_in")),
        ("typoutput", text("array_out")),
        ("typreceive", text("array_recv")),
        ("typsend", text("array_send")),
        ("typanalyze", text("array_typanalyze")),
    ]);
    row
}

/// `rows` as a batch of `schema`: each row names its values by column, the rest are NULL.
fn rows_batch(schema: &SchemaRef, rows: &[Row]) -> DfResult<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| -> DfResult<ArrayRef> {
            if rows.is_empty() {
                return Ok(new_null_array(field.data_type(), 0));
            }
            let null = ScalarValue::try_from(field.data_type())?;
            let values = rows
                .iter()
                .map(|r| r.get(field.name().as_str()).unwrap_or(&null));
            let array = ScalarValue::iter_to_array(values.cloned())?;
            Ok(cast(&array, field.data_type())?)
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_reads_and_holds_rows() {
        for (name, _) in FILES {
            let batch = &loaded()[name];
            assert!(batch.num_rows() > 0, "{name} is empty");
        }
        // PostgreSQL 15.x has 611 built-in types and 64 catalog tables.
        assert_eq!(loaded()["pg_type"].num_rows(), 611);
        assert_eq!(system_relation(1259), Some((11, "pg_class")));
    }

    #[test]
    fn user_relations_get_a_row_type_and_an_array_type() {
        let mut catalog = Catalog::default();
        let mut table = shoal_coord::TableDef {
            id: 0,
            schema: "public".into(),
            name: "t".into(),
            columns: Vec::new(),
            primary_key: Vec::new(),
            partition_key: Vec::new(),
            partitions: Vec::new(),
            indexes: Vec::new(),
            row_type_oid: 0,
            replicas: 1,
        };
        table.id = 16384;
        table.row_type_oid = 16385;
        catalog.tables.insert(table.id, table);
        let batch = pg_type(&catalog, |_| 2200).unwrap();
        assert_eq!(batch.num_rows(), 613);
        let names = batch.column_by_name("typname").unwrap().as_string::<i32>();
        let arrays = cast(batch.column_by_name("typarray").unwrap(), &DataType::Int32).unwrap();
        assert_eq!(names.value(611), "t");
        assert_eq!(arrays.as_primitive::<Int32Type>().value(611), 16386);
        assert_eq!(names.value(612), "_t");
    }
}
