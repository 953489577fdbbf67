//! The three loops a cluster node runs for as long as it lives: keeping its lease alive
//! (registering again under a new lease if the old one expired), following the cluster's keys
//! with a watch, and standing in the coordinator election.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, PutOptions, WatchOptions};

use super::coordinator::Leadership;
use super::state::Change;
use super::{encode_info, grant_lease, unavailable, EtcdCluster};
use crate::CoordError;

/// Pause before retrying after etcd failed us.
const RETRY: Duration = Duration::from_millis(300);

pub(super) async fn keep_alive(cluster: Arc<EtcdCluster>) {
    loop {
        let lease = cluster.current_lease();
        match heartbeat(&cluster, lease).await {
            Ok(()) if cluster.is_leaving() => return,
            Ok(()) => {
                tracing::warn!(lease, "lease expired: registering again");
                while let Err(e) = reregister(&cluster).await {
                    tracing::warn!(error = %e, "cannot register again yet");
                    tokio::time::sleep(RETRY).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease keep-alive interrupted; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Renews `lease` every third of its TTL. Returns Ok when etcd says the lease is gone, an
/// error when the stream broke (the lease may still be alive: the caller retries).
async fn heartbeat(cluster: &EtcdCluster, lease: i64) -> Result<(), CoordError> {
    let mut client = cluster.client.clone();
    let opened = std::time::Instant::now();
    let (mut keeper, mut responses) = match client.lease_keep_alive(lease).await {
        Ok(stream) => stream,
        // etcd-client's way of saying that the lease expired (its first answer had no TTL).
        Err(etcd_client::Error::LeaseKeepAliveError(e)) if e == "lease not found" => return Ok(()),
        Err(e) => return Err(unavailable(e)),
    };
    // Opening the stream renewed the lease once.
    cluster.lease_renewed(opened, cluster.lease_ttl);
    let every = (cluster.lease_ttl / 3).max(Duration::from_millis(100));
    loop {
        let sent = std::time::Instant::now();
        keeper.keep_alive().await.map_err(unavailable)?;
        match tokio::time::timeout(cluster.lease_ttl, responses.message()).await {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                cluster.lease_renewed(sent, Duration::from_secs(resp.ttl() as u64));
            }
            Ok(Ok(Some(_))) => return Ok(()),
            Ok(Ok(None)) => return Err(CoordError::Unavailable("keep-alive stream ended".into())),
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(CoordError::Unavailable("keep-alive timed out".into())),
        }
        tokio::time::sleep(every).await;
    }
}

/// After a lost lease: a new lease, the live key and the applied revision under it.
async fn reregister(cluster: &EtcdCluster) -> Result<(), CoordError> {
    let mut client = cluster.client.clone();
    let sent = std::time::Instant::now();
    let lease = grant_lease(&mut client, cluster.lease_ttl).await?;
    let value = encode_info(&cluster.info)?;
    let put = client
        .put(
            cluster.keys.live(cluster.node_id),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(unavailable)?;
    // Partitions this node led may have failed over while its lease was gone: it is sure of
    // leading again only once its cache has seen etcd as of this registration.
    let revision = put.header().map(|h| h.revision()).unwrap_or(i64::MAX);
    cluster
        .lease_revision
        .store(revision, std::sync::atomic::Ordering::SeqCst);
    cluster.lease_renewed(sent, cluster.lease_ttl);
    cluster.lease.send_replace(lease);
    cluster
        .reported
        .store(0, std::sync::atomic::Ordering::SeqCst);
    cluster.report_applied().await
}

/// Follows every key of the cluster: one watch from the revision of a full read; after any
/// interruption (etcd restarted, history compacted) a new full read and a new watch.
pub(super) async fn follow(cluster: Arc<EtcdCluster>) {
    let mut from = None;
    loop {
        let start = match from.take() {
            Some(r) => r,
            None => match cluster.reload().await {
                Ok(revision) => revision + 1,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's keys; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
        };
        if let Err(e) = watch_from(&cluster, start).await {
            tracing::warn!(error = %e, "watch interrupted; reading the cluster again");
            tokio::time::sleep(RETRY).await;
        }
    }
}

async fn watch_from(cluster: &EtcdCluster, start: i64) -> Result<(), CoordError> {
    let mut client = cluster.client.clone();
    let mut stream = client
        .watch(
            cluster.keys.prefix(),
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .map_err(unavailable)?;
    // Applied revisions the node could not report (etcd briefly away) are reported later.
    let mut report_pending = true;
    loop {
        if report_pending {
            report_pending = cluster.report_applied().await.is_err();
        }
        let Some(resp) = stream.message().await.map_err(unavailable)? else {
            return Err(CoordError::Unavailable("watch stream ended".into()));
        };
        if resp.canceled() {
            return Err(CoordError::Unavailable(format!(
                "watch canceled (compacted at {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            )));
        }
        if resp.events().is_empty() {
            if let Some(header) = resp.header() {
                cluster.seen(header.revision());
            }
            continue;
        }
        {
            let mut state = cluster.state.write();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let change = match event.event_type() {
                    EventType::Put => Change::put(kv),
                    EventType::Delete => Change::Delete {
                        key: kv.key().to_vec(),
                    },
                };
                state.apply(&cluster.keys, &change);
            }
        }
        // Seen only once applied: leadership_certain reads it.
        if let Some(header) = resp.header() {
            cluster.seen(header.revision());
        }
        cluster.changed.notify_waiters();
        report_pending = true;
    }
}

/// Stands in the coordinator election with the node's current lease, again whenever the lease
/// is replaced. Who won is read from the election's keys by every node (see `ClusterState`).
pub(super) async fn campaign(cluster: Arc<EtcdCluster>) {
    let mut leases = cluster.lease.subscribe();
    loop {
        let lease = *leases.borrow_and_update();
        // A client of its own, with no request timeout: a timeout would end the campaign.
        let mut election = cluster.client.election_client();
        let name = cluster.keys.election();
        let value = cluster.node_id.to_string();
        tokio::select! {
            won = election.campaign(name, value, lease) => match won {
                Ok(resp) => {
                    tracing::info!(node = cluster.node_id, "elected coordinator");
                    *cluster.leadership.lock() = resp.leader().map(|k| Leadership {
                        key: k.key().to_vec(),
                        create_revision: k.rev(),
                    });
                    // Leadership lasts as long as the lease.
                    let _ = leases.changed().await;
                    *cluster.leadership.lock() = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed; standing again");
                    tokio::time::sleep(RETRY).await;
                }
            },
            _ = leases.changed() => {}
        }
    }
}
