//! The end-to-end test against Apache Kafka 4.4.0 (KRaft, one node, started by
//! `tests/kafka/start.sh`): reactions posted over HTTP come out as windows with exact counts,
//! in `on_window` and in the windows topic.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{poll_until_blocking, wait_until, Kafka, PATIENCE};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn reactions_posted_come_out_as_windows_against_kafka() {
    let kafka = tokio::task::spawn_blocking(Kafka::start).await.unwrap();
    common::end_to_end(&["--brokers", &kafka.brokers, "--idle-ms", "1000"]).await;
    // The windows topic keeps the latest record per `{stream_id}/{window}`.
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .unwrap();
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic("emoji-windows")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let config = described.into_iter().next().unwrap().unwrap();
    assert_eq!(
        config
            .get("cleanup.policy")
            .and_then(|e| e.value.as_deref()),
        Some("compact")
    );
}

/// One row of `kafka-consumer-groups --describe` for the reactions topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    /// `CURRENT-OFFSET`: the group's committed offset (`None`: `-`, nothing committed).
    current: Option<i64>,
    /// `LOG-END-OFFSET`.
    log_end: i64,
    /// `LAG` (`None`: `-`).
    lag: Option<i64>,
}

const REACTIONS: &str = "emoji-reactions";

/// The group's committed offsets on the reactions topic as Kafka itself reports them
/// (`kafka-consumer-groups --describe --group G`), by partition. The table is read by its
/// header, so the column order does not matter.
fn committed(kafka: &Kafka, group: &str) -> (BTreeMap<i32, Committed>, String) {
    let out = kafka.consumer_groups(&["--describe", "--group", group]);
    let mut columns: Option<Vec<String>> = None;
    let mut rows = BTreeMap::new();
    for line in out.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.first() == Some(&"GROUP") {
            columns = Some(cells.iter().map(|c| c.to_string()).collect());
            continue;
        }
        let Some(columns) = &columns else { continue };
        let cell = |name: &str| {
            let i = columns.iter().position(|c| c == name).unwrap_or_else(|| {
                panic!("no {name} column in kafka-consumer-groups' table:\n{out}")
            });
            cells.get(i).copied().unwrap_or("-")
        };
        if cells.len() < columns.len().min(6)
            || cell("GROUP") != group
            || cell("TOPIC") != REACTIONS
        {
            continue;
        }
        let number = |s: &str| (s != "-").then(|| s.parse::<i64>().unwrap());
        rows.insert(
            cell("PARTITION").parse().unwrap(),
            Committed {
                current: number(cell("CURRENT-OFFSET")),
                log_end: cell("LOG-END-OFFSET").parse().unwrap(),
                lag: number(cell("LAG")),
            },
        );
    }
    (rows, out)
}

/// Polls [`committed`] (each call starts a JVM: seconds) until `done` holds.
fn committed_until(
    kafka: &Kafka,
    group: &str,
    what: &str,
    done: impl Fn(&BTreeMap<i32, Committed>) -> bool,
) -> BTreeMap<i32, Committed> {
    poll_until_blocking(what, Duration::from_secs(60), || {
        let (rows, out) = committed(kafka, group);
        if done(&rows) {
            Ok(rows)
        } else {
            Err(out)
        }
    })
}

/// The offsets of the reactions in each partition of the reactions topic: every record but
/// the watermark marks (which carry the `emostream-mark` header).
fn reaction_offsets(brokers: &str) -> BTreeMap<i32, Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-offsets-reader")
        .create()
        .unwrap();
    let mut out = BTreeMap::new();
    for partition in 0..4 {
        let (low, high) = consumer
            .fetch_watermarks(REACTIONS, partition, Duration::from_secs(5))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(REACTIONS, partition, Offset::Offset(low))
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut reactions = Vec::new();
        let mut next = low;
        let deadline = Instant::now() + Duration::from_secs(20);
        while next < high {
            assert!(
                Instant::now() < deadline,
                "partition {partition}: read to {next} of {high}"
            );
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let mark = message
                .headers()
                .is_some_and(|h| h.iter().any(|h| h.key == "emostream-mark"));
            if !mark {
                reactions.push(message.offset());
            }
            next = message.offset() + 1;
        }
        out.insert(partition, reactions);
    }
    out
}

