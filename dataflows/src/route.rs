//! The delivery tree: clusters of subscribers, and which worker owns each subscriber.
//!
//! Every (cluster, subscriber) pair is one partition of the dataflow's output. Exactly one worker
//! owns it, so a summary routed to it arrives once, on one thread, in window order.

use serde::{Deserialize, Serialize};

/// One subscriber in one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Partition {
    /// Cluster index, from 0.
    pub cluster: u32,
    /// Subscriber index within the cluster, from 0.
    pub subscriber: u32,
}

/// The shape of the delivery tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Number of clusters (default 3).
    pub clusters: u32,
    /// Subscribers per cluster (default 3).
    pub subscribers: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            clusters: 3,
            subscribers: 3,
        }
    }
}

impl Topology {
    /// Every partition, cluster by cluster.
    pub fn partitions(&self) -> impl Iterator<Item = Partition> + '_ {
        (0..self.clusters).flat_map(move |cluster| {
            (0..self.subscribers).map(move |subscriber| Partition {
                cluster,
                subscriber,
            })
        })
    }

    /// The worker (of `peers`) that owns a partition: partitions are dealt round-robin.
    pub fn owner(&self, partition: Partition, peers: usize) -> usize {
        let flat =
            partition.cluster as usize * self.subscribers as usize + partition.subscriber as usize;
        flat % peers.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_dealt_round_robin() {
        let t = Topology::default();
        let owners: Vec<_> = t.partitions().map(|p| t.owner(p, 4)).collect();
        assert_eq!(owners, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert!(t.partitions().all(|p| t.owner(p, 1) == 0));
    }
}
