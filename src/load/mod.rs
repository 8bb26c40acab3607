//! `emostream load`: a load generator that proves nothing was lost.
//!
//! It registers SSE clients and waits for their streams to open, sends reactions at the asked
//! rate from several connections (each reaction stamped with its send time), keeps a ledger of
//! what the system accepted, waits until every client has the window of the last reaction,
//! and checks every window on every client against the ledger.
//!
//! With `--streams K` the reactions and the clients are spread over K streams by a Zipf law
//! (see [`spread`]), and each client is checked against its own stream's part of the ledger.

mod follow;
mod ledger;
mod report;
mod send;
pub mod spread;

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use ledger::{check, Check, Inbox, Ledger, Receipt, StreamCheck, EMOJIS};
pub use report::{Report, StreamFigures};

use follow::{FollowStats, Registration};
use send::{Plan, Progress, Sent};

/// Flags of `emostream load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The system's HTTP address.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "EMOSTREAM_LOAD_TARGET"
    )]
    pub target: String,
    /// Reactions per second to send.
    #[arg(long, default_value_t = 1000.0, env = "EMOSTREAM_LOAD_RATE",
          value_parser = positive)]
    pub rate: f64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0, env = "EMOSTREAM_LOAD_DURATION",
          value_parser = positive)]
    pub duration: f64,
    /// Distinct users the reactions come from.
    #[arg(long, default_value_t = 1000, env = "EMOSTREAM_LOAD_USERS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub users: u64,
    /// SSE clients that register and follow the windows (each checked against the ledger).
    #[arg(long, default_value_t = 10, env = "EMOSTREAM_LOAD_SSE_CLIENTS",
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub sse_clients: u64,
    /// Reactions per request: 1 posts each to `/emoji`, more post batches to `/emoji/batch`.
    #[arg(long, default_value_t = 1, env = "EMOSTREAM_LOAD_BATCH",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch: u64,
    /// HTTP connections sending at once.
    #[arg(long, default_value_t = 16, env = "EMOSTREAM_LOAD_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub connections: u64,
    /// Longest wait, after sending, for every client to receive the last window.
    #[arg(long, default_value_t = 30.0, env = "EMOSTREAM_LOAD_SETTLE_SECS",
          value_parser = positive)]
    pub settle_secs: f64,
    /// Streams (live events) to spread the reactions and the SSE clients over: 1 is the
    /// default stream alone; more are named load-0 … load-{K-1}, hottest first.
    #[arg(long, default_value_t = 1, env = "EMOSTREAM_LOAD_STREAMS",
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub streams: u64,
    /// Zipf exponent of the spread over streams: stream k gets a share ∝ 1/(k+1)^S (0 is
    /// even).
    #[arg(long, default_value_t = 1.0, env = "EMOSTREAM_LOAD_STREAM_SKEW",
          value_parser = non_negative)]
    pub stream_skew: f64,
    /// The system's --stream-idle-windows: a stream quiet for longer gets no windows, so
    /// none are expected in that gap.
    #[arg(long, default_value_t = dataflows::DEFAULT_IDLE_WINDOWS,
          env = "EMOSTREAM_LOAD_STREAM_IDLE_WINDOWS")]
    pub stream_idle_windows: u64,
    /// The system's --window-ms. Sending starts on a window boundary, so the run's first window
    /// holds none of an earlier run's reactions (one just before would otherwise share it and
    /// make it look wrong), and late reactions are never stamped before that boundary.
    #[arg(long, default_value = "2000", env = "EMOSTREAM_LOAD_WINDOW_MS")]
    pub window_ms: std::num::NonZeroU64,
    /// Share of reactions (0 to 1) sent late: stamped --late-by-ms in the past, so they
    /// correct windows already emitted. The check is then against each window's final
    /// revision; keep --late-by-ms within the system's --correction-horizon-ms.
    #[arg(long, default_value_t = 0.0, env = "EMOSTREAM_LOAD_LATE_FRACTION",
          value_parser = fraction)]
    pub late_fraction: f64,
    /// How far in the past late reactions are stamped, in ms.
    #[arg(long, default_value_t = 4000, env = "EMOSTREAM_LOAD_LATE_BY_MS")]
    pub late_by_ms: u64,
    /// How the clients follow their streams: Server-Sent Events, or the WebSocket door.
    #[arg(long, value_enum, default_value_t = follow::Transport::Sse, env = "EMOSTREAM_LOAD_TRANSPORT")]
    pub transport: follow::Transport,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a share from 0 to 1 (e.g. 0.01 for 1%)"
        )),
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a number of 0 or more")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a number above 0")),
    }
}

