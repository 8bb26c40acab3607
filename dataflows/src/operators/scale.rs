//! The scaling operator: attaches the displayed-emoji count to each final count.

use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::emoji::Emoji;
use crate::scale::ScaleRule;
use crate::summary::EmojiCount;
use crate::window::WindowId;

/// Applies a [`ScaleRule`] to final counts.
pub trait Scale<'scope> {
    /// `(emoji, count)` becomes `EmojiCount { emoji, count, scaled }`.
    fn scale(self, rule: ScaleRule) -> StreamVec<'scope, WindowId, EmojiCount>;
}

impl<'scope> Scale<'scope> for StreamVec<'scope, WindowId, (Emoji, u64)> {
    fn scale(self, rule: ScaleRule) -> StreamVec<'scope, WindowId, EmojiCount> {
        self.map(move |(emoji, count)| EmojiCount {
            emoji,
            count,
            scaled: rule.scale(count),
        })
    }
}
