//! The Kafka source: each worker reads its own partitions of the reactions topic and turns
//! them into partial counts per window.
//!
//! - Partition `p` belongs to worker `p mod peers` (static assignment, no group rebalances).
//! - Each partition has its own event-time clock; a reaction is late when its partition's
//!   watermark has passed its window. The worker holds its capability at the least watermark
//!   of its partitions, so a counted reaction can always be emitted at its window.
//! - A partition with no message for `idle_ms` is idle: its watermark follows the wall clock
//!   (less `idle_ms` and the lateness), so windows keep closing when nobody reacts.
//! - The consumer wakes the operator when messages arrive; a timer wakes it for idleness and
//!   commits. Offsets are committed only up to the reactions of windows that are durable in
//!   the windows topic (see [`super::offsets`]).
//! - On stop, the source stops reading and holds its capability where it is: windows the
//!   watermark has closed are finished and written; once they are durable the source commits
//!   and reports itself stopped. Open windows are not flushed early: their reactions stay
//!   uncommitted, so a restarted dataflow reads them again and emits those windows whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflows::operators::give_partial_counts;
use dataflows::{parse_reaction, Emoji, EventClock, MissingTimestamp, WindowId, Windowing};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use timely::dataflow::operators::generic::source;
use timely::dataflow::operators::Capability;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use super::lag::{LagContext, STATISTICS_INTERVAL_MS};
use super::offsets::PartitionProgress;
use super::{client_config, KafkaSettings};
use crate::stats::Stats;
use crate::system::{Component, Faults};

/// Settings of the Kafka source.
#[derive(Clone)]
pub struct SourceSettings {
    /// Topics and brokers.
    pub kafka: KafkaSettings,
    /// Windows and lateness.
    pub windowing: Windowing,
    /// A partition with no message for this long follows the wall clock.
    pub idle_ms: u64,
    /// Windows below this were emitted before a restart: their reactions are late.
    pub first_window: WindowId,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Set to stop reading and drain.
    pub stop: Arc<AtomicBool>,
    /// Where a source that cannot go on (e.g. its consumer could not be created) says so.
    pub faults: Faults,
    /// Sources that have stopped (committed after a stop, or never started): the workers drop
    /// the dataflow once every source has.
    pub stopped: Arc<AtomicUsize>,
}

/// Messages handled per activation before yielding to other operators.
const BUDGET: usize = 20_000;
/// How often an idle source wakes to advance watermarks and commit.
const TICK: Duration = Duration::from_millis(200);
/// How often offsets are committed at most.
const COMMIT_EVERY: Duration = Duration::from_millis(1000);

struct Partition {
    clock: EventClock,
    /// The partition's watermark as a window: everything below is closed. Never decreases.
    open_from: WindowId,
    last_message: Instant,
    /// The highest window with counted data.
    max_window: Option<WindowId>,
    progress: PartitionProgress,
}

