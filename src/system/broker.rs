//! Steps 2, 3 and 6 of the start: the brokers and their topics, where to resume, and the
//! reactions producer.

use std::sync::Arc;
use std::time::Duration;

use super::config::RunConfig;
use crate::cli::ConfigError;
use crate::error::RunError;
use crate::kafka::embedded::EmbeddedBroker;
use crate::kafka::producer::ReactionProducer;
use crate::kafka::resume::{read_tail, Tail};
use crate::kafka::topics::{ensure_topics, reactions_partitions};
use crate::kafka::{BrokerError, KafkaSettings};
use crate::stats::Stats;
use dataflows::operators::Activity;
use dataflows::WindowId;

/// How long start-up waits for each broker answer.
const PROBE: Duration = Duration::from_secs(10);

/// Step 2: the external brokers with their topics, or the embedded broker; then the reactions
/// topic's real partition count, which may differ from `--partitions` on an existing topic.
pub async fn connect(
    config: &RunConfig,
) -> Result<(KafkaSettings, Option<EmbeddedBroker>), RunError> {
    let mut kafka = config.kafka.clone();
    let broker = match &config.external_brokers {
        Some(brokers) => {
            kafka.brokers = brokers.clone();
            ensure_topics(&kafka, config.replication).await?;
            None
        }
        None => {
            let topics = [
                (kafka.reactions_topic.clone(), kafka.partitions),
                (kafka.windows_topic.clone(), 1),
            ];
            let broker = blocking(move || EmbeddedBroker::start(&topics)).await??;
            kafka.brokers = broker.bootstrap_servers().to_owned();
            Some(broker)
        }
    };
    let probe = kafka.clone();
    let partitions = blocking(move || reactions_partitions(&probe, PROBE)).await??;
    if partitions != kafka.partitions {
        tracing::info!(
            partitions,
            "topic {} exists with {partitions} partitions (not --partitions {}): reading all of them",
            kafka.reactions_topic,
            kafka.partitions
        );
        kafka.partitions = partitions;
    }
    Ok((kafka, broker))
}

/// Step 3: where emitting starts: the window after the last in the windows topic, with the
/// streams still active there, or the window open now on a fresh start.
pub async fn resume_point(kafka: &KafkaSettings, config: &RunConfig) -> Result<Activity, RunError> {
    let probe = kafka.clone();
    let idle_windows = config.settings.idle_windows;
    let correction_windows = config.settings.correction_windows();
    let tail = blocking(move || read_tail(&probe, idle_windows, correction_windows, RESUME_READ))
        .await??;
    Ok(match tail {
        Some(tail) => {
            let from = resumable(&tail, &config.settings.windowing, &kafka.windows_topic)?;
            let recent = tail.recent;
            let mut last_reacted = tail.last_reacted;
            last_reacted.retain(|_, last| last.saturating_add(idle_windows) >= from);
            let last_reacted = Activity {
                from: Some(from),
                last_reacted,
                ..Activity::default()
            }
            .ticking()
            .last_reacted;
            tracing::info!(
                last = tail.last_window,
                active_streams = last_reacted.len(),
                correctable_windows = recent.len(),
                "resuming after the last window in {}",
                kafka.windows_topic
            );
            Activity {
                from: Some(from),
                last_reacted,
                recent,
            }
        }
        None => Activity::from(
            config
                .settings
                .windowing
                .open_from(dataflows::wall_clock_ms()),
        )
        .ticking(),
    })
}

/// The window after the tail's last, if this run can go on from there: the windows must have
/// this run's length (window indices of another length name other times), and the last may
/// not lie far in the future (it would hold every window back, counting every reaction late).
fn resumable(
    tail: &Tail,
    windowing: &dataflows::Windowing,
    topic: &str,
) -> Result<WindowId, RunError> {
    let window_ms = windowing.window_ms.get();
    if let Some(written) = tail.window_ms.filter(|w| *w != window_ms) {
        return Err(RunError::Config(ConfigError(format!(
            "{topic} holds windows of {written} ms and this run has --window-ms {window_ms}: start with --window-ms {written}, or give the new length its own --windows-topic"
        ))));
    }
    let from = tail.last_window.checked_add(1).ok_or_else(|| {
        RunError::Config(ConfigError(format!(
            "{topic}'s last window is {}, the largest index there is: its records were not written by emostream; give this run another --windows-topic",
            tail.last_window
        )))
    })?;
    // How far the last window's start is past the clock; the window the clock is in is
    // normal (a previous run closes windows only once they are past).
    let now_ms = u64::try_from(dataflows::wall_clock_ms()).unwrap_or_default();
    let ahead_ms = tail
        .last_window
        .saturating_mul(window_ms)
        .saturating_sub(now_ms);
    if ahead_ms > FUTURE_WINDOWS_MS {
        return Err(RunError::Config(ConfigError(format!(
            "{topic}'s last window ({}) starts {} s ahead of this machine's clock: fix the clock, or give this run another --windows-topic",
            tail.last_window,
            ahead_ms / 1000
        ))));
    }
    if ahead_ms > 0 {
        tracing::warn!(
            "{topic}'s last window starts {ahead_ms} ms ahead of this machine's clock: windows wait until the clock passes it"
        );
    }
    Ok(from)
}

