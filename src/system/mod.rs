//! The lifecycle of `emostream run`: what runs, and how it stops, in one place.
//!
//! [`System::start`] is a sequence of named steps over one [`RunConfig`]:
//!
//! 1. **config**: the flags, checked ([`RunConfig::from_args`]);
//! 2. **broker**: the embedded broker, or the external brokers with their topics
//!    ([`broker::connect`]);
//! 3. **resume**: the first window to emit, after the last one in the windows topic;
//! 4. **delivery**: the tree of hubs and who serves them;
//! 5. **dataflow**: this process's timely workers ([`crate::live`]); with several processes
//!    this waits for the others;
//! 6. **producer**: the reactions producer, warmed up;
//! 7. **tasks**: keep-alives, client expiry (or following the leader), rate-limit cleanup,
//!    drop warnings, each a named task under one token ([`Tasks`]);
//! 8. **http**: the listener, then the server.
//!
//! Every failure that stops windows from flowing is a [`Fault`]: `/readyz` answers 503 with
//! it, and [`run_until`] stops the system and returns it as the exit status.
//! [`System::shutdown`] stops in order, each step time-boxed: stop accepting connections, flush
//! the producer, stop the sources and let the closed windows be written and delivered (not
//! waited for after a fault that makes that impossible), end the event streams and let the
//! requests in progress finish, stop the tasks, stop the broker.

mod broker;
mod config;
mod faults;
mod readiness;
mod tasks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dataflows::wall_clock_ms;
use dataflows::WindowSummary;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warp::Filter;

pub use config::RunConfig;
pub use faults::{Component, Fault, Faults};
pub use tasks::Tasks;

use crate::error::RunError;
use crate::ingest::Ingest;
use crate::kafka::embedded::EmbeddedBroker;
use crate::kafka::producer::ReactionProducer;
use crate::kafka::KafkaSettings;
use crate::live::{Live, OnWindow};
use crate::rate_limit::KeyedRateLimit;
use crate::stats::Stats;
use crate::{dashboard, delivery, live, metrics, peers, server};

/// How long a stop waits for the HTTP server to finish the requests in progress.
const HTTP_STOP: Duration = Duration::from_secs(5);
/// How long a stop waits for the producer to deliver what is queued.
const FLUSH: Duration = Duration::from_secs(5);
/// How long a stop waits for the dataflow's workers.
const DATAFLOW_STOP: Duration = Duration::from_secs(15);
/// How long a stop waits for the background tasks.
const TASKS_STOP: Duration = Duration::from_secs(2);
/// How long start-up waits for the producer to learn the reactions topic.
const WARM_UP: Duration = Duration::from_secs(10);

/// A running system.
pub struct System {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The Kafka bootstrap servers in use.
    pub brokers: String,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The delivery tree.
    pub registry: Arc<delivery::Registry>,
    /// What has failed, if anything.
    faults: Faults,
    tasks: Tasks,
    http: Option<HttpServer>,
    producer: ReactionProducer,
    live: Option<Live>,
    broker: Option<EmbeddedBroker>,
}

