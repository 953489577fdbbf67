//! `ShoalTable`: a Shoal table as a DataFusion `TableProvider`. `scan` turns the pushed-down
//! projection, filters and limit into a `PartitionScanExec`: equality (or IN-list) predicates
//! on every primary-key column become point lookups in only the partitions that hold those keys;
//! otherwise every partition becomes one scan fragment. Filters stay in the plan above the scan
//! (they are "inexact" here), so pruning never changes an answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use shoal_coord::{NodeId, TableDef};
use shoal_executor::{
    exact_cast, point_key, BulkSink, ConflictAction, ExecError, Forwarding, IndexLookup, KeyLookup,
    PartitionScanExec, RemoteFragments, ReturningSink, RowIdAllocator, TableHandle, TableWriteExec,
    WriteKind, ROW_KEY_COLUMN,
};
use shoal_storage::{keys, Isolation, Store, Txn};

/// Table names starting with this resolve to the table of that id *with* the row-key column;
/// the DML planner uses it for UPDATE and DELETE.
pub const DML_TABLE_PREFIX: &str = "__shoal_dml_";

/// The transaction a statement runs in, carried in the DataFusion session config so that scans
/// read through it (and so see the transaction's own writes).
#[derive(Clone)]
pub struct StatementTxn(pub Arc<Txn>);

/// Upper bound on the keys a point lookup enumerates before falling back to a scan.
const MAX_LOOKUP_KEYS: usize = 1024;

/// How the statement's writes treat conflicts and where RETURNING rows go; set per statement
/// in the session config next to [`StatementTxn`].
#[derive(Clone, Default)]
pub struct DmlOptions {
    pub on_conflict_do_nothing: bool,
    pub returning: Option<ReturningSink>,
    /// `ON CONFLICT DO UPDATE`: proposed rows whose key exists are collected here.
    pub conflicts: Option<ReturningSink>,
    /// COPY outside a transaction block: inserted rows go to this bulk load.
    pub bulk: Option<BulkSink>,
    /// The statement commits on its own (no transaction block): in a cluster, an INSERT,
    /// UPDATE or DELETE that touches only one other node's partitions commits there at once.
    pub autocommit: bool,
}

#[derive(Debug, Clone)]
pub struct ShoalTable {
    handle: TableHandle,
    /// The node planning the statement.
    local_node: NodeId,
    /// How this node reaches other nodes (cluster mode).
    remote: Option<Arc<RemoteFragments>>,
    with_row_key: bool,
    schema: SchemaRef,
    store: Store,
    row_ids: Arc<RowIdAllocator>,
    /// DEFAULT expressions by column name, applied by DataFusion's INSERT planning.
    defaults: HashMap<String, Expr>,
}

fn statement_txn(state: &dyn Session) -> DfResult<Arc<Txn>> {
    state
        .config()
        .get_extension::<StatementTxn>()
        .map(|t| t.0.clone())
        .ok_or_else(|| DataFusionError::Plan("statement has no transaction".into()))
}

fn dml_options(state: &dyn Session) -> DmlOptions {
    state
        .config()
        .get_extension::<DmlOptions>()
        .map(|o| o.as_ref().clone())
        .unwrap_or_default()
}

impl ShoalTable {
    pub fn new(
        def: Arc<TableDef>,
        local_node: NodeId,
        remote: Option<Arc<RemoteFragments>>,
        store: Store,
        row_ids: Arc<RowIdAllocator>,
        with_row_key: bool,
    ) -> Self {
        let handle = TableHandle::new(def);
        let schema = if with_row_key {
            let mut fields = handle.schema.fields().to_vec();
            fields.push(Arc::new(Field::new(
                ROW_KEY_COLUMN,
                DataType::Binary,
                false,
            )));
            Arc::new(Schema::new(fields))
        } else {
            handle.schema.clone()
        };
        ShoalTable {
            handle,
            local_node,
            remote,
            with_row_key,
            schema,
            store,
            row_ids,
            defaults: HashMap::new(),
        }
    }

    /// This table read with each row's storage key after the visible columns (the input of
    /// UPDATE and DELETE).
    pub(crate) fn with_row_keys(&self) -> ShoalTable {
        let mut keyed = ShoalTable::new(
            self.handle.def.clone(),
            self.local_node,
            self.remote.clone(),
            self.store.clone(),
            self.row_ids.clone(),
            true,
        );
        keyed.defaults = self.defaults.clone();
        keyed
    }

    pub(crate) fn id(&self) -> u32 {
        self.handle.id()
    }

    pub(crate) fn visible_fields(&self) -> datafusion::arrow::datatypes::Fields {
        self.handle.schema.fields().clone()
    }

    /// Parses the columns' DEFAULT expressions with `ctx` (once per table lookup).
    pub fn with_defaults(mut self, ctx: &datafusion::prelude::SessionContext) -> DfResult<Self> {
        let empty = DFSchema::empty();
        for c in self.handle.def.visible_columns() {
            if let Some(sql) = &c.default {
                let expr = ctx.parse_sql_expr(sql, &empty)?;
                self.defaults.insert(c.name.clone(), expr);
            }
        }
        Ok(self)
    }

