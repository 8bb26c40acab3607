//! Gathers each closed window's counts into one [`WindowSummary`] per stream, in window order,
//! and decides which windows without reactions a stream still gets (the idle rule). With
//! corrections, an epoch also brings the changed counts of earlier windows: each goes out whole,
//! its revision one more than the last emitted, before the epoch's own windows.
//!
//! A stream is active from the window of its first counted reaction: after each window in which
//! it has reactions it gets the next `idle_windows` windows, empty or not; past them it gets none
//! until its next reaction, and its state is freed. A reaction that corrects an earlier window
//! counts as a reaction in that window. The default stream (reactions that name
//! none) never idles: clients written before streams existed get the steady tick they always
//! had, and a replay of such input the same lines. Which (stream, window) pairs are emitted
//! depends only on the windows that have reactions, so it is the same for any split of workers
//! and processes, live or replayed.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use super::{frontier_min, WindowCount};
use crate::dataflow::Settings;
use crate::stream::StreamId;
use crate::summary::{EmojiCount, WindowSummary};
use crate::window::WindowId;

/// Where summarizing starts, and the streams already active there (a restart rebuilds them
/// from the windows it had written).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// The first window to emit; `None` starts at the first window with reactions (bounded
    /// inputs: replay).
    pub from: Option<WindowId>,
    /// Active streams and the last window, before `from`, in which each had reactions.
    pub last_reacted: HashMap<StreamId, WindowId>,
    /// The latest emission, before `from`, of each (stream, window) that may still be
    /// corrected: a restart rebuilds them from the windows topic, so corrections go on from
    /// their counts and revisions.
    pub recent: Vec<WindowSummary>,
}

impl Activity {
    /// Start at `from` with no stream active.
    pub fn from(from: WindowId) -> Activity {
        Activity {
            from: Some(from),
            ..Activity::default()
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

/// A stream id with its [`StreamId::order_prefix`]: ordered as the ids are (byte order), mostly
/// by comparing the integers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ordered {
    prefix: u128,
    id: StreamId,
}

impl Ordered {
    fn new(id: StreamId) -> Self {
        Ordered {
            prefix: id.order_prefix(),
            id,
        }
    }
}

/// Builds window summaries from final counts.
pub trait Summarize<'scope> {
    /// One [`WindowSummary`] per emitted (stream, window), on worker 0, emitted in epoch order as
    /// epochs close: first the epoch's corrections of earlier windows (by stream, then window),
    /// then the epoch's own window of each stream (in byte order). When the input ends, nothing
    /// is emitted past the last epoch with counts.
    fn summarize(
        self,
        settings: &Settings,
        activity: Activity,
    ) -> StreamVec<'scope, WindowId, WindowSummary>;
}

/// Counts of one closed epoch, in arrival order, with the capability they came at. Sorted once,
/// when the epoch is emitted: cheaper than keeping a map per epoch sorted as thousands of
/// streams' counts arrive.
type Closed = (Capability<WindowId>, Vec<WindowCount>);

/// What has been emitted of the windows that may still be corrected, so a correction gets the
/// next revision.
///
/// A window's own emission is revision 0 for every stream it goes out for: those are kept as
/// the window's streams in byte order (the order the walk emits them in), which costs a clone
/// each and no hashing; only windows emitted again (or first by a correction) get an entry with
/// their last revision. With thousands of streams a map entry per emitted window was a good part
/// of summarizing.
#[derive(Default)]
struct Revisions {
    /// The streams each window went out for at its own epoch, sorted.
    first: BTreeMap<WindowId, Vec<StreamId>>,
    /// The last revision of windows emitted by corrections.
    again: BTreeMap<WindowId, foldhash::HashMap<StreamId, u32>>,
}

impl Revisions {
    fn from_activity(recent: &[WindowSummary]) -> Revisions {
        let mut out = Revisions::default();
        for summary in recent {
            let held = out.again.entry(summary.window).or_default();
            let revision = held.entry(summary.stream_id.clone()).or_default();
            *revision = (*revision).max(summary.revision);
        }
        out
    }

    /// Records the streams `window` went out for at its own epoch.
    fn first_emitted(&mut self, window: WindowId, streams: Vec<StreamId>) {
        match self.first.entry(window) {
            Entry::Vacant(entry) => {
                entry.insert(streams);
            }
            Entry::Occupied(mut entry) => {
                // Emitted twice at its epoch (a broken invariant upstream): both go in order.
                let all = entry.get_mut();
                all.extend(streams);
                all.sort_unstable();
                all.dedup();
            }
        }
    }

    /// The revision a new emission of `stream`'s `window` gets, recorded as emitted.
    fn next(&mut self, stream: &StreamId, window: WindowId) -> u32 {
        let again = self.again.entry(window).or_default();
        if let Some(revision) = again.get_mut(stream) {
            *revision += 1;
            return *revision;
        }
        let emitted = self
            .first
            .get(&window)
            .is_some_and(|streams| streams.binary_search(stream).is_ok());
        let revision = u32::from(emitted);
        again.insert(stream.clone(), revision);
        revision
    }

