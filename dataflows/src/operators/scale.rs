//! The scaling operator: attaches the displayed-emoji count to each final count.

use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use super::{CountKey, WindowCount};
use crate::scale::ScaleRule;
use crate::summary::EmojiCount;
use crate::window::WindowId;

/// Applies a [`ScaleRule`] to final counts.
pub trait Scale<'scope> {
    /// `((stream, window, emoji), count)` becomes `(stream, window, EmojiCount { emoji, count,
    /// scaled })`.
    fn scale(self, rule: ScaleRule) -> StreamVec<'scope, WindowId, WindowCount>;
}

impl<'scope> Scale<'scope> for StreamVec<'scope, WindowId, (CountKey, u64)> {
    fn scale(self, rule: ScaleRule) -> StreamVec<'scope, WindowId, WindowCount> {
        self.map(move |((stream, window, emoji), count)| {
            (stream, window, EmojiCount::scaled(emoji, count, rule))
        })
    }
}
