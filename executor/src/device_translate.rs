//! DataFusion's physical expressions and partial aggregates, translated into the gpu crate's
//! specs. What has no device form is refused with the reason EXPLAIN shows ("not on the device:
//! ..."), and the operator stays on the CPU.
//!
//! A translation is accepted only when the device expression's type equals the one DataFusion
//! computes for the same tree, so the device's output schema is the CPU plan's.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, IsNotNullExpr, IsNullExpr, Literal as LiteralExpr, NotExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::ExecutionPlan;
use shoal_gpu::{
    AggregateCall, AggregateFunction, ArithOp, CompareOp, GpuError, GpuExpr, GpuType, Literal,
    PartialAggregate,
};

/// Translates `expr` over `schema`; the error is the reason it stays on the CPU.
pub fn translate_expr(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<GpuExpr, String> {
    let translated = translate(expr, schema)?;
    let device_type = translated.data_type().map_err(|e| e.to_string())?;
    let cpu_type = expr.data_type(schema).map_err(|e| e.to_string())?;
    if device_type.to_arrow() != cpu_type {
        return Err(format!(
            "{expr} is {cpu_type} on the CPU and would be {} on the device",
            device_type.to_arrow()
        ));
    }
    Ok(translated)
}

fn translate(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<GpuExpr, String> {
    let any = expr;
    if let Some(column) = any.downcast_ref::<Column>() {
        let field = schema
            .fields()
            .get(column.index())
            .ok_or_else(|| format!("column {} is not in the input", column.name()))?;
        let data_type = GpuType::from_arrow(field.data_type()).map_err(|e| e.to_string())?;
        return Ok(GpuExpr::column(column.index(), data_type));
    }
    if let Some(literal) = any.downcast_ref::<LiteralExpr>() {
        return literal_of(literal.value()).map(GpuExpr::Literal);
    }
    if let Some(binary) = any.downcast_ref::<BinaryExpr>() {
        let left = translate(binary.left(), schema)?;
        let right = translate(binary.right(), schema)?;
        let compare = |op| Ok(GpuExpr::compare(op, left.clone(), right.clone()));
        let arith = |op| {
            // BinaryExpr keeps whether it fails on overflow private; equality tells.
            let checked_form =
                BinaryExpr::new(binary.left().clone(), *binary.op(), binary.right().clone())
                    .with_fail_on_overflow(true);
            let checked = *binary == checked_form;
            Ok(GpuExpr::arith(op, left.clone(), right.clone(), checked))
        };
        return match binary.op() {
            Operator::Eq => compare(CompareOp::Eq),
            Operator::NotEq => compare(CompareOp::NotEq),
            Operator::Lt => compare(CompareOp::Lt),
            Operator::LtEq => compare(CompareOp::LtEq),
            Operator::Gt => compare(CompareOp::Gt),
            Operator::GtEq => compare(CompareOp::GtEq),
            Operator::And => Ok(GpuExpr::And(Box::new(left), Box::new(right))),
            Operator::Or => Ok(GpuExpr::Or(Box::new(left), Box::new(right))),
            Operator::Plus => arith(ArithOp::Add),
            Operator::Minus => arith(ArithOp::Sub),
            Operator::Multiply => arith(ArithOp::Mul),
            Operator::Divide => arith(ArithOp::Div),
            Operator::Modulo => arith(ArithOp::Mod),
            other => Err(format!("the operator {other}")),
        };
    }
    if let Some(not) = any.downcast_ref::<NotExpr>() {
        return Ok(GpuExpr::Not(Box::new(translate(not.arg(), schema)?)));
    }
    if let Some(is_null) = any.downcast_ref::<IsNullExpr>() {
        return Ok(GpuExpr::IsNull(Box::new(translate(is_null.arg(), schema)?)));
    }
    if let Some(is_not_null) = any.downcast_ref::<IsNotNullExpr>() {
        return Ok(GpuExpr::IsNotNull(Box::new(translate(
            is_not_null.arg(),
            schema,
        )?)));
    }
    if let Some(cast) = any.downcast_ref::<CastExpr>() {
        let to = GpuType::from_arrow(cast.cast_type()).map_err(|e| e.to_string())?;
        return Ok(GpuExpr::Cast {
            input: Box::new(translate(cast.expr(), schema)?),
            to,
        });
    }
    Err(format!("the expression {expr}"))
}

fn literal_of(value: &ScalarValue) -> Result<Literal, String> {
    let null_of = |value: &ScalarValue| -> Result<Literal, String> {
        GpuType::from_arrow(&value.data_type())
            .map(Literal::Null)
            .map_err(|e| e.to_string())
    };
    Ok(match value {
        ScalarValue::Boolean(Some(b)) => Literal::Boolean(*b),
        ScalarValue::Int32(Some(v)) => Literal::Int32(*v),
        ScalarValue::Int64(Some(v)) => Literal::Int64(*v),
        ScalarValue::Float64(Some(v)) => Literal::Float64(*v),
        ScalarValue::Date32(Some(v)) => Literal::Date32(*v),
        ScalarValue::Decimal128(Some(v), precision, scale) => Literal::Decimal128 {
            value: *v,
            precision: *precision,
            scale: *scale,
        },
        ScalarValue::Boolean(None)
        | ScalarValue::Int32(None)
        | ScalarValue::Int64(None)
        | ScalarValue::Float64(None)
        | ScalarValue::Date32(None)
        | ScalarValue::Decimal128(None, _, _) => null_of(value)?,
        other => return Err(format!("a literal of type {}", other.data_type())),
    })
}

/// The device form of a partial `AggregateExec`: GROUP BY plain integer columns, and COUNT, SUM,
/// MIN, MAX, AVG over plain columns, without DISTINCT, FILTER or ORDER BY. Its state columns must
/// be exactly the ones DataFusion's final aggregate expects.
pub fn translate_partial_aggregate(aggregate: &AggregateExec) -> Result<PartialAggregate, String> {
    let input_schema = aggregate.input().schema();
    let group_by = aggregate.group_expr();
    if group_by.has_grouping_set() {
        return Err("grouping sets".into());
    }
    let mut keys = Vec::new();
    for (expr, name) in group_by.expr() {
        let column = expr
            .downcast_ref::<Column>()
            .ok_or_else(|| format!("GROUP BY the expression {expr}"))?;
        let data_type = GpuType::from_arrow(input_schema.field(column.index()).data_type())
            .map_err(|e| e.to_string())?;
        keys.push((column.index(), data_type, name.clone()));
    }
    if aggregate.filter_expr().iter().any(Option::is_some) {
        return Err("aggregates with FILTER".into());
    }
    let mut aggregates = Vec::new();
    for call in aggregate.aggr_expr() {
        if call.is_distinct() || !call.order_bys().is_empty() {
            return Err(format!("{} with DISTINCT or ORDER BY", call.name()));
        }
        let function = match call.fun().name() {
            "count" => AggregateFunction::Count,
            "sum" => AggregateFunction::Sum,
            "min" => AggregateFunction::Min,
            "max" => AggregateFunction::Max,
            "avg" => AggregateFunction::Avg,
            other => return Err(format!("the aggregate {other}")),
        };
        let input = match call.expressions().as_slice() {
            // COUNT(*) reaches the physical plan as COUNT(1).
            [only] if function == AggregateFunction::Count && is_non_null_literal(only) => None,
            [only] => {
                // SUM over an INTEGER column reaches the plan as SUM(CAST(c AS BIGINT)); the
                // device widens to 64 bits itself.
                let widened = only
                    .downcast_ref::<CastExpr>()
                    .filter(|c| {
                        function == AggregateFunction::Sum && c.cast_type() == &DataType::Int64
                    })
                    .map(|c| c.expr());
                let argument = widened.unwrap_or(only);
                let column = argument
                    .downcast_ref::<Column>()
                    .ok_or_else(|| format!("{} over the expression {only}", call.name()))?;
                let data_type = GpuType::from_arrow(input_schema.field(column.index()).data_type())
                    .map_err(|e| e.to_string())?;
                Some((column.index(), data_type))
            }
            _ => return Err(format!("{} with several arguments", call.name())),
        };
        aggregates.push(AggregateCall {
            function,
            input,
            name: call.name().to_string(),
        });
    }
    let spec = PartialAggregate {
        group_by: keys,
        aggregates,
    };
    let device_schema = spec.output_schema().map_err(|e: GpuError| e.to_string())?;
    let cpu_schema = ExecutionPlan::schema(aggregate);
    let same = device_schema.fields().len() == cpu_schema.fields().len()
        && device_schema
            .fields()
            .iter()
            .zip(cpu_schema.fields())
            .all(|(d, c)| d.data_type() == c.data_type());
    if !same {
        return Err(format!(
            "the partial state is {:?} on the CPU",
            cpu_schema
                .fields()
                .iter()
                .map(|f| f.data_type().to_string())
                .collect::<Vec<_>>()
        ));
    }
    Ok(spec)
}

fn is_non_null_literal(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.downcast_ref::<LiteralExpr>()
        .is_some_and(|l| !l.value().is_null())
}
