//! Steps 2, 3 and 6 of the start: the brokers and their topics, where to resume, and the
//! reactions producer.

use std::sync::Arc;
use std::time::Duration;

use super::config::RunConfig;
use crate::error::RunError;
use crate::kafka::embedded::EmbeddedBroker;
use crate::kafka::producer::ReactionProducer;
use crate::kafka::resume::read_tail;
use crate::kafka::topics::{ensure_topics, reactions_partitions};
use crate::kafka::{BrokerError, KafkaSettings};
use crate::stats::Stats;
use dataflows::operators::Activity;

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
            let from = tail.last_window + 1;
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
