//! `replay`: a bounded, ordered input of reactions through the window dataflow.
//!
//! Lateness is decided as one reader reading the input in order would decide it: a reaction is
//! late when an earlier line's timestamp had already passed its window's end by the allowed
//! lateness. That makes the output a function of the input alone, the same for any number of
//! workers, while the parsing (the expensive part) runs on all of them:
//!
//! 1. `ReadBlocks`: each worker takes the next block of lines from the shared reader and parses
//!    it into a small [`BlockSummary`] (partial counts per window and emoji, the block's greatest
//!    timestamp, invalid and late-within-block lines).
//! 2. The summaries are broadcast, and `DecideLate` on every worker walks them in block order,
//!    carrying the event-time clock of all earlier blocks: partial counts for windows that clock
//!    has closed are late. Block `b`'s counts are emitted by worker `b mod peers`, at the
//!    window's timely time; each worker holds its capability at the first window the clock has
//!    not closed, so windows close as the input is read.
//! 3. From there the shared window pipeline ([`crate::dataflow::window_summaries`]) counts,
//!    scales and summarizes.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{source, OutputBuilder};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Operator, Probe};
use timely::dataflow::{Scope, StreamVec};
use timely::scheduling::SyncActivator;

use crate::blocks::{Block, BlockParser, BlockReader, BlockSummary};
use crate::dataflow::{window_summaries, Settings};
use crate::deployment::Deployment;
use crate::operators::{give_counts, Activity, CountKey};
use crate::reaction::InvalidCounts;
use crate::summary::WindowSummary;
use crate::window::{EventClock, WindowId, Windowing};

/// Default block size: large enough to amortize per-block work, small enough to spread a
/// modest file over several workers.
pub const DEFAULT_BLOCK_BYTES: usize = 256 * 1024;

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Windows, lateness and scaling.
    pub settings: Settings,
    /// Worker threads, and the processes. With several, every process reads the
    /// same input and parses its share of the blocks; process 0 gets the windows and the report.
    pub deployment: Deployment,
    /// Approximate bytes per block.
    pub block_bytes: usize,
    /// The validating clock: timestamps more than 10 s past it are invalid.
    pub now_ms: i64,
}

/// What a replay read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Non-blank lines read.
    pub lines: u64,
    /// Valid reactions counted in a window (on time or correcting it).
    pub counted: u64,
    /// Invalid lines, by field.
    pub invalid: InvalidCounts,
    /// Valid reactions dropped because their window had closed and passed the correction
    /// horizon.
    pub late: u64,
    /// Of the counted reactions, those that corrected a closed window.
    pub corrected: u64,
    /// Windows emitted.
    pub windows: u64,
    /// The first invalid lines (up to [`ReplayReport::MAX_ERRORS`]): line number and reason.
    pub errors: Vec<(u64, String)>,
}

impl ReplayReport {
    /// Invalid lines whose reasons are kept.
    pub const MAX_ERRORS: usize = crate::blocks::ERRORS_KEPT;
}

