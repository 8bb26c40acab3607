//! The Kafka source: each worker reads its own partitions of the reactions topic and turns
//! them into partial counts per window. This module does the I/O; the windowing rule (which
//! reaction is late, how the ingest's marks and event time close windows, where the worker
//! holds its capability) is [`dataflows::watermark`], asked once per message and once per
//! activation.
//!
//! - Partition `p` belongs to worker `p mod peers` (static assignment, no group rebalances).
//! - Marks (records with the [`super::marks::MARK_HEADER`] header, written by each process's
//!   ingest, see [`super::marks`]) are handed to the rule and counted nowhere else; a reaction's
//!   event time is bounded by its record's timestamp, the time its producer queued it.
//! - The worker holds its capability at the least watermark of its partitions
//!   ([`PartitionWatermarks::hold`]), so a counted reaction can always be emitted at its window.
//! - The consumer wakes the operator when messages arrive; a timer wakes it for idleness and
//!   commits. Offsets are committed only up to the reactions of windows that are durable in
//!   the windows topic (see [`super::offsets`]). A gap in a partition's offsets is counted as
//!   lost.
//! - On stop, the source stops reading and holds its capability where it is: windows the
//!   watermark has closed are finished and written; once they are durable the source commits
//!   and reports itself stopped. Open windows are not flushed early: their reactions stay
//!   uncommitted, so a restarted dataflow reads them again and emits those windows whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflows::operators::{give_partial_counts, CountKey, PartialCountOutput, PartialCounts};
use dataflows::{
    parse_reaction, wall_clock_ms, Arrival, MissingTimestamp, PartitionWatermarks, WindowId,
    Windowing,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use timely::dataflow::operators::generic::source;
use timely::dataflow::operators::Capability;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use super::lag::{LagContext, STATISTICS_INTERVAL_MS};
use super::marks::read_mark;
use super::offsets::PartitionProgress;
use super::{client_config, BrokerError, KafkaSettings};
use crate::stats::Stats;
use crate::system::{Component, Faults};

/// Settings of the Kafka source.
#[derive(Clone)]
pub struct SourceSettings {
    /// Topics and brokers.
    pub kafka: KafkaSettings,
    /// Windows and lateness.
    pub windowing: Windowing,
    /// A partition with no reaction for this long follows the marks alone.
    pub idle_ms: u64,
    /// Producers that mark the partitions: one per process of the deployment.
    pub producers: usize,
    /// Windows below this were emitted before a restart: their reactions are late.
    pub first_window: WindowId,
    /// How many windows behind its epoch a late reaction may be and still correct its window
    /// (0: every late reaction is dropped).
    pub correction_windows: u64,
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

/// The Kafka source. `durable` probes the end of the dataflow: windows it has passed are in the
/// windows topic. `sources` must probe this source's output: its frontier is the least hold of
/// every worker's source, which is as far as windows can close.
pub fn kafka_source<'scope>(
    scope: Scope<'scope, WindowId>,
    settings: SourceSettings,
    durable: ProbeHandle<WindowId>,
    sources: ProbeHandle<WindowId>,
) -> StreamVec<'scope, WindowId, (CountKey, u64)> {
    let worker = scope.index();
    let peers = scope.peers();
    source(scope, "KafkaSource", move |cap, info| {
        let activator = scope.activator_for(info.address.clone());
        let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
        let wake = move || {
            let _ = sync_activator.activate();
        };
        let probes = Probes { durable, sources };
        let mut state = SourceState::start(settings, worker, peers, cap, probes, wake);
        activator.activate();
        move |output| {
            let Some(state) = state.as_mut() else {
                return;
            };
            match state.activate(output) {
                Wake::Now => activator.activate(),
                Wake::AfterTick => activator.activate_after(TICK),
                Wake::Never => {}
            }
        }
    })
}

/// Where a reading source is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading messages and advancing the watermark.
    Reading,
    /// Asked to stop: no more reading; waiting for the closed windows to be durable.
    Draining,
    /// Committed after the stop. The capability stays held, so open windows are not emitted.
    Stopped,
}

/// When the operator wants to run again.
enum Wake {
    /// Messages are left: as soon as possible.
    Now,
    /// Nothing left to read: after [`TICK`], or earlier when messages arrive.
    AfterTick,
    /// Stopped.
    Never,
}

/// One worker's source, with its consumer open.
struct SourceState {
    worker: usize,
    settings: SourceSettings,
    consumer: ReactionConsumer,
    /// Held at the least watermark of the partitions (see [`PartitionWatermarks::hold`]).
    held: Capability<WindowId>,
    probes: Probes,
    phase: Phase,
    last_commit: Instant,
    intake: Intake,
}

