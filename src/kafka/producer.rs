//! The reactions producer used by the ingest API.
//!
//! librdkafka batches messages for `linger.ms` (500 ms by default here) before sending. A full
//! local queue is reported at once, so the API can answer 503 instead of blocking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataflows::Reaction;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use tokio::sync::oneshot;

use super::marks::MARK_HEADER;
use super::{client_config, BrokerError, KafkaSettings};
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

impl From<KafkaError> for ProduceError {
    /// A message librdkafka would not queue: its queue is full, or something else went wrong.
    fn from(e: KafkaError) -> Self {
        match e {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => ProduceError::QueueFull,
            e => ProduceError::Failed(e.to_string()),
        }
    }
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

/// The opaque of a watermark mark: not a reaction, nobody waits for it.
const MARK: usize = usize::MAX;
/// Marks the queue holds beyond `--producer-queue` reactions. Marks that cannot be delivered
/// are worth nothing (the next ones vouch for more), so beyond this none are queued.
const MARK_ROOM: u64 = 2_000;

/// Counts deliveries, and tells `--ack broker` requests when all of theirs are done.
///
/// A message's opaque is 0, or the id of the request waiting for it in `waiting`: most
/// messages (`--ack queued`) then cost no allocation and no task to learn their fate.
struct Deliveries {
    stats: Arc<Stats>,
    waiting: Mutex<HashMap<usize, Waiter>>,
    /// Marks queued and not yet delivered (or failed).
    marks_in_flight: AtomicU64,
}

struct Waiter {
    remaining: usize,
    /// Delivered so far: with idempotence on, a request's reactions are written in order, so
    /// these are its first ones.
    delivered: usize,
    failure: Option<String>,
    done: Option<oneshot::Sender<Result<(), (usize, String)>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, request: usize) {
        if request == MARK {
            self.marks_in_flight.fetch_sub(1, Ordering::AcqRel);
            if let Err((e, _)) = result {
                tracing::debug!("a watermark mark was not delivered to Kafka: {e}");
            }
            return;
        }
        let failure = match result {
            Ok(_) => {
                self.stats.produced.inc();
                None
            }
            Err((e, _)) => {
                self.stats.produce_failed.inc();
                if request == 0 {
                    tracing::debug!("a reaction was not delivered to Kafka: {e}");
                }
                Some(e.to_string())
            }
        };
        if request == 0 {
            return;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let Some(waiter) = waiting.get_mut(&request) else {
            return;
        };
        waiter.remaining = waiter.remaining.saturating_sub(1);
        match failure {
            None => waiter.delivered += 1,
            Some(e) => {
                waiter.failure.get_or_insert(e);
            }
        }
        if waiter.remaining == 0 {
            if let Some(waiter) = waiting.remove(&request) {
                if let Some(done) = waiter.done {
                    let delivered = waiter.delivered;
                    let _ = done.send(waiter.failure.map_or(Ok(()), |e| Err((delivered, e))));
                }
            }
        }
    }
}

/// The reactions producer. Cheap to clone.
#[derive(Clone)]
pub struct ReactionProducer {
    producer: Arc<ThreadedProducer<Deliveries>>,
    reserved: Arc<AtomicU64>,
    next_request: Arc<AtomicUsize>,
    topic: Arc<str>,
    ack: Ack,
    queue_messages: u64,
}

impl ReactionProducer {
    /// A producer for the reactions topic.
    pub fn new(
        kafka: &KafkaSettings,
        settings: &ProducerSettings,
        stats: Arc<Stats>,
    ) -> Result<Self, BrokerError> {
        let producer: ThreadedProducer<Deliveries> = client_config(kafka)
            .set("linger.ms", settings.linger_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                (settings.queue_messages + MARK_ROOM).to_string(),
            )
            .set("enable.idempotence", "true")
            .create_with_context(Deliveries {
                stats,
                waiting: Mutex::default(),
                marks_in_flight: AtomicU64::new(0),
            })
            .map_err(|e| format!("cannot create a Kafka producer for {}: {e}", kafka.brokers))?;
        Ok(ReactionProducer {
            producer: Arc::new(producer),
            reserved: Arc::default(),
            next_request: Arc::new(AtomicUsize::new(1)),
            topic: Arc::from(kafka.reactions_topic.as_str()),
            ack: settings.ack,
            queue_messages: settings.queue_messages,
        })
    }

