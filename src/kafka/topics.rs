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
        // The latest record per `{stream_id}/{window}` key is the window's final state.
        NewTopic::new(
            &kafka.windows_topic,
            1,
            TopicReplication::Fixed(replication),
        )
        .set("cleanup.policy", "compact"),
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

/// What a check of the topics found: a problem, if any; `Err` when the brokers did not
/// answer.
pub type TopicsFinding = Result<Option<String>, String>;

/// Watches the topics of a running system from a client of its own, so its metadata requests
/// never touch the producer's or the consumers' view of the cluster.
pub struct TopicsCheck {
    client: AdminClient<DefaultClientContext>,
    kafka: KafkaSettings,
}

impl TopicsCheck {
    /// A check of `kafka`'s topics (the reactions topic with `kafka.partitions`).
    pub fn new(kafka: &KafkaSettings) -> Result<TopicsCheck, BrokerError> {
        let client = client_config(kafka).create().map_err(|e| {
            format!(
                "cannot create a Kafka admin client for {}: {e}",
                kafka.brokers
            )
        })?;
        Ok(TopicsCheck {
            client,
            kafka: kafka.clone(),
        })
    }

    /// What is wrong with the topics (the reactions topic with the partitions read since the
    /// start, the windows topic present), if anything; `Err` when the brokers do not answer
    /// within `timeout`, or answer with an error that may pass (no leader yet). Blocks.
    pub fn problem(&self, timeout: Duration) -> TopicsFinding {
        let kafka = &self.kafka;
        // The windows topic is written in order whatever its partitions: only its absence
        // matters.
        for (topic, partitions) in [
            (&kafka.reactions_topic, Some(kafka.partitions)),
            (&kafka.windows_topic, None),
        ] {
            let metadata = self
                .client
                .inner()
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| format!("the Kafka brokers do not answer: {e}"))?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            let gone = || Some(format!("topic {topic} is gone from the brokers"));
            let problem = match found.map(|t| (t, t.error())) {
                None => gone(),
                Some((_, Some(e))) => match RDKafkaErrorCode::from(e) {
                    RDKafkaErrorCode::UnknownTopicOrPartition => gone(),
                    e => return Err(format!("the brokers answer for topic {topic}: {e}")),
                },
                Some((t, None)) => {
                    let now = t.partitions().len();
                    partitions
                        .filter(|p| i32::try_from(now).ok() != Some(*p))
                        .map(|p| format!("topic {topic} has {now} partitions, not the {p} emostream reads since its start"))
                }
            };
            if problem.is_some() {
                return Ok(problem);
            }
        }
        Ok(None)
    }
}
