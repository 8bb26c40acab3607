//! A reaction as clients send it, and the rules that make it valid.
//!
//! This is the one validator: the HTTP ingest, the Kafka source and `replay` all call
//! [`parse_reaction`], so a reaction means the same thing everywhere. Parsing borrows from the
//! input where it can, because the dataflow parses millions of lines a second.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::emoji::Emoji;
use crate::stream::{self, StreamId};

/// How far a timestamp may run ahead of the validating clock: client clocks drift, but a
/// reaction from the future would hold a window open that has not started yet.
pub const MAX_FUTURE_SKEW_MS: i64 = 10_000;
/// The longest accepted `user_id`, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;

/// A valid reaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// Who reacted: 1–128 printable characters.
    pub user_id: String,
    /// What they reacted with.
    pub emoji_type: Emoji,
    /// Event time, milliseconds since the Unix epoch (never negative).
    pub timestamp: i64,
    /// The live event it is for ([`StreamId::DEFAULT`] when the client named none).
    #[serde(default)]
    pub stream_id: StreamId,
}

/// A valid reaction that borrows its `user_id` from the parsed input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactionRef<'a> {
    /// Who reacted.
    pub user_id: Cow<'a, str>,
    /// What they reacted with.
    pub emoji_type: Emoji,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The stream, already checked against the stream id rule.
    pub stream_id: Cow<'a, str>,
}

impl ReactionRef<'_> {
    /// An owned copy.
    pub fn into_owned(self) -> Reaction {
        Reaction {
            user_id: self.user_id.into_owned(),
            emoji_type: self.emoji_type,
            timestamp: self.timestamp,
            // Checked when parsed; parse again rather than trust a second path to the type.
            stream_id: StreamId::parse(&self.stream_id).unwrap_or_default(),
        }
    }
}

/// The part of a reaction that is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// The input is not a JSON object of the right shape.
    Body,
    /// `user_id`.
    UserId,
    /// `emoji_type`.
    EmojiType,
    /// `timestamp`.
    Timestamp,
    /// `stream_id`.
    StreamId,
}

impl Field {
    /// Every field, in a fixed order (for reports).
    pub const ALL: [Field; 5] = [
        Field::Body,
        Field::UserId,
        Field::EmojiType,
        Field::Timestamp,
        Field::StreamId,
    ];

    /// The field's name in the JSON contract.
    pub fn name(self) -> &'static str {
        match self {
            Field::Body => "body",
            Field::UserId => "user_id",
            Field::EmojiType => "emoji_type",
            Field::Timestamp => "timestamp",
            Field::StreamId => "stream_id",
        }
    }

    /// The machine-readable error code for a problem with this field.
    pub fn error_code(self) -> &'static str {
        match self {
            Field::Body => "invalid_json",
            Field::UserId => "invalid_user_id",
            Field::EmojiType => "invalid_emoji_type",
            Field::Timestamp => "invalid_timestamp",
            Field::StreamId => "invalid_stream_id",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a reaction was refused: the field, and a message that says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", field.name())]
pub struct InvalidReaction {
    /// The offending field.
    pub field: Field,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidReaction {
    fn new(field: Field, message: impl Into<String>) -> Self {
        InvalidReaction {
            field,
            message: message.into(),
        }
    }
}

/// Counts of refused reactions by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidCounts([u64; 5]);

impl InvalidCounts {
    /// Counts one refusal.
    pub fn add(&mut self, field: Field) {
        self.0[field.index()] += 1;
    }
    /// Adds another set of counts.
    pub fn merge(&mut self, other: &InvalidCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
    /// Refusals for one field.
    pub fn get(&self, field: Field) -> u64 {
        self.0[field.index()]
    }
    /// All refusals.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// What to do with a reaction that carries no `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingTimestamp {
    /// Refuse it (files and topics must carry event time).
    Refuse,
    /// Stamp it with this time (the ingest server's clock).
    Use(i64),
}

/// Parses and validates one reaction from JSON.
///
/// `now_ms` is the validating clock, used to refuse timestamps more than
/// [`MAX_FUTURE_SKEW_MS`] in the future.
pub fn parse_reaction(
    json: &[u8],
    now_ms: i64,
    missing: MissingTimestamp,
) -> Result<ReactionRef<'_>, InvalidReaction> {
    // serde takes a JSON array for a struct too (`["u", "🔥"]`); a reaction is an object.
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(InvalidReaction::new(
            Field::Body,
            "is not a JSON object; send {\"user_id\", \"emoji_type\", \"timestamp\"}",
        ));
    }
    let raw: RawReaction<'_> = match serde_json::from_slice(json) {
        Ok(raw) => raw,
        Err(_) => return Err(describe_json_error(json)),
    };
    raw.validate(now_ms, missing)
}

