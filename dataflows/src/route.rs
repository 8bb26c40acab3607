//! The delivery tree: clusters of subscribers, one hub per (cluster, subscriber), and which
//! worker owns each hub.
//!
//! Hubs are numbered in the order the tree gets them (the initial tree cluster by cluster, then
//! each subscriber added at capacity). Exactly one worker owns each hub, [`hub_owner`], so a
//! window published to it arrives once, on one thread, in window order; that worker's process
//! ([`crate::deployment::Deployment::process_of`]) serves the hub's event stream.

use serde::{Deserialize, Serialize};

/// One subscriber in one cluster: the address of a hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HubId {
    /// Cluster index, from 0.
    pub cluster: u32,
    /// Subscriber index within the cluster, from 0.
    pub subscriber: u32,
}

/// The shape of the initial delivery tree.
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
    /// Every hub, cluster by cluster: the order of their indexes.
    pub fn hubs(&self) -> impl Iterator<Item = HubId> + '_ {
        (0..self.clusters).flat_map(move |cluster| {
            (0..self.subscribers).map(move |subscriber| HubId {
                cluster,
                subscriber,
            })
        })
    }
}

/// The worker, of `peers`, that owns hub number `hub`: hubs are dealt round-robin.
pub fn hub_owner(hub: usize, peers: usize) -> usize {
    hub % peers.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubs_are_dealt_round_robin() {
        let owners: Vec<_> = (0..9).map(|h| hub_owner(h, 4)).collect();
        assert_eq!(owners, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert!((0..9).all(|h| hub_owner(h, 1) == 0));
        assert_eq!(hub_owner(5, 0), 0, "no peers counts as one");
    }

    #[test]
    fn the_initial_tree_is_numbered_cluster_by_cluster() {
        let t = Topology {
            clusters: 2,
            subscribers: 2,
        };
        let hubs: Vec<_> = t.hubs().map(|h| (h.cluster, h.subscriber)).collect();
        assert_eq!(hubs, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    }
}
