//! Live `pg_namespace`, `pg_class`, `pg_attribute`, `pg_index`, `pg_constraint`,
//! `pg_indexes` and `pg_stat_user_tables`, built from Shoal's catalog snapshot (and, for the
//! row counts, from storage) at each query.
//!
//! Clients find tables, columns and keys by joining these five relations on OIDs, so the OIDs
//! must agree between them and stay the same across queries, restarts and nodes: user objects
//! carry the OIDs the catalog allocated when they were created, built-in relations and
//! namespaces carry PostgreSQL 15's own (`pg_catalog` is 11, `pg_class` is 1259).
//!
//! The rows come from the session's view of the metadata, so a transaction block sees its own
//! uncommitted DDL here as it does in queries.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int16Array, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Int16Type, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion_pg_catalog::pg_catalog::oid_field::{kind, oid_field};
use shoal_coord::{Catalog, ColumnDef, IndexDef, SqlType, TableDef};
use shoal_executor::PG_TYPE_METADATA_KEY;

use crate::catalog::ShoalCatalog;
use crate::pg15_catalog;

pub(crate) const PG_CATALOG_OID: u32 = 11;
/// Listed as PostgreSQL lists it; Shoal has no TOAST tables to put there.
const PG_TOAST_OID: u32 = 99;
const PUBLIC_OID: u32 = 2200;
pub(crate) const INFORMATION_SCHEMA_OID: u32 = 13207;
const HEAP_AM_OID: i32 = 2;
const BTREE_AM_OID: i32 = 403;
const DEFAULT_COLLATION_OID: i32 = 100;
/// The owner shown for every object: PostgreSQL's bootstrap superuser OID. Shoal does not
/// track owners yet; `pg_get_userbyid(10)` names the node's bootstrap superuser.
pub(crate) const OWNER_OID: i32 = 10;

/// The relations this module computes; every other pg_catalog name goes to the inner provider.
const LIVE_RELATIONS: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_type",
    "pg_attribute",
    "pg_index",
    "pg_constraint",
    "pg_indexes",
    "pg_stat_user_tables",
    "pg_roles",
    "pg_authid",
    "pg_user",
    "pg_database",
    "pg_views",
];

/// pg_catalog as a session sees it: the static and computed relations of `inner`, with the
/// relations describing Shoal's own objects computed from `catalog`'s metadata.
pub(crate) struct LiveCatalogSchema {
    inner: Arc<dyn SchemaProvider>,
    catalog: ShoalCatalog,
}

impl LiveCatalogSchema {
    pub(crate) fn new(inner: Arc<dyn SchemaProvider>, catalog: ShoalCatalog) -> Self {
        LiveCatalogSchema { inner, catalog }
    }

    async fn compute(&self, name: &str) -> DfResult<RecordBatch> {
        let snapshot = self.catalog.meta_snapshot();
        let objects = Objects::new(&snapshot);
        match name {
            "pg_namespace" => objects.namespaces(),
            "pg_type" => pg15_catalog::pg_type(&snapshot, |s| objects.namespace_of(s)),
            "pg_class" => objects.classes(&self.view_widths(&snapshot).await?),
            "pg_attribute" => objects.attributes(&self.view_columns(&snapshot).await?),
            "pg_index" => objects.indexes(),
            "pg_constraint" => objects.constraints(),
            "pg_indexes" => objects.index_definitions(),
            "pg_roles" => crate::pg_shared::pg_roles(&snapshot),
            "pg_authid" => crate::pg_shared::pg_authid(&snapshot),
            "pg_user" => crate::pg_shared::pg_user(&snapshot),
            "pg_database" => crate::pg_shared::pg_database(),
            "pg_views" => crate::pg_views::pg_views(&snapshot),
            _ => objects.table_statistics(&self.live_rows(&snapshot).await?),
        }
    }

    /// Each view's output columns (name, Arrow type), found by planning its query.
    async fn view_columns(&self, catalog: &Catalog) -> DfResult<BTreeMap<u32, Vec<Field>>> {
        let mut out = BTreeMap::new();
        for view in catalog.views.values() {
            let Some(schema) = self.catalog.schema(&view.schema) else {
                continue;
            };
            // A view whose query no longer plans (a dropped table) has no columns to show.
            if let Ok(Some(table)) = schema.table(&view.name).await {
                let schema = table.schema();
                let fields = schema.fields().iter().map(|f| f.as_ref().clone());
                out.insert(view.oid, fields.collect());
            }
        }
        Ok(out)
    }

