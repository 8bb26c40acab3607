//! `kill -9` under load (issue 13), against Apache Kafka: an `emostream run --ack broker`
//! process killed with SIGKILL three times while a client keeps posting batches, and restarted
//! each time with the same flags, writes every window once, none missing, and each window
//! counts every reaction acknowledged with a 202 and at most those the client got no answer for.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_contiguous, free_port, now_ms, poll_until_blocking, windows_topic, Kafka};
use dataflows::WindowSummary;
use serde_json::{json, Value};

const WINDOW_MS: i64 = 2000;
const GROUP: &str = "kill-under-load";
/// When the kills come, in ms of load, and where in a 2 s window each lands (ms after the
/// window's start): just after a boundary (the previous window still open: lateness), mid
/// window (the previous one written), late in the window.
const KILLS: [(u64, i64); 3] = [(3000, 150), (6500, 950), (10_000, 1650)];
/// Load after the last restart, before the sender stops.
const TAIL: Duration = Duration::from_secs(3);
/// A request the process does not answer within this is "no answer".
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The process under test; killed when dropped, so a failing test leaves nothing running.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kill");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spawn(brokers: &str, port: u16, run: usize) -> Running {
    let log = log_dir().join(format!("run{run}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_emostream"))
        .args(["run", "--brokers", brokers, "--ack", "broker"])
        .args(["--http", &format!("127.0.0.1:{port}"), "--workers", "2"])
        .args(["--idle-ms", "200", "--linger-ms", "20", "--group-id", GROUP])
        .env("EMOSTREAM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Running { child, log }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn get(rt: &tokio::runtime::Runtime, port: u16, path: &str) -> Result<(u16, String), String> {
    rt.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(|e| e.to_string())?))
    })
}

fn wait_ready(rt: &tokio::runtime::Runtime, running: &mut Running, port: u16) {
    poll_until_blocking("emostream is ready", Duration::from_secs(40), || {
        if let Some(status) = running.child.try_wait().unwrap() {
            panic!(
                "emostream exited ({status}) before it was ready; log: {}",
                running.log.display()
            );
        }
        match get(rt, port, "/readyz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("/readyz: {other:?}")),
        }
    });
}

/// The counters of one run that say where reactions went, read from `/metrics`.
fn counters(rt: &tokio::runtime::Runtime, port: u16) -> BTreeMap<String, f64> {
    const WANTED: [&str; 7] = [
        "emostream_reactions_accepted_total",
        "emostream_reactions_produced_total",
        "emostream_reactions_consumed_total",
        "emostream_late_reactions_total",
        "emostream_invalid_messages_total",
        "emostream_lost_messages_total",
        "emostream_windows_emitted_total",
    ];
    let Ok((200, text)) = get(rt, port, "/metrics") else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or_default();
        if WANTED.contains(&name) {
            *out.entry(name.trim_start_matches("emostream_").to_owned())
                .or_default() += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    out
}

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    NoAnswer,
}

struct Sent {
    ts: i64,
    reactions: u64,
    outcome: Outcome,
}

/// Posts a batch of 20 to 50 reactions every 20 to 50 ms until `stop`, each stamped with the
/// client's clock at send time. Any answer but a 202 for the whole batch fails the test.
fn sender(port: u16, stop: Arc<AtomicBool>) -> Vec<Sent> {
    const EMOJIS: [&str; 4] = ["🔥", "😂", "❤️", "👏"];
    let rt = runtime();
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/emoji/batch");
    let mut sent = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |below: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % below
    };
    let mut request = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let n = 20 + next(31) as usize;
        let ts = now_ms();
        let body: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "user_id": format!("u{request}-{i}"),
                    "emoji_type": EMOJIS[(request as usize + i) % EMOJIS.len()],
                    "timestamp": ts,
                })
            })
            .collect();
        let answer = rt.block_on(async {
            let response = client.post(&url).json(&body).send().await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        });
        let outcome = match answer {
            Ok((status, text)) => {
                assert_eq!(
                    (status.as_u16(), text.clone()),
                    (202, json!({"accepted": n}).to_string()),
                    "request {request} at {ts}: only a 202 for the whole batch is expected"
                );
                Outcome::Accepted
            }
            Err(_) => Outcome::NoAnswer,
        };
        sent.push(Sent {
            ts,
            reactions: n as u64,
            outcome,
        });
        request += 1;
        thread::sleep(Duration::from_millis(20 + next(31)));
    }
    sent
}

fn sigterm(running: &mut Running) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM emostream");
    poll_until_blocking(
        "emostream stops on SIGTERM",
        Duration::from_secs(30),
        || {
            running
                .child
                .try_wait()
                .unwrap()
                .ok_or_else(|| "still running".to_owned())
        },
    )
}

/// The next moment at or after `at` that lies `phase_ms` into a window, on the wall clock.
fn at_phase(at: Instant, phase_ms: i64) -> Instant {
    let wall = now_ms() + at.saturating_duration_since(Instant::now()).as_millis() as i64;
    let into = wall.rem_euclid(WINDOW_MS);
    let wait = (phase_ms - into).rem_euclid(WINDOW_MS);
    at + Duration::from_millis(wait as u64)
}

