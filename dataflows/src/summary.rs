//! The window summary: what subscribers receive for each window.

use serde::{Deserialize, Serialize};

use crate::emoji::Emoji;
use crate::stream::StreamId;
use crate::window::{WindowId, Windowing};

/// One emoji's count in a window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EmojiCount {
    /// The emoji.
    pub emoji: Emoji,
    /// Reactions with it in the window.
    pub count: u64,
    /// Emojis to display for it (see [`crate::ScaleRule`]).
    pub scaled: u64,
}

/// Everything counted in one window of one stream, in the shape of the JSON contract.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowSummary {
    /// The stream the window belongs to.
    pub stream_id: StreamId,
    /// The window index (also the SSE event id; the Kafka key is `{stream_id}/{window}`).
    pub window: WindowId,
    /// First millisecond of the window.
    pub start_ms: i64,
    /// First millisecond after the window.
    pub end_ms: i64,
    /// All reactions in the window.
    pub total: u64,
    /// Per-emoji counts, by count descending, then by emoji.
    pub emojis: Vec<EmojiCount>,
    /// 0 for the window as first emitted; each correction of it counts one up.
    #[serde(default)]
    pub revision: u32,
}

impl WindowSummary {
    /// The summary of `stream`'s `window` from its per-emoji counts, in any order.
    pub fn new(
        stream_id: StreamId,
        window: WindowId,
        windowing: &Windowing,
        mut emojis: Vec<EmojiCount>,
    ) -> Self {
        emojis.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.emoji.cmp(&b.emoji)));
        WindowSummary {
            stream_id,
            window,
            start_ms: windowing.start_ms(window),
            end_ms: windowing.end_ms(window),
            total: emojis.iter().map(|e| e.count).sum(),
            emojis,
            revision: 0,
        }
    }

    /// The key of the window's record in the windows topic: `{stream_id}/{window}`.
    pub fn topic_key(&self) -> String {
        format!("{}/{}", self.stream_id, self.window)
    }

    /// The contract's JSON: one line, no trailing newline.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and integers to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(emoji: &str, count: u64) -> EmojiCount {
        EmojiCount {
            emoji: Emoji::parse(emoji).unwrap(),
            count,
            scaled: count.div_ceil(1000),
        }
    }

    #[test]
    fn json_matches_the_contract() {
        let w = Windowing::default();
        let s = WindowSummary::new(
            StreamId::parse("match-42").unwrap(),
            881_928_000,
            &w,
            vec![count("❤️", 1043), count("🔥", 1500)],
        );
        assert_eq!(
            s.to_json(),
            r#"{"stream_id":"match-42","window":881928000,"start_ms":1763856000000,"end_ms":1763856002000,"total":2543,"emojis":[{"emoji":"🔥","count":1500,"scaled":2},{"emoji":"❤️","count":1043,"scaled":2}],"revision":0}"#
        );
    }

    #[test]
    fn ties_sort_by_emoji() {
        let s = WindowSummary::new(
            StreamId::default(),
            0,
            &Windowing::default(),
            vec![count("😂", 5), count("🔥", 5), count("👍", 9)],
        );
        let order: Vec<_> = s.emojis.iter().map(|e| e.emoji.as_str()).collect();
        assert_eq!(order, ["👍", "🔥", "😂"]);
    }

    #[test]
    fn topic_key_names_stream_and_window() {
        let s = WindowSummary::new(
            StreamId::parse("m:1").unwrap(),
            77,
            &Windowing::default(),
            vec![],
        );
        assert_eq!(s.topic_key(), "m:1/77");
    }

    #[test]
    fn empty_window() {
        let s = WindowSummary::new(StreamId::default(), 3, &Windowing::default(), vec![]);
        assert_eq!(
            s.to_json(),
            r#"{"stream_id":"default","window":3,"start_ms":6000,"end_ms":8000,"total":0,"emojis":[],"revision":0}"#
        );
    }
}