/// The HTTP server task and the token that stops it accepting.
struct HttpServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl System {
    /// Starts everything; `on_window` also sees each durable window (tests use it).
    pub async fn start(
        args: &crate::cli::RunArgs,
        on_window: Option<OnWindow>,
    ) -> Result<System, RunError> {
        let config = RunConfig::from_args(args)?;
        let faults = Faults::new();
        if config.several_processes() {
            crate::peers::peer_loss::report_peer_loss(
                config.placement.deployment.addresses.clone(),
                faults.clone(),
            );
        }
        let (kafka, broker) = broker::connect(&config).await?;
        let stats = Arc::new(Stats::new(
            usize::try_from(kafka.partitions).unwrap_or(0),
            config.placement.deployment.peers(),
        ));
        let activity = broker::resume_point(&kafka, &config).await?;
        let (registry, peers) = delivery_tree(&config, &stats);
        let limits = crate::limits::Limits::from_args(&args.connections, raise_open_files_limit());
        let live = start_dataflow(
            &config, &kafka, activity, &stats, &registry, &faults, on_window,
        )
        .await?;
        let producer = broker::start_producer(&config, &kafka, &stats).await?;
        let tasks = Tasks::new(faults.clone());
        let rate_limits = spawn_tasks(&tasks, &config, &registry, &peers, &stats);
        spawn_marks(&tasks, &config, &kafka, &producer);
        let auth = match &config.auth {
            None => None,
            Some(auth) => {
                let auth =
                    crate::auth::Auth::new(auth, config.cluster_secret.clone(), Arc::clone(&stats))
                        .map(Arc::new)
                        .map_err(|e| RunError::Config(crate::cli::ConfigError(e.to_string())))?;
                crate::auth::reload_on_hangup(Arc::clone(&auth)).map_err(|e| {
                    RunError::Internal(format!("cannot listen for SIGHUP (key reloads): {e}"))
                })?;
                Some(auth)
            }
        };
        let ingest = Ingest {
            producer: producer.clone(),
            rate_limit: rate_limits.reactions,
            stats: Arc::clone(&stats),
            body_timeout: limits.header_timeout,
            auth,
        };
        let topics = readiness::TopicsSeen::default();
        let readiness = Arc::new(readiness::SystemReadiness::new(
            producer.clone(),
            faults.clone(),
            topics.clone(),
            Arc::clone(&stats),
            windows_late_after(&config),
        ));
        spawn_topics_watch(&tasks, &kafka, &producer, topics, &faults)?;
        let (http_addr, http) = open_http(
            &config,
            ingest,
            rate_limits.registrations,
            &registry,
            peers,
            &stats,
            readiness,
            limits,
        )
        .await?;
        Ok(System {
            http_addr,
            brokers: kafka.brokers.clone(),
            stats,
            registry,
            faults,
            tasks,
            http: Some(http),
            producer,
            live: Some(live),
            broker,
        })
    }

    /// The first fault, if something stopped windows from flowing.
    pub fn fault(&self) -> Option<Fault> {
        self.faults.first()
    }

    /// Where faults are reported; a clone reports into this system.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Resolves once a fault is reported.
    pub fn failed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.faults.failed().clone().cancelled_owned()
    }

    /// Stops in order, each step time-boxed (a stuck step is logged and skipped): stops
    /// accepting requests, flushes the producer, lets the dataflow write the windows its
    /// watermark has closed (open ones resume in the next run) and deliver them, ends the event
    /// streams, stops the background tasks and the broker.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        // Stop accepting at once; requests in progress finish while the rest drains.
        let http = self.http.take();
        if let Some(http) = &http {
            http.stop.cancel();
        }
        let producer = self.producer.clone();
        match tokio::task::spawn_blocking(move || producer.flush(FLUSH)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("reactions still queued at shutdown may be lost: {e}"),
            Err(e) => tracing::warn!("the producer flush failed: {e}"),
        }
        let mut result = Ok(());
        if let Some(live) = self.live.take() {
            result = stop_dataflow(live, &self.faults).await;
        }
        // The last windows are in the hubs: now the streams may end, and with them the
        // connections the HTTP server's graceful stop waits for.
        self.registry.for_each(|hub| hub.close());
        if let Some(http) = http {
            if tokio::time::timeout(HTTP_STOP, http.task).await.is_err() {
                tracing::warn!(
                    "HTTP requests still in progress after {HTTP_STOP:?}; closing anyway"
                );
            }
        }
        self.tasks.stop(TASKS_STOP).await;
        if let Some(broker) = self.broker.take() {
            let _ = tokio::task::spawn_blocking(move || drop(broker)).await;
        }
        match self.faults.decisive() {
            Some(fault) => Err(fault.into()),
            None => result,
        }
    }
}

/// Starts the system, runs until `shutdown` resolves or a fault stops it, then stops it in
/// order. Returns the fault, if one stopped it. `main` passes Ctrl-C and SIGTERM; tests pass
/// their own future.
pub async fn run_until(
    args: &crate::cli::RunArgs,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(&System),
) -> Result<(), RunError> {
    let system = System::start(args, None).await?;
    started(&system);
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        () = system.failed() => tracing::info!("stopping after a fault"),
    }
    system.shutdown().await
}

/// Step 4: the delivery tree, and the deployment's processes it is shared with (which one
/// serves each hub, who holds the registrations).
fn delivery_tree(
    config: &RunConfig,
    stats: &Arc<Stats>,
) -> (Arc<delivery::Registry>, Arc<peers::Peers>) {
    let registry = Arc::new(delivery::Registry::new(
        config.topology,
        config.subscriber_capacity,
        config.client_ttl,
        config.hubs,
        Arc::clone(stats),
    ));
    let peers = Arc::new(peers::Peers::new(peers::Membership {
        deployment: config.placement.deployment.clone(),
        http: config.advertised.clone().unwrap_or_default(),
        secret: config.cluster_secret.clone(),
    }));
    registry.share(Arc::clone(&peers) as Arc<dyn delivery::SharedTree>);
    (registry, peers)
}

