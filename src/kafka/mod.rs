//! Kafka: the reactions topic in, the windows topic out, and an embedded broker for one-command
//! runs.

pub mod embedded;
pub mod lag;
pub mod marks;
pub mod offsets;
pub mod producer;
pub mod resume;
pub mod source;
pub mod topics;
pub mod windows_sink;

/// Where the topics live.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port,...`.
    pub brokers: String,
    /// Topic of reactions (key `user_id`, value the reaction JSON).
    pub reactions_topic: String,
    /// Topic of window summaries (key `{stream_id}/{window}`, value the summary JSON; compacted).
    pub windows_topic: String,
    /// Partitions of the reactions topic, when emostream creates it.
    pub partitions: i32,
    /// Consumer group whose committed offsets record what the dataflow has emitted.
    pub group_id: String,
}

/// A config with the bootstrap servers set.
pub fn client_config(settings: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    // emostream creates its topics with the partitions it reads; one a broker made up (after
    // it lost its data, say) would hide that the log is gone.
    config.set("allow.auto.create.topics", "false");
    config
}

/// The brokers could not be reached or used; the message says which and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrokerError(pub String);

impl From<String> for BrokerError {
    fn from(message: String) -> Self {
        BrokerError(message)
    }
}