    /// Each table's row count, read from storage on a blocking thread.
    async fn live_rows(&self, catalog: &Catalog) -> DfResult<BTreeMap<u32, u64>> {
        let store = self.catalog.store().clone();
        let ids: Vec<u32> = catalog.tables.keys().copied().collect();
        tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .map(|id| Ok((id, store.table_footprint(id)?.rows)))
                .collect::<Result<BTreeMap<_, _>, shoal_storage::StorageError>>()
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    async fn view_widths(&self, catalog: &Catalog) -> DfResult<BTreeMap<u32, usize>> {
        Ok(self
            .view_columns(catalog)
            .await?
            .into_iter()
            .map(|(oid, fields)| (oid, fields.len()))
            .collect())
    }
}

impl std::fmt::Debug for LiveCatalogSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveCatalogSchema")
    }
}

#[async_trait]
impl SchemaProvider for LiveCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        for live in LIVE_RELATIONS {
            if !names.iter().any(|n| n == live) {
                names.push(live.to_string());
            }
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == "pg_settings" {
            return Ok(Some(Arc::new(crate::pg_settings::PgSettingsTable::new())));
        }
        if LIVE_RELATIONS.contains(&name) {
            let batch = self.compute(name).await?;
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
            return Ok(Some(Arc::new(table)));
        }
        let table: Option<Arc<dyn TableProvider>> = match pg15_catalog::whole_relation(name) {
            Some(rows) => Some(Arc::new(MemTable::try_new(
                rows.schema(),
                vec![vec![rows]],
            )?)),
            None => self.inner.table(name).await?,
        };
        match table {
            Some(t) if crate::pg_static_arrays::has_array_columns(name) => {
                Ok(Some(crate::pg_static_arrays::retyped(name, t).await?))
            }
            other => Ok(other),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        LIVE_RELATIONS.contains(&name) || self.inner.table_exist(name)
    }
}

/// One user relation as `pg_class` lists it.
#[derive(Clone)]
struct Relation {
    oid: u32,
    name: String,
    namespace: u32,
    kind: u8,
    columns: usize,
    has_index: bool,
    row_type: u32,
}

/// The name of the schema with OID `oid`, as pg_namespace lists it.
pub(crate) fn namespace_name(catalog: &Catalog, oid: i64) -> Option<String> {
    let oid = u32::try_from(oid).ok()?;
    Objects::new(catalog)
        .namespaces
        .into_iter()
        .find_map(|(o, name)| (o == oid).then_some(name))
}

/// Every object of one catalog snapshot, with the OIDs clients see.
struct Objects<'a> {
    catalog: &'a Catalog,
    namespaces: Vec<(u32, String)>,
}

impl<'a> Objects<'a> {
    fn new(catalog: &'a Catalog) -> Self {
        // The `shoal` schema of system views is left out: BI tools list every namespace they
        // do not recognise by name as the user's, and would offer Shoal's internals as data.
        let mut namespaces = vec![
            (PG_TOAST_OID, "pg_toast".to_string()),
            (PG_CATALOG_OID, "pg_catalog".to_string()),
            (INFORMATION_SCHEMA_OID, "information_schema".to_string()),
        ];
        namespaces.extend(catalog.schemas.values().map(|s| (s.oid, s.name.clone())));
        Objects {
            catalog,
            namespaces,
        }
    }

    fn namespace_of(&self, schema: &str) -> u32 {
        self.namespaces
            .iter()
            .find(|(_, n)| n == schema)
            .map_or(0, |(oid, _)| *oid)
    }