/// Step 5: this process's workers, emitting from where `activity` says. With several processes this
/// waits for the others to connect, so it runs off the async threads.
async fn start_dataflow(
    config: &RunConfig,
    kafka: &KafkaSettings,
    activity: dataflows::operators::Activity,
    stats: &Arc<Stats>,
    registry: &Arc<delivery::Registry>,
    faults: &Faults,
    on_window: Option<OnWindow>,
) -> Result<Live, RunError> {
    let source = crate::kafka::source::SourceSettings {
        kafka: kafka.clone(),
        windowing: config.settings.windowing,
        idle_ms: config.idle_ms,
        producers: config.placement.deployment.processes(),
        first_window: activity.from.unwrap_or_default(),
        correction_windows: config.settings.correction_windows(),
        stats: Arc::clone(stats),
        stop: Arc::default(),
        faults: faults.clone(),
        stopped: Arc::default(),
    };
    let deployment = config.placement.deployment.clone();
    let settings = config.settings;
    let observe = observe_windows(Arc::clone(stats), on_window);
    let registry = Arc::clone(registry);
    let live = tokio::task::spawn_blocking(move || {
        live::start(&deployment, settings, source, activity, observe, registry)
    })
    .await
    .map_err(|e| RunError::Internal(format!("the dataflow's start failed: {e}")))??;
    Ok(live)
}

/// What every durable window passes through: its close delay, the test hook.
fn observe_windows(stats: Arc<Stats>, on_window: Option<OnWindow>) -> OnWindow {
    Arc::new(move |summary: &WindowSummary| {
        let delay_ms = wall_clock_ms().saturating_sub(summary.end_ms);
        stats.window_close_delay.observe(delay_ms as f64 / 1000.0);
        if let Some(f) = &on_window {
            f(summary);
        }
    })
}

/// Step 7 (the ingest's part): this process's watermark marks, into every partition, until the
/// stop. A mark the queue cannot take is skipped: windows wait for the next one.
fn spawn_marks(
    tasks: &Tasks,
    config: &RunConfig,
    kafka: &KafkaSettings,
    producer: &ReactionProducer,
) {
    let process = config.placement.deployment.process;
    let partitions = kafka.partitions;
    let producer = producer.clone();
    tasks.spawn("watermark-marks", async move {
        let mut every = tokio::time::interval(crate::kafka::marks::MARK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = producer.mark(process, partitions) {
                tracing::debug!("watermark marks not queued: {e}");
            }
        }
    });
}

/// The rate limits of the ingest (per user) and of registration (per client address).
struct RateLimits {
    reactions: Option<Arc<KeyedRateLimit>>,
    registrations: Option<Arc<KeyedRateLimit>>,
}

/// How long without a published window is too long: two windows, the lateness and the
/// idleness a window waits for, and 10 s for the trip through the broker.
fn windows_late_after(config: &RunConfig) -> Duration {
    let windowing = config.settings.windowing;
    Duration::from_millis(
        2 * windowing.window_ms.get() + windowing.lateness_ms + config.idle_ms + 10_000,
    )
}

/// A producer that confirmed nothing for this long while the brokers answer another client is
/// stuck, not waiting for a broker.
const PRODUCER_STUCK_AFTER: Duration = Duration::from_secs(60);

/// Why the producer is stuck, if it is: it has confirmed nothing for [`PRODUCER_STUCK_AFTER`]
/// (`stalled`) while the brokers answered the topics watch all along (`answering`).
/// librdkafka can leave partitions without a leader for good after a broker was fenced (its
/// issue 5430); a restart recovers, waiting does not.
fn producer_stuck(answering: Duration, stalled: Option<Duration>) -> Option<String> {
    let stalled = stalled?;
    (stalled >= PRODUCER_STUCK_AFTER && answering >= PRODUCER_STUCK_AFTER).then(|| {
        format!(
            "the reactions producer has confirmed nothing for {} s while the brokers answer: its partitions are stuck (librdkafka can lose a partition's leader for good after a broker was fenced); stopping so that a restart recovers",
            stalled.as_secs()
        )
    })
}

