//! PostgreSQL functions that DataFusion lacks: `version()`, `current_setting`, `set_config`,
//! `pg_backend_pid`, `pg_cancel_backend`, `current_user`, `current_schemas`. The per-session
//! ones read the session through [`SessionInfo`], which the server implements.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Int64Array, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};

/// What SQL functions may ask of the session they run in.
pub trait SessionInfo: Send + Sync {
    fn setting(&self, name: &str) -> Option<String>;
    fn set_setting(&self, name: &str, value: &str) -> Result<(), String>;
    fn backend_pid(&self) -> i32;
    fn user(&self) -> String;
    /// Cancels the running query of another session; false when there is no such session.
    fn cancel_backend(&self, pid: i32) -> bool;
    /// Every setting with its value, as `SHOW ALL` lists them.
    fn all_settings(&self) -> Vec<(String, String)>;
}

/// `version()` as PostgreSQL 15 clients expect to parse it.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 15.8 (Shoal {}) on x86_64-pc-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION")
    )
}

pub(crate) fn register_static_functions(ctx: &SessionContext) {
    let version = version_string();
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    ));
}

fn strings(arg: &ColumnarValue, rows: usize) -> Result<Vec<Option<String>>, DataFusionError> {
    let array = arg.to_array(rows)?;
    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    let s = array.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
        .collect())
}

fn rows_of(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            _ => None,
        })
        .unwrap_or(1)
}

/// The result of a function over `args`: a scalar when every argument was one.
pub(crate) fn scalar_or_array(args: &[ColumnarValue], array: Arc<dyn Array>) -> ColumnarValue {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        match ScalarValue::try_from_array(&array, 0) {
            Ok(v) => ColumnarValue::Scalar(v),
            Err(_) => ColumnarValue::Array(array),
        }
    } else {
        ColumnarValue::Array(array)
    }
}

/// Registers the functions bound to one session on that session's context.
pub fn register_session_functions(ctx: &SessionContext, session: Arc<dyn SessionInfo>) {
    // `pg_settings` finds the session here when it is scanned.
    ctx.state_ref().write().config_mut().set_extension(Arc::new(
        crate::pg_settings::SessionExtension(session.clone()),
    ));
    let s = session.clone();
    let current_setting = Arc::new(move |args: &[ColumnarValue]| {
        let rows = rows_of(args);
        let names = strings(&args[0], rows)?;
        let missing_ok = match args.get(1) {
            Some(a) => a.to_array(rows)?.as_boolean().value(0),
            None => false,
        };
        let mut out = Vec::with_capacity(rows);
        for name in names {
            let name = name.unwrap_or_default();
            match s.setting(&name) {
                Some(v) => out.push(Some(v)),
                None if missing_ok => out.push(None),
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )))
                }
            }
        }
        Ok(scalar_or_array(args, Arc::new(StringArray::from(out))))
    });
    ctx.register_udf(create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        current_setting.clone(),
    ));
    let s = session.clone();
    ctx.register_udf(create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let names = strings(&args[0], rows)?;
            let values = strings(&args[1], rows)?;
            let mut out = Vec::with_capacity(rows);
            for (n, v) in names.into_iter().zip(values) {
                let (n, v) = (n.unwrap_or_default(), v.unwrap_or_default());
                s.set_setting(&n, &v).map_err(DataFusionError::Execution)?;
                out.push(Some(v));
            }
            Ok(scalar_or_array(args, Arc::new(StringArray::from(out))))
        }),
    ));
    let s = session.clone();
    ctx.register_udf(create_udf(
        "pg_backend_pid",
        vec![],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(
                s.backend_pid(),
            ))))
        }),
    ));
    let s = session.clone();
    ctx.register_udf(create_udf(
        "pg_cancel_backend",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let pids = args[0].to_array(rows)?;
            let pids = datafusion::arrow::compute::cast(&pids, &DataType::Int64)?;
            let pids: &Int64Array = pids.as_primitive();
            let out: BooleanArray = pids
                .iter()
                .map(|p| p.map(|p| i32::try_from(p).is_ok_and(|p| s.cancel_backend(p))))
                .collect();
            Ok(scalar_or_array(args, Arc::new(out)))
        }),
    ));
    // current_schemas(implicit): the search path's schemas, with pg_catalog first when the
    // implicit schemas are asked for. `"$user"` names a schema only where one is named after
    // the user, and Shoal's users have none.
    let s = session.clone();
    ctx.register_udf(create_udf(
        "current_schemas",
        vec![DataType::Boolean],
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let implicit = args[0].to_array(rows)?;
            let implicit = implicit.as_boolean();
            let path = s.setting("search_path").unwrap_or_default();
            let explicit: Vec<String> = path
                .split(',')
                .map(|p| p.trim().trim_matches('"').to_string())
                .filter(|p| !p.is_empty() && p != "$user")
                .collect();
            let mut lists = ListBuilder::new(StringBuilder::new());
            for row in 0..implicit.len() {
                if implicit.is_null(row) {
                    lists.append_null();
                    continue;
                }
                if implicit.value(row) && !explicit.iter().any(|p| p == "pg_catalog") {
                    lists.values().append_value("pg_catalog");
                }
                for schema in &explicit {
                    lists.values().append_value(schema);
                }
                lists.append(true);
            }
            Ok(scalar_or_array(args, Arc::new(lists.finish())))
        }),
    ));
    for name in ["current_user", "session_user", "user", "current_role"] {
        let s = session.clone();
        ctx.register_udf(create_udf(
            name,
            vec![],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.user()))))),
        ));
    }
}
