//! The live dataflow: Kafka reactions in, windows to the windows topic and to `on_window`.
//!
//! ```text
//! KafkaSource (per worker, own partitions) ─▶ window pipeline (count, scale, summarize)
//!   ─▶ WriteWindows (durable in the windows topic) ─▶ on_window ─▶ broadcast to every worker
//!   ─▶ the first worker of each process publishes into its stream store ─▶ probe (sources
//!   commit by it)
//! ```
//! Timely workers are plain threads; nothing here runs on tokio.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataflows::deployment::Deployment;
use dataflows::operators::Activity;
use dataflows::{window_summaries, Settings, WindowId, WindowSummary};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

use crate::delivery::Registry;
use crate::kafka::source::{kafka_source, SourceSettings};
use crate::kafka::windows_sink::write_windows;
use crate::system::Component;

/// How long dropping a [`Live`] waits for its workers.
const DROP_WAIT: Duration = Duration::from_secs(10);

/// Called on a worker thread for each durable window, in window order. Must not block.
pub type OnWindow = Arc<dyn Fn(&WindowSummary) + Send + Sync>;

/// A running live dataflow.
pub struct Live {
    guards: Option<timely::communication::WorkerGuards<()>>,
    stop: Arc<AtomicBool>,
}

/// Starts this process's workers (of `deployment`) running the live dataflow, emitting from
/// where `activity` says (the sources read from its first window).
pub fn start(
    deployment: &Deployment,
    settings: Settings,
    mut source: SourceSettings,
    activity: Activity,
    on_window: OnWindow,
    registry: Arc<Registry>,
) -> Result<Live, dataflows::deployment::StartError> {
    let stop = Arc::clone(&source.stop);
    source.windowing = settings.windowing;
    if let Some(from) = activity.from {
        source.first_window = from;
    }
    let local_workers = deployment.threads;
    let guards = dataflows::deployment::execute(deployment, move |worker| {
        // The other workers wait on this one's progress forever: a panic stops the system.
        let _panicked = source
            .faults
            .on_panic(Component::Worker, format!("worker {}", worker.index()));
        let source = source.clone();
        let stopped = Arc::clone(&source.stopped);
        let on_window = Arc::clone(&on_window);
        let stats = Arc::clone(&source.stats);
        let held = Arc::clone(&stats.corrections_held);
        let published = Arc::clone(&stats);
        let kafka = source.kafka.clone();
        let faults = source.faults.clone();
        let registry = Arc::clone(&registry);
        let activity = activity.clone();
        let first_here = worker.index() % local_workers == 0;
        let dataflow = worker.next_dataflow_index();
        let durable = ProbeHandle::new();
        let closed = durable.clone();
        let windowing = settings.windowing;
        let log = Rc::new(RefCell::new(WindowLog::default()));
        let logged = Rc::clone(&log);
        worker.dataflow::<WindowId, _, _>(move |scope| {
            let sources = ProbeHandle::new();
            let counts =
                kafka_source(scope, source, durable.clone(), sources.clone()).probe_with(&sources);
            let summaries = window_summaries(counts, &settings, activity, Arc::clone(&held));
            write_windows(summaries, kafka, stats, faults)
                .inspect(move |written| {
                    // Corrections go to the topic and the viewers; the hook and the log see
                    // each window once, as it closes.
                    if !written.is_correction() {
                        on_window(&written.summary);
                        logged.borrow_mut().add(&written.summary);
                    }
                })
                .broadcast()
                .inspect(move |written| {
                    // Every process delivers every stream (its viewers may be on any hub it
                    // serves); its first worker keeps them, once.
                    if first_here {
                        let streams = registry.streams();
                        if written.is_correction() {
                            streams.publish_correction(&written.summary, &written.json);
                        } else {
                            streams.publish_json(&written.summary, &written.json);
                        }
                    }
                })
                .probe_with(&durable);
        });
        // Run until every source has stopped, then drop the dataflow rather than complete it:
        // completing would flush windows that are still open, and those belong to the next
        // run (their reactions are uncommitted).
        while stopped.load(Ordering::SeqCst) < local_workers {
            if !worker.step_or_park(Some(Duration::from_millis(100))) {
                break;
            }
            // Windows close (and are durable) even when no stream is active and none is
            // emitted: readiness follows that, not the windows published.
            if first_here {
                if let Some(open) = closed.with_frontier(|f| f.first().copied()) {
                    published.window_published(windowing.start_ms(open));
                    log.borrow_mut().passed(open);
                }
            }
        }
        worker.drop_dataflow(dataflow);
    })?;
    Ok(Live {
        guards: Some(guards),
        stop,
    })
}

/// The one log line per closed window (not per stream: there may be thousands), logged once
/// the durable frontier has passed the window. Only the worker the summaries reach has any.
#[derive(Default)]
struct WindowLog {
    window: Option<WindowId>,
    streams: usize,
    total: u64,
}

impl WindowLog {
    fn add(&mut self, summary: &WindowSummary) {
        if self.window != Some(summary.window) {
            self.flush();
            self.window = Some(summary.window);
        }
        self.streams += 1;
        self.total += summary.total;
    }

    /// Every window below `open` is complete.
    fn passed(&mut self, open: WindowId) {
        if self.window.is_some_and(|w| w < open) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Some(window) = self.window.take() {
            tracing::debug!(
                target: crate::WINDOW_LOG,
                window,
                streams = self.streams,
                total = self.total,
                "window closed: {} reactions in {} streams",
                self.total,
                self.streams,
            );
        }
        *self = WindowLog::default();
    }
}

impl Live {
    /// Leaves the workers behind without waiting: after a lost peer they wait forever, and
    /// the process is about to exit.
    pub fn abandon(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(guards) = self.guards.take() {
            // Dropping the guards would join the workers, which never finish.
            std::mem::forget(guards);
        }
    }

    /// Stops reading, lets the windows the watermark has closed be written, commits, and waits
    /// for the workers. Windows still open are left to the next run. Blocks: call it off the
    /// async runtime.
    pub fn stop_and_join(mut self) -> Result<(), crate::error::RunError> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(guards) = self.guards.take() else {
            return Ok(());
        };
        for (i, result) in guards.join().into_iter().enumerate() {
            result
                .map_err(|e| crate::error::RunError::Dataflow(format!("worker {i} failed: {e}")))?;
        }
        Ok(())
    }
}

/// A `Live` dropped without [`Live::stop_and_join`] (an error path, a failing test) still
/// stops its workers, but waits for them only briefly: timely's guards join on drop, and a
/// worker that never stops must not hang the process.
impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(guards) = self.guards.take() else {
            return;
        };
        let (joined, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("emostream-live-drop".into())
            .spawn(move || {
                drop(guards);
                let _ = joined.send(());
            });
        if spawned.is_ok() && wait.recv_timeout(DROP_WAIT).is_err() {
            tracing::warn!(
                "dataflow workers still running {DROP_WAIT:?} after the stop; leaving them"
            );
        }
    }
}