/// How often the topics are checked.
const TOPICS_WATCH_EVERY: Duration = Duration::from_secs(2);
/// Checks in a row that must find the same problem before it stops the run.
const TOPICS_WATCH_CONFIRMS: u32 = 3;

/// Step 7 (the broker's part): a topic gone or repartitioned under a running system is a
/// fault, not something to count on (after brokers restarted empty, say).
fn spawn_topics_watch(
    tasks: &Tasks,
    kafka: &KafkaSettings,
    producer: &ReactionProducer,
    topics: readiness::TopicsSeen,
    faults: &Faults,
) -> Result<(), RunError> {
    let check = Arc::new(crate::kafka::topics::TopicsCheck::new(kafka)?);
    let (producer, faults) = (producer.clone(), faults.clone());
    // Since when every check found the brokers answering and the topics as they were.
    let mut answering_since: Option<std::time::Instant> = None;
    tasks.spawn("topics-watch", async move {
        let mut every = tokio::time::interval(TOPICS_WATCH_EVERY);
        // One answer may come from a broker still rejoining its cluster: the same problem
        // seen this many times in a row is one.
        let mut seen = 0;
        loop {
            every.tick().await;
            let c = Arc::clone(&check);
            let Ok(checked) =
                tokio::task::spawn_blocking(move || c.problem(TOPICS_WATCH_EVERY)).await
            else {
                continue;
            };
            topics.set(checked.clone());
            if matches!(checked, Ok(None)) {
                let since = *answering_since.get_or_insert_with(std::time::Instant::now);
                if let Some(why) = producer_stuck(since.elapsed(), producer.stalled()) {
                    faults.report(Component::Broker, why);
                    return Ok(());
                }
            } else {
                answering_since = None;
            }
            let Ok(Some(problem)) = checked else {
                seen = 0;
                continue;
            };
            seen += 1;
            if seen >= TOPICS_WATCH_CONFIRMS {
                faults.report(
                    Component::Broker,
                    format!("{problem} (were the brokers restarted empty?): emostream stopped rather than read a log that is not the one it counted; start it again to begin afresh"),
                );
                return Ok(());
            }
        }
    });
    Ok(())
}

/// Step 7: the background tasks, the rate limits' among them.
fn spawn_tasks(
    tasks: &Tasks,
    config: &RunConfig,
    registry: &Arc<delivery::Registry>,
    peers: &Arc<peers::Peers>,
    stats: &Arc<Stats>,
) -> RateLimits {
    let keep_alive = config.keep_alive;
    let hubs = Arc::clone(registry);
    tasks.spawn("keep-alive", async move {
        let mut every = tokio::time::interval(keep_alive);
        every.tick().await;
        loop {
            every.tick().await;
            hubs.for_each(|hub| hub.keep_alive());
        }
    });
    let ttl = config.client_ttl;
    let clients = Arc::clone(registry);
    if peers.membership().is_leader() {
        tasks.spawn("expire-clients", async move {
            let mut every = tokio::time::interval((ttl / 4).min(Duration::from_secs(10)));
            loop {
                every.tick().await;
                let released = clients.expire(std::time::Instant::now());
                if released > 0 {
                    tracing::info!(
                        released,
                        "released clients without an event stream for {ttl:?}"
                    );
                }
                // Every tick, expiry or not: a hub held only by a stream is free once it ends.
                clients.shrink();
            }
        });
    } else {
        let peers = Arc::clone(peers);
        let stop = tasks.token();
        tasks.spawn("follow-the-leader", async move {
            peers::follow_the_leader(peers, clients, ttl, stop.cancelled_owned()).await;
            Ok(())
        });
    }
    let drops = Arc::clone(stats);
    tasks.spawn("drop-warnings", async move {
        crate::drop_log::warn_on_drops(drops).await;
        Ok(())
    });
    let limit =
        |name: &'static str, (per_second, burst): (std::num::NonZeroU32, std::num::NonZeroU32)| {
            let limit = Arc::new(KeyedRateLimit::new(
                per_second,
                burst,
                crate::rate_limit::MAX_KEYS,
            ));
            crate::rate_limit::spawn_forgetting(tasks, name, &limit);
            limit
        };
    RateLimits {
        reactions: config.rate_limit.map(|l| limit("rate-limit-cleanup", l)),
        registrations: config
            .registration_limit
            .map(|l| limit("registration-limit-cleanup", l)),
    }
}