/// Reactions below each partition's committed offset (`.0`) and at or after it (`.1`).
fn split_at_commits(
    reactions: &BTreeMap<i32, Vec<i64>>,
    rows: &BTreeMap<i32, Committed>,
) -> (usize, usize) {
    let mut split = (0, 0);
    for (p, offsets) in reactions {
        let committed = rows.get(p).and_then(|r| r.current).unwrap_or(0);
        let below = offsets.iter().filter(|o| **o < committed).count();
        split.0 += below;
        split.1 += offsets.len() - below;
    }
    split
}

/// `emostream run` on `kafka` with consumer group `group`.
fn run_args<'a>(kafka: &'a Kafka, group: &'a str) -> [&'a str; 6] {
    [
        "--brokers",
        &kafka.brokers,
        "--group-id",
        group,
        "--idle-ms",
        "1000",
    ]
}

async fn offsets_now(kafka: &Arc<Kafka>) -> BTreeMap<i32, Vec<i64>> {
    let brokers = kafka.brokers.clone();
    tokio::task::spawn_blocking(move || reaction_offsets(&brokers))
        .await
        .unwrap()
}

/// Reactions `n` users (`{user}0`...) send, stamped `ts`: distinct keys spread over every
/// partition.
fn stamped(user: &str, emoji: &str, n: usize, ts: i64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"user_id": format!("{user}{i}"), "emoji_type": emoji, "timestamp": ts}))
        .collect()
}

/// README, "Kafka": offsets are committed (group `--group-id`) up to the first reaction of the
/// first window not yet durable, every second; a stop writes the closed windows and commits.
/// Once every reaction's window is in `emoji-windows`, Kafka's own view of the group has every
/// reaction committed, while the system runs and after a clean stop: what is left past the
/// committed offsets is watermark marks only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn the_group_commits_every_reaction_once_windows_are_written() {
    const GROUP: &str = "all-committed";
    let kafka = Arc::new(tokio::task::spawn_blocking(Kafka::start).await.unwrap());
    let args = run_args(&kafka, GROUP);
    let (system, seen) = common::start(&args).await;
    let mut reactions = stamped("a", "🔥", 300, common::now_ms());
    reactions.extend(stamped("b", "😂", 100, common::now_ms()));
    common::post_batch(&system, &reactions).await;
    common::wait_for_total(&system, &seen, 400).await;
    let expected: BTreeMap<String, u64> = [("🔥".to_string(), 300), ("😂".to_string(), 100)].into();
    let brokers = kafka.brokers.clone();
    let topic = tokio::task::spawn_blocking(move || common::windows_topic(&brokers))
        .await
        .unwrap();
    assert_eq!(
        common::sums(&topic),
        expected,
        "the windows topic holds them"
    );
    let offsets = offsets_now(&kafka).await;
    assert_eq!(offsets.values().map(Vec::len).sum::<usize>(), 400);

    // While it runs: the periodic commit (at most every second) passes every reaction.
    let (k, o) = (Arc::clone(&kafka), offsets.clone());
    let running = tokio::task::spawn_blocking(move || {
        committed_until(
            &k,
            GROUP,
            "the running group has committed every reaction",
            |rows| rows.len() == 4 && split_at_commits(&o, rows) == (400, 0),
        )
    })
    .await
    .unwrap();

    system.shutdown().await.unwrap();
    let k = Arc::clone(&kafka);
    let (stopped, out) = tokio::task::spawn_blocking(move || committed(&k, GROUP))
        .await
        .unwrap();
    assert_eq!(
        stopped.len(),
        4,
        "every partition has a committed offset:\n{out}"
    );
    assert_eq!(
        split_at_commits(&offsets, &stopped),
        (400, 0),
        "every reaction committed after the stop:\n{out}"
    );
    for (p, row) in &stopped {
        assert!(
            row.current >= running[p].current && row.current <= Some(row.log_end),
            "partition {p}: the stop's commit is between the running one and the log end:\n{out}"
        );
    }
}