/// Why a replay failed. The message names the step; the cause is its source (print the chain,
/// as `{:#}` of an `anyhow::Error` does, to see both once).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the input failed.
    #[error("reading the input failed")]
    Input(#[source] io::Error),
    /// The window callback failed (e.g. writing stdout).
    #[error("writing a window failed")]
    Output(#[source] io::Error),
    /// The workers could not start (another process did not connect, timely failed).
    #[error("the workers could not start")]
    Start(#[from] crate::deployment::StartError),
    /// A worker failed.
    #[error("dataflow failed: {0}")]
    Dataflow(String),
}

/// Blocks read ahead of the workers: enough that a worker finishing a block finds the next one
/// waiting, few enough (2 MiB at the default block size) that reading stays close to parsing.
const BLOCKS_AHEAD: usize = 8;

/// The input shared by the workers of one process: a thread of its own reads it into blocks
/// and hands them over a bounded queue, so a slow input (a pipe) never stalls a worker, and
/// reading stays a few blocks ahead of parsing.
struct SharedInput {
    blocks: Mutex<mpsc::Receiver<Block>>,
    /// Each worker's reading operator, woken when a block is queued or the input ends.
    wake: Arc<Mutex<Vec<SyncActivator>>>,
    error: Arc<Mutex<Option<io::Error>>>,
    /// Set when nobody wants the rest (the output failed): reading ends at the next block.
    stop: Arc<AtomicBool>,
}

/// What a worker finds in the queue.
enum Next {
    Block(Block),
    /// Nothing queued yet: the reader wakes the worker when there is.
    Wait,
    /// The input has ended (or failed: see the error).
    End,
}

impl SharedInput {
    fn next(&self) -> Next {
        match lock(&self.blocks).try_recv() {
            Ok(block) => Next::Block(block),
            Err(mpsc::TryRecvError::Empty) => Next::Wait,
            Err(mpsc::TryRecvError::Disconnected) => Next::End,
        }
    }
}

/// Reads `input` into blocks until it ends, fails, or nobody receives them any more; this
/// process's share (`index mod processes = process`) goes into `queue`.
fn read_ahead<R: Read>(
    input: R,
    block_bytes: usize,
    (process, processes): (u64, u64),
    queue: mpsc::SyncSender<Block>,
    wake: &Mutex<Vec<SyncActivator>>,
    error: &Mutex<Option<io::Error>>,
    stop: &AtomicBool,
) {
    let wake_all = || {
        // A worker that has gone no longer needs waking.
        for worker in lock(wake).iter() {
            let _ = worker.activate();
        }
    };
    let mut reader = BlockReader::new(input, block_bytes);
    while !stop.load(Ordering::Relaxed) {
        match reader.next_block() {
            Ok(Some(block)) if block.index % processes != process => {}
            Ok(Some(block)) => {
                if queue.send(block).is_err() {
                    return;
                }
                wake_all();
            }
            Ok(None) => break,
            Err(e) => {
                *lock(error) = Some(e);
                break;
            }
        }
    }
    drop(queue);
    wake_all();
}

/// An ordered input that the workers of one process read from together. Clone it into each
/// worker's dataflow.
pub struct ReplayInput {
    shared: Arc<SharedInput>,
}

impl Clone for ReplayInput {
    fn clone(&self) -> Self {
        ReplayInput {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The read error of a replay's input and its stop, kept apart from the input so that holding
/// them does not keep the input's reader waiting to hand over blocks.
struct InputControl {
    error: Arc<Mutex<Option<io::Error>>>,
    stop: Arc<AtomicBool>,
}

impl InputControl {
    fn take_error(&self) -> Option<io::Error> {
        lock(&self.error).take()
    }

    /// Ends the input at the next block.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ReplayInput {
    /// Wraps a reader, to be cut into blocks of about `block_bytes`, all parsed here.
    pub fn new<R: Read + Send + 'static>(input: R, block_bytes: usize) -> Self {
        Self::share(input, block_bytes, 0, 1)
    }

    /// Wraps a reader of the deployment's input, of which process `process` of `processes`
    /// parses every `processes`-th block. Every process must read the same input. Reading
    /// starts at once, on a thread of its own, and stops when the input ends or every clone
    /// of the returned input is dropped.
    pub fn share<R: Read + Send + 'static>(
        input: R,
        block_bytes: usize,
        process: usize,
        processes: usize,
    ) -> Self {
        let (queue, blocks) = mpsc::sync_channel(BLOCKS_AHEAD);
        let wake = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let share = (process as u64, processes.max(1) as u64);
        let (reader_wake, reader_error, reader_stop) =
            (Arc::clone(&wake), Arc::clone(&error), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("replay-reader".to_owned())
            .spawn(move || {
                read_ahead(
                    input,
                    block_bytes,
                    share,
                    queue,
                    &reader_wake,
                    &reader_error,
                    &reader_stop,
                )
            })
            .map_or_else(
                // Without its thread the input reads nothing: say why rather than replay
                // an empty input.
                |e| *lock(&error) = Some(e),
                drop,
            );
        ReplayInput {
            shared: Arc::new(SharedInput {
                blocks: Mutex::new(blocks),
                wake,
                error,
                stop,
            }),
        }
    }

    /// The read error that stopped the input, if any.
    pub fn take_error(&self) -> Option<io::Error> {
        lock(&self.shared.error).take()
    }

    fn control(&self) -> InputControl {
        InputControl {
            error: Arc::clone(&self.shared.error),
            stop: Arc::clone(&self.shared.stop),
        }
    }
}

/// Builds the replay dataflow in `scope`: window summaries on worker 0, in window order.
/// `report`, given on one worker, receives what was read.
pub fn replay_dataflow<'scope>(
    scope: Scope<'scope, WindowId>,
    input: ReplayInput,
    settings: &Settings,
    now_ms: i64,
    report: Option<Arc<Mutex<ReplayReport>>>,
) -> StreamVec<'scope, WindowId, WindowSummary> {
    let pace = Pace::default();
    let blocks = read_blocks(
        scope,
        input.shared,
        settings.windowing,
        now_ms,
        pace.clone(),
    );
    let counts = decide_late(blocks.broadcast(), settings, report, pace.clone());
    window_summaries(counts, settings, Activity::default(), Arc::default()).probe_with(&pace.done)
}

/// Windows the input may be decided ahead of the summaries that have come out: enough to keep
/// every worker busy, few enough that a replay's memory does not grow with its input when
/// summarizing (or the caller writing) is slower than parsing.
const WINDOWS_AHEAD: WindowId = 64;

/// Blocks a worker may take past the first one not yet decided: room for every worker's blocks
/// in flight, and a bound on what waits when another process reads more slowly.
const BLOCKS_UNDECIDED: u64 = 256;

/// How long a paused reader waits before it looks again.
const PAUSE: Duration = Duration::from_millis(1);

/// What keeps one worker's reading close to its output.
#[derive(Clone)]
struct Pace {
    /// The first window the blocks decided so far leave open.
    decided: Rc<Cell<WindowId>>,
    /// The summaries' frontier.
    done: ProbeHandle<WindowId>,
    /// The first block not yet decided.
    next_block: Rc<Cell<u64>>,
    /// One past the last block this worker took.
    taken: Rc<Cell<u64>>,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            decided: Rc::new(Cell::new(0)),
            done: ProbeHandle::new(),
            next_block: Rc::new(Cell::new(0)),
            taken: Rc::new(Cell::new(0)),
        }
    }
}

