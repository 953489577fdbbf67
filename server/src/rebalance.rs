//! The coordinator's rebalancing loop: while this node holds the coordinator election, it
//! gives partitions short of copies a new follower (`Catalog::missing_replica`,
//! `RemoteFragments::add_replica`), evens out partition leadership across the live nodes one
//! move at a time (the choice is `Catalog::next_move`, the move
//! `RemoteFragments::move_partition`), and gives up moves a previous coordinator left
//! unfinished.

use std::sync::Arc;
use std::time::Duration;

use crate::node::Node;

/// How often the coordinator looks for a move to make.
const REBALANCE_EVERY: Duration = Duration::from_secs(2);

pub async fn rebalance_forever(node: Arc<Node>) {
    let Some(remote) = node.remote.clone() else {
        return;
    };
    loop {
        tokio::time::sleep(REBALANCE_EVERY).await;
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
        // Copies first: a partition short of followers loses writes if its leader dies.
        if let Some(repair) = catalog.missing_replica(&live) {
            let (table, partition, to) = (repair.table_id, repair.partition, repair.to);
            match remote.add_replica(repair).await {
                Ok(entries) => {
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