    fn namespaces(&self) -> DfResult<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            oid_field("oid", kind::OID, false),
            Field::new("nspname", DataType::Utf8, false),
            oid_field("nspowner", kind::OID, false),
            Field::new("nspacl", DataType::Utf8, true),
        ]));
        let n = self.namespaces.len();
        batch(
            schema,
            vec![
                oids(self.namespaces.iter().map(|(oid, _)| *oid)),
                strings(self.namespaces.iter().map(|(_, name)| name.as_str())),
                // PostgreSQL 15's `public` belongs to whoever owns the database.
                oids(self.namespaces.iter().map(|(oid, _)| match *oid {
                    PUBLIC_OID => crate::pg_shared::DATABASE_OWNER_ROLE.0,
                    _ => OWNER_OID as u32,
                })),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
            ],
        )
    }

    /// Tables, views and indexes of the catalog.
    fn relations(&self, view_widths: &BTreeMap<u32, usize>) -> Vec<Relation> {
        let mut out = Vec::new();
        for t in self.catalog.tables.values() {
            let namespace = self.namespace_of(&t.schema);
            out.push(Relation {
                oid: t.id,
                name: t.name.clone(),
                namespace,
                kind: b'r',
                columns: t.columns.len(),
                has_index: !t.indexes.is_empty(),
                row_type: t.row_type_oid,
            });
            out.extend(t.indexes.iter().map(|i| Relation {
                oid: i.oid,
                name: i.name.clone(),
                namespace,
                kind: b'i',
                columns: i.columns.len(),
                has_index: false,
                row_type: 0,
            }));
        }
        out.extend(self.catalog.views.values().map(|v| Relation {
            oid: v.oid,
            name: v.name.clone(),
            namespace: self.namespace_of(&v.schema),
            kind: b'v',
            columns: view_widths.get(&v.oid).copied().unwrap_or(0),
            has_index: false,
            row_type: v.row_type_oid,
        }));
        out
    }

    fn classes(&self, view_widths: &BTreeMap<u32, usize>) -> DfResult<RecordBatch> {
        let rels = self.relations(view_widths);
        let n = rels.len();
        let int = |name: &str| Field::new(name, DataType::Int32, false);
        let flag = |name: &str| Field::new(name, DataType::Boolean, false);
        let text = |name: &str| Field::new(name, DataType::Utf8, false);
        let schema = Arc::new(Schema::new(vec![
            oid_field("oid", kind::OID, false),
            text("relname"),
            oid_field("relnamespace", kind::OID, false),
            oid_field("reltype", kind::OID, false),
            oid_field("reloftype", kind::OID, false),
            oid_field("relowner", kind::OID, false),
            oid_field("relam", kind::OID, false),
            oid_field("relfilenode", kind::OID, false),
            oid_field("reltablespace", kind::OID, false),
            int("relpages"),
            Field::new("reltuples", DataType::Float64, false),
            int("relallvisible"),
            oid_field("reltoastrelid", kind::OID, false),
            flag("relhasindex"),
            flag("relisshared"),
            text("relpersistence"),
            text("relkind"),
            Field::new("relnatts", DataType::Int16, false),
            Field::new("relchecks", DataType::Int16, false),
            flag("relhasrules"),
            flag("relhastriggers"),
            flag("relhassubclass"),
            flag("relrowsecurity"),
            flag("relforcerowsecurity"),
            flag("relispopulated"),
            text("relreplident"),
            flag("relispartition"),
            oid_field("relrewrite", kind::OID, false),
            int("relfrozenxid"),
            int("relminmxid"),
            Field::new("relacl", text_list(), true),
            Field::new("reloptions", text_list(), true),
            Field::new("relpartbound", DataType::Utf8, true),
        ]));
        let zeros = || -> ArrayRef { Arc::new(Int32Array::from(vec![0; n])) };
        let falses = || -> ArrayRef { Arc::new(BooleanArray::from(vec![false; n])) };
        let am = rels.iter().map(|r| match r.kind {
            b'r' => HEAP_AM_OID,
            b'i' => BTREE_AM_OID,
            _ => 0,
        });
        // PostgreSQL 15 shows -1 tuples for a relation never vacuumed or analyzed.
        let tuples = rels.iter().map(|r| if r.kind == b'v' { 0.0 } else { -1.0 });
        with_system_rows(
            "pg_class",
            batch(
                schema,
                vec![
                    oids(rels.iter().map(|r| r.oid)),
                    strings(rels.iter().map(|r| r.name.as_str())),
                    oids(rels.iter().map(|r| r.namespace)),
                    oids(rels.iter().map(|r| r.row_type)),
                    zeros(),
                    Arc::new(Int32Array::from(vec![OWNER_OID; n])),
                    Arc::new(Int32Array::from_iter_values(am)),
                    oids(rels.iter().map(|r| if r.kind == b'v' { 0 } else { r.oid })),
                    zeros(),
                    zeros(),
                    Arc::new(Float64Array::from_iter_values(tuples)),
                    zeros(),
                    zeros(),
                    Arc::new(BooleanArray::from_iter(
                        rels.iter().map(|r| Some(r.has_index)),
                    )),
                    falses(),
                    strings(rels.iter().map(|_| "p")),
                    strings(rels.iter().map(|r| kind_name(r.kind))),
                    Arc::new(Int16Array::from_iter_values(
                        rels.iter().map(|r| r.columns as i16),
                    )),
                    Arc::new(Int16Array::from(vec![0; n])),
                    Arc::new(BooleanArray::from_iter(
                        rels.iter().map(|r| Some(r.kind == b'v')),
                    )),
                    falses(),
                    falses(),
                    falses(),
                    falses(),
                    Arc::new(BooleanArray::from(vec![true; n])),
                    strings(rels.iter().map(|r| if r.kind == b'r' { "d" } else { "n" })),
                    falses(),
                    zeros(),
                    zeros(),
                    zeros(),
                    null_text_lists(n),
                    null_text_lists(n),
                    Arc::new(StringArray::from(vec![None::<&str>; n])),
                ],
            )?,
        )
    }

    fn attributes(&self, view_columns: &BTreeMap<u32, Vec<Field>>) -> DfResult<RecordBatch> {
        let mut rows: Vec<Attribute> = Vec::new();
        for t in self.catalog.tables.values() {
            for c in &t.columns {
                rows.push(Attribute::of_column(t.id, c.id as i16 + 1, c));
            }
            for index in &t.indexes {
                for (position, id) in index.columns.iter().enumerate() {
                    if let Some(c) = t.columns.iter().find(|c| c.id == *id) {
                        let mut a = Attribute::of_column(index.oid, position as i16 + 1, c);
                        a.has_default = false;
                        rows.push(a);
                    }
                }
            }
        }
        for (oid, fields) in view_columns {
            for (position, f) in fields.iter().enumerate() {
                rows.push(Attribute::of_view_column(*oid, position as i16 + 1, f));
            }
        }
        let n = rows.len();
        let schema = Arc::new(Schema::new(vec![
            oid_field("attrelid", kind::OID, false),
            Field::new("attname", DataType::Utf8, false),
            oid_field("atttypid", kind::OID, false),
            Field::new("attstattarget", DataType::Int32, false),
            Field::new("attlen", DataType::Int16, false),
            Field::new("attnum", DataType::Int16, false),
            Field::new("attndims", DataType::Int32, false),
            Field::new("attcacheoff", DataType::Int32, false),
            Field::new("atttypmod", DataType::Int32, false),
            Field::new("attbyval", DataType::Boolean, false),
            Field::new("attalign", DataType::Utf8, false),
            Field::new("attstorage", DataType::Utf8, false),
            Field::new("attcompression", DataType::Utf8, false),
            Field::new("attnotnull", DataType::Boolean, false),
            Field::new("atthasdef", DataType::Boolean, false),
            Field::new("atthasmissing", DataType::Boolean, false),
            Field::new("attidentity", DataType::Utf8, false),
            Field::new("attgenerated", DataType::Utf8, false),
            Field::new("attisdropped", DataType::Boolean, false),
            Field::new("attislocal", DataType::Boolean, false),
            Field::new("attinhcount", DataType::Int32, false),
            oid_field("attcollation", kind::OID, false),
            Field::new("attacl", text_list(), true),
            Field::new("attoptions", text_list(), true),
            Field::new("attfdwoptions", text_list(), true),
            Field::new("attmissingval", DataType::Utf8, true),
        ]));
        let info = |f: fn(&TypeInfo) -> i32| -> ArrayRef {
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| f(&r.info)),
            ))
        };
        let flag = |f: fn(&Attribute) -> bool| -> ArrayRef {
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(f(r)))))
        };
        with_system_rows(
            "pg_attribute",
            batch(
                schema,
                vec![
                    oids(rows.iter().map(|r| r.relation)),
                    strings(rows.iter().map(|r| r.name.as_str())),
                    oids(rows.iter().map(|r| r.info.oid)),
                    Arc::new(Int32Array::from(vec![-1; n])),
                    Arc::new(Int16Array::from_iter_values(
                        rows.iter().map(|r| r.info.len),
                    )),
                    Arc::new(Int16Array::from_iter_values(rows.iter().map(|r| r.number))),
                    info(|i| i.dims),
                    Arc::new(Int32Array::from(vec![-1; n])),
                    info(|i| i.typmod),
                    Arc::new(BooleanArray::from_iter(
                        rows.iter().map(|r| Some(r.info.by_value)),
                    )),
                    strings(rows.iter().map(|r| r.info.align)),
                    strings(rows.iter().map(|r| r.info.storage)),
                    strings(rows.iter().map(|_| "")),
                    flag(|r| r.not_null),
                    flag(|r| r.has_default),
                    flag(|_| false),
                    strings(rows.iter().map(|_| "")),
                    strings(rows.iter().map(|_| "")),
                    flag(|r| r.dropped),
                    flag(|_| true),
                    Arc::new(Int32Array::from(vec![0; n])),
                    info(|i| i.collation),
                    null_text_lists(n),
                    null_text_lists(n),
                    null_text_lists(n),
                    Arc::new(StringArray::from(vec![None::<&str>; n])),
                ],
            )?,
        )
    }

    fn all_indexes(&self) -> impl Iterator<Item = (&'a TableDef, &'a IndexDef)> {
        self.catalog
            .tables
            .values()
            .flat_map(|t| t.indexes.iter().map(move |i| (t, i)))
    }

    fn indexes(&self) -> DfResult<RecordBatch> {
        let rows: Vec<_> = self.all_indexes().collect();
        let n = rows.len();
        let flag = |name: &str| Field::new(name, DataType::Boolean, false);
        let schema = Arc::new(Schema::new(vec![
            oid_field("indexrelid", kind::OID, false),
            oid_field("indrelid", kind::OID, false),
            Field::new("indnatts", DataType::Int16, false),
            Field::new("indnkeyatts", DataType::Int16, false),
            flag("indisunique"),
            flag("indnullsnotdistinct"),
            flag("indisprimary"),
            flag("indisexclusion"),
            flag("indimmediate"),
            flag("indisclustered"),
            flag("indisvalid"),
            flag("indcheckxmin"),
            flag("indisready"),
            flag("indislive"),
            flag("indisreplident"),
            vector_field("indkey", int16_list(), "int2vector"),
            vector_field("indcollation", int32_list(), "oidvector"),
            vector_field("indclass", int32_list(), "oidvector"),
            vector_field("indoption", int16_list(), "int2vector"),
            Field::new("indexprs", DataType::Utf8, true),
            Field::new("indpred", DataType::Utf8, true),
        ]));
        let width = || {
            Arc::new(Int16Array::from_iter_values(
                rows.iter().map(|(_, i)| i.columns.len() as i16),
            )) as ArrayRef
        };
        let each = |f: fn(&IndexDef) -> bool| -> ArrayRef {
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|(_, i)| Some(f(i))),
            ))
        };
        let attnums = rows.iter().map(|(_, i)| Some(attnums(i)));
        let collations = rows.iter().map(|(t, i)| {
            Some(
                key_columns(t, i)
                    .map(|c| Some(type_info(&c.sql_type).collation))
                    .collect::<Vec<_>>(),
            )
        });
        let classes = rows.iter().map(|(t, i)| {
            Some(
                key_columns(t, i)
                    .map(|c| Some(operator_class(&c.sql_type)))
                    .collect::<Vec<_>>(),
            )
        });
        // PostgreSQL's INDOPTION_DESC (1), with INDOPTION_NULLS_FIRST (2) that DESC implies.
        let options = rows.iter().map(|(_, i)| {
            Some(
                (0..i.columns.len())
                    .map(|k| {
                        Some(if i.descending.get(k) == Some(&true) {
                            3i16
                        } else {
                            0
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        });
        batch(
            schema,
            vec![
                oids(rows.iter().map(|(_, i)| i.oid)),
                oids(rows.iter().map(|(t, _)| t.id)),
                width(),
                width(),
                each(|i| i.unique),
                each(|_| false),
                each(|i| i.primary),
                each(|_| false),
                each(|_| true),
                each(|_| false),
                each(|_| true),
                each(|_| false),
                each(|_| true),
                each(|_| true),
                each(|_| false),
                Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(attnums)),
                Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                    collations,
                )),
                Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(classes)),
                Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(options)),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
            ],
        )
    }

    fn constraints(&self) -> DfResult<RecordBatch> {
        let rows: Vec<_> = self
            .all_indexes()
            .filter_map(|(t, i)| i.constraint_oid.map(|oid| (oid, t, i)))
            .collect();
        let n = rows.len();
        let flag = |name: &str| Field::new(name, DataType::Boolean, false);
        let text = |name: &str| Field::new(name, DataType::Utf8, false);
        let oid_list = |name: &str| Field::new(name, int32_list(), true);
        let schema = Arc::new(Schema::new(vec![
            oid_field("oid", kind::OID, false),
            text("conname"),
            oid_field("connamespace", kind::OID, false),
            text("contype"),
            flag("condeferrable"),
            flag("condeferred"),
            flag("convalidated"),
            oid_field("conrelid", kind::OID, false),
            oid_field("contypid", kind::OID, false),
            oid_field("conindid", kind::OID, false),
            oid_field("conparentid", kind::OID, false),
            oid_field("confrelid", kind::OID, false),
            text("confupdtype"),
            text("confdeltype"),
            text("confmatchtype"),
            flag("conislocal"),
            Field::new("coninhcount", DataType::Int32, false),
            flag("connoinherit"),
            Field::new("conkey", int16_list(), true),
            Field::new("confkey", int16_list(), true),
            oid_list("conpfeqop"),
            oid_list("conppeqop"),
            oid_list("conffeqop"),
            Field::new("confdelsetcols", int16_list(), true),
            oid_list("conexclop"),
            Field::new("conbin", DataType::Utf8, true),
        ]));
        let zeros = || -> ArrayRef { Arc::new(Int32Array::from(vec![0; n])) };
        let each = |v: bool| -> ArrayRef { Arc::new(BooleanArray::from(vec![v; n])) };
        let blank = || strings(rows.iter().map(|_| " "));
        let no_int16s = || -> ArrayRef {
            Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(
                (0..n).map(|_| None::<Vec<Option<i16>>>),
            ))
        };
        let no_oids = || -> ArrayRef {
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                (0..n).map(|_| None::<Vec<Option<i32>>>),
            ))
        };
        batch(
            schema,
            vec![
                oids(rows.iter().map(|(oid, _, _)| *oid)),
                strings(rows.iter().map(|(_, _, i)| i.name.as_str())),
                oids(rows.iter().map(|(_, t, _)| self.namespace_of(&t.schema))),
                strings(
                    rows.iter()
                        .map(|(_, _, i)| if i.primary { "p" } else { "u" }),
                ),
                each(false),
                each(false),
                each(true),
                oids(rows.iter().map(|(_, t, _)| t.id)),
                zeros(),
                oids(rows.iter().map(|(_, _, i)| i.oid)),
                zeros(),
                zeros(),
                blank(),
                blank(),
                blank(),
                each(true),
                zeros(),
                each(true),
                Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(
                    rows.iter().map(|(_, _, i)| Some(attnums(i))),
                )),
                no_int16s(),
                no_oids(),
                no_oids(),
                no_oids(),
                no_int16s(),
                no_oids(),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
            ],
        )
    }

    /// `pg_indexes`: one row per index with its `CREATE INDEX` statement.
    fn index_definitions(&self) -> DfResult<RecordBatch> {
        let rows: Vec<_> = self.all_indexes().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("schemaname", DataType::Utf8, false),
            Field::new("tablename", DataType::Utf8, false),
            Field::new("indexname", DataType::Utf8, false),
            Field::new("tablespace", DataType::Utf8, true),
            Field::new("indexdef", DataType::Utf8, false),
        ]));
        let definitions: Vec<String> = rows.iter().map(|(t, i)| index_definition(t, i)).collect();
        batch(
            schema,
            vec![
                strings(rows.iter().map(|(t, _)| t.schema.as_str())),
                strings(rows.iter().map(|(t, _)| t.name.as_str())),
                strings(rows.iter().map(|(_, i)| i.name.as_str())),
                Arc::new(StringArray::from(vec![None::<&str>; rows.len()])),
                strings(definitions.iter().map(String::as_str)),
            ],
        )
    }
}

