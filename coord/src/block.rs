//! Transactional DDL: a session's view of the catalog that, inside a transaction block, keeps
//! catalog changes private (a pending copy only this session sees) until COMMIT publishes them
//! in one step, or ROLLBACK drops them.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::{Catalog, CoordError, MetaStore};

struct Pending {
    /// Version of the shared catalog the pending copy was derived from.
    base_version: u64,
    catalog: Arc<Catalog>,
}

/// A session's catalog: the shared one, or the session's pending copy inside a block.
pub struct SessionMetaStore {
    shared: Arc<dyn MetaStore>,
    in_block: Mutex<bool>,
    pending: Mutex<Option<Pending>>,
}

impl SessionMetaStore {
    pub fn new(shared: Arc<dyn MetaStore>) -> Self {
        SessionMetaStore {
            shared,
            in_block: Mutex::new(false),
            pending: Mutex::new(None),
        }
    }

    /// From now on catalog changes stay private until [`Self::publish`].
    pub fn begin_block(&self) {
        *self.in_block.lock() = true;
    }

    /// Whether this session changed the catalog in its open block.
    pub fn has_pending(&self) -> bool {
        self.pending.lock().is_some()
    }

    /// Drops the block's catalog changes.
    pub fn discard(&self) {
        *self.in_block.lock() = false;
        *self.pending.lock() = None;
    }

    /// Ends the block. With pending changes, `commit_data` runs while the shared catalog is
    /// locked and unchanged since the block first changed it, then the changes become the
    /// shared catalog; if another session changed the catalog meanwhile, nothing is applied
    /// and the error is [`CoordError::CatalogChanged`].
    pub fn publish(
        &self,
        commit_data: &mut dyn FnMut() -> Result<(), CoordError>,
    ) -> Result<(), CoordError> {
        *self.in_block.lock() = false;
        let Some(pending) = self.pending.lock().take() else {
            return commit_data();
        };
        self.shared.update(&mut |c| {
            if c.version != pending.base_version {
                return Err(CoordError::CatalogChanged);
            }
            commit_data()?;
            let version = c.version;
            *c = Catalog::clone(&pending.catalog);
            c.version = version;
            Ok(())
        })?;
        Ok(())
    }
}

impl MetaStore for SessionMetaStore {
    fn catalog(&self) -> Arc<Catalog> {
        match &*self.pending.lock() {
            Some(p) => p.catalog.clone(),
            None => self.shared.catalog(),
        }
    }

    fn update(
        &self,
        change: &mut dyn FnMut(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<Arc<Catalog>, CoordError> {
        if !*self.in_block.lock() {
            return self.shared.update(change);
        }
        let mut pending = self.pending.lock();
        let (base_version, current) = match &*pending {
            Some(p) => (p.base_version, p.catalog.clone()),
            None => {
                let shared = self.shared.catalog();
                (shared.version, shared)
            }
        };
        let mut next = Catalog::clone(&current);
        change(&mut next)?;
        let next = Arc::new(next);
        *pending = Some(Pending {
            base_version,
            catalog: next.clone(),
        });
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedMetaStore;

    #[test]
    fn block_changes_are_private_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let shared: Arc<dyn MetaStore> = Arc::new(EmbeddedMetaStore::open(dir.path()).unwrap());
        let a = SessionMetaStore::new(shared.clone());
        a.begin_block();
        a.update(&mut |c| c.create_schema("s1")).unwrap();
        assert!(a.catalog().schemas.contains_key("s1"));
        assert!(!shared.catalog().schemas.contains_key("s1"));
        a.publish(&mut || Ok(())).unwrap();
        assert!(shared.catalog().schemas.contains_key("s1"));

        a.begin_block();
        a.update(&mut |c| c.create_schema("s2")).unwrap();
        a.discard();
        assert!(!a.catalog().schemas.contains_key("s2"));

        // Another session's DDL in between makes the publish fail and apply nothing.
        a.begin_block();
        a.update(&mut |c| c.create_schema("s3")).unwrap();
        shared.update(&mut |c| c.create_schema("other")).unwrap();
        let mut data_committed = false;
        let result = a.publish(&mut || {
            data_committed = true;
            Ok(())
        });
        assert!(matches!(result, Err(CoordError::CatalogChanged)));
        assert!(!data_committed);
        assert!(!shared.catalog().schemas.contains_key("s3"));
    }
}
