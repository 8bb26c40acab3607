//! Where a restarted dataflow resumes: the window after the last one in the windows topic,
//! with the streams that were active there, so every active stream's tick goes on with no gap
//! and no repeat.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dataflows::{StreamId, WindowId, WindowSummary, Windowing};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{client_config, BrokerError, KafkaSettings};

/// What the windows topic's tail says about the run that wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// The last window written.
    pub last_window: WindowId,
    /// Streams with reactions in the windows within the idle span before `last_window` (and in
    /// it), each with the last window it had reactions in.
    pub last_reacted: HashMap<StreamId, WindowId>,
    /// The latest record (highest revision) of each window the next run may still correct.
    pub recent: Vec<WindowSummary>,
    /// The window length the last window was written with (`end_ms - start_ms` of its
    /// summary), when its record is one.
    pub window_ms: Option<u64>,
}

/// Records read back from the end on the first try; the read grows fourfold until it reaches
/// past the idle span.
const FIRST_READ: i64 = 4096;

/// Reads the windows topic's tail: `None` when the topic is empty (a fresh start). The next run
/// may correct the `correction_windows` windows before it starts (at most `idle_windows`).
pub fn read_tail(
    kafka: &KafkaSettings,
    idle_windows: u64,
    correction_windows: u64,
    timeout: Duration,
) -> Result<Option<Tail>, BrokerError> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", format!("{}-resume", kafka.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create a Kafka consumer for {}: {e}", kafka.brokers))?;
    let deadline = Instant::now() + timeout;
    warn_of_other_partitions(&consumer, &kafka.windows_topic, timeout);
    let (low, high) = consumer
        .fetch_watermarks(&kafka.windows_topic, 0, timeout)
        .map_err(|e| format!("cannot read the end of {}: {e}", kafka.windows_topic))?;
    if high <= low {
        return Ok(None);
    }
    let mut span = FIRST_READ;
    loop {
        let from = (high - span).max(low);
        let records = read_range(&consumer, kafka, from, high, deadline)?;
        let Some(last_window) = records.iter().map(|r| r.window).max() else {
            return Err(BrokerError(format!(
                "{} holds offsets {low}..{high} but none could be read",
                kafka.windows_topic
            )));
        };
        let horizon = last_window.saturating_sub(idle_windows);
        // Records are in epoch order, and a window's records are written at its own epoch and
        // up to `correction_windows` epochs later (its corrections): every record of the
        // windows from `horizon` on is read once the first record read is a window earlier
        // than that.
        let reached = records
            .first()
            .is_some_and(|r| r.window.saturating_add(correction_windows) < horizon);
        if reached || from == low {
            let foreign = records.iter().filter(|r| !r.parsed).count();
            if foreign > 0 {
                tracing::warn!(
                    "{}: {foreign} records of the tail are not window summaries; each counts as an empty window",
                    kafka.windows_topic
                );
            }
            let window_ms = records
                .iter()
                .rev()
                .find(|r| r.window == last_window && r.parsed)
                .and_then(|r| u64::try_from(r.summary.end_ms - r.summary.start_ms).ok());
            let correctable = last_window
                .saturating_add(1)
                .saturating_sub(correction_windows.max(1));
            let mut last_reacted: HashMap<StreamId, WindowId> = HashMap::new();
            let mut recent: HashMap<(StreamId, WindowId), WindowSummary> = HashMap::new();
            for r in records.into_iter().filter(|r| r.window >= horizon) {
                if r.summary.total > 0 {
                    let at = last_reacted.entry(r.stream.clone()).or_insert(r.window);
                    *at = (*at).max(r.window);
                }
                if correction_windows > 0 && r.window >= correctable {
                    // The highest revision is the window's latest state.
                    let kept = recent
                        .entry((r.stream, r.window))
                        .or_insert(r.summary.clone());
                    if r.summary.revision >= kept.revision {
                        *kept = r.summary;
                    }
                }
            }
            return Ok(Some(Tail {
                last_window,
                last_reacted,
                recent: recent.into_values().collect(),
                window_ms,
            }));
        }
        span = span.saturating_mul(4);
    }
}

/// Windows are written to partition 0 only, and the tail read from there: records in another
/// partition (an older emostream hashed keys over every partition) are not read back.
fn warn_of_other_partitions(consumer: &BaseConsumer, topic: &str, timeout: Duration) {
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else {
        return;
    };
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    for partition in 1..partitions {
        let Ok(partition) = i32::try_from(partition) else {
            return;
        };
        if let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, timeout) {
            if high > low {
                tracing::warn!(
                    "{topic} holds {} records in partition {partition}, which emostream no longer writes or reads back: a window they hold may be emitted again; give the run a new --windows-topic to be rid of them",
                    high - low
                );
            }
        }
    }
}

/// One record of the windows topic.
struct Record {
    stream: StreamId,
    window: WindowId,
    summary: WindowSummary,
    /// Whether the value is a summary (rather than something another program wrote).
    parsed: bool,
}

fn read_range(
    consumer: &BaseConsumer,
    kafka: &KafkaSettings,
    from: i64,
    high: i64,
    deadline: Instant,
) -> Result<Vec<Record>, BrokerError> {
    let topic = &kafka.windows_topic;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from))
        .map_err(|e| BrokerError(e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| BrokerError(e.to_string()))?;
    let mut records = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let key = message
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .unwrap_or_default();
                let (stream, window) = parse_key(key).ok_or_else(|| {
                    BrokerError(format!(
                        "{topic} offset {} has key {key:?}, not {{stream_id}}/{{window}}",
                        message.offset()
                    ))
                })?;
                // A record that is not a summary (written by something else) counts as an
                // empty window: it says the window was emitted, and nothing about its counts.
                let parsed = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<WindowSummary>(p).ok());
                records.push(Record {
                    parsed: parsed.is_some(),
                    summary: parsed.unwrap_or_else(|| {
                        WindowSummary::new(stream.clone(), window, &Windowing::default(), vec![])
                    }),
                    stream,
                    window,
                });
                if message.offset() >= high - 1 {
                    return Ok(records);
                }
            }
            Some(Err(e)) => return Err(BrokerError(format!("cannot read {topic}: {e}"))),
            None => {}
        }
    }
    Err(BrokerError(format!(
        "timed out reading the last records of {topic}"
    )))
}

/// `{stream_id}/{window}`; a bare window index (written before streams existed) is the default
/// stream's.
fn parse_key(key: &str) -> Option<(StreamId, WindowId)> {
    match key.rsplit_once('/') {
        Some((stream, window)) => Some((StreamId::parse(stream).ok()?, window.parse().ok()?)),
        None => Some((StreamId::default(), key.parse().ok()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_stream_and_window() {
        let (s, w) = parse_key("match-42/881928000").unwrap();
        assert_eq!((s.as_str(), w), ("match-42", 881_928_000));
        let (s, w) = parse_key("17").unwrap();
        assert_eq!((s.as_str(), w), ("default", 17));
        assert!(parse_key("a b/1").is_none());
        assert!(parse_key("a/x").is_none());
        assert!(parse_key("").is_none());
    }
}
