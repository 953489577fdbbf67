//! CREATE INDEX and DROP INDEX. An index is published in the catalog, then its entries are
//! written for every stored row in the statement's transaction (a unique index refuses
//! duplicates with 23505 and is taken back out of the catalog). Writers maintain the entries
//! of every index their catalog snapshot shows; see the README for the one race this leaves.
//! Inside a transaction block both the catalog change and the entries roll back together.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{CreateIndex, Expr, ObjectName};
use shoal_coord::{CoordError, IndexDef, MetaStore, SqlType};
use shoal_executor::{build_index, remove_index_entries, TableHandle};
use shoal_planner::ddl::{ident_name, object_name};
use shoal_storage::keys;

use super::{Outcome, Session};
use crate::error::{ServerError, ServerResult};

impl Session {
    pub(super) async fn create_index(&self, create: CreateIndex) -> ServerResult<Outcome> {
        let (schema, table) = object_name(&create.table_name)?;
        refuse_unsupported(&create)?;
        // CONCURRENTLY builds the same index; like PostgreSQL, it refuses to run in a block.
        if create.concurrently && self.in_block() {
            return Err(ServerError::InsideBlock("CREATE INDEX CONCURRENTLY"));
        }
        let catalog = self.meta.catalog();
        let def = catalog
            .table(&schema, &table)
            .ok_or_else(|| CoordError::RelationNotFound(table.clone()))?;
        // The build reads the table's rows here; other nodes' partitions are out of reach.
        let local = self.node.cluster.local_node();
        if def.partitions.iter().any(|p| p.leader != local) {
            return Err(ServerError::NotSupported(
                "CREATE INDEX on a table whose partitions other nodes lead".into(),
            ));
        }
        let mut columns = Vec::new();
        let mut descending = Vec::new();
        for c in &create.columns {
            let Expr::Identifier(ident) = &c.column.expr else {
                return Err(ServerError::NotSupported("indexes on expressions".into()));
            };
            let name = ident_name(ident);
            let column = def
                .column(&name)
                .ok_or_else(|| CoordError::ColumnNotFound {
                    table: table.clone(),
                    column: name.clone(),
                })?;
            if matches!(
                column.sql_type,
                SqlType::Array(_) | SqlType::Interval | SqlType::Json | SqlType::Jsonb
            ) {
                return Err(ServerError::NotSupported(format!(
                    "indexes on {} columns",
                    column.sql_type.pg_name()
                )));
            }
            columns.push(column.id);
            descending.push(c.column.options.asc == Some(false));
        }
        let name = match &create.name {
            Some(n) => object_name(n)?.1,
            None => String::new(),
        };
        if create.if_not_exists && catalog.index(&schema, &name).is_some() {
            return Ok(Outcome::tag("CREATE INDEX"));
        }
        let wanted = IndexDef {
            oid: 0,
            name,
            columns,
            unique: create.unique,
            primary: false,
            constraint_oid: None,
            descending,
        };
        let mut created = None;
        self.meta.update(&mut |c| {
            created = Some(c.create_index(&schema, &table, wanted.clone())?);
            Ok(())
        })?;
        let index = created.ok_or_else(|| ServerError::Internal("index not created".into()))?;
        let catalog = self.meta.catalog();
        let def = catalog
            .table(&schema, &table)
            .ok_or_else(|| CoordError::RelationNotFound(table.clone()))?;
        let handle = TableHandle::new(Arc::new(def.clone()));
        let (txn, implicit) = self.statement_txn()?;
        let (table_id, oid) = (def.id, index.oid);
        let built = tokio::task::spawn_blocking(move || -> ServerResult<()> {
            build_index(&handle, oid, &txn)?;
            // Writers that read the fence before this commit and commit after it fail with
            // 40001 instead of committing rows without entries.
            txn.put(&keys::fence_key(table_id), b"index")?;
            if implicit {
                txn.commit()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?;
        if let Err(e) = built {
            if !self.in_block() {
                self.take_back_index(&schema, &index.name, table_id, oid);
            }
            return Err(e);
        }
        Ok(Outcome::tag("CREATE INDEX"))
    }

    /// Undoes a published index whose build failed: out of the catalog, and its entries (some
    /// concurrent writer may have added a few) reclaimed.
    fn take_back_index(&self, schema: &str, name: &str, table: u32, index: u32) {
        if let Err(e) = self
            .meta
            .update(&mut |c| c.drop_index(schema, name).map(|_| ()))
        {
            tracing::warn!(index = name, error = %e, "taking back a failed index failed");
        }
        self.discard_entries_later(table, index);
    }

    pub(super) async fn drop_indexes(
        &self,
        if_exists: bool,
        names: &[ObjectName],
    ) -> ServerResult<Outcome> {
        for name in names {
            let (schema, index) = object_name(name)?;
            let mut dropped = None;
            let result = self.meta.update(&mut |c| {
                dropped = Some(c.drop_index(&schema, &index)?);
                Ok(())
            });
            match result {
                Err(CoordError::RelationNotFound(_)) if if_exists => continue,
                other => other?,
            };
            if let Some((table, oid)) = dropped {
                self.discard_entries(table, oid).await?;
            }
        }
        Ok(Outcome::tag("DROP INDEX"))
    }

    /// Removes the entries of an index that left the catalog: inside a block, in the block's
    /// transaction (a ROLLBACK brings the index back with its entries); otherwise in the
    /// background, since nothing can reach them any more.
    pub(super) async fn discard_entries(&self, table: u32, index: u32) -> ServerResult<()> {
        if !self.in_block() {
            self.discard_entries_later(table, index);
            return Ok(());
        }
        let (txn, _) = self.statement_txn()?;
        tokio::task::spawn_blocking(move || remove_index_entries(table, index, &txn))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
        Ok(())
    }

    fn discard_entries_later(&self, table: u32, index: u32) {
        let store = self.node.store.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.drop_index_data(table, index) {
                tracing::warn!(table, index, error = %e, "reclaiming a dropped index failed");
            }
        });
    }
}

/// Index features Shoal does not have yet, refused with 0A000 rather than ignored.
fn refuse_unsupported(create: &CreateIndex) -> ServerResult<()> {
    let unsupported = if create.predicate.is_some() {
        Some("partial indexes (CREATE INDEX ... WHERE)")
    } else if !create.include.is_empty() {
        Some("INCLUDE columns")
    } else if create.nulls_distinct == Some(false) {
        Some("NULLS NOT DISTINCT")
    } else if create.columns.iter().any(|c| c.operator_class.is_some()) {
        Some("operator classes")
    } else if create
        .columns
        .iter()
        .any(|c| c.column.options.nulls_first.is_some())
    {
        Some("NULLS FIRST / NULLS LAST in an index")
    } else {
        None
    };
    if let Some(what) = unsupported {
        return Err(ServerError::NotSupported(what.into()));
    }
    match &create.using {
        None => Ok(()),
        Some(method) if method.to_string().eq_ignore_ascii_case("btree") => Ok(()),
        Some(method) => Err(ServerError::NotSupported(format!(
            "index access method {method}"
        ))),
    }
}
