//! `emostream run`: the whole system in one process: broker (embedded unless `--brokers`),
//! ingest API, live dataflow.
//!
//! [`System::start`] is what `main` and the integration tests both call.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataflows::{Topology, WindowSummary};
use tokio::sync::oneshot;
use warp::Filter;

use crate::cli::RunArgs;
use crate::dashboard;
use crate::delivery::{self, HubSettings, Registry};
use crate::ingest::Ingest;
use crate::kafka::embedded::EmbeddedBroker;
use crate::kafka::producer::{ProducerSettings, ReactionProducer};
use crate::kafka::resume::last_emitted_window;
use crate::kafka::source::{wall_clock_ms, SourceSettings};
use crate::kafka::topics::{ensure_topics, reactions_partitions};
use crate::kafka::KafkaSettings;
use crate::live::{self, Live, OnWindow};
use crate::metrics::{self, Metrics};
use crate::peers::{self, Membership, Peers};
use crate::rate_limit::UserRateLimit;
use crate::server::{self, SystemReadiness};
use crate::stats::Stats;

/// How long a stop waits for the dataflow's workers.
const DATAFLOW_STOP: Duration = Duration::from_secs(15);

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
    pub registry: Arc<Registry>,
    background: Vec<tokio::task::JoinHandle<()>>,
    producer: ReactionProducer,
    live: Option<Live>,
    http_stop: Option<oneshot::Sender<()>>,
    http_task: Option<tokio::task::JoinHandle<()>>,
    broker: Option<EmbeddedBroker>,
}

