//! The stored row format and its Arrow encoder/decoder.
//!
//! A row value is `slot count (u16 LE) | null bitmap | values`, one slot per physical column in
//! column-id order. Fixed-width values are little-endian; strings and byte strings are a u32
//! length plus bytes; arrays are a u32 element count and, per element, a null flag and the
//! value. Dropped columns keep their slot (written as NULL); slots added after a row was written
//! read as NULL. Scans decode rows straight into typed Arrow builders ([`RowDecoder`]), with no
//! allocation per row.

use std::sync::Arc;

use datafusion::arrow::array::*;
use datafusion::arrow::datatypes::*;
use datafusion::arrow::record_batch::RecordBatch;

use crate::{Result, StorageError};

/// How a table's rows are laid out: the Arrow type of each physical slot (dropped columns keep
/// theirs, so stored values can be skipped) and which slots make up the visible schema.
#[derive(Debug, Clone)]
pub struct RowLayout {
    pub slots: Vec<Option<DataType>>,
    /// Slot of each visible column, in schema order.
    pub visible: Vec<usize>,
    pub schema: SchemaRef,
}

impl RowLayout {
    pub fn new(slots: Vec<Option<DataType>>, visible: Vec<usize>, schema: SchemaRef) -> Self {
        RowLayout {
            slots,
            visible,
            schema,
        }
    }
}

fn check_storable(t: &DataType) -> Result<()> {
    match t {
        DataType::Boolean
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Date32
        | DataType::Time64(TimeUnit::Microsecond)
        | DataType::Timestamp(TimeUnit::Microsecond, _)
        | DataType::Decimal128(_, _)
        | DataType::Interval(IntervalUnit::MonthDayNano)
        | DataType::Utf8
        | DataType::Binary => Ok(()),
        DataType::List(f) => check_storable(f.data_type()),
        other => Err(StorageError::UnsupportedType(other.to_string())),
    }
}

/// Encodes rows of batches whose columns follow a layout's visible schema.
pub struct RowEncoder<'a> {
    layout: &'a RowLayout,
    /// For each slot, the batch column holding it (None for dropped slots).
    column_of_slot: Vec<Option<&'a ArrayRef>>,
}

impl<'a> RowEncoder<'a> {
    pub fn new(layout: &'a RowLayout, batch: &'a RecordBatch) -> Result<Self> {
        let mut column_of_slot = vec![None; layout.slots.len()];
        for (i, slot) in layout.visible.iter().enumerate() {
            let column = batch.column(i);
            check_storable(column.data_type())?;
            column_of_slot[*slot] = Some(column);
        }
        Ok(RowEncoder {
            layout,
            column_of_slot,
        })
    }

    /// Appends row `row` in stored form to `out` (cleared first).
    pub fn encode(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        let n = self.layout.slots.len();
        out.extend_from_slice(&(n as u16).to_le_bytes());
        let bitmap_at = out.len();
        out.resize(bitmap_at + n.div_ceil(8), 0);
        for (slot, column) in self.column_of_slot.iter().enumerate() {
            match column {
                Some(c) if !c.is_null(row) => encode_value(c, row, out)?,
                _ => out[bitmap_at + slot / 8] |= 1 << (slot % 8),
            }
        }
        Ok(())
    }
}

fn encode_value(array: &ArrayRef, row: usize, out: &mut Vec<u8>) -> Result<()> {
    match array.data_type() {
        DataType::Boolean => out.push(array.as_boolean().value(row) as u8),
        DataType::Int16 => {
            out.extend_from_slice(&array.as_primitive::<Int16Type>().value(row).to_le_bytes())
        }
        DataType::Int32 => {
            out.extend_from_slice(&array.as_primitive::<Int32Type>().value(row).to_le_bytes())
        }
        DataType::Int64 => {
            out.extend_from_slice(&array.as_primitive::<Int64Type>().value(row).to_le_bytes())
        }
        DataType::Float32 => {
            out.extend_from_slice(&array.as_primitive::<Float32Type>().value(row).to_le_bytes())
        }
        DataType::Float64 => {
            out.extend_from_slice(&array.as_primitive::<Float64Type>().value(row).to_le_bytes())
        }
        DataType::Date32 => {
            out.extend_from_slice(&array.as_primitive::<Date32Type>().value(row).to_le_bytes())
        }
        DataType::Time64(TimeUnit::Microsecond) => out.extend_from_slice(
            &array
                .as_primitive::<Time64MicrosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => out.extend_from_slice(
            &array
                .as_primitive::<TimestampMicrosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        DataType::Decimal128(_, _) => out.extend_from_slice(
            &array
                .as_primitive::<Decimal128Type>()
                .value(row)
                .to_le_bytes(),
        ),
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            out.extend_from_slice(&v.months.to_le_bytes());
            out.extend_from_slice(&v.days.to_le_bytes());
            out.extend_from_slice(&v.nanoseconds.to_le_bytes());
        }
        DataType::Utf8 => put_bytes(array.as_string::<i32>().value(row).as_bytes(), out),
        DataType::Binary => put_bytes(array.as_binary::<i32>().value(row), out),
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let items = list.value(row);
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for i in 0..items.len() {
                if items.is_null(i) {
                    out.push(0);
                } else {
                    out.push(1);
                    encode_value(&items, i, out)?;
                }
            }
        }
        other => return Err(StorageError::UnsupportedType(other.to_string())),
    }
    Ok(())
}

fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A cursor over one stored row's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| StorageError::CorruptRow("row ends early".into()))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn len_prefixed(&mut self) -> Result<&'a [u8]> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }
}

/// Skips one value of type `t`.
fn skip_value(t: &DataType, c: &mut Cursor) -> Result<()> {
    match fixed_width(t) {
        Some(w) => {
            c.take(w)?;
        }
        None => match t {
            DataType::Utf8 | DataType::Binary => {
                c.len_prefixed()?;
            }
            DataType::List(f) => {
                let n = u32::from_le_bytes(c.array()?);
                for _ in 0..n {
                    if c.take(1)?[0] == 1 {
                        skip_value(f.data_type(), c)?;
                    }
                }
            }
            other => return Err(StorageError::UnsupportedType(other.to_string())),
        },
    }
    Ok(())
}

fn fixed_width(t: &DataType) -> Option<usize> {
    Some(match t {
        DataType::Boolean => 1,
        DataType::Int16 => 2,
        DataType::Int32 | DataType::Float32 | DataType::Date32 => 4,
        DataType::Int64 | DataType::Float64 | DataType::Time64(_) | DataType::Timestamp(_, _) => 8,
        DataType::Decimal128(_, _) | DataType::Interval(_) => 16,
        _ => return None,
    })
}

/// Appends one stored value of type `t` to a type-erased builder (used for array elements).
fn append_dyn(t: &DataType, c: &mut Cursor, b: &mut dyn ArrayBuilder) -> Result<()> {
    macro_rules! prim {
        ($builder:ty, $native:ty, $n:expr) => {{
            let v = <$native>::from_le_bytes(c.array::<$n>()?);
            downcast::<$builder>(b)?.append_value(v);
        }};
    }
    match t {
        DataType::Boolean => downcast::<BooleanBuilder>(b)?.append_value(c.take(1)?[0] != 0),
        DataType::Int16 => prim!(Int16Builder, i16, 2),
        DataType::Int32 => prim!(Int32Builder, i32, 4),
        DataType::Int64 => prim!(Int64Builder, i64, 8),
        DataType::Float32 => prim!(Float32Builder, f32, 4),
        DataType::Float64 => prim!(Float64Builder, f64, 8),
        DataType::Date32 => prim!(Date32Builder, i32, 4),
        DataType::Time64(_) => prim!(Time64MicrosecondBuilder, i64, 8),
        DataType::Timestamp(_, _) => prim!(TimestampMicrosecondBuilder, i64, 8),
        DataType::Decimal128(_, _) => prim!(Decimal128Builder, i128, 16),
        DataType::Interval(_) => {
            let v = read_interval(c)?;
            downcast::<IntervalMonthDayNanoBuilder>(b)?.append_value(v)
        }
        DataType::Utf8 => {
            let s = std::str::from_utf8(c.len_prefixed()?)
                .map_err(|e| StorageError::CorruptRow(e.to_string()))?;
            downcast::<StringBuilder>(b)?.append_value(s)
        }
        DataType::Binary => {
            let v = c.len_prefixed()?;
            downcast::<BinaryBuilder>(b)?.append_value(v)
        }
        other => return Err(StorageError::UnsupportedType(other.to_string())),
    }
    Ok(())
}

