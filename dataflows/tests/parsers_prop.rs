//! Property tests of the parsers every reaction goes through: [`parse_reaction`] (the HTTP
//! ingest, the Kafka source and replay all call it) and the block reader and parser that cut
//! newline-delimited input for replay. Whatever the bytes, they answer without panicking; what
//! they accept keeps the rules `reaction.rs` documents; a valid reaction survives a trip
//! through its JSON. Inputs are random bytes, random text, and reaction objects built from
//! good and bad field values, then mutated byte by byte.
//!
//! Case counts keep the file within a few seconds; `PROPTEST_CASES` raises them for a longer
//! hunt. A failure prints the shrunk input, and proptest keeps its seed under
//! `proptest-regressions/` so the next run tries it first.
#![allow(clippy::unwrap_used)] // test code: a failure is the test failing

use std::io::{self, Read};

use dataflows::blocks::{Block, BlockParser, BlockReader, ERRORS_KEPT};
use dataflows::reaction::{ReactionRef, MAX_FUTURE_SKEW_MS, MAX_USER_ID_CHARS};
use dataflows::{parse_reaction, Emoji, Field, MissingTimestamp, Reaction, StreamId, Windowing};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

/// 2025-11-23T00:00:00Z: the clock the parsers validate against unless a test varies it.
const NOW: i64 = 1_763_856_000_000;

/// The cases each property runs unless `PROPTEST_CASES` says otherwise: proptest's config
/// does not read the variable when it is built by hand.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// The rules, stated again independently of the code under test.

/// Unicode's format characters that `reaction.rs` refuses in a `user_id`.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

fn user_id_is_valid(id: &str) -> bool {
    let chars = id.chars().count();
    (1..=MAX_USER_ID_CHARS).contains(&chars)
        && !id.chars().all(char::is_whitespace)
        && !id.chars().any(|c| c.is_control() || is_invisible(c))
}

/// Every accepted reaction keeps these, whatever the input was.
fn assert_keeps_the_rules(r: &ReactionRef<'_>, now: i64, input: &[u8]) {
    let shown = String::from_utf8_lossy(input);
    assert!(
        user_id_is_valid(&r.user_id),
        "accepted user_id {:?} from {shown:?}",
        r.user_id
    );
    assert!(
        (0..=now + MAX_FUTURE_SKEW_MS).contains(&r.timestamp),
        "accepted timestamp {} (now {now}) from {shown:?}",
        r.timestamp
    );
    assert_eq!(
        Emoji::parse(r.emoji_type.as_str()).ok(),
        Some(r.emoji_type),
        "the emoji is in its table spelling"
    );
}

/// Parses `input` both ways a caller may treat a missing timestamp, checking every answer.
fn parse_and_check(input: &[u8], now: i64) {
    for missing in [MissingTimestamp::Refuse, MissingTimestamp::Use(now)] {
        match parse_reaction(input, now, missing) {
            Ok(r) => assert_keeps_the_rules(&r, now, input),
            Err(e) => assert!(!e.message.is_empty(), "an error says what to fix"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inputs.

fn emoji_table() -> Vec<&'static str> {
    emojis::iter().map(emojis::Emoji::as_str).collect()
}

/// A user id that the rules accept: printable, not only spaces, at most 128 characters.
fn valid_user_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.@-]{1,40}",
        // Any printable text, letters of every script and emojis included.
        "[^\\p{C}]{1,128}".prop_filter("not only spaces", |s| user_id_is_valid(s)),
        Just("é".repeat(MAX_USER_ID_CHARS)),
        Just("a b".into()),
    ]
}

fn invalid_user_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        " {1,5}",
        "\t \u{3000}",
        "[a-z]{0,3}[\u{0}-\u{1f}\u{7f}][a-z]{0,3}",
        "[a-z]{0,3}[\u{200b}\u{202e}\u{feff}\u{2066}\u{ad}][a-z]{0,3}",
        Just("x".repeat(MAX_USER_ID_CHARS + 1)),
    ]
}

fn valid_timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..=NOW + MAX_FUTURE_SKEW_MS).prop_map(Value::from),
        (NOW - 60_000..=NOW + MAX_FUTURE_SKEW_MS).prop_map(Value::from),
        (0..=NOW + MAX_FUTURE_SKEW_MS).prop_map(|ms| Value::from(rfc3339(ms))),
    ]
}

