//! A table's catalog definition seen in Arrow terms: its schema, row layout and key columns.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, Schema, SchemaRef, TimeUnit};
use shoal_coord::{SqlType, TableDef};
use shoal_storage::{keys, RowLayout};

use crate::ExecError;

/// Field metadata key carrying the PostgreSQL type name, so that the wire layer can report
/// `varchar`, `json` or `uuid` where Arrow only knows `Utf8`.
pub const PG_TYPE_METADATA_KEY: &str = "shoal.pg_type";

/// The Arrow type a SQL type is held in.
pub fn arrow_type_of(t: &SqlType) -> DataType {
    match t {
        SqlType::Bool => DataType::Boolean,
        SqlType::Int2 => DataType::Int16,
        SqlType::Int4 => DataType::Int32,
        SqlType::Int8 => DataType::Int64,
        SqlType::Float4 => DataType::Float32,
        SqlType::Float8 => DataType::Float64,
        SqlType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
        SqlType::Text
        | SqlType::Varchar(_)
        | SqlType::Char(_)
        | SqlType::Uuid
        | SqlType::Json
        | SqlType::Jsonb => DataType::Utf8,
        SqlType::Bytea => DataType::Binary,
        SqlType::Date => DataType::Date32,
        SqlType::Time => DataType::Time64(TimeUnit::Microsecond),
        SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        SqlType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        SqlType::Array(inner) => DataType::new_list(arrow_type_of(inner), true),
    }
}

/// Everything a fragment needs to read or write one table.
#[derive(Debug, Clone)]
pub struct TableHandle {
    pub def: Arc<TableDef>,
    /// The visible columns as Arrow fields, in declaration order.
    pub schema: SchemaRef,
    pub layout: Arc<RowLayout>,
    /// Visible-column indices of the primary key; empty when rows use a hidden row id.
    pub key_columns: Vec<usize>,
    /// Positions in `key_columns` of the columns that decide a row's partition, when they are
    /// not the whole key (`WITH (partition_key = ...)`).
    pub partition_key: Option<Vec<usize>>,
    /// The indexes whose entries writers maintain (every index but the primary key's).
    pub secondary_indexes: Vec<SecondaryIndex>,
}

/// A secondary index as writers see it.
#[derive(Debug, Clone)]
pub struct SecondaryIndex {
    pub oid: u32,
    pub name: String,
    pub unique: bool,
    /// Visible-column indices of the indexed columns, in key order.
    pub columns: Vec<usize>,
}

impl TableHandle {
    pub fn new(def: Arc<TableDef>) -> Self {
        let fields: Vec<Field> = def
            .visible_columns()
            .map(|c| {
                let mut meta = HashMap::new();
                meta.insert(PG_TYPE_METADATA_KEY.to_string(), c.sql_type.pg_name());
                Field::new(&c.name, arrow_type_of(&c.sql_type), c.nullable).with_metadata(meta)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let slot_count = def.next_column_id() as usize;
        let mut slots = vec![None; slot_count];
        // Dropped columns keep their type so that scans can skip their stored values.
        for c in &def.columns {
            slots[c.id as usize] = Some(arrow_type_of(&c.sql_type));
        }
        let visible: Vec<usize> = def.visible_columns().map(|c| c.id as usize).collect();
        let key_columns: Vec<usize> = def
            .primary_key
            .iter()
            .filter_map(|id| visible.iter().position(|slot| *slot == *id as usize))
            .collect();
        let partition_key = (def.partition_columns() != def.primary_key).then(|| {
            def.partition_key
                .iter()
                .filter_map(|id| def.primary_key.iter().position(|k| k == id))
                .collect()
        });
        let secondary_indexes = def
            .indexes
            .iter()
            .filter(|i| !i.primary)
            .map(|i| SecondaryIndex {
                oid: i.oid,
                name: i.name.clone(),
                unique: i.unique,
                columns: i
                    .columns
                    .iter()
                    .filter_map(|id| visible.iter().position(|slot| *slot == *id as usize))
                    .collect(),
            })
            .collect();
        let layout = Arc::new(RowLayout::new(slots, visible, schema.clone()));
        TableHandle {
            def,
            schema,
            layout,
            key_columns,
            partition_key,
            secondary_indexes,
        }
    }

    /// The partition of the row whose key columns (`key_columns`' values, in key order) are at
    /// `row` and encode to `encoded_pk`.
    pub fn partition_of_row(
        &self,
        key_values: &[ArrayRef],
        row: usize,
        encoded_pk: &[u8],
    ) -> Result<u32, ExecError> {
        let partitions = self.partition_count();
        let Some(positions) = &self.partition_key else {
            return Ok(keys::partition_of(encoded_pk, partitions));
        };
        let columns: Vec<ArrayRef> = positions.iter().map(|p| key_values[*p].clone()).collect();
        let encoded = keys::encode_primary_key(&columns, row)?;
        Ok(keys::partition_of(&encoded, partitions))
    }

    /// Visible-column indices of the columns that decide a row's partition, in order (the
    /// primary key's, unless the table names a partition key); empty for a hidden row id.
    pub fn partition_key_columns(&self) -> Vec<usize> {
        match &self.partition_key {
            Some(positions) => positions.iter().map(|p| self.key_columns[*p]).collect(),
            None => self.key_columns.clone(),
        }
    }

    /// The schema with every column nullable: NOT NULL is checked by [`crate::TableWriter`],
    /// with PostgreSQL's error, before Arrow's own check could reject a batch.
    pub fn nullable_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ))
    }

    pub fn partition_count(&self) -> u32 {
        self.def.partitions.len() as u32
    }

    pub fn id(&self) -> u32 {
        self.def.id
    }

    /// `schema.name`, as errors name the table.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.def.schema, self.def.name)
    }

    pub fn has_hidden_row_id(&self) -> bool {
        self.key_columns.is_empty()
    }

    /// The name of the primary key constraint, as PostgreSQL would name it.
    pub fn primary_key_name(&self) -> String {
        match self.def.primary_index() {
            Some(index) => index.name.clone(),
            None => format!("{}_pkey", self.def.name),
        }
    }
}
