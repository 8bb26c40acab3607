//! Where a restarted dataflow resumes: the window after the last one in the windows topic.

use std::time::{Duration, Instant};

use dataflows::WindowId;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{client_config, BrokerError, KafkaSettings};

/// The last window written to the windows topic, if any.
pub fn last_emitted_window(
    kafka: &KafkaSettings,
    timeout: Duration,
) -> Result<Option<WindowId>, BrokerError> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", format!("{}-resume", kafka.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create a Kafka consumer for {}: {e}", kafka.brokers))?;
    let (low, high) = consumer
        .fetch_watermarks(&kafka.windows_topic, 0, timeout)
        .map_err(|e| format!("cannot read the end of {}: {e}", kafka.windows_topic))?;
    if high <= low {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&kafka.windows_topic, 0, Offset::Offset(high - 1))
        .map_err(|e| BrokerError(e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| BrokerError(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let key = message
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .unwrap_or_default();
                return key.parse::<WindowId>().map(Some).map_err(|_| {
                    BrokerError(format!(
                        "the last message of {} has key {key:?}, not a window index",
                        kafka.windows_topic
                    ))
                });
            }
            Some(Err(e)) => {
                return Err(BrokerError(format!(
                    "cannot read {}: {e}",
                    kafka.windows_topic
                )))
            }
            None => {}
        }
    }
    Err(BrokerError(format!(
        "timed out reading the last message of {}",
        kafka.windows_topic
    )))
}
