//! Counters of what the service accepted, refused, dropped and emitted.
//!
//! One `Stats` value is created per running system and passed down (never a global), so tests
//! can run several systems side by side. Prometheus exposition reads these counters.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use dataflows::operators::HeldState;
use dataflows::Field;
use prometheus_client::metrics::histogram::Histogram;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge holding `value`.
    pub fn new(value: i64) -> Gauge {
        Gauge(AtomicI64::new(value))
    }
    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why the HTTP API refused reactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum RejectReason {
    /// The body is not JSON of the right shape.
    Body,
    /// A bad `user_id`.
    UserId,
    /// A bad `emoji_type`.
    EmojiType,
    /// A bad `timestamp`.
    Timestamp,
    /// A bad `stream_id`.
    StreamId,
    /// Over the per-user rate limit.
    RateLimited,
    /// The producer queue was full.
    QueueFull,
    /// The broker failed the write.
    BrokerUnavailable,
    /// No valid token, or one that does not cover the reaction.
    Token,
}

impl RejectReason {
    /// Every reason, in discriminant order.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::Body,
        RejectReason::UserId,
        RejectReason::EmojiType,
        RejectReason::Timestamp,
        RejectReason::StreamId,
        RejectReason::RateLimited,
        RejectReason::QueueFull,
        RejectReason::BrokerUnavailable,
        RejectReason::Token,
    ];

    /// The reason as a metric label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Body => "body",
            RejectReason::UserId => "user_id",
            RejectReason::EmojiType => "emoji_type",
            RejectReason::Timestamp => "timestamp",
            RejectReason::StreamId => "stream_id",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::QueueFull => "queue_full",
            RejectReason::BrokerUnavailable => "broker_unavailable",
            RejectReason::Token => "token",
        }
    }
}

impl From<Field> for RejectReason {
    fn from(field: Field) -> RejectReason {
        match field {
            Field::Body => RejectReason::Body,
            Field::UserId => RejectReason::UserId,
            Field::EmojiType => RejectReason::EmojiType,
            Field::StreamId => RejectReason::StreamId,
            Field::Timestamp => RejectReason::Timestamp,
        }
    }
}

/// Counters of one partition of the reactions topic.
#[derive(Debug)]
pub struct PartitionStats {
    /// Messages read from it.
    pub consumed: Counter,
    /// Reactions this process's producer wrote to it (the broker confirmed them).
    pub produced: Counter,
    /// Offsets never read from it (the broker dropped them).
    pub lost: Counter,
    /// Messages on the broker that this process has not read yet; -1 until the consumer's
    /// statistics first report it.
    pub lag: Gauge,
}

/// Window close delays are seconds after the window's end: the lateness and idleness waits
/// (1.5 s by default) sit in the middle of these buckets.
const CLOSE_DELAY_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0,
];

/// Every count the service keeps.
#[derive(Debug)]
pub struct Stats {
    /// Reactions accepted by the HTTP API.
    pub accepted: Counter,
    /// Reactions refused by the HTTP API, by [`RejectReason`] (a batch refused whole counts
    /// each of its reactions).
    pub rejected: [Counter; 9],
    /// Requests answered 503 because the producer queue was full.
    pub rejected_queue_full: Counter,
    /// Requests refused for their token, by [`crate::auth::Reason`].
    pub auth_refused: [Counter; 9],
    /// Event streams ended because their token expired.
    pub streams_expired: Counter,
    /// Reactions the broker acknowledged.
    pub produced: Counter,
    /// Reactions the producer failed to deliver after its retries.
    pub produce_failed: Counter,
    /// Reactions of requests answered 503 because the broker did not confirm them within the
    /// ack timeout: they may be counted or not.
    pub unconfirmed: Counter,
    /// Messages read from the reactions topic.
    pub consumed: Counter,
    /// Messages read from the reactions topic, watermark marks included: whether the source
    /// moves.
    pub read: Counter,
    /// Messages on the reactions topic that were not valid reactions.
    pub invalid_on_topic: Counter,
    /// Reactions dropped because their window had closed past the correction horizon.
    pub late: Counter,
    /// Late reactions counted into their closed window (each correcting it).
    pub corrected: Counter,
    /// Corrected windows written to the windows topic (a window again, with a higher revision).
    pub corrections_emitted: Counter,
    /// What corrections hold: windows and keys within the horizon.
    pub corrections_held: Arc<HeldState>,
    /// Messages the consumer never saw (offset gaps, e.g. the embedded broker's ring overflowed).
    pub lost: Counter,
    /// Windows written to the windows topic.
    pub windows_emitted: Counter,
    /// Clients registered with `POST /clients`.
    pub registrations: Counter,
    /// Registered clients released because they had no event stream for the time to live.
    pub clients_expired: Counter,
    /// SSE events sent, over every connection.
    pub events_sent: Counter,
    /// WebSocket event messages sent, over every connection.
    pub ws_events_sent: Counter,
    /// Event streams open now in this process, by transport (SSE, WebSocket).
    pub streams_open: [AtomicI64; 2],
    /// WebSocket clients closed for not answering a ping within a keep-alive interval.
    pub ws_unanswered_pings: Counter,
    /// Clients that fell behind and were sent the latest window instead.
    pub resyncs: Counter,
    /// Clients closed because they kept falling behind, or stopped reading (a write that
    /// could not complete within `--write-timeout-ms`).
    pub slow_clients_closed: Counter,
    /// Resumes (`Last-Event-ID`) whose missed windows were over `--max-resume-bytes`, sent
    /// the latest window as a resync instead.
    pub resume_truncated: Counter,
    /// Connections beyond `--max-connections`, answered 503 and closed.
    pub connections_refused: Counter,
    /// HTTP requests answered with an error status, by status.
    pub refusals: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Connections closed for sending no request head within `--header-timeout-ms`, or for
    /// being idle for `--idle-timeout-ms`.
    pub connections_timed_out: Counter,
    /// Per partition of the reactions topic, indexed by partition id.
    pub partitions: Vec<PartitionStats>,
    /// Per worker of this process: event time (ms since the Unix epoch) below which its
    /// windows are closed; `i64::MIN` until the worker starts.
    pub watermarks: Vec<Gauge>,
    /// Seconds from a window's end to its emission.
    pub window_close_delay: Histogram,
    /// The end (ms since the epoch) of the latest window this process published; 0 before.
    last_window_end_ms: std::sync::atomic::AtomicI64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new(0, 0)
    }
}

