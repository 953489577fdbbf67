//! The coordinator's failover loop: while this node holds the coordinator election, every
//! partition whose leader is down (its lease expired) and that has followers gets a new
//! leader among them (`RemoteFragments::fail_over`, which seals the followers, catches them
//! up to the longest log and records the new configuration in etcd).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::node::Node;

/// How often the coordinator looks for partitions whose leader is down. Small next to the
/// lease TTL: a failover's delay is mostly the lease running out.
const LOOK_EVERY: Duration = Duration::from_millis(100);

pub async fn fail_over_forever(node: Arc<Node>) {
    let Some(remote) = node.remote.clone() else {
        return;
    };
    let local = node.cluster.local_node();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let nodes = node.cluster.nodes();
        if !nodes.iter().any(|n| n.info.id == local && n.coordinator) {
            continue;
        }
        let down: Vec<_> = nodes
            .iter()
            .filter(|n| !n.live)
            .map(|n| n.info.id)
            .collect();
        if down.is_empty() {
            continue;
        }
        let catalog = node.meta.catalog();
        let orphaned: Vec<_> = catalog
            .tables
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| down.contains(&p.leader) && !p.followers.is_empty())
                    .map(move |p| (t.id, p.index, p.leader, p.epoch))
            })
            .collect();
        for (table, partition, old, epoch) in orphaned {
            let started = Instant::now();
            match remote.fail_over(table, partition, epoch).await {
                Ok(leader) => {
                    node.metrics.failovers.inc();
                    tracing::warn!(
                        table,
                        partition,
                        old,
                        leader,
                        took_ms = started.elapsed().as_millis() as u64,
                        "a follower leads a partition whose leader is down"
                    );
                }
                Err(e) => {
                    tracing::warn!(table, partition, old, error = %e, "a failover did not complete")
                }
            }
        }
    }
}
