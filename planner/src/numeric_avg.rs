//! `avg` of integers as an exact `numeric`, as in PostgreSQL: `avg(int)` there is `numeric`
//! (`avg(24)` prints `24.0000000000000000`), where DataFusion's `avg` casts the input to
//! `float8`. The wrapper keeps DataFusion's `avg` for every other input and, for integer
//! inputs, sums into an `i128`, counts, and divides once at the end, rounding half away from
//! zero at [`AVG_SCALE`] decimals as PostgreSQL's numeric division does.
//!
//! PostgreSQL chooses the number of decimals per value (16 for most averages, more below 1,
//! fewer from 10000 up: `select_div_scale`); an Arrow decimal column has one scale, so the
//! average is `Decimal128(38, 16)`: the same text for averages between 1 and 10000 and the same
//! value elsewhere. The partial state is `(count UInt64, sum Decimal128(38, 0))`, so partition
//! leaders compute it and the final average is exact whatever the split.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, ListArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{i256, DataType, Field, FieldRef};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::functions_aggregate::average::avg_udaf;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Coercion, Documentation, EmitTo,
    GroupsAccumulator, ReversedUDAF, Signature, TypeSignature, TypeSignatureClass, Volatility,
};

/// Decimals of an integer average: PostgreSQL's for averages from 1 to 10000.
pub const AVG_SCALE: i8 = 16;
/// The type of an integer average.
const AVG_TYPE: DataType = DataType::Decimal128(38, AVG_SCALE);
/// The type of the running sum of integers.
const SUM_TYPE: DataType = DataType::Decimal128(38, 0);