/// Where the dataflow is: what is durable, and as far as every worker's source has let windows
/// close.
struct Probes {
    durable: ProbeHandle<WindowId>,
    sources: ProbeHandle<WindowId>,
}

impl Probes {
    /// Every window that can close now is durable: the durable frontier has reached the least
    /// hold of the sources. A worker's own hold may be higher than another's, so waiting for
    /// its own would wait forever once every source has stopped reading.
    fn drained(&self, durable_below: Option<WindowId>) -> bool {
        let sources_below = self.sources.with_frontier(|f| f.iter().copied().min());
        match (durable_below, sources_below) {
            (None, _) => true,
            (Some(durable), Some(sources)) => durable >= sources,
            (Some(_), None) => false,
        }
    }
}

/// What the source has read and not yet emitted or committed.
struct Intake {
    /// Read and commit progress of each of the worker's partitions.
    progress: BTreeMap<i32, PartitionProgress>,
    /// Which windows are closed on each partition.
    watermarks: PartitionWatermarks<i32>,
    /// Partial counts of this activation, emitted at its end.
    counts: PartialCounts,
    /// Per partition, the first offset written after this run started: a late reaction before
    /// it for a window the previous run emitted may already be in that window's correction
    /// (a restart re-reads what was not committed), so only later ones correct such windows.
    fresh_from: BTreeMap<i32, i64>,
}

impl SourceState {
    /// Opens the worker's consumer on its partitions (`p mod peers = worker`); `wake` is called
    /// when messages arrive. `None` when the worker has nothing to read (no partitions, or the
    /// consumer cannot be opened): it then counts as stopped at once and holds no windows open.
    fn start(
        settings: SourceSettings,
        worker: usize,
        peers: usize,
        mut cap: Capability<WindowId>,
        probes: Probes,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Option<SourceState> {
        let mine: Vec<i32> = (0..settings.kafka.partitions)
            .filter(|p| *p as usize % peers == worker)
            .collect();
        let consumer = if mine.is_empty() {
            None
        } else {
            match open_consumer(&settings, &mine) {
                Ok(mut consumer) => {
                    consumer.set_nonempty_callback(wake);
                    Some(consumer)
                }
                Err(e) => {
                    settings.faults.report(
                        Component::Dataflow,
                        format!("the Kafka source of worker {worker} cannot start: {e}"),
                    );
                    None
                }
            }
        };
        let Some(consumer) = consumer else {
            settings.stopped.fetch_add(1, Ordering::SeqCst);
            return None;
        };
        cap.downgrade(&settings.first_window);
        let fresh_from = fresh_offsets(&consumer, &settings, &mine);
        let start = Instant::now();
        let watermarks = PartitionWatermarks::new(
            settings.windowing,
            settings.idle_ms,
            settings.producers,
            settings.first_window,
            mine.iter().copied(),
            start,
        );
        let intake = Intake {
            progress: mine
                .iter()
                .map(|p| (*p, PartitionProgress::default()))
                .collect(),
            watermarks,
            counts: PartialCounts::default(),
            fresh_from,
        };
        Some(SourceState {
            worker,
            settings,
            consumer,
            held: cap,
            probes,
            phase: Phase::Reading,
            last_commit: Instant::now(),
            intake,
        })
    }

    /// One activation: read, emit the partial counts, advance the watermark, commit.
    fn activate(&mut self, output: &mut PartialCountOutput<'_>) -> Wake {
        if self.phase == Phase::Stopped {
            return Wake::Never;
        }
        let now_ms = wall_clock_ms();
        if self.phase == Phase::Reading && self.settings.stop.load(Ordering::Relaxed) {
            tracing::debug!(
                worker = self.worker,
                holding = *self.held.time(),
                "Kafka source stopping"
            );
            self.phase = Phase::Draining;
        }
        let mut drained = true;
        if self.phase == Phase::Reading {
            drained = self.poll_batch(now_ms);
        }
        let refused = give_partial_counts(&self.held, output, &mut self.intake.counts);
        self.settings.stats.late.add(refused);
        if self.phase == Phase::Reading {
            self.advance();
        }
        let durable_below = self
            .probes
            .durable
            .with_frontier(|f| f.iter().copied().min());
        if self.phase == Phase::Draining && self.probes.drained(durable_below) {
            self.commit_durable(durable_below, CommitMode::Sync);
            self.settings.stopped.fetch_add(1, Ordering::SeqCst);
            self.phase = Phase::Stopped;
            return Wake::Never;
        }
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.last_commit = Instant::now();
            self.commit_durable(durable_below, CommitMode::Async);
        }
        if drained {
            Wake::AfterTick
        } else {
            Wake::Now
        }
    }

