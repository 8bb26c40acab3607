//! Gathers each closed window's counts into one [`WindowSummary`], in window order, and fills
//! in the windows nobody reacted in.

use std::collections::BTreeMap;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use super::frontier_min;
use crate::summary::{EmojiCount, WindowSummary};
use crate::window::{WindowId, Windowing};

/// Which windows without reactions are emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyWindows {
    /// Those between the first and the last window with reactions (bounded inputs: replay).
    BetweenData,
    /// Every window from this one on, as it closes (live streams: a steady tick).
    From(WindowId),
}

/// Builds window summaries from scaled counts.
pub trait Summarize<'scope> {
    /// One [`WindowSummary`] per window, on worker 0, emitted in window order as windows close.
    fn summarize(
        self,
        windowing: Windowing,
        empty: EmptyWindows,
    ) -> StreamVec<'scope, WindowId, WindowSummary>;
}

impl<'scope> Summarize<'scope> for StreamVec<'scope, WindowId, EmojiCount> {
    fn summarize(
        self,
        windowing: Windowing,
        empty: EmptyWindows,
    ) -> StreamVec<'scope, WindowId, WindowSummary> {
        // A window's counts must meet in one place; they are a few records per window, so one
        // worker is plenty, and it makes emitting in order and filling gaps a local matter.
        let to_first = Exchange::new(|_: &EmojiCount| 0);
        let first_worker = self.scope().index() == 0;
        self.unary_frontier(to_first, "Summarize", move |clock, _info| {
            // Held at the lowest window this operator may still emit empty, so gaps can be
            // filled after the frontier has passed them. Only worker 0 summarizes.
            let mut clock: Option<Capability<WindowId>> = first_worker.then_some(clock);
            let mut closed_with_data: BTreeMap<WindowId, (Capability<WindowId>, Vec<EmojiCount>)> =
                BTreeMap::new();
            let mut next: Option<WindowId> = match empty {
                EmptyWindows::BetweenData => None,
                EmptyWindows::From(first) => Some(first),
            };
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let window = *cap.time();
                        let entry = closed_with_data
                            .entry(window)
                            .or_insert_with(|| (cap, Vec::new()));
                        for batch in batches {
                            entry.1.append(batch);
                        }
                    }
                });
                let done_below = frontier_min(frontier);
                // Windows with data that are complete, in order.
                let complete: Vec<WindowId> = closed_with_data
                    .range(..done_below.unwrap_or(WindowId::MAX))
                    .map(|(w, _)| *w)
                    .collect();
                if next.is_none() {
                    next = complete.first().copied();
                }
                let Some(clock_cap) = clock.as_ref() else {
                    return;
                };
                for window in complete {
                    // Empty windows between the last emitted one and this one.
                    while let Some(gap) = next.filter(|n| *n < window) {
                        let summary = WindowSummary::new(gap, &windowing, Vec::new());
                        output.session(&clock_cap.delayed(&gap)).give(summary);
                        next = Some(gap + 1);
                    }
                    if let Some((cap, counts)) = closed_with_data.remove(&window) {
                        output
                            .session(&cap)
                            .give(WindowSummary::new(window, &windowing, counts));
                    }
                    next = Some(next.map_or(window + 1, |n| n.max(window + 1)));
                }
                if let (EmptyWindows::From(_), Some(done_below), Some(n)) =
                    (empty, done_below, next)
                {
                    for gap in n..done_below {
                        output
                            .session(&clock_cap.delayed(&gap))
                            .give(WindowSummary::new(gap, &windowing, Vec::new()));
                    }
                    next = Some(n.max(done_below));
                }
                match done_below {
                    None => clock = None,
                    Some(done_below) => {
                        let hold = next.map_or(done_below, |n| n.min(done_below));
                        if let Some(cap) = clock.as_mut() {
                            cap.downgrade(&hold.max(*cap.time()));
                        }
                    }
                }
            }
        })
    }
}
