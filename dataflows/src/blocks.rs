//! Newline-delimited input cut into numbered blocks, and the parse of one block.
//!
//! Blocks let several workers parse one ordered input (a file, stdin) in parallel while the
//! input keeps its order: a block's number says where it stands, so what is late can be decided
//! as if one reader had read the input line by line (see [`crate::replay`]).

use std::io::{self, Read};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::operators::{PartialCounts, TimedCount};
use crate::reaction::{parse_reaction, InvalidCounts, MissingTimestamp};
use crate::window::{EventClock, Windowing};

/// Longest accepted line. Longer lines are an input error rather than a reason to buffer
/// without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A run of whole lines.
#[derive(Debug)]
pub struct Block {
    /// Position of the block in the input, from 0.
    pub index: u64,
    /// Line number (from 1) of the block's first line.
    pub first_line: u64,
    /// The lines, each ending in `\n` except possibly the input's last.
    pub bytes: Vec<u8>,
}

/// Cuts a reader into blocks of about `block_bytes`, on line boundaries.
pub struct BlockReader<R> {
    input: R,
    block_bytes: usize,
    carry: Vec<u8>,
    next_index: u64,
    next_line: u64,
    eof: bool,
}

impl<R: Read> BlockReader<R> {
    /// A reader producing blocks of about `block_bytes` (at least one line each).
    pub fn new(input: R, block_bytes: usize) -> Self {
        BlockReader {
            input,
            block_bytes: block_bytes.max(1),
            carry: Vec::new(),
            next_index: 0,
            next_line: 1,
            eof: false,
        }
    }

    /// The next block, or `None` at the end of the input.
    pub fn next_block(&mut self) -> io::Result<Option<Block>> {
        let mut bytes = std::mem::take(&mut self.carry);
        loop {
            let cut = if self.eof {
                bytes.len()
            } else if bytes.len() >= self.block_bytes {
                // The first line end at or past the block size.
                match memchr::memchr(b'\n', &bytes[self.block_bytes - 1..]) {
                    Some(pos) => self.block_bytes + pos,
                    None if bytes.len() > MAX_LINE_BYTES => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "line {} is longer than {MAX_LINE_BYTES} bytes",
                                self.next_line
                            ),
                        ))
                    }
                    None => 0,
                }
            } else {
                0
            };
            if cut > 0 || (self.eof && bytes.is_empty()) {
                if bytes.is_empty() {
                    return Ok(None);
                }
                self.carry = bytes.split_off(cut);
                let block = Block {
                    index: self.next_index,
                    first_line: self.next_line,
                    bytes,
                };
                self.next_index += 1;
                self.next_line += memchr::memchr_iter(b'\n', &block.bytes).count() as u64;
                return Ok(Some(block));
            }
            let start = bytes.len();
            let want = self.block_bytes.saturating_sub(start).max(64 * 1024);
            bytes.resize(start + want, 0);
            let n = loop {
                match self.input.read(&mut bytes[start..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            bytes.truncate(start + n);
            if n == 0 {
                self.eof = true;
            }
        }
    }
}

/// What one block holds, reduced to what the dataflow needs: partial counts per window, stream
/// and emoji, and the block's own event-time clock. Small however large the block is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSummary {
    /// The block's position in the input.
    pub index: u64,
    /// Non-blank lines read.
    pub lines: u64,
    /// Valid reactions that were not late within the block: `(window, (stream, window, emoji),
    /// n)`. Whether they are late given the blocks before is decided later.
    pub counts: SharedCounts,
    /// Valid reactions already late within the block: `(open, (stream, window, emoji), n)`,
    /// `open` being the first window the block's own clock had left open when they were read.
    /// Whether they correct their window or are dropped is decided with the blocks before.
    pub late_counts: SharedCounts,
    /// Invalid lines by field.
    pub invalid: InvalidCounts,
    /// The first few invalid lines: line number and why.
    pub errors: Vec<(u64, String)>,
    /// The greatest valid timestamp in the block.
    pub clock: EventClock,
}

/// A block's counts, shared by the workers its summary is broadcast to: every worker needs the
/// block (to decide what later blocks' counts are late), only one emits its counts, so a copy
/// is a pointer rather than thousands of counts (and stream ids) each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedCounts(Arc<Vec<TimedCount>>);

impl From<Vec<TimedCount>> for SharedCounts {
    fn from(counts: Vec<TimedCount>) -> Self {
        SharedCounts(Arc::new(counts))
    }
}

impl Deref for SharedCounts {
    type Target = [TimedCount];
    fn deref(&self) -> &[TimedCount] {
        &self.0
    }
}

impl PartialEq<Vec<TimedCount>> for SharedCounts {
    fn eq(&self, other: &Vec<TimedCount>) -> bool {
        *self.0 == *other
    }
}

impl Serialize for SharedCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::deserialize(deserializer).map(SharedCounts::from)
    }
}

/// How many invalid lines a block keeps the reason of: enough that the first this-many of
/// the whole input are among them.
pub const ERRORS_KEPT: usize = 10;

