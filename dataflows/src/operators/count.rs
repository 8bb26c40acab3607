//! Final counts per (stream, emoji) per window, emitted once the window is closed.

use std::collections::BTreeMap;

use foldhash::HashMap;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use super::CountKey;
use crate::stream::fnv1a;
use crate::window::WindowId;

/// Sums partial counts `((stream, window, emoji), n)` per epoch (the timely time) and emits each
/// epoch's `((stream, window, emoji), total)` once, when the input frontier has passed it.
pub trait CountByKey<'scope> {
    /// Exchanges partial counts by (stream, emoji), so each key is summed on one worker and one
    /// hot stream's emojis are spread over all of them.
    fn count_by_key(self) -> StreamVec<'scope, WindowId, (CountKey, u64)>;
}

impl<'scope> CountByKey<'scope> for StreamVec<'scope, WindowId, (CountKey, u64)> {
    fn count_by_key(self) -> StreamVec<'scope, WindowId, (CountKey, u64)> {
        let by_key = Exchange::new(|(key, _): &(CountKey, u64)| key_hash(key));
        self.unary_frontier(by_key, "CountByKey", |_cap, _info| {
            let mut open: BTreeMap<WindowId, (Capability<WindowId>, HashMap<CountKey, u64>)> =
                BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let (_, counts) = open
                            .entry(*cap.time())
                            .or_insert_with(|| (cap, HashMap::default()));
                        for batch in batches {
                            for (key, n) in batch.drain(..) {
                                *counts.entry(key).or_default() += n;
                            }
                        }
                    }
                });
                open.retain(|window, (cap, counts)| {
                    if frontier.less_equal(window) {
                        return true;
                    }
                    output.session(cap).give_iterator(counts.drain());
                    false
                });
            }
        })
    }
}

/// The exchange hash of a key: the same in every process (std's hasher is seeded).
pub fn key_hash((stream, _window, emoji): &CountKey) -> u64 {
    fnv1a(stream.stable_hash() ^ 0xff, emoji.as_str().as_bytes())
}
