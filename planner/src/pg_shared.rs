//! Live `pg_roles`, `pg_user`, `pg_authid` and `pg_database`: the catalogs PostgreSQL shares
//! between databases, built from Shoal's users and its one database.
//!
//! The first superuser (the one the node created at its first start) plays PostgreSQL's
//! bootstrap superuser: OID 10, the owner of every object, with every role attribute. The
//! `public` schema is owned by `pg_database_owner` as in PostgreSQL 15, so that role is
//! listed too. Passwords are never shown (`********`, as PostgreSQL's `pg_roles` does).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::error::Result as DfResult;
use datafusion_pg_catalog::pg_catalog::oid_field::{kind, oid_field};
use shoal_coord::Catalog;

use crate::pg_relations::OWNER_OID;

/// PostgreSQL's predefined role that owns `public`.
pub(crate) const DATABASE_OWNER_ROLE: (u32, &str) = (6171, "pg_database_owner");

/// The databases a client can name: Shoal's one database answers to its own name and to
/// `postgres`, the name tools connect to by default.
const DATABASES: &[(u32, &str)] = &[(5, "postgres"), (16384, crate::DATABASE_NAME)];

/// The collation Shoal sorts text in: by code point, which is how `C.UTF-8` sorts.
const COLLATION: &str = "C.UTF-8";

/// One role as the shared catalogs show it.
struct Role {
    oid: u32,
    name: String,
    superuser: bool,
    /// The bootstrap superuser holds every attribute.
    bootstrap: bool,
    can_login: bool,
}

/// The name of the bootstrap superuser, the owner of every object.
pub(crate) fn bootstrap_name(catalog: &Catalog) -> String {
    catalog
        .users
        .values()
        .filter(|u| u.superuser)
        .min_by_key(|u| u.oid)
        .map(|u| u.name.clone())
        .unwrap_or_default()
}

fn roles(catalog: &Catalog) -> Vec<Role> {
    let bootstrap = catalog
        .users
        .values()
        .filter(|u| u.superuser)
        .min_by_key(|u| u.oid)
        .map(|u| u.oid);
    let mut roles: Vec<Role> = catalog
        .users
        .values()
        .map(|u| {
            let is_bootstrap = Some(u.oid) == bootstrap;
            Role {
                oid: if is_bootstrap {
                    OWNER_OID as u32
                } else {
                    u.oid
                },
                name: u.name.clone(),
                superuser: u.superuser,
                bootstrap: is_bootstrap,
                can_login: true,
            }
        })
        .collect();
    roles.push(Role {
        oid: DATABASE_OWNER_ROLE.0,
        name: DATABASE_OWNER_ROLE.1.to_string(),
        superuser: false,
        bootstrap: false,
        can_login: false,
    });
    roles.sort_by_key(|r| r.oid);
    roles
}

fn bools(roles: &[Role], f: impl Fn(&Role) -> bool) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(roles.iter().map(|r| Some(f(r)))))
}

fn role_oids(roles: &[Role]) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(
        roles.iter().map(|r| r.oid as i32),
    ))
}

fn names(roles: &[Role]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        roles.iter().map(|r| r.name.as_str()),
    ))
}

fn nulls(data_type: &DataType, n: usize) -> ArrayRef {
    datafusion::arrow::array::new_null_array(data_type, n)
}

fn timestamptz() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// `pg_roles`, in PostgreSQL 15's column order.
pub(crate) fn pg_roles(catalog: &Catalog) -> DfResult<RecordBatch> {
    let roles = roles(catalog);
    let n = roles.len();
    let schema = Schema::new(vec![
        Field::new("rolname", DataType::Utf8, false),
        Field::new("rolsuper", DataType::Boolean, false),
        Field::new("rolinherit", DataType::Boolean, false),
        Field::new("rolcreaterole", DataType::Boolean, false),
        Field::new("rolcreatedb", DataType::Boolean, false),
        Field::new("rolcanlogin", DataType::Boolean, false),
        Field::new("rolreplication", DataType::Boolean, false),
        Field::new("rolconnlimit", DataType::Int32, false),
        Field::new("rolpassword", DataType::Utf8, true),
        Field::new("rolvaliduntil", timestamptz(), true),
        Field::new("rolbypassrls", DataType::Boolean, false),
        Field::new("rolconfig", text_list(), true),
        oid_field("oid", kind::OID, false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            names(&roles),
            bools(&roles, |r| r.superuser),
            bools(&roles, |_| true),
            bools(&roles, |r| r.bootstrap),
            bools(&roles, |r| r.bootstrap),
            bools(&roles, |r| r.can_login),
            bools(&roles, |r| r.bootstrap),
            Arc::new(Int32Array::from(vec![-1; n])),
            Arc::new(StringArray::from(vec![Some("********"); n])),
            Arc::new(TimestampMicrosecondArray::from(vec![None; n]).with_timezone("+00:00")),
            bools(&roles, |r| r.bootstrap),
            nulls(&text_list(), n),
            role_oids(&roles),
        ],
    )?)
}

