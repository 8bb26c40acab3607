//! Corrections: the counts of every (stream, window) within the correction horizon kept as a
//! differential-dataflow collection, so a late reaction (arriving at a later epoch, its own
//! window in its key) changes its window's counts and the whole changed window comes out again.
//!
//! ```text
//! counts ((stream, window, emoji), n) @ epoch ─▶ Expire ─▶ reduce by (stream, window) ─▶ Changes
//!   (+n at the epoch; −n once the window      (the window's emoji counts,     (each window's new
//!    has passed the horizon: state freed)      retracted and re-emitted        counts, scaled)
//!                                              when they change)
//! ```
//! A window's first emission comes out at its own epoch, as the plain pipeline's does; a
//! correction at the epoch of the late reactions that caused it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use differential_dataflow::AsCollection;
use foldhash::{HashMap, HashSet};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use super::{frontier_min, CountKey, WindowCount};
use crate::emoji::Emoji;
use crate::scale::ScaleRule;
use crate::stream::StreamId;
use crate::summary::EmojiCount;
use crate::window::WindowId;

/// What corrections hold, summed over the workers that share it: (stream, window) pairs and
/// (stream, window, emoji) keys within the horizon. Both return to zero once every window has
/// passed it.
#[derive(Debug, Default)]
pub struct HeldState {
    windows: AtomicUsize,
    keys: AtomicUsize,
}

impl HeldState {
    /// (stream, window) pairs held.
    pub fn windows(&self) -> usize {
        self.windows.load(Ordering::Relaxed)
    }

    /// (stream, window, emoji) keys held.
    pub fn keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    fn keys_added(&self, keys: usize) {
        self.keys.fetch_add(keys, Ordering::Relaxed);
    }

    fn keys_freed(&self, keys: usize) {
        self.keys.fetch_sub(keys, Ordering::Relaxed);
    }
}

/// Counts that correct their windows.
pub trait Correct<'scope> {
    /// Final counts per (stream, window, emoji), at the epoch they became final: every window at
    /// its own epoch, and again, whole, at each later epoch whose late reactions changed it. A
    /// window is held for `horizon_windows` epochs after its own and then freed; `held` follows
    /// how much is held.
    fn correct(
        self,
        horizon_windows: u64,
        rule: ScaleRule,
        held: Arc<HeldState>,
    ) -> StreamVec<'scope, WindowId, WindowCount>;
}

impl<'scope> Correct<'scope> for StreamVec<'scope, WindowId, (CountKey, u64)> {
    fn correct(
        self,
        horizon_windows: u64,
        rule: ScaleRule,
        held: Arc<HeldState>,
    ) -> StreamVec<'scope, WindowId, WindowCount> {
        let windows = expire(self, horizon_windows, Arc::clone(&held))
            .as_collection()
            .map(|(stream, window, emoji)| ((HashedStream::new(stream), window), emoji))
            .reduce(|_window, emojis: &[(&Emoji, isize)], output| {
                let counts: Vec<(Emoji, u64)> = emojis
                    .iter()
                    .map(|(emoji, n)| (**emoji, (*n).max(0) as u64))
                    .collect();
                output.push((counts, 1isize));
            });
        windows
            .inner
            .unary(Pipeline, "Changes", move |_cap, _info| {
                // The windows whose counts are held: each (stream, window) is reduced on one
                // worker, so counting them here counts each once.
                let mut live: HashSet<(StreamId, WindowId)> = HashSet::default();
                move |input, output| {
                    input.for_each_stamp(|cap, batches| {
                        let Some(cap) = cap.retain_least(output.output_index()) else {
                            return;
                        };
                        for batch in batches {
                            for (((stream, window), counts), epoch, diff) in batch.drain(..) {
                                let stream = stream.id;
                                // The retraction of a window's previous counts (or of the whole
                                // window, once past the horizon) says nothing new.
                                if diff <= 0 {
                                    if epoch > window.saturating_add(horizon_windows)
                                        && live.remove(&(stream, window))
                                    {
                                        held.windows.fetch_sub(1, Ordering::Relaxed);
                                    }
                                    continue;
                                }
                                if live.insert((stream.clone(), window)) {
                                    held.windows.fetch_add(1, Ordering::Relaxed);
                                }
                                let at = cap.delayed(&epoch);
                                let mut session = output.session(&at);
                                for (emoji, count) in counts {
                                    session.give((
                                        stream.clone(),
                                        window,
                                        EmojiCount::scaled(emoji, count, rule),
                                    ));
                                }
                            }
                        }
                    });
                }
            })
    }
}

