//! Counters of what the service accepted, refused, dropped and emitted.
//!
//! One `Stats` value is created per running system and passed down (never a global), so tests
//! can run several systems side by side. Prometheus exposition reads these counters.

use std::sync::atomic::{AtomicU64, Ordering};

use dataflows::Field;

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

/// Every count the service keeps.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reactions accepted by the HTTP API.
    pub accepted: Counter,
    /// Reactions refused by the HTTP API, by field (body, user_id, emoji_type, timestamp).
    pub rejected_invalid: [Counter; 4],
    /// Requests refused because the producer queue was full.
    pub rejected_queue_full: Counter,
    /// Requests refused by the per-user rate limit.
    pub rejected_rate_limited: Counter,
    /// Reactions the broker acknowledged.
    pub produced: Counter,
    /// Reactions the producer failed to deliver after its retries.
    pub produce_failed: Counter,
    /// Messages read from the reactions topic.
    pub consumed: Counter,
    /// Messages on the reactions topic that were not valid reactions.
    pub invalid_on_topic: Counter,
    /// Reactions dropped because their window had closed.
    pub late: Counter,
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
    /// Clients that fell behind and were sent the latest window instead.
    pub resyncs: Counter,
    /// Clients closed because they kept falling behind.
    pub slow_clients_closed: Counter,
}

impl Stats {
    /// Counts a refused reaction.
    pub fn reject(&self, field: Field) {
        self.rejected_invalid[field as usize].inc();
    }
}
