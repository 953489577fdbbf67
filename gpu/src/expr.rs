//! The expressions a device pipeline evaluates: a small typed tree over the columns of one input
//! batch. The executor translates DataFusion's physical expressions into it (and refuses, with a
//! reason, what it cannot express); the CPU reference and the CUDA code generator both read it, so
//! the two can only differ in how they compute, never in what.
//!
//! Every operation keeps the semantics of the arrow kernels DataFusion runs on the CPU: SQL nulls
//! (Kleene AND/OR), floats compared in IEEE total order (NaN equal to itself and above everything,
//! -0.0 below 0.0), integer division and remainder by zero an error, and integer overflow an error
//! or a wrap-around exactly as the CPU expression asked (`checked`).

use std::fmt;

use arrow::datatypes::DataType;

use crate::error::GpuError;

/// The column types a device kernel reads and writes: fixed width, so one thread handles one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuType {
    Boolean,
    Int32,
    Int64,
    Float64,
    /// Days since 1970-01-01, as Arrow's Date32.
    Date32,
    Decimal128 {
        precision: u8,
        scale: i8,
    },
}

impl GpuType {
    pub fn from_arrow(data_type: &DataType) -> Result<Self, GpuError> {
        Ok(match data_type {
            DataType::Boolean => GpuType::Boolean,
            DataType::Int32 => GpuType::Int32,
            DataType::Int64 => GpuType::Int64,
            DataType::Float64 => GpuType::Float64,
            DataType::Date32 => GpuType::Date32,
            DataType::Decimal128(precision, scale) => GpuType::Decimal128 {
                precision: *precision,
                scale: *scale,
            },
            other => {
                return Err(GpuError::Unsupported(format!(
                    "columns of type {other} do not run on the device"
                )))
            }
        })
    }

    pub fn to_arrow(self) -> DataType {
        match self {
            GpuType::Boolean => DataType::Boolean,
            GpuType::Int32 => DataType::Int32,
            GpuType::Int64 => DataType::Int64,
            GpuType::Float64 => DataType::Float64,
            GpuType::Date32 => DataType::Date32,
            GpuType::Decimal128 { precision, scale } => DataType::Decimal128(precision, scale),
        }
    }

    /// Bytes per value in the column's Arrow buffer (booleans are bit-packed there; the device
    /// writes them one byte per row and the host packs them).
    pub fn width(self) -> usize {
        match self {
            GpuType::Boolean => 1,
            GpuType::Int32 | GpuType::Date32 => 4,
            GpuType::Int64 | GpuType::Float64 => 8,
            GpuType::Decimal128 { .. } => 16,
        }
    }

    /// Integer types whose values fit an i64 group key slot.
    pub fn is_integral_key(self) -> bool {
        matches!(
            self,
            GpuType::Boolean | GpuType::Int32 | GpuType::Int64 | GpuType::Date32
        )
    }
}

/// A constant. `Null` carries its type so that `x + NULL` is typed like the CPU's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Literal {
    Null(GpuType),
    Boolean(bool),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    Date32(i32),
    Decimal128 {
        value: i128,
        precision: u8,
        scale: i8,
    },
}

