//! DDL: schemas, tables, views, ALTER TABLE and TRUNCATE (indexes are in `index.rs`). Outside a transaction block a catalog
//! change is durable when the statement returns. Inside a block it goes to the session's
//! pending catalog (`SessionMetaStore`), seen by this session only, and is published at COMMIT
//! together with the block's rows, or dropped by ROLLBACK.

use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, CreateTable, CreateView, ObjectName, ObjectType, SchemaName,
    Statement, Truncate,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use shoal_coord::{Catalog, ColumnDef, CoordError, IndexDef, MetaStore, ViewDef};
use shoal_planner::ddl::{ident_name, object_name, sql_type, table_from_create, NewTable};

use super::{Outcome, Session};
use crate::error::{ServerError, ServerResult};

impl Session {
    pub(super) fn create_table(&self, create: CreateTable) -> ServerResult<Outcome> {
        let NewTable {
            def: table,
            mut partitions,
            replicas,
            unique,
        } = table_from_create(&create)?;
        let replicas = replicas.unwrap_or(self.node.args.replication_factor);
        if !has_partitions_option(&create) {
            partitions = self.node.args.default_partitions;
        }
        let if_not_exists = create.if_not_exists;
        let placement = self.node.cluster.live_nodes();
        if placement.len() > 1 && partitions > 1 {
            refuse_unique_across_nodes(&table, &unique)?;
        }
        let result = self.meta.update(&mut |c| {
            c.create_table(table.clone(), partitions, &placement, replicas)?;
            // The table is empty: its unique indexes need no entries yet.
            for (name, columns) in &unique {
                let ids = columns
                    .iter()
                    .map(|name| {
                        table
                            .columns
                            .iter()
                            .find(|c| &c.name == name)
                            .map(|c| c.id)
                            .ok_or_else(|| CoordError::ColumnNotFound {
                                table: table.name.clone(),
                                column: name.clone(),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let index = IndexDef {
                    oid: 0,
                    name: unused_name(c, &table.schema, name),
                    columns: ids,
                    unique: true,
                    primary: false,
                    // A UNIQUE constraint, listed in pg_constraint as PostgreSQL lists it.
                    constraint_oid: Some(c.allocate_oid()),
                    descending: Vec::new(),
                };
                c.create_index(&table.schema, &table.name, index)?;
            }
            Ok(())
        });
        match result {
            Ok(_) => Ok(Outcome::tag("CREATE TABLE")),
            Err(CoordError::RelationExists(_)) if if_not_exists => Ok(Outcome::tag("CREATE TABLE")),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn create_schema(
        &self,
        name: &SchemaName,
        if_not_exists: bool,
    ) -> ServerResult<Outcome> {
        let name = match name {
            SchemaName::Simple(n) | SchemaName::NamedAuthorization(n, _) => object_name(n)?.1,
            SchemaName::UnnamedAuthorization(i) => ident_name(i),
        };
        match self.meta.update(&mut |c| c.create_schema(&name)) {
            Ok(_) => Ok(Outcome::tag("CREATE SCHEMA")),
            Err(CoordError::SchemaExists(_)) if if_not_exists => Ok(Outcome::tag("CREATE SCHEMA")),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn create_view(&self, view: CreateView) -> ServerResult<Outcome> {
        if view.materialized {
            return Err(ServerError::NotSupported("materialized views".into()));
        }
        let (schema, name) = object_name(&view.name)?;
        let query = view.query.to_string();
        // Plan it once now so that a broken view is refused at creation.
        self.plan_only(&Statement::Query(view.query.clone()))
            .await?;
        let def = ViewDef {
            oid: 0,
            schema,
            name,
            query,
            columns: view.columns.iter().map(|c| ident_name(&c.name)).collect(),
            row_type_oid: 0,
        };
        let or_replace = view.or_replace;
        self.node
            .meta
            .update(&mut |c| c.create_view(def.clone(), or_replace))?;
        Ok(Outcome::tag("CREATE VIEW"))
    }

    pub(super) fn drop(
        &self,
        object_type: ObjectType,
        if_exists: bool,
        names: &[ObjectName],
        cascade: bool,
    ) -> ServerResult<Outcome> {
        let tag = match object_type {
            ObjectType::Table => "DROP TABLE",
            ObjectType::View => "DROP VIEW",
            ObjectType::Schema => "DROP SCHEMA",
            other => return Err(ServerError::NotSupported(format!("DROP {other}"))),
        };
        for name in names {
            let mut dropped_tables = Vec::new();
            let result = match object_type {
                ObjectType::Table => {
                    let (schema, table) = object_name(name)?;
                    self.meta.update(&mut |c| {
                        dropped_tables = vec![c.drop_table(&schema, &table)?];
                        Ok(())
                    })
                }
                ObjectType::View => {
                    let (schema, view) = object_name(name)?;
                    self.meta.update(&mut |c| c.drop_view(&schema, &view))
                }
                _ => {
                    let schema = object_name(name)?.1;
                    self.meta.update(&mut |c| {
                        dropped_tables = c.drop_schema(&schema, cascade)?;
                        Ok(())
                    })
                }
            };
            match result {
                Ok(_) => {}
                Err(CoordError::RelationNotFound(_) | CoordError::SchemaNotFound(_))
                    if if_exists => {}
                Err(e) => return Err(e.into()),
            }
            if self.in_block() {
                // The drop may still roll back: keep the rows until COMMIT.
                self.dropped_in_block.lock().extend(dropped_tables);
            } else {
                self.reclaim(dropped_tables);
            }
        }
        Ok(Outcome::tag(tag))
    }

    /// Reclaims the rows of dropped tables in the background (they are already unreachable).
    pub(super) fn reclaim(&self, tables: Vec<u32>) {
        for id in tables {
            let store = self.node.store.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.drop_table_data(id) {
                    tracing::warn!(table = id, error = %e, "reclaiming a dropped table failed");
                }
            });
        }
    }

    pub(super) async fn alter_table(&self, alter: AlterTable) -> ServerResult<Outcome> {
        let (schema, table) = object_name(&alter.name)?;
        let exists = self.meta.catalog().table(&schema, &table).is_some();
        if !exists {
            if alter.if_exists {
                return Ok(Outcome::tag("ALTER TABLE"));
            }
            return Err(CoordError::RelationNotFound(table).into());
        }
        for op in alter.operations {
            match op {
                AlterTableOperation::AddColumn {
                    if_not_exists,
                    column_def,
                    ..
                } => {
                    let name = ident_name(&column_def.name);
                    let t = sql_type(&column_def.data_type)?;
                    let mut nullable = true;
                    let mut default = None;
                    for o in &column_def.options {
                        use datafusion::sql::sqlparser::ast::ColumnOption as O;
                        match &o.option {
                            O::NotNull => nullable = false,
                            O::Null => {}
                            O::Default(e) => default = Some(e.to_string()),
                            other => {
                                return Err(ServerError::NotSupported(format!(
                                    "ADD COLUMN with {other}"
                                )))
                            }
                        }
                    }
                    if !nullable
                        && default.is_none()
                        && self.table_has_rows(&schema, &table).await?
                    {
                        return Err(shoal_executor::ExecError::NotNullViolation {
                            table: table.clone(),
                            column: name,
                        }
                        .into());
                    }
                    let result = self.meta.update(&mut |c| {
                        let t_def = c.table_mut(&schema, &table)?;
                        if t_def.column(&name).is_some() {
                            return Err(CoordError::ColumnExists {
                                table: table.clone(),
                                column: name.clone(),
                            });
                        }
                        let id = t_def.next_column_id();
                        t_def.columns.push(ColumnDef {
                            id,
                            name: name.clone(),
                            sql_type: t.clone(),
                            nullable: true,
                            default: default.clone(),
                            dropped: false,
                        });
                        Ok(())
                    });
                    match result {
                        Err(CoordError::ColumnExists { .. }) if if_not_exists => continue,
                        other => {
                            other?;
                        }
                    }
                    // Existing rows get the default, as in PostgreSQL.
                    if let Some(d) = &default {
                        let sql = format!("UPDATE \"{schema}\".\"{table}\" SET \"{name}\" = {d}");
                        self.run_sql_internal(&sql).await?;
                    }
                    if !nullable {
                        self.meta.update(&mut |c| {
                            let t_def = c.table_mut(&schema, &table)?;
                            if let Some(col) = t_def
                                .columns
                                .iter_mut()
                                .find(|c| c.name == name && !c.dropped)
                            {
                                col.nullable = false;
                            }
                            Ok(())
                        })?;
                    }
                }
                AlterTableOperation::DropColumn {
                    column_names,
                    if_exists,
                    ..
                } => {
                    for column in column_names {
                        let column = ident_name(&column);
                        let mut dropped_indexes = Vec::new();
                        let result = self.meta.update(&mut |c| {
                            let t_def = c.table_mut(&schema, &table)?;
                            let col = t_def
                                .columns
                                .iter()
                                .find(|c| c.name == column && !c.dropped)
                                .map(|c| c.id)
                                .ok_or_else(|| CoordError::ColumnNotFound {
                                    table: table.clone(),
                                    column: column.clone(),
                                })?;
                            if t_def.primary_key.contains(&col) {
                                return Err(CoordError::InvalidDefinition(format!(
                                    "cannot drop column \"{column}\": it is part of the primary key"
                                )));
                            }
                            if let Some(c) = t_def.columns.iter_mut().find(|c| c.id == col) {
                                c.dropped = true;
                                c.name = format!("........pg.dropped.{col}........");
                            }
                            // As in PostgreSQL, the indexes on the column go with it.
                            let table_id = t_def.id;
                            dropped_indexes = t_def
                                .indexes
                                .iter()
                                .filter(|i| i.columns.contains(&col))
                                .map(|i| (table_id, i.oid))
                                .collect();
                            t_def.indexes.retain(|i| !i.columns.contains(&col));
                            Ok(())
                        });
                        match result {
                            Err(CoordError::ColumnNotFound { .. }) if if_exists => {}
                            other => {
                                other?;
                            }
                        }
                        for (table_id, index) in dropped_indexes {
                            self.discard_entries(table_id, index).await?;
                        }
                    }
                }
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    let (old, new) = (ident_name(&old_column_name), ident_name(&new_column_name));
                    self.meta.update(&mut |c| {
                        let t_def = c.table_mut(&schema, &table)?;
                        if t_def.column(&new).is_some() {
                            return Err(CoordError::ColumnExists {
                                table: table.clone(),
                                column: new.clone(),
                            });
                        }
                        let col = t_def
                            .columns
                            .iter_mut()
                            .find(|c| c.name == old && !c.dropped)
                            .ok_or_else(|| CoordError::ColumnNotFound {
                                table: table.clone(),
                                column: old.clone(),
                            })?;
                        col.name = new.clone();
                        Ok(())
                    })?;
                }
                AlterTableOperation::RenameTable { table_name } => {
                    let new_name = match &table_name {
                        datafusion::sql::sqlparser::ast::RenameTableNameKind::To(n)
                        | datafusion::sql::sqlparser::ast::RenameTableNameKind::As(n) => {
                            object_name(n)?.1
                        }
                    };
                    self.meta.update(&mut |c| {
                        if c.table(&schema, &new_name).is_some()
                            || c.view(&schema, &new_name).is_some()
                            || c.index(&schema, &new_name).is_some()
                        {
                            return Err(CoordError::RelationExists(new_name.clone()));
                        }
                        c.table_mut(&schema, &table)?.name = new_name.clone();
                        Ok(())
                    })?;
                }
                other => {
                    return Err(ServerError::NotSupported(format!(
                        "ALTER TABLE ... {other}"
                    )))
                }
            }
        }
        Ok(Outcome::tag("ALTER TABLE"))
    }

    async fn table_has_rows(&self, schema: &str, table: &str) -> ServerResult<bool> {
        let sql = format!("SELECT 1 FROM \"{schema}\".\"{table}\" LIMIT 1");
        let stmt = parse_one(&sql)?;
        match self.run_dml_or_query(stmt, None).await? {
            Outcome::Rows { stream, .. } => {
                let batches: Vec<_> = futures::StreamExt::collect::<Vec<_>>(stream).await;
                Ok(batches.into_iter().flatten().any(|b| b.num_rows() > 0))
            }
            _ => Ok(false),
        }
    }

    async fn run_sql_internal(&self, sql: &str) -> ServerResult<()> {
        let stmt = parse_one(sql)?;
        self.run_dml_or_query(stmt, None).await?;
        Ok(())
    }

    /// TRUNCATE deletes every row inside the statement's transaction, so it is atomic and
    /// rolls back like any delete.
    pub(super) async fn truncate(&self, t: Truncate) -> ServerResult<Outcome> {
        for target in &t.table_names {
            let (schema, table) = object_name(&target.name)?;
            if self.meta.catalog().table(&schema, &table).is_none() {
                return Err(CoordError::RelationNotFound(table).into());
            }
            self.run_sql_internal(&format!("DELETE FROM \"{schema}\".\"{table}\""))
                .await?;
        }
        Ok(Outcome::tag("TRUNCATE TABLE"))
    }
}

/// A UNIQUE constraint is checked by the node that writes a row, against the rows that node
/// holds: across nodes it holds only when its columns include the partition key, so that
/// rows with equal values share a partition (Citus asks the same of distributed tables).
pub(super) fn refuse_unique_across_nodes(
    table: &shoal_coord::TableDef,
    unique: &[(String, Vec<String>)],
) -> ServerResult<()> {
    let key_names: Vec<&str> = table
        .partition_columns()
        .iter()
        .filter_map(|id| table.columns.iter().find(|c| c.id == *id))
        .map(|c| c.name.as_str())
        .collect();
    for (name, columns) in unique {
        if key_names.is_empty() || !key_names.iter().all(|k| columns.iter().any(|c| c == k)) {
            return Err(ServerError::NotSupported(format!(
                "UNIQUE constraint \"{name}\" on a table spread across nodes: its columns must \
                 include the partition key ({})",
                match key_names.is_empty() {
                    true => "the table has no primary key".to_string(),
                    false => key_names.join(", "),
                }
            )));
        }
    }
    Ok(())
}

/// `name`, or `name1`, `name2`, ... when a relation of the schema has it (as PostgreSQL names
/// constraint indexes).
fn unused_name(catalog: &Catalog, schema: &str, name: &str) -> String {
    let mut candidate = name.to_string();
    let mut n = 0;
    while catalog.relation_exists(schema, &candidate) {
        n += 1;
        candidate = format!("{name}{n}");
    }
    candidate
}

fn has_partitions_option(create: &CreateTable) -> bool {
    create
        .table_options
        .to_string()
        .to_lowercase()
        .contains("partitions")
}

pub(crate) fn parse_one(sql: &str) -> ServerResult<Statement> {
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| ServerError::Syntax(e.to_string()))?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        _ => Err(ServerError::Internal(format!(
            "expected one statement in {sql}"
        ))),
    }
}