fn invalid_timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        (i64::MIN..0).prop_map(Value::from),
        (NOW + MAX_FUTURE_SKEW_MS + 1..=i64::MAX).prop_map(Value::from),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::from),
        // Non-finite floats would be written as null, which reads as no timestamp.
        any::<f64>()
            .prop_filter("a finite fraction", |f| f.is_finite() && f.fract() != 0.0)
            .prop_map(Value::from),
        Just(Value::from("2025-11-23 00:00:00Z")),
        Just(Value::from("yesterday")),
        Just(Value::from("")),
        Just(Value::Bool(true)),
        Just(Value::Array(vec![])),
        Just(serde_json::json!({"ms": 1})),
        // Null is an explicit value: serde reads it as a missing field.
    ]
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn valid_emoji() -> impl Strategy<Value = String> {
    prop_oneof![
        select(emoji_table()).prop_map(str::to_owned),
        // Unqualified spellings that the table also knows.
        Just("\u{2764}".to_owned()),
    ]
}

fn invalid_emoji() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from("")),
        "[a-z]{1,3}".prop_map(Value::from),
        // Two emojis, unless the pair is itself one (a skin tone after a hand).
        (select(emoji_table()), select(emoji_table()))
            .prop_map(|(a, b)| format!("{a}{b}"))
            .prop_filter("not one emoji", |s| emojis::get(s).is_none())
            .prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        Just(Value::Bool(false)),
    ]
}

/// Any JSON value at all, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        select(emoji_table()).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for one field: good, bad, absent, or anything.
#[derive(Clone, Debug)]
enum Slot {
    Good(Value),
    Bad(Value),
    Absent,
}

fn slot(
    good: impl Strategy<Value = Value> + 'static,
    bad: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Slot> {
    prop_oneof![
        4 => good.prop_map(Slot::Good),
        2 => bad.prop_map(Slot::Bad),
        1 => Just(Slot::Absent),
    ]
    .boxed()
}

/// A reaction object of good or bad fields in any order, perhaps with extra keys.
#[derive(Clone, Debug)]
struct Object {
    user_id: Slot,
    emoji_type: Slot,
    timestamp: Slot,
    extra: Vec<(String, Value)>,
    /// The order the keys are written in: a permutation of at least as many places as keys.
    order: Vec<usize>,
}

impl Object {
    fn text(&self) -> String {
        let mut fields: Vec<(String, Value)> = Vec::new();
        for (name, slot) in [
            ("user_id", &self.user_id),
            ("emoji_type", &self.emoji_type),
            ("timestamp", &self.timestamp),
        ] {
            if let Slot::Good(v) | Slot::Bad(v) = slot {
                fields.push((name.into(), v.clone()));
            }
        }
        fields.extend(self.extra.iter().cloned());
        // `order` permutes more places than there are fields: its small ones order them.
        let order: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|i| *i < fields.len())
            .collect();
        let body: Vec<String> = order
            .iter()
            .map(|&i| {
                let (k, v) = &fields[i];
                format!("{}:{v}", Value::from(k.as_str()))
            })
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

fn object() -> impl Strategy<Value = Object> {
    (
        slot(
            valid_user_id().prop_map(Value::from),
            prop_oneof![
                invalid_user_id().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                Just(Value::Array(vec![Value::from("u")])),
            ],
        ),
        slot(valid_emoji().prop_map(Value::from), invalid_emoji()),
        slot(valid_timestamp(), invalid_timestamp()),
        prop::collection::vec(("[a-z_]{1,10}", any_json()), 0..3),
        Just((0..6).collect::<Vec<usize>>()).prop_shuffle(),
    )
        .prop_map(|(user_id, emoji_type, timestamp, extra, order)| Object {
            user_id,
            emoji_type,
            timestamp,
            extra: extra
                .into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "user_id" | "emoji_type" | "timestamp"))
                .collect(),
            order,
        })
}

/// One edit of the bytes; positions wrap around the input's length.
#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Replace { at: usize, byte: u8 },
    Duplicate { at: usize, len: usize },
    Truncate { at: usize },
}

/// Bytes that matter to JSON, often; any byte, sometimes.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => select(b"{}[]\":,\\ \n\t0123456789-+.eEtfnu".to_vec()),
        1 => any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..8usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (
            any::<usize>(),
            prop::collection::vec(interesting_byte(), 1..6)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), interesting_byte()).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len();
        let at = |at: usize| if n == 0 { 0 } else { at % (n + 1) };
        match m {
            Mutation::Delete { at: a, len } => {
                let a = at(*a);
                bytes.drain(a..(a + len).min(n));
            }
            Mutation::Insert { at: a, bytes: new } => {
                let a = at(*a);
                bytes.splice(a..a, new.iter().copied());
            }
            Mutation::Replace { at: a, byte } if n > 0 => bytes[*a % n] = *byte,
            Mutation::Replace { .. } => bytes.push(b'{'),
            Mutation::Duplicate { at: a, len } => {
                let a = at(*a);
                let piece = bytes[a..(a + len).min(n)].to_vec();
                bytes.splice(a..a, piece);
            }
            Mutation::Truncate { at: a } => bytes.truncate(at(*a)),
        }
    }
    bytes
}

