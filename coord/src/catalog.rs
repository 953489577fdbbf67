//! The catalog document: every schema, table, view and user, plus each table's partition map.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{CoordError, NodeId, SqlType};

/// The whole metadata of a database at one version. Immutable once published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    /// Bumped on every successful update; lets caches tell snapshots apart.
    pub version: u64,
    pub next_table_id: u32,
    pub schemas: BTreeMap<String, SchemaDef>,
    pub tables: BTreeMap<u32, TableDef>,
    pub views: BTreeMap<String, ViewDef>,
    pub users: BTreeMap<String, UserDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaDef {
    pub name: String,
    pub oid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Physical slot in the stored row; never reused, so dropped columns keep their slot.
    pub id: u32,
    pub name: String,
    pub sql_type: SqlType,
    pub nullable: bool,
    /// The DEFAULT expression as SQL text, evaluated at insert time.
    pub default: Option<String>,
    pub dropped: bool,
}

/// One partition of a table: who leads it and who follows, and the configuration epoch that
/// fences a deposed leader (the replication issue bumps it on every change).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionDef {
    pub index: u32,
    pub leader: NodeId,
    pub followers: Vec<NodeId>,
    pub epoch: u64,
    /// Set while the partition moves to this node: its leader takes no writes to it.
    #[serde(default)]
    pub moving_to: Option<NodeId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableDef {
    pub id: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Column ids of the primary key, in key order. Empty: rows are keyed by a hidden row id.
    pub primary_key: Vec<u32>,
    /// Column ids, a subset of the primary key, whose values decide a row's partition
    /// (`WITH (partition_key = '...')`). Empty: the whole primary key.
    #[serde(default)]
    pub partition_key: Vec<u32>,
    pub partitions: Vec<PartitionDef>,
    /// The table's indexes as clients see them in pg_index: today only the primary key's,
    /// whose entries are the row keys themselves.
    #[serde(default)]
    pub indexes: Vec<IndexDef>,
    /// The OID of the table's row type in pg_type; its array type is the next OID. 0 for a
    /// table created before row types were allocated.
    #[serde(default)]
    pub row_type_oid: u32,
    /// Copies of each partition the table asks for, the leader's included; a cluster with
    /// fewer live nodes keeps one per node, and adds the missing ones as nodes come (1 for a
    /// table created before replication).
    #[serde(default = "one_replica")]
    pub replicas: usize,
}

fn one_replica() -> usize {
    1
}

/// An index of a table. Its name lives in the schema's relation namespace, as in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    pub oid: u32,
    pub name: String,
    /// Column ids, in key order.
    pub columns: Vec<u32>,
    pub unique: bool,
    pub primary: bool,
    /// The OID of the constraint the index enforces (PRIMARY KEY), if any.
    pub constraint_oid: Option<u32>,
    /// Per column: declared DESC. Entries are stored ascending either way; it is kept for
    /// pg_index and pg_get_indexdef.
    #[serde(default)]
    pub descending: Vec<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewDef {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// The view's query, as normalized SQL text.
    pub query: String,
    /// Column names given in `CREATE VIEW v (a, b)`, if any.
    pub columns: Vec<String>,
    /// The OID of the view's row type, as for [`TableDef::row_type_oid`].
    #[serde(default)]
    pub row_type_oid: u32,
}

/// A role that may log in. The password is kept only as a SCRAM-SHA-256 salted hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDef {
    pub name: String,
    pub oid: u32,
    pub superuser: bool,
    pub scram_salt: Vec<u8>,
    pub scram_salted_password: Vec<u8>,
    pub scram_iterations: u32,
}

/// First OID handed to user objects, as in PostgreSQL (`FirstNormalObjectId`).
pub const FIRST_USER_OID: u32 = 16384;