impl Pace {
    /// Whether reading should wait for the summaries (or the blocks before) to catch up.
    fn ahead(&self) -> bool {
        self.done
            .less_than(&self.decided.get().saturating_sub(WINDOWS_AHEAD))
            || self.taken.get() > self.next_block.get() + BLOCKS_UNDECIDED
    }
}

/// Replays `input`, calling `on_window` for each window summary in window order, streams in byte
/// order within a window (empty windows of active streams included, up to the last window with
/// reactions), and returns what was read.
pub fn replay<R, F>(
    input: R,
    config: &ReplayConfig,
    mut on_window: F,
) -> Result<ReplayReport, ReplayError>
where
    R: Read + Send + 'static,
    F: FnMut(&WindowSummary) -> io::Result<()>,
{
    // Whole batches cross to the caller: a message per summary (and a clone of each, as an
    // `inspect` would need) cost more than the summaries themselves with thousands of streams.
    run(
        input,
        config,
        |batch: &mut Vec<WindowSummary>| (batch.len() as u64, std::mem::take(batch)),
        |batch| batch.iter().try_for_each(&mut on_window),
    )
}

/// Replays `input` like [`replay`], writing each summary's JSON line
/// ([`WindowSummary::write_json`] and a newline) to `out`.
///
/// The lines are encoded on the worker that summarizes and cross to `out` as bytes: with
/// thousands of streams there are millions of summaries, and handing each to another thread
/// (its allocation freed there, its shared stream id counted down there) cost more than
/// encoding it.
pub fn replay_ndjson<R, W>(
    input: R,
    config: &ReplayConfig,
    out: &mut W,
) -> Result<ReplayReport, ReplayError>
where
    R: Read + Send + 'static,
    W: io::Write + ?Sized,
{
    run(
        input,
        config,
        |batch: &mut Vec<WindowSummary>| {
            let windows = batch.len() as u64;
            let mut bytes = Vec::with_capacity(batch.len() * 160);
            for summary in batch.drain(..) {
                summary.write_json(&mut bytes);
                bytes.push(b'\n');
            }
            (windows, bytes)
        },
        |bytes| out.write_all(&bytes),
    )
}