impl Objects<'_> {
    /// `pg_stat_user_tables`: live row counts from storage; Shoal keeps no scan or vacuum
    /// counters yet, so those read 0 (NULL for times), as on a table PostgreSQL never touched.
    fn table_statistics(&self, live_rows: &BTreeMap<u32, u64>) -> DfResult<RecordBatch> {
        let tables: Vec<&TableDef> = self.catalog.tables.values().collect();
        let n = tables.len();
        let counter = |name: &str| Field::new(name, DataType::Int64, true);
        let time = |name: &str| {
            Field::new(
                name,
                DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    Some("UTC".into()),
                ),
                true,
            )
        };
        let mut fields = vec![
            oid_field("relid", kind::OID, false),
            Field::new("schemaname", DataType::Utf8, false),
            Field::new("relname", DataType::Utf8, false),
        ];
        let counters = [
            "seq_scan",
            "seq_tup_read",
            "idx_scan",
            "idx_tup_fetch",
            "n_tup_ins",
            "n_tup_upd",
            "n_tup_del",
            "n_tup_hot_upd",
            "n_live_tup",
            "n_dead_tup",
            "n_mod_since_analyze",
            "n_ins_since_vacuum",
        ];
        fields.extend(counters.iter().map(|c| counter(c)));
        let times = [
            "last_vacuum",
            "last_autovacuum",
            "last_analyze",
            "last_autoanalyze",
        ];
        fields.extend(times.iter().map(|t| time(t)));
        let counts = [
            "vacuum_count",
            "autovacuum_count",
            "analyze_count",
            "autoanalyze_count",
        ];
        fields.extend(counts.iter().map(|c| counter(c)));
        let schema = Arc::new(Schema::new(fields));
        let mut columns: Vec<ArrayRef> = vec![
            oids(tables.iter().map(|t| t.id)),
            strings(tables.iter().map(|t| t.schema.as_str())),
            strings(tables.iter().map(|t| t.name.as_str())),
        ];
        for c in counters {
            columns.push(Arc::new(Int64Array::from_iter(tables.iter().map(
                |t| match c {
                    "n_live_tup" => Some(live_rows.get(&t.id).copied().unwrap_or(0) as i64),
                    "idx_scan" | "idx_tup_fetch" if t.indexes.is_empty() => None,
                    _ => Some(0),
                },
            ))));
        }
        for t in times {
            columns.push(datafusion::arrow::array::new_null_array(
                schema.field_with_name(t)?.data_type(),
                n,
            ));
        }
        for _ in counts {
            columns.push(Arc::new(Int64Array::from(vec![0; n])));
        }
        batch(schema, columns)
    }
}

