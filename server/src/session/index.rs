//! CREATE INDEX and DROP INDEX. An index is published in the catalog, then its entries are
//! written for every stored row in the statement's transaction (a unique index refuses
//! duplicates with 23505 and is taken back out of the catalog). Writers maintain the entries
//! of every index their catalog snapshot shows; see the README for the one race this leaves.
//! Inside a transaction block both the catalog change and the entries roll back together.
//! In a cluster each node leading partitions of the table writes the entries of its rows in
//! a part of the statement's transaction, which commits on every node at once.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{CreateIndex, Expr, ObjectName};
use shoal_coord::{CoordError, IndexDef, MetaStore, NodeId, SqlType};
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
        let local = self.node.cluster.local_node();
        let others: BTreeSet<NodeId> = def
            .partitions
            .iter()
            .map(|p| p.leader)
            .filter(|l| *l != local)
            .collect();
        // Other nodes build from the catalog they share, which a block's DDL is not part of
        // until it commits.
        if !others.is_empty() && self.in_block() {
            return Err(ServerError::NotSupported(
                "CREATE INDEX inside a transaction block on a table whose partitions other \
                 nodes lead"
                    .into(),
            ));
        }
        let mut columns = Vec::new();
        let mut column_names = Vec::new();
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
            column_names.push(name);
            descending.push(c.column.options.asc == Some(false));
        }
        let name = match &create.name {
            Some(n) => object_name(n)?.1,
            None => String::new(),
        };
        if create.if_not_exists && catalog.index(&schema, &name).is_some() {
            return Ok(Outcome::tag("CREATE INDEX"));
        }
        if create.unique && !others.is_empty() {
            super::ddl::refuse_unique_across_nodes(def, &[(name.clone(), column_names)])?;
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
        let local_txn = txn.clone();
        let built = tokio::task::spawn_blocking(move || -> ServerResult<()> {
            build_index(&handle, oid, &local_txn)?;
            // Writers that read the fence before this commit and commit after it fail with
            // 40001 instead of committing rows without entries.
            local_txn.put(&keys::fence_key(table_id), b"index")?;
            Ok(())
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()));
        let built = match (built, &self.node.remote) {
            (Ok(Ok(())), Some(remote)) if !others.is_empty() => {
                let handle = TableHandle::new(Arc::new(def.clone()));
                let builds = others
                    .iter()
                    .map(|node| remote.build_index_at(&txn, *node, &handle, oid));
                futures::future::join_all(builds)
                    .await
                    .into_iter()
                    .try_for_each(|b| b.map(|_| ()))
                    .map_err(ServerError::from)
            }
            (built, _) => built.and_then(|b| b),
        };
        let built = match (built, implicit) {
            (Ok(()), true) => self.commit_txn(txn).await,
            (Err(e), true) => {
                self.rollback_txn(txn).await;
                Err(e)
            }
            (built, false) => built,
        };
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