fn append_dyn_null(t: &DataType, b: &mut dyn ArrayBuilder) -> Result<()> {
    macro_rules! null {
        ($builder:ty) => {
            downcast::<$builder>(b)?.append_null()
        };
    }
    match t {
        DataType::Boolean => null!(BooleanBuilder),
        DataType::Int16 => null!(Int16Builder),
        DataType::Int32 => null!(Int32Builder),
        DataType::Int64 => null!(Int64Builder),
        DataType::Float32 => null!(Float32Builder),
        DataType::Float64 => null!(Float64Builder),
        DataType::Date32 => null!(Date32Builder),
        DataType::Time64(_) => null!(Time64MicrosecondBuilder),
        DataType::Timestamp(_, _) => null!(TimestampMicrosecondBuilder),
        DataType::Decimal128(_, _) => null!(Decimal128Builder),
        DataType::Interval(_) => null!(IntervalMonthDayNanoBuilder),
        DataType::Utf8 => null!(StringBuilder),
        DataType::Binary => null!(BinaryBuilder),
        other => return Err(StorageError::UnsupportedType(other.to_string())),
    }
    Ok(())
}

fn downcast<T: 'static>(b: &mut dyn ArrayBuilder) -> Result<&mut T> {
    b.as_any_mut()
        .downcast_mut::<T>()
        .ok_or_else(|| StorageError::CorruptRow("builder type mismatch".into()))
}

fn read_interval(c: &mut Cursor) -> Result<IntervalMonthDayNano> {
    let months = i32::from_le_bytes(c.array()?);
    let days = i32::from_le_bytes(c.array()?);
    let nanoseconds = i64::from_le_bytes(c.array()?);
    Ok(IntervalMonthDayNano {
        months,
        days,
        nanoseconds,
    })
}

/// Decodes stored rows into Arrow arrays for a projection of the visible columns.
pub struct RowDecoder {
    /// Per slot: the output column it feeds, if projected, and its type (None: dropped).
    slot_targets: Vec<(Option<usize>, Option<DataType>)>,
    builders: Vec<Box<dyn ArrayBuilder>>,
    schema: SchemaRef,
    rows: usize,
}