impl System {
    /// Starts everything; `on_window` also sees each durable window (tests use it).
    pub async fn start(args: &RunArgs, on_window: Option<OnWindow>) -> Result<System, String> {
        let placement = args.dataflow.placement()?;
        let deployment = placement.deployment.clone();
        let clustered = deployment.processes() > 1;
        if clustered && args.brokers.is_none() {
            return Err(
                "a cluster (--processes above 1) needs --brokers: the embedded broker lives inside one process"
                    .into(),
            );
        }
        let advertised = if clustered {
            Some(peers::advertised_http(
                &placement,
                args.advertise_http.as_deref(),
            )?)
        } else {
            None
        };
        if clustered {
            peers::peer_loss::exit_on_peer_loss(deployment.addresses.clone());
        }
        let mut kafka = KafkaSettings {
            brokers: String::new(),
            reactions_topic: args.reactions_topic.clone(),
            windows_topic: args.windows_topic.clone(),
            partitions: i32::from(args.partitions),
            group_id: args.group_id.clone(),
        };
        let broker = match &args.brokers {
            Some(brokers) => {
                kafka.brokers = brokers.clone();
                ensure_topics(&kafka, i32::from(args.replication)).await?;
                None
            }
            None => {
                let topics = [
                    (kafka.reactions_topic.clone(), kafka.partitions),
                    (kafka.windows_topic.clone(), 1),
                ];
                let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&topics))
                    .await
                    .map_err(|e| e.to_string())??;
                kafka.brokers = broker.bootstrap_servers().to_owned();
                Some(broker)
            }
        };

        let probe = kafka.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            reactions_partitions(&probe, Duration::from_secs(10))
        })
        .await
        .map_err(|e| e.to_string())??;
        if partitions != kafka.partitions {
            tracing::info!(
                partitions,
                "topic {} exists with {partitions} partitions (not --partitions {}): reading all of them",
                kafka.reactions_topic,
                kafka.partitions
            );
            kafka.partitions = partitions;
        }

        let stats = Arc::new(Stats::new(
            usize::try_from(kafka.partitions).unwrap_or(0),
            deployment.peers(),
        ));
        let settings = args.dataflow.settings();
        let resume_kafka = kafka.clone();
        let last = tokio::task::spawn_blocking(move || {
            last_emitted_window(&resume_kafka, Duration::from_secs(10))
        })
        .await
        .map_err(|e| e.to_string())??;
        let first_window = match last {
            Some(last) => {
                tracing::info!(
                    last,
                    "resuming after the last window in {}",
                    kafka.windows_topic
                );
                last + 1
            }
            None => settings.windowing.open_from(wall_clock_ms()),
        };

        let source = SourceSettings {
            kafka: kafka.clone(),
            windowing: settings.windowing,
            idle_ms: args.idle_ms,
            first_window,
            stats: Arc::clone(&stats),
            stop: Arc::new(AtomicBool::new(false)),
            failure: Arc::new(Mutex::new(None)),
            stopped: Arc::new(AtomicUsize::new(0)),
        };
        let delay_stats = Arc::clone(&stats);
        let log_window: OnWindow = Arc::new(move |summary: &WindowSummary| {
            let delay_ms = wall_clock_ms().saturating_sub(summary.end_ms);
            delay_stats
                .window_close_delay
                .observe(delay_ms as f64 / 1000.0);
            tracing::debug!(
                target: crate::WINDOW_LOG,
                window = summary.window,
                total = summary.total,
                "window closed: {}",
                summary.to_json()
            );
            if let Some(f) = &on_window {
                f(summary);
            }
        });
        raise_open_files_limit();
        let delivery = &args.delivery;
        let registry = Arc::new(Registry::new(
            Topology {
                clusters: delivery.clusters,
                subscribers: delivery.subscribers,
            },
            usize::try_from(delivery.subscriber_capacity).unwrap_or(usize::MAX),
            Duration::from_secs(delivery.client_ttl_secs),
            HubSettings {
                retention: usize::try_from(delivery.retention).unwrap_or(usize::MAX),
                client_queue: usize::try_from(delivery.client_queue).unwrap_or(usize::MAX),
            },
            Arc::clone(&stats),
        ));
        let members = Arc::new(Peers::new(Membership {
            deployment: deployment.clone(),
            http: advertised.clone().unwrap_or_default(),
        }));
        registry.share(Arc::clone(&members) as Arc<dyn delivery::SharedTree>);
        // In a cluster this waits for the other processes to connect: off the async threads.
        let live_deployment = deployment.clone();
        let live_registry = Arc::clone(&registry);
        let live = tokio::task::spawn_blocking(move || {
            live::start(
                &live_deployment,
                settings,
                source,
                log_window,
                live_registry,
            )
        })
        .await
        .map_err(|e| e.to_string())??;
        let keep_alive_every = Duration::from_secs(delivery.keep_alive_secs);
        let keep_alive_registry = Arc::clone(&registry);
        let keep_alive = tokio::spawn(async move {
            let mut every = tokio::time::interval(keep_alive_every);
            every.tick().await;
            loop {
                every.tick().await;
                keep_alive_registry.for_each(|hub| hub.keep_alive());
            }
        });
        let ttl = Duration::from_secs(delivery.client_ttl_secs);
        let expiring = Arc::clone(&registry);
        let following = Arc::clone(&members);
        let expire = tokio::spawn(async move {
            if !following.membership().is_leader() {
                // Aborted at shutdown with the other background tasks.
                peers::follow_the_leader(following, expiring, ttl, std::future::pending()).await;
                return;
            }
            let mut every = tokio::time::interval((ttl / 4).min(Duration::from_secs(10)));
            loop {
                every.tick().await;
                let released = expiring.expire(std::time::Instant::now());
                if released > 0 {
                    tracing::info!(
                        released,
                        "released clients without an event stream for {ttl:?}"
                    );
                }
            }
        });

        let producer = ReactionProducer::new(
            &kafka,
            &ProducerSettings {
                linger_ms: args.linger_ms,
                queue_messages: args.producer_queue,
                ack: args.ack,
            },
            Arc::clone(&stats),
        )?;
        // The first send otherwise pays for the topic's metadata (up to a second on some
        // brokers), and reactions that slow can miss their window.
        let warm = producer.clone();
        let warmed = tokio::task::spawn_blocking(move || warm.broker_reachable(WARM_UP))
            .await
            .unwrap_or(false);
        if !warmed {
            tracing::warn!(
                "the brokers did not answer the producer within {WARM_UP:?}; serving anyway (/readyz says when they do)"
            );
        }
        let rate_limit = args.rate_limit.map(|per_second| {
            let burst = args.rate_limit_burst.unwrap_or(per_second);
            Arc::new(UserRateLimit::new(per_second, burst))
        });
        if let Some(limit) = &rate_limit {
            let limit = Arc::clone(limit);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    limit.forget_idle();
                }
            });
        }
        let ingest = Ingest {
            producer: producer.clone(),
            rate_limit,
            stats: Arc::clone(&stats),
        };
        let failure = Arc::new(live_failure_probe(&live));
        let readiness = Arc::new(SystemReadiness {
            producer: producer.clone(),
            dataflow_failure: failure,
        });
        let listener = server::bind(args.http).await?;
        let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (http_stop, stopped) = oneshot::channel::<()>();
        let metrics = Metrics::new(Arc::clone(&stats), Arc::clone(&registry));
        let more_routes = peers::routes(members, Arc::clone(&registry))
            .or(delivery::routes::routes(Arc::clone(&registry), http_addr))
            .unify()
            .or(metrics::route(metrics))
            .unify()
            .or(dashboard::routes())
            .unify()
            .boxed();
        let http_task = tokio::spawn(server::serve(
            listener,
            ingest,
            more_routes,
            Arc::clone(&registry),
            readiness,
            async move {
                let _ = stopped.await;
            },
        ));
        let drops = tokio::spawn(crate::drop_log::warn_on_drops(Arc::clone(&stats)));
        Ok(System {
            http_addr,
            brokers: kafka.brokers.clone(),
            stats,
            registry,
            background: vec![keep_alive, expire, drops],
            producer,
            live: Some(live),
            http_stop: Some(http_stop),
            http_task: Some(http_task),
            broker,
        })
    }

    /// Why the dataflow stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.live.as_ref().and_then(Live::failure)
    }

    /// Stops taking reactions, flushes the producer, lets the dataflow write the windows its
    /// watermark has closed (open ones resume in the next run), and stops the broker. Time-boxed: a stuck step is logged and skipped.
    pub async fn shutdown(mut self) -> Result<(), String> {
        // Open event streams would keep the HTTP server's graceful shutdown waiting forever.
        for task in &self.background {
            task.abort();
        }
        self.registry.for_each(|hub| hub.close());
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.http_task.take() {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("HTTP connections still open after 5 s; closing anyway");
            }
        }
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5)))
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = flushed {
            tracing::warn!("reactions still queued at shutdown may be lost: {e}");
        }
        let mut result = Ok(());
        if let Some(live) = self.live.take() {
            // A plain thread, not `spawn_blocking`: if the workers never finish, the runtime
            // must still be able to shut down without waiting for this join.
            let (joined, join) = oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("emostream-stop".into())
                .spawn(move || {
                    let _ = joined.send(live.stop_and_join());
                });
            result = match spawned {
                Err(e) => Err(format!("cannot start the stop thread: {e}")),
                Ok(_) => match tokio::time::timeout(DATAFLOW_STOP, join).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err("the dataflow's stop thread failed".into()),
                    Err(_) => Err(format!(
                        "the dataflow did not finish within {DATAFLOW_STOP:?}"
                    )),
                },
            };
        }
        if let Some(broker) = self.broker.take() {
            let _ = tokio::task::spawn_blocking(move || drop(broker)).await;
        }
        result
    }
}