    /// Forgets windows below `oldest`, which can no longer be corrected.
    fn forget_below(&mut self, oldest: WindowId) {
        self.first = self.first.split_off(&oldest);
        self.again = self.again.split_off(&oldest);
    }
}

impl<'scope> Summarize<'scope> for StreamVec<'scope, WindowId, WindowCount> {
    fn summarize(
        self,
        settings: &Settings,
        activity: Activity,
    ) -> StreamVec<'scope, WindowId, WindowSummary> {
        // A window's counts must meet in one place to be emitted in order with the idle rule
        // applied; they are one record per (stream, emoji) after counting, so one worker is
        // plenty, and it makes ordering and filling gaps a local matter.
        let to_first = Exchange::new(|_: &WindowCount| 0);
        let first_worker = self.scope().index() == 0;
        let windowing = settings.windowing;
        let idle_windows = settings.idle_windows;
        let horizon = settings.correction_windows();
        self.unary_frontier(to_first, "Summarize", move |clock, _info| {
            // Held at the lowest window this operator may still emit empty, so gaps can be
            // filled after the frontier has passed them. Only worker 0 summarizes.
            let mut clock: Option<Capability<WindowId>> = first_worker.then_some(clock);
            let mut closed: BTreeMap<WindowId, Closed> = BTreeMap::new();
            let mut next: Option<WindowId> = activity.from;
            // Ordered by stream, so a window's lines come out of one ordered walk over the active
            // streams and the window's counts, with no lookups and no sort of thousands of ids.
            let mut active: BTreeMap<Ordered, WindowId> = activity
                .last_reacted
                .iter()
                .map(|(id, last)| (Ordered::new(id.clone()), *last))
                .collect();
            let mut revisions = Revisions::from_activity(&activity.recent);
            // Counts at epochs below the start are the recent windows' own, fed back in so
            // corrections of them add up (see `Activity::recent`): nothing to emit.
            let seeded_below = activity.from.unwrap_or(0);
            let mut last_with_data: Option<WindowId> = None;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let epoch = *cap.time();
                        if epoch < seeded_below {
                            return;
                        }
                        last_with_data = last_with_data.max(Some(epoch));
                        let (_, counts) = closed.entry(epoch).or_insert_with(|| (cap, Vec::new()));
                        for batch in batches {
                            counts.append(batch);
                        }
                    }
                });
                let Some(clock_cap) = clock.as_ref() else {
                    return;
                };
                let done_below = frontier_min(frontier);
                // Every epoch below `limit` is complete; once the input has ended, nothing past
                // the last epoch with counts is emitted.
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
                    let (cap, counts) = match closed.remove(&window) {
                        Some((cap, counts)) => (cap, counts),
                        None => (clock_cap.delayed(&window), Vec::new()),
                    };
                    let (mut fixes, counts): (Vec<WindowCount>, Vec<WindowCount>) =
                        counts.into_iter().partition(|(_, w, _)| *w < window);
                    let mut session = output.session(&cap);
                    if !fixes.is_empty() {
                        fixes.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                        let mut fixes = fixes.into_iter().peekable();
                        while let Some((stream, fixed, first)) = fixes.next() {
                            let mut emojis = vec![first];
                            while let Some((_, _, count)) =
                                fixes.next_if(|(s, w, _)| *s == stream && *w == fixed)
                            {
                                emojis.push(count);
                            }
                            let mut summary =
                                WindowSummary::new(stream.clone(), fixed, &windowing, emojis);
                            summary.revision = revisions.next(&stream, fixed);
                            session.give(summary);
                            let last = active.entry(Ordered::new(stream)).or_insert(fixed);
                            *last = (*last).max(fixed);
                        }
                    }
                    // Sorted on each id's first 16 bytes, read once, and by the whole id only
                    // where those tie: thousands of streams' counts took a dozen calls to the
                    // ids' comparison each, and the walk below two more per active stream.
                    let mut keyed: Vec<(Ordered, EmojiCount)> = counts
                        .into_iter()
                        .map(|(stream, _, count)| (Ordered::new(stream), count))
                        .collect();
                    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    // Streams with counts that were not active; the active ones are updated
                    // in the walk, sparing a lookup each.
                    let mut started = Vec::new();
                    let mut data = keyed.into_iter().peekable();
                    // The streams the window goes out for, if it may be corrected later.
                    let mut emitted = Vec::new();
                    let mut emit = |summary: WindowSummary| {
                        if horizon > 0 {
                            emitted.push(summary.stream_id.clone());
                        }
                        session.give(summary);
                    };
                    let with_counts =
                        |stream: Ordered, first: EmojiCount, data: &mut std::iter::Peekable<_>| {
                            let mut emojis = vec![first];
                            while let Some((_, count)) =
                                data.next_if(|(s, _): &(Ordered, EmojiCount)| *s == stream)
                            {
                                emojis.push(count);
                            }
                            WindowSummary::new(stream.id, window, &windowing, emojis)
                        };
                    for (key, last) in active.iter_mut() {
                        while let Some((stream, first)) = data.next_if(|(s, _)| s < key) {
                            started.push(stream.clone());
                            emit(with_counts(stream, first, &mut data));
                        }
                        if let Some((stream, first)) = data.next_if(|(s, _)| s == key) {
                            *last = window;
                            emit(with_counts(stream, first, &mut data));
                        } else if *last < window
                            && still_active(&key.id, *last, window, idle_windows)
                        {
                            emit(WindowSummary::new(
                                key.id.clone(),
                                window,
                                &windowing,
                                Vec::new(),
                            ));
                        }
                    }
                    while let Some((stream, first)) = data.next() {
                        started.push(stream.clone());
                        emit(with_counts(stream, first, &mut data));
                    }
                    drop(session);
                    if horizon > 0 {
                        revisions.first_emitted(window, emitted);
                    }
                    for stream in started {
                        active.insert(stream, window);
                    }
                    active
                        .retain(|key, last| still_active(&key.id, *last, window + 1, idle_windows));
                    revisions.forget_below((window + 1).saturating_sub(horizon));
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