/// A string's JSON with every non-ASCII character escaped (`\uXXXX`, surrogate pairs above
/// the BMP), as some clients send it.
fn ascii_json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

fn valid_reaction() -> impl Strategy<Value = Reaction> {
    (
        valid_user_id(),
        valid_emoji(),
        0..=NOW + MAX_FUTURE_SKEW_MS,
        "[A-Za-z0-9_.:-]{1,64}",
    )
        .prop_map(|(user_id, emoji, timestamp, stream)| Reaction {
            user_id,
            emoji_type: Emoji::parse(&emoji).unwrap(),
            timestamp,
            stream_id: StreamId::parse(&stream).unwrap(),
        })
}

// ---------------------------------------------------------------------------------------
// parse_reaction.

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        parse_and_check(&bytes, NOW);
    }

    #[test]
    fn random_text_never_panics(text in prop_oneof![any::<String>(), "[{}\\[\\]\":,a-z0-9 ]{0,80}"]) {
        parse_and_check(text.as_bytes(), NOW);
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn mutated_reactions_never_panic_and_what_is_accepted_is_valid(
        object in object(),
        mutations in prop::collection::vec(mutation(), 0..4),
        now in 0..=4 * NOW,
        leading in "[ \t\r\n]{0,2}",
    ) {
        let mut bytes = leading.into_bytes();
        bytes.extend_from_slice(object.text().as_bytes());
        parse_and_check(&mutate(bytes, &mutations), now);
    }

    /// Well-formed objects: accepted exactly when every field is good, with those values;
    /// otherwise refused, naming one of the bad fields.
    #[test]
    fn a_reaction_object_is_accepted_iff_its_fields_are_good(object in object()) {
        let text = object.text();
        let slots = [
            (Field::UserId, &object.user_id),
            (Field::EmojiType, &object.emoji_type),
            (Field::Timestamp, &object.timestamp),
        ];
        let missing = MissingTimestamp::Use(NOW - 1);
        let bad: Vec<Field> = slots
            .iter()
            .filter(|(field, slot)| match slot {
                Slot::Bad(_) => true,
                Slot::Absent => *field != Field::Timestamp,
                Slot::Good(_) => false,
            })
            .map(|(field, _)| *field)
            .collect();
        match parse_reaction(text.as_bytes(), NOW, missing) {
            Ok(r) => {
                prop_assert!(bad.is_empty(), "accepted {text} with bad {bad:?}");
                assert_keeps_the_rules(&r, NOW, text.as_bytes());
                if let Slot::Good(Value::String(id)) = &object.user_id {
                    prop_assert_eq!(r.user_id.as_ref(), id.as_str());
                }
                if let Slot::Good(Value::String(e)) = &object.emoji_type {
                    prop_assert_eq!(r.emoji_type, Emoji::parse(e).unwrap());
                }
                match &object.timestamp {
                    Slot::Good(Value::Number(n)) => prop_assert_eq!(Some(r.timestamp), n.as_i64()),
                    Slot::Good(Value::String(s)) => prop_assert_eq!(
                        r.timestamp,
                        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
                    ),
                    Slot::Absent => prop_assert_eq!(r.timestamp, NOW - 1),
                    _ => {}
                }
            }
            Err(e) => {
                prop_assert!(bad.contains(&e.field), "{text}: refused for {:?} ({}), bad are {bad:?}", e.field, e.message);
            }
        }
        // Files and topics must carry event time.
        if matches!(object.timestamp, Slot::Absent) {
            prop_assert!(parse_reaction(text.as_bytes(), NOW, MissingTimestamp::Refuse).is_err());
        }
    }

    #[test]
    fn a_valid_reaction_round_trips_through_its_json(
        reaction in valid_reaction(),
        as_text in any::<bool>(),
        escaped in any::<bool>(),
    ) {
        let parse = |json: &str| {
            parse_reaction(json.as_bytes(), NOW, MissingTimestamp::Refuse)
                .map(ReactionRef::into_owned)
        };
        let json = serde_json::to_string(&reaction).unwrap();
        prop_assert_eq!(parse(&json), Ok(reaction.clone()), "{}", json);
        // The same reaction as clients may also spell it.
        let timestamp = if as_text {
            Value::from(rfc3339(reaction.timestamp)).to_string()
        } else {
            reaction.timestamp.to_string()
        };
        let (user_id, emoji) = if escaped {
            (ascii_json(&reaction.user_id), ascii_json(reaction.emoji_type.as_str()))
        } else {
            (
                Value::from(reaction.user_id.as_str()).to_string(),
                Value::from(reaction.emoji_type.as_str()).to_string(),
            )
        };
        let stream = Value::from(reaction.stream_id.as_str()).to_string();
        let spelled = format!(r#" {{"timestamp":{timestamp}, "stream_id":{stream}, "emoji_type":{emoji},"user_id":{user_id}}} "#);
        prop_assert_eq!(parse(&spelled), Ok(reaction), "{}", spelled);
    }
}

// ---------------------------------------------------------------------------------------
// Blocks of newline-delimited input.

/// A reader that hands out its input in the pieces it is given, as pipes and sockets do.
struct Pieces {
    input: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = size.min(buf.len()).min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// One line of input: a reaction (good, bad or mutated), blank, or noise.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => valid_reaction().prop_map(|r| serde_json::to_vec(&r).unwrap()),
        2 => (object(), prop::collection::vec(mutation(), 0..2))
            .prop_map(|(o, m)| mutate(o.text().into_bytes(), &m)),
        1 => "[ \t\r]{0,3}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
    .prop_map(|mut l| {
        l.retain(|b| *b != b'\n');
        l
    })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(line(), 0..30), any::<bool>()).prop_map(|(lines, trailing)| {
        let mut input = lines.join(&b'\n');
        if trailing && !input.is_empty() {
            input.push(b'\n');
        }
        input
    })
}

