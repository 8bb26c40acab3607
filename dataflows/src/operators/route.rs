//! Routes every window summary to every (cluster, subscriber) partition's owning worker.

use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Exchange;
use timely::dataflow::StreamVec;

use crate::route::{Partition, Topology};
use crate::summary::WindowSummary;
use crate::window::WindowId;

/// Fans summaries out to the delivery tree.
pub trait RouteToSubscribers<'scope> {
    /// Each summary once per partition, delivered on the worker that owns the partition
    /// ([`Topology::owner`]).
    fn route_to_subscribers(
        self,
        topology: Topology,
    ) -> StreamVec<'scope, WindowId, (Partition, WindowSummary)>;
}

impl<'scope> RouteToSubscribers<'scope> for StreamVec<'scope, WindowId, WindowSummary> {
    fn route_to_subscribers(
        self,
        topology: Topology,
    ) -> StreamVec<'scope, WindowId, (Partition, WindowSummary)> {
        let peers = self.scope().peers();
        self.flat_map(move |summary| {
            topology
                .partitions()
                .map(move |p| (p, summary.clone()))
                .collect::<Vec<_>>()
        })
        // The owner index is the exchange hash: timely sends hash h to worker h % peers.
        .exchange(move |(partition, _): &(Partition, WindowSummary)| {
            topology.owner(*partition, peers) as u64
        })
    }
}
