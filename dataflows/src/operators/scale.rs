//! The scaling operator: attaches the displayed-emoji count to each final count.

use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use super::CountKey;
use crate::scale::ScaleRule;
use crate::stream::StreamId;
use crate::summary::EmojiCount;
use crate::window::WindowId;

/// Applies a [`ScaleRule`] to final counts.
pub trait Scale<'scope> {
    /// `((stream, emoji), count)` becomes `(stream, EmojiCount { emoji, count, scaled })`.
    fn scale(self, rule: ScaleRule) -> StreamVec<'scope, WindowId, (StreamId, EmojiCount)>;
}

impl<'scope> Scale<'scope> for StreamVec<'scope, WindowId, (CountKey, u64)> {
    fn scale(self, rule: ScaleRule) -> StreamVec<'scope, WindowId, (StreamId, EmojiCount)> {
        self.map(move |((stream, emoji), count)| {
            (
                stream,
                EmojiCount {
                    emoji,
                    count,
                    scaled: rule.scale(count),
                },
            )
        })
    }
}
