//! Issue 13, "a broker that goes away": `emostream run --brokers K` under `emostream load`
//! while Apache Kafka is paused (SIGSTOP) for 20 s and resumed, then killed (SIGKILL) and
//! started again on the same data.
//!
//! What emostream *should* do meanwhile is another issue's (integrity); this test is the
//! harness that records what it does: a timeline sampled every 250 ms (the HTTP answer to a
//! probe reaction, `/readyz`, the windows emitted so far), per phase and in figures (recovery
//! times, windows in the topic, the load generator's report), printed to stderr. It asserts
//! what the harness guarantees (the broker really stopped answering while paused, really came
//! back after the resume and the restart, the phases ran in order for the durations asked),
//! that emostream is alive at the end (`/healthz`) and stops cleanly, and that no window was
//! lost or repeated; with `--ack queued`, that every accepted reaction is in its window.
//!
//! Probe reactions carry a timestamp a minute old: they take the whole path (the producer,
//! the broker's acknowledgement with `--ack broker`) but their windows are closed, so the
//! dataflow counts them late and drops them, and the load generator's ledger stays exact.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Kafka, Seen};
use emostream::cli::{Cli, Command};
use emostream::load::{LoadArgs, Report};
use emostream::system::System;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use tokio::sync::watch;

/// How long each phase lasts (the boot after the kill lasts what the broker takes).
const BEFORE: Duration = Duration::from_secs(6);
const PAUSED: Duration = Duration::from_secs(20);
const RESUMED: Duration = Duration::from_secs(8);
const KILLED: Duration = Duration::from_secs(5);
const RESTARTED: Duration = Duration::from_secs(10);
/// What the broker's boot is assumed to take when sizing the load run.
const BOOT_GUESS: Duration = Duration::from_secs(6);
/// One sample of the timeline every...
const TICK: Duration = Duration::from_millis(250);
/// A probe reaction with no answer within this is "no answer".
const REACTION_TIMEOUT: Duration = Duration::from_secs(5);
/// `--ack-timeout-ms` of the `--ack broker` run: every request is answered within it and a
/// second.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// `/readyz` asks the broker for up to 2 s itself.
const READYZ_TIMEOUT: Duration = Duration::from_secs(4);
/// The whole test, Kafka's start included.
const WHOLE_TEST: Duration = Duration::from_secs(160);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Before,
    Paused,
    Resumed,
    Killed,
    Booting,
    Restarted,
}

const PHASES: [Phase; 6] = [
    Phase::Before,
    Phase::Paused,
    Phase::Resumed,
    Phase::Killed,
    Phase::Booting,
    Phase::Restarted,
];

/// When each phase began, from the test's start; `end` closes the last.
#[derive(Debug, Default)]
struct Marks {
    began: Vec<(Phase, Duration)>,
    end: Option<Duration>,
}

impl Marks {
    fn start_of(&self, phase: Phase) -> Duration {
        self.began.iter().find(|(p, _)| *p == phase).unwrap().1
    }

    fn end_of(&self, phase: Phase) -> Duration {
        let i = self.began.iter().position(|(p, _)| *p == phase).unwrap();
        self.began
            .get(i + 1)
            .map(|(_, at)| *at)
            .or(self.end)
            .unwrap()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Status(u16),
    /// No answer within the client's timeout.
    TimedOut,
    /// The connection failed (refused, reset).
    Refused(String),
}

#[derive(Debug, Clone)]
struct Probe {
    sent: Duration,
    took: Duration,
    answer: Answer,
}

/// Windows emitted by the system (its `on_window`) at a moment.
#[derive(Debug, Clone, Copy)]
struct WindowsSeen {
    at: Duration,
    count: usize,
}

#[derive(Debug, Default)]
struct Timeline {
    reactions: Vec<Probe>,
    readyz: Vec<Probe>,
    windows: Vec<WindowsSeen>,
}

type Shared = Arc<Mutex<Timeline>>;

fn load_args(target: &str, extra: &[&str]) -> LoadArgs {
    let mut argv = vec!["emostream", "load", "--target", target];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Load(args) => args,
        _ => unreachable!(),
    }
}

async fn probe(request: reqwest::RequestBuilder, t0: Instant) -> Probe {
    let sent = t0.elapsed();
    let began = Instant::now();
    let answer = match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            // The body is part of the answer (a 202's count, a 503's reason).
            match r.bytes().await {
                Ok(_) => Answer::Status(status),
                Err(e) if e.is_timeout() => Answer::TimedOut,
                Err(e) => Answer::Refused(e.to_string()),
            }
        }
        Err(e) if e.is_timeout() => Answer::TimedOut,
        Err(e) => Answer::Refused(e.to_string()),
    };
    Probe {
        sent,
        took: began.elapsed(),
        answer,
    }
}