/// Why a load run could not be carried out (a run that finds wrong windows is not an error:
/// its report says so).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `--target` cannot be used: fix the flag.
    #[error("{0}")]
    Target(String),
    /// The system under load refused or failed a request it should have served.
    #[error("{0}")]
    System(String),
    /// This machine: the async runtime, an HTTP client, a sender task.
    #[error("{0}")]
    Local(String),
}

/// Runs the load and prints the report; `Ok(true)` when it passed (see [`Report::passed`]).
pub fn run(args: &LoadArgs) -> Result<bool, LoadError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::Local(format!("cannot start the async runtime: {e}")))?;
    let report = runtime.block_on(load(args))?;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| LoadError::Local(format!("cannot encode the report: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.passed())
}

/// Runs the load and returns its report.
pub async fn load(args: &LoadArgs) -> Result<Report, LoadError> {
    let target = checked_target(&args.target)?;
    let (api, sse) = http_clients(args.connections)?;
    let streams = Streams::new(args);
    let registrations = register_all(&api, &target, &streams).await?;
    let mut followers =
        Followers::open(&api, &sse, &target, &streams, registrations, args.transport).await?;
    let Sending {
        sent,
        duration_s,
        ticker,
    } = run_senders(&api, args, &target, &streams, &followers.stats).await?;
    // Late reactions sent last correct their windows at the epoch they are read in, which
    // may be the window after the last one sent in: wait for it too.
    let margin_ms = if args.late_fraction > 0.0 { 1000 } else { 0 };
    settle(
        &sent.ledger,
        &followers.inboxes,
        margin_ms,
        Duration::from_secs_f64(args.settle_secs),
    )
    .await;
    ticker.abort();
    followers.stop(&api, &target).await;
    eprintln!();
    Ok(build_report(
        args, target, &streams, sent, duration_s, &followers,
    ))
}

/// The run's streams and who follows which.
struct Streams {
    /// Their names, hottest first.
    names: Arc<Vec<String>>,
    /// The choice of stream per reaction.
    zipf: Arc<spread::Zipf>,
    /// The stream (index into `names`) of each SSE client.
    of_client: Vec<usize>,
}

impl Streams {
    fn new(args: &LoadArgs) -> Streams {
        let count = args.streams as usize;
        Streams {
            names: Arc::new(spread::stream_names(count)),
            zipf: Arc::new(spread::Zipf::new(count, args.stream_skew)),
            of_client: spread::client_streams(args.sse_clients as usize, count, args.stream_skew),
        }
    }

    /// The stream a registration names: none for the default stream alone, so a run with
    /// one stream registers exactly as before streams existed.
    fn asked(&self, stream: usize) -> Option<&str> {
        if self.names.len() > 1 {
            self.names.get(stream).map(String::as_str)
        } else {
            None
        }
    }
}

/// `--target` without its trailing `/`, refused unless it is an http:// or https:// URL.
fn checked_target(target: &str) -> Result<String, LoadError> {
    let target = target.trim_end_matches('/').to_owned();
    if !target.starts_with("http://") && !target.starts_with("https://") {
        return Err(LoadError::Target(format!(
            "--target {target:?} must be an http:// URL, e.g. http://127.0.0.1:8080"
        )));
    }
    Ok(target)
}

/// The HTTP clients: one for API requests (pooled per sender, 10 s timeout) and one for SSE.
fn http_clients(connections: u64) -> Result<(reqwest::Client, reqwest::Client), LoadError> {
    let api = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(connections as usize)
        .build()
        .map_err(|e| LoadError::Local(format!("cannot build an HTTP client: {e}")))?;
    // Event streams stay open for the whole run: no overall timeout.
    let sse = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| LoadError::Local(format!("cannot build an HTTP client: {e}")))?;
    Ok((api, sse))
}

