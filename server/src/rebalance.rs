//! The coordinator's rebalancing loop: while this node holds the coordinator election, it
//! gives partitions short of copies a new follower (`Catalog::missing_replica`,
//! `RemoteFragments::add_replica`) unless a node went down less than
//! `--replica-repair-delay-secs` ago (it may come back with its copies), evens out partition leadership across the live nodes one
//! move at a time (the choice is `Catalog::next_move`, the move
//! `RemoteFragments::move_partition`), and gives up moves a previous coordinator left
//! unfinished.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_coord::{NodeId, NodeStatus};

use crate::node::Node;

/// How often the coordinator looks for a move to make.
const REBALANCE_EVERY: Duration = Duration::from_secs(2);

pub async fn rebalance_forever(node: Arc<Node>) {
    let Some(remote) = node.remote.clone() else {
        return;
    };
    // Repairs follow one another without the pause: a node that comes back after a long
    // pause lacks copies of many partitions.
    let mut pause = true;
    loop {
        if pause {
            tokio::time::sleep(REBALANCE_EVERY).await;
        }
        pause = true;
        if !node.coordinates() {
            continue;
        }
        let catalog = node.meta.catalog();
        // This loop makes one move at a time and finishes it: a partition still marked
        // moving was left by another coordinator.
        let abandoned: Vec<_> = catalog
            .tables
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter_map(move |p| p.moving_to.map(|to| (t.id, p.index, p.leader, to)))
            })
            .collect();
        for (table, partition, from, to) in abandoned {
            tracing::warn!(
                table,
                partition,
                from,
                to,
                "giving up an unfinished partition move"
            );
            remote.cancel_move(table, partition, from, to).await;
        }
        let live = node.cluster.live_nodes();
        let delay = Duration::from_secs(node.args.replica_repair_delay_secs);
        let awaited = recently_down(&node.cluster.nodes(), delay);
        // Copies first: a partition short of followers loses writes if its leader dies.
        if let Some(repair) = catalog.missing_replica(&live).filter(|_| awaited.is_none()) {
            let (table, partition, to) = (repair.table_id, repair.partition, repair.to);
            match remote.add_replica(repair).await {
                Ok(entries) => {
                    pause = false;
                    node.metrics.replicas_added.inc();
                    tracing::info!(
                        table,
                        partition,
                        to,
                        entries,
                        "a node follows a partition short of copies"
                    )
                }
                Err(e) => {
                    tracing::warn!(table, partition, to, error = %e, "a partition could not get a new copy")
                }
            }
            continue;
        }
        let Some(next) = catalog.next_move(&live) else {
            continue;
        };
        let (table, partition, from, to) = (next.table_id, next.partition, next.from, next.to);
        match remote.move_partition(next).await {
            Ok(entries) => {
                tracing::info!(table, partition, from, to, entries, "moved a partition")
            }
            Err(e) => {
                tracing::warn!(table, partition, from, to, error = %e, "a partition move failed")
            }
        }
    }
}

/// A node that went down less than `delay` ago, if any: its copies may come back with it, so
/// copying them elsewhere waits.
fn recently_down(nodes: &[NodeStatus], delay: Duration) -> Option<NodeId> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    nodes
        .iter()
        .filter(|n| !n.live)
        .find(|n| {
            n.down_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) < delay.as_millis() as u64)
        })
        .map(|n| n.info.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_coord::NodeInfo;

    fn status(id: NodeId, live: bool, down_since_ms: Option<u64>) -> NodeStatus {
        NodeStatus {
            info: NodeInfo {
                id,
                sql_address: String::new(),
                flight_address: String::new(),
                started_ms: 0,
            },
            live,
            coordinator: false,
            catalog_revision: 0,
            down_since_ms,
        }
    }

    #[test]
    fn repairs_wait_for_a_node_that_went_down_recently() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let delay = Duration::from_secs(30);
        let nodes = [status(1, true, None), status(2, false, Some(now - 5_000))];
        assert_eq!(recently_down(&nodes, delay), Some(2));
        let long_ago = [status(1, true, None), status(2, false, Some(now - 60_000))];
        assert_eq!(recently_down(&long_ago, delay), None);
        // Back up: nothing to wait for (its copies are live again).
        let back = [status(2, true, Some(now - 5_000))];
        assert_eq!(recently_down(&back, delay), None);
        assert_eq!(recently_down(&nodes, Duration::ZERO), None);
    }
}
