//! The reactions producer used by the ingest API.
//!
//! librdkafka batches messages for `linger.ms` (500 ms by default here) before sending. A full
//! local queue is reported at once, so the API can answer 503 instead of blocking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataflows::Reaction;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message};
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
    /// How long the broker has to confirm: with [`Ack::Broker`] a request is answered within
    /// it; with either, nothing confirmed for this long is a stall (not ready).
    pub ack_timeout: Duration,
    /// Reactions one partition may hold written and not yet read by the sources (its share
    /// of the queued ones included): the embedded broker drops what its consumers have not
    /// read once a partition is full, so beyond this the API answers 503 instead.
    pub unread_limit: Option<u64>,
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
    /// The broker did not confirm within the ack timeout: the reactions may be written yet.
    #[error(
        "the broker did not confirm the reactions within {0:?}; they may or may not be counted"
    )]
    Unconfirmed(Duration),
    /// The broker has confirmed nothing for this long: nothing was queued.
    #[error("the broker has confirmed nothing for {0:?}; nothing was queued")]
    Stalled(Duration),
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
    /// When the broker last confirmed a message (or the producer started), in ms since
    /// `started`: a monotonic clock, so a wall clock step is no stall.
    last_confirmed_ms: AtomicU64,
    started: Instant,
}

impl Deliveries {
    fn confirmed(&self) {
        self.last_confirmed_ms
            .fetch_max(self.since_start_ms(), Ordering::AcqRel);
    }

    fn since_start_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

struct Waiter {
    remaining: usize,
    /// Delivered so far: with idempotence on, a request's reactions are written in order, so
    /// these are its first ones.
    delivered: usize,
    failure: Option<Failure>,
    done: Option<oneshot::Sender<Result<(), (usize, Failure)>>>,
}

/// Why librdkafka gave up on a message.
enum Failure {
    /// Not confirmed within `message.timeout.ms`: it may have been written.
    TimedOut,
    /// Anything else.
    Other(String),
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, request: usize) {
        if request == MARK {
            self.marks_in_flight.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(_) => self.confirmed(),
                Err((e, _)) => tracing::debug!("a watermark mark was not delivered to Kafka: {e}"),
            }
            return;
        }
        let failure = match result {
            Ok(message) => {
                self.confirmed();
                self.stats.produced.inc();
                if let Some(partition) = self.stats.partition(message.partition()) {
                    partition.produced.inc();
                }
                None
            }
            Err((e, _)) => {
                self.stats.produce_failed.inc();
                if request == 0 {
                    tracing::debug!("a reaction was not delivered to Kafka: {e}");
                }
                Some(match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                        Failure::TimedOut
                    }
                    e => Failure::Other(e.to_string()),
                })
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
    ack_timeout: Duration,
    queue_messages: u64,
    unread_limit: Option<u64>,
    partitions: u64,
    stats: Arc<Stats>,
}

/// Beyond the ack timeout, how long a request waits for librdkafka's own verdict.
const VERDICT_GRACE: Duration = Duration::from_secs(1);

