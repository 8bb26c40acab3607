//! The dataflow's operators, one verb each, as extension traits on timely streams.

mod count;
mod scale;
mod summarize;

pub use count::CountByKey;
pub use scale::Scale;
pub use summarize::{Activity, Summarize};

use std::collections::HashMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::emoji::Emoji;
use crate::stream::StreamId;
use crate::window::WindowId;

/// What is counted: one emoji in one stream. Its window is the timely time it travels at.
pub type CountKey = (StreamId, Emoji);

/// The output handle of an operator that emits partial counts `((stream, emoji), n)`.
pub type PartialCountOutput<'a> =
    OutputBuilderSession<'a, WindowId, CapacityContainerBuilder<Vec<(CountKey, u64)>>>;

/// Counts per (window, stream, emoji) gathered by a source before they are emitted. Keyed by
/// stream first so a reaction is counted without allocating its stream id once the stream has
/// been seen.
#[derive(Debug, Default)]
pub struct PartialCounts {
    by_stream: HashMap<StreamId, HashMap<(WindowId, Emoji), u64>>,
}

impl PartialCounts {
    /// Counts `n` reactions of `emoji` in `stream`'s `window`; `stream` must already be a valid
    /// stream id (as [`crate::reaction::ReactionRef::stream_id`] is). An invalid one is counted
    /// in the default stream rather than lost.
    pub fn add(&mut self, window: WindowId, stream: &str, emoji: Emoji, n: u64) {
        if let Some(counts) = self.by_stream.get_mut(stream) {
            *counts.entry((window, emoji)).or_default() += n;
            return;
        }
        let id = StreamId::parse(stream).unwrap_or_default();
        self.add_owned(window, id, emoji, n);
    }

    /// Counts `n` reactions of `emoji` in `stream`'s `window`.
    pub fn add_owned(&mut self, window: WindowId, stream: StreamId, emoji: Emoji, n: u64) {
        *self
            .by_stream
            .entry(stream)
            .or_default()
            .entry((window, emoji))
            .or_default() += n;
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.by_stream.is_empty()
    }

    /// Takes every count out, ordered by window, stream and emoji.
    pub fn drain_sorted(&mut self) -> Vec<(WindowId, StreamId, Emoji, u64)> {
        let mut all: Vec<_> = self
            .by_stream
            .drain()
            .flat_map(|(stream, counts)| {
                counts
                    .into_iter()
                    .map(move |((window, emoji), n)| (window, stream.clone(), emoji, n))
            })
            .collect();
        all.sort_unstable();
        all
    }
}

/// Emits (and clears) a source's partial counts, each at its window's timely time, using the
/// source's capability `held`. Sources only count reactions for windows at or above their
/// watermark, where `held` stands, so nothing should be below it; counts that are (a broken
/// invariant) are not emitted, and their number is returned for the caller to count as late.
pub fn give_partial_counts(
    held: &Capability<WindowId>,
    output: &mut PartialCountOutput<'_>,
    counts: &mut PartialCounts,
) -> u64 {
    if counts.is_empty() {
        return 0;
    }
    let ready = counts.drain_sorted();
    let mut refused = 0;
    for chunk in ready.chunk_by(|a, b| a.0 == b.0) {
        let window = chunk[0].0;
        match held.try_delayed(&window) {
            Some(at) => output.session(&at).give_iterator(
                chunk
                    .iter()
                    .map(|(_, stream, emoji, n)| ((stream.clone(), *emoji), *n)),
            ),
            None => refused += chunk.iter().map(|(_, _, _, n)| *n).sum::<u64>(),
        }
    }
    refused
}

/// The least time an input may still deliver, or `None` once it is finished.
fn frontier_min(frontier: &MutableAntichain<WindowId>) -> Option<WindowId> {
    frontier.frontier().iter().copied().min()
}
