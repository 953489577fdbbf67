//! What a device pipeline computes, independent of where it runs: a fused filter + projection, and
//! a partial hash aggregation whose output is the state DataFusion's final aggregate merges
//! (`count` Int64; `sum` Int64, Float64 or a wider decimal; `min`/`max` the input type; `avg` a
//! UInt64 count and a sum). Both backends (the CPU reference and CUDA) take these specs.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::GpuError;
use crate::expr::{GpuExpr, GpuType};

/// One output column of a projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub expr: GpuExpr,
    pub name: String,
}

/// Keep the rows where `predicate` is true (null counts as false), then compute `projections`
/// over the kept rows only, so a projection's errors (a division by zero) come only from kept
/// rows, as with DataFusion's FilterExec under a ProjectionExec.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterProject {
    pub predicate: Option<GpuExpr>,
    pub projections: Vec<Projection>,
    /// Also output each kept row's position in the input batch, as a last UInt32 column named
    /// `ROW_NUMBER_COLUMN`: the caller takes the columns the device cannot read (text, lists)
    /// by these positions.
    pub row_numbers: bool,
}

/// The name of the kept rows' input positions when `FilterProject::row_numbers` asks for them.
pub const ROW_NUMBER_COLUMN: &str = "__shoal_row";

impl FilterProject {
    /// Checks the expressions' types and returns the output schema.
    pub fn output_schema(&self) -> Result<SchemaRef, GpuError> {
        if let Some(predicate) = &self.predicate {
            if predicate.data_type()? != GpuType::Boolean {
                return Err(GpuError::Unsupported(
                    "a filter predicate that is not boolean".to_string(),
                ));
            }
        }
        let mut fields = self
            .projections
            .iter()
            .map(|p| Ok(Field::new(&p.name, p.expr.data_type()?.to_arrow(), true)))
            .collect::<Result<Vec<_>, GpuError>>()?;
        if self.row_numbers {
            fields.push(Field::new(ROW_NUMBER_COLUMN, DataType::UInt32, false));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The input columns read by the predicate or a projection.
    pub fn input_columns(&self) -> Vec<usize> {
        let mut columns: Vec<usize> = self
            .predicate
            .iter()
            .chain(self.projections.iter().map(|p| &p.expr))
            .flat_map(GpuExpr::columns)
            .collect();
        columns.sort_unstable();
        columns.dedup();
        columns
    }

    /// The text the kernel cache keys on.
    pub fn cache_key(&self) -> String {
        let mut key = match &self.predicate {
            Some(p) => format!("filter {p}; project"),
            None => "project".to_string(),
        };
        for p in &self.projections {
            key.push(' ');
            key.push_str(&p.expr.to_string());
        }
        if self.row_numbers {
            key.push_str(" +rows");
        }
        key
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateFunction {
    /// COUNT(*) when `input` is None, else COUNT(column): the rows where it is not null.
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// One aggregate over a column of the input batch.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateCall {
    pub function: AggregateFunction,
    pub input: Option<(usize, GpuType)>,
    /// DataFusion's name for the aggregate; the state columns are `<name>[count]`, `<name>[sum]`...
    pub name: String,
}

impl AggregateCall {
    /// The partial state columns DataFusion's final aggregate expects for this call.
    pub fn state_fields(&self) -> Result<Vec<Field>, GpuError> {
        let state = |suffix: &str, data_type: DataType| {
            Field::new(format!("{}[{suffix}]", self.name), data_type, true)
        };
        let input = self.input.map(|(_, t)| t);
        Ok(match (self.function, input) {
            (AggregateFunction::Count, _) => vec![state("count", DataType::Int64)],
            (AggregateFunction::Sum, Some(t)) => vec![state("sum", sum_type(t)?)],
            (AggregateFunction::Avg, Some(t @ (GpuType::Float64 | GpuType::Decimal128 { .. }))) => {
                vec![
                    state("count", DataType::UInt64),
                    state("sum", avg_sum_type(t)?),
                ]
            }
            // Not Float64: DataFusion's grouped MIN/MAX of floats start from f64::MAX/MIN, so
            // MIN(inf) is f64::MAX there; the device would answer inf. Kept on the CPU.
            (
                AggregateFunction::Min | AggregateFunction::Max,
                Some(t @ (GpuType::Int32 | GpuType::Int64 | GpuType::Date32)),
            ) => {
                let suffix = if self.function == AggregateFunction::Min {
                    "min"
                } else {
                    "max"
                };
                vec![state(suffix, t.to_arrow())]
            }
            (function, input) => {
                return Err(GpuError::Unsupported(format!(
                    "{function:?} over {input:?}"
                )))
            }
        })
    }
}

/// SUM's result type in DataFusion: Int64 for integers, Float64, and ten more digits of precision
/// for decimals.
pub fn sum_type(input: GpuType) -> Result<DataType, GpuError> {
    Ok(match input {
        GpuType::Int32 | GpuType::Int64 => DataType::Int64,
        GpuType::Float64 => DataType::Float64,
        GpuType::Decimal128 { precision, scale } => {
            DataType::Decimal128((precision + 10).min(38), scale)
        }
        other => return Err(GpuError::Unsupported(format!("SUM over {other:?}"))),
    })
}

/// AVG's running sum in DataFusion: Float64, or a Decimal128(38) when thirteen more digits fit in
/// it (beyond that DataFusion sums in Decimal256, which stays on the CPU).
fn avg_sum_type(input: GpuType) -> Result<DataType, GpuError> {
    match input {
        GpuType::Float64 => Ok(DataType::Float64),
        GpuType::Decimal128 { precision, scale } if precision + 13 <= 38 => {
            Ok(DataType::Decimal128(38, scale))
        }
        other => Err(GpuError::Unsupported(format!("AVG over {other:?}"))),
    }
}

/// GROUP BY `group_by` (columns of fixed-width integer types: the device hashes them as i64),
/// computing each aggregate's partial state per group. Groups come out in no particular order.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialAggregate {
    pub group_by: Vec<(usize, GpuType, String)>,
    pub aggregates: Vec<AggregateCall>,
}

impl PartialAggregate {
    pub fn output_schema(&self) -> Result<SchemaRef, GpuError> {
        let mut fields = Vec::new();
        for (_, data_type, name) in &self.group_by {
            if !data_type.is_integral_key() {
                return Err(GpuError::Unsupported(format!(
                    "GROUP BY a {data_type:?} column"
                )));
            }
            fields.push(Field::new(name, data_type.to_arrow(), true));
        }
        for call in &self.aggregates {
            fields.extend(call.state_fields()?);
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    pub fn cache_key(&self) -> String {
        format!("{:?}", self)
    }
}