    /// Reads up to [`BUDGET`] messages. Returns whether the consumer had none left.
    fn poll_batch(&mut self, now_ms: i64) -> bool {
        for _ in 0..BUDGET {
            match self.consumer.poll(Duration::ZERO) {
                None => return true,
                Some(Err(e)) => tracing::warn!(worker = self.worker, "Kafka consumer error: {e}"),
                Some(Ok(message)) => {
                    let epoch = *self.held.time();
                    self.intake.read(&message, now_ms, epoch, &self.settings)
                }
            }
        }
        false
    }

    /// Lets idle partitions follow their marks, and moves the capability up to the least
    /// watermark.
    fn advance(&mut self) {
        self.intake.watermarks.tick(Instant::now());
        if let Some(hold) = self.intake.watermarks.hold() {
            if hold > *self.held.time() {
                self.held.downgrade(&hold);
            }
        }
        if let Some(watermark) = self.settings.stats.watermarks.get(self.worker) {
            watermark.set(self.settings.windowing.start_ms(*self.held.time()));
        }
    }

    /// Commits, on each partition, the offsets whose reactions are all in durable windows
    /// (every window below `durable_below`; `None`: all).
    fn commit_durable(&mut self, durable_below: Option<WindowId>, mode: CommitMode) {
        let topic = &self.settings.kafka.reactions_topic;
        let mut tpl = TopicPartitionList::new();
        let mut offsets = Vec::new();
        for (p, progress) in self.intake.progress.iter_mut() {
            if let Some(offset) = progress.to_commit(durable_below) {
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
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => {
                for (p, offset) in offsets {
                    if let Some(progress) = self.intake.progress.get_mut(&p) {
                        progress.committed(offset);
                    }
                }
            }
            // A failed commit only means a restart re-reads a little more; the next tick retries.
            Err(e) => tracing::warn!("offset commit failed: {e}"),
        }
    }
}

impl Intake {
    /// Accounts for one message: counters, offset gaps, and its reaction counted (at its window,
    /// or correcting it at `epoch`, where the source's counts are emitted now) or late. `now_ms`
    /// is the clock reactions are validated against.
    fn read(
        &mut self,
        message: &BorrowedMessage<'_>,
        now_ms: i64,
        epoch: WindowId,
        settings: &SourceSettings,
    ) {
        let stats = &settings.stats;
        let partition = message.partition();
        let Some(progress) = self.progress.get_mut(&partition) else {
            return;
        };
        let offset = message.offset();
        stats.read.inc();
        if let Some(expected) = progress.expected().filter(|e| offset < *e) {
            // Assigned partitions only move forward: the log itself went back. The partition
            // is read no further (its windows stay open) and the fault stops the system.
            self.progress.remove(&partition);
            settings.faults.report(
                crate::system::Component::Broker,
                format!(
                    "partition {partition} of the reactions topic went back from offset {expected} to {offset}: the brokers lost what emostream had read (restarted empty?). Stopped rather than count it again or skip; start emostream again to begin afresh on the new log"
                ),
            );
            return;
        }
        if let Some(expected) = progress.expected().filter(|e| offset > *e) {
            let lost = (offset - expected) as u64;
            stats.lost.add(lost);
            if let Some(counters) = stats.partition(partition) {
                counters.lost.add(lost);
            }
            tracing::warn!(
                partition,
                lost,
                "offsets {expected}..{offset} were never read (the broker dropped them)"
            );
        }
        match read_mark(message) {
            Some(Ok(mark)) => {
                if !self.watermarks.mark(&partition, mark.process, mark.at_ms) {
                    tracing::debug!(partition, ?mark, "a mark of a process beyond --processes");
                }
                progress.read(offset, None);
                return;
            }
            Some(Err(e)) => tracing::debug!(partition, offset, "not a mark: {e}"),
            None => {}
        }
        stats.consumed.inc();
        if let Some(counters) = stats.partition(partition) {
            counters.consumed.inc();
        }
        let at = Instant::now();
        let payload = message.payload().unwrap_or_default();
        // The time the producer queued it; the broker's append time on a LogAppendTime topic.
        let queued_ms = message.timestamp().to_millis().unwrap_or(now_ms);
        let counted_in = match parse_reaction(payload, now_ms, MissingTimestamp::Refuse) {
            Err(_) => {
                stats.invalid_on_topic.inc();
                self.watermarks.heard(&partition, at);
                None
            }
            Ok(reaction) => {
                match self
                    .watermarks
                    .observe(&partition, reaction.timestamp, queued_ms, at)
                {
                    Some(Arrival::Counted(window)) => {
                        self.counts
                            .add(window, &reaction.stream_id, reaction.emoji_type, 1);
                        Some(window)
                    }
                    Some(Arrival::Late(window)) => {
                        // Its partition has passed the window, but the source may still hold
                        // it open (counted as usual), or it may still be corrected. A window
                        // the previous run emitted is corrected only by reactions written
                        // since this run started: earlier ones may be in its counts already.
                        let at = epoch.max(window);
                        let fresh = window >= settings.first_window
                            || self
                                .fresh_from
                                .get(&partition)
                                .is_some_and(|from| offset >= *from);
                        let correcting = settings.correction_windows > 0;
                        if correcting && fresh && at - window <= settings.correction_windows {
                            if at > window {
                                stats.corrected.inc();
                            }
                            self.counts.add_at(
                                at,
                                window,
                                &reaction.stream_id,
                                reaction.emoji_type,
                                1,
                            );
                            Some(at)
                        } else {
                            stats.late.inc();
                            None
                        }
                    }
                    // Not reached: `progress` and `watermarks` hold the same partitions.
                    None => None,
                }
            }
        };
        progress.read(offset, counted_in);
    }
}

type ReactionConsumer = BaseConsumer<LagContext>;

/// How long a starting source keeps asking for its group's committed offsets.
const COMMITTED_WAIT: Duration = Duration::from_secs(60);

/// Where each partition starts: at the group's committed offset, or at the beginning when
/// nothing is committed. Asked explicitly, and again until the group coordinator answers: a
/// broker that has just started (or elected a new coordinator) answers "not coordinator" or
/// "load in progress" for a while, and an assignment at the stored offset would then never
/// start fetching.
fn committed_offsets(
    consumer: &ReactionConsumer,
    settings: &SourceSettings,
    partitions: &[i32],
) -> Result<TopicPartitionList, BrokerError> {
    let topic = &settings.kafka.reactions_topic;
    let mut wanted = TopicPartitionList::new();
    for p in partitions {
        wanted
            .add_partition_offset(topic, *p, Offset::Stored)
            .map_err(|e| BrokerError(format!("cannot ask for partition {p}'s offset: {e}")))?;
    }
    let deadline = Instant::now() + COMMITTED_WAIT;
    let committed = loop {
        match consumer.committed_offsets(wanted.clone(), Duration::from_secs(5)) {
            Ok(committed) => break committed,
            Err(e) if Instant::now() < deadline => {
                tracing::info!(
                    "waiting for the committed offsets of group {}: {e}",
                    settings.kafka.group_id
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => {
                return Err(BrokerError(format!(
                    "cannot read the committed offsets of group {} on {} within {COMMITTED_WAIT:?}: {e}",
                    settings.kafka.group_id, settings.kafka.brokers
                )))
            }
        }
    };
    let mut start_at = TopicPartitionList::new();
    for p in partitions {
        let offset = match committed.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(n)) => Offset::Offset(n),
            _ => Offset::Beginning,
        };
        start_at
            .add_partition_offset(topic, *p, offset)
            .map_err(|e| BrokerError(format!("cannot assign partition {p}: {e}")))?;
    }
    Ok(start_at)
}

/// Where each partition ends now (the offsets written from here on are this run's own); a
/// partition whose end cannot be read gets none, so nothing before a restart is corrected
/// there.
fn fresh_offsets(
    consumer: &ReactionConsumer,
    settings: &SourceSettings,
    partitions: &[i32],
) -> BTreeMap<i32, i64> {
    if settings.first_window == 0 || settings.correction_windows == 0 {
        return BTreeMap::new();
    }
    partitions
        .iter()
        .filter_map(|p| {
            consumer
                .fetch_watermarks(&settings.kafka.reactions_topic, *p, Duration::from_secs(5))
                .map(|(_, high)| (*p, high))
                .map_err(|e| tracing::warn!(partition = p, "cannot read where it ends: {e}"))
                .ok()
        })
        .collect()
}

fn open_consumer(
    settings: &SourceSettings,
    partitions: &[i32],
) -> Result<ReactionConsumer, BrokerError> {
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
    let start_at = committed_offsets(&consumer, settings, partitions)?;
    consumer.assign(&start_at).map_err(|e| {
        format!(
            "cannot assign partitions {partitions:?} of {}: {e}",
            settings.kafka.reactions_topic
        )
    })?;
    Ok(consumer)
}
