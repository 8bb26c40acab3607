//! Corrections live, on the embedded broker, with a real SSE client and a real WebSocket
//! client: a late reaction within the horizon reaches the stream's clients as a correction
//! (revision 1, the whole window) immediately before the next window, a client resuming with
//! `Last-Event-ID` (`last_event_id` on a WebSocket) receives it again with that window, the
//! windows topic holds both revisions under one key, and the counters say what happened.
#![allow(clippy::unwrap_used)] // a failure is the test failing

mod common;

use std::future::Future;

use common::{now_ms, post_batch, register, start, wait_until, ws, Follower, PATIENCE};
use dataflows::WindowId;
use emostream::system::System;
use serde_json::{json, Value};

fn reactions(stream: &str, emoji: &str, n: usize, ts: i64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"user_id": format!("{stream}-u{i}"), "emoji_type": emoji, "timestamp": ts, "stream_id": stream}))
        .collect()
}

/// One late reaction, seen by clients `open` connects (resuming after `Option<WindowId>`): it
/// reaches a client following the stream as a correction (revision 1, the whole window)
/// immediately before the next window, and a client resuming before the correction's epoch
/// gets it again before the same window. The window it corrected.
async fn a_correction_reaches_clients<F, Fut>(system: &System, open: F) -> WindowId
where
    F: Fn(Option<WindowId>) -> Fut,
    Fut: Future<Output = Follower>,
{
    let follower = open(None).await;
    let ts = now_ms();
    let window = (ts / 500) as u64;
    post_batch(system, &reactions("match", "🔥", 3, ts)).await;
    follower
        .wait_until("the window with 3 reactions", PATIENCE, |events| {
            events
                .iter()
                .any(|e| e.kind == "window" && e.id == window && e.summary.total == 3)
        })
        .await;

    // The window has closed: a reaction for it now corrects it.
    post_batch(
        system,
        &[json!({"user_id": "late", "emoji_type": "😂", "timestamp": ts, "stream_id": "match"})],
    )
    .await;
    follower
        .wait_until("a correction, then the next window", PATIENCE, |events| {
            events
                .iter()
                .position(|e| e.kind == "correction")
                .is_some_and(|i| i + 1 < events.len())
        })
        .await;
    let events = follower.events();
    let at = events.iter().position(|e| e.kind == "correction").unwrap();
    let fixed = &events[at].summary;
    assert_eq!((fixed.window, fixed.revision, fixed.total), (window, 1, 4));
    let emojis: Vec<(&str, u64)> = fixed
        .emojis
        .iter()
        .map(|e| (e.emoji.as_str(), e.count))
        .collect();
    assert_eq!(emojis, [("🔥", 3), ("😂", 1)]);
    let next = &events[at + 1];
    assert_eq!(next.kind, "window", "the correction leads a window");
    assert!(next.id > window);
    assert_eq!(
        follower.corrections().len(),
        1,
        "one late reaction, one correction"
    );
    let ids = follower.ids();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "windows keep their ids, no gap: {ids:?}"
    );

    // A client resuming before the correction's epoch gets it again, before the same window.
    let resumed = open(Some(window)).await;
    resumed
        .wait_until("the correction again, and its window", PATIENCE, |events| {
            events
                .iter()
                .position(|e| e.kind == "correction")
                .is_some_and(|i| i + 1 < events.len())
        })
        .await;
    let again = resumed.events();
    let i = again.iter().position(|e| e.kind == "correction").unwrap();
    assert_eq!(&again[i].summary, fixed);
    assert_eq!(again[i + 1].id, next.id, "replayed with the window it led");
    // The first window after Last-Event-ID; the correction comes before it when the late
    // reaction was read in that very window.
    let first = again.iter().find(|e| e.kind == "window").unwrap();
    assert_eq!(
        first.id,
        window + 1,
        "the resume starts after Last-Event-ID"
    );
    assert!(
        again[..i].iter().all(|e| e.kind == "window"),
        "nothing but windows before the correction: {again:?}"
    );

    window
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reaction_reaches_clients_as_a_correction_before_the_next_window() {
    let (system, _) = start(&["--window-ms", "500", "--lateness-ms", "100"]).await;
    let base = format!("http://{}", system.http_addr);
    let http = reqwest::Client::new();
    let sse = reqwest::Client::new();
    let reg = register(&http, &base, Some("match")).await;
    let url = reg["events_url"].as_str().unwrap().to_owned();
    let window =
        a_correction_reaches_clients(&system, |last| Follower::open(&sse, &url, last)).await;

    wait_until("the counters", PATIENCE, || {
        system.stats.corrections_emitted.get() == 1
    })
    .await;
    assert_eq!(system.stats.corrected.get(), 1);
    assert_eq!(system.stats.late.get(), 0);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("emostream_corrected_reactions_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("emostream_corrections_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("emostream_correction_keys_held "),
        "{metrics}"
    );

    // The topic has both revisions under the window's key; compaction keeps the last.
    let brokers = system.brokers.clone();
    let topic = tokio::task::spawn_blocking(move || common::windows_topic(&brokers))
        .await
        .unwrap();
    let revisions: Vec<(u32, u64)> = topic
        .iter()
        .filter(|w| w.stream_id.as_str() == "match" && w.window == window)
        .map(|w| (w.revision, w.total))
        .collect();
    assert_eq!(revisions, [(0, 3), (1, 4)]);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_receives_corrections_and_again_when_it_resumes() {
    let (system, _) = start(&["--window-ms", "500", "--lateness-ms", "100"]).await;
    let base = format!("http://{}", system.http_addr);
    let reg = register(&reqwest::Client::new(), &base, Some("match")).await;
    let url = reg["events_url"].as_str().unwrap().to_owned();
    a_correction_reaches_clients(&system, |last| {
        let url = ws::ws_url(&url, last);
        async move { ws::open(&url, &[]).await }
    })
    .await;
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_horizon_a_late_reaction_is_dropped_and_counted() {
    let (system, seen) = start(&[
        "--window-ms",
        "500",
        "--lateness-ms",
        "100",
        "--correction-horizon-ms",
        "1000",
    ])
    .await;
    let ts = now_ms();
    post_batch(&system, &reactions("match", "🔥", 2, ts)).await;
    common::wait_for_total(&system, &seen, 2).await;
    // Two windows of horizon: wait until the open window is well past it.
    let past = ts + 2500;
    wait_until("the watermark passed the horizon", PATIENCE, || {
        seen.lock()
            .unwrap()
            .last()
            .is_some_and(|w| w.start_ms > past)
    })
    .await;
    post_batch(&system, &reactions("match", "😂", 1, ts)).await;
    wait_until("the late reaction was dropped", PATIENCE, || {
        system.stats.late.get() == 1
    })
    .await;
    assert_eq!(system.stats.corrected.get(), 0);
    assert_eq!(system.stats.corrections_emitted.get(), 0);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_correcting_and_corrects_nothing_twice() {
    let (broker, brokers) = common::own_broker(4, 1).await;
    let flags = [
        "--brokers",
        &brokers,
        "--window-ms",
        "500",
        "--lateness-ms",
        "100",
    ];
    let late = |user: &str, ts| json!({"user_id": user, "emoji_type": "😂", "timestamp": ts, "stream_id": "match"});

    // First run: the window, then one correction of it.
    let (first, seen) = start(&flags).await;
    let ts = now_ms();
    let window = (ts / 500) as u64;
    post_batch(&first, &reactions("match", "🔥", 3, ts)).await;
    common::wait_for_total(&first, &seen, 3).await;
    post_batch(&first, &[late("late-1", ts)]).await;
    wait_until("the first correction", PATIENCE, || {
        first.stats.corrections_emitted.get() == 1
    })
    .await;
    first.shutdown().await.unwrap();

    // Second run, within the horizon: another late reaction corrects the window again, from
    // its rebuilt counts; what the first run had read is not counted again.
    let (second, _) = start(&flags).await;
    post_batch(&second, &[late("late-2", ts)]).await;
    wait_until("the second correction", PATIENCE, || {
        second.stats.corrections_emitted.get() == 1
    })
    .await;
    assert_eq!(second.stats.corrected.get(), 1);
    second.shutdown().await.unwrap();

    let topic = tokio::task::spawn_blocking(move || {
        let t = common::windows_topic(&brokers);
        drop(broker);
        t
    })
    .await
    .unwrap();
    let revisions: Vec<(u32, u64)> = topic
        .iter()
        .filter(|w| w.stream_id.as_str() == "match" && w.window == window)
        .map(|w| (w.revision, w.total))
        .collect();
    assert_eq!(revisions, [(0, 3), (1, 4), (2, 5)]);
}
