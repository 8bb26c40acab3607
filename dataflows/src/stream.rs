//! The stream a reaction belongs to: one live event (a match, a concert, a channel).
//!
//! Everything is counted per stream; a reaction without a `stream_id` belongs to
//! [`StreamId::DEFAULT`]. Ids are short and plain (`A-Z a-z 0-9 _ . : -`, 1–64 characters) so
//! they can stand in URLs, Kafka keys (`{stream_id}/{window}`) and logs without escaping.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest accepted stream id, in characters (all ASCII).
pub const MAX_STREAM_ID_CHARS: usize = 64;

/// A valid stream id. Sorts in byte order, as the contract orders lines of one window.
///
/// Shared rather than owned: one id is cloned into every count, summary and message of its
/// stream (with 10,000 streams, millions of times per replay), and a clone that copies the text
/// cost more than everything else the summaries do.
#[derive(Clone, Debug)]
pub struct StreamId(Arc<str>);

// Counting and summarizing compare ids millions of times, mostly clones of one interned id:
// those are equal without reading their text.
impl PartialEq for StreamId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for StreamId {}

impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for StreamId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Why a string is not a stream id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStreamId {
    /// The id is empty.
    #[error("is empty; give 1-{MAX_STREAM_ID_CHARS} characters from A-Z a-z 0-9 _ . : -, or leave it out for the default stream")]
    Empty,
    /// The id is too long.
    #[error("is {0} characters long; at most {MAX_STREAM_ID_CHARS} are accepted")]
    TooLong(usize),
    /// The id holds a character outside the allowed set.
    #[error("contains {0:?}; only A-Z a-z 0-9 _ . : - are accepted")]
    BadCharacter(char),
}

impl StreamId {
    /// The stream of reactions that name none.
    pub const DEFAULT: &'static str = "default";

    /// The default stream.
    pub fn default_stream() -> StreamId {
        StreamId(Arc::from(Self::DEFAULT))
    }

    /// Checks `text` against the rule and keeps it.
    pub fn parse(text: &str) -> Result<StreamId, InvalidStreamId> {
        check(text)?;
        Ok(StreamId(Arc::from(text)))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's first 16 bytes as a big-endian integer, zeros past its end: ids ordered by it
    /// are in byte order wherever it differs, so a sort can compare integers and read the ids
    /// only where it ties (and, as ids hold no zero byte, it ties only for ids that share their
    /// first 16 bytes).
    pub fn order_prefix(&self) -> u128 {
        let mut prefix = [0; 16];
        for (to, from) in prefix.iter_mut().zip(self.0.as_bytes()) {
            *to = *from;
        }
        u128::from_be_bytes(prefix)
    }

    /// A hash of the id that is the same in every process (std's hasher is seeded), for
    /// exchanging by stream.
    pub fn stable_hash(&self) -> u64 {
        fnv1a(0xcbf2_9ce4_8422_2325, self.0.as_bytes())
    }
}

/// FNV-1a over `bytes`, continuing from `seed`: tiny, stable across processes, and good enough to
/// spread keys over workers.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks a stream id without keeping it.
pub fn check(text: &str) -> Result<(), InvalidStreamId> {
    if text.is_empty() {
        return Err(InvalidStreamId::Empty);
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(InvalidStreamId::BadCharacter(c));
    }
    if text.len() > MAX_STREAM_ID_CHARS {
        return Err(InvalidStreamId::TooLong(text.len()));
    }
    Ok(())
}

impl Default for StreamId {
    fn default() -> Self {
        StreamId::default_stream()
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StreamId {
    type Err = InvalidStreamId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamId::parse(s)
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        StreamId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_alphabet() {
        for ok in ["default", "match-42", "a", "A.b:c_d-9", &"x".repeat(64)] {
            assert_eq!(StreamId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_the_rest() {
        assert_eq!(StreamId::parse(""), Err(InvalidStreamId::Empty));
        assert_eq!(
            StreamId::parse(&"x".repeat(65)),
            Err(InvalidStreamId::TooLong(65))
        );
        for (bad, c) in [
            ("a b", ' '),
            ("a/b", '/'),
            ("ä", 'ä'),
            ("a\u{200B}", '\u{200B}'),
        ] {
            assert_eq!(StreamId::parse(bad), Err(InvalidStreamId::BadCharacter(c)));
        }
    }

    #[test]
    fn sorts_by_bytes_and_hashes_stably() {
        let mut ids: Vec<_> = ["b", "B", "a-1", "a"]
            .iter()
            .map(|s| StreamId::parse(s).unwrap())
            .collect();
        ids.sort();
        let order: Vec<_> = ids.iter().map(StreamId::as_str).collect();
        assert_eq!(order, ["B", "a", "a-1", "b"]);
        // FNV-1a of "a", a known value: the hash must not change between builds or processes.
        assert_eq!(
            StreamId::parse("a").unwrap().stable_hash(),
            0xaf63_dc4c_8601_ec8c
        );
    }

    #[test]
    fn shared_and_separate_copies_compare_alike() {
        let a = StreamId::parse("match-42").unwrap();
        let (shared, separate) = (a.clone(), StreamId::parse("match-42").unwrap());
        let other = StreamId::parse("match-43").unwrap();
        for same in [&shared, &separate] {
            assert_eq!(&a, same);
            assert_eq!(a.cmp(same), std::cmp::Ordering::Equal);
        }
        assert_ne!(a, other);
        assert!(a < other && other > separate);
        let set: std::collections::HashSet<_> = [a, shared, separate].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert!(set.contains("match-42"));
    }

    #[test]
    fn the_order_prefix_agrees_with_byte_order() {
        let ids: Vec<StreamId> = [
            "a",
            "a-1",
            "a-10",
            "a-2",
            "B",
            "b",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
            "abcdefghijklmnopq",
            "abcdefghijklmnopr",
            "zz",
            "z",
        ]
        .iter()
        .map(|s| StreamId::parse(s).unwrap())
        .collect();
        for a in &ids {
            for b in &ids {
                if a.order_prefix() != b.order_prefix() {
                    assert_eq!(a.order_prefix().cmp(&b.order_prefix()), a.cmp(b), "{a} {b}");
                } else {
                    // Only ids sharing their first 16 bytes tie.
                    assert_eq!(a.as_str().get(..16), b.as_str().get(..16), "{a} {b}");
                }
            }
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<StreamId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<StreamId>("\"not ok\"").is_err());
    }
}