/// Runs the replay dataflow; each batch of summaries is turned into a message by `prepare`
/// (on the worker, with the number of windows in it) and handed to `deliver` (on the caller's
/// thread) in window order.
fn run<R, T, P, D>(
    input: R,
    config: &ReplayConfig,
    prepare: P,
    mut deliver: D,
) -> Result<ReplayReport, ReplayError>
where
    R: Read + Send + 'static,
    T: Send + 'static,
    P: Fn(&mut Vec<WindowSummary>) -> (u64, T) + Clone + Send + Sync + 'static,
    D: FnMut(T) -> io::Result<()>,
{
    let deployment = &config.deployment;
    let input = ReplayInput::share(
        input,
        config.block_bytes,
        deployment.process,
        deployment.processes(),
    );
    let report = Arc::new(Mutex::new(ReplayReport::default()));
    // Bounded, so a slow `deliver` (stdout into a slow pipe) holds the workers back, and
    // through them the reading, instead of the output piling up in memory.
    let (tx, rx) = mpsc::sync_channel::<(u64, T)>(BATCHES_AHEAD);
    let tx = Mutex::new(tx);
    let settings = config.settings;
    let now_ms = config.now_ms;
    // Only the workers hold the input: once they are done, its reader stops too.
    let control = input.control();
    let worker_input = input;
    let worker_report = Arc::clone(&report);
    let guards = crate::deployment::execute(deployment, move |worker| {
        let tx = lock(&tx).clone();
        let input = worker_input.clone();
        let report = (worker.index() == 0).then(|| Arc::clone(&worker_report));
        let prepare = prepare.clone();
        worker.dataflow::<WindowId, _, _>(move |scope| {
            replay_dataflow(scope, input, &settings, now_ms, report).sink(
                Pipeline,
                "Deliver",
                move |(input, _frontier)| {
                    input.for_each(|_time, batch| {
                        // The caller drains the receiver until every worker is done (even after
                        // an output error), so a send fails only if the caller has gone.
                        let _ = tx.send(prepare(batch));
                    });
                },
            );
        });
    })?;

    let mut output_error = None;
    let mut windows = 0;
    for (count, message) in rx {
        windows += count;
        if output_error.is_none() {
            output_error = deliver(message).err();
            if output_error.is_some() {
                // Nobody takes the rest (`emostream replay big.ndjson | head`): stop reading
                // rather than replay the whole input into the void.
                control.stop();
            }
        }
    }
    for result in guards.join() {
        result.map_err(ReplayError::Dataflow)?;
    }
    if let Some(e) = control.take_error() {
        return Err(ReplayError::Input(e));
    }
    if let Some(e) = output_error {
        return Err(ReplayError::Output(e));
    }
    let mut report = lock(&report).clone();
    report.windows = windows;
    Ok(report)
}

/// Batches of summaries (a window's, or part of one) handed to `deliver` ahead of it.
const BATCHES_AHEAD: usize = 16;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a worker panicked; the join reports that, so keep going here.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks parsed per activation, so one worker's reading does not starve its other operators.
const BLOCKS_PER_ACTIVATION: usize = 4;

fn read_blocks<'scope>(
    scope: Scope<'scope, WindowId>,
    input: Arc<SharedInput>,
    windowing: Windowing,
    now_ms: i64,
    pace: Pace,
) -> StreamVec<'scope, WindowId, BlockSummary> {
    source(scope, "ReadBlocks", move |cap, info| {
        lock(&input.wake).push(scope.worker().sync_activator_for(info.address.to_vec()));
        let activator = scope.activator_for(info.address);
        // Blocks may have been queued before the reader knew of this worker.
        activator.activate();
        let mut cap = Some(cap);
        let mut parser = BlockParser::new(windowing, now_ms);
        move |output| {
            let Some(time) = cap.as_ref() else { return };
            for _ in 0..BLOCKS_PER_ACTIVATION {
                if pace.ahead() {
                    activator.activate_after(PAUSE);
                    return;
                }
                match input.next() {
                    Next::Block(block) => {
                        pace.taken.set(block.index + 1);
                        let summary = parser.parse(&block);
                        output.session(time).give(summary);
                    }
                    Next::Wait => return,
                    Next::End => {
                        cap = None;
                        return;
                    }
                }
            }
            activator.activate();
        }
    })
}

