//! Watermark marks: how each process's ingest vouches, in every partition of the reactions
//! topic, for the reactions it has queued.
//!
//! A few times a second each process's producer writes one mark into every partition: a record
//! with the [`MARK_HEADER`] header (the process index) and, as its value, the producer's clock
//! in milliseconds, read before the mark is queued. The producer is idempotent and keeps its
//! writes to a partition in order, so every reaction it queued before that time precedes the
//! mark. The sources close windows only as far as every process's marks allow
//! ([`dataflows::watermark`]): while a producer cannot deliver (a broker stall, a full queue),
//! its marks stop, and windows wait for its reactions instead of dropping them as late.
//!
//! Other consumers of the reactions topic should skip records that carry the header.

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;

/// The header that makes a record a mark; its value is the producing process's index.
pub const MARK_HEADER: &str = "emostream-mark";

/// How often each process marks every partition.
pub const MARK_EVERY: Duration = Duration::from_millis(200);

/// A mark read from the reactions topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The process whose producer wrote it.
    pub process: usize,
    /// Its producer's clock when it was queued, ms since the epoch.
    pub at_ms: i64,
}

/// The mark a record carries: `None` for a record without the header (a reaction), an error
/// for a header or value that is not a mark's.
pub fn read_mark(message: &BorrowedMessage<'_>) -> Option<Result<Mark, String>> {
    let header = message.headers()?.iter().find(|h| h.key == MARK_HEADER)?;
    Some(parse_mark(header.value, message.payload()))
}

fn parse_mark(process: Option<&[u8]>, value: Option<&[u8]>) -> Result<Mark, String> {
    let process = text(process).ok_or("a mark without a process")?;
    let at_ms = text(value).ok_or("a mark without a time")?;
    Ok(Mark {
        process: process
            .parse()
            .map_err(|_| format!("a mark's process is {process:?}, not an index"))?,
        at_ms: at_ms
            .parse()
            .map_err(|_| format!("a mark's time is {at_ms:?}, not milliseconds"))?,
    })
}

fn text(bytes: Option<&[u8]>) -> Option<&str> {
    bytes.and_then(|b| std::str::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_a_process_index_and_milliseconds() {
        assert_eq!(
            parse_mark(Some(b"2"), Some(b"1764633600123")),
            Ok(Mark {
                process: 2,
                at_ms: 1_764_633_600_123
            })
        );
        assert!(parse_mark(None, Some(b"1")).is_err());
        assert!(parse_mark(Some(b"x"), Some(b"1")).is_err());
        assert!(parse_mark(Some(b"0"), Some(b"{}")).is_err());
        assert!(parse_mark(Some(b"0"), None).is_err());
    }
}
