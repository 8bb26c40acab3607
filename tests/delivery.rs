//! SSE delivery end to end, read with a real SSE client (`eventsource-stream`): every client
//! on every subscriber gets every window, reconnects resume after `Last-Event-ID`, 1,000
//! clients at once, registration and growth, shutdown with open streams.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::slow::{fill_with_large_windows, last_window, post_many_emojis, Pausable};
use common::sse::wait_all_for_window;
use common::{batch, get_json, poll_until, post_batch, start, wait_until, Follower, PATIENCE};
use dataflows::WindowSummary;
use emostream::system::System;
use futures_util::StreamExt;
use serde_json::Value;

async fn register(http: &reqwest::Client, system: &System) -> Value {
    common::register(http, &format!("http://{}", system.http_addr), None).await
}

/// `GET /clusters`.
async fn tree(http: &reqwest::Client, system: &System) -> Value {
    get_json(http, &format!("http://{}/clusters", system.http_addr)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_on_every_subscriber_receives_each_window_with_exact_counts() {
    let (system, seen) = start(&["--clusters", "2", "--subscribers", "2"]).await;
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    let mut places = BTreeMap::<(u64, u64), usize>::new();
    for _ in 0..8 {
        let reg = register(&http, &system).await;
        let place = (
            reg["cluster"].as_u64().unwrap(),
            reg["subscriber"].as_u64().unwrap(),
        );
        *places.entry(place).or_default() += 1;
        clients.push(Follower::open(&http, reg["events_url"].as_str().unwrap(), None).await);
    }
    assert_eq!(places.values().copied().collect::<Vec<_>>(), [2, 2, 2, 2]);

    let mut reactions = batch("a", "🔥", 500);
    reactions.extend(batch("b", "😂", 1300));
    post_batch(&system, &reactions).await;
    common::wait_for_total(&system, &seen, 1800).await;
    let last = last_window(&seen).unwrap();
    wait_all_for_window(&clients, last).await;
    let seen = seen.lock().unwrap().clone();
    for client in &clients {
        // No Last-Event-ID: the latest window at connection, then every window after it.
        let first = client.ids()[0];
        let expected: Vec<WindowSummary> =
            seen.iter().filter(|w| w.window >= first).cloned().collect();
        assert_eq!(
            client.windows(),
            expected,
            "same windows, same counts, in order"
        );
        assert!(client.kinds().iter().all(|k| k == "window"));
        assert_eq!(
            expected.iter().map(|w| w.total).sum::<u64>(),
            1800,
            "connected before the reactions: every one of them is in its windows"
        );
    }
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_last_event_id_receives_exactly_the_missed_windows() {
    let (system, seen) = start(&[]).await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/clusters/1/subscribers/2/events",
        system.http_addr
    );
    let first = Follower::open(&http, &url, None).await;
    first.wait_for_ids(2).await;
    let had = *first.ids().last().unwrap();
    first.close().await;

    post_batch(&system, &batch("x", "🎉", 25)).await;
    common::wait_for_total(&system, &seen, 25).await;
    wait_until("three windows were missed", PATIENCE, || {
        last_window(&seen).is_some_and(|w| w >= had + 3)
    })
    .await;
    let again = Follower::open(&http, &url, Some(had)).await;
    let target = last_window(&seen).unwrap();
    again.wait_for_window(target).await;
    let ids = again.ids();
    let expected: Vec<u64> = (had + 1..=*ids.last().unwrap()).collect();
    assert_eq!(ids, expected, "every missed window once, then live, no gap");
    let by_id: BTreeMap<u64, WindowSummary> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|w| (w.window, w.clone()))
        .collect();
    for w in again.windows() {
        assert_eq!(Some(&w), by_id.get(&w.window));
    }
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_each_receive_every_window() {
    let (system, seen) = start(&[]).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let reg = register(&http, &system).await;
        clients.push(Follower::open(&http, reg["events_url"].as_str().unwrap(), None).await);
    }
    let tree = tree(&http, &system).await;
    let connected: u64 = tree["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["subscribers"].as_array().unwrap())
        .map(|s| s["connected"].as_u64().unwrap())
        .sum();
    assert_eq!(connected, 1000);
    wait_until("a first window", PATIENCE, || last_window(&seen).is_some()).await;
    let from = last_window(&seen).unwrap() + 1;
    post_batch(&system, &batch("k", "👏", 40)).await;
    wait_until("three more windows", PATIENCE, || {
        last_window(&seen).is_some_and(|w| w >= from + 2)
    })
    .await;
    let to = last_window(&seen).unwrap();
    wait_all_for_window(&clients, to).await;
    let expected: Vec<WindowSummary> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|w| (from..=to).contains(&w.window))
        .cloned()
        .collect();
    for client in &clients {
        let ids = client.ids();
        assert!(
            ids.windows(2).all(|p| p[1] == p[0] + 1),
            "contiguous, none twice: {ids:?}"
        );
        let got: Vec<WindowSummary> = client
            .windows()
            .into_iter()
            .filter(|w| (from..=to).contains(&w.window))
            .collect();
        assert_eq!(got, expected);
    }
    assert_eq!(
        expected.iter().map(|w| w.total).sum::<u64>(),
        40,
        "the reactions are in those windows"
    );
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_delay_the_others() {
    use tokio::io::AsyncWriteExt;
    let (system, seen) = start(&[]).await;
    // A client that sends its request and never reads.
    let mut stalled = tokio::net::TcpStream::connect(system.http_addr)
        .await
        .unwrap();
    stalled
        .write_all(b"GET /clusters/0/subscribers/0/events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/clusters/0/subscribers/0/events",
        system.http_addr
    );
    let reader = Follower::open(&http, &url, None).await;
    wait_until("the stalled client is connected", PATIENCE, || {
        system.registry.view().clusters[0].subscribers[0].connected == 2
    })
    .await;
    post_batch(&system, &batch("s", "🙌", 15)).await;
    common::wait_for_total(&system, &seen, 15).await;
    let last = last_window(&seen).unwrap();
    reader.wait_for_window(last).await;
    assert_eq!(common::sums(&reader.windows())["🙌"], 15);
    drop(stalled);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_release_tree_and_errors() {
    let (system, _seen) = start(&[
        "--clusters",
        "2",
        "--subscribers",
        "1",
        "--subscriber-capacity",
        "1",
    ])
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", system.http_addr);
    // Without Content-Type a page of any origin could register without a CORS preflight.
    let bare = http.post(format!("{base}/clients")).send().await.unwrap();
    assert_eq!(bare.status(), 415);
    let body: Value = bare.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_media_type");
    assert_eq!(system.stats.registrations.get(), 0);
    let mut regs = Vec::new();
    for _ in 0..3 {
        regs.push(register(&http, &system).await);
    }
    let places: Vec<(u64, u64)> = regs
        .iter()
        .map(|r| {
            (
                r["cluster"].as_u64().unwrap(),
                r["subscriber"].as_u64().unwrap(),
            )
        })
        .collect();
    // Full at one client each: the third grows cluster 0 (a tie at 1 client, lowest first).
    assert_eq!(places, [(0, 0), (1, 0), (0, 1)]);
    assert_eq!(
        regs[2]["events_url"],
        format!(
            "{base}/clusters/0/subscribers/1/events?client_id={}",
            regs[2]["client_id"].as_str().unwrap()
        )
    );
    let grown = Follower::open(&http, regs[2]["events_url"].as_str().unwrap(), None).await;

    let tree = tree(&http, &system).await;
    assert_eq!(tree["clients"], 3);
    let loads: Vec<Vec<u64>> = tree["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["subscribers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["clients"].as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(loads, [vec![1, 1], vec![1]]);

    let id = regs[1]["client_id"].as_str().unwrap();
    let delete = http
        .delete(format!("{base}/clients/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    let again = http
        .delete(format!("{base}/clients/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "unknown_client"
    );
    // The freed place is the least loaded again.
    assert_eq!(register(&http, &system).await["cluster"], 1);

    let unknown = http
        .get(format!("{base}/clusters/5/subscribers/0/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"],
        "unknown_subscriber"
    );
    let bad_id = http
        .get(format!("{base}/clusters/0/subscribers/0/events"))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_id.status(), 400);
    assert_eq!(
        bad_id.json::<Value>().await.unwrap()["error"],
        "invalid_last_event_id"
    );

    // A subscriber added while running receives windows too.
    grown.wait_for_ids(1).await;
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_open_streams_completes() {
    let (system, _seen) = start(&[]).await;
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for s in 0..3 {
        let url = format!(
            "http://{}/clusters/0/subscribers/{s}/events",
            system.http_addr
        );
        clients.push(Follower::open(&http, &url, None).await);
    }
    wait_until("streams are open", PATIENCE, || {
        system.registry.view().clusters[0]
            .subscribers
            .iter()
            .all(|s| s.connected == 1)
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), system.shutdown())
        .await
        .expect("shutdown finishes with streams open")
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    for client in &clients {
        client
            .wait_ended(deadline.saturating_duration_since(Instant::now()))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_resynced_when_it_reads_again() {
    let (system, seen) = start(&[
        "--window-ms",
        "200",
        "--lateness-ms",
        "100",
        "--client-queue",
        "8",
        // The pause below is longer than the default write timeout, which would close the
        // client instead (tests/connections.rs and delivery::lean test that).
        "--write-timeout-ms",
        "120000",
    ])
    .await;
    // A client with a small receive buffer that sends its request and then stops reading, so
    // the server's writes back up after a few large windows.
    let (stream, pause) = Pausable::connect_small(system.http_addr);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/clusters/0/subscribers/0/events")
        .header("host", system.http_addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    pause.set(true);
    // A client that reads, on the same subscriber.
    let reader = Follower::open(
        &reqwest::Client::new(),
        &format!(
            "http://{}/clusters/0/subscribers/0/events",
            system.http_addr
        ),
        None,
    )
    .await;

    fill_with_large_windows(&system, &seen, 60).await;
    pause.set(false);
    // Reading again, the client finds the resync in its stream, and live windows after it.
    use http_body_util::BodyExt;
    let url = format!(
        "http://{}/clusters/0/subscribers/0/events",
        system.http_addr
    );
    let headers = response.headers().clone();
    let resumed = Follower::read(&url, headers, response.into_body().into_data_stream());
    resumed
        .wait_until(
            "a resync, then a live window",
            Duration::from_secs(20),
            |events| {
                events.iter().any(|e| e.kind == "resync")
                    && events.last().is_some_and(|e| e.kind != "resync")
            },
        )
        .await;
    let ids = resumed.ids();
    assert!(
        ids.windows(2).all(|p| p[1] > p[0]),
        "ids only move forward: {ids:?}"
    );
    assert!(system.stats.resyncs.get() >= 1);
    resumed.close().await;
    // Meanwhile the reading client got every window and never a resync.
    let last = last_window(&seen).unwrap();
    reader.wait_for_window(last).await;
    let ids = reader.ids();
    assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{ids:?}");
    assert!(reader.kinds().iter().all(|k| k == "window"));
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_without_an_open_stream_expire() {
    let (system, _seen) = start(&["--client-ttl-secs", "1"]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", system.http_addr);
    let clients = || async { tree(&http, &system).await["clients"].as_u64().unwrap() };
    let ghost = register(&http, &system).await;
    let viewer = register(&http, &system).await;
    let stream = Follower::open(&http, viewer["events_url"].as_str().unwrap(), None).await;
    // Time must pass, not a condition come true: well past the 1 s time to live, the viewer
    // with an open stream must still be registered.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(clients().await, 1, "the viewer with an open stream stays");
    let gone = http
        .delete(format!(
            "{base}/clients/{}",
            ghost["client_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "the ghost was released");
    stream.close().await;
    let clients = &clients;
    poll_until(
        "the viewer that left is released too",
        Duration::from_secs(10),
        move || async move {
            match clients().await {
                0 => Ok(()),
                n => Err(format!("{n} clients registered")),
            }
        },
    )
    .await;
    assert_eq!(system.stats.clients_expired.get(), 2);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_start_with_a_retry_hint_and_carry_keep_alives() {
    let (system, _seen) = start(&["--keep-alive-secs", "1"]).await;
    let response = reqwest::get(format!(
        "http://{}/clusters/2/subscribers/2/events",
        system.http_addr
    ))
    .await
    .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The comment line of a keep-alive is what an SSE parser skips; read the raw bytes.
    while !text.contains("\n:\n\n") && !text.starts_with(":\n\n") {
        assert!(Instant::now() < deadline, "no keep-alive in {text:?}");
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("retry: 2000\n\n"), "{text:?}");
    system.shutdown().await.unwrap();
}

/// The first event of a raw SSE body, after the `retry:` preface: its text, and the bytes of
/// the body up to its end.
async fn first_event<S, E>(body: &mut S) -> (String, usize)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut read = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        // The preface is one block, the first event the next.
        let blocks: Vec<usize> = read
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"\n\n")
            .map(|(i, _)| i + 2)
            .collect();
        if let [preface, end, ..] = blocks[..] {
            let text = String::from_utf8(read[preface..end].to_vec()).unwrap();
            return (text, end);
        }
        let within = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(within, body.next())
            .await
            .expect("a first event in time")
            .expect("the stream is open")
            .unwrap();
        read.extend_from_slice(&chunk);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_past_max_resume_bytes_skips_to_the_latest_window() {
    const BOUND: usize = 120_000;
    let (system, seen) = start(&[
        "--window-ms",
        "500",
        "--lateness-ms",
        "100",
        "--max-resume-bytes",
        &BOUND.to_string(),
    ])
    .await;
    // Three windows of a batch each of distinct emojis: each encodes to tens of KB.
    let mut large: Vec<WindowSummary> = Vec::new();
    for _ in 0..3 {
        post_many_emojis(&system, 2000).await;
        let known: Vec<u64> = large.iter().map(|w| w.window).collect();
        let window = poll_until("the batch's window closed", PATIENCE, || {
            let found = seen
                .lock()
                .unwrap()
                .iter()
                .find(|w| w.total >= 1000 && !known.contains(&w.window))
                .cloned();
            std::future::ready(found.ok_or_else(|| "not yet".to_owned()))
        })
        .await;
        large.push(window);
    }
    let encoded = |w: &WindowSummary| w.to_json().len() + 64;
    let largest = large.iter().map(encoded).max().unwrap();
    assert!(
        large.iter().map(encoded).sum::<usize>() > BOUND && largest + 10_000 < BOUND,
        "the three windows are over the bound, one (and a few empty ones) within it"
    );
    let last_large = large.last().unwrap().window;
    let url = format!(
        "http://{}/clusters/0/subscribers/0/events",
        system.http_addr
    );
    let http = reqwest::Client::new();

    // A small request asking for every retained window gets one window, as a resync.
    let response = http
        .get(&url)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (event, bytes) = first_event(&mut body).await;
    assert!(event.contains("\nevent: resync\n"), "{}", &event[..80]);
    assert!(
        bytes <= BOUND + largest,
        "{bytes} bytes before the live stream, over {BOUND} and a window"
    );
    let id: u64 = event
        .strip_prefix("id: ")
        .and_then(|rest| rest.split('\n').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(id >= last_large, "the latest window, {id}");
    drop(body);
    assert_eq!(system.stats.resume_truncated.get(), 1);
    let metrics = http
        .get(format!("http://{}/metrics", system.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("\nemostream_resume_truncated_total 1\n"));

    // A resume within the bound still replays what it missed, then goes live.
    let resumed = Follower::open(&http, &url, Some(last_large - 1)).await;
    let target = last_window(&seen).unwrap() + 1;
    resumed.wait_for_window(target).await;
    let ids = resumed.ids();
    assert_eq!(ids[0], last_large);
    assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{ids:?}");
    assert!(resumed.kinds().iter().all(|k| k == "window"));
    assert_eq!(resumed.windows()[0], *large.last().unwrap());
    assert_eq!(system.stats.resume_truncated.get(), 1);
    system.shutdown().await.unwrap();
}

/// Subscribers in a `GET /clusters` answer.
fn subscribers(tree: &Value) -> usize {
    tree["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subscribers"].as_array().unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_added_at_capacity_go_once_their_clients_expire() {
    let (system, _seen) = start(&[
        "--clusters",
        "2",
        "--subscribers",
        "1",
        "--subscriber-capacity",
        "1",
        "--client-ttl-secs",
        "1",
    ])
    .await;
    let http = reqwest::Client::new();
    let mut regs = Vec::new();
    for _ in 0..12 {
        regs.push(register(&http, &system).await);
    }
    assert_eq!(subscribers(&tree(&http, &system).await), 12);
    // A stream on the last subscriber holds it, and those before it, after the others expire.
    let last = regs.last().unwrap();
    let stream = Follower::open(&http, last["events_url"].as_str().unwrap(), None).await;
    let (h, sys) = (&http, &system);
    poll_until(
        "every client without a stream expired",
        Duration::from_secs(10),
        || async move {
            match tree(h, sys).await["clients"].as_u64().unwrap() {
                1 => Ok(()),
                n => Err(format!("{n} clients")),
            }
        },
    )
    .await;
    assert_eq!(subscribers(&tree(&http, &system).await), 12);
    stream.close().await;
    poll_until(
        "the tree is back to its 2 subscribers",
        Duration::from_secs(10),
        || async move {
            let tree = tree(h, sys).await;
            match (tree["clients"].as_u64().unwrap(), subscribers(&tree)) {
                (0, 2) => Ok(()),
                seen => Err(format!("(clients, subscribers) {seen:?}")),
            }
        },
    )
    .await;
    let gone = http
        .get(last["events_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(
        gone.json::<Value>().await.unwrap()["error"],
        "unknown_subscriber"
    );
    // Registering again grows the tree from where it ends.
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(register(&http, &system).await);
    }
    assert_eq!(
        (
            again[2]["cluster"].as_u64(),
            again[2]["subscriber"].as_u64()
        ),
        (Some(0), Some(1))
    );
    system.shutdown().await.unwrap();
}