#[test]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
fn kill_9_under_load_loses_and_repeats_no_acknowledged_reaction() {
    let kafka = Kafka::start();
    let brokers = kafka.brokers.clone();
    let port = free_port();
    let rt = runtime();

    let mut running = spawn(&brokers, port, 0);
    wait_ready(&rt, &mut running, port);

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || sender(port, stop))
    };
    let load_start = Instant::now();
    let mut restarts = Vec::new();
    let mut runs = Vec::new();
    for (i, (after_ms, phase_ms)) in KILLS.into_iter().enumerate() {
        let planned = load_start + Duration::from_millis(after_ms);
        // At least a second of load on each run, so each kill finds reactions in flight.
        let earliest = Instant::now() + Duration::from_secs(1);
        let when = at_phase(planned.max(earliest), phase_ms);
        thread::sleep(when.saturating_duration_since(Instant::now()));
        runs.push(counters(&rt, port));
        let killed_at = Instant::now();
        let into_window = now_ms().rem_euclid(WINDOW_MS);
        running.child.kill().unwrap(); // SIGKILL
        running.child.wait().unwrap();
        running = spawn(&brokers, port, i + 1);
        wait_ready(&rt, &mut running, port);
        let took = killed_at.elapsed();
        eprintln!(
            "kill {}: at {:.1} s of load, {into_window} ms into a window; ready again after {took:.2?}",
            i + 1,
            killed_at.duration_since(load_start).as_secs_f64()
        );
        restarts.push((into_window, took));
    }
    thread::sleep(TAIL);
    stop.store(true, Ordering::SeqCst);
    let sent = load.join().expect("the sender saw only 202s or no answer");

    let mut accepted: BTreeMap<u64, u64> = BTreeMap::new();
    let mut no_answer: BTreeMap<u64, u64> = BTreeMap::new();
    for s in &sent {
        let window = (s.ts / WINDOW_MS) as u64;
        let per = match s.outcome {
            Outcome::Accepted => &mut accepted,
            Outcome::NoAnswer => &mut no_answer,
        };
        *per.entry(window).or_default() += s.reactions;
    }
    let last_reaction_window = sent
        .iter()
        .map(|s| (s.ts / WINDOW_MS) as u64)
        .max()
        .unwrap();
    poll_until_blocking(
        &format!(
            "the windows topic holds window {} (after the last reaction's)",
            last_reaction_window + 1
        ),
        Duration::from_secs(30),
        || {
            let last = windows_topic(&brokers).last().map(|w| w.window);
            if last >= Some(last_reaction_window + 1) {
                Ok(())
            } else {
                Err(format!("last window {last:?}"))
            }
        },
    );
    runs.push(counters(&rt, port));
    let status = sigterm(&mut running);
    assert!(
        status.success(),
        "SIGTERM stops emostream with status 0, not {status}; log: {}",
        running.log.display()
    );

    let topic: Vec<WindowSummary> = windows_topic(&brokers);
    let ids: BTreeSet<u64> = topic.iter().map(|w| w.window).collect();
    assert_eq!(ids.len(), topic.len(), "no window written twice");
    assert_contiguous(&topic);
    let (first, last) = (topic[0].window, topic[topic.len() - 1].window);
    let counted: BTreeMap<u64, u64> = topic.iter().map(|w| (w.window, w.total)).collect();
    let sent_windows: BTreeSet<u64> = accepted.keys().chain(no_answer.keys()).copied().collect();
    for w in &sent_windows {
        assert!(
            (first..=last).contains(w),
            "window {w} of a reaction sent is in the windows topic ({first}..={last})"
        );
    }
    let mut wrong = Vec::new();
    for (&w, &c) in &counted {
        let a = accepted.get(&w).copied().unwrap_or(0);
        let n = no_answer.get(&w).copied().unwrap_or(0);
        if c < a || c > a + n {
            wrong.push(format!(
                "window {w}: counted {c}, accepted {a}, no answer {n}"
            ));
        }
    }

    let total_accepted: u64 = accepted.values().sum();
    let total_no_answer: u64 = no_answer.values().sum();
    let total_counted: u64 = counted.values().sum();
    let requests_no_answer = sent
        .iter()
        .filter(|s| s.outcome == Outcome::NoAnswer)
        .count();
    eprintln!(
        "kill -9 under load: {} requests, {total_accepted} reactions accepted (202), \
         {total_no_answer} with no answer ({requests_no_answer} requests), {total_counted} counted; \
         restarts after SIGKILL ready in {:?}; {} windows checked ({first}..={last})",
        sent.len(),
        restarts
            .iter()
            .map(|(into, took)| format!("{:.2} s (killed {into} ms into a window)", took.as_secs_f64()))
            .collect::<Vec<_>>(),
        topic.len()
    );
    for (i, run) in runs.iter().enumerate() {
        eprintln!("run {i} counters at its end: {run:?}");
    }
    assert!(
        wrong.is_empty(),
        "accepted(k) <= counted(k) <= accepted(k) + no_answer(k) fails:\n{}\n(logs in {})",
        wrong.join("\n"),
        log_dir().display()
    );
    assert!(
        total_accepted > 0 && requests_no_answer > 0,
        "the kills landed under load"
    );
}
