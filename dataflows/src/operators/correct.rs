//! Corrections: the counts of every (stream, window) within the correction horizon kept as a
//! differential-dataflow collection, so a late reaction (arriving at a later epoch, its own
//! window in its key) changes its window's counts and the whole changed window comes out again.
//!
//! ```text
//! counts ((stream, window, emoji), n) @ epoch ─▶ Expire ─▶ count_total ─▶ Changes
//!   (+n at the epoch; −n once the window      (each key's total,     (each changed window's
//!    has passed the horizon: state freed)      retracted and          counts, whole, scaled,
//!                                              re-emitted when it     once its epoch is complete)
//!                                              changes)
//! ```
//! A window's first emission comes out at its own epoch, as the plain pipeline's does; a
//! correction at the epoch of the late reactions that caused it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use differential_dataflow::operators::CountTotal;
use differential_dataflow::AsCollection;
use foldhash::HashMap;
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
        // Each key's total, retracted and re-emitted whenever it changes: one arrangement (the
        // counts'), where a reduce per window would add a second one of whole windows; the
        // windows' current totals are kept once more below, plainly, to send them whole.
        let totals = expire(self, horizon_windows, Arc::clone(&held))
            .as_collection()
            .count_total();
        totals
            .inner
            .unary_frontier(Pipeline, "Changes", move |_cap, _info| {
                // The counts of the windows held on this worker (all of a window's emojis are
                // counted on one worker: see `HeldKey`'s hash), so a window a late reaction
                // changes can go out whole.
                let mut live: HashMap<WindowKey, Vec<(Emoji, u64)>> = HashMap::default();
                // By epoch, applied in epoch order once the epoch is complete, so what goes out
                // at an epoch never depends on how far the next ones have got.
                let mut pending: BTreeMap<WindowId, Pending> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, batches| {
                        let Some(cap) = cap.retain_least(output.output_index()) else {
                            return;
                        };
                        for batch in batches {
                            for ((key, total), epoch, diff) in batch.drain(..) {
                                let at = pending
                                    .entry(epoch)
                                    .or_insert_with(|| Pending::new(cap.delayed(&epoch)));
                                let (window, emoji) = key.split();
                                if diff > 0 {
                                    let total = u64::try_from(total).unwrap_or(0);
                                    at.totals.push((window, emoji, total));
                                } else {
                                    // The end of an old total: replaced if the epoch brings a
                                    // new one, else the key is gone (its window past the
                                    // horizon).
                                    at.retracted.push((window, emoji));
                                }
                            }
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let Pending {
                            cap,
                            totals,
                            retracted,
                        } = entry.remove();
                        // Old totals go first, so a total the epoch replaces is back below
                        // and a window whose every key is gone (past its horizon) is freed.
                        for (window, emoji) in retracted {
                            let Some(counts) = live.get_mut(&window) else {
                                continue;
                            };
                            counts.retain(|(e, _)| *e != emoji);
                            if counts.is_empty() {
                                live.remove(&window);
                                held.windows.fetch_sub(1, Ordering::Relaxed);
                            }
                        }
                        let mut changed = Vec::new();
                        for (window, emoji, total) in totals {
                            let counts = match live.get_mut(&window) {
                                Some(counts) => counts,
                                None => {
                                    held.windows.fetch_add(1, Ordering::Relaxed);
                                    live.entry(window.clone()).or_default()
                                }
                            };
                            match counts.iter_mut().find(|(e, _)| *e == emoji) {
                                Some((_, count)) => *count = total,
                                None => counts.push((emoji, total)),
                            }
                            changed.push(window);
                        }
                        changed.sort_unstable();
                        changed.dedup();
                        let mut session = output.session(&cap);
                        for window in changed {
                            if let Some(counts) = live.get(&window) {
                                for (emoji, count) in counts {
                                    session.give((
                                        window.stream.clone(),
                                        window.window,
                                        EmojiCount::scaled(*emoji, *count, rule),
                                    ));
                                }
                            }
                        }
                    }
                    if frontier.is_empty() {
                        // The input has ended: nothing more can change, everything is freed
                        // (as `Expire` frees its own).
                        held.windows.fetch_sub(live.len(), Ordering::Relaxed);
                        live.clear();
                    }
                }
            })
    }
}

