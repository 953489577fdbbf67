//! `array_agg` whose list elements keep the PostgreSQL type of its input: `array_agg(atttypid)`
//! is `oid[]` on PostgreSQL, not `integer[]`. DataFusion's `array_agg` builds its element field
//! from the input's Arrow type alone, which drops the field metadata that says a catalog
//! column is an `oid` (or `regtype`, ...). asyncpg's type introspection query aggregates oids
//! this way and only works when the result is `oid[]`, a type it decodes without introspecting
//! (it would otherwise introspect its own introspection query, forever).
//!
//! The wrapper delegates everything to DataFusion's `array_agg` except the return field.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::functions_aggregate::array_agg::array_agg_udaf;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::EmitTo;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    Signature,
};

/// The replacement `array_agg`, registered over DataFusion's.
pub(crate) fn typed_array_agg_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(TypedArrayAgg {
        inner: array_agg_udaf().inner().clone().into(),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TypedArrayAgg {
    inner: UdfEq<Arc<dyn AggregateUDFImpl>>,
}

fn wrap(inner: Arc<dyn AggregateUDFImpl>) -> Arc<dyn AggregateUDFImpl> {
    Arc::new(TypedArrayAgg {
        inner: inner.into(),
    })
}

impl AggregateUDFImpl for TypedArrayAgg {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    /// The inner field of the list is the input's field (its name aside), metadata included.
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        let field = self.inner.return_field(arg_fields)?;
        let Some(input) = arg_fields.first().filter(|f| !f.metadata().is_empty()) else {
            return Ok(field);
        };
        let DataType::List(item) = field.data_type() else {
            return Ok(field);
        };
        let item = item
            .as_ref()
            .clone()
            .with_metadata(input.metadata().clone());
        Ok(Arc::new(Field::new(
            field.name(),
            DataType::List(Arc::new(item)),
            field.is_nullable(),
        )))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let inner = self.inner.accumulator(args.clone())?;
        Ok(match tagged_item(&args) {
            Some(item) => Box::new(TaggedAccumulator { inner, item }),
            None => inner,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let inner = self.inner.create_groups_accumulator(args.clone())?;
        Ok(match tagged_item(&args) {
            Some(item) => Box::new(TaggedGroupsAccumulator { inner, item }),
            None => inner,
        })
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        Ok(Arc::clone(&*self.inner)
            .with_beneficial_ordering(beneficial_ordering)?
            .map(wrap))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        match self.inner.reverse_expr() {
            ReversedUDAF::Reversed(udaf) => ReversedUDAF::Reversed(Arc::new(
                AggregateUDF::new_from_shared_impl(wrap(udaf.inner().clone())),
            )),
            other => other,
        }
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.supports_null_handling_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// The list element field of the aggregate's result, when it carries metadata to keep.
fn tagged_item(args: &AccumulatorArgs) -> Option<FieldRef> {
    match args.return_field.data_type() {
        DataType::List(item) if !item.metadata().is_empty() => Some(item.clone()),
        _ => None,
    }
}

/// `list` with `item` as its element field (same values).
fn retag(list: &ArrayRef, item: &FieldRef) -> Result<ArrayRef> {
    let Some(list) = list.as_list_opt::<i32>() else {
        return Ok(list.clone());
    };
    Ok(Arc::new(ListArray::try_new(
        item.clone(),
        list.offsets().clone(),
        list.values().clone(),
        list.nulls().cloned(),
    )?))
}

/// DataFusion's accumulator, its final lists retagged with the element field.
#[derive(Debug)]
struct TaggedAccumulator {
    inner: Box<dyn Accumulator>,
    item: FieldRef,
}

impl Accumulator for TaggedAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        match self.inner.evaluate()? {
            ScalarValue::List(list) => {
                let array: ArrayRef = list;
                let tagged = retag(&array, &self.item)?;
                Ok(ScalarValue::List(Arc::new(tagged.as_list::<i32>().clone())))
            }
            other => Ok(other),
        }
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

/// DataFusion's groups accumulator, its final lists retagged with the element field.
struct TaggedGroupsAccumulator {
    inner: Box<dyn GroupsAccumulator>,
    item: FieldRef,
}

impl GroupsAccumulator for TaggedGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        retag(&self.inner.evaluate(emit_to)?, &self.item)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.inner.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}
