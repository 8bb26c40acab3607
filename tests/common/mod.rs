//! Helpers shared by the integration tests: starting a system, posting reactions, reading
//! windows back; an SSE follower ([`sse`]), waits with deadlines ([`wait`]), free ports
//! ([`ports`]) and Apache Kafka ([`kafka`]).
#![allow(dead_code, unused_imports, clippy::unwrap_used)] // each test binary uses a part; a failure is the test failing

pub mod browser;
pub mod kafka;
pub mod ports;
pub mod slow;
pub mod sse;
pub mod wait;
pub mod ws;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use kafka::Kafka;
pub use ports::{free_port, free_ports};
pub use sse::Follower;
pub use wait::{poll_until, poll_until_blocking, wait_until, PATIENCE};

use clap::Parser;
use dataflows::WindowSummary;
use emostream::cli::{Cli, Command, RunArgs};
use emostream::system::System;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

pub fn run_args(extra: &[&str]) -> RunArgs {
    let mut argv = vec!["emostream", "run", "--workers", "2"];
    if !extra.contains(&"--http") {
        argv.extend_from_slice(&["--http", "127.0.0.1:0"]);
    }
    // Shorter idleness than the default closes windows sooner; enough is left for the
    // trip through the broker while several test systems share the CPU.
    if !extra.contains(&"--idle-ms") {
        argv.extend_from_slice(&["--idle-ms", "700"]);
    }
    if !extra.contains(&"--linger-ms") {
        argv.extend_from_slice(&["--linger-ms", "20"]);
    }
    argv.extend_from_slice(extra);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Run(args) => *args,
        _ => unreachable!(),
    }
}

pub type Seen = Arc<Mutex<Vec<WindowSummary>>>;

pub async fn start(extra: &[&str]) -> (System, Seen) {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    let system = System::start(
        &run_args(extra),
        Some(Arc::new(move |s: &WindowSummary| {
            sink.lock().unwrap().push(s.clone())
        })),
    )
    .await
    .unwrap();
    (system, seen)
}

/// An embedded broker of its own (for tests that restart a system on the same log) with the
/// reactions topic of `reactions` partitions and the windows topic of `windows`, and its
/// bootstrap address.
pub async fn own_broker(
    reactions: i32,
    windows: i32,
) -> (emostream::kafka::embedded::EmbeddedBroker, String) {
    let topics = [
        ("emoji-reactions".to_string(), reactions),
        ("emoji-windows".to_string(), windows),
    ];
    let broker = tokio::task::spawn_blocking(move || {
        emostream::kafka::embedded::EmbeddedBroker::start(&topics)
    })
    .await
    .unwrap()
    .unwrap();
    let brokers = broker.bootstrap_servers().to_string();
    (broker, brokers)
}

/// GETs `url`, which must answer 200 with JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}

/// The value of the sample `sample` (`name{labels}`, as the text format writes it) in the
/// `/metrics` of the server at `addr`.
pub async fn metric(addr: std::net::SocketAddr, sample: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
}

/// Registers a client at `base` (`http://host:port`), for `stream` or the default stream, and
/// returns the 201's body.
pub async fn register(http: &reqwest::Client, base: &str, stream: Option<&str>) -> Value {
    let body = stream.map_or_else(|| json!({}), |s| json!({ "stream_id": s }));
    let response = http
        .post(format!("{base}/clients"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

pub fn now_ms() -> i64 {
    dataflows::wall_clock_ms()
}

pub fn batch(user: &str, emoji: &str, n: usize) -> Vec<Value> {
    let ts = now_ms();
    (0..n)
        .map(|i| json!({"user_id": format!("{user}{i}"), "emoji_type": emoji, "timestamp": ts}))
        .collect()
}

pub async fn post_batch(system: &System, reactions: &[Value]) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/emoji/batch", system.http_addr))
        .timeout(PATIENCE)
        .json(reactions)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": reactions.len()})
    );
}

/// Per-emoji sums over windows.
pub fn sums(windows: &[WindowSummary]) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for w in windows {
        for e in &w.emojis {
            *sums.entry(e.emoji.to_string()).or_default() += e.count;
        }
    }
    sums
}

