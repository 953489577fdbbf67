//! Configuration changes that the coordinator or a leaving node make besides failovers:
//! adding a copy of a partition where one is missing ([`RemoteFragments::add_replica`]) and
//! handing a node's partitions to their followers when it shuts down
//! ([`RemoteFragments::hand_over_all`]).
//!
//! A new follower copies the partition the way a moving partition is copied
//! ([`crate::partition_moves`]), the catalog marking it moving to the new node meanwhile (so a
//! coordinator that dies halfway leaves a move the next one gives up): its leader stops new
//! writers, waits for the open ones (so the copy misses no commit and no commit is replicated
//! while the copy is not a follower yet), and streams the rows, index entries and log. The
//! follower joins the configuration (epoch + 1), then the leader takes writes again and
//! replicates them to it. A leaving node closes
//! each partition it leads the same way, so every follower holds its whole log, hands
//! leadership to the first live follower and leaves the configurations it follows in one
//! catalog change, then revokes its lease so that nobody waits for it.

use std::time::Duration;

use shoal_coord::replicas::ReplicaRepair;
use shoal_coord::CoordError;
use shoal_storage::Store;

use crate::partition_moves::{PartitionRef, PULL_ACTION, REOPEN_ACTION};
use crate::two_phase::blocking;
use crate::{ExecError, RemoteFragments};

/// How long a leaving node waits for the open writers of a partition it hands over.
const HAND_OVER_PATIENCE: Duration = Duration::from_secs(5);

impl RemoteFragments {
    /// Copies a partition to `r.to` and makes it a follower (see the module comment); how
    /// many entries were copied. Run by the coordinator.
    pub async fn add_replica(&self, r: ReplicaRepair) -> Result<u64, ExecError> {
        let (meta, marked) = (self.meta.clone(), r.as_move());
        blocking(move || Ok(meta.update(&mut |c| c.start_move(&marked)).map(|_| ())?)).await?;
        let source = PartitionRef {
            table_id: r.table_id,
            partition: r.partition,
            from: r.leader,
            epoch: r.epoch,
            follower: false,
        };
        let body = serde_json::to_vec(&source).map_err(|e| ExecError::TaskFailed(e.to_string()))?;
        let copied = self
            .node_action(r.to, PULL_ACTION, body.clone())
            .await
            .and_then(|answer| {
                <[u8; 8]>::try_from(answer.as_slice())
                    .map(u64::from_le_bytes)
                    .map_err(|_| ExecError::TaskFailed("a pull answered no count".into()))
            });
        let joined = match copied {
            Ok(copied) => {
                let (meta, added) = (self.meta.clone(), r.clone());
                blocking(move || {
                    meta.update(&mut |c| c.add_follower(&added))?;
                    Ok(copied)
                })
                .await
            }
            Err(e) => Err(e),
        };
        match joined {
            Ok(copied) => {
                crate::replica_status::configuration_changed();
                if let Err(e) = self.node_action(r.leader, REOPEN_ACTION, body).await {
                    tracing::warn!(node = r.leader, error = %e, "a leader did not reopen a copied partition");
                }
                Ok(copied)
            }
            Err(e) => {
                // The leader takes writes again; what the new node copied is of no use.
                self.cancel_move(r.table_id, r.partition, r.leader, r.to)
                    .await;
                Err(e)
            }
        }
    }

    /// Hands every partition this node leads and that has a live follower to that follower
    /// (see the module comment); how many were handed over. Called when the node shuts down.
    pub async fn hand_over_all(&self, store: Store) -> usize {
        let local = self.local_node();
        let live = self.cluster.live_nodes();
        let catalog = self.meta.catalog();
        let led: Vec<_> = catalog
            .tables
            .values()
            .flat_map(|t| {
                t.partitions.iter().filter_map(|p| {
                    let to = p.followers.iter().find(|f| live.contains(f))?;
                    (p.leader == local && p.moving_to.is_none())
                        .then_some((t.id, p.index, p.epoch, *to))
                })
            })
            .collect();
        let mut closed = Vec::new();
        for (table, partition, epoch, to) in led {
            let closing = store.clone();
            let drained =
                blocking(move || Ok(closing.close_partition(table, partition, HAND_OVER_PATIENCE)))
                    .await;
            match drained {
                Ok(true) => closed.push((table, partition, epoch, to)),
                _ => tracing::warn!(
                    table,
                    partition,
                    open = describe_writers(&store, table, partition),
                    "open writers kept a partition from being handed over"
                ),
            }
        }
        let (meta, handed) = (self.meta.clone(), closed.clone());
        let changed = blocking(move || {
            let mut count = 0;
            meta.update(&mut |c| {
                count = 0;
                for (table, partition, epoch, to) in &handed {
                    match c.hand_over(*table, *partition, *epoch, local, *to) {
                        Ok(()) => count += 1,
                        Err(CoordError::ConfigurationChanged { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                // Leaders stop sending it entries without first waiting for it.
                c.leave_followers(local);
                Ok(())
            })?;
            Ok(count)
        })
        .await;
        if changed.is_ok() {
            crate::replica_status::configuration_changed();
        }
        self.cluster.leave();
        match changed {
            Ok(count) => count,
            Err(e) => {
                tracing::warn!(error = %e, "partitions could not be handed over; their followers take over once this node's lease expires");
                for (table, partition, _, _) in closed {
                    store.reopen_partition(table, partition);
                }
                0
            }
        }
    }
}

/// The transactions still writing a partition, for the log line of a copy or hand-over they
/// hold up: "transaction 12 (open 3.2s), ...".
pub(crate) fn describe_writers(store: &Store, table: u32, partition: u32) -> String {
    let open: Vec<String> = store
        .partition_writers(table, partition)
        .iter()
        .map(|(id, age)| format!("transaction {id} (open {:.1}s)", age.as_secs_f64()))
        .collect();
    match open.is_empty() {
        true => "they finished since".to_string(),
        false => open.join(", "),
    }
}