    /// Values columns are restricted to by `filters` (`c = v` or `c IN (..)`), by column index.
    fn equalities(&self, filters: &[Expr]) -> BTreeMap<usize, Vec<ScalarValue>> {
        let mut per_column: BTreeMap<usize, Vec<ScalarValue>> = BTreeMap::new();
        for f in filters {
            for conjunct in split_conjunction(f) {
                if let Some((name, values)) = equality_values(conjunct) {
                    if let Ok(idx) = self.handle.schema.index_of(&name) {
                        per_column.insert(idx, values);
                    }
                }
            }
        }
        per_column
    }

    /// Values each primary-key column is restricted to by `filters`, when all of them are.
    fn key_values(&self, filters: &[Expr]) -> Option<Vec<Vec<ScalarValue>>> {
        if self.handle.key_columns.is_empty() {
            return None;
        }
        let per_column = self.equalities(filters);
        self.handle
            .key_columns
            .iter()
            .map(|c| per_column.get(c).cloned())
            .collect()
    }

    /// Entry ranges of the secondary index whose leading columns `filters` restrict the most
    /// (at least the first), one range per combination of values.
    fn index_lookup(&self, filters: &[Expr]) -> Option<IndexLookup> {
        let per_column = self.equalities(filters);
        let (index, values) = self
            .handle
            .secondary_indexes
            .iter()
            .map(|i| {
                let values: Vec<&Vec<ScalarValue>> =
                    i.columns.iter().map_while(|c| per_column.get(c)).collect();
                (i, values)
            })
            .filter(|(_, values)| !values.is_empty())
            .max_by_key(|(_, values)| values.len())?;
        let combos: usize = values.iter().map(|v| v.len()).product();
        if combos > MAX_LOOKUP_KEYS {
            return None;
        }
        let types: Vec<&DataType> = index
            .columns
            .iter()
            .map(|c| self.handle.schema.field(*c).data_type())
            .collect();
        let mut ranges = Vec::with_capacity(combos);
        for arrays in exact_combinations(&values, &types) {
            let mut start = keys::index_start(self.handle.id(), index.oid);
            for array in &arrays {
                start.push(0x01);
                keys::encode_key_value(array, 0, &mut start).ok()?;
            }
            let mut end = start.clone();
            end.push(0xFF);
            ranges.push((start, end));
        }
        // `IN (1, 1)` names one value twice; its rows are still read once.
        ranges.sort();
        ranges.dedup();
        Some(IndexLookup {
            index: index.name.clone(),
            ranges,
            per_partition: false,
        })
    }

    /// Storage keys for every combination of key values, grouped by partition.
    fn lookups(&self, values: Vec<Vec<ScalarValue>>) -> Option<Vec<KeyLookup>> {
        let combos: usize = values.iter().map(|v| v.len()).product();
        if combos == 0 || combos > MAX_LOOKUP_KEYS {
            return None;
        }
        let mut by_partition: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        // A combination holding a value no key can have (see `point_key`) reads nothing.
        for combination in combinations(&values) {
            if let Some(k) = point_key(&self.handle, &combination) {
                by_partition.entry(k.partition).or_default().push(k.key);
            }
        }
        Some(
            by_partition
                .into_iter()
                .map(|(partition, mut keys)| {
                    // `IN (1, 1)` names one key twice; its row is still read once.
                    keys.sort();
                    keys.dedup();
                    KeyLookup { partition, keys }
                })
                .collect(),
        )
    }
}

/// Every combination of one value per column, each cast exactly to its column's type.
/// Combinations holding a value that cannot match (see [`exact_cast`]) are left out.
fn exact_combinations(values: &[&Vec<ScalarValue>], types: &[&DataType]) -> Vec<Vec<ArrayRef>> {
    let cast: Vec<Vec<ArrayRef>> = values
        .iter()
        .zip(types)
        .map(|(column, t)| column.iter().filter_map(|v| exact_cast(v, t)).collect())
        .collect();
    combinations(&cast)
}

/// Every combination of one value per column.
fn combinations<T: Clone>(columns: &[Vec<T>]) -> Vec<Vec<T>> {
    let mut combinations: Vec<Vec<T>> = vec![Vec::new()];
    for column in columns {
        combinations = combinations
            .into_iter()
            .flat_map(|prefix| {
                column.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v.clone());
                    next
                })
            })
            .collect();
    }
    combinations
}

fn split_conjunction(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::And => {
            let mut v = split_conjunction(&b.left);
            v.extend(split_conjunction(&b.right));
            v
        }
        other => vec![other],
    }
}

fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => literal(&c.expr).and_then(|v| v.cast_to(c.field.data_type()).ok()),
        _ => None,
    }
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) => Some(c.name.clone()),
        _ => None,
    }
}