/// Differential updates of partial counts: each `+n` at its epoch, and its `−n` at the first
/// epoch past its window's horizon, so the collection holds only windows that can still change.
///
/// The operator holds one capability, never ahead of its input's frontier: a capability held at
/// a retraction's future epoch would let the frontier downstream run ahead of the input, and
/// summarizing would take the epochs in between for empty ones. Retractions go out once the
/// input has reached their epoch, and are dropped when the input ends (everything is freed
/// then).
fn expire<'scope>(
    counts: StreamVec<'scope, WindowId, (CountKey, u64)>,
    horizon_windows: u64,
    state: Arc<HeldState>,
) -> StreamVec<'scope, WindowId, (CountKey, WindowId, isize)> {
    counts.unary_frontier(Pipeline, "Expire", move |cap, _info| {
        let mut held: Option<Capability<WindowId>> = Some(cap);
        // By the epoch they are retracted at: each window's counts so far.
        let mut due: BTreeMap<WindowId, Due> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, batches| {
                let Some(cap) = cap.retain_least(output.output_index()) else {
                    return;
                };
                let epoch = *cap.time();
                let mut session = output.session(&cap);
                for batch in batches {
                    for (key, n) in batch.drain(..) {
                        let n = isize::try_from(n).unwrap_or(isize::MAX);
                        let free_at = key.1.saturating_add(horizon_windows + 1).max(epoch + 1);
                        let window = due
                            .entry(free_at)
                            .or_default()
                            .entry((key.0.clone(), key.1))
                            .or_default();
                        if !window.contains_key(&key.2) {
                            state.keys_added(1);
                        }
                        *window.entry(key.2).or_default() += n;
                        session.give((key, epoch, n));
                    }
                }
            });
            let Some(reached) = frontier_min(frontier) else {
                for windows in std::mem::take(&mut due).into_values() {
                    state.keys_freed(windows.values().map(HashMap::len).sum());
                }
                held = None;
                return;
            };
            let Some(cap) = held.as_mut() else { return };
            while let Some(entry) = due.first_entry() {
                if *entry.key() > reached {
                    break;
                }
                let (free_at, windows) = entry.remove_entry();
                state.keys_freed(windows.values().map(HashMap::len).sum());
                // The capability is never past a due epoch, so this always succeeds.
                if let Some(at) = cap.try_delayed(&free_at) {
                    let mut session = output.session(&at);
                    for ((stream, window), emojis) in windows {
                        for (emoji, n) in emojis {
                            session.give(((stream.clone(), window, emoji), free_at, -n));
                        }
                    }
                }
            }
            let hold = due
                .first_key_value()
                .map_or(reached, |(t, _)| reached.min(*t));
            cap.downgrade(&hold.max(*cap.time()));
        }
    })
}

/// The counts of the windows retracted at one epoch.
type Due = HashMap<(StreamId, WindowId), HashMap<Emoji, isize>>;

/// A stream id as differential keys the counts: ordered by a stable hash first, so sorting and
/// merging the counts of thousands of streams compares integers rather than text (any order
/// will do there; summarizing orders the output by id), and exchanged by that hash.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct HashedStream {
    hash: u64,
    id: StreamId,
}

impl HashedStream {
    fn new(id: StreamId) -> Self {
        HashedStream {
            hash: id.stable_hash(),
            id,
        }
    }
}

impl std::hash::Hash for HashedStream {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}