/// Every [`TICK`] until `stop`: a probe reaction, a `/readyz`, and the windows emitted so
/// far. Each probe runs in its own task so a hanging one does not hold the timeline up.
fn sample(
    system: &System,
    seen: Seen,
    t0: Instant,
    timeline: Shared,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let base = format!("http://{}", system.http_addr);
    tokio::spawn(async move {
        let reactions = reqwest::Client::builder()
            .timeout(REACTION_TIMEOUT)
            .build()
            .unwrap();
        let readyz = reqwest::Client::builder()
            .timeout(READYZ_TIMEOUT)
            .build()
            .unwrap();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut probes = Vec::new();
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => break,
            }
            n += 1;
            let count = seen.lock().unwrap().len();
            timeline.lock().unwrap().windows.push(WindowsSeen {
                at: t0.elapsed(),
                count,
            });
            let (client, tl) = (reactions.clone(), Arc::clone(&timeline));
            let request = client.post(format!("{base}/emoji")).json(&json!({
                "user_id": format!("probe-{n}"),
                "emoji_type": "🛰",
                "timestamp": common::now_ms() - 60_000,
            }));
            probes.push(tokio::spawn(async move {
                let p = probe(request, t0).await;
                tl.lock().unwrap().reactions.push(p);
            }));
            let (client, tl) = (readyz.clone(), Arc::clone(&timeline));
            let request = client.get(format!("{base}/readyz"));
            probes.push(tokio::spawn(async move {
                let p = probe(request, t0).await;
                tl.lock().unwrap().readyz.push(p);
            }));
        }
        for p in probes {
            let _ = p.await;
        }
    })
}

/// A fresh client's metadata request: `Ok(took)` if the broker answered within `timeout`.
fn metadata(brokers: &str, timeout: Duration) -> Result<Duration, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    let began = Instant::now();
    consumer
        .fetch_metadata(None, timeout)
        .map(|_| began.elapsed())
        .map_err(|e| format!("{e} after {:?}", began.elapsed()))
}

/// A fresh producer writes one message to `outage-probe` (created on first use) and the
/// broker acknowledges it within `within`: the time that took.
async fn produce(brokers: &str, within: Duration) -> Result<Duration, String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", within.as_millis().to_string())
        .create()
        .map_err(|e| e.to_string())?;
    let began = Instant::now();
    producer
        .send(
            FutureRecord::to("outage-probe").key("k").payload("probe"),
            rdkafka::util::Timeout::After(within),
        )
        .await
        .map(|_| began.elapsed())
        .map_err(|(e, _)| format!("{e} after {:?}", began.elapsed()))
}

/// Sleeps until `at` from `t0`: the phases are stretches of wall time, that is the point.
async fn until(t0: Instant, at: Duration) {
    tokio::time::sleep_until((t0 + at).into()).await;
}