/// Parses blocks, reusing its buffers between them.
pub struct BlockParser {
    windowing: Windowing,
    now_ms: i64,
    counts: PartialCounts,
    late: PartialCounts,
}

impl BlockParser {
    /// A parser for `windowing`, refusing timestamps too far past `now_ms`.
    pub fn new(windowing: Windowing, now_ms: i64) -> Self {
        BlockParser {
            windowing,
            now_ms,
            counts: PartialCounts::default(),
            late: PartialCounts::default(),
        }
    }

    /// Parses every line of a block.
    pub fn parse(&mut self, block: &Block) -> BlockSummary {
        let mut summary = BlockSummary {
            index: block.index,
            ..BlockSummary::default()
        };
        for (number, line) in (block.first_line..).zip(block.bytes.split(|b| *b == b'\n')) {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            summary.lines += 1;
            match parse_reaction(line, self.now_ms, MissingTimestamp::Refuse) {
                Ok(reaction) => {
                    let window = self.windowing.window_of(reaction.timestamp);
                    if summary.clock.is_late(window, &self.windowing) {
                        let open = summary.clock.open_from(&self.windowing);
                        self.late
                            .add_at(open, window, &reaction.stream_id, reaction.emoji_type, 1);
                    } else {
                        self.counts
                            .add(window, &reaction.stream_id, reaction.emoji_type, 1);
                    }
                    summary.clock.observe(reaction.timestamp);
                }
                Err(invalid) => {
                    summary.invalid.add(invalid.field);
                    if summary.errors.len() < ERRORS_KEPT {
                        summary.errors.push((number, invalid.to_string()));
                    }
                }
            }
        }
        summary.counts = self.counts.drain_by_epoch().into();
        summary.late_counts = self.late.drain_by_epoch().into();
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emoji::Emoji;
    use crate::stream::StreamId;

    fn blocks(input: &str, size: usize) -> Vec<(u64, u64, String)> {
        let mut reader = BlockReader::new(input.as_bytes(), size);
        let mut out = Vec::new();
        while let Some(b) = reader.next_block().unwrap() {
            out.push((b.index, b.first_line, String::from_utf8(b.bytes).unwrap()));
        }
        out
    }

    #[test]
    fn blocks_end_on_line_boundaries() {
        let one_line_each = blocks("aa\nbb\ncc\n", 1);
        assert_eq!(
            one_line_each
                .iter()
                .map(|b| b.2.as_str())
                .collect::<Vec<_>>(),
            ["aa\n", "bb\n", "cc\n"]
        );
        let got = blocks("aa\nbb\ncc\ndd", 4);
        let text: String = got.iter().map(|b| b.2.as_str()).collect();
        assert_eq!(text, "aa\nbb\ncc\ndd");
        assert!(got[..got.len() - 1].iter().all(|b| b.2.ends_with('\n')));
        assert_eq!(
            got.iter().map(|b| b.0).collect::<Vec<_>>(),
            (0..got.len() as u64).collect::<Vec<_>>()
        );
        // first_line follows the newlines of earlier blocks.
        let mut line = 1;
        for (_, first, text) in &got {
            assert_eq!(*first, line);
            line += text.matches('\n').count() as u64;
        }
        assert!(blocks("", 4).is_empty());
    }

    #[test]
    fn overlong_lines_are_an_error() {
        let input = "x".repeat(MAX_LINE_BYTES + 10);
        let mut reader = BlockReader::new(input.as_bytes(), 1024);
        assert!(reader.next_block().is_err());
    }

    #[test]
    fn parse_counts_and_reports_lines() {
        let input = concat!(
            r#"{"user_id":"a","emoji_type":"🔥","timestamp":100}"#,
            "\n",
            "\n",
            r#"{"user_id":"b","emoji_type":"🔥","timestamp":3000}"#,
            "\n",
            "garbage\n",
            r#"{"user_id":"c","emoji_type":"😂","timestamp":1999}"#,
            "\n",
        );
        let block = Block {
            index: 7,
            first_line: 10,
            bytes: input.as_bytes().to_vec(),
        };
        let summary = BlockParser::new(Windowing::default(), 10_000).parse(&block);
        assert_eq!(summary.index, 7);
        assert_eq!(summary.lines, 4);
        let laugh = Emoji::parse("😂").unwrap();
        assert_eq!(
            summary.late_counts,
            vec![(1, (StreamId::default(), 0, laugh), 1)],
            "1999 is late after 3000 with 500 ms lateness, read while window 1 was open"
        );
        assert_eq!(summary.invalid.total(), 1);
        assert_eq!(summary.errors.len(), 1);
        assert_eq!(summary.errors[0].0, 13);
        assert_eq!(summary.clock.max_seen_ms(), Some(3000));
        let fire = Emoji::parse("🔥").unwrap();
        let default = StreamId::default();
        assert_eq!(
            summary.counts,
            vec![
                (0, (default.clone(), 0, fire), 1),
                (1, (default, 1, fire), 1)
            ]
        );
    }
}