    /// Room for `n` reactions in the local queue, held until the reservation is dropped (by
    /// then they are queued). Concurrent requests reserve atomically, so a batch is queued
    /// whole or refused whole, never cut by another request filling the queue.
    pub fn reserve(&self, n: usize) -> Option<Reservation> {
        let n = n as u64;
        let mut reserved = self.reserved.load(Ordering::Acquire);
        loop {
            let in_flight = u64::try_from(self.producer.in_flight_count())
                .unwrap_or(0)
                .saturating_sub(self.marks_in_flight().load(Ordering::Acquire));
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
        let (request, done) = match self.ack {
            Ack::Queued => (0, None),
            Ack::Broker => {
                // Ids wrap after usize::MAX requests; 0 means "nobody waits".
                let id = self.next_request.fetch_add(1, Ordering::Relaxed).max(1);
                let (tx, rx) = oneshot::channel();
                self.waiting().insert(
                    id,
                    Waiter {
                        remaining: reactions.len(),
                        delivered: 0,
                        failure: None,
                        done: Some(tx),
                    },
                );
                (id, Some(rx))
            }
        };
        for (i, reaction) in reactions.iter().enumerate() {
            let payload = serde_json::to_string(reaction).unwrap_or_default();
            let record = BaseRecord::with_opaque_to(&self.topic, request)
                .key(&reaction.user_id)
                .payload(&payload);
            if let Err((e, _)) = self.producer.send(record) {
                if request != 0 {
                    self.forget(request, reactions.len() - i);
                }
                return Err((i, e.into()));
            }
        }
        let Some(done) = done else {
            return Ok(());
        };
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((delivered, e))) => Err((delivered, ProduceError::Failed(e))),
            Err(_) => Err((0, ProduceError::Failed("the producer shut down".into()))),
        }
    }

    fn marks_in_flight(&self) -> &AtomicU64 {
        &self.producer.context().marks_in_flight
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Waiter>> {
        self.producer
            .context()
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `unsent` reactions of `request` will never be delivered: stop waiting for them (and
    /// end the wait if the rest are already delivered).
    fn forget(&self, request: usize, unsent: usize) {
        let mut waiting = self.waiting();
        if let Some(waiter) = waiting.get_mut(&request) {
            waiter.remaining = waiter.remaining.saturating_sub(unsent);
            waiter.done = None;
            if waiter.remaining == 0 {
                waiting.remove(&request);
            }
        }
    }

    /// Queues a watermark mark of process `process` into each of the topic's `partitions`
    /// (see [`super::marks`]), stamped with the clock read before the first is queued. A mark
    /// that does not fit in the queue is not written: the next one will be, and windows wait
    /// meanwhile.
    pub fn mark(&self, process: usize, partitions: i32) -> Result<(), ProduceError> {
        let in_flight = self.marks_in_flight();
        let wanted = u64::try_from(partitions).unwrap_or(0);
        if in_flight.load(Ordering::Acquire) + wanted > MARK_ROOM {
            return Err(ProduceError::QueueFull);
        }
        let at_ms = dataflows::wall_clock_ms().to_string();
        let process = process.to_string();
        for partition in 0..partitions {
            let headers = OwnedHeaders::new().insert(Header {
                key: MARK_HEADER,
                value: Some(&process),
            });
            let record = BaseRecord::<(), String, usize>::with_opaque_to(&self.topic, MARK)
                .partition(partition)
                .headers(headers)
                .payload(&at_ms);
            in_flight.fetch_add(1, Ordering::AcqRel);
            if let Err((e, _)) = self.producer.send(record) {
                in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Sends everything queued, waiting up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), BrokerError> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|e| BrokerError(e.to_string()))
    }

    /// Whether the brokers answer a metadata request within `timeout`.
    pub fn broker_reachable(&self, timeout: Duration) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), Timeout::After(timeout))
            .is_ok()
    }
}
