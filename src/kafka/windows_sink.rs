//! Writes window summaries to the windows topic and passes each on once the broker has it.
//!
//! The operator keeps each window's capability until its delivery is acknowledged, so the
//! frontier after it (which the sources probe to commit offsets) never passes a window that
//! is not durable. Summaries leave in window order. A failed delivery is retried.

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflows::{StreamId, WindowId, WindowSummary};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

use super::{client_config, KafkaSettings};
use crate::stats::Stats;
use crate::system::{Component, Faults};

/// A record of the windows topic: the epoch it was emitted at (later than the window itself for
/// a correction), whether it is the epoch's own window (corrections come first, as summarizing
/// emits them), its stream and its window.
type Key = (WindowId, bool, StreamId, WindowId);

struct Delivered {
    tx: mpsc::Sender<(Key, Result<(), String>)>,
    wake: SyncActivator,
}

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = Box<Key>;
    fn delivery(&self, result: &DeliveryResult<'_>, key: Box<Key>) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        let _ = self.tx.send((*key, outcome));
        let _ = self.wake.activate();
    }
}

/// A window the windows topic has, with the JSON it was written as (delivery sends the same
/// bytes rather than encoding it again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableWindow {
    /// The summary.
    pub summary: WindowSummary,
    /// Its JSON, as written to the topic.
    pub json: String,
    /// The epoch it was emitted at: its own window, or a later one for a correction.
    pub epoch: WindowId,
}

impl DurableWindow {
    /// Whether this corrects a window emitted before.
    pub fn is_correction(&self) -> bool {
        self.summary.window < self.epoch
    }
}

enum State {
    /// Not yet accepted by the producer (its queue was full, or a delivery failed).
    Unsent,
    InFlight,
    Durable,
}

/// Writes summaries (which arrive on worker 0) to the windows topic and emits them with their
/// JSON, in window order, once durable.
/// A producer that cannot be created is a fault: no window could ever be written.
pub fn write_windows<'scope>(
    summaries: StreamVec<'scope, WindowId, WindowSummary>,
    kafka: KafkaSettings,
    stats: Arc<Stats>,
    faults: Faults,
) -> StreamVec<'scope, WindowId, DurableWindow> {
    let scope = summaries.scope();
    summaries.unary_frontier(Pipeline, "WriteWindows", move |_cap, info| {
        let activator = scope.activator_for(info.address.clone());
        let (tx, rx) = mpsc::channel();
        let context = Delivered {
            tx,
            wake: scope.worker().sync_activator_for(info.address.to_vec()),
        };
        let producer: Option<ThreadedProducer<Delivered>> = match client_config(&kafka)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create_with_context(context)
        {
            Ok(p) => Some(p),
            Err(e) => {
                faults.report(
                    Component::WindowsProducer,
                    format!("cannot create it for {}: {e}", kafka.brokers),
                );
                None
            }
        };
        let mut pending: BTreeMap<Key, (Capability<WindowId>, WindowSummary, String, State)> =
            BTreeMap::new();
        let mut refusals = Throttled::default();
        let mut failures = Throttled::default();
        let mut fatal = false;
        move |(input, _frontier), output| {
            input.for_each_stamp(|cap, batches| {
                for batch in batches {
                    for summary in batch.drain(..) {
                        if let Some(cap) = cap.retain_least(output.output_index()) {
                            let json = summary.to_json();
                            pending.insert(
                                (
                                    *cap.time(),
                                    summary.window == *cap.time(),
                                    summary.stream_id.clone(),
                                    summary.window,
                                ),
                                (cap, summary, json, State::Unsent),
                            );
                        }
                    }
                }
            });
            while let Ok((key, outcome)) = rx.try_recv() {
                if let Some(entry) = pending.get_mut(&key) {
                    match outcome {
                        Ok(()) => {
                            entry.3 = State::Durable;
                            failures.recovered("windows are written to the topic again");
                        }
                        Err(e) => {
                            failures.warn(&format!(
                                "writing window {} of stream {} failed: {e}",
                                key.3, key.2
                            ));
                            entry.3 = State::Unsent;
                        }
                    }
                }
            }
            let Some(producer) = producer.as_ref() else {
                return;
            };
            let mut retry_later = false;
            let mut refused = None;
            // A window's revisions must reach the topic in order (compaction keeps the last
            // record of a key): one not yet durable holds back the later ones of its window.
            let mut waiting: HashSet<(WindowId, StreamId)> = HashSet::new();
            for (key, (_, summary, json, state)) in pending.iter_mut() {
                let window = (key.3, key.2.clone());
                if waiting.contains(&window) {
                    continue;
                }
                if !matches!(state, State::Durable) {
                    waiting.insert(window);
                }
                if matches!(state, State::Unsent) {
                    let topic_key = summary.topic_key();
                    // Partition 0 whatever the topic has: the windows stay in one order, the
                    // one a restart reads back from the tail.
                    let record =
                        BaseRecord::with_opaque_to(&kafka.windows_topic, Box::new(key.clone()))
                            .partition(0)
                            .key(&topic_key)
                            .payload(json.as_str());
                    match producer.send(record) {
                        Ok(()) => {
                            *state = State::InFlight;
                            refusals.recovered("the producer takes windows again");
                        }
                        Err((e, _)) => {
                            retry_later = true;
                            if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                                refused = Some(e.to_string());
                            }
                        }
                    }
                }
            }
            while let Some(entry) = pending.first_entry() {
                if !matches!(entry.get().3, State::Durable) {
                    break;
                }
                let ((epoch, ..), (cap, summary, json, _)) = entry.remove_entry();
                if summary.window < epoch {
                    stats.corrections_emitted.inc();
                } else {
                    stats.windows_emitted.inc();
                }
                output.session(&cap).give(DurableWindow {
                    summary,
                    json,
                    epoch,
                });
            }
            if let Some(e) = refused {
                match producer.client().fatal_error() {
                    // No later write can succeed: a restart needs a new producer. Reported
                    // once, and no more retries: the system stops on the fault.
                    Some((code, reason)) => {
                        if !fatal {
                            fatal = true;
                            faults.report(
                                Component::WindowsProducer,
                                format!("fatal producer error {code:?}: {reason}"),
                            );
                        }
                        return;
                    }
                    None => refusals.warn(&e),
                }
            }
            if retry_later {
                activator.activate_after(Duration::from_millis(100));
            }
            if pending.is_empty() {
                let _ = producer.flush(Duration::ZERO);
            }
        }
    })
}

/// A warning for a failure that repeats (every window while the broker is away): the first at
/// once, then at most one every 10 s with the count since.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    since: u64,
}

impl Throttled {
    fn warn(&mut self, what: &str) {
        self.since += 1;
        if self
            .last
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        match self.since {
            1 => tracing::warn!("{what}; retrying"),
            n => tracing::warn!("{what}; retrying ({n} failures since the last warning)"),
        }
        self.last = Some(Instant::now());
        self.since = 0;
    }

    /// After a warning: says so once the failures have stopped.
    fn recovered(&mut self, what: &str) {
        if self.last.take().is_some() {
            match std::mem::take(&mut self.since) {
                0 => tracing::info!("{what}"),
                n => tracing::info!("{what} ({n} failures since the last warning)"),
            }
        }
    }
}
