//! SSE delivery end to end, read with a real SSE client (`eventsource-stream`): every client
//! on every subscriber gets every window, reconnects resume after `Last-Event-ID`, 1,000
//! clients at once, registration and growth, shutdown with open streams.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{batch, post_batch, start, Seen};
use dataflows::WindowSummary;
use emostream::system::System;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;

/// What one client has received: (event type, id, summary).
type Received = Arc<Mutex<Vec<(String, u64, WindowSummary)>>>;

struct Client {
    received: Received,
    ended: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn ids(&self) -> Vec<u64> {
        self.received.lock().unwrap().iter().map(|r| r.1).collect()
    }
    fn windows(&self) -> Vec<WindowSummary> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.2.clone())
            .collect()
    }
}

async fn register(http: &reqwest::Client, system: &System) -> Value {
    let response = http
        .post(format!("http://{}/clients", system.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// `GET /clusters`.
async fn tree(http: &reqwest::Client, system: &System) -> Value {
    let response = http
        .get(format!("http://{}/clusters", system.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Follows `url` with an SSE client, recording every event.
async fn follow(http: &reqwest::Client, url: &str, last_event_id: Option<u64>) -> Client {
    let mut request = http.get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "an SSE stream"
    );
    let received: Received = Arc::default();
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sink, done) = (Arc::clone(&received), Arc::clone(&ended));
    let task = tokio::spawn(async move {
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            let summary: WindowSummary = serde_json::from_str(&event.data).unwrap();
            let id: u64 = event.id.parse().unwrap();
            assert_eq!(id, summary.window, "the event id is the window index");
            sink.lock().unwrap().push((event.event, id, summary));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Client {
        received,
        ended,
        task,
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn last_window(seen: &Seen) -> Option<u64> {
    seen.lock().unwrap().last().map(|w| w.window)
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
        clients.push(follow(&http, reg["events_url"].as_str().unwrap(), None).await);
    }
    assert_eq!(places.values().copied().collect::<Vec<_>>(), [2, 2, 2, 2]);

    let mut reactions = batch("a", "🔥", 500);
    reactions.extend(batch("b", "😂", 1300));
    post_batch(&system, &reactions).await;
    common::wait_for_total(&system, &seen, 1800).await;
    let last = last_window(&seen).unwrap();
    wait_until("every client has the last window", || {
        clients.iter().all(|c| c.ids().last() == Some(&last))
    })
    .await;
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
        assert!(client
            .received
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.0 == "window"));
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
    let first = follow(&http, &url, None).await;
    wait_until("two windows arrived", || first.ids().len() >= 2).await;
    let had = *first.ids().last().unwrap();
    first.task.abort();
    let _ = first.task.await;

    post_batch(&system, &batch("x", "🎉", 25)).await;
    common::wait_for_total(&system, &seen, 25).await;
    wait_until("three windows were missed", || {
        last_window(&seen).is_some_and(|w| w >= had + 3)
    })
    .await;
    let again = follow(&http, &url, Some(had)).await;
    let target = last_window(&seen).unwrap();
    wait_until("the reconnected client caught up", || {
        again.ids().last().is_some_and(|&id| id >= target)
    })
    .await;
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
        clients.push(follow(&http, reg["events_url"].as_str().unwrap(), None).await);
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
    wait_until("a first window", || last_window(&seen).is_some()).await;
    let from = last_window(&seen).unwrap() + 1;
    post_batch(&system, &batch("k", "👏", 40)).await;
    wait_until("three more windows", || {
        last_window(&seen).is_some_and(|w| w >= from + 2)
    })
    .await;
    let to = last_window(&seen).unwrap();
    wait_until("every client has every window", || {
        clients
            .iter()
            .all(|c| c.ids().last().is_some_and(|&id| id >= to))
    })
    .await;
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
    let reader = follow(&http, &url, None).await;
    wait_until("the stalled client is connected", || {
        system.registry.view().clusters[0].subscribers[0].connected == 2
    })
    .await;
    post_batch(&system, &batch("s", "🙌", 15)).await;
    common::wait_for_total(&system, &seen, 15).await;
    let last = last_window(&seen).unwrap();
    wait_until("the reading client has the last window", || {
        reader.ids().last() == Some(&last)
    })
    .await;
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
    let grown = follow(&http, regs[2]["events_url"].as_str().unwrap(), None).await;

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
    wait_until("the added subscriber delivers a window", || {
        !grown.ids().is_empty()
    })
    .await;
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
        clients.push(follow(&http, &url, None).await);
    }
    wait_until("streams are open", || {
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
    wait_until("every stream ended", || {
        clients
            .iter()
            .all(|c| c.ended.load(std::sync::atomic::Ordering::SeqCst))
    })
    .await;
}

/// Posts one reaction for each of `n` distinct emojis, so the window's summary is large.
async fn post_many_emojis(system: &System, n: usize) {
    let ts = common::now_ms();
    let reactions: Vec<Value> = emojis::iter()
        .filter(|e| dataflows::Emoji::parse(e.as_str()).is_ok())
        .take(n)
        .enumerate()
        .map(|(i, e)| serde_json::json!({"user_id": format!("m{i}"), "emoji_type": e.as_str(), "timestamp": ts}))
        .collect();
    post_batch(system, &reactions).await;
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
    ])
    .await;
    // A client with a small receive buffer that sends its request and then stops reading, so
    // the server's writes back up after a few large windows.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&system.http_addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = Pausable {
        inner: stream,
        paused: Arc::clone(&paused),
    };
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
    paused.store(true, std::sync::atomic::Ordering::SeqCst);
    // A client that reads, on the same subscriber.
    let reader = follow(
        &reqwest::Client::new(),
        &format!(
            "http://{}/clusters/0/subscribers/0/events",
            system.http_addr
        ),
        None,
    )
    .await;

    // The hub only notices a lagging client when its stream is polled again, i.e. once the
    // socket drains: fill the buffers with large windows first.
    wait_until("a first window", || last_window(&seen).is_some()).await;
    let until = last_window(&seen).unwrap() + 60;
    while last_window(&seen).is_none_or(|w| w < until) {
        post_many_emojis(&system, 5000).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    paused.store(false, std::sync::atomic::Ordering::SeqCst);
    // Reading again, the client finds the resync in its stream, and live windows after it.
    use http_body_util::BodyExt;
    let mut events = response.into_body().into_data_stream().eventsource();
    let mut kinds = Vec::new();
    let mut last_id = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kinds.iter().any(|k| k == "resync") || kinds.last().is_some_and(|k| k == "resync") {
        assert!(Instant::now() < deadline, "events seen: {kinds:?}");
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let id: u64 = event.id.parse().unwrap();
        assert!(id > last_id, "ids only move forward");
        last_id = id;
        let summary: WindowSummary = serde_json::from_str(&event.data).unwrap();
        assert_eq!(summary.window, id);
        kinds.push(event.event);
    }
    assert!(system.stats.resyncs.get() >= 1);
    // Meanwhile the reading client got every window and never a resync.
    let last = last_window(&seen).unwrap();
    wait_until("the reader has the last window", || {
        reader.ids().last() == Some(&last)
    })
    .await;
    let ids = reader.ids();
    assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{ids:?}");
    assert!(reader
        .received
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.0 == "window"));
    system.shutdown().await.unwrap();
}

/// A connection whose reads can be paused: while paused, it reads nothing (and is polled
/// again every 50 ms), as a client that stopped reading would.
struct Pausable {
    inner: tokio::net::TcpStream,
    paused: Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for Pausable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            let waker = cx.waker().clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                waker.wake();
            });
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Pausable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_without_an_open_stream_expire() {
    let (system, _seen) = start(&["--client-ttl-secs", "1"]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", system.http_addr);
    let clients = || async { tree(&http, &system).await["clients"].as_u64().unwrap() };
    let ghost = register(&http, &system).await;
    let viewer = register(&http, &system).await;
    let stream = follow(&http, viewer["events_url"].as_str().unwrap(), None).await;
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
    stream.task.abort();
    let _ = stream.task.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients().await > 0 {
        assert!(
            Instant::now() < deadline,
            "the viewer that left is released too"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
