//! Gathers each closed window's counts into one [`WindowSummary`] per stream, in window order,
//! and decides which windows without reactions a stream still gets (the idle rule).
//!
//! A stream is active from the window of its first counted reaction: after each window in which
//! it has reactions it gets the next `idle_windows` windows, empty or not; past them it gets none
//! until its next reaction, and its state is freed. The default stream (reactions that name
//! none) never idles: clients written before streams existed get the steady tick they always
//! had, and a replay of such input the same lines. Which (stream, window) pairs are emitted
//! depends only on the windows that have reactions, so it is the same for any split of workers
//! and processes, live or replayed.

use std::collections::{BTreeMap, HashMap};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use super::frontier_min;
use crate::stream::StreamId;
use crate::summary::{EmojiCount, WindowSummary};
use crate::window::{WindowId, Windowing};

/// Where summarizing starts, and the streams already active there (a restart rebuilds them
/// from the windows it had written).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// The first window to emit; `None` starts at the first window with reactions (bounded
    /// inputs: replay).
    pub from: Option<WindowId>,
    /// Active streams and the last window, before `from`, in which each had reactions.
    pub last_reacted: HashMap<StreamId, WindowId>,
}

impl Activity {
    /// Start at `from` with no stream active.
    pub fn from(from: WindowId) -> Activity {
        Activity {
            from: Some(from),
            last_reacted: HashMap::new(),
        }
    }

    /// The same, with the default stream ticking from `from` on, as a live run's does.
    pub fn ticking(mut self) -> Activity {
        if let Some(from) = self.from {
            self.last_reacted
                .entry(StreamId::default())
                .or_insert(from.saturating_sub(1));
        }
        self
    }
}

/// Whether a stream that last had reactions in `last` still gets `window`.
fn still_active(stream: &StreamId, last: WindowId, window: WindowId, idle_windows: u64) -> bool {
    stream.as_str() == StreamId::DEFAULT || window <= last.saturating_add(idle_windows)
}

/// Builds window summaries from scaled counts.
pub trait Summarize<'scope> {
    /// One [`WindowSummary`] per emitted (stream, window), on worker 0, emitted in window order
    /// (streams in byte order within a window) as windows close. When the input ends, nothing is
    /// emitted past the last window with reactions.
    fn summarize(
        self,
        windowing: Windowing,
        idle_windows: u64,
        activity: Activity,
    ) -> StreamVec<'scope, WindowId, WindowSummary>;
}

/// Counts of one closed window, `(stream, count)` in arrival order, with the capability they
/// came at. Sorted by stream once, when the window is emitted: cheaper than keeping a map per
/// window sorted as thousands of streams' counts arrive.
type Closed = (Capability<WindowId>, Vec<(StreamId, EmojiCount)>);

impl<'scope> Summarize<'scope> for StreamVec<'scope, WindowId, (StreamId, EmojiCount)> {
    fn summarize(
        self,
        windowing: Windowing,
        idle_windows: u64,
        activity: Activity,
    ) -> StreamVec<'scope, WindowId, WindowSummary> {
        // A window's counts must meet in one place to be emitted in order with the idle rule
        // applied; they are one record per (stream, emoji) after counting, so one worker is
        // plenty, and it makes ordering and filling gaps a local matter.
        let to_first = Exchange::new(|_: &(StreamId, EmojiCount)| 0);
        let first_worker = self.scope().index() == 0;
        self.unary_frontier(to_first, "Summarize", move |clock, _info| {
            // Held at the lowest window this operator may still emit empty, so gaps can be
            // filled after the frontier has passed them. Only worker 0 summarizes.
            let mut clock: Option<Capability<WindowId>> = first_worker.then_some(clock);
            let mut closed: BTreeMap<WindowId, Closed> = BTreeMap::new();
            let mut next: Option<WindowId> = activity.from;
            // Ordered by stream, so a window's lines come out of one ordered walk over the active
            // streams and the window's counts, with no lookups and no sort of thousands of ids.
            let mut active: BTreeMap<StreamId, WindowId> =
                activity.last_reacted.clone().into_iter().collect();
            let mut last_with_data: Option<WindowId> = None;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let window = *cap.time();
                        last_with_data = last_with_data.max(Some(window));
                        let (_, counts) = closed.entry(window).or_insert_with(|| (cap, Vec::new()));
                        for batch in batches {
                            counts.append(batch);
                        }
                    }
                });
                let Some(clock_cap) = clock.as_ref() else {
                    return;
                };
                let done_below = frontier_min(frontier);
                // Every window below `limit` is complete; once the input has ended, nothing past
                // the last window with reactions is emitted.
                let limit = match done_below {
                    Some(d) => d,
                    None => last_with_data.map_or(0, |w| w + 1),
                };
                loop {
                    let first_closed = closed.first_key_value().map(|(w, _)| *w);
                    let window = match (next, first_closed) {
                        // Counts below where emitting stands (a broken invariant upstream):
                        // emitted as they are rather than lost.
                        (Some(n), Some(c)) if c < n => c,
                        // Nobody is active: skip straight to the next window with reactions.
                        (_, Some(c)) if active.is_empty() => c,
                        (Some(n), _) if !active.is_empty() => n,
                        _ => break,
                    };
                    if window >= limit {
                        break;
                    }
                    let (cap, mut counts) = match closed.remove(&window) {
                        Some((cap, counts)) => (cap, counts),
                        None => (clock_cap.delayed(&window), Vec::new()),
                    };
                    counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    let mut with_data = Vec::new();
                    let mut session = output.session(&cap);
                    let mut data = counts.into_iter().peekable();
                    let mut emit_data =
                        |stream: StreamId, first: EmojiCount, data: &mut std::iter::Peekable<_>| {
                            let mut emojis = vec![first];
                            while let Some((_, count)) =
                                data.next_if(|(s, _): &(StreamId, _)| *s == stream)
                            {
                                emojis.push(count);
                            }
                            with_data.push(stream.clone());
                            WindowSummary::new(stream, window, &windowing, emojis)
                        };
                    for (id, last) in &active {
                        while let Some((stream, first)) = data.next_if(|(s, _)| s < id) {
                            session.give(emit_data(stream, first, &mut data));
                        }
                        if let Some((stream, first)) = data.next_if(|(s, _)| s == id) {
                            session.give(emit_data(stream, first, &mut data));
                        } else if *last < window && still_active(id, *last, window, idle_windows) {
                            session.give(WindowSummary::new(
                                id.clone(),
                                window,
                                &windowing,
                                Vec::new(),
                            ));
                        }
                    }
                    while let Some((stream, first)) = data.next() {
                        session.give(emit_data(stream, first, &mut data));
                    }
                    drop(session);
                    for stream in with_data {
                        active.insert(stream, window);
                    }
                    active.retain(|id, last| still_active(id, *last, window + 1, idle_windows));
                    if next.is_none_or(|n| n <= window) {
                        next = Some(window + 1);
                    }
                }
                match done_below {
                    None => clock = None,
                    Some(done_below) => {
                        // With nobody active, the next emission is at a window with reactions,
                        // which brings its own capability: the clock need not hold anything back.
                        let hold = match next {
                            Some(n) if !active.is_empty() => n.min(done_below),
                            _ => done_below,
                        };
                        if let Some(cap) = clock.as_mut() {
                            cap.downgrade(&hold.max(*cap.time()));
                        }
                    }
                }
            }
        })
    }
}