/// `CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)`, as `pg_get_indexdef` prints it.
pub(crate) fn index_definition(table: &TableDef, index: &IndexDef) -> String {
    format!(
        "CREATE {}INDEX {} ON {}.{} USING btree ({})",
        if index.unique { "UNIQUE " } else { "" },
        quote_ident(&index.name),
        quote_ident(&table.schema),
        quote_ident(&table.name),
        key_column_list(table, index)
    )
}

/// `PRIMARY KEY (id)`, as `pg_get_constraintdef` prints it.
pub(crate) fn constraint_definition(table: &TableDef, index: &IndexDef) -> String {
    let kind = if index.primary {
        "PRIMARY KEY"
    } else {
        "UNIQUE"
    };
    format!("{kind} ({})", key_column_list(table, index))
}

fn key_column_list(table: &TableDef, index: &IndexDef) -> String {
    key_columns(table, index)
        .enumerate()
        .map(|(k, c)| match index.descending.get(k) {
            Some(true) => format!("{} DESC", quote_ident(&c.name)),
            _ => quote_ident(&c.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_columns<'t>(
    table: &'t TableDef,
    index: &'t IndexDef,
) -> impl Iterator<Item = &'t ColumnDef> + 't {
    index
        .columns
        .iter()
        .filter_map(|id| table.columns.iter().find(|c| c.id == *id))
}

/// Quotes an identifier only when PostgreSQL would (not lower-case letters, digits and `_`).
pub(crate) fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Column numbers (`attnum`) of an index's key columns.
fn attnums(index: &IndexDef) -> Vec<Option<i16>> {
    index
        .columns
        .iter()
        .map(|id| Some(*id as i16 + 1))
        .collect()
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        b'r' => "r",
        b'i' => "i",
        _ => "v",
    }
}

struct Attribute {
    relation: u32,
    name: String,
    number: i16,
    info: TypeInfo,
    not_null: bool,
    has_default: bool,
    dropped: bool,
}

impl Attribute {
    fn of_column(relation: u32, number: i16, c: &ColumnDef) -> Self {
        Attribute {
            relation,
            // PostgreSQL renames a dropped column so that its name is free again.
            name: if c.dropped {
                format!("........pg.dropped.{number}........")
            } else {
                c.name.clone()
            },
            number,
            info: if c.dropped {
                TypeInfo {
                    oid: 0,
                    ..type_info(&c.sql_type)
                }
            } else {
                type_info(&c.sql_type)
            },
            not_null: !c.nullable,
            has_default: c.default.is_some(),
            dropped: c.dropped,
        }
    }

    fn of_view_column(relation: u32, number: i16, f: &Field) -> Self {
        let sql_type = sql_type_of(f);
        Attribute {
            relation,
            name: f.name().clone(),
            number,
            info: type_info(&sql_type),
            not_null: false,
            has_default: false,
            dropped: false,
        }
    }
}

/// A `varchar(n)` or `char(n)` tag (`character varying(50)`) as its type.
fn character_type(tag: &str) -> Option<SqlType> {
    let length =
        |rest: &str| -> Option<u32> { rest.strip_prefix('(')?.strip_suffix(')')?.parse().ok() };
    if let Some(rest) = tag.strip_prefix("character varying") {
        return match rest {
            "" => Some(SqlType::Varchar(None)),
            _ => length(rest).map(|n| SqlType::Varchar(Some(n))),
        };
    }
    tag.strip_prefix("character")
        .and_then(length)
        .map(SqlType::Char)
}

/// The SQL type a view column shows for its Arrow field (the inverse of
/// `shoal_executor::arrow_type_of`, with json/jsonb/uuid and varchar(n)/char(n) told apart by
/// their field tag).
fn sql_type_of(field: &Field) -> SqlType {
    use datafusion::arrow::datatypes::TimeUnit;
    let tagged = field
        .metadata()
        .get(PG_TYPE_METADATA_KEY)
        .map(String::as_str);
    let of_type = |t: &DataType| match t {
        DataType::Boolean => SqlType::Bool,
        DataType::Int8 | DataType::Int16 => SqlType::Int2,
        DataType::Int32 => SqlType::Int4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::Int8,
        DataType::Float16 | DataType::Float32 => SqlType::Float4,
        DataType::Float64 => SqlType::Float8,
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => SqlType::Numeric {
            precision: *p,
            scale: *s,
        },
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytea,
        DataType::Date32 | DataType::Date64 => SqlType::Date,
        DataType::Time32(_) | DataType::Time64(_) => SqlType::Time,
        DataType::Timestamp(TimeUnit::Second, None)
        | DataType::Timestamp(TimeUnit::Millisecond, None)
        | DataType::Timestamp(TimeUnit::Microsecond, None)
        | DataType::Timestamp(TimeUnit::Nanosecond, None) => SqlType::Timestamp,
        DataType::Timestamp(_, Some(_)) => SqlType::TimestampTz,
        DataType::Interval(_) | DataType::Duration(_) => SqlType::Interval,
        _ => SqlType::Text,
    };
    let is_text = matches!(
        field.data_type(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    );
    if let Some(character) = tagged.filter(|_| is_text).and_then(character_type) {
        return character;
    }
    match (tagged, field.data_type()) {
        (Some("json"), _) => SqlType::Json,
        (Some("jsonb"), _) => SqlType::Jsonb,
        (Some("uuid"), _) => SqlType::Uuid,
        (_, DataType::List(inner) | DataType::LargeList(inner)) => {
            SqlType::Array(Box::new(of_type(inner.data_type())))
        }
        (_, other) => of_type(other),
    }
}

/// What pg_attribute repeats from pg_type for a column, and its `atttypmod`.
struct TypeInfo {
    oid: u32,
    len: i16,
    by_value: bool,
    align: &'static str,
    storage: &'static str,
    typmod: i32,
    dims: i32,
    collation: i32,
}

fn type_info(t: &SqlType) -> TypeInfo {
    let fixed = |len: i16, align: &'static str| (len, len <= 8, align, "p");
    let varlena = (-1, false, "i", "x");
    let (len, by_value, align, storage) = match t {
        SqlType::Bool => fixed(1, "c"),
        SqlType::Int2 => fixed(2, "s"),
        SqlType::Int4 | SqlType::Float4 | SqlType::Date => fixed(4, "i"),
        SqlType::Int8
        | SqlType::Float8
        | SqlType::Time
        | SqlType::Timestamp
        | SqlType::TimestampTz => fixed(8, "d"),
        SqlType::Interval => (16, false, "d", "p"),
        SqlType::Uuid => (16, false, "c", "p"),
        SqlType::Numeric { .. } => (-1, false, "i", "m"),
        SqlType::Array(inner) => {
            let element_align = if type_info(inner).align == "d" {
                "d"
            } else {
                "i"
            };
            (-1, false, element_align, "x")
        }
        _ => varlena,
    };
    let typmod = match t {
        SqlType::Varchar(Some(n)) | SqlType::Char(n) => *n as i32 + 4,
        SqlType::Numeric { precision, scale } => {
            ((*precision as i32) << 16 | (*scale as i32 & 0xffff)) + 4
        }
        _ => -1,
    };
    let textual = |t: &SqlType| matches!(t, SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_));
    let collation = match t {
        SqlType::Array(inner) if textual(inner) => DEFAULT_COLLATION_OID,
        t if textual(t) => DEFAULT_COLLATION_OID,
        _ => 0,
    };
    TypeInfo {
        oid: t.pg_oid(),
        len,
        by_value,
        align,
        storage,
        typmod,
        dims: matches!(t, SqlType::Array(_)) as i32,
        collation,
    }
}

/// The default btree operator class of a key column's type (pg_opclass OIDs of PostgreSQL 15).
fn operator_class(t: &SqlType) -> i32 {
    match t {
        SqlType::Int2 => 1979,
        SqlType::Int4 => 1978,
        SqlType::Int8 => 3124,
        SqlType::Float4 => 1970,
        SqlType::Float8 => 3123,
        SqlType::Numeric { .. } => 3125,
        SqlType::Text | SqlType::Varchar(_) => 3126,
        SqlType::Char(_) => 426,
        SqlType::Bytea => 421,
        SqlType::Date => 3122,
        SqlType::Time => 1996,
        SqlType::Timestamp => 3128,
        SqlType::TimestampTz => 3127,
        SqlType::Uuid => 2968,
        _ => 0,
    }
}

/// `user`, the rows of pg_class or pg_attribute for the users' relations, after PostgreSQL
/// 15's rows for its own system relations.
fn with_system_rows(relation: &str, user: RecordBatch) -> DfResult<RecordBatch> {
    let schema = pg15_catalog::nullable(user.schema().as_ref());
    let system = pg15_catalog::system_rows(relation, &schema)?;
    let user = pg15_catalog::conform(&user, &schema)?;
    Ok(concat_batches(&schema, [&system, &user])?)
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn oids(values: impl Iterator<Item = u32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(values.map(|v| v as i32)))
}

fn strings<'s>(values: impl Iterator<Item = &'s str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

pub(crate) fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// An `int2vector` or `oidvector` column: a list that PostgreSQL prints space-separated.
fn vector_field(name: &str, list: DataType, pg_type: &str) -> Field {
    let meta =
        std::collections::HashMap::from([(PG_TYPE_METADATA_KEY.to_string(), pg_type.to_string())]);
    Field::new(name, list, false).with_metadata(meta)
}

fn int16_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int16, true)))
}

fn int32_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)))
}

fn null_text_lists(n: usize) -> ArrayRef {
    datafusion::arrow::array::new_null_array(&text_list(), n)
}
