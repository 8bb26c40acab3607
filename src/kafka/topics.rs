//! Creating the topics on a real cluster when they are missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::{client_config, KafkaSettings};

/// Creates the reactions topic (`partitions` partitions) and the windows topic (one
/// partition, so windows stay in order), leaving existing ones as they are.
pub async fn ensure_topics(kafka: &KafkaSettings, replication: i32) -> Result<(), String> {
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
            Err((topic, e)) => return Err(format!("cannot create topic {topic}: {e}")),
        }
    }
    Ok(())
}
