//! The dataflow's operators, one verb each, as extension traits on timely streams.

mod count;
mod scale;
mod summarize;

pub use count::CountByEmoji;
pub use scale::Scale;
pub use summarize::{EmptyWindows, Summarize};

use std::collections::HashMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::emoji::Emoji;
use crate::window::WindowId;

/// The output handle of an operator that emits partial counts `(emoji, n)`.
pub type PartialCountOutput<'a> =
    OutputBuilderSession<'a, WindowId, CapacityContainerBuilder<Vec<(Emoji, u64)>>>;

/// Emits (and clears) a source's partial counts, each at its window's timely time, using the
/// source's capability `held`. Sources only count reactions for windows at or above their
/// watermark, where `held` stands, so nothing should be below it; counts that are (a broken
/// invariant) are not emitted, and their number is returned for the caller to count as late.
pub fn give_partial_counts(
    held: &Capability<WindowId>,
    output: &mut PartialCountOutput<'_>,
    counts: &mut HashMap<(WindowId, Emoji), u64>,
) -> u64 {
    let mut ready: Vec<_> = counts.drain().collect();
    ready.sort_unstable_by_key(|((window, _), _)| *window);
    let mut refused = 0;
    for chunk in ready.chunk_by(|a, b| a.0 .0 == b.0 .0) {
        let window = chunk[0].0 .0;
        match held.try_delayed(&window) {
            Some(at) => output
                .session(&at)
                .give_iterator(chunk.iter().map(|((_, emoji), n)| (*emoji, *n))),
            None => refused += chunk.iter().map(|(_, n)| *n).sum::<u64>(),
        }
    }
    refused
}

/// The least time an input may still deliver, or `None` once it is finished.
fn frontier_min(frontier: &MutableAntichain<WindowId>) -> Option<WindowId> {
    frontier.frontier().iter().copied().min()
}