/// Step 8: binds the HTTP address and starts serving every route.
#[allow(clippy::too_many_arguments)] // each is one of the server's parts, named at the call
async fn open_http(
    config: &RunConfig,
    ingest: Ingest,
    registration_limit: Option<Arc<KeyedRateLimit>>,
    registry: &Arc<delivery::Registry>,
    peers: Arc<peers::Peers>,
    stats: &Arc<Stats>,
    readiness: Arc<readiness::SystemReadiness>,
    limits: crate::limits::Limits,
) -> Result<(SocketAddr, HttpServer), RunError> {
    let cannot = |e: std::io::Error| {
        RunError::Bind(format!(
            "cannot listen on {}: {e}; choose another address with --http",
            config.http
        ))
    };
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(cannot)?;
    let http_addr = listener.local_addr().map_err(cannot)?;
    let public = config.advertise_http.clone().unwrap_or_else(|| {
        if http_addr.ip().is_unspecified() {
            tracing::warn!(
                "listening on {http_addr}: registrations' events_url will name that address, which clients elsewhere cannot reach; give --advertise-http"
            );
        }
        format!("http://{http_addr}")
    });
    let metrics = metrics::Metrics::new(Arc::clone(stats), Arc::clone(registry));
    let registration = delivery::routes::Registration {
        body_timeout: limits.header_timeout,
        limit: registration_limit,
        secret: config.cluster_secret.clone(),
        auth: ingest.auth.clone(),
        max_clients: config.max_clients,
    };
    let more_routes = peers::routes(peers, Arc::clone(registry), registration.clone())
        .or(delivery::routes::routes(
            Arc::clone(registry),
            public,
            registration,
        ))
        .unify()
        .or(metrics::route(metrics))
        .unify()
        .or(dashboard::routes())
        .unify()
        .or(crate::openapi::route())
        .unify()
        .boxed();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server::serve(
        listener,
        ingest,
        more_routes,
        Arc::clone(registry),
        readiness,
        limits,
        config.cors.clone(),
        Arc::clone(stats),
        stop.clone().cancelled_owned(),
    ));
    Ok((http_addr, HttpServer { stop, task }))
}

/// Stops the workers: the sources stop reading, the closed windows are written, the workers
/// end. Joined on a plain thread, time-boxed: after a lost peer they can never finish, and
/// the runtime must still be able to shut down without waiting for this join.
async fn stop_dataflow(live: Live, faults: &Faults) -> Result<(), RunError> {
    let cannot_drain = faults.undrainable().clone();
    if cannot_drain.is_cancelled() {
        live.abandon();
        return Ok(());
    }
    let (joined, join) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("emostream-stop".into())
        .spawn(move || {
            let _ = joined.send(live.stop_and_join());
        })
        .map_err(|e| RunError::Internal(format!("cannot start the stop thread: {e}")))?;
    tokio::select! {
        joined = tokio::time::timeout(DATAFLOW_STOP, join) => match joined {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RunError::Internal("the dataflow's stop thread failed".into())),
            Err(_) => Err(RunError::Dataflow(format!(
                "the dataflow did not finish within {DATAFLOW_STOP:?}"
            ))),
        },
        // A peer lost (or the windows producer gone) while draining: the workers can never
        // finish, and the fault is what the stop reports.
        () = cannot_drain.cancelled() => Ok(()),
    }
}

/// Raises the soft limit on open files to the hard one: each SSE client holds a socket.
fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(
                open_files = limit,
                "open-file limit {limit}: room for about {} concurrent connections",
                limit.saturating_sub(crate::limits::FILES_KEPT_FOR_THE_REST)
            );
            Some(limit)
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_is_stuck_only_when_the_brokers_answered_all_along() {
        let minute = Duration::from_secs(60);
        let less = Duration::from_secs(59);
        assert!(producer_stuck(minute, Some(minute)).is_some());
        assert!(producer_stuck(minute, None).is_none(), "it confirms");
        assert!(producer_stuck(minute, Some(less)).is_none(), "not for long");
        assert!(
            producer_stuck(less, Some(Duration::from_secs(300))).is_none(),
            "the brokers were away too: a stall, not a stuck producer"
        );
    }
}