/// [`parse_reaction`] for a server that knows who sent it (a verified token's subject): a
/// reaction without `user_id` is `user`'s. One that names another user keeps its own, for
/// the caller to refuse.
pub fn parse_reaction_of<'a>(
    json: &'a [u8],
    user: &str,
    now_ms: i64,
    missing: MissingTimestamp,
) -> Result<ReactionRef<'a>, InvalidReaction> {
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(InvalidReaction::new(
            Field::Body,
            "is not a JSON object; send {\"emoji_type\", \"timestamp\"}",
        ));
    }
    let mut raw: RawReaction<'_> = match serde_json::from_slice(json) {
        Ok(raw) => raw,
        Err(_) => return Err(describe_json_error(json)),
    };
    if raw.user_id.is_none() {
        raw.user_id = Some(Cow::Owned(user.to_owned()));
    }
    raw.validate(now_ms, missing)
}

/// Validates a reaction that is already in memory (e.g. from a JSON array).
pub fn validate_reaction<'a>(
    user_id: Option<Cow<'a, str>>,
    emoji_type: Option<&str>,
    timestamp: Option<RawTimestamp<'_>>,
    stream_id: Option<Cow<'a, str>>,
    now_ms: i64,
    missing: MissingTimestamp,
) -> Result<ReactionRef<'a>, InvalidReaction> {
    let user_id = user_id.ok_or_else(|| InvalidReaction::new(Field::UserId, "is missing"))?;
    check_user_id(&user_id)?;
    let emoji_type =
        emoji_type.ok_or_else(|| InvalidReaction::new(Field::EmojiType, "is missing"))?;
    let emoji_type = Emoji::parse(emoji_type)
        .map_err(|e| InvalidReaction::new(Field::EmojiType, e.to_string()))?;
    let timestamp = match (timestamp, missing) {
        (Some(ts), _) => ts.to_millis()?,
        (None, MissingTimestamp::Use(now)) => now,
        (None, MissingTimestamp::Refuse) => {
            return Err(InvalidReaction::new(
                Field::Timestamp,
                "is missing; give milliseconds since the Unix epoch or an RFC 3339 string",
            ))
        }
    };
    if timestamp > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
        return Err(InvalidReaction::new(
            Field::Timestamp,
            format!(
                "is {} ms in the future; at most {MAX_FUTURE_SKEW_MS} ms of clock skew is accepted",
                timestamp - now_ms
            ),
        ));
    }
    let stream_id = match stream_id {
        None => Cow::Borrowed(StreamId::DEFAULT),
        Some(id) => {
            stream::check(&id).map_err(|e| InvalidReaction::new(Field::StreamId, e.to_string()))?;
            id
        }
    };
    Ok(ReactionRef {
        user_id,
        emoji_type,
        timestamp,
        stream_id,
    })
}

/// Characters that print as nothing or reorder the text around them (Unicode's format
/// characters): an id made of them looks like another, or like none.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Whether `user_id` is a valid user id (printable, 1 to the longest allowed characters): the
/// rule of the `user_id` field, for ids that come from elsewhere (a token's `sub`).
pub fn check_user_id(user_id: &str) -> Result<(), InvalidReaction> {
    let mut chars = 0;
    for c in user_id.chars() {
        if c.is_control() {
            return Err(InvalidReaction::new(
                Field::UserId,
                format!("must be printable; it contains the control character {c:?}"),
            ));
        }
        if is_invisible(c) {
            return Err(InvalidReaction::new(
                Field::UserId,
                format!(
                    "must be printable; it contains the invisible character U+{:04X}",
                    u32::from(c)
                ),
            ));
        }
        chars += 1;
    }
    if chars == 0 {
        return Err(InvalidReaction::new(Field::UserId, "is empty"));
    }
    if user_id.chars().all(char::is_whitespace) {
        return Err(InvalidReaction::new(Field::UserId, "is only spaces"));
    }
    if chars > MAX_USER_ID_CHARS {
        return Err(InvalidReaction::new(
            Field::UserId,
            format!("is {chars} characters long; at most {MAX_USER_ID_CHARS} are accepted"),
        ));
    }
    Ok(())
}

