//! The live system end to end: HTTP in, Kafka (embedded mock broker), windows out.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::{
    assert_contiguous, batch, post_batch, start, sums, wait_for_total, wait_until, windows_topic,
    PATIENCE,
};
use emostream::system::System;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_posted_come_out_as_windows_with_exact_counts() {
    common::end_to_end(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_without_losing_or_repeating_windows() {
    let (broker, brokers) = common::own_broker(4, 1).await;

    let (first, seen) = start(&["--brokers", &brokers]).await;
    post_batch(&first, &batch("a", "🔥", 300)).await;
    wait_for_total(&first, &seen, 300).await;
    // Read but not yet in a closed window when the first run stops: the next run counts them.
    post_batch(&first, &batch("b", "😂", 200)).await;
    wait_until("the first run read the second batch", PATIENCE, || {
        first.stats.consumed.get() >= 500
    })
    .await;
    first.shutdown().await.unwrap();
    let first_windows = seen.lock().unwrap().clone();

    let (second, seen) = start(&["--brokers", &brokers]).await;
    post_batch(&second, &batch("c", "❤️", 70)).await;
    wait_for_total(
        &second,
        &seen,
        570 - first_windows.iter().map(|w| w.total).sum::<u64>(),
    )
    .await;
    let second_first = seen.lock().unwrap()[0].window;
    assert_eq!(
        second_first,
        first_windows.last().unwrap().window + 1,
        "resumes right after the last window"
    );
    assert_eq!(
        second.stats.late.get(),
        0,
        "nothing re-read is dropped as late"
    );
    second.shutdown().await.unwrap();

    let topic = tokio::task::spawn_blocking(move || {
        let t = windows_topic(&brokers);
        drop(broker);
        t
    })
    .await
    .unwrap();
    assert_contiguous(&topic);
    let expected: BTreeMap<String, u64> = [
        ("🔥".to_string(), 300),
        ("😂".to_string(), 200),
        ("❤️".to_string(), 70),
    ]
    .into();
    assert_eq!(sums(&topic), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_an_active_stream_loses_and_repeats_no_window() {
    // A windows topic made elsewhere with 3 partitions: windows are written to partition 0
    // all the same, in the order a restart reads back.
    let (broker, brokers) = common::own_broker(4, 3).await;
    // Short windows and an idle span of 8: the stream is still active across the restart.
    let flags = [
        "--brokers",
        &brokers,
        "--window-ms",
        "500",
        "--lateness-ms",
        "100",
        "--stream-idle-windows",
        "8",
    ];
    let (first, seen) = start(&flags).await;
    let ts = common::now_ms();
    let reactions: Vec<Value> = (0..40)
        .map(|i| json!({"user_id": format!("u{i}"), "emoji_type": "⚽", "timestamp": ts, "stream_id": "final"}))
        .collect();
    post_batch(&first, &reactions).await;
    wait_until("the stream's window and one empty one", PATIENCE, || {
        let seen = seen.lock().unwrap();
        common::of_stream(&seen, "final").len() >= 2
    })
    .await;
    first.shutdown().await.unwrap();
    let before = common::of_stream(&seen.lock().unwrap(), "final");
    assert!(
        before.len() < 9,
        "the restart falls inside the idle span: {before:?}"
    );

    let (second, seen) = start(&flags).await;
    let reacted = before[0].window;
    wait_until("the stream's idle span ended", PATIENCE, || {
        let seen = seen.lock().unwrap();
        seen.iter().any(|w| w.window > reacted + 9)
    })
    .await;
    let after = common::of_stream(&seen.lock().unwrap(), "final");
    second.shutdown().await.unwrap();
    assert_eq!(
        after.first().map(|w| w.window),
        Some(before.last().unwrap().window + 1),
        "the second run goes on right after the first: {before:?} then {after:?}"
    );
    let topic = tokio::task::spawn_blocking(move || {
        let t = windows_topic(&brokers);
        drop(broker);
        t
    })
    .await
    .unwrap();
    let final_windows: Vec<u64> = common::of_stream(&topic, "final")
        .iter()
        .map(|w| w.window)
        .collect();
    assert_eq!(
        final_windows,
        (reacted..=reacted + 8).collect::<Vec<_>>(),
        "its window and its 8 idle ones, each once, across the restart"
    );
    let totals: u64 = common::of_stream(&topic, "final")
        .iter()
        .map(|w| w.total)
        .sum();
    assert_eq!(totals, 40);
}

async fn request(
    system: &System,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value, Option<String>) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(
            method.parse().unwrap(),
            format!("http://{}{path}", system.http_addr),
        )
        .body(body.to_string());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        retry_after,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_status_and_json_error() {
    let (system, _) = start(&["--rate-limit", "2", "--rate-limit-burst", "2"]).await;
    let json = Some("application/json");
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/emoji", r#"{"emoji_type":"🔥"}"#, 400, "invalid_user_id"),
        (
            "/emoji",
            r#"{"user_id":"","emoji_type":"🔥"}"#,
            400,
            "invalid_user_id",
        ),
        (
            "/emoji",
            r#"{"user_id":"u","emoji_type":"🔥🔥"}"#,
            400,
            "invalid_emoji_type",
        ),
        (
            "/emoji",
            r#"{"user_id":"u","emoji_type":"abc"}"#,
            400,
            "invalid_emoji_type",
        ),
        (
            "/emoji",
            r#"{"user_id":"u","emoji_type":"🔥","timestamp":"noon"}"#,
            400,
            "invalid_timestamp",
        ),
        (
            "/emoji",
            r#"{"user_id":"u","emoji_type":"🔥","timestamp":99999999999999}"#,
            400,
            "invalid_timestamp",
        ),
        ("/emoji", "{", 400, "invalid_json"),
        (
            "/emoji/batch",
            r#"[{"user_id":"u","emoji_type":"🔥"},{"user_id":"v","emoji_type":"x"}]"#,
            400,
            "invalid_emoji_type",
        ),
        ("/emoji/batch", "[]", 400, "empty_batch"),
        ("/emoji/batch", r#"{"user_id":"u"}"#, 400, "invalid_json"),
    ];
    for (path, body, status, code) in cases {
        let (got, body_json, _) = request(&system, "POST", path, json, body).await;
        assert_eq!(
            (got, body_json["error"].as_str().unwrap_or_default()),
            (*status, *code),
            "{path} {body}"
        );
        assert!(!body_json["message"].as_str().unwrap().is_empty());
    }
    let (_, body, _) = request(
        &system,
        "POST",
        "/emoji/batch",
        json,
        r#"[{"user_id":"u","emoji_type":"🔥"},{"user_id":"v","emoji_type":"x"}]"#,
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("reactions[1].emoji_type"),
        "{body}"
    );
    assert_eq!(
        system.stats.accepted.get(),
        0,
        "a batch with one bad reaction accepts none"
    );
    let (_, body, _) = request(
        &system,
        "POST",
        "/emoji/batch",
        Some("application/x-ndjson"),
        "{\"user_id\":\"u\",\"emoji_type\":\"🔥\"}\n\nnope\n",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("line 3: body"),
        "{body}"
    );

    let (status, body, _) = request(&system, "POST", "/emoji", Some("text/plain"), "{}").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (415, "unsupported_media_type")
    );
    // No Content-Type: a cross-origin page could send that without a preflight.
    let reaction = r#"{"user_id":"u","emoji_type":"🔥"}"#;
    for path in ["/emoji", "/emoji/batch"] {
        let (status, body, _) = request(&system, "POST", path, None, reaction).await;
        assert_eq!(
            (status, body["error"].as_str().unwrap()),
            (415, "unsupported_media_type"),
            "{path}: {body}"
        );
    }
    let big = format!(
        r#"{{"user_id":"{}","emoji_type":"🔥"}}"#,
        "x".repeat(20_000)
    );
    let (status, body, _) = request(&system, "POST", "/emoji", json, &big).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (413, "payload_too_large")
    );
    let (status, body, _) = request(&system, "GET", "/nowhere", None, "").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (404, "not_found")
    );
    let (status, body, _) = request(&system, "GET", "/emoji", None, "").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (405, "method_not_allowed")
    );

    // A chunked body has no Content-Length: 411.
    let addr = system.http_addr;
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"POST /emoji HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 411"), "{raw}");
    assert!(raw.contains("length_required"));

    // The per-user limit: a burst of 2, then 429 with Retry-After.
    for _ in 0..2 {
        let (status, _, _) = request(
            &system,
            "POST",
            "/emoji",
            json,
            r#"{"user_id":"fast","emoji_type":"🔥"}"#,
        )
        .await;
        assert_eq!(status, 202);
    }
    let (status, body, retry) = request(
        &system,
        "POST",
        "/emoji",
        json,
        r#"{"user_id":"fast","emoji_type":"🔥"}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (429, "rate_limited")
    );
    assert!(retry.is_some());
    let (status, _, _) = request(
        &system,
        "POST",
        "/emoji",
        json,
        r#"{"user_id":"calm","emoji_type":"🔥"}"#,
    )
    .await;
    assert_eq!(status, 202, "other users are not limited");
    // More reactions of one user in one batch than the burst could never pass: said so.
    let (status, body, retry) = request(
        &system,
        "POST",
        "/emoji/batch",
        json,
        &serde_json::to_string(&vec![json!({"user_id": "big", "emoji_type": "🔥"}); 3]).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (413, "too_many_for_rate_limit")
    );
    assert_eq!(retry, None, "no retry would pass: {body}");

    let (status, body, _) = request(&system, "GET", "/healthz", None, "").await;
    assert_eq!((status, body["status"].as_str().unwrap()), (200, "ok"));
    let (status, body, _) = request(&system, "GET", "/readyz", None, "").await;
    assert_eq!((status, body["status"].as_str().unwrap()), (200, "ready"));
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_answers_503() {
    // Nothing leaves the queue for 10 s, and it holds 5 reactions.
    let (system, _) = start(&["--producer-queue", "5", "--linger-ms", "10000"]).await;
    let (status, body, retry) = request(
        &system,
        "POST",
        "/emoji/batch",
        Some("application/json"),
        &serde_json::to_string(&batch("q", "🔥", 10)).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (503, "queue_full")
    );
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["accepted"], json!(0));
    for _ in 0..5 {
        let (status, _, _) = request(
            &system,
            "POST",
            "/emoji",
            Some("application/json"),
            r#"{"user_id":"q","emoji_type":"🔥"}"#,
        )
        .await;
        assert_eq!(status, 202);
    }
    let (status, body, _) = request(
        &system,
        "POST",
        "/emoji",
        Some("application/json"),
        r#"{"user_id":"q","emoji_type":"🔥"}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (503, "queue_full")
    );
    assert!(system.stats.rejected_queue_full.get() >= 2);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_are_queued_whole_or_refused_whole() {
    // Room for 1,000 reactions that stay queued: of 20 concurrent batches of 300, three fit.
    let (system, _) = start(&["--producer-queue", "1000", "--linger-ms", "10000"]).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/emoji/batch", system.http_addr);
    let answers = futures_util::future::join_all((0..20).map(|i| {
        let request = http.post(&url).json(&batch(&format!("c{i}-"), "🔥", 300));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    }))
    .await;
    let whole = answers.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(whole, 3, "{answers:?}");
    for (status, body) in &answers {
        match status {
            202 => assert_eq!(body["accepted"], json!(300)),
            _ => assert_eq!((*status, &body["accepted"]), (503, &json!(0)), "never cut"),
        }
    }
    assert_eq!(system.stats.accepted.get(), 900);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partition_of_an_existing_topic_is_read() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    // The topic exists with 6 partitions; --partitions (4 by default) only applies to
    // topics emostream creates.
    let (broker, brokers) = common::own_broker(6, 1).await;
    let (system, seen) = start(&["--brokers", &brokers]).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let ts = common::now_ms();
    for partition in 0..6 {
        let payload =
            json!({"user_id": format!("p{partition}"), "emoji_type": "🎯", "timestamp": ts})
                .to_string();
        producer
            .send(
                FutureRecord::to("emoji-reactions")
                    .key("k")
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    wait_for_total(&system, &seen, 6).await;
    system.shutdown().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_on_the_topic_are_counted_and_skipped() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let (system, seen) = start(&[]).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &system.brokers)
        .create()
        .unwrap();
    for payload in [
        "not json",
        r#"{"user_id":"u","emoji_type":"abc","timestamp":1}"#,
        "{}",
    ] {
        producer
            .send(
                FutureRecord::to("emoji-reactions")
                    .key("x")
                    .payload(payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    post_batch(&system, &batch("ok", "🔥", 10)).await;
    wait_for_total(&system, &seen, 10).await;
    wait_until(
        "the malformed messages are counted",
        Duration::from_secs(10),
        || system.stats.invalid_on_topic.get() >= 3,
    )
    .await;
    assert_eq!(system.stats.invalid_on_topic.get(), 3);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ack_broker_202_comes_after_the_broker_acknowledged() {
    // A long linger keeps reactions in the producer's queue: a 202 sent on queueing would
    // come before the broker's acknowledgement.
    let (system, seen) = start(&["--ack", "broker", "--linger-ms", "300"]).await;
    for round in 1..=3u64 {
        post_batch(&system, &batch("acked", "🎉", 40)).await;
        assert_eq!(
            system.stats.produced.get(),
            40 * round,
            "every accepted reaction was acknowledged before the 202"
        );
    }
    wait_for_total(&system, &seen, 120).await;
    system.shutdown().await.unwrap();
}

#[test]
fn dropping_a_running_system_stops_it() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (system, _seen) = start(&[]).await;
            // What a failing test does: the system is dropped, never shut down.
            drop(system);
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("a dropped system stops its workers instead of hanging the process");
}

/// A client whose clock runs 9.9 s ahead (the most the API accepts) has its reaction counted in
/// its own, future window, but cannot close the others' windows: the partition's event time
/// never runs past the time a reaction was queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_ahead_does_not_make_other_reactions_late() {
    // One partition, so the early and the others' reactions share one event clock.
    let (system, seen) = start(&["--partitions", "1"]).await;
    let ahead = vec![json!({
        "user_id": "early-bird",
        "emoji_type": "🚀",
        "timestamp": common::now_ms() + 9_900,
    })];
    post_batch(&system, &ahead).await;
    wait_until("the reaction ahead was read", PATIENCE, || {
        system.stats.consumed.get() == 1
    })
    .await;
    let others: Vec<Value> = (0..50)
        .map(|i| json!({"user_id": format!("u{i}"), "emoji_type": "🔥", "timestamp": common::now_ms()}))
        .collect();
    post_batch(&system, &others).await;
    wait_until("the others were read", PATIENCE, || {
        system.stats.consumed.get() == 51
    })
    .await;
    assert_eq!(system.stats.late.get(), 0, "no reaction was late");
    wait_for_total(&system, &seen, 51).await;
    let windows = seen.lock().unwrap().clone();
    assert_contiguous(&windows);
    let expected: BTreeMap<String, u64> = [("🔥".to_string(), 50), ("🚀".to_string(), 1)].into();
    assert_eq!(sums(&windows), expected);
    system.shutdown().await.unwrap();
}

/// Window indices of another length name other times: a run with another `--window-ms` than
/// the windows topic was written with refuses to start, and says which length to start with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_another_window_length_is_refused_with_the_length_to_use() {
    let (broker, brokers) = common::own_broker(4, 1).await;
    let (first, seen) = start(&["--brokers", &brokers, "--window-ms", "500"]).await;
    wait_until("a window written", PATIENCE, || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    first.shutdown().await.unwrap();

    let refused = System::start(
        &common::run_args(&["--brokers", &brokers, "--window-ms", "2000"]),
        None,
    )
    .await;
    let message = match refused {
        Err(e @ emostream::error::RunError::Config(_)) => e.to_string(),
        Err(e) => panic!("refused, but not as a flag to fix: {e}"),
        Ok(_) => panic!("a run of 2000 ms windows started on a topic of 500 ms ones"),
    };
    assert!(message.contains("start with --window-ms 500"), "{message}");
    // The length it was written with starts.
    let (again, _) = start(&["--brokers", &brokers, "--window-ms", "500"]).await;
    again.shutdown().await.unwrap();
    drop(broker);
}