/// How far ahead of the clock a windows topic's tail may be: clocks of two machines disagree
/// by seconds, not by this.
const FUTURE_WINDOWS_MS: u64 = 10 * 60 * 1000;

/// How long reading the windows topic's tail may take: with thousands of active streams it is
/// a few hundred thousand records.
const RESUME_READ: Duration = Duration::from_secs(60);

/// Step 6: the reactions producer, warmed up: the first send otherwise pays for the topic's
/// metadata (up to a second on some brokers), and reactions that slow can miss their window.
pub async fn start_producer(
    config: &RunConfig,
    kafka: &KafkaSettings,
    stats: &Arc<Stats>,
) -> Result<ReactionProducer, RunError> {
    let producer = ReactionProducer::new(kafka, &config.producer, Arc::clone(stats))?;
    let warm = producer.clone();
    if !blocking(move || warm.broker_reachable(super::WARM_UP)).await? {
        tracing::warn!(
            "the brokers did not answer the producer within {:?}; serving anyway (/readyz says when they do)",
            super::WARM_UP
        );
    }
    Ok(producer)
}

/// Runs a blocking broker call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RunError::Broker(BrokerError(format!("a broker call failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(last_window: WindowId, window_ms: Option<u64>) -> Tail {
        Tail {
            last_window,
            window_ms,
            ..Tail::default()
        }
    }

    fn refusal(result: Result<WindowId, RunError>) -> String {
        match result {
            Err(e @ RunError::Config(_)) => e.to_string(),
            other => panic!("not refused as a flag to fix: {other:?}"),
        }
    }

    #[test]
    fn a_run_resumes_after_the_last_window_of_its_own_length_and_time() {
        let windowing = dataflows::Windowing::default();
        let now = windowing.open_from(dataflows::wall_clock_ms());
        let resumed = resumable(&tail(now - 3, Some(2000)), &windowing, "emoji-windows");
        assert_eq!(resumed.unwrap(), now - 2);
        // A tail whose last record is not a summary says nothing about its length.
        assert_eq!(
            resumable(&tail(now - 3, None), &windowing, "emoji-windows").unwrap(),
            now - 2
        );

        let other_length = refusal(resumable(&tail(now * 4, Some(500)), &windowing, "w"));
        assert!(
            other_length.contains("windows of 500 ms")
                && other_length.contains("--window-ms 2000")
                && other_length.contains("start with --window-ms 500"),
            "{other_length}"
        );
        let largest = refusal(resumable(&tail(u64::MAX, Some(2000)), &windowing, "w"));
        assert!(largest.contains("largest index"), "{largest}");
        let ahead = refusal(resumable(&tail(now + 3600, Some(2000)), &windowing, "w"));
        assert!(ahead.contains("ahead of this machine's clock"), "{ahead}");
        let far = refusal(resumable(&tail(u64::MAX - 1, Some(2000)), &windowing, "w"));
        assert!(far.contains("ahead of this machine's clock"), "{far}");
        // Windows of an hour: the one the clock is in, or the next, is no reason to refuse.
        let hours = dataflows::Windowing {
            window_ms: std::num::NonZeroU64::new(3_600_000).unwrap(),
            lateness_ms: 500,
        };
        let this_hour = hours.window_of(dataflows::wall_clock_ms());
        assert_eq!(
            resumable(&tail(this_hour, Some(3_600_000)), &hours, "w").unwrap(),
            this_hour + 1
        );
        // A few seconds ahead (another machine's clock): resumed, with a warning.
        assert_eq!(
            resumable(&tail(now + 2, Some(2000)), &windowing, "w").unwrap(),
            now + 3
        );
    }
}
