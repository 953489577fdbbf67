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
use shoal_coord::{Catalog, UserDef};

use crate::pg_relations::{text_list, OWNER_OID};

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
    bootstrap(catalog)
        .map(|u| u.name.clone())
        .unwrap_or_default()
}

/// The bootstrap superuser: the first superuser the node created.
pub(crate) fn bootstrap(catalog: &Catalog) -> Option<&UserDef> {
    catalog
        .users
        .values()
        .filter(|u| u.superuser)
        .min_by_key(|u| u.oid)
}

fn roles(catalog: &Catalog) -> Vec<Role> {
    let bootstrap = bootstrap(catalog).map(|u| u.oid);
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

const MASKED_PASSWORD: &str = "********";

/// One role column, by the name pg_roles, pg_authid or pg_user gives it.
/// `password` is what the password column shows: the views mask it, pg_authid (which would
/// hold a hash) shows none.
fn role_column(roles: &[Role], name: &str, password: Option<&str>) -> (Field, ArrayRef) {
    let n = roles.len();
    let flag = |f: fn(&Role) -> bool| -> (DataType, bool, ArrayRef) {
        (DataType::Boolean, false, bools(roles, f))
    };
    let (data_type, nullable, values): (DataType, bool, ArrayRef) = match name {
        "oid" | "usesysid" => {
            return (oid_field(name, kind::OID, false), role_oids(roles));
        }
        "rolname" | "usename" => (DataType::Utf8, false, names(roles)),
        "rolsuper" | "usesuper" => flag(|r| r.superuser),
        "rolinherit" => flag(|_| true),
        "rolcanlogin" => flag(|r| r.can_login),
        // The bootstrap superuser's attributes.
        "rolcreaterole" | "rolcreatedb" | "rolreplication" | "rolbypassrls" | "usecreatedb"
        | "userepl" | "usebypassrls" => flag(|r| r.bootstrap),
        "rolconnlimit" => (
            DataType::Int32,
            false,
            Arc::new(Int32Array::from(vec![-1; n])),
        ),
        "rolpassword" | "passwd" => (
            DataType::Utf8,
            true,
            Arc::new(StringArray::from(vec![password; n])),
        ),
        "rolvaliduntil" | "valuntil" => (
            timestamptz(),
            true,
            Arc::new(TimestampMicrosecondArray::from(vec![None; n]).with_timezone("+00:00")),
        ),
        // rolconfig, useconfig: no role has settings of its own.
        _ => (text_list(), true, nulls(&text_list(), n)),
    };
    (Field::new(name, data_type, nullable), values)
}

fn role_relation(
    roles: &[Role],
    columns: &[&str],
    password: Option<&str>,
) -> DfResult<RecordBatch> {
    let (fields, values): (Vec<Field>, Vec<ArrayRef>) = columns
        .iter()
        .map(|c| role_column(roles, c, password))
        .unzip();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), values)?)
}

/// `pg_roles`, in PostgreSQL 15's column order.
pub(crate) fn pg_roles(catalog: &Catalog) -> DfResult<RecordBatch> {
    role_relation(
        &roles(catalog),
        &[
            "rolname",
            "rolsuper",
            "rolinherit",
            "rolcreaterole",
            "rolcreatedb",
            "rolcanlogin",
            "rolreplication",
            "rolconnlimit",
            "rolpassword",
            "rolvaliduntil",
            "rolbypassrls",
            "rolconfig",
            "oid",
        ],
        Some(MASKED_PASSWORD),
    )
}

/// `pg_authid`: the roles with their attributes.
pub(crate) fn pg_authid(catalog: &Catalog) -> DfResult<RecordBatch> {
    role_relation(
        &roles(catalog),
        &[
            "oid",
            "rolname",
            "rolsuper",
            "rolinherit",
            "rolcreaterole",
            "rolcreatedb",
            "rolcanlogin",
            "rolreplication",
            "rolbypassrls",
            "rolconnlimit",
            "rolpassword",
            "rolvaliduntil",
        ],
        None,
    )
}

/// `pg_user`: the roles that can log in.
pub(crate) fn pg_user(catalog: &Catalog) -> DfResult<RecordBatch> {
    let roles: Vec<Role> = roles(catalog).into_iter().filter(|r| r.can_login).collect();
    role_relation(
        &roles,
        &[
            "usename",
            "usesysid",
            "usecreatedb",
            "usesuper",
            "userepl",
            "usebypassrls",
            "passwd",
            "valuntil",
            "useconfig",
        ],
        Some(MASKED_PASSWORD),
    )
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