fn decide_late<'scope>(
    blocks: StreamVec<'scope, WindowId, BlockSummary>,
    settings: &Settings,
    report: Option<Arc<Mutex<ReplayReport>>>,
    pace: Pace,
) -> StreamVec<'scope, WindowId, (CountKey, u64)> {
    let windowing = settings.windowing;
    let horizon = settings.correction_windows();
    let index = blocks.scope().index() as u64;
    let peers = blocks.scope().peers() as u64;
    // The input holds back nothing downstream: the blocks travel at the source's first time
    // until the input ends, while the counts' epochs are decided here, in block order, and
    // this operator's capability follows them. Connected, the input would hold every window
    // open until the whole input had been read (and all its counts buffered).
    let mut builder = OperatorBuilder::new("DecideLate".to_owned(), blocks.scope());
    let mut input = builder.new_input_connection(blocks, Pipeline, []);
    let (output, counts) = builder.new_output_connection([]);
    let mut output = OutputBuilder::from(output);
    builder.build(move |mut capabilities| {
        let mut cap: Option<Capability<WindowId>> = capabilities.pop();
        let mut waiting: BTreeMap<u64, BlockSummary> = BTreeMap::new();
        let mut next_block = 0u64;
        let mut clock = EventClock::default();
        // This worker's blocks' counts, already summed per block: emitted as they are rather
        // than summed again across blocks here (with thousands of streams, a block's counts
        // hardly repeat in the next, and the counting downstream sums them anyway).
        let mut mine = Vec::new();
        move |frontiers| {
            let frontier = &frontiers[0];
            let mut output = output.activate();
            let output = &mut output;
            input.for_each(|_time, batch| {
                for summary in batch.drain(..) {
                    waiting.insert(summary.index, summary);
                }
            });
            let mut seen = ReplayReport::default();
            while let Some(block) = waiting.remove(&next_block) {
                let emit = block.index % peers == index;
                let open = clock.open_from(&windowing);
                let mut late = 0;
                // A count for a window the earlier blocks have closed, or one late within its
                // own block, goes out at the epoch its line was read in (the later of the two
                // clocks' open windows) if its window is within the horizon, else it is late.
                for (at, key, n) in block.counts.iter().chain(block.late_counts.iter()) {
                    let (at, n) = (*at, *n);
                    let window = key.1;
                    let epoch = at.max(open);
                    if epoch > window && epoch - window > horizon {
                        late += n;
                        continue;
                    }
                    seen.counted += n;
                    if epoch > window {
                        seen.corrected += n;
                    }
                    if emit {
                        mine.push((epoch, key.clone(), n));
                    }
                }
                seen.lines += block.lines;
                seen.late += late;
                seen.invalid.merge(&block.invalid);
                let room = ReplayReport::MAX_ERRORS.saturating_sub(seen.errors.len());
                seen.errors.extend(block.errors.into_iter().take(room));
                clock.merge(block.clock);
                next_block += 1;
            }
            pace.decided.set(clock.open_from(&windowing));
            pace.next_block.set(next_block);
            if let Some(report) = &report {
                let mut report = lock(report);
                report.lines += seen.lines;
                report.counted += seen.counted;
                report.corrected += seen.corrected;
                report.late += seen.late;
                report.invalid.merge(&seen.invalid);
                let room = ReplayReport::MAX_ERRORS.saturating_sub(report.errors.len());
                report.errors.extend(seen.errors.into_iter().take(room));
            }
            let Some(held) = cap.as_mut() else { return };
            let refused = give_counts(held, output, &mut mine);
            if let Some(report) = &report {
                lock(report).late += refused;
            }
            // Once every block has come, any still waiting follow a gap a stopped input left
            // (another process's blocks that were never read): they cannot be decided in order.
            if frontier.is_empty() {
                cap = None;
            } else {
                let open = clock.open_from(&windowing);
                if open > *held.time() {
                    held.downgrade(&open);
                }
            }
        }
    });
    counts
}