/// What a complete epoch brings to the held windows.
struct Pending {
    cap: Capability<WindowId>,
    /// New totals: (window, emoji, total).
    totals: Vec<(WindowKey, Emoji, u64)>,
    /// Old totals that end: (window, emoji).
    retracted: Vec<(WindowKey, Emoji)>,
}

impl Pending {
    fn new(cap: Capability<WindowId>) -> Self {
        Pending {
            cap,
            totals: Vec::new(),
            retracted: Vec::new(),
        }
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
) -> StreamVec<'scope, WindowId, (HeldKey, WindowId, isize)> {
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
                        let key = HeldKey::new(key.0, key.1, key.2);
                        let count = due
                            .entry(free_at)
                            .or_default()
                            .entry(DueKey(key.clone()))
                            .or_insert_with(|| {
                                state.keys_added(1);
                                0
                            });
                        *count += n;
                        session.give((key, epoch, n));
                    }
                }
            });
            let Some(reached) = frontier_min(frontier) else {
                for keys in std::mem::take(&mut due).into_values() {
                    state.keys_freed(keys.len());
                }
                held = None;
                return;
            };
            let Some(cap) = held.as_mut() else { return };
            while let Some(entry) = due.first_entry() {
                if *entry.key() > reached {
                    break;
                }
                let (free_at, keys) = entry.remove_entry();
                state.keys_freed(keys.len());
                // The capability is never past a due epoch, so this always succeeds.
                if let Some(at) = cap.try_delayed(&free_at) {
                    let mut session = output.session(&at);
                    for (DueKey(key), n) in keys {
                        session.give((key, free_at, -n));
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

/// The counts retracted at one epoch.
type Due = HashMap<DueKey, isize>;

/// A count's key in a flat map of counts: hashed by all of it, where [`HeldKey`]'s own hash
/// (the exchange's) is the stream's stable hash and the window only.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DueKey(HeldKey);

// The stream's text is hashed too: the stable hash (FNV-1a) is not keyed, and ids chosen to
// collide in it would otherwise all land in one probe chain of these (seeded) maps.
impl std::hash::Hash for DueKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.window.hash(state);
        self.0.emoji.hash(state);
        self.0.stream.hash(state);
    }
}

/// A count's key as differential holds it: ordered by a stable hash of the stream, then window
/// and emoji, and only then by the stream's text, so sorting and merging the counts of
/// thousands of streams compares integers (any order will do there; summarizing orders the
/// output by id); hashed (exchanged) by stream and window alone, so a window's emojis meet on
/// one worker.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct HeldKey {
    hash: u64,
    window: WindowId,
    emoji: Emoji,
    stream: StreamId,
}

impl HeldKey {
    fn new(stream: StreamId, window: WindowId, emoji: Emoji) -> Self {
        HeldKey {
            hash: stream.stable_hash(),
            window,
            emoji,
            stream,
        }
    }

    fn split(self) -> (WindowKey, Emoji) {
        let window = WindowKey {
            hash: self.hash,
            window: self.window,
            stream: self.stream,
        };
        (window, self.emoji)
    }
}

/// One stream's window, ordered by the stable hash of its stream first (computed once, in
/// [`HeldKey`]), so sorting the changed windows rarely reads a stream's text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct WindowKey {
    hash: u64,
    window: WindowId,
    stream: StreamId,
}

impl std::hash::Hash for WindowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `DueKey`'s: the stream's text, not only its unkeyed stable hash.
        state.write_u64(self.window);
        self.stream.hash(state);
    }
}

impl std::hash::Hash for HeldKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
        state.write_u64(self.window);
    }
}