/// The registered SSE clients while they follow their streams.
struct Followers {
    /// One per SSE client, released when the run ends (or fails to start).
    registrations: Vec<Registration>,
    /// The windows each client received, in the order of `registrations`.
    inboxes: Vec<Arc<Mutex<Inbox>>>,
    /// Counts over every client, read by the progress line and the report.
    stats: Arc<FollowStats>,
    /// Turns true to stop the followers; dropping it would stop them too.
    stop: watch::Sender<bool>,
    /// The follower tasks, awaited on stop.
    tasks: Vec<JoinHandle<()>>,
}

impl Followers {
    /// Starts a follower per registration and waits up to 15 s for every stream to open; if
    /// one does not, stops them all and releases every registration.
    async fn open(
        api: &reqwest::Client,
        sse: &reqwest::Client,
        target: &str,
        streams: &Streams,
        registrations: Vec<Registration>,
        transport: follow::Transport,
    ) -> Result<Followers, LoadError> {
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(FollowStats::default());
        let inboxes: Vec<Arc<Mutex<Inbox>>> = streams
            .of_client
            .iter()
            .map(|s| Arc::new(Mutex::new(Inbox::new(*s))))
            .collect();
        let (connected, mut connections) = tokio::sync::mpsc::channel(registrations.len().max(1));
        let mut tasks = Vec::new();
        for ((registration, inbox), stream) in
            registrations.iter().zip(&inboxes).zip(&streams.of_client)
        {
            let followed = streams.names.get(*stream).cloned().unwrap_or_default();
            tasks.push(tokio::spawn(follow::follow(
                sse.clone(),
                transport,
                registration.clone(),
                followed,
                Arc::clone(inbox),
                Arc::clone(&stats),
                connected.clone(),
                stopped.clone(),
            )));
        }
        drop(connected);
        if let Err(e) = streams_opened(&mut connections, registrations.len()).await {
            let _ = stop.send(true);
            release_all(api, target, &registrations).await;
            return Err(e);
        }
        Ok(Followers {
            registrations,
            inboxes,
            stats,
            stop,
            tasks,
        })
    }

    /// Stops every follower, waits for each to end, then releases the registrations.
    async fn stop(&mut self, api: &reqwest::Client, target: &str) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        release_all(api, target, &self.registrations).await;
    }

    /// What each client received, in the order of the registrations.
    fn received(&self) -> Vec<Inbox> {
        self.inboxes
            .iter()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }
}

/// Waits up to 15 s for `count` followers to report their first stream open.
async fn streams_opened(
    connections: &mut tokio::sync::mpsc::Receiver<Result<(), String>>,
    count: usize,
) -> Result<(), LoadError> {
    let opened = tokio::time::timeout(Duration::from_secs(15), async {
        for _ in 0..count {
            match connections.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
                None => return Err("an SSE client stopped before connecting".to_owned()),
            }
        }
        Ok(())
    })
    .await;
    match opened {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(LoadError::System(format!(
            "an SSE client could not open its stream: {e}"
        ))),
        Err(_) => Err(LoadError::System(
            "the SSE clients' streams did not all open within 15 s".to_owned(),
        )),
    }
}

/// What the senders did, once the last one finished.
struct Sending {
    /// Every sender's results together.
    sent: Sent,
    /// Seconds from the start of sending to the end of the last sender.
    duration_s: f64,
    /// The progress line, still ticking through the settle wait.
    ticker: JoinHandle<()>,
}

/// Runs a sender per plan with a live progress line and waits for every sender to finish.
async fn run_senders(
    api: &reqwest::Client,
    args: &LoadArgs,
    target: &str,
    streams: &Streams,
    follow_stats: &Arc<FollowStats>,
) -> Result<Sending, LoadError> {
    let progress = Arc::new(Progress::default());
    let window_ms = i64::try_from(args.window_ms.get()).unwrap_or(i64::MAX);
    let now_ms = dataflows::wall_clock_ms();
    let wait_ms = window_ms - now_ms.rem_euclid(window_ms);
    tokio::time::sleep(Duration::from_millis(wait_ms.unsigned_abs())).await;
    let not_before_ms = now_ms.saturating_add(wait_ms);
    let started = Instant::now();
    let tasks: Vec<_> = plans(args, target, streams, started, not_before_ms)
        .into_iter()
        .map(|plan| tokio::spawn(send::send(api.clone(), plan, Arc::clone(&progress))))
        .collect();
    let ticker = tokio::spawn(show_progress(
        Arc::clone(&progress),
        Arc::clone(follow_stats),
        started,
        args.duration,
    ));
    let mut sent = Sent::empty();
    for task in tasks {
        match task.await {
            Ok(part) => sent.absorb(part),
            Err(e) => return Err(LoadError::Local(format!("a sender failed: {e}"))),
        }
    }
    Ok(Sending {
        sent,
        duration_s: started.elapsed().as_secs_f64(),
        ticker,
    })
}