/// What a block holds, line by line, found with [`parse_reaction`] alone.
#[derive(Default)]
struct Expected {
    lines: u64,
    valid: u64,
    invalid: [u64; 5],
    max_ts: Option<i64>,
    invalid_lines: Vec<u64>,
}

fn expected(block: &Block, now: i64) -> Expected {
    let mut e = Expected::default();
    for (number, line) in (block.first_line..).zip(block.bytes.split(|b| *b == b'\n')) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        e.lines += 1;
        match parse_reaction(line, now, MissingTimestamp::Refuse) {
            Ok(r) => {
                e.valid += 1;
                e.max_ts = e.max_ts.max(Some(r.timestamp));
            }
            Err(err) => {
                e.invalid[Field::ALL.iter().position(|f| *f == err.field).unwrap()] += 1;
                e.invalid_lines.push(number);
            }
        }
    }
    e
}

proptest! {
    #![proptest_config(cases(500))]

    /// The blocks put back together are the input, cut on line ends, numbered in order; their
    /// summaries account for every line, as a line-by-line parse does.
    #[test]
    fn blocks_keep_every_line_and_their_summaries_account_for_them(
        input in prop_oneof![input(), prop::collection::vec(any::<u8>(), 0..400)],
        block_bytes in 1..200usize,
        sizes in prop::collection::vec(1..100usize, 1..5),
    ) {
        let mut reader = BlockReader::new(
            Pieces { input: input.clone(), at: 0, sizes, next: 0 },
            block_bytes,
        );
        let mut parser = BlockParser::new(Windowing::default(), NOW);
        let mut joined = Vec::new();
        let mut line = 1;
        let mut index = 0;
        while let Some(block) = reader.next_block().unwrap() {
            prop_assert_eq!(block.index, index);
            prop_assert_eq!(block.first_line, line);
            prop_assert!(!block.bytes.is_empty());
            if joined.len() + block.bytes.len() < input.len() {
                prop_assert_eq!(block.bytes.last(), Some(&b'\n'), "only the last block may end mid-line");
            }
            index += 1;
            line += block.bytes.iter().filter(|b| **b == b'\n').count() as u64;
            joined.extend_from_slice(&block.bytes);

            let summary = parser.parse(&block);
            let want = expected(&block, NOW);
            prop_assert_eq!(summary.index, block.index);
            prop_assert_eq!(summary.lines, want.lines);
            let counted: u64 = summary.counts.iter().map(|(_, _, n)| n).sum();
            let late: u64 = summary.late_counts.iter().map(|(_, _, n)| n).sum();
            prop_assert_eq!(counted + late, want.valid);
            for (i, field) in Field::ALL.iter().enumerate() {
                prop_assert_eq!(summary.invalid.get(*field), want.invalid[i], "{:?}", field);
            }
            prop_assert_eq!(summary.clock.max_seen_ms(), want.max_ts);
            let kept: Vec<u64> = summary.errors.iter().map(|(n, _)| *n).collect();
            let first: Vec<u64> = want.invalid_lines.iter().copied().take(ERRORS_KEPT).collect();
            prop_assert_eq!(kept, first);
            prop_assert!(summary.counts.windows(2).all(|w| (w[0].0, w[0].1 .1) <= (w[1].0, w[1].1 .1)), "counts ordered by epoch and window");
            let keys: std::collections::HashSet<_> = summary.counts.iter().map(|(epoch, key, _)| (epoch, key)).collect();
            prop_assert_eq!(keys.len(), summary.counts.len(), "one entry per (epoch, stream, window, emoji)");
            prop_assert!(summary.counts.iter().all(|(epoch, key, n)| *n > 0 && *epoch == key.1));
        }
        prop_assert_eq!(joined, input);
    }
}