/// What one run found, for the summary.
struct Figures {
    marks: Marks,
    timeline: Timeline,
    report: Report,
    topic_windows: Vec<u64>,
    produce_before: Duration,
    produce_after_resume: Duration,
    produce_after_restart: Duration,
    paused_metadata: String,
    boot: Duration,
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn counts(probes: &[&Probe]) -> String {
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for p in probes {
        let key = match &p.answer {
            Answer::Status(s) => s.to_string(),
            Answer::TimedOut => "no answer".into(),
            Answer::Refused(_) => "failed".into(),
        };
        *by.entry(key).or_default() += 1;
    }
    let mut took: Vec<u128> = probes
        .iter()
        .filter(|p| matches!(p.answer, Answer::Status(_)))
        .map(|p| ms(p.took))
        .collect();
    took.sort_unstable();
    let latency = match (took.get(took.len() / 2), took.last()) {
        (Some(p50), Some(max)) => format!("answered in p50 {p50} ms, max {max} ms"),
        _ => "none answered".into(),
    };
    format!("{by:?}, {latency}")
}

/// The first moment at or after `from` when `probes` sent then got `status`: (sent, answered).
fn first_status(probes: &[Probe], from: Duration, status: u16) -> Option<(Duration, Duration)> {
    probes
        .iter()
        .filter(|p| p.sent >= from && p.answer == Answer::Status(status))
        .map(|p| (p.sent, p.sent + p.took))
        .min_by_key(|(_, answered)| *answered)
}

/// The first sample at or after `from` that shows more windows than the sample at `from`.
fn first_window_after(windows: &[WindowsSeen], from: Duration) -> Option<Duration> {
    let base = windows.iter().find(|w| w.at >= from)?.count;
    windows
        .iter()
        .find(|w| w.at >= from && w.count > base)
        .map(|w| w.at)
}

fn since(found: Option<(Duration, Duration)>, from: Duration) -> String {
    match found {
        Some((_, answered)) => format!("{} ms", ms(answered.saturating_sub(from))),
        None => "never".into(),
    }
}

fn print(ack: &str, f: &Figures) {
    let m = &f.marks;
    let tl = &f.timeline;
    eprintln!("=== outage --ack {ack}: timeline (t from the test's start) ===");
    for phase in PHASES {
        let (start, end) = (m.start_of(phase), m.end_of(phase));
        let within = |p: &&Probe| p.sent >= start && p.sent < end;
        let reactions: Vec<&Probe> = tl.reactions.iter().filter(within).collect();
        let readyz: Vec<&Probe> = tl.readyz.iter().filter(within).collect();
        let at = |t: Duration| {
            tl.windows
                .iter()
                .rev()
                .find(|w| w.at <= t)
                .map_or(0, |w| w.count)
        };
        eprintln!(
            "{phase:?}: {:.1} s → {:.1} s ({:.1} s)\n  reactions {}\n  /readyz   {}\n  windows emitted {}",
            start.as_secs_f64(),
            end.as_secs_f64(),
            (end - start).as_secs_f64(),
            counts(&reactions),
            counts(&readyz),
            at(end) - at(start),
        );
    }
    let resumed = m.start_of(Phase::Resumed);
    let restarted = m.start_of(Phase::Restarted);
    let killed = m.start_of(Phase::Killed);
    eprintln!("=== outage --ack {ack}: figures ===");
    eprintln!(
        "paused: a fresh client's metadata request: {}",
        f.paused_metadata
    );
    eprintln!(
        "a fresh producer's write acknowledged: before {} ms, after the resume {} ms, after the restart {} ms",
        ms(f.produce_before),
        ms(f.produce_after_resume),
        ms(f.produce_after_restart)
    );
    eprintln!(
        "after the resume: /readyz 200 in {}, a probe sent after it answered 202 in {}, first window emitted in {}",
        since(first_status(&tl.readyz, resumed, 200), resumed),
        since(first_status(&tl.reactions, resumed, 202), resumed),
        first_window_after(&tl.windows, resumed)
            .map_or("never".into(), |t| format!("{} ms", ms(t - resumed))),
    );
    eprintln!(
        "the broker's boot after the kill: {} ms; from the broker up: /readyz 200 in {}, a probe 202 in {}, first window emitted in {} (from the kill: {})",
        ms(f.boot),
        since(first_status(&tl.readyz, restarted, 200), restarted),
        since(first_status(&tl.reactions, restarted, 202), restarted),
        first_window_after(&tl.windows, restarted)
            .map_or("never".into(), |t| format!("{} ms", ms(t - restarted))),
        first_window_after(&tl.windows, killed)
            .map_or("never".into(), |t| format!("{} ms", ms(t - killed))),
    );
    let w = &f.topic_windows;
    let gaps: Vec<(u64, u64)> = w
        .windows(2)
        .filter(|p| p[1] != p[0] + 1)
        .map(|p| (p[0], p[1]))
        .collect();
    eprintln!(
        "emoji-windows: {} windows, {} → {}, breaks in the sequence (previous, next): {gaps:?}",
        w.len(),
        w.first().copied().unwrap_or_default(),
        w.last().copied().unwrap_or_default(),
    );
    let r = &f.report;
    eprintln!(
        "load: sent {}, accepted {}, refused {:?}, no answer {}, {} windows checked × {} clients: {} exact, {} lost, {} doubled, {} wrong; {} received, {} resyncs, {} reconnects",
        r.sent,
        r.accepted,
        r.refused,
        r.transport_errors,
        r.check.windows,
        r.sse_clients,
        r.check.exact,
        r.check.lost,
        r.check.doubled,
        r.check.wrong,
        r.windows_received,
        r.resyncs,
        r.reconnects
    );
    eprint!("{}", r.to_text());
}

async fn outage(ack: &str) {
    let kafka = Arc::new(tokio::task::spawn_blocking(Kafka::start).await.unwrap());
    let ack_timeout = ACK_TIMEOUT.as_millis().to_string();
    let (system, seen) = common::start(&[
        "--brokers",
        &kafka.brokers,
        "--ack",
        ack,
        "--ack-timeout-ms",
        &ack_timeout,
    ])
    .await;
    let brokers = kafka.brokers.clone();
    let target = format!("http://{}", system.http_addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let t0 = Instant::now();
    let mut marks = Marks::default();
    marks.began.push((Phase::Before, Duration::ZERO));
    let timeline: Shared = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let sampler = sample(
        &system,
        Arc::clone(&seen),
        t0,
        Arc::clone(&timeline),
        stopped,
    );
    let planned = BEFORE + PAUSED + RESUMED + KILLED + BOOT_GUESS + RESTARTED;
    let args = load_args(
        &target,
        &[
            "--rate",
            "100",
            "--duration",
            &planned.as_secs().to_string(),
            "--users",
            "100",
            "--connections",
            "4",
            "--sse-clients",
            "2",
            "--settle-secs",
            "20",
        ],
    );
    let load = tokio::spawn(async move { emostream::load::load(&args).await });

    // Before: the broker works, and the harness's own check of it works.
    let produce_before = produce(&brokers, Duration::from_secs(20)).await.unwrap();
    until(t0, BEFORE).await;

    // Paused: SIGSTOP, so connections stay open and nothing answers.
    kafka.pause();
    marks.began.push((Phase::Paused, t0.elapsed()));
    let b = brokers.clone();
    let paused_metadata = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(500)); // the broker is stopped already
        metadata(&b, Duration::from_secs(3))
    })
    .await
    .unwrap();
    assert!(
        paused_metadata.is_err(),
        "a paused broker answered a metadata request in {paused_metadata:?}"
    );
    let paused_metadata = paused_metadata.unwrap_err();
    until(t0, marks.start_of(Phase::Paused) + PAUSED).await;

    // Resumed: SIGCONT; a fresh client must be able to write again.
    kafka.resume();
    marks.began.push((Phase::Resumed, t0.elapsed()));
    let produce_after_resume = produce(&brokers, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("no write after the resume: {e}; see {:?}", kafka.log()));
    until(t0, marks.start_of(Phase::Resumed) + RESUMED).await;

    // Killed: SIGKILL, then down for a while.
    let k = Arc::clone(&kafka);
    tokio::task::spawn_blocking(move || k.kill()).await.unwrap();
    marks.began.push((Phase::Killed, t0.elapsed()));
    let b = brokers.clone();
    let killed_metadata = tokio::task::spawn_blocking(move || metadata(&b, Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(
        killed_metadata.is_err(),
        "a killed broker answered a metadata request: {killed_metadata:?}"
    );
    until(t0, marks.start_of(Phase::Killed) + KILLED).await;

    // Booting: the same data directory and address, until the broker answers.
    marks.began.push((Phase::Booting, t0.elapsed()));
    let k = Arc::clone(&kafka);
    tokio::task::spawn_blocking(move || k.restart())
        .await
        .unwrap();
    marks.began.push((Phase::Restarted, t0.elapsed()));
    let boot = marks.start_of(Phase::Restarted) - marks.start_of(Phase::Booting);
    let produce_after_restart = produce(&brokers, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("no write after the restart: {e}; see {:?}", kafka.log()));
    until(t0, marks.start_of(Phase::Restarted) + RESTARTED).await;
    marks.end = Some(t0.elapsed());
    stop.send(true).unwrap();
    sampler.await.unwrap();

    let report = load
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the load run could not be carried out: {e}"));

    // Still alive, and answering.
    let health = http
        .get(format!("{target}/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("/healthz after the outage: {e}"));
    assert_eq!(health.status(), 200, "/healthz after the outage");
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let ready = http.get(format!("{target}/readyz")).send().await.unwrap();
    eprintln!(
        "at the end: /readyz {} {}; fault: {:?}",
        ready.status(),
        ready.text().await.unwrap_or_default(),
        system.fault()
    );

    let b = brokers.clone();
    let topic_windows: Vec<u64> = tokio::task::spawn_blocking(move || {
        common::windows_topic(&b)
            .into_iter()
            .map(|w| w.window)
            .collect()
    })
    .await
    .unwrap();

    let timeline = std::mem::take(&mut *timeline.lock().unwrap());
    let figures = Figures {
        marks,
        timeline,
        report,
        topic_windows,
        produce_before,
        produce_after_resume,
        produce_after_restart,
        paused_metadata,
        boot,
    };
    print(ack, &figures);

    // The harness's guarantees: the phases in order, each for the time asked (with a margin
    // for a shared CPU), and a timeline that covers every phase.
    let m = &figures.marks;
    for pair in m.began.windows(2) {
        assert!(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1, "{m:?}");
    }
    for (phase, asked) in [
        (Phase::Before, BEFORE),
        (Phase::Paused, PAUSED),
        (Phase::Resumed, RESUMED),
        (Phase::Killed, KILLED),
        (Phase::Restarted, RESTARTED),
    ] {
        let lasted = m.end_of(phase) - m.start_of(phase);
        assert!(
            lasted >= asked && lasted < asked + Duration::from_secs(5),
            "{phase:?} lasted {lasted:?}, {asked:?} asked"
        );
    }
    for phase in PHASES {
        let (start, end) = (m.start_of(phase), m.end_of(phase));
        let sampled = figures
            .timeline
            .reactions
            .iter()
            .filter(|p| p.sent >= start && p.sent < end)
            .count();
        // A sample every 250 ms: at least half of them, whatever the load on the CPU.
        let asked = (end - start).as_millis() / TICK.as_millis();
        assert!(
            sampled as u128 >= asked / 2,
            "{phase:?}: {sampled} samples over {:?}",
            end - start
        );
    }
    assert_eq!(
        figures.timeline.readyz.len(),
        figures.timeline.reactions.len(),
        "every probe answered or timed out"
    );
    // With --ack broker a 202 needs the broker's acknowledgement: none while it is stopped
    // (a probe sent 0.5 s after the SIGSTOP and answered before the SIGCONT).
    if ack == "broker" {
        let (paused, resumed) = (m.start_of(Phase::Paused), m.start_of(Phase::Resumed));
        let during: Vec<&Probe> = figures
            .timeline
            .reactions
            .iter()
            .filter(|p| {
                p.sent >= paused + Duration::from_millis(500)
                    && p.sent + p.took < resumed
                    && p.answer == Answer::Status(202)
            })
            .collect();
        assert!(during.is_empty(), "202 from a stopped broker: {during:?}");
        // Every request is answered within the ack timeout (and a second): none hangs.
        let hung: Vec<&Probe> = figures
            .timeline
            .reactions
            .iter()
            .filter(|p| p.sent >= paused && p.sent < resumed)
            .filter(|p| {
                p.answer == Answer::TimedOut || p.took > ACK_TIMEOUT + Duration::from_millis(1500)
            })
            .collect();
        assert!(hung.is_empty(), "requests not answered in time: {hung:?}");
        // Once nothing was confirmed for the ack timeout, requests are refused at once, with
        // nothing queued.
        let slow: Vec<&Probe> = figures
            .timeline
            .reactions
            .iter()
            .filter(|p| p.sent >= paused + ACK_TIMEOUT * 2 && p.sent + p.took < resumed)
            .filter(|p| p.answer != Answer::Status(503) || p.took > Duration::from_millis(500))
            .collect();
        assert!(
            slow.is_empty(),
            "not refused at once during the stall: {slow:?}"
        );
    }
    // Readiness says the broker is away while it is.
    let (paused, resumed) = (m.start_of(Phase::Paused), m.start_of(Phase::Resumed));
    let ready_while_stopped: Vec<&Probe> = figures
        .timeline
        .readyz
        .iter()
        .filter(|p| p.sent >= paused + ACK_TIMEOUT * 2 && p.sent + p.took < resumed)
        .filter(|p| p.answer == Answer::Status(200))
        .collect();
    assert!(
        ready_while_stopped.is_empty(),
        "/readyz said ready while the broker was stopped: {ready_while_stopped:?}"
    );
    // Windows wait for what was accepted: a stall makes them later, never wrong. Every
    // reaction answered 202 is counted once in its window, on every client; with --ack broker
    // a request the client gave up on may still have been written, so only loss and repeats
    // are judged there.
    let check = &figures.report.check;
    assert_eq!(
        (check.lost, check.doubled),
        (0, 0),
        "windows lost or repeated: {check:?}"
    );
    if ack == "queued" {
        assert_eq!(
            check.exact,
            check.windows * figures.report.sse_clients as u64,
            "every reaction accepted with --ack queued is in its window: {check:?}"
        );
    }
    // A clean stop in bounded time: the dataflow drains the windows it can close.
    let stopped = tokio::time::timeout(Duration::from_secs(30), system.shutdown()).await;
    eprintln!("shutdown: {stopped:?}");
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "the system did not stop cleanly within 30 s: {stopped:?}"
    );
}

/// The two runs take turns: each measures phases of wall time, and two brokers, two systems
/// and two load generators on 2 cores would measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn bounded(ack: &'static str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(WHOLE_TEST, outage(ack))
        .await
        .unwrap_or_else(|_| panic!("the outage test (--ack {ack}) took over {WHOLE_TEST:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn a_paused_then_killed_broker_with_ack_queued() {
    bounded("queued").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn a_paused_then_killed_broker_with_ack_broker() {
    bounded("broker").await;
}
