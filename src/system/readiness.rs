//! `/readyz` of a running system: ready while windows can flow, i.e. no fault stopped them,
//! the broker confirms what is produced, the topics are the ones read since the start (as the
//! topics watch last found them), and the source moves while there is something to read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kafka::producer::ReactionProducer;
use crate::kafka::topics::TopicsFinding;
use crate::server::Readiness;
use crate::stats::Stats;
use crate::system::Faults;

/// A source with messages waiting that reads nothing for this long is stuck.
const SOURCE_STUCK_AFTER: Duration = Duration::from_secs(10);

/// What the topics watch last found: `None` before its first check, `Err` when the brokers did
/// not answer, `Ok(Some(_))` a problem with the topics.
#[derive(Clone, Default)]
pub struct TopicsSeen(Arc<Mutex<Option<TopicsFinding>>>);

impl TopicsSeen {
    /// Records the latest check.
    pub fn set(&self, found: TopicsFinding) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
    }

    fn problem(&self) -> Option<String> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref()? {
            Ok(problem) => problem.clone(),
            Err(e) => Some(e.clone()),
        }
    }
}

/// What readiness looks at.
pub struct SystemReadiness {
    /// Its confirmations, and the brokers' metadata.
    producer: ReactionProducer,
    /// Any fault that stopped windows from flowing.
    faults: Faults,
    /// The topics, as last checked.
    topics: TopicsSeen,
    /// What the source read, and its lag.
    stats: Arc<Stats>,
    /// Messages read at the last check, and since when that count has not moved.
    source: Mutex<(u64, Instant)>,
    /// No window published for this long past the start or the last window's end: windows
    /// are not closing.
    windows_late_after: Duration,
    /// Wall clock at the start, ms.
    started_ms: i64,
}

impl SystemReadiness {
    /// Readiness of the system using these.
    pub fn new(
        producer: ReactionProducer,
        faults: Faults,
        topics: TopicsSeen,
        stats: Arc<Stats>,
        windows_late_after: Duration,
    ) -> SystemReadiness {
        let read = stats.read.get();
        SystemReadiness {
            producer,
            faults,
            topics,
            stats,
            source: Mutex::new((read, Instant::now())),
            windows_late_after,
            started_ms: dataflows::wall_clock_ms(),
        }
    }

    /// How long past what the window rule allows no window has been published.
    fn windows_late_for(&self) -> Option<Duration> {
        windows_late(
            dataflows::wall_clock_ms(),
            self.stats.last_window_end_ms(),
            self.started_ms,
            self.windows_late_after,
        )
    }

    /// How long the source has read nothing while the topic holds messages it has not read.
    fn source_stuck_for(&self) -> Option<Duration> {
        let read = self.stats.read.get();
        let mut last = self.source.lock().unwrap_or_else(|e| e.into_inner());
        if read != last.0 {
            *last = (read, Instant::now());
            return None;
        }
        let behind = self.stats.lag_total() > 0;
        let still = last.1.elapsed();
        (behind && still > SOURCE_STUCK_AFTER).then_some(still)
    }
}

impl Readiness for SystemReadiness {
    fn not_ready(&self) -> Option<String> {
        if let Some(fault) = self.faults.first() {
            return Some(format!("windows are not flowing: {fault}"));
        }
        if let Some(silent) = self.producer.stalled() {
            return Some(format!(
                "the Kafka broker has confirmed nothing for {} s (--ack-timeout-ms)",
                silent.as_secs()
            ));
        }
        if let Some(problem) = self.topics.problem() {
            return Some(problem);
        }
        if let Some(quiet) = self.windows_late_for() {
            return Some(format!(
                "no window has closed for {} s: the watermark does not move",
                quiet.as_secs()
            ));
        }
        if let Some(still) = self.source_stuck_for() {
            return Some(format!(
                "the reactions topic is not being read: {} messages wait, none read for {} s",
                self.stats.lag_total(),
                still.as_secs()
            ));
        }
        None
    }
}

/// How long windows are late at `now_ms`: quiet since the later of the last published window's
/// end and the start (a restart publishing old windows is not late), beyond `after`.
fn windows_late(
    now_ms: i64,
    last_end_ms: Option<i64>,
    started_ms: i64,
    after: Duration,
) -> Option<Duration> {
    let since = last_end_ms.unwrap_or(0).max(started_ms);
    let quiet = Duration::from_millis(u64::try_from(now_ms.saturating_sub(since)).unwrap_or(0));
    (quiet > after).then_some(quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_late_once_none_was_published_for_longer_than_the_rule_allows() {
        let after = Duration::from_secs(15);
        let start = 1_000_000;
        assert_eq!(windows_late(start + 10_000, None, start, after), None);
        assert_eq!(
            windows_late(start + 16_000, None, start, after),
            Some(Duration::from_secs(16)),
            "no window at all since the start"
        );
        assert_eq!(
            windows_late(start + 30_000, Some(start + 20_000), start, after),
            None
        );
        assert!(windows_late(start + 40_000, Some(start + 20_000), start, after).is_some());
        // Old windows published after a restart: measured from the start.
        assert_eq!(
            windows_late(start + 5_000, Some(start - 600_000), start, after),
            None
        );
    }
}