impl Stats {
    /// Counts one request answered with `status` (400 or above).
    pub fn refused(&self, status: u16) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    /// The refusals counted so far, by status.
    pub fn refusals(&self) -> Vec<(u16, u64)> {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(s, n)| (*s, *n))
            .collect()
    }

    /// Counters for a reactions topic of `partitions` partitions read by `workers` workers.
    pub fn new(partitions: usize, workers: usize) -> Stats {
        Stats {
            accepted: Counter::default(),
            rejected: Default::default(),
            rejected_queue_full: Counter::default(),
            auth_refused: Default::default(),
            streams_expired: Counter::default(),
            produced: Counter::default(),
            produce_failed: Counter::default(),
            unconfirmed: Counter::default(),
            consumed: Counter::default(),
            read: Counter::default(),
            invalid_on_topic: Counter::default(),
            late: Counter::default(),
            corrected: Counter::default(),
            corrections_emitted: Counter::default(),
            corrections_held: Arc::default(),
            lost: Counter::default(),
            windows_emitted: Counter::default(),
            registrations: Counter::default(),
            clients_expired: Counter::default(),
            events_sent: Counter::default(),
            ws_events_sent: Counter::default(),
            streams_open: Default::default(),
            ws_unanswered_pings: Counter::default(),
            resyncs: Counter::default(),
            slow_clients_closed: Counter::default(),
            resume_truncated: Counter::default(),
            connections_refused: Counter::default(),
            refusals: std::sync::Mutex::default(),
            connections_timed_out: Counter::default(),
            partitions: (0..partitions)
                .map(|_| PartitionStats {
                    consumed: Counter::default(),
                    produced: Counter::default(),
                    lost: Counter::default(),
                    lag: Gauge::new(-1),
                })
                .collect(),
            watermarks: (0..workers).map(|_| Gauge::new(i64::MIN)).collect(),
            window_close_delay: Histogram::new(CLOSE_DELAY_BUCKETS),
            last_window_end_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Counts `n` reactions refused for `reason`.
    pub fn reject(&self, reason: impl Into<RejectReason>, n: u64) {
        self.rejected[reason.into() as usize].add(n);
    }

    /// Reactions refused for `reason` so far.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].get()
    }

    /// The partition's counters, if it is one of the topic's.
    pub fn partition(&self, partition: i32) -> Option<&PartitionStats> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.partitions.get(p))
    }

    /// Notes a window this process published, ending at `end_ms`.
    pub fn window_published(&self, end_ms: i64) {
        self.last_window_end_ms
            .fetch_max(end_ms, std::sync::atomic::Ordering::AcqRel);
    }

    /// The end of the latest window this process published, if any.
    pub fn last_window_end_ms(&self) -> Option<i64> {
        let end = self
            .last_window_end_ms
            .load(std::sync::atomic::Ordering::Acquire);
        (end > 0).then_some(end)
    }

    /// The most reactions written to one partition and neither read nor lost yet.
    pub fn most_unread(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| {
                p.produced
                    .get()
                    .saturating_sub(p.consumed.get())
                    .saturating_sub(p.lost.get())
            })
            .max()
            .unwrap_or(0)
    }

    /// Messages this process's partitions hold that it has not read, as far as known.
    pub fn lag_total(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| u64::try_from(p.lag.get()).unwrap_or(0))
            .sum()
    }
}