/// Raises the soft limit on open files to the hard one: each SSE client holds a socket.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(
            open_files = limit,
            "open-file limit {limit}: room for about {} concurrent connections",
            limit.saturating_sub(FILES_KEPT_FOR_THE_REST)
        ),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// Files the process needs besides client connections (broker sockets, logs, timely).
const FILES_KEPT_FOR_THE_REST: u64 = 200;

fn live_failure_probe(live: &Live) -> impl Fn() -> Option<String> + Send + Sync {
    let failure = live.failure_handle();
    move || failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Runs until Ctrl-C or SIGTERM, or until the dataflow fails.
pub fn run(args: &RunArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(async {
        let system = System::start(args, None).await?;
        let base = format!("http://{}", system.http_addr);
        println!("emostream is running");
        println!("  dashboard: {base}/");
        println!("  brokers:   {}{}", system.brokers, if args.brokers.is_none() { " (embedded)" } else { "" });
        println!("  send:      curl -X POST {base}/emoji -H 'content-type: application/json' -d '{{\"user_id\":\"me\",\"emoji_type\":\"🔥\"}}'");
        println!("  register:  curl -X POST {base}/clients   (answers with your events_url)");
        println!("  events:    curl -N {base}/clusters/0/subscribers/0/events");
        println!("  tree:      {base}/clusters");
        println!("  health:    {base}/healthz  {base}/readyz  metrics: {base}/metrics");
        println!("  windows:   logged here as they close, and written to topic {}", args.windows_topic);
        let failed = loop {
            tokio::select! {
                _ = shutdown_signal() => break None,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if let Some(f) = system.failure() { break Some(f) }
                }
            }
        };
        tracing::info!("shutting down");
        let result = system.shutdown().await;
        match failed {
            Some(f) => Err(format!("the dataflow failed: {f}")),
            None => result,
        }
    });
    // A blocking task stuck on the broker must not keep the process from exiting.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Parses `--rate-limit`'s value.
pub fn non_zero(s: &str) -> Result<NonZeroU32, String> {
    s.parse::<NonZeroU32>()
        .map_err(|_| format!("{s:?} is not a whole number above 0"))
}