/// Runs the slow, path-tracking parse only for input that already failed, to name the field.
fn describe_json_error(json: &[u8]) -> InvalidReaction {
    let mut de = serde_json::Deserializer::from_slice(json);
    match serde_path_to_error::deserialize::<_, RawReaction<'_>>(&mut de) {
        Ok(_) => match de.end() {
            Err(e) => {
                InvalidReaction::new(Field::Body, format!("trailing data after the object: {e}"))
            }
            Ok(()) => InvalidReaction::new(Field::Body, "is not valid JSON"),
        },
        Err(e) => {
            let field = match e.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => match key.as_str() {
                    "user_id" => Field::UserId,
                    "emoji_type" => Field::EmojiType,
                    "timestamp" => Field::Timestamp,
                    "stream_id" => Field::StreamId,
                    _ => Field::Body,
                },
                _ => Field::Body,
            };
            let inner = e.into_inner();
            let message = if field == Field::Body {
                format!("is not a JSON reaction object: {inner}")
            } else {
                format!("{inner}")
            };
            InvalidReaction::new(field, message)
        }
    }
}

#[derive(Deserialize)]
struct RawReaction<'a> {
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    emoji_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<RawTimestamp<'a>>,
    #[serde(borrow, default)]
    stream_id: Option<Cow<'a, str>>,
}

impl<'a> RawReaction<'a> {
    fn validate(
        self,
        now_ms: i64,
        missing: MissingTimestamp,
    ) -> Result<ReactionRef<'a>, InvalidReaction> {
        validate_reaction(
            self.user_id,
            self.emoji_type.as_deref(),
            self.timestamp,
            self.stream_id,
            now_ms,
            missing,
        )
    }
}

/// A `timestamp` as sent: integer milliseconds or an RFC 3339 string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawTimestamp<'a> {
    /// Milliseconds since the Unix epoch.
    Millis(i64),
    /// An RFC 3339 date-time, e.g. `2025-11-23T00:00:00.250Z`.
    Rfc3339(Cow<'a, str>),
}