impl ReactionProducer {
    /// A producer for the reactions topic.
    pub fn new(
        kafka: &KafkaSettings,
        settings: &ProducerSettings,
        stats: Arc<Stats>,
    ) -> Result<Self, BrokerError> {
        let mut config = client_config(kafka);
        if settings.ack == Ack::Broker {
            // A request is answered within the ack timeout, so librdkafka gives up on its
            // reactions by then; with --ack queued they are retried for its default 5 minutes.
            let timeout = settings.ack_timeout.as_millis().max(1);
            config.set("message.timeout.ms", timeout.to_string());
            config.set("request.timeout.ms", timeout.clamp(1, 30_000).to_string());
        }
        let producer: ThreadedProducer<Deliveries> = config
            .set("linger.ms", settings.linger_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                (settings.queue_messages + MARK_ROOM).to_string(),
            )
            .set("enable.idempotence", "true")
            .create_with_context(Deliveries {
                stats: Arc::clone(&stats),
                waiting: Mutex::default(),
                marks_in_flight: AtomicU64::new(0),
                last_confirmed_ms: AtomicU64::new(0),
                started: Instant::now(),
            })
            .map_err(|e| format!("cannot create a Kafka producer for {}: {e}", kafka.brokers))?;
        Ok(ReactionProducer {
            producer: Arc::new(producer),
            reserved: Arc::default(),
            next_request: Arc::new(AtomicUsize::new(1)),
            topic: Arc::from(kafka.reactions_topic.as_str()),
            ack: settings.ack,
            ack_timeout: settings.ack_timeout,
            queue_messages: settings.queue_messages,
            unread_limit: settings.unread_limit,
            partitions: u64::try_from(kafka.partitions).unwrap_or(1),
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
            let in_flight = u64::try_from(self.producer.in_flight_count())
                .unwrap_or(0)
                .saturating_sub(self.marks_in_flight().load(Ordering::Acquire));
            if in_flight + reserved + n > self.queue_messages {
                return None;
            }
            if let Some(limit) = self.unread_limit {
                // What the broker must keep for the sources, on the partition that holds the
                // most; what is queued is spread over the partitions by user id.
                let queued = (in_flight + reserved + n) / self.partitions.max(1);
                if self.stats.most_unread() + queued > limit {
                    return None;
                }
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
        if self.ack == Ack::Broker {
            // It could not be confirmed in time: say so before queueing anything, so the
            // answer is certain.
            if let Some(stalled) = self.stalled() {
                return Err((0, ProduceError::Stalled(stalled)));
            }
        }
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
        match tokio::time::timeout(self.ack_timeout + VERDICT_GRACE, done).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err((delivered, Failure::TimedOut)))) => {
                Err((delivered, ProduceError::Unconfirmed(self.ack_timeout)))
            }
            Ok(Ok(Err((delivered, Failure::Other(e))))) => {
                Err((delivered, ProduceError::Failed(e)))
            }
            Ok(Err(_)) => Err((0, ProduceError::Failed("the producer shut down".into()))),
            Err(_) => {
                let delivered = self.abandon(request);
                Err((delivered, ProduceError::Unconfirmed(self.ack_timeout)))
            }
        }
    }

    /// How long the broker has confirmed nothing while messages wait, if longer than the ack
    /// timeout.
    pub fn stalled(&self) -> Option<Duration> {
        if self.producer.in_flight_count() == 0 {
            return None;
        }
        let deliveries = self.producer.context();
        let last = deliveries.last_confirmed_ms.load(Ordering::Acquire);
        let silent = Duration::from_millis(deliveries.since_start_ms().saturating_sub(last));
        (silent > self.ack_timeout).then_some(silent)
    }

    /// Stops waiting for `request`; returns how many of its reactions were delivered.
    fn abandon(&self, request: usize) -> usize {
        self.waiting()
            .remove(&request)
            .map_or(0, |waiter| waiter.delivered)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::embedded::EmbeddedBroker;

    #[test]
    fn a_producer_with_an_unread_limit_refuses_room_beyond_what_the_sources_have_not_read() {
        let broker = EmbeddedBroker::start(&[("r".to_owned(), 1)]).unwrap();
        let kafka = KafkaSettings {
            brokers: broker.bootstrap_servers().to_owned(),
            reactions_topic: "r".into(),
            windows_topic: "w".into(),
            partitions: 1,
            group_id: "g".into(),
        };
        let settings = ProducerSettings {
            linger_ms: 5,
            queue_messages: 1_000,
            ack: Ack::Queued,
            ack_timeout: Duration::from_secs(10),
            unread_limit: Some(100),
        };
        let stats = Arc::new(Stats::new(1, 1));
        let producer = ReactionProducer::new(&kafka, &settings, Arc::clone(&stats)).unwrap();
        let partition = stats.partition(0).unwrap();
        partition.produced.add(95);
        assert!(producer.reserve(5).is_some());
        assert!(
            producer.reserve(6).is_none(),
            "101 unread would be over the limit"
        );
        partition.consumed.add(40);
        partition.lost.add(10);
        assert!(
            producer.reserve(6).is_some(),
            "the sources read 40 of them, and 10 will never be read"
        );
        let unlimited = ProducerSettings {
            unread_limit: None,
            ..settings
        };
        let producer = ReactionProducer::new(&kafka, &unlimited, stats).unwrap();
        assert!(producer.reserve(900).is_some());
    }
}