/// `col = literal`, `literal = col` or `col IN (literals)`.
fn equality_values(e: &Expr) -> Option<(String, Vec<ScalarValue>)> {
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => {
            if let (Some(c), Some(v)) = (column_name(&b.left), literal(&b.right)) {
                return Some((c, vec![v]));
            }
            if let (Some(v), Some(c)) = (literal(&b.left), column_name(&b.right)) {
                return Some((c, vec![v]));
            }
            None
        }
        Expr::BinaryExpr(b) if b.op == Operator::Or => {
            // DataFusion turns short IN lists into OR chains.
            let (lc, mut lv) = equality_values(&b.left)?;
            let (rc, rv) = equality_values(&b.right)?;
            if lc != rc {
                return None;
            }
            lv.extend(rv);
            Some((lc, lv))
        }
        Expr::InList(l) if !l.negated => {
            let c = column_name(&l.expr)?;
            let values: Option<Vec<ScalarValue>> = l.list.iter().map(literal).collect();
            Some((c, values?))
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for ShoalTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let txn = statement_txn(state)?;
        let visible = self.handle.schema.fields().len();
        let requested: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let with_row_key = self.with_row_key && requested.contains(&visible);
        let columns: Vec<usize> = requested.iter().copied().filter(|i| *i < visible).collect();
        let lookups = self.key_values(filters).and_then(|v| self.lookups(v));
        let read: Vec<u32> = match &lookups {
            Some(lookups) => lookups.iter().map(|l| l.partition).collect(),
            None => (0..self.handle.partition_count()).collect(),
        };
        let remote = self.led_elsewhere(&read);
        // Each node's index holds the entries of the rows it leads: with partitions on other
        // nodes the lookup runs per partition, at each partition's leader.
        let index_lookup = match lookups {
            None => self.index_lookup(filters).map(|lookup| IndexLookup {
                per_partition: !remote.is_empty(),
                ..lookup
            }),
            _ => None,
        };
        // Other nodes read at snapshots of their own: one snapshot for the whole transaction
        // cannot be kept across nodes yet.
        if !remote.is_empty() && txn.isolation().ok() == Some(Isolation::RepeatableRead) {
            return Err(DataFusionError::External(Box::new(
                ExecError::PartitionsElsewhere {
                    table: self.handle.qualified_name(),
                    local_node: self.local_node,
                    partitions: format!("{} (REPEATABLE READ)", remote.join(", ")),
                },
            )));
        }
        let limit = if filters.is_empty() { limit } else { None };
        let mut scan = PartitionScanExec::new(
            self.handle.clone(),
            txn,
            (0..self.handle.partition_count()).collect(),
            lookups,
            columns.clone(),
            with_row_key,
            limit,
        );
        if let Some(lookup) = index_lookup {
            scan = scan.with_index_lookup(lookup);
        }
        // The scan emits the requested visible columns then the key; reorder if asked otherwise.
        let natural: Vec<usize> = columns
            .iter()
            .copied()
            .chain(with_row_key.then_some(visible))
            .collect();
        if natural == requested {
            return Ok(Arc::new(scan));
        }
        let scan_schema = scan.schema();
        let exprs = requested
            .iter()
            .map(|r| {
                let pos = natural.iter().position(|n| n == r).unwrap_or(0);
                let name = scan_schema.field(pos).name().clone();
                (
                    Arc::new(datafusion::physical_expr::expressions::Column::new(
                        &name, pos,
                    )) as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                    name,
                )
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(ProjectionExec::try_new(exprs, Arc::new(scan))?))
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} is not supported"
            )));
        }
        let options = dml_options(state);
        if options.bulk.is_some() {
            return self.writer(state, input, WriteKind::BulkInsert);
        }
        let action = if options.conflicts.is_some() {
            ConflictAction::SetAside
        } else if options.on_conflict_do_nothing {
            ConflictAction::DoNothing
        } else {
            ConflictAction::Error
        };
        self.writer(state, input, WriteKind::Insert(action))
    }
}

impl ShoalTable {
    /// Of `partitions`, those another node leads, as `partition (node N)`.
    fn led_elsewhere(&self, partitions: &[u32]) -> Vec<String> {
        partitions
            .iter()
            .filter_map(|p| self.handle.def.partitions.get(*p as usize))
            .filter(|p| p.leader != self.local_node)
            .map(|p| format!("{} (node {})", p.index, p.leader))
            .collect()
    }

    /// `input`'s rows written to this table as `kind` says.
    pub(crate) fn writer(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        kind: WriteKind,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let options = dml_options(state);
        // Bulk loads (COPY outside a transaction block) load only this node's partitions.
        let forwardable = !matches!(kind, WriteKind::BulkInsert);
        let forward = self
            .remote
            .clone()
            .filter(|_| forwardable)
            .map(|remote| Forwarding {
                remote,
                autocommit: options.autocommit,
            });
        Ok(Arc::new(TableWriteExec::new(
            input,
            self.handle.clone(),
            statement_txn(state)?,
            self.store.clone(),
            self.row_ids.clone(),
            kind,
            options.returning,
            options.conflicts,
            options.bulk,
            self.local_node,
            forward,
        )))
    }
}
