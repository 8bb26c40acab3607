//! The reactions producer used by the ingest API.
//!
//! librdkafka batches messages for `linger.ms` (500 ms by default here) before sending. A full
//! local queue is reported at once, so the API can answer 503 instead of blocking.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataflows::Reaction;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::{client_config, KafkaSettings};
use crate::stats::Stats;

/// When a 202 is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ack {
    /// Once the reaction is in the producer's queue (fast; lost if the process dies within
    /// `linger.ms` plus the time to reach the broker).
    Queued,
    /// Once the broker has acknowledged the reaction.
    Broker,
}

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    /// Batching delay, milliseconds.
    pub linger_ms: u64,
    /// Messages the local queue holds before sends fail with "queue full".
    pub queue_messages: u64,
    /// When a 202 is sent.
    pub ack: Ack,
}

/// Why a reaction could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The local queue is full: back off and retry.
    #[error("the producer queue is full")]
    QueueFull,
    /// The broker did not take the reaction.
    #[error("the broker did not accept the reaction: {0}")]
    Failed(String),
}

/// Queue room held for one request; see [`ReactionProducer::reserve`].
pub struct Reservation {
    reserved: Arc<AtomicU64>,
    n: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// The reactions producer. Cheap to clone.
#[derive(Clone)]
pub struct ReactionProducer {
    producer: FutureProducer,
    reserved: Arc<AtomicU64>,
    topic: Arc<str>,
    ack: Ack,
    queue_messages: u64,
    stats: Arc<Stats>,
}

impl ReactionProducer {
    /// A producer for the reactions topic.
    pub fn new(
        kafka: &KafkaSettings,
        settings: &ProducerSettings,
        stats: Arc<Stats>,
    ) -> Result<Self, String> {
        let producer: FutureProducer = client_config(kafka)
            .set("linger.ms", settings.linger_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                settings.queue_messages.to_string(),
            )
            .set("enable.idempotence", "true")
            .create()
            .map_err(|e| format!("cannot create a Kafka producer for {}: {e}", kafka.brokers))?;
        Ok(ReactionProducer {
            producer,
            reserved: Arc::default(),
            topic: Arc::from(kafka.reactions_topic.as_str()),
            ack: settings.ack,
            queue_messages: settings.queue_messages,
            stats,
        })
    }

    /// Room for `n` reactions in the local queue, held until the reservation is dropped (by
    /// then they are queued). Concurrent requests reserve atomically, so a batch is queued
    /// whole or refused whole, never cut by another request filling the queue.
    pub fn reserve(&self, n: usize) -> Option<Reservation> {
        let n = n as u64;
        let mut reserved = self.reserved.load(Ordering::Acquire);
        loop {
            let in_flight = u64::try_from(self.producer.in_flight_count()).unwrap_or(0);
            if in_flight + reserved + n > self.queue_messages {
                return None;
            }
            match self.reserved.compare_exchange_weak(
                reserved,
                reserved + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Reservation {
                        reserved: Arc::clone(&self.reserved),
                        n,
                    })
                }
                Err(now) => reserved = now,
            }
        }
    }

    /// Queues reactions, in order; with [`Ack::Broker`], waits for the broker. Returns how many
    /// were queued before an error, with the error.
    pub async fn send(&self, reactions: &[Reaction]) -> Result<(), (usize, ProduceError)> {
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(reactions.len());
        for (i, reaction) in reactions.iter().enumerate() {
            let payload = serde_json::to_string(reaction).unwrap_or_default();
            let record = FutureRecord::to(&self.topic)
                .key(&reaction.user_id)
                .payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.watch(deliveries);
                    return Err((i, ProduceError::QueueFull));
                }
                Err((e, _)) => {
                    self.watch(deliveries);
                    return Err((i, ProduceError::Failed(e.to_string())));
                }
            }
        }
        match self.ack {
            Ack::Queued => {
                self.watch(deliveries);
                Ok(())
            }
            Ack::Broker => {
                for (i, delivery) in deliveries.into_iter().enumerate() {
                    match delivery.await {
                        Ok(Ok(_)) => self.stats.produced.inc(),
                        Ok(Err((e, _))) => {
                            self.stats.produce_failed.inc();
                            return Err((i, ProduceError::Failed(e.to_string())));
                        }
                        Err(_) => {
                            self.stats.produce_failed.inc();
                            return Err((i, ProduceError::Failed("the producer shut down".into())));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Counts the outcome of deliveries nobody waits for.
    fn watch(&self, deliveries: Vec<DeliveryFuture>) {
        if deliveries.is_empty() {
            return;
        }
        let stats = Arc::clone(&self.stats);
        tokio::spawn(async move {
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => stats.produced.inc(),
                    Ok(Err((e, _))) => {
                        stats.produce_failed.inc();
                        tracing::warn!("a reaction was not delivered to Kafka: {e}");
                    }
                    Err(_) => stats.produce_failed.inc(),
                }
            }
        });
    }

    /// Sends everything queued, waiting up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|e| e.to_string())
    }

    /// Whether the brokers answer a metadata request within `timeout`.
    pub fn broker_reachable(&self, timeout: Duration) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), Timeout::After(timeout))
            .is_ok()
    }
}
