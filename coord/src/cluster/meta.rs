//! The catalog of a cluster: [`MetaStore`] over etcd.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, LockOptions, Txn, TxnOp};

use super::{unavailable, EtcdCluster};
use crate::{Catalog, CoordError, MetaStore};

/// How long a catalog change waits for another node's change to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);

impl EtcdCluster {
    /// Takes the DDL lock (held under this node's lease, so a dead holder frees it) and reads
    /// the newest catalog: (lock key, catalog, the catalog's revision).
    fn lock_and_read(&self) -> Result<(Vec<u8>, Arc<Catalog>, i64), CoordError> {
        let mut client = self.client.clone();
        let lock_name = self.keys.ddl_lock();
        let catalog_key = self.keys.catalog();
        let lease = self.current_lease();
        self.block(async move {
            let options = LockOptions::new().with_lease(lease);
            let lock = match tokio::time::timeout(LOCK_WAIT, client.lock(lock_name, Some(options)))
                .await
            {
                Ok(result) => result.map_err(unavailable)?.key().to_vec(),
                Err(_) => {
                    return Err(CoordError::Unavailable(
                        "timed out waiting for another node's catalog change".into(),
                    ))
                }
            };
            let read = async {
                let resp = client.get(catalog_key, None).await.map_err(unavailable)?;
                let kv = resp
                    .kvs()
                    .first()
                    .ok_or_else(|| CoordError::Unavailable("the cluster has no catalog".into()))?;
                let catalog: Catalog =
                    serde_json::from_slice(kv.value()).map_err(|e| CoordError::Corrupt {
                        path: "etcd catalog".into(),
                        reason: e.to_string(),
                    })?;
                Ok((Arc::new(catalog), kv.mod_revision()))
            };
            match read.await {
                Ok((catalog, revision)) => Ok((lock, catalog, revision)),
                Err(e) => {
                    let _ = client.unlock(lock).await;
                    Err(e)
                }
            }
        })
    }

    /// Writes `next` if the catalog is still at `revision` and the lock still held, then
    /// releases the lock; returns the revision of the write.
    fn write_and_unlock(
        &self,
        lock: Vec<u8>,
        revision: i64,
        next: Option<&Catalog>,
    ) -> Result<i64, CoordError> {
        let mut client = self.client.clone();
        let catalog_key = self.keys.catalog();
        let bytes = next
            .map(|c| {
                serde_json::to_vec(c)
                    .map_err(|e| CoordError::Unavailable(format!("cannot encode the catalog: {e}")))
            })
            .transpose()?;
        self.block(async move {
            let written = match bytes {
                Some(bytes) => {
                    let txn = Txn::new()
                        .when([
                            Compare::mod_revision(catalog_key.clone(), CompareOp::Equal, revision),
                            Compare::create_revision(lock.clone(), CompareOp::Greater, 0),
                        ])
                        .and_then([TxnOp::put(catalog_key, bytes, None)]);
                    client.txn(txn).await.map_err(unavailable).and_then(|resp| {
                        if resp.succeeded() {
                            Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
                        } else {
                            // Only a lost lock (this node's lease expired) lets another writer in.
                            Err(CoordError::CatalogChanged)
                        }
                    })
                }
                None => Ok(revision),
            };
            let _ = client.unlock(lock).await;
            written
        })
    }

    /// Waits until every live node has applied `revision` (a node that dies meanwhile stops
    /// counting once its lease expires). Gives up after two lease periods and says so: the
    /// change is made either way.
    fn wait_until_applied(&self, revision: i64) {
        let state = self.state.clone();
        let changed = self.changed.clone();
        let patience = self.lease_ttl * 2 + Duration::from_secs(1);
        let outcome = self.block(async move {
            let deadline = tokio::time::Instant::now() + patience;
            loop {
                let notified = changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if state.read().all_live_applied(revision) {
                    return Ok(true);
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(false);
                }
            }
        });
        if !matches!(outcome, Ok(true)) {
            let lagging = self.state.read().lagging(revision);
            tracing::warn!(
                revision,
                ?lagging,
                "live nodes did not confirm a catalog change in time"
            );
        }
    }
}

impl MetaStore for EtcdCluster {
    fn catalog(&self) -> Arc<Catalog> {
        self.state.read().catalog.clone()
    }

    fn update(
        &self,
        change: &mut dyn FnMut(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<Arc<Catalog>, CoordError> {
        let (next, written) = self.change_catalog(change)?;
        self.wait_until_applied(written);
        Ok(next)
    }

    fn update_without_waiting(
        &self,
        change: &mut dyn FnMut(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<Arc<Catalog>, CoordError> {
        Ok(self.change_catalog(change)?.0)
    }
}

impl EtcdCluster {
    /// Applies `change` to the newest catalog and writes it; the new catalog and the revision
    /// it was written at.
    fn change_catalog(
        &self,
        change: &mut dyn FnMut(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<(Arc<Catalog>, i64), CoordError> {
        let _one_at_a_time = self.updating.lock();
        let (lock, current, revision) = self.lock_and_read()?;
        let mut next = Catalog::clone(&current);
        if let Err(e) = change(&mut next) {
            self.write_and_unlock(lock, revision, None)?;
            return Err(e);
        }
        next.version += 1;
        let written = self.write_and_unlock(lock, revision, Some(&next))?;
        let next = Arc::new(next);
        {
            let mut state = self.state.write();
            if written > state.catalog_revision {
                state.catalog = next.clone();
                state.catalog_revision = written;
            }
        }
        self.changed.notify_waiters();
        Ok((next, written))
    }
}
