//! json and jsonb in SQL: the functions that read documents ([`accessors`], also behind the
//! operators `crate::pg_operators` plans) and the ones that build them ([`build`]).
//! The values themselves are text tagged with their type; their grammar and semantics live in
//! `shoal_executor::json`, which the writer shares.

mod accessors;
mod build;

pub(crate) use accessors::{function_name, json_type_of, udf as json_udf, Access};

use datafusion::logical_expr::ScalarUDF;

/// Every json and jsonb function.
pub(crate) fn udfs() -> Vec<ScalarUDF> {
    let mut udfs = accessors::udfs();
    udfs.extend(build::udfs());
    udfs
}