/// One plan per sender: at most `--connections` senders share the asked rate, each sending
/// whole batches from `started` for `--duration` seconds.
fn plans(
    args: &LoadArgs,
    target: &str,
    streams: &Streams,
    started: Instant,
    not_before_ms: i64,
) -> Vec<Plan> {
    let until = started + Duration::from_secs_f64(args.duration);
    let batch = args.batch as usize;
    let requests_per_s = args.rate / batch as f64;
    let senders = (args.connections as f64)
        .min(requests_per_s.ceil())
        .max(1.0) as u64;
    let every = Duration::from_secs_f64(senders as f64 / requests_per_s);
    (0..senders)
        .map(|index| Plan {
            target: target.to_owned(),
            batch,
            every,
            // Spread the senders' ticks over one period.
            first_at: started + every.mul_f64(index as f64 / senders as f64),
            until,
            users: args.users,
            index,
            streams: Arc::clone(&streams.names),
            zipf: Arc::clone(&streams.zipf),
            late_fraction: args.late_fraction,
            late_by_ms: i64::try_from(args.late_by_ms).unwrap_or(i64::MAX),
            not_before_ms,
        })
        .collect()
}

/// Checks every client's windows against the ledger and gathers the run's figures.
fn build_report(
    args: &LoadArgs,
    target: String,
    streams: &Streams,
    sent: Sent,
    duration_s: f64,
    followers: &Followers,
) -> Report {
    let received = followers.received();
    let window_ms = window_ms_of(&received);
    let check = match window_ms {
        Some(ms) => check(
            &sent.ledger,
            &streams.names,
            ms,
            args.stream_idle_windows,
            &received,
        ),
        // No client received any window: nothing to check (the report says so), but the
        // clients per stream still count.
        None => {
            let mut streams_checked = vec![StreamCheck::default(); streams.names.len()];
            for s in &streams.of_client {
                if let Some(c) = streams_checked.get_mut(*s) {
                    c.clients += 1;
                }
            }
            Check {
                streams: streams_checked,
                ..Check::default()
            }
        }
    };
    let window_latency = window_latency(&sent.ledger, window_ms, &received);
    let accepted = sent.ledger.reactions();
    let per_stream: Vec<StreamFigures> = streams
        .names
        .iter()
        .enumerate()
        .map(|(k, name)| StreamFigures {
            stream_id: name.clone(),
            sent: sent.sent_by_stream.get(k).copied().unwrap_or(0),
            accepted: sent.ledger.stream_reactions(k),
            check: check.streams.get(k).cloned().unwrap_or_default(),
        })
        .collect();
    let watched: Vec<&StreamFigures> = per_stream.iter().filter(|s| s.check.clients > 0).collect();
    let stats = &followers.stats;
    Report {
        target,
        duration_s,
        rate_asked: args.rate,
        batch: args.batch as usize,
        users: args.users,
        sse_clients: followers.registrations.len(),
        sse_subscribers: followers
            .registrations
            .iter()
            .map(|r| (r.cluster, r.subscriber))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        sent: sent.sent,
        sent_per_s: sent.sent as f64 / duration_s,
        accepted,
        accepted_per_s: accepted as f64 / duration_s,
        refused: sent.refused,
        transport_errors: sent.transport_errors,
        first_transport_error: sent.first_error,
        http_latency_ms: report::Percentiles::of_us(&sent.latency_us),
        window_latency_ms: window_latency,
        windows_received: stats.windows.load(Ordering::Relaxed),
        resyncs: stats.resyncs.load(Ordering::Relaxed),
        corrections: stats.corrections.load(Ordering::Relaxed),
        reconnects: stats.reconnects.load(Ordering::Relaxed),
        malformed_events: stats.malformed.load(Ordering::Relaxed),
        first_malformed_event: stats
            .first_malformed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        exact: check.is_exact() && stats.malformed.load(Ordering::Relaxed) == 0,
        check,
        streams: streams.names.len(),
        stream_skew: args.stream_skew,
        streams_watched: watched.len(),
        unwatched_accepted: accepted - watched.iter().map(|s| s.accepted).sum::<u64>(),
        per_stream,
    }
}

