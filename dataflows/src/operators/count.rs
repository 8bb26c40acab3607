//! Final counts per emoji per window, emitted once the window is closed.

use std::collections::{BTreeMap, HashMap};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use crate::emoji::Emoji;
use crate::window::WindowId;

/// Sums partial counts `(emoji, n)` per window (the timely time) and emits each window's
/// `(emoji, total)` once, when the input frontier has passed the window.
pub trait CountByEmoji<'scope> {
    /// Exchanges partial counts by emoji, so each emoji is summed on one worker.
    fn count_by_emoji(self) -> StreamVec<'scope, WindowId, (Emoji, u64)>;
}

impl<'scope> CountByEmoji<'scope> for StreamVec<'scope, WindowId, (Emoji, u64)> {
    fn count_by_emoji(self) -> StreamVec<'scope, WindowId, (Emoji, u64)> {
        let by_emoji = Exchange::new(|(emoji, _): &(Emoji, u64)| emoji_hash(emoji));
        self.unary_frontier(by_emoji, "CountByEmoji", |_cap, _info| {
            let mut open: BTreeMap<WindowId, (Capability<WindowId>, HashMap<Emoji, u64>)> =
                BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let (_, counts) = open
                            .entry(*cap.time())
                            .or_insert_with(|| (cap, HashMap::new()));
                        for batch in batches {
                            for (emoji, n) in batch.drain(..) {
                                *counts.entry(emoji).or_default() += n;
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

/// A hash of the emoji's text that is the same in every process (std's hasher is seeded).
fn emoji_hash(emoji: &Emoji) -> u64 {
    // FNV-1a: tiny, stable, and good enough to spread a few thousand keys.
    emoji.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