/// `pg_authid`: the roles with their attributes; the password column holds no hash.
pub(crate) fn pg_authid(catalog: &Catalog) -> DfResult<RecordBatch> {
    let roles = roles(catalog);
    let n = roles.len();
    let schema = Schema::new(vec![
        oid_field("oid", kind::OID, false),
        Field::new("rolname", DataType::Utf8, false),
        Field::new("rolsuper", DataType::Boolean, false),
        Field::new("rolinherit", DataType::Boolean, false),
        Field::new("rolcreaterole", DataType::Boolean, false),
        Field::new("rolcreatedb", DataType::Boolean, false),
        Field::new("rolcanlogin", DataType::Boolean, false),
        Field::new("rolreplication", DataType::Boolean, false),
        Field::new("rolbypassrls", DataType::Boolean, false),
        Field::new("rolconnlimit", DataType::Int32, false),
        Field::new("rolpassword", DataType::Utf8, true),
        Field::new("rolvaliduntil", timestamptz(), true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            role_oids(&roles),
            names(&roles),
            bools(&roles, |r| r.superuser),
            bools(&roles, |_| true),
            bools(&roles, |r| r.bootstrap),
            bools(&roles, |r| r.bootstrap),
            bools(&roles, |r| r.can_login),
            bools(&roles, |r| r.bootstrap),
            bools(&roles, |r| r.bootstrap),
            Arc::new(Int32Array::from(vec![-1; n])),
            nulls(&DataType::Utf8, n),
            Arc::new(TimestampMicrosecondArray::from(vec![None; n]).with_timezone("+00:00")),
        ],
    )?)
}

/// `pg_user`: the roles that can log in.
pub(crate) fn pg_user(catalog: &Catalog) -> DfResult<RecordBatch> {
    let roles: Vec<Role> = roles(catalog).into_iter().filter(|r| r.can_login).collect();
    let n = roles.len();
    let schema = Schema::new(vec![
        Field::new("usename", DataType::Utf8, false),
        oid_field("usesysid", kind::OID, false),
        Field::new("usecreatedb", DataType::Boolean, false),
        Field::new("usesuper", DataType::Boolean, false),
        Field::new("userepl", DataType::Boolean, false),
        Field::new("usebypassrls", DataType::Boolean, false),
        Field::new("passwd", DataType::Utf8, true),
        Field::new("valuntil", timestamptz(), true),
        Field::new("useconfig", text_list(), true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            names(&roles),
            role_oids(&roles),
            bools(&roles, |r| r.bootstrap),
            bools(&roles, |r| r.superuser),
            bools(&roles, |r| r.bootstrap),
            bools(&roles, |r| r.bootstrap),
            Arc::new(StringArray::from(vec![Some("********"); n])),
            Arc::new(TimestampMicrosecondArray::from(vec![None; n]).with_timezone("+00:00")),
            nulls(&text_list(), n),
        ],
    )?)
}

/// `pg_database`, in PostgreSQL 15's column order.
pub(crate) fn pg_database() -> DfResult<RecordBatch> {
    let n = DATABASES.len();
    let schema = Schema::new(vec![
        oid_field("oid", kind::OID, false),
        Field::new("datname", DataType::Utf8, false),
        oid_field("datdba", kind::OID, false),
        Field::new("encoding", DataType::Int32, false),
        Field::new("datlocprovider", DataType::Utf8, false),
        Field::new("datistemplate", DataType::Boolean, false),
        Field::new("datallowconn", DataType::Boolean, false),
        Field::new("datconnlimit", DataType::Int32, false),
        Field::new("datfrozenxid", DataType::Int32, false),
        Field::new("datminmxid", DataType::Int32, false),
        oid_field("dattablespace", kind::OID, false),
        Field::new("datcollate", DataType::Utf8, false),
        Field::new("datctype", DataType::Utf8, false),
        Field::new("daticulocale", DataType::Utf8, true),
        Field::new("datcollversion", DataType::Utf8, true),
        Field::new("datacl", text_list(), true),
    ]);
    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int32Array::from_iter_values(
                DATABASES.iter().map(|(oid, _)| *oid as i32),
            )),
            Arc::new(StringArray::from_iter_values(
                DATABASES.iter().map(|(_, name)| *name),
            )),
            Arc::new(Int32Array::from(vec![OWNER_OID; n])),
            // 6 is UTF8 in pg_encoding_to_char.
            Arc::new(Int32Array::from(vec![6; n])),
            text("c"),
            Arc::new(BooleanArray::from(vec![false; n])),
            Arc::new(BooleanArray::from(vec![true; n])),
            Arc::new(Int32Array::from(vec![-1; n])),
            Arc::new(Int32Array::from(vec![1; n])),
            Arc::new(Int32Array::from(vec![1; n])),
            // pg_default.
            Arc::new(Int32Array::from(vec![1663; n])),
            text(COLLATION),
            text(COLLATION),
            nulls(&DataType::Utf8, n),
            nulls(&DataType::Utf8, n),
            nulls(&text_list(), n),
        ],
    )?)
}
