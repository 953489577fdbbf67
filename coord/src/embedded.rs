//! Single-node metadata: the catalog lives in one JSON file next to the data, replaced
//! atomically (write to a temporary file, fsync, rename, fsync the directory) on every change.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{Catalog, CoordError, MetaStore};

pub struct EmbeddedMetaStore {
    path: PathBuf,
    /// Serializes writers; readers take the published snapshot without locking it.
    current: Mutex<Arc<Catalog>>,
}

impl EmbeddedMetaStore {
    /// Opens (or creates) the catalog file `catalog.json` inside `dir`.
    pub fn open(dir: &Path) -> Result<Self, CoordError> {
        let path = dir.join("catalog.json");
        let io = |source| CoordError::Io {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let catalog = if path.exists() {
            let bytes = fs::read(&path).map_err(io)?;
            serde_json::from_slice(&bytes).map_err(|e| CoordError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
        } else {
            Catalog::default()
        };
        Ok(EmbeddedMetaStore {
            path,
            current: Mutex::new(Arc::new(catalog)),
        })
    }

    fn persist(&self, catalog: &Catalog) -> Result<(), CoordError> {
        let io = |source| CoordError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(catalog).map_err(|e| CoordError::Corrupt {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

impl MetaStore for EmbeddedMetaStore {
    fn catalog(&self) -> Arc<Catalog> {
        self.current.lock().clone()
    }

    fn update(
        &self,
        change: &mut dyn FnMut(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<Arc<Catalog>, CoordError> {
        let mut current = self.current.lock();
        let mut next = Catalog::clone(&current);
        change(&mut next)?;
        next.version += 1;
        self.persist(&next)?;
        let next = Arc::new(next);
        *current = next.clone();
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_reopen_and_failed_changes_do_not_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedMetaStore::open(dir.path()).unwrap();
        store.update(&mut |c| c.create_schema("sales")).unwrap();
        let err = store.update(&mut |c| c.create_schema("sales"));
        assert!(matches!(err, Err(CoordError::SchemaExists(_))));
        drop(store);
        let reopened = EmbeddedMetaStore::open(dir.path()).unwrap();
        let catalog = reopened.catalog();
        assert!(catalog.schemas.contains_key("sales"));
        assert_eq!(catalog.version, 1);
    }
}
