//! WebSocket delivery from the outside, with a real WebSocket client (`tokio-tungstenite`):
//! the same windows as SSE on the same subscriber, resume with `last_event_id`, a client that
//! stops reading resynced without delaying the others, pings, client messages, and malformed
//! upgrades answered with a clear 400.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::slow::{fill_with_large_windows, last_window, Pausable, Pause};
use common::sse::End;
use common::ws::{self, ws_url};
use common::{batch, metric, post_batch, register, start, wait_for_total, Follower, PATIENCE};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_sse_clients_of_one_subscriber_receive_the_same_exact_windows() {
    let (system, seen) = start(&["--clusters", "1", "--subscribers", "1"]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", system.http_addr);
    let sse_client = register(&http, &base, None).await;
    let ws_client = register(&http, &base, None).await;
    let other_stream = register(&http, &base, Some("match-7")).await;
    assert_eq!(sse_client["subscriber"], ws_client["subscriber"]);
    let sse = Follower::open(&http, sse_client["events_url"].as_str().unwrap(), None).await;
    let socket = ws::open(
        &ws_url(ws_client["events_url"].as_str().unwrap(), None),
        &[],
    )
    .await;
    let other = ws::open(
        &ws_url(other_stream["events_url"].as_str().unwrap(), None),
        &[],
    )
    .await;

    post_batch(&system, &batch("fan", "🔥", 30)).await;
    let mut match_reactions = batch("m", "😂", 4);
    for r in &mut match_reactions {
        r["stream_id"] = "match-7".into();
    }
    post_batch(&system, &match_reactions).await;
    wait_for_total(&system, &seen, 34).await;
    let last = common::of_stream(&seen.lock().unwrap(), "default")
        .last()
        .unwrap()
        .window;
    sse.wait_for_window(last).await;
    socket.wait_for_window(last).await;

    // Every window both received is the same window, and both counted the 30 exactly.
    let by_id = |f: &Follower| {
        f.windows()
            .into_iter()
            .map(|w| (w.window, w))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (over_sse, over_ws) = (by_id(&sse), by_id(&socket));
    let common_ids: Vec<_> = over_ws
        .keys()
        .filter(|k| over_sse.contains_key(k))
        .collect();
    assert!(!common_ids.is_empty());
    for id in common_ids {
        assert_eq!(over_sse[id], over_ws[id], "window {id}");
    }
    for follower in [&sse, &socket] {
        let counted: u64 = follower.windows().iter().map(|w| w.total).sum();
        assert_eq!(counted, 30, "{}", follower.url);
        assert!(follower
            .windows()
            .iter()
            .all(|w| w.stream_id.as_str() == "default"));
        let ids = follower.ids();
        assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{ids:?}");
    }
    // The other stream's client has only its stream's windows.
    other
        .wait_until("match-7's 4", PATIENCE, |events| {
            events.iter().map(|e| e.summary.total).sum::<u64>() == 4
        })
        .await;
    assert!(other
        .windows()
        .iter()
        .all(|w| w.stream_id.as_str() == "match-7"));

    assert_eq!(
        metric(
            system.http_addr,
            "emostream_event_streams_open{transport=\"ws\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            system.http_addr,
            "emostream_event_streams_open{transport=\"sse\"}"
        )
        .await,
        1.0
    );
    let sent_ws = metric(
        system.http_addr,
        "emostream_events_sent_total{transport=\"ws\"}",
    )
    .await;
    assert!(
        sent_ws >= (socket.ids().len() + other.ids().len()) as f64,
        "{sent_ws}"
    );
    socket.close().await;
    other.close().await;
    sse.close().await;
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_resumes_after_last_event_id_with_no_gap_and_no_repeat() {
    let (system, _seen) = start(&["--window-ms", "200", "--lateness-ms", "100"]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", system.http_addr);
    let client = register(&http, &base, None).await;
    let events_url = client["events_url"].as_str().unwrap().to_owned();
    post_batch(&system, &batch("r", "👏", 3)).await;
    let first = ws::open(&ws_url(&events_url, None), &[]).await;
    first.wait_for_ids(6).await;
    let ids = first.ids();
    let seen_first = first.windows();
    first.close().await;
    let resume_after = ids[2];

    let resumed = ws::open(&ws_url(&events_url, Some(resume_after)), &[]).await;
    resumed.wait_for_ids(5).await;
    let again = resumed.ids();
    assert_eq!(
        again[0],
        resume_after + 1,
        "resumed right after {resume_after}: {again:?}"
    );
    assert!(again.windows(2).all(|p| p[1] == p[0] + 1), "{again:?}");
    // The windows both saw are the same windows.
    for b in resumed.windows() {
        if let Some(a) = seen_first.iter().find(|a| a.window == b.window) {
            assert_eq!(*a, b);
        }
    }
    resumed.close().await;
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_stops_reading_is_resynced_and_does_not_delay_the_others() {
    let (system, seen) = start(&[
        "--window-ms",
        "200",
        "--lateness-ms",
        "100",
        "--client-queue",
        "8",
        // The pause is longer than the default write timeout and the keep-alive, which would
        // close the client instead (tested below).
        "--write-timeout-ms",
        "120000",
        "--keep-alive-secs",
        "600",
    ])
    .await;
    let url = format!("ws://{}/clusters/0/subscribers/0/ws", system.http_addr);
    let (stream, pause) = Pausable::connect_small(system.http_addr);
    let (slow, response) = tokio_tungstenite::client_async(&url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    pause.set(true);
    let reader = ws::open(&url, &[]).await;

    fill_with_large_windows(&system, &seen, 60).await;
    pause.set(false);
    let resumed = Follower::follow(
        &url,
        Default::default(),
        slow.filter_map(|m| async move {
            match m {
                Ok(Message::Text(text)) => {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap();
                    Some(Ok(common::sse::Event {
                        kind: v["event"].as_str().unwrap().to_owned(),
                        id: v["data"]["window"].as_u64().unwrap(),
                        summary: serde_json::from_value(v["data"].clone()).unwrap(),
                    }))
                }
                Ok(_) => None,
                Err(e) => Some(Err(End::Failed(e.to_string()))),
            }
        }),
    );
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
    resumed.close().await;
    // Meanwhile the reading client got every window, and never a resync.
    let last = last_window(&seen).unwrap();
    reader.wait_for_window(last).await;
    let ids = reader.ids();
    assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{ids:?}");
    assert!(reader.kinds().iter().all(|k| k == "window"));
    reader.close().await;
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_by_readers_and_close_clients_that_do_not_answer() {
    let (system, _seen) = start(&["--keep-alive-secs", "1"]).await;
    let url = format!("ws://{}/clusters/0/subscribers/0/ws", system.http_addr);
    post_batch(&system, &batch("p", "🎉", 2)).await;

    // A reader: its client answers pings, so it stays; its text messages are ignored.
    let (mut reader, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    reader.send(Message::text("hello")).await.unwrap();
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), reader.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the stream ended: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(pings >= 2, "{pings} pings in 3.5 s at a 1 s keep-alive");

    // A message too large for a client to have any reason to send: 1009.
    reader
        .send(Message::text("x".repeat(10_000)))
        .await
        .unwrap();
    let code = loop {
        match tokio::time::timeout(PATIENCE, reader.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, 1009);

    // A client that does not read cannot answer: closed at the next keep-alive, 1008.
    let socket = tokio::net::TcpStream::connect(system.http_addr)
        .await
        .unwrap();
    let pause = Arc::new(Pause::default());
    let stream = Pausable {
        inner: socket,
        pause: Arc::clone(&pause),
    };
    let (mut silent, _) = tokio_tungstenite::client_async(&url, stream).await.unwrap();
    pause.set(true);
    common::poll_until("the silent client closed", PATIENCE, || async {
        match metric(system.http_addr, "emostream_ws_unanswered_pings_total").await {
            n if n >= 1.0 => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;
    pause.set(false);
    let code = loop {
        match tokio::time::timeout(PATIENCE, silent.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, 1008);

    assert_eq!(
        metric(system.http_addr, "emostream_ws_unanswered_pings_total").await,
        1.0,
        "the reader answered every ping"
    );
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_upgrade_gets_a_clear_400() {
    let (system, _seen) = start(&[]).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/clusters/0/subscribers/0/ws", system.http_addr);
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let with = |drop: Option<&str>, change: Option<(&'static str, &'static str)>| {
        let mut request = http.get(&url);
        for (name, value) in upgrade {
            if Some(name) == drop {
                continue;
            }
            let value = match change {
                Some((n, v)) if n == name => v,
                _ => value,
            };
            request = request.header(name, value);
        }
        request
    };
    for (what, request, says) in [
        ("a plain GET", http.get(&url), "Upgrade: websocket"),
        (
            "no Connection",
            with(Some("connection"), None),
            "Connection: Upgrade",
        ),
        (
            "version 8",
            with(None, Some(("sec-websocket-version", "8"))),
            "13",
        ),
        (
            "no key",
            with(Some("sec-websocket-key"), None),
            "Sec-WebSocket-Key",
        ),
        (
            "a short key",
            with(None, Some(("sec-websocket-key", "c2hvcnQ="))),
            "16 random bytes",
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_websocket_upgrade", "{what}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{what}: {body}"
        );
    }
    for (path, status, code) in [
        (
            "/clusters/0/subscribers/0/ws?stream_id=no%20spaces",
            400,
            "invalid_stream_id",
        ),
        (
            "/clusters/0/subscribers/0/ws?last_event_id=soon",
            400,
            "invalid_last_event_id",
        ),
        ("/clusters/0/subscribers/99/ws", 404, "unknown_subscriber"),
    ] {
        let mut request = http.get(format!("http://{}{path}", system.http_addr));
        for (name, value) in upgrade {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{path}");
    }
    system.shutdown().await.unwrap();
}

/// Browsers send long cookies and many headers: an upgrade with a 12 KiB head of 40 extra
/// header lines is served like any other (a shorter limit sent it to a route that refused it
/// as not the first request of its connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_with_a_long_head_is_served() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let (system, _seen) = start(&[]).await;
    let url = format!("ws://{}/clusters/0/subscribers/0/ws", system.http_addr);
    let mut request = url.as_str().into_client_request().unwrap();
    let headers = request.headers_mut();
    let cookie = format!("session={}", "x".repeat(12 * 1024));
    headers.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    for i in 0..40 {
        let name = HeaderName::from_bytes(format!("x-extra-{i}").as_bytes()).unwrap();
        headers.insert(name, HeaderValue::from_static("1"));
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    drop(socket);
    system.shutdown().await.unwrap();
}

/// Past the socket path's limits the upgrade reaches the HTTP routes, which cannot hand over
/// the connection: it is refused with a 400 that names the limits, and the registered client
/// can then open its WebSocket and receives its windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_past_the_head_limits_is_refused_with_the_limits() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Error;
    let (system, seen) = start(&[]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", system.http_addr);
    let client = register(&http, &base, None).await;
    let url = ws_url(client["events_url"].as_str().unwrap(), None);
    let mut request = url.as_str().into_client_request().unwrap();
    let cookie = format!("session={}", "x".repeat(20 * 1024));
    request
        .headers_mut()
        .insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "websocket_not_first", "{body}");
            assert!(
                body["message"].as_str().unwrap().contains("16 KiB"),
                "{body}"
            );
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    let socket = ws::open(&url, &[]).await;
    post_batch(&system, &batch("fan", "🔥", 3)).await;
    wait_for_total(&system, &seen, 3).await;
    let last = common::of_stream(&seen.lock().unwrap(), "default")
        .last()
        .unwrap()
        .window;
    socket.wait_for_window(last).await;
    let received: u64 = socket.windows().iter().map(|w| w.total).sum();
    assert_eq!(received, 3);
    system.shutdown().await.unwrap();
}

/// No subprotocol is offered: an upgrade asking for some is answered 101 without one (RFC
/// 6455's answer of a server that agrees to none), and a client that insists on one fails the
/// handshake itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_asking_for_a_subprotocol_is_answered_without_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let (system, _seen) = start(&[]).await;
    let mut socket = tokio::net::TcpStream::connect(system.http_addr)
        .await
        .unwrap();
    socket
        .write_all(
            b"GET /clusters/0/subscribers/0/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat, emostream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut byte))
            .await
            .expect("the answer's head within the patience")
            .unwrap();
        assert_eq!(n, 1, "the connection closed after {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
    drop(socket);

    let url = format!("ws://{}/clusters/0/subscribers/0/ws", system.http_addr);
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(
        refused.is_err(),
        "a client that asked for a subprotocol accepted an answer without one"
    );
    system.shutdown().await.unwrap();
}