/// Registers a client per entry of `streams.of_client`, for its stream; on a failure releases
/// the ones registered.
async fn register_all(
    api: &reqwest::Client,
    target: &str,
    streams: &Streams,
) -> Result<Vec<Registration>, LoadError> {
    let mut registrations = Vec::with_capacity(streams.of_client.len());
    for stream in &streams.of_client {
        match follow::register(api, target, streams.asked(*stream)).await {
            Ok(r) => registrations.push(r),
            Err(e) => {
                release_all(api, target, &registrations).await;
                return Err(LoadError::System(format!(
                    "cannot register an SSE client: {e}"
                )));
            }
        }
    }
    Ok(registrations)
}

async fn release_all(api: &reqwest::Client, target: &str, registrations: &[Registration]) {
    for r in registrations {
        follow::release(api, target, r).await;
    }
}

/// The window length, from any window received.
fn window_ms_of(received: &[Inbox]) -> Option<i64> {
    received
        .iter()
        .flat_map(|inbox| &inbox.receipts)
        .map(|r| r.end_ms - r.start_ms)
        .find(|ms| *ms > 0)
}

/// Waits until every client holds a window of its stream past that stream's last accepted
/// reaction (at once for a stream that got none), or `longest`.
async fn settle(ledger: &Ledger, inboxes: &[Arc<Mutex<Inbox>>], margin_ms: i64, longest: Duration) {
    let deadline = Instant::now() + longest;
    while Instant::now() < deadline {
        let done = inboxes.iter().all(|inbox| {
            let inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
            match ledger.stream_span(inbox.stream) {
                Some((_, last_ms)) => inbox
                    .receipts
                    .iter()
                    .any(|r| r.end_ms > last_ms + margin_ms),
                None => true,
            }
        });
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// For every reaction and every client of its stream that received its window once: receipt
/// time less send time.
fn window_latency(
    ledger: &Ledger,
    window_ms: Option<i64>,
    received: &[Inbox],
) -> report::Percentiles {
    let mut h = send::latency_histogram();
    if let Some(window_ms) = window_ms {
        for inbox in received {
            let Some((first, last)) = ledger.stream_span(inbox.stream) else {
                continue;
            };
            let (first, last) = (first.div_euclid(window_ms), last.div_euclid(window_ms));
            // A window's first copy: a correction comes later by design.
            for r in inbox
                .receipts
                .iter()
                .filter(|r| !r.correction && (first..=last).contains(&r.window))
            {
                for (ts, n) in ledger.times(inbox.stream, r.start_ms, r.end_ms) {
                    let us = (r.at_ms - ts).max(0) as u64 * 1000;
                    let _ = h.record_n(us.max(1), n);
                }
            }
        }
    }
    report::Percentiles::of_us(&h)
}

/// A live line on stderr: in place on a terminal, every 5 s otherwise.
async fn show_progress(
    progress: Arc<Progress>,
    follow: Arc<FollowStats>,
    started: Instant,
    duration: f64,
) {
    let terminal = std::io::stderr().is_terminal();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut tick = 0u64;
    loop {
        every.tick().await;
        tick += 1;
        let elapsed = started.elapsed().as_secs_f64();
        let sent = progress.sent.load(Ordering::Relaxed);
        let line = format!(
            "{:>5.1}/{duration:.0} s  sent {sent} ({:.0}/s)  accepted {}  failed requests {}  windows received {}",
            elapsed.min(duration),
            sent as f64 / elapsed.clamp(0.001, duration),
            progress.accepted.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
            follow.windows.load(Ordering::Relaxed),
        );
        if terminal {
            eprint!("\r{line}   ");
        } else if tick.is_multiple_of(5) {
            eprintln!("{line}");
        }
    }
}