impl RowDecoder {
    /// `projection` lists visible column indices to produce, in output order.
    pub fn new(layout: &RowLayout, projection: &[usize], capacity: usize) -> Self {
        let mut slot_targets: Vec<(Option<usize>, Option<DataType>)> =
            layout.slots.iter().map(|t| (None, t.clone())).collect();
        let mut fields = Vec::with_capacity(projection.len());
        let mut builders = Vec::with_capacity(projection.len());
        for (out, visible_index) in projection.iter().enumerate() {
            let slot = layout.visible[*visible_index];
            slot_targets[slot].0 = Some(out);
            let field = layout.schema.field(*visible_index).clone();
            builders.push(make_builder(field.data_type(), capacity));
            fields.push(field);
        }
        RowDecoder {
            slot_targets,
            builders,
            schema: Arc::new(Schema::new(fields)),
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Decodes one stored row and appends its projected values.
    pub fn push(&mut self, value: &[u8]) -> Result<()> {
        let mut c = Cursor { buf: value, at: 0 };
        let stored = u16::from_le_bytes(c.array()?) as usize;
        let bitmap = c.take(stored.div_ceil(8))?;
        for (slot, (target, t)) in self.slot_targets.iter().enumerate() {
            let is_null = slot >= stored || bitmap[slot / 8] & (1 << (slot % 8)) != 0;
            match (target, t) {
                (Some(out), Some(t)) => {
                    let b = self.builders[*out].as_mut();
                    if is_null {
                        append_null(t, b)?;
                    } else {
                        append_value(t, &mut c, b)?;
                    }
                }
                (None, Some(t)) if !is_null => skip_value(t, &mut c)?,
                _ => {}
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Finishes the rows pushed so far into a batch and resets the builders.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let rows = std::mem::take(&mut self.rows);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        // Builders lose type parameters such as the timestamp zone or decimal scale: cast back.
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    datafusion::arrow::compute::cast(&c, f.data_type())
                        .map_err(|e| StorageError::CorruptRow(e.to_string()))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map_err(|e| StorageError::CorruptRow(e.to_string()))
    }
}

fn append_null(t: &DataType, b: &mut dyn ArrayBuilder) -> Result<()> {
    match t {
        DataType::List(_) => {
            downcast::<ListBuilder<Box<dyn ArrayBuilder>>>(b)?.append_null();
            Ok(())
        }
        _ => append_dyn_null(t, b),
    }
}

fn append_value(t: &DataType, c: &mut Cursor, b: &mut dyn ArrayBuilder) -> Result<()> {
    match t {
        DataType::List(f) => {
            let list = downcast::<ListBuilder<Box<dyn ArrayBuilder>>>(b)?;
            let n = u32::from_le_bytes(c.array()?);
            for _ in 0..n {
                let values = list.values().as_mut();
                if c.take(1)?[0] == 1 {
                    append_dyn(f.data_type(), c, values)?;
                } else {
                    append_dyn_null(f.data_type(), values)?;
                }
            }
            list.append(true);
            Ok(())
        }
        _ => append_dyn(t, c, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_nulls_dropped_and_added_slots() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("tags", DataType::new_list(DataType::Int32, true), true),
            Field::new("price", DataType::Decimal128(10, 2), true),
        ]));
        // slot 1 holds a dropped column; visible columns live in slots 0, 2, 3, 4
        let layout = RowLayout::new(
            vec![
                Some(DataType::Int64),
                Some(DataType::Utf8),
                Some(DataType::Utf8),
                Some(DataType::new_list(DataType::Int32, true)),
                Some(DataType::Decimal128(10, 2)),
            ],
            vec![0, 2, 3, 4],
            schema.clone(),
        );
        let mut tags = ListBuilder::new(Int32Builder::new());
        tags.values().append_value(1);
        tags.values().append_null();
        tags.append(true);
        tags.append_null();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(tags.finish()),
                Arc::new(
                    Decimal128Array::from(vec![Some(1234), None])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap();
        let enc = RowEncoder::new(&layout, &batch).unwrap();
        let mut dec = RowDecoder::new(&layout, &[3, 1, 2, 0], 2);
        let mut buf = Vec::new();
        for r in 0..2 {
            enc.encode(r, &mut buf).unwrap();
            dec.push(&buf).unwrap();
        }
        let out = dec.finish().unwrap();
        assert_eq!(out.num_rows(), 2);
        assert_eq!(
            out.column(0).as_primitive::<Decimal128Type>().value(0),
            1234
        );
        assert!(out.column(0).is_null(1));
        assert_eq!(out.column(1).as_string::<i32>().value(0), "a");
        assert!(out.column(2).is_null(1));
        assert_eq!(out.column(2).as_list::<i32>().value(0).len(), 2);
        assert_eq!(out.column(3).as_primitive::<Int64Type>().value(1), 2);

        // A column added later reads as NULL for old rows.
        let mut wider = layout.clone();
        wider.slots.push(Some(DataType::Boolean));
        wider.visible.push(5);
        let mut fields = schema.fields().to_vec();
        fields.push(Arc::new(Field::new("flag", DataType::Boolean, true)));
        wider.schema = Arc::new(Schema::new(fields));
        let mut dec = RowDecoder::new(&wider, &[4], 1);
        dec.push(&buf).unwrap();
        assert!(dec.finish().unwrap().column(0).is_null(0));
    }

    #[test]
    fn values_of_dropped_columns_are_skipped() {
        let full = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("gone", DataType::Utf8, true),
            Field::new("c", DataType::Int64, true),
        ]));
        let slots = vec![
            Some(DataType::Int32),
            Some(DataType::Utf8),
            Some(DataType::Int64),
        ];
        let before = RowLayout::new(slots.clone(), vec![0, 1, 2], full);
        let batch = RecordBatch::try_new(
            before.schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["some text"])),
                Arc::new(Int64Array::from(vec![42])),
            ],
        )
        .unwrap();
        let mut buf = Vec::new();
        RowEncoder::new(&before, &batch)
            .unwrap()
            .encode(0, &mut buf)
            .unwrap();
        let after_schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("c", DataType::Int64, true),
        ]));
        let after = RowLayout::new(slots, vec![0, 2], after_schema);
        let mut dec = RowDecoder::new(&after, &[1, 0], 1);
        dec.push(&buf).unwrap();
        let out = dec.finish().unwrap();
        assert_eq!(out.column(0).as_primitive::<Int64Type>().value(0), 42);
        assert_eq!(out.column(1).as_primitive::<Int32Type>().value(0), 7);
    }
}