impl Default for Catalog {
    fn default() -> Self {
        let mut schemas = BTreeMap::new();
        schemas.insert(
            "public".to_string(),
            SchemaDef {
                name: "public".into(),
                oid: 2200,
            },
        );
        Catalog {
            version: 0,
            next_table_id: FIRST_USER_OID,
            schemas,
            tables: BTreeMap::new(),
            views: BTreeMap::new(),
            users: BTreeMap::new(),
        }
    }
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{schema}.{name}")
}

impl Catalog {
    /// Hands out a fresh object id (tables, views, schemas and users share one counter).
    pub fn allocate_oid(&mut self) -> u32 {
        let oid = self.next_table_id;
        self.next_table_id += 1;
        oid
    }

    /// Two OIDs for a relation's row type and its array type, as PostgreSQL allocates them
    /// right after the relation's own; returns the first.
    fn allocate_row_type(&mut self) -> u32 {
        let row_type = self.allocate_oid();
        self.allocate_oid();
        row_type
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&TableDef> {
        self.tables
            .values()
            .find(|t| t.schema == schema && t.name == name)
    }

    pub fn table_by_id(&self, id: u32) -> Option<&TableDef> {
        self.tables.get(&id)
    }

    /// The index with this OID, with its table.
    pub fn index_by_oid(&self, oid: u32) -> Option<(&TableDef, &IndexDef)> {
        self.tables
            .values()
            .find_map(|t| t.indexes.iter().find(|i| i.oid == oid).map(|i| (t, i)))
    }

    pub fn view(&self, schema: &str, name: &str) -> Option<&ViewDef> {
        self.views.get(&qualified(schema, name))
    }

    pub fn relation_exists(&self, schema: &str, name: &str) -> bool {
        self.table(schema, name).is_some()
            || self.view(schema, name).is_some()
            || self.index(schema, name).is_some()
    }

    /// The index called `name` in `schema`, with its table.
    pub fn index(&self, schema: &str, name: &str) -> Option<(&TableDef, &IndexDef)> {
        self.tables
            .values()
            .filter(|t| t.schema == schema)
            .find_map(|t| t.indexes.iter().find(|i| i.name == name).map(|i| (t, i)))
    }

    pub fn create_schema(&mut self, name: &str) -> Result<(), CoordError> {
        if self.schemas.contains_key(name)
            || ["pg_catalog", "information_schema", "shoal"].contains(&name)
        {
            return Err(CoordError::SchemaExists(name.into()));
        }
        let oid = self.allocate_oid();
        self.schemas.insert(
            name.into(),
            SchemaDef {
                name: name.into(),
                oid,
            },
        );
        Ok(())
    }

    /// Drops a schema; with `cascade`, its tables and views go too. Returns the dropped table ids
    /// so that storage can reclaim their rows.
    pub fn drop_schema(&mut self, name: &str, cascade: bool) -> Result<Vec<u32>, CoordError> {
        if !self.schemas.contains_key(name) {
            return Err(CoordError::SchemaNotFound(name.into()));
        }
        let tables: Vec<u32> = self
            .tables
            .values()
            .filter(|t| t.schema == name)
            .map(|t| t.id)
            .collect();
        let has_views = self.views.values().any(|v| v.schema == name);
        if !cascade && (!tables.is_empty() || has_views) {
            return Err(CoordError::SchemaNotEmpty(name.into()));
        }
        for id in &tables {
            self.tables.remove(id);
        }
        self.views.retain(|_, v| v.schema != name);
        self.schemas.remove(name);
        Ok(tables)
    }

    /// Adds a table, validating names and assigning its id. Its partitions are led by the
    /// nodes of `placement` (the live nodes): partition `i` by the leader of partition `i` of
    /// the first table with as many partitions (so that tables partitioned alike keep matching
    /// rows on one node, see [`Catalog::colocated_leaders`]), or else each by the node that
    /// leads the fewest partitions so far, so that leaders stay balanced across tables. Each
    /// partition keeps `replicas` copies where `placement` has enough nodes (see
    /// [`crate::replicas::followers_for`]).
    pub fn create_table(
        &mut self,
        mut table: TableDef,
        partition_count: u32,
        placement: &[NodeId],
        replicas: usize,
    ) -> Result<u32, CoordError> {
        if !self.schemas.contains_key(&table.schema) {
            return Err(CoordError::SchemaNotFound(table.schema.clone()));
        }
        if self.relation_exists(&table.schema, &table.name) {
            return Err(CoordError::RelationExists(table.name.clone()));
        }
        for (i, c) in table.columns.iter().enumerate() {
            if table.columns[..i].iter().any(|o| o.name == c.name) {
                return Err(CoordError::InvalidDefinition(format!(
                    "column \"{}\" specified more than once",
                    c.name
                )));
            }
        }
        if partition_count == 0 || partition_count > 4096 {
            return Err(CoordError::InvalidDefinition(
                "partitions must be between 1 and 4096".into(),
            ));
        }
        table.id = self.allocate_oid();
        table.row_type_oid = self.allocate_row_type();
        table.replicas = replicas.max(1);
        if !table.primary_key.is_empty() && !table.indexes.iter().any(|i| i.primary) {
            let name = format!("{}_pkey", table.name);
            if self.relation_exists(&table.schema, &name) {
                return Err(CoordError::RelationExists(name));
            }
            let index = IndexDef {
                oid: self.allocate_oid(),
                name,
                columns: table.primary_key.clone(),
                unique: true,
                primary: true,
                constraint_oid: Some(self.allocate_oid()),
                descending: Vec::new(),
            };
            table.indexes.push(index);
        }
        if placement.is_empty() {
            return Err(CoordError::NoLiveNodes);
        }
        let leaders = self
            .colocated_leaders(partition_count, placement)
            .unwrap_or_else(|| self.balanced_leaders(partition_count, placement));
        table.partitions = leaders
            .into_iter()
            .zip(0..)
            .map(|(leader, index)| PartitionDef {
                index,
                leader,
                followers: crate::replicas::followers_for(leader, placement, replicas),
                epoch: 1,
                moving_to: None,
            })
            .collect();
        let id = table.id;
        self.tables.insert(id, table);
        Ok(id)
    }

    /// Leaders for `count` new partitions, each the node of `placement` (not empty) leading
    /// the fewest partitions so far.
    fn balanced_leaders(&self, count: u32, placement: &[NodeId]) -> Vec<NodeId> {
        let mut led: BTreeMap<NodeId, usize> = placement.iter().map(|n| (*n, 0)).collect();
        for p in self.tables.values().flat_map(|t| &t.partitions) {
            if let Some(n) = led.get_mut(&p.leader) {
                *n += 1;
            }
        }
        (0..count)
            .map(|_| {
                // Ties go to the lowest id, so placement is deterministic.
                let leader = placement
                    .iter()
                    .copied()
                    .min_by_key(|n| (led[n], *n))
                    .unwrap_or(placement[0]);
                *led.entry(leader).or_default() += 1;
                leader
            })
            .collect()
    }

    pub fn drop_table(&mut self, schema: &str, name: &str) -> Result<u32, CoordError> {
        let id = self
            .table(schema, name)
            .map(|t| t.id)
            .ok_or_else(|| CoordError::RelationNotFound(name.into()))?;
        self.tables.remove(&id);
        Ok(id)
    }

    pub fn table_mut(&mut self, schema: &str, name: &str) -> Result<&mut TableDef, CoordError> {
        self.tables
            .values_mut()
            .find(|t| t.schema == schema && t.name == name)
            .ok_or_else(|| CoordError::RelationNotFound(name.into()))
    }

    /// Adds a secondary index to a table; `index.name` empty asks for PostgreSQL's default
    /// name (`<table>_<columns>_idx`, with a number appended while it is taken). Returns the
    /// index with its OID and name.
    pub fn create_index(
        &mut self,
        schema: &str,
        table: &str,
        mut index: IndexDef,
    ) -> Result<IndexDef, CoordError> {
        let def = self
            .table(schema, table)
            .ok_or_else(|| CoordError::RelationNotFound(table.into()))?;
        if index.name.is_empty() {
            let columns: Vec<&str> = index
                .columns
                .iter()
                .filter_map(|id| def.columns.iter().find(|c| c.id == *id))
                .map(|c| c.name.as_str())
                .collect();
            let base = format!("{}_{}_idx", def.name, columns.join("_"));
            index.name = base.clone();
            let mut n = 0;
            while self.relation_exists(schema, &index.name) {
                n += 1;
                index.name = format!("{base}{n}");
            }
        } else if self.relation_exists(schema, &index.name) {
            return Err(CoordError::RelationExists(index.name));
        }
        index.oid = self.allocate_oid();
        let def = self.table_mut(schema, table)?;
        def.indexes.push(index.clone());
        Ok(index)
    }

    /// Removes a secondary index; returns its table's id and its OID so that storage can
    /// reclaim the entries. A primary key's index goes only with its table.
    pub fn drop_index(&mut self, schema: &str, name: &str) -> Result<(u32, u32), CoordError> {
        let (table, index) = self
            .index(schema, name)
            .map(|(t, i)| (t.id, i.clone()))
            .ok_or_else(|| CoordError::RelationNotFound(name.into()))?;
        if index.primary {
            return Err(CoordError::InvalidDefinition(format!(
                "cannot drop index {name} because constraint {name} on its table requires it"
            )));
        }
        if let Some(t) = self.tables.get_mut(&table) {
            t.indexes.retain(|i| i.oid != index.oid);
        }
        Ok((table, index.oid))
    }

    pub fn create_view(&mut self, mut view: ViewDef, or_replace: bool) -> Result<(), CoordError> {
        if !self.schemas.contains_key(&view.schema) {
            return Err(CoordError::SchemaNotFound(view.schema.clone()));
        }
        if self.table(&view.schema, &view.name).is_some()
            || self.index(&view.schema, &view.name).is_some()
        {
            return Err(CoordError::RelationExists(view.name.clone()));
        }
        let key = qualified(&view.schema, &view.name);
        match self.views.get(&key) {
            Some(existing) if or_replace => {
                view.oid = existing.oid;
                view.row_type_oid = existing.row_type_oid;
            }
            Some(_) => return Err(CoordError::RelationExists(view.name.clone())),
            None => {
                view.oid = self.allocate_oid();
                view.row_type_oid = self.allocate_row_type();
            }
        }
        self.views.insert(key, view);
        Ok(())
    }

    pub fn drop_view(&mut self, schema: &str, name: &str) -> Result<(), CoordError> {
        self.views
            .remove(&qualified(schema, name))
            .map(|_| ())
            .ok_or_else(|| CoordError::RelationNotFound(name.into()))
    }
}

impl TableDef {
    /// Column ids whose values decide a row's partition: the named partition key, or else
    /// the primary key (empty for a table keyed by hidden row ids).
    pub fn partition_columns(&self) -> &[u32] {
        match self.partition_key.is_empty() {
            true => &self.primary_key,
            false => &self.partition_key,
        }
    }