impl RawTimestamp<'_> {
    /// Milliseconds since the Unix epoch, refusing times before 1970.
    pub fn to_millis(&self) -> Result<i64, InvalidReaction> {
        let ms = match self {
            RawTimestamp::Millis(ms) => *ms,
            // chrono also takes a space for the `T`, as RFC 3339 allows by agreement; the
            // contract's format is ISO 8601's, with the `T`.
            RawTimestamp::Rfc3339(text) if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) => {
                return Err(InvalidReaction::new(
                    Field::Timestamp,
                    format!("{text:?} is not an RFC 3339 date-time: separate the date and the time with T, e.g. \"2025-11-23T00:00:00Z\""),
                ))
            }
            RawTimestamp::Rfc3339(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    InvalidReaction::new(
                        Field::Timestamp,
                        format!("{text:?} is not an RFC 3339 date-time ({e}), e.g. \"2025-11-23T00:00:00Z\""),
                    )
                })?
                .timestamp_millis(),
        };
        if ms < 0 {
            return Err(InvalidReaction::new(
                Field::Timestamp,
                "is before 1970; give milliseconds since the Unix epoch",
            ));
        }
        Ok(ms)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTimestamp<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl<'de> Visitor<'de> for TimestampVisitor {
            type Value = RawTimestamp<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("integer milliseconds since the Unix epoch or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawTimestamp::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(RawTimestamp::Millis)
                    .map_err(|_| E::custom("timestamp is out of range"))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawTimestamp::Rfc3339(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawTimestamp::Rfc3339(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_any(TimestampVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_856_000_000;

    fn parse(json: &str) -> Result<Reaction, InvalidReaction> {
        parse_reaction(json.as_bytes(), NOW, MissingTimestamp::Refuse).map(ReactionRef::into_owned)
    }

    fn field_of(json: &str) -> Field {
        parse(json).expect_err(json).field
    }

    #[test]
    fn parses_integer_and_rfc3339_timestamps() {
        let r = parse(r#"{"user_id":"u1","emoji_type":"🔥","timestamp":1763856000250}"#).unwrap();
        assert_eq!(r.user_id, "u1");
        assert_eq!(r.emoji_type.as_str(), "🔥");
        assert_eq!(r.timestamp, 1_763_856_000_250);
        let r =
            parse(r#"{"user_id":"u1","emoji_type":"🔥","timestamp":"2025-11-23T00:00:00.250Z"}"#)
                .unwrap();
        assert_eq!(r.timestamp, 1_763_856_000_250);
        let r = parse(
            r#"{"user_id":"u1","emoji_type":"🔥","timestamp":"2025-11-23T01:00:00.250+01:00"}"#,
        )
        .unwrap();
        assert_eq!(r.timestamp, 1_763_856_000_250);
    }

    #[test]
    fn escaped_strings_are_accepted() {
        let r = parse(r#"{"user_id":"a\"b","emoji_type":"\ud83d\udd25","timestamp":5}"#).unwrap();
        assert_eq!(r.user_id, "a\"b");
        assert_eq!(r.emoji_type.as_str(), "🔥");
    }

    #[test]
    fn missing_timestamp_is_refused_or_stamped() {
        let json = r#"{"user_id":"u","emoji_type":"🔥"}"#.as_bytes();
        let err = parse_reaction(json, NOW, MissingTimestamp::Refuse).unwrap_err();
        assert_eq!(err.field, Field::Timestamp);
        let r = parse_reaction(json, NOW, MissingTimestamp::Use(NOW - 5)).unwrap();
        assert_eq!(r.timestamp, NOW - 5);
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(
            field_of(r#"{"emoji_type":"🔥","timestamp":1}"#),
            Field::UserId
        );
        assert_eq!(
            field_of(r#"{"user_id":"","emoji_type":"🔥","timestamp":1}"#),
            Field::UserId
        );
        let long = "x".repeat(129);
        assert_eq!(
            field_of(&format!(
                r#"{{"user_id":"{long}","emoji_type":"🔥","timestamp":1}}"#
            )),
            Field::UserId
        );
        let ok_len = "é".repeat(128);
        assert!(parse(&format!(
            r#"{{"user_id":"{ok_len}","emoji_type":"🔥","timestamp":1}}"#
        ))
        .is_ok());
        assert_eq!(
            field_of(r#"{"user_id":"a\nb","emoji_type":"🔥","timestamp":1}"#),
            Field::UserId
        );
        assert_eq!(
            field_of(r#"{"user_id":7,"emoji_type":"🔥","timestamp":1}"#),
            Field::UserId
        );
        assert_eq!(
            field_of(r#"{"user_id":"u","emoji_type":"abc","timestamp":1}"#),
            Field::EmojiType
        );
        assert_eq!(
            field_of(r#"{"user_id":"u","emoji_type":"🔥🔥","timestamp":1}"#),
            Field::EmojiType
        );
        assert_eq!(
            field_of(r#"{"user_id":"u","emoji_type":"","timestamp":1}"#),
            Field::EmojiType
        );
        assert_eq!(
            field_of(r#"{"user_id":"u","timestamp":1}"#),
            Field::EmojiType
        );
        assert_eq!(
            field_of(r#"{"user_id":"u","emoji_type":"🔥","timestamp":-1}"#),
            Field::Timestamp
        );
        assert_eq!(
            field_of(r#"{"user_id":"u","emoji_type":"🔥","timestamp":1.5}"#),
            Field::Timestamp
        );
        assert_eq!(
            field_of(r#"{"user_id":"u","emoji_type":"🔥","timestamp":"yesterday"}"#),
            Field::Timestamp
        );
        assert_eq!(
            field_of(r#"{"user_id":"u","emoji_type":"🔥","timestamp":true}"#),
            Field::Timestamp
        );
        assert_eq!(field_of("not json"), Field::Body);
        assert_eq!(field_of("[1,2]"), Field::Body);
        assert_eq!(
            field_of(r#"{"user_id":"u","emoji_type":"🔥","timestamp":1} x"#),
            Field::Body
        );
    }

    #[test]
    fn future_limit_is_ten_seconds() {
        let at = |ts: i64| format!(r#"{{"user_id":"u","emoji_type":"🔥","timestamp":{ts}}}"#);
        assert!(parse(&at(NOW + MAX_FUTURE_SKEW_MS)).is_ok());
        let err = parse(&at(NOW + MAX_FUTURE_SKEW_MS + 1)).unwrap_err();
        assert_eq!(err.field, Field::Timestamp);
        assert!(err.message.contains("future"), "{}", err.message);
    }

    #[test]
    fn messages_say_what_to_fix() {
        let err = parse(r#"{"user_id":"u","emoji_type":"🔥🔥","timestamp":1}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "emoji_type: must be exactly one emoji, got 2 characters"
        );
        assert_eq!(err.field.error_code(), "invalid_emoji_type");
    }

    #[test]
    fn owned_reaction_round_trips() {
        let r = parse(r#"{"user_id":"u","emoji_type":"❤","timestamp":9}"#).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"user_id":"u","emoji_type":"❤️","timestamp":9,"stream_id":"default"}"#
        );
        assert_eq!(parse(&json).unwrap(), r);
    }

    #[test]
    fn stream_id_is_optional_and_checked() {
        let r = parse(r#"{"user_id":"u","emoji_type":"🔥","timestamp":9,"stream_id":"match-42"}"#)
            .unwrap();
        assert_eq!(r.stream_id.as_str(), "match-42");
        let r = parse(r#"{"user_id":"u","emoji_type":"🔥","timestamp":9}"#).unwrap();
        assert_eq!(r.stream_id.as_str(), "default");
        for bad in [r#""""#, r#""has space""#, r#""a/b""#, r#"7"#, r#"["x"]"#] {
            let json =
                format!(r#"{{"user_id":"u","emoji_type":"🔥","timestamp":9,"stream_id":{bad}}}"#);
            let err = parse(&json).expect_err(&json);
            assert_eq!(err.field, Field::StreamId, "{json}");
            assert_eq!(err.field.error_code(), "invalid_stream_id");
        }
        let long = "x".repeat(65);
        let err = parse(&format!(
            r#"{{"user_id":"u","emoji_type":"🔥","timestamp":9,"stream_id":"{long}"}}"#
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream_id: is 65 characters long; at most 64 are accepted"
        );
    }

    #[test]
    fn arrays_invisible_ids_and_spaced_timestamps_are_refused() {
        let now = 1_764_633_600_000;
        let refused = |json: &str| {
            parse_reaction(json.as_bytes(), now, MissingTimestamp::Use(now)).unwrap_err()
        };
        assert_eq!(refused(r#"["u", "🔥"]"#).field, Field::Body);
        assert_eq!(refused(r#" ["u", "🔥", 1]"#).field, Field::Body);
        for id in [" ", "   ", r"\u202e", r"a\u200bb", r"\ufeff", "\u{202E}x"] {
            let json = format!(r#"{{"user_id": "{id}", "emoji_type": "🔥"}}"#);
            assert_eq!(refused(&json).field, Field::UserId, "{id:?}");
        }
        let e =
            refused(r#"{"user_id": "u", "emoji_type": "🔥", "timestamp": "2025-11-23 00:00:00Z"}"#);
        assert_eq!(e.field, Field::Timestamp);
        assert!(e.message.contains("with T"), "{}", e.message);
        let ok = |json: &str| {
            parse_reaction(json.as_bytes(), now, MissingTimestamp::Use(now))
                .unwrap()
                .into_owned()
        };
        assert_eq!(
            ok(r#" {"user_id": "a b", "emoji_type": "🔥"}"#).user_id,
            "a b"
        );
        assert_eq!(
            ok(r#"{"user_id": "u", "emoji_type": "🔥", "timestamp": "2025-11-23T00:00:00Z"}"#)
                .timestamp,
            1_763_856_000_000
        );
    }
}
