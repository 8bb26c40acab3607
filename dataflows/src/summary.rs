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

impl EmojiCount {
    /// `count` reactions with `emoji`, scaled by `rule`.
    pub fn scaled(emoji: Emoji, count: u64, rule: crate::scale::ScaleRule) -> EmojiCount {
        EmojiCount {
            emoji,
            count,
            scaled: rule.scale(count),
        }
    }
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
        let mut out = Vec::with_capacity(128 + 48 * self.emojis.len());
        self.write_json(&mut out);
        // Only valid UTF-8 (the stream id, the emojis, JSON punctuation and digits) was written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the contract's JSON (the bytes of [`WindowSummary::to_json`]) to `out`.
    ///
    /// Written by hand rather than through serde: replay writes one line per active stream per
    /// window (millions with thousands of streams), and serde_json's escaping scan and
    /// formatter calls were most of a line's cost. Stream ids never need escaping (their
    /// alphabet has no quote, backslash or control character), and neither do the emoji
    /// table's entries, which are checked anyway (an entry that did would go through serde).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"stream_id\":\"");
        out.extend_from_slice(self.stream_id.as_str().as_bytes());
        out.extend_from_slice(b"\",\"window\":");
        push_int(out, self.window);
        out.extend_from_slice(b",\"start_ms\":");
        push_int(out, self.start_ms);
        out.extend_from_slice(b",\"end_ms\":");
        push_int(out, self.end_ms);
        out.extend_from_slice(b",\"total\":");
        push_int(out, self.total);
        out.extend_from_slice(b",\"emojis\":[");
        for (i, e) in self.emojis.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"emoji\":");
            push_str(out, e.emoji.as_str());
            out.extend_from_slice(b",\"count\":");
            push_int(out, e.count);
            out.extend_from_slice(b",\"scaled\":");
            push_int(out, e.scaled);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"revision\":");
        push_int(out, self.revision);
        out.push(b'}');
    }
}

fn push_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON string: as it is when nothing in it needs escaping, else as serde_json writes it.
fn push_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
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
    fn hand_written_json_is_serde_json_s() {
        // Every emoji of the table, in summaries of a few shapes, encodes as serde_json would.
        let w = Windowing::default();
        let all: Vec<EmojiCount> = emojis::iter()
            .enumerate()
            .map(|(i, e)| EmojiCount {
                emoji: Emoji::parse(e.as_str()).unwrap(),
                count: i as u64 * 7919 % 100_003,
                scaled: i as u64 % 13,
            })
            .collect();
        for chunk in all.chunks(5).chain([&all[..0], &all[..]]) {
            let mut s = WindowSummary::new(
                StreamId::parse("A.b:c_d-9").unwrap(),
                u64::MAX / 3,
                &w,
                chunk.to_vec(),
            );
            s.start_ms = -1;
            s.revision = 3;
            assert_eq!(s.to_json(), serde_json::to_string(&s).unwrap());
        }
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