/// The Kafka source. `durable` probes the end of the dataflow: windows it has passed are in the
/// windows topic.
pub fn kafka_source<'scope>(
    scope: Scope<'scope, WindowId>,
    settings: SourceSettings,
    durable: ProbeHandle<WindowId>,
) -> StreamVec<'scope, WindowId, (Emoji, u64)> {
    let index = scope.index();
    let peers = scope.peers();
    source(scope, "KafkaSource", move |cap, info| {
        let activator = scope.activator_for(info.address.clone());
        let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
        let mine: Vec<i32> = (0..settings.kafka.partitions)
            .filter(|p| *p as usize % peers == index)
            .collect();
        let mut cap: Option<Capability<WindowId>> = Some(cap);
        let consumer = if mine.is_empty() {
            // No partitions: this worker must not hold windows open.
            cap = None;
            None
        } else {
            match open_consumer(&settings, &mine) {
                Ok(mut consumer) => {
                    consumer.set_nonempty_callback(move || {
                        let _ = sync_activator.activate();
                    });
                    Some(consumer)
                }
                Err(e) => {
                    settings.faults.report(
                        Component::Dataflow,
                        format!("the Kafka source of worker {index} cannot start: {e}"),
                    );
                    cap = None;
                    None
                }
            }
        };
        match cap.as_mut() {
            Some(cap) => cap.downgrade(&settings.first_window),
            None => {
                settings.stopped.fetch_add(1, Ordering::SeqCst);
            }
        }
        let start = Instant::now();
        let mut partitions: BTreeMap<i32, Partition> = mine
            .iter()
            .map(|p| {
                (
                    *p,
                    Partition {
                        clock: EventClock::default(),
                        open_from: settings.first_window,
                        last_message: start,
                        max_window: None,
                        progress: PartitionProgress::default(),
                    },
                )
            })
            .collect();
        let mut counts: HashMap<(WindowId, Emoji), u64> = HashMap::new();
        let mut last_commit = Instant::now();
        let mut stopping = false;
        let mut consumer_done = false;
        let windowing = settings.windowing;
        activator.activate();

        move |output| {
            if consumer_done {
                return;
            }
            let (Some(consumer), Some(held)) = (consumer.as_ref(), cap.as_mut()) else {
                return;
            };
            let now_ms = wall_clock_ms();
            if !stopping && settings.stop.load(Ordering::Relaxed) {
                tracing::debug!(
                    worker = index,
                    holding = *held.time(),
                    "Kafka source stopping"
                );
                stopping = true;
            }
            let mut budget_left = true;
            if !stopping {
                budget_left = false;
                for _ in 0..BUDGET {
                    let message = match consumer.poll(Duration::ZERO) {
                        None => {
                            budget_left = true;
                            break;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(worker = index, "Kafka consumer error: {e}");
                            continue;
                        }
                        Some(Ok(message)) => message,
                    };
                    settings.stats.consumed.inc();
                    if let Some(counters) = settings.stats.partition(message.partition()) {
                        counters.consumed.inc();
                    }
                    let Some(partition) = partitions.get_mut(&message.partition()) else {
                        continue;
                    };
                    let offset = message.offset();
                    if let Some(expected) = partition.progress.expected().filter(|e| offset > *e) {
                        let lost = (offset - expected) as u64;
                        settings.stats.lost.add(lost);
                        tracing::warn!(
                            partition = message.partition(),
                            lost,
                            "offsets {expected}..{offset} were never read (the broker dropped them)"
                        );
                    }
                    partition.last_message = Instant::now();
                    let payload = message.payload().unwrap_or_default();
                    let counted_in = match parse_reaction(payload, now_ms, MissingTimestamp::Refuse)
                    {
                        Err(_) => {
                            settings.stats.invalid_on_topic.inc();
                            None
                        }
                        Ok(reaction) => {
                            let window = windowing.window_of(reaction.timestamp);
                            partition.clock.observe(reaction.timestamp);
                            if window < partition.open_from {
                                settings.stats.late.inc();
                                None
                            } else {
                                *counts.entry((window, reaction.emoji_type)).or_default() += 1;
                                partition.max_window = partition.max_window.max(Some(window));
                                partition.open_from = partition
                                    .open_from
                                    .max(partition.clock.open_from(&windowing));
                                Some(window)
                            }
                        }
                    };
                    partition.progress.read(offset, counted_in);
                }
            }

            // Emit this activation's partial counts, window by window.
            let refused = give_partial_counts(held, output, &mut counts);
            settings.stats.late.add(refused);

            if !stopping {
                let idle_window =
                    windowing.open_from(now_ms.saturating_sub(settings.idle_ms as i64));
                for partition in partitions.values_mut() {
                    if partition.last_message.elapsed() >= Duration::from_millis(settings.idle_ms) {
                        partition.open_from = partition.open_from.max(idle_window);
                    }
                }
                let hold = partitions
                    .values()
                    .map(|p| p.open_from)
                    .min()
                    .unwrap_or(*held.time());
                if hold > *held.time() {
                    held.downgrade(&hold);
                }
                if let Some(watermark) = settings.stats.watermarks.get(index) {
                    watermark.set(windowing.start_ms(*held.time()));
                }
            }

            // Commit what is durable.
            let durable_below = durable.with_frontier(|f| f.iter().copied().min());
            let closed_are_durable = durable_below.is_none_or(|d| d >= *held.time());
            if stopping && closed_are_durable {
                commit(
                    consumer,
                    &settings.kafka.reactions_topic,
                    &mut partitions,
                    durable_below,
                    true,
                );
                settings.stopped.fetch_add(1, Ordering::SeqCst);
                // Keep the capability: the open windows must not be emitted now.
                consumer_done = true;
                return;
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                last_commit = Instant::now();
                commit(
                    consumer,
                    &settings.kafka.reactions_topic,
                    &mut partitions,
                    durable_below,
                    false,
                );
            }
            if budget_left {
                activator.activate_after(TICK);
            } else {
                activator.activate();
            }
        }
    })
}

type ReactionConsumer = BaseConsumer<LagContext>;

fn commit(
    consumer: &ReactionConsumer,
    topic: &str,
    partitions: &mut BTreeMap<i32, Partition>,
    durable_below: Option<WindowId>,
    sync: bool,
) {
    let mut tpl = TopicPartitionList::new();
    let mut offsets = Vec::new();
    for (p, partition) in partitions.iter_mut() {
        if let Some(offset) = partition.progress.to_commit(durable_below) {
            if tpl
                .add_partition_offset(topic, *p, Offset::Offset(offset))
                .is_ok()
            {
                offsets.push((*p, offset));
            }
        }
    }
    if offsets.is_empty() {
        return;
    }
    let mode = if sync {
        CommitMode::Sync
    } else {
        CommitMode::Async
    };
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            for (p, offset) in offsets {
                if let Some(partition) = partitions.get_mut(&p) {
                    partition.progress.committed(offset);
                }
            }
        }
        // A failed commit only means a restart re-reads a little more; the next tick retries.
        Err(e) => tracing::warn!("offset commit failed: {e}"),
    }
}

fn open_consumer(
    settings: &SourceSettings,
    partitions: &[i32],
) -> Result<ReactionConsumer, String> {
    let context = LagContext {
        stats: Arc::clone(&settings.stats),
        topic: settings.kafka.reactions_topic.clone(),
    };
    let consumer: ReactionConsumer = client_config(&settings.kafka)
        .set("group.id", &settings.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .create_with_context(context)
        .map_err(|e| {
            format!(
                "cannot create a Kafka consumer for {}: {e}",
                settings.kafka.brokers
            )
        })?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(&settings.kafka.reactions_topic, *p, Offset::Stored)
            .map_err(|e| format!("cannot assign partition {p}: {e}"))?;
    }
    consumer.assign(&tpl).map_err(|e| {
        format!(
            "cannot assign partitions {partitions:?} of {}: {e}",
            settings.kafka.reactions_topic
        )
    })?;
    Ok(consumer)
}

/// Milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