/// Waits until `total` reactions have reached windows; on timeout the failure shows the
/// system's counters (late, invalid, lost...) to say where the rest went.
pub async fn wait_for_total(system: &System, seen: &Seen, total: u64) {
    let what = format!("{total} reactions reached windows");
    let got = poll_until(&what, PATIENCE, || {
        let got: u64 = seen.lock().unwrap().iter().map(|w| w.total).sum();
        std::future::ready(if got >= total {
            Ok(got)
        } else {
            Err(format!("only {got}; {:?}", system.stats))
        })
    })
    .await;
    assert_eq!(got, total, "no reaction counted twice");
}

/// Everything in the windows topic.
pub fn windows_topic(brokers: &str) -> Vec<WindowSummary> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .create()
        .unwrap();
    // Every partition, in partition order: records anywhere but in partition 0 are ones a
    // restart would not read back.
    let metadata = consumer
        .fetch_metadata(Some("emoji-windows"), Duration::from_secs(5))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut out = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks("emoji-windows", partition, Duration::from_secs(5))
            .unwrap();
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("emoji-windows", partition, Offset::Offset(low))
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while read < high - low && Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                let summary: WindowSummary =
                    serde_json::from_slice(message.payload().unwrap()).unwrap();
                assert_eq!(
                    message.key().unwrap(),
                    format!("{}/{}", summary.stream_id, summary.window).as_bytes(),
                    "key is {{stream_id}}/{{window}}"
                );
                out.push(summary);
                read += 1;
            }
        }
        assert_eq!(read, high - low, "partition {partition}");
    }
    out
}

/// The windows of one stream.
pub fn of_stream(windows: &[WindowSummary], stream: &str) -> Vec<WindowSummary> {
    windows
        .iter()
        .filter(|w| w.stream_id.as_str() == stream)
        .cloned()
        .collect()
}

pub fn assert_contiguous(windows: &[WindowSummary]) {
    assert!(!windows.is_empty());
    for pair in windows.windows(2) {
        assert_eq!(
            pair[1].window,
            pair[0].window + 1,
            "window ids contiguous, none repeated"
        );
    }
}

/// Reactions posted over HTTP come out as windows, in `on_window` and in the windows topic,
/// with exact counts. `extra` selects the broker.
pub async fn end_to_end(extra: &[&str]) {
    let (system, seen) = start(extra).await;
    let mut reactions = batch("a", "🔥", 500);
    reactions.extend(batch("b", "😂", 1200));
    reactions.extend(batch("c", "❤", 3));
    post_batch(&system, &reactions).await;
    let single = reqwest::Client::new()
        .post(format!("http://{}/emoji", system.http_addr))
        .json(&json!({"user_id": "solo", "emoji_type": "👍🏽"}))
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 202);
    wait_for_total(&system, &seen, 1704).await;
    let expected: BTreeMap<String, u64> = [
        ("🔥".to_string(), 500),
        ("😂".to_string(), 1200),
        ("❤️".to_string(), 3),
        ("👍🏽".to_string(), 1),
    ]
    .into();
    assert_eq!(sums(&seen.lock().unwrap()), expected);
    let brokers = system.brokers.clone();
    let topic = tokio::task::spawn_blocking(move || windows_topic(&brokers))
        .await
        .unwrap();
    assert_contiguous(&topic);
    assert_eq!(
        sums(&topic),
        expected,
        "the windows topic holds the same counts"
    );
    let scaled: u64 = topic
        .iter()
        .flat_map(|w| &w.emojis)
        .filter(|e| e.emoji.as_str() == "😂")
        .map(|e| e.scaled)
        .sum();
    assert!(scaled >= 2, "1200 reactions show at least 2 emojis");
    system.shutdown().await.unwrap();
}

/// Starts tansu, a Kafka-protocol broker emostream does not embed, on a free port. The tests
/// that call it are ignored by default; run with `--include-ignored`, a missing tansu fails.
pub struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_tansu() -> (Broker, String) {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Process::new("tansu")
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(child) => Broker(child),
        Err(e) => panic!(
            "tansu cannot start ({e}): install it with cargo install tansu --locked --features dynostore"
        ),
    };
    poll_until_blocking(
        &format!("tansu listens on {port}"),
        Duration::from_secs(20),
        || TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string()),
    );
    (child, format!("127.0.0.1:{port}"))
}