    /// Columns a query sees, in declaration order (dropped ones hidden).
    pub fn visible_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.columns.iter().filter(|c| !c.dropped)
    }

    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.visible_columns().find(|c| c.name == name)
    }

    /// The primary key's index (and constraint), if the table has a primary key.
    pub fn primary_index(&self) -> Option<&IndexDef> {
        self.indexes.iter().find(|i| i.primary)
    }

    pub fn next_column_id(&self) -> u32 {
        self.columns.iter().map(|c| c.id + 1).max().unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn table(name: &str) -> TableDef {
        TableDef {
            id: 0,
            schema: "public".into(),
            name: name.into(),
            columns: vec![ColumnDef {
                id: 0,
                name: "a".into(),
                sql_type: SqlType::Int4,
                nullable: false,
                default: None,
                dropped: false,
            }],
            primary_key: vec![0],
            partition_key: Vec::new(),
            partitions: vec![],
            indexes: vec![],
            row_type_oid: 0,
            replicas: 1,
        }
    }

    #[test]
    fn partitions_go_to_the_nodes_that_lead_fewest() {
        let mut c = Catalog::default();
        c.create_table(table("a"), 4, &[1, 2, 3], 1).unwrap();
        let leaders = |c: &Catalog, name: &str| -> Vec<NodeId> {
            let t = c.table("public", name).unwrap();
            t.partitions.iter().map(|p| p.leader).collect()
        };
        assert_eq!(leaders(&c, "a"), vec![1, 2, 3, 1]);
        // Nodes 2 and 3 lead one partition each, node 1 two: the next table starts with them.
        c.create_table(table("b"), 2, &[1, 2, 3], 1).unwrap();
        assert_eq!(leaders(&c, "b"), vec![2, 3]);
        // A node that joined later catches up first.
        c.create_table(table("c"), 3, &[1, 2, 3, 4], 1).unwrap();
        assert_eq!(leaders(&c, "c"), vec![4, 4, 1]);
        assert!(matches!(
            c.create_table(table("d"), 1, &[], 1),
            Err(CoordError::NoLiveNodes)
        ));
    }

    #[test]
    fn create_table_assigns_ids_and_partitions() {
        let mut c = Catalog::default();
        let id = c.create_table(table("t"), 4, &[1], 1).unwrap();
        assert!(id >= FIRST_USER_OID);
        let t = c.table("public", "t").unwrap();
        assert_eq!(t.partitions.len(), 4);
        // PostgreSQL's order: the relation, its row type, the row type's array, then the key.
        assert_eq!(t.row_type_oid, id + 1);
        assert!(t.primary_index().unwrap().oid > id + 2);
        let pk = t.primary_index().unwrap();
        assert_eq!(
            (pk.name.as_str(), pk.columns.as_slice()),
            ("t_pkey", &[0][..])
        );
        assert!(pk.oid > id && pk.constraint_oid > Some(pk.oid));
        assert!(matches!(
            c.create_table(table("t"), 4, &[1], 1),
            Err(CoordError::RelationExists(_))
        ));
        // An index name takes its place among the schema's relations.
        assert!(matches!(
            c.create_table(table("t_pkey"), 4, &[1], 1),
            Err(CoordError::RelationExists(_))
        ));
    }

    #[test]
    fn unnamed_indexes_get_postgres_default_names() {
        let mut c = Catalog::default();
        c.create_table(table("t"), 1, &[1], 1).unwrap();
        let index = |name: &str| IndexDef {
            oid: 0,
            name: name.into(),
            columns: vec![0],
            unique: false,
            primary: false,
            constraint_oid: None,
            descending: vec![false],
        };
        assert_eq!(
            c.create_index("public", "t", index("")).unwrap().name,
            "t_a_idx"
        );
        assert_eq!(
            c.create_index("public", "t", index("")).unwrap().name,
            "t_a_idx1"
        );
        assert!(matches!(
            c.create_index("public", "t", index("t")),
            Err(CoordError::RelationExists(_))
        ));
        assert!(c.drop_index("public", "t_pkey").is_err());
        let (table, oid) = c.drop_index("public", "t_a_idx").unwrap();
        assert!(c
            .table_by_id(table)
            .unwrap()
            .indexes
            .iter()
            .all(|i| i.oid != oid));
    }

    #[test]
    fn drop_schema_needs_cascade_when_not_empty() {
        let mut c = Catalog::default();
        c.create_schema("s").unwrap();
        let mut t = table("t");
        t.schema = "s".into();
        c.create_table(t, 2, &[1], 1).unwrap();
        assert!(matches!(
            c.drop_schema("s", false),
            Err(CoordError::SchemaNotEmpty(_))
        ));
        assert_eq!(c.drop_schema("s", true).unwrap().len(), 1);
        assert!(c.table("s", "t").is_none());
    }
}