impl Literal {
    pub fn data_type(&self) -> GpuType {
        match *self {
            Literal::Null(t) => t,
            Literal::Boolean(_) => GpuType::Boolean,
            Literal::Int32(_) => GpuType::Int32,
            Literal::Int64(_) => GpuType::Int64,
            Literal::Float64(_) => GpuType::Float64,
            Literal::Date32(_) => GpuType::Date32,
            Literal::Decimal128 {
                precision, scale, ..
            } => GpuType::Decimal128 { precision, scale },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CompareOp {
    pub const ALL: [CompareOp; 6] = [
        CompareOp::Eq,
        CompareOp::NotEq,
        CompareOp::Lt,
        CompareOp::LtEq,
        CompareOp::Gt,
        CompareOp::GtEq,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// One node of an expression over the input batch's columns.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuExpr {
    Column {
        index: usize,
        data_type: GpuType,
    },
    Literal(Literal),
    Compare {
        op: CompareOp,
        left: Box<GpuExpr>,
        right: Box<GpuExpr>,
    },
    And(Box<GpuExpr>, Box<GpuExpr>),
    Or(Box<GpuExpr>, Box<GpuExpr>),
    Not(Box<GpuExpr>),
    IsNull(Box<GpuExpr>),
    IsNotNull(Box<GpuExpr>),
    /// Arithmetic on two operands of one numeric type, or `date - date` (days, as Int64).
    /// `checked` makes integer overflow an error instead of a wrap-around.
    Arith {
        op: ArithOp,
        left: Box<GpuExpr>,
        right: Box<GpuExpr>,
        checked: bool,
    },
    /// The widening casts DataFusion's coercion inserts: Int32 → Int64, integers → Float64.
    Cast {
        input: Box<GpuExpr>,
        to: GpuType,
    },
}

impl GpuExpr {
    pub fn column(index: usize, data_type: GpuType) -> Self {
        GpuExpr::Column { index, data_type }
    }

    pub fn compare(op: CompareOp, left: GpuExpr, right: GpuExpr) -> Self {
        GpuExpr::Compare {
            op,
            left: Box::new(left),
            right: Box::new(right),
        }
    }

    pub fn arith(op: ArithOp, left: GpuExpr, right: GpuExpr, checked: bool) -> Self {
        GpuExpr::Arith {
            op,
            left: Box::new(left),
            right: Box::new(right),
            checked,
        }
    }

    /// The expression's result type, or why the tree is not one the device evaluates.
    pub fn data_type(&self) -> Result<GpuType, GpuError> {
        Ok(match self {
            GpuExpr::Column { data_type, .. } => *data_type,
            GpuExpr::Literal(literal) => literal.data_type(),
            GpuExpr::Compare { left, right, .. } => {
                let (l, r) = (left.data_type()?, right.data_type()?);
                if l != r {
                    return Err(GpuError::Unsupported(format!(
                        "comparison of {l:?} with {r:?}"
                    )));
                }
                GpuType::Boolean
            }
            GpuExpr::And(left, right) | GpuExpr::Or(left, right) => {
                expect_boolean(left)?;
                expect_boolean(right)?;
                GpuType::Boolean
            }
            GpuExpr::Not(input) => {
                expect_boolean(input)?;
                GpuType::Boolean
            }
            GpuExpr::IsNull(input) | GpuExpr::IsNotNull(input) => {
                input.data_type()?;
                GpuType::Boolean
            }
            GpuExpr::Arith {
                op, left, right, ..
            } => arith_result_type(*op, left.data_type()?, right.data_type()?)?,
            GpuExpr::Cast { input, to } => {
                let from = input.data_type()?;
                let allowed = from == *to
                    || matches!(
                        (from, to),
                        (GpuType::Int32, GpuType::Int64)
                            | (GpuType::Int32 | GpuType::Int64, GpuType::Float64)
                    );
                if !allowed {
                    return Err(GpuError::Unsupported(format!(
                        "cast from {from:?} to {to:?}"
                    )));
                }
                *to
            }
        })
    }

    /// The input columns the expression reads, each once, in ascending order.
    pub fn columns(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.visit_columns(&mut |index| out.push(index));
        out.sort_unstable();
        out.dedup();
        out
    }

    fn visit_columns(&self, f: &mut dyn FnMut(usize)) {
        match self {
            GpuExpr::Column { index, .. } => f(*index),
            GpuExpr::Literal(_) => {}
            GpuExpr::Compare { left, right, .. }
            | GpuExpr::Arith { left, right, .. }
            | GpuExpr::And(left, right)
            | GpuExpr::Or(left, right) => {
                left.visit_columns(f);
                right.visit_columns(f);
            }
            GpuExpr::Not(input)
            | GpuExpr::IsNull(input)
            | GpuExpr::IsNotNull(input)
            | GpuExpr::Cast { input, .. } => input.visit_columns(f),
        }
    }
}

fn expect_boolean(expr: &GpuExpr) -> Result<(), GpuError> {
    match expr.data_type()? {
        GpuType::Boolean => Ok(()),
        other => Err(GpuError::Unsupported(format!(
            "a boolean operator over {other:?}"
        ))),
    }
}

/// Arrow's result types: the same type for integers and floats, Int64 days for `date - date`,
/// and for decimals the precision and scale arrow's kernels give (division stays on the CPU).
pub fn arith_result_type(op: ArithOp, left: GpuType, right: GpuType) -> Result<GpuType, GpuError> {
    use GpuType::*;
    match (left, right) {
        (Int32, Int32) | (Int64, Int64) | (Float64, Float64) => Ok(left),
        (Date32, Date32) if op == ArithOp::Sub => Ok(Int64),
        (
            Decimal128 {
                precision: p1,
                scale: s1,
            },
            Decimal128 {
                precision: p2,
                scale: s2,
            },
        ) => match op {
            ArithOp::Add | ArithOp::Sub => {
                let scale = s1.max(s2);
                let integral = (p1 as i16 - s1 as i16).max(p2 as i16 - s2 as i16);
                let precision = (integral + scale as i16 + 1).min(38) as u8;
                Ok(Decimal128 { precision, scale })
            }
            ArithOp::Mul => {
                let scale = s1 as i16 + s2 as i16;
                if scale > 38 {
                    return Err(GpuError::Unsupported(format!(
                        "decimal product with scale {scale}"
                    )));
                }
                let precision = (p1 as u16 + p2 as u16 + 1).min(38) as u8;
                Ok(Decimal128 {
                    precision,
                    scale: scale as i8,
                })
            }
            ArithOp::Div | ArithOp::Mod => Err(GpuError::Unsupported(
                "decimal division and remainder".to_string(),
            )),
        },
        (l, r) => Err(GpuError::Unsupported(format!("{op:?} of {l:?} and {r:?}"))),
    }
}

/// A canonical text of the expression: equal texts compile to the same kernel, so it is the key of
/// the kernel cache (together with the device).
impl fmt::Display for GpuExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuExpr::Column { index, data_type } => write!(f, "#{index}:{data_type:?}"),
            GpuExpr::Literal(literal) => write!(f, "{literal:?}"),
            GpuExpr::Compare { op, left, right } => write!(f, "({left} {op:?} {right})"),
            GpuExpr::And(l, r) => write!(f, "({l} AND {r})"),
            GpuExpr::Or(l, r) => write!(f, "({l} OR {r})"),
            GpuExpr::Not(e) => write!(f, "(NOT {e})"),
            GpuExpr::IsNull(e) => write!(f, "({e} IS NULL)"),
            GpuExpr::IsNotNull(e) => write!(f, "({e} IS NOT NULL)"),
            GpuExpr::Arith {
                op,
                left,
                right,
                checked,
            } => {
                let mode = if *checked { "checked" } else { "wrapping" };
                write!(f, "({left} {op:?}/{mode} {right})")
            }
            GpuExpr::Cast { input, to } => write!(f, "CAST({input} AS {to:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_result_types_follow_arrow() {
        let a = GpuType::Decimal128 {
            precision: 15,
            scale: 2,
        };
        let b = GpuType::Decimal128 {
            precision: 10,
            scale: 4,
        };
        assert_eq!(
            arith_result_type(ArithOp::Add, a, b).unwrap(),
            GpuType::Decimal128 {
                precision: 18,
                scale: 4
            }
        );
        assert_eq!(
            arith_result_type(ArithOp::Mul, a, b).unwrap(),
            GpuType::Decimal128 {
                precision: 26,
                scale: 6
            }
        );
        assert!(arith_result_type(ArithOp::Div, a, b).is_err());
    }

    #[test]
    fn mixed_types_are_refused_with_a_reason() {
        let e = GpuExpr::compare(
            CompareOp::Eq,
            GpuExpr::column(0, GpuType::Int32),
            GpuExpr::Literal(Literal::Int64(1)),
        );
        let err = e.data_type().unwrap_err().to_string();
        assert!(err.contains("comparison of Int32 with Int64"), "{err}");
    }
}