/// The replacement `avg`, registered over DataFusion's.
pub(crate) fn numeric_avg_udaf() -> AggregateUDF {
    let inner = avg_udaf().inner().clone();
    let mut accepted = vec![TypeSignature::Coercible(vec![Coercion::new_exact(
        TypeSignatureClass::Integer,
    )])];
    match &inner.signature().type_signature {
        TypeSignature::OneOf(others) => accepted.extend(others.iter().cloned()),
        other => accepted.push(other.clone()),
    }
    AggregateUDF::new_from_impl(NumericAvg {
        inner: inner.into(),
        signature: Signature::one_of(accepted, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NumericAvg {
    inner: UdfEq<Arc<dyn AggregateUDFImpl>>,
    signature: Signature,
}

impl AggregateUDFImpl for NumericAvg {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [only] if only.is_integer() => Ok(AVG_TYPE),
            _ => self.inner.return_type(arg_types),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !integer_input(&args) {
            return self.inner.accumulator(args);
        }
        Ok(match args.is_distinct {
            true => Box::new(DistinctIntegerAvg::default()),
            false => Box::new(IntegerAvg::default()),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !args
            .input_fields
            .first()
            .is_some_and(|f| f.data_type().is_integer())
        {
            return self.inner.state_fields(args);
        }
        let fields = match args.is_distinct {
            true => vec![Field::new_list(
                format_state_name(args.name, "avg distinct"),
                Field::new_list_field(SUM_TYPE, true),
                false,
            )],
            false => vec![
                Field::new(
                    format_state_name(args.name, "count"),
                    DataType::UInt64,
                    true,
                ),
                Field::new(format_state_name(args.name, "sum"), SUM_TYPE, true),
            ],
        };
        Ok(fields.into_iter().map(Arc::new).collect())
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        match integer_input(&args) {
            true => !args.is_distinct,
            false => self.inner.groups_accumulator_supported(args),
        }
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match integer_input(&args) {
            true => Ok(Box::new(IntegerAvgGroups::default())),
            false => self.inner.create_groups_accumulator(args),
        }
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

fn integer_input(args: &AccumulatorArgs) -> bool {
    args.expr_fields
        .first()
        .is_some_and(|f| f.data_type().is_integer())
}

/// Integers of any width (and sign) as one decimal array of scale 0.
fn as_sums(values: &ArrayRef) -> Result<Decimal128Array> {
    Ok(cast(values, &SUM_TYPE)?.as_primitive().clone())
}

fn add(sum: i128, value: i128) -> Result<i128> {
    match sum.checked_add(value) {
        Some(total) => Ok(total),
        None => exec_err!("numeric field overflow: the sum of avg() is out of range"),
    }
}

/// `sum / count` at [`AVG_SCALE`] decimals, rounded half away from zero; None for no rows.
fn average(sum: i128, count: u64) -> Result<Option<i128>> {
    if count == 0 {
        return Ok(None);
    }
    let scaled = i256::from_i128(sum) * i256::from_i128(10_i128.pow(AVG_SCALE as u32));
    let count = i256::from_i128(count as i128);
    let (quotient, remainder) = (scaled.wrapping_div(count), scaled.wrapping_rem(count));
    let twice_remainder = remainder.wrapping_abs() * i256::from_i128(2);
    let rounded = match twice_remainder >= count {
        true => quotient + scaled.signum(),
        false => quotient,
    };
    match rounded.to_i128() {
        Some(value) => Ok(Some(value)),
        None => exec_err!("numeric field overflow: avg() is out of range"),
    }
}

fn averages(values: impl Iterator<Item = Result<Option<i128>>>) -> Result<ArrayRef> {
    let array = values
        .collect::<Result<Decimal128Array>>()?
        .with_data_type(AVG_TYPE);
    Ok(Arc::new(array))
}

/// The integer average of one group (no GROUP BY, or window frames).
#[derive(Debug, Default)]
struct IntegerAvg {
    sum: i128,
    count: u64,
}

impl Accumulator for IntegerAvg {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in as_sums(&values[0])?.iter().flatten() {
            self.sum = add(self.sum, value)?;
            self.count += 1;
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in as_sums(&values[0])?.iter().flatten() {
            self.sum = add(self.sum, -value)?;
            self.count -= 1;
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let counts = states[0].as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        let sums = states[1].as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        for (count, sum) in counts.iter().zip(sums.iter()) {
            self.count += count.unwrap_or(0);
            self.sum = add(self.sum, sum.unwrap_or(0))?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::UInt64(Some(self.count)),
            ScalarValue::Decimal128(Some(self.sum), 38, 0),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Decimal128(
            average(self.sum, self.count)?,
            38,
            AVG_SCALE,
        ))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

/// `avg(DISTINCT integer)`: the distinct values, summed at the end.
#[derive(Debug, Default)]
struct DistinctIntegerAvg {
    values: HashSet<i128>,
}

impl Accumulator for DistinctIntegerAvg {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.values.extend(as_sums(&values[0])?.iter().flatten());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for list in states[0].as_list::<i32>().iter().flatten() {
            self.values.extend(as_sums(&list)?.iter().flatten());
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values =
            Decimal128Array::from_iter_values(self.values.iter().copied()).with_data_type(SUM_TYPE);
        let list = ListArray::new(
            Arc::new(Field::new_list_field(SUM_TYPE, true)),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
            Arc::new(values),
            None,
        );
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let sum = self.values.iter().try_fold(0, |sum, v| add(sum, *v))?;
        Ok(ScalarValue::Decimal128(
            average(sum, self.values.len() as u64)?,
            38,
            AVG_SCALE,
        ))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.capacity() * size_of::<i128>()
    }
}

/// Integer averages of many groups (GROUP BY).
#[derive(Debug, Default)]
struct IntegerAvgGroups {
    sums: Vec<i128>,
    counts: Vec<u64>,
}

/// Whether row `row` passes the aggregate's FILTER (NULL does not).
fn passes(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

impl GroupsAccumulator for IntegerAvgGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0);
        self.counts.resize(total_num_groups, 0);
        let values = as_sums(&values[0])?;
        for (row, &group) in group_indices.iter().enumerate() {
            if values.is_valid(row) && passes(opt_filter, row) {
                self.sums[group] = add(self.sums[group], values.value(row))?;
                self.counts[group] += 1;
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0);
        self.counts.resize(total_num_groups, 0);
        let counts = values[0].as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        let sums = values[1].as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if counts.is_valid(row) && sums.is_valid(row) {
                self.sums[group] = add(self.sums[group], sums.value(row))?;
                self.counts[group] += counts.value(row);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = emit_to.take_needed(&mut self.sums);
        let counts = emit_to.take_needed(&mut self.counts);
        averages(sums.into_iter().zip(counts).map(|(s, c)| average(s, c)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let sums = emit_to.take_needed(&mut self.sums);
        let counts = emit_to.take_needed(&mut self.counts);
        Ok(vec![
            Arc::new(UInt64Array::from(counts)),
            Arc::new(Decimal128Array::from(sums).with_data_type(SUM_TYPE)),
        ])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = as_sums(&values[0])?;
        let counted = |row: usize| values.is_valid(row) && passes(opt_filter, row);
        let counts: UInt64Array = (0..values.len()).map(|r| counted(r) as u64).collect();
        let sums: Decimal128Array = (0..values.len())
            .map(|r| if counted(r) { values.value(r) } else { 0 })
            .collect();
        Ok(vec![
            Arc::new(counts),
            Arc::new(sums.with_data_type(SUM_TYPE)),
        ])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<i128>() + self.counts.capacity() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_round_half_away_from_zero_at_sixteen_decimals() {
        let scale = 10_i128.pow(16);
        assert_eq!(average(72, 3).unwrap(), Some(24 * scale));
        // 5/3 = 1.66666666666666666..., rounded up in the last place.
        assert_eq!(average(5, 3).unwrap(), Some(16_666_666_666_666_667));
        assert_eq!(average(-5, 3).unwrap(), Some(-16_666_666_666_666_667));
        // 1/2 * 10^-16 exactly half: away from zero.
        assert_eq!(average(1, 2 * scale as u64).unwrap(), Some(1));
        assert_eq!(average(-1, 2 * scale as u64).unwrap(), Some(-1));
        assert_eq!(average(0, 0).unwrap(), None);
        // The largest bigints: the scaled sum needs more than 128 bits.
        let max = i64::MAX as i128;
        assert_eq!(average(max * 4, 4).unwrap(), Some(max * scale));
    }

    #[test]
    fn groups_merge_partial_states_exactly() {
        let values: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from(vec![
            Some(1),
            None,
            Some(2),
            Some(4),
        ]));
        let mut partial = IntegerAvgGroups::default();
        partial
            .update_batch(std::slice::from_ref(&values), &[0, 0, 1, 1], None, 2)
            .unwrap();
        let state = partial.state(EmitTo::All).unwrap();
        let mut last = IntegerAvgGroups::default();
        last.merge_batch(&state, &[0, 1], 2).unwrap();
        let converted = IntegerAvgGroups::default()
            .convert_to_state(&[values], None)
            .unwrap();
        last.merge_batch(&converted, &[0, 0, 1, 1], 2).unwrap();
        let result = last.evaluate(EmitTo::All).unwrap();
        let result = result.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        let scale = 10_i128.pow(16);
        assert_eq!(result.value(0), scale);
        assert_eq!(result.value(1), 3 * scale);
    }
}
