//! Creating the topics on external brokers when they are missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::{client_config, BrokerError, KafkaSettings};

/// Creates the reactions topic (`partitions` partitions) and the windows topic (one
/// partition, so windows stay in order), leaving existing ones as they are.
pub async fn ensure_topics(kafka: &KafkaSettings, replication: i32) -> Result<(), BrokerError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create().map_err(|e| {
        format!(
            "cannot create a Kafka admin client for {}: {e}",
            kafka.brokers
        )
    })?;
    // Existing topics need no admin rights (and some brokers have no CreateTopics API).
    let wanted = [kafka.reactions_topic.as_str(), kafka.windows_topic.as_str()];
    let existing =
        tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, Duration::from_secs(10)))
            .map_err(|e| format!("cannot reach the Kafka brokers at {}: {e}", kafka.brokers))?;
    let present = |name: &str| {
        existing
            .topics()
            .iter()
            .any(|t| t.name() == name && t.error().is_none())
    };
    if wanted.iter().all(|t| present(t)) {
        return Ok(());
    }
    let topics = [
        NewTopic::new(
            &kafka.reactions_topic,
            kafka.partitions,
            TopicReplication::Fixed(replication),
        ),
        NewTopic::new(
            &kafka.windows_topic,
            1,
            TopicReplication::Fixed(replication),
        ),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| format!("cannot create topics on {}: {e}", kafka.brokers))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => {
                return Err(BrokerError(format!("cannot create topic {topic}: {e}")))
            }
        }
    }
    Ok(())
}

/// The reactions topic's partition count as the brokers report it: an existing topic may
/// have more (or fewer) partitions than `--partitions`, and every one of them must be read.
/// Blocks; waits up to `timeout` for a just-created topic to appear in metadata.
pub fn reactions_partitions(kafka: &KafkaSettings, timeout: Duration) -> Result<i32, BrokerError> {
    let client: AdminClient<DefaultClientContext> = client_config(kafka).create().map_err(|e| {
        format!(
            "cannot create a Kafka admin client for {}: {e}",
            kafka.brokers
        )
    })?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let metadata = client
            .inner()
            .fetch_metadata(Some(&kafka.reactions_topic), Duration::from_secs(5))
            .map_err(|e| format!("cannot reach the Kafka brokers at {}: {e}", kafka.brokers))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == kafka.reactions_topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if partitions > 0 {
            return i32::try_from(partitions).map_err(|e| BrokerError(e.to_string()));
        }
        if std::time::Instant::now() > deadline {
            return Err(BrokerError(format!(
                "topic {} has no partitions on {} after {timeout:?}",
                kafka.reactions_topic, kafka.brokers
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
