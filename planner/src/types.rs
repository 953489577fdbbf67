//! SQL type names DataFusion does not know: `json`, `jsonb` and `uuid` are held as text
//! (tagged with the PostgreSQL type so clients see the right OID), and everything
//! `datafusion-pg-catalog`'s planner knows (`regclass`, `oid`, `pg_catalog.int4`, ...).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::sql::sqlparser::ast::{DataType as SqlDataType, TimezoneInfo};
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use shoal_executor::PG_TYPE_METADATA_KEY;

#[derive(Debug)]
pub(crate) struct ShoalTypePlanner;

fn text_field(pg_type: &str) -> FieldRef {
    let meta = HashMap::from([(PG_TYPE_METADATA_KEY.to_string(), pg_type.to_string())]);
    Arc::new(Field::new("", DataType::Utf8, true).with_metadata(meta))
}

impl TypePlanner for ShoalTypePlanner {
    fn plan_type_field(&self, sql_type: &SqlDataType) -> DfResult<Option<FieldRef>> {
        match sql_type {
            SqlDataType::JSON => Ok(Some(text_field("json"))),
            SqlDataType::JSONB => Ok(Some(text_field("jsonb"))),
            SqlDataType::Uuid => Ok(Some(text_field("uuid"))),
            // As `timestamptz` columns are held: microseconds, UTC. (DataFusion would drop the
            // zone, as its session has none, and clients would see `timestamp`.)
            SqlDataType::Timestamp(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => {
                Ok(Some(Arc::new(Field::new(
                    "",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                    true,
                ))))
            }
            other => PgOidTypePlanner.plan_type_field(other),
        }
    }
}
