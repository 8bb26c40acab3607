//! The dataflow's operators, one verb each, as extension traits on timely streams.

mod correct;
mod count;
mod scale;
mod summarize;

pub use correct::{Correct, HeldState};
pub use count::CountByKey;
pub use scale::Scale;
pub use summarize::{Activity, Summarize};

use foldhash::HashMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::emoji::Emoji;
use crate::stream::StreamId;
use crate::summary::EmojiCount;
use crate::window::WindowId;

/// What is counted: one emoji in one stream's window. It travels at its window's timely time,
/// or, for a late reaction that corrects its window, at the epoch it was read in.
pub type CountKey = (StreamId, WindowId, Emoji);

/// One emoji's count in one stream's window, as summarizing receives it.
pub type WindowCount = (StreamId, WindowId, EmojiCount);

/// A count of `n` reactions for `key` ready to be emitted at `epoch`.
pub type TimedCount = (WindowId, CountKey, u64);

/// The output handle of an operator that emits partial counts `((stream, emoji), n)`.
pub type PartialCountOutput<'a> =
    OutputBuilderSession<'a, WindowId, CapacityContainerBuilder<Vec<(CountKey, u64)>>>;

/// Counts per (epoch, window, stream, emoji) gathered by a source before they are emitted; the
/// epoch is the window itself except for late reactions that correct a closed window.
///
/// Streams are interned: each distinct id is allocated once and kept (up to
/// [`PartialCounts::KEEP_IDS`] of them) across drains, so counting a reaction of a stream seen
/// before allocates nothing, and the counts themselves are one flat map keyed by small integers.
/// With thousands of streams per block, a map (and an id) per stream per drain was a good part
/// of a replay's cost.
#[derive(Debug, Default)]
pub struct PartialCounts {
    ids: HashMap<StreamId, u32>,
    names: Vec<StreamId>,
    counts: HashMap<(WindowId, WindowId, u32, Emoji), u64>,
}

impl PartialCounts {
    /// Interned ids kept between drains; past this many (a live run meets new streams for
    /// ever) they are forgotten at the next drain, so memory stays bounded.
    pub const KEEP_IDS: usize = 1 << 16;

    /// Counts `n` reactions of `emoji` in `stream`'s `window`; `stream` must already be a valid
    /// stream id (as [`crate::reaction::ReactionRef::stream_id`] is). An invalid one is counted
    /// in the default stream rather than lost.
    pub fn add(&mut self, window: WindowId, stream: &str, emoji: Emoji, n: u64) {
        self.add_at(window, window, stream, emoji, n);
    }

    /// Counts `n` reactions of `emoji` in `stream`'s `window`, to be emitted at `epoch` (a
    /// later one when they correct a closed window).
    pub fn add_at(
        &mut self,
        epoch: WindowId,
        window: WindowId,
        stream: &str,
        emoji: Emoji,
        n: u64,
    ) {
        let index = match self.ids.get(stream) {
            Some(index) => *index,
            None => self.intern(StreamId::parse(stream).unwrap_or_default()),
        };
        *self
            .counts
            .entry((epoch, window, index, emoji))
            .or_default() += n;
    }

    fn intern(&mut self, stream: StreamId) -> u32 {
        // An invalid id falls back to the default stream, which may be interned already.
        if let Some(index) = self.ids.get(stream.as_str()) {
            return *index;
        }
        let index = self.names.len() as u32;
        self.ids.insert(stream.clone(), index);
        self.names.push(stream);
        index
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Takes every count out, ordered by epoch and window (then by the order this counter met
    /// the streams in, and emoji): sorted on the interned indices, so no stream's text is read.
    pub fn drain_by_epoch(&mut self) -> Vec<TimedCount> {
        let mut all: Vec<_> = self.counts.drain().collect();
        all.sort_unstable_by_key(|(key, _)| *key);
        let all = named(&self.names, all);
        self.forget_ids_past_limit();
        all
    }

    /// Takes every count out, in no particular order.
    pub fn drain(&mut self) -> Vec<TimedCount> {
        let all = named(&self.names, self.counts.drain());
        self.forget_ids_past_limit();
        all
    }

    fn forget_ids_past_limit(&mut self) {
        if self.names.len() > Self::KEEP_IDS {
            self.ids.clear();
            self.names.clear();
        }
    }
}

/// Counts keyed by interned stream index, with their streams' ids.
fn named(
    names: &[StreamId],
    counts: impl IntoIterator<Item = ((WindowId, WindowId, u32, Emoji), u64)>,
) -> Vec<TimedCount> {
    counts
        .into_iter()
        .map(|((epoch, window, index, emoji), n)| {
            (epoch, (names[index as usize].clone(), window, emoji), n)
        })
        .collect()
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
    give_counts(held, output, &mut counts.drain())
}

/// [`give_partial_counts`] for counts already gathered elsewhere (replay's blocks, summed per
/// block): `(epoch, key, n)` in any order, emptied. Repeated keys are fine, the counting
/// downstream sums them.
pub fn give_counts(
    held: &Capability<WindowId>,
    output: &mut PartialCountOutput<'_>,
    ready: &mut Vec<TimedCount>,
) -> u64 {
    ready.sort_unstable_by_key(|c| c.0);
    let mut refused = 0;
    let mut rest = ready.drain(..).peekable();
    while let Some((epoch, key, n)) = rest.next() {
        let same_epoch = |c: &TimedCount| c.0 == epoch;
        match held.try_delayed(&epoch) {
            Some(at) => {
                let mut session = output.session(&at);
                session.give((key, n));
                while let Some((_, key, n)) = rest.next_if(same_epoch) {
                    session.give((key, n));
                }
            }
            None => {
                refused += n;
                while let Some((.., n)) = rest.next_if(same_epoch) {
                    refused += n;
                }
            }
        }
    }
    refused
}

/// The least time an input may still deliver, or `None` once it is finished.
fn frontier_min(frontier: &MutableAntichain<WindowId>) -> Option<WindowId> {
    frontier.frontier().iter().copied().min()
}