/// README, "Kafka" and "Stopping": a stop leaves open windows to the next run, their
/// reactions uncommitted. Reactions stamped 8 s ahead (10 s are accepted) are read but their
/// window is still open at the stop: past the group's committed offsets Kafka holds exactly
/// those reactions (and watermark marks), and a restart with the same group reads exactly them
/// again and counts each once, in the window after the last one written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn reactions_of_an_open_window_stay_uncommitted_and_a_restart_counts_them_once() {
    const GROUP: &str = "open-at-stop";
    const PAST: usize = 300;
    const AHEAD: usize = 120;
    let kafka = Arc::new(tokio::task::spawn_blocking(Kafka::start).await.unwrap());
    let args = run_args(&kafka, GROUP);
    let (first, seen_first) = common::start(&args).await;
    common::post_batch(&first, &stamped("p", "🔥", PAST, common::now_ms())).await;
    common::wait_for_total(&first, &seen_first, PAST as u64).await;

    // 8 s ahead: their window closes ~9.5 s from now at the soonest (lateness + idle time).
    let ahead_ts = common::now_ms() + 8_000;
    let posted = Instant::now();
    common::post_batch(&first, &stamped("f", "😂", AHEAD, ahead_ts)).await;
    let total = (PAST + AHEAD) as u64;
    wait_until(
        "the first run has read the reactions ahead",
        PATIENCE,
        || first.stats.consumed.get() == total,
    )
    .await;
    first.shutdown().await.unwrap();
    assert!(
        posted.elapsed() < Duration::from_secs(7),
        "the stop came while their window was open ({:?} after posting)",
        posted.elapsed()
    );
    let first_windows = seen_first.lock().unwrap().clone();
    let past: BTreeMap<String, u64> = [("🔥".to_string(), PAST as u64)].into();
    assert_eq!(
        common::sums(&first_windows),
        past,
        "the open window was not emitted"
    );

    let k = Arc::clone(&kafka);
    let (stopped, out) = tokio::task::spawn_blocking(move || committed(&k, GROUP))
        .await
        .unwrap();
    let offsets = offsets_now(&kafka).await;
    assert_eq!(offsets.values().map(Vec::len).sum::<usize>(), PAST + AHEAD);
    assert_eq!(
        split_at_commits(&offsets, &stopped),
        (PAST, AHEAD),
        "the reactions past the committed offsets are those of the open window:\n{out}"
    );

    let (second, seen_second) = common::start(&args).await;
    common::wait_for_total(&second, &seen_second, AHEAD as u64).await;
    let ahead: BTreeMap<String, u64> = [("😂".to_string(), AHEAD as u64)].into();
    assert_eq!(common::sums(&seen_second.lock().unwrap()), ahead);
    assert_eq!(
        second.stats.consumed.get(),
        AHEAD as u64,
        "the restart read exactly the uncommitted reactions"
    );
    assert_eq!(second.stats.late.get(), 0, "none of them was late");
    let brokers = kafka.brokers.clone();
    let topic = tokio::task::spawn_blocking(move || common::windows_topic(&brokers))
        .await
        .unwrap();
    common::assert_contiguous(&topic);
    let everything: BTreeMap<String, u64> = [
        ("🔥".to_string(), PAST as u64),
        ("😂".to_string(), AHEAD as u64),
    ]
    .into();
    assert_eq!(
        common::sums(&topic),
        everything,
        "each reaction in one window"
    );
    let second_first = seen_second.lock().unwrap().first().map(|w| w.window);
    assert_eq!(
        second_first,
        first_windows.last().map(|w| w.window + 1),
        "the restart resumes after the last window written"
    );

    second.shutdown().await.unwrap();
    let k = Arc::clone(&kafka);
    let (after, out) = tokio::task::spawn_blocking(move || committed(&k, GROUP))
        .await
        .unwrap();
    assert_eq!(
        split_at_commits(&offsets, &after),
        (PAST + AHEAD, 0),
        "every reaction committed after the second stop:\n{out}"
    );
}
