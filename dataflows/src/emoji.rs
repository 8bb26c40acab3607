//! One emoji, as counted: a single grapheme from Unicode's emoji table.
//!
//! Clients send emojis in several spellings (with or without the U+FE0F variation selector, for
//! example). [`Emoji`] holds the table's fully-qualified form, so every spelling of the same emoji
//! counts together and is displayed the same way. Skin-tone variants stay distinct emojis.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use unicode_segmentation::UnicodeSegmentation;

/// An emoji from Unicode's table (skin tones, ZWJ sequences and flags included), in its
/// fully-qualified spelling. Cheap to copy; compares and sorts by its text.
#[derive(Clone, Copy)]
pub struct Emoji(&'static emojis::Emoji);

/// Why a string is not one emoji.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAnEmoji {
    /// The string is empty.
    #[error("is empty; send exactly one emoji, e.g. \"🔥\"")]
    Empty,
    /// The string holds several characters (graphemes).
    #[error("must be exactly one emoji, got {0} characters")]
    Several(usize),
    /// One character, but not an emoji.
    #[error("{0:?} is not an emoji")]
    Unknown(String),
}

impl Emoji {
    /// Looks `text` up in the emoji table, accepting any spelling the table knows.
    pub fn parse(text: &str) -> Result<Self, NotAnEmoji> {
        if let Some(emoji) = emojis::get(text) {
            return Ok(Emoji(emoji));
        }
        match text.graphemes(true).count() {
            0 => Err(NotAnEmoji::Empty),
            1 => Err(NotAnEmoji::Unknown(text.to_owned())),
            n => Err(NotAnEmoji::Several(n)),
        }
    }

    /// The fully-qualified text of the emoji.
    pub fn as_str(&self) -> &'static str {
        self.0.as_str()
    }
}

impl PartialEq for Emoji {
    fn eq(&self, other: &Self) -> bool {
        // Table entries are unique, so identity is equality.
        std::ptr::eq(self.0, other.0)
    }
}
impl Eq for Emoji {}

impl std::hash::Hash for Emoji {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Consistent with `eq` (identity), and cheaper than hashing the text on the hot path.
        std::ptr::hash(self.0, state)
    }
}

impl PartialOrd for Emoji {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Emoji {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self == other {
            return std::cmp::Ordering::Equal;
        }
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Emoji {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Emoji({})", self.as_str())
    }
}

impl fmt::Display for Emoji {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Emoji {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Emoji {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Emoji::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_single_emojis_of_every_kind() {
        for text in ["🔥", "❤️", "👍🏽", "👨‍👩‍👧", "🇮🇳", "😂"] {
            let emoji = Emoji::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(emoji.as_str(), text);
        }
    }

    #[test]
    fn spellings_of_one_emoji_count_together() {
        let bare = Emoji::parse("\u{2764}").unwrap();
        let qualified = Emoji::parse("\u{2764}\u{FE0F}").unwrap();
        assert_eq!(bare, qualified);
        assert_eq!(bare.as_str(), "❤️");
    }

    #[test]
    fn skin_tones_are_distinct() {
        assert_ne!(Emoji::parse("👍").unwrap(), Emoji::parse("👍🏽").unwrap());
    }

    #[test]
    fn rejects_text_several_emojis_and_empty() {
        assert_eq!(Emoji::parse(""), Err(NotAnEmoji::Empty));
        assert_eq!(Emoji::parse("abc"), Err(NotAnEmoji::Several(3)));
        assert_eq!(Emoji::parse("🔥🔥"), Err(NotAnEmoji::Several(2)));
        assert_eq!(Emoji::parse("a"), Err(NotAnEmoji::Unknown("a".into())));
    }

    #[test]
    fn round_trips_through_json() {
        let emoji = Emoji::parse("👨‍👩‍👧").unwrap();
        let json = serde_json::to_string(&emoji).unwrap();
        assert_eq!(json, "\"👨‍👩‍👧\"");
        assert_eq!(serde_json::from_str::<Emoji>(&json).unwrap(), emoji);
        assert!(serde_json::from_str::<Emoji>("\"x\"").is_err());
    }
}
