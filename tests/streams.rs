//! Streams end to end on the embedded broker: reactions of several streams, clients of each
//! following their own stream with a real SSE client, `GET /streams`, the idle rule, and the
//! errors of a bad stream id.
#![allow(clippy::unwrap_used)] // a failure is the test failing

mod common;

use std::collections::BTreeMap;

use common::{get_json, now_ms, poll_until, register, start, wait_until, Follower, PATIENCE};
use serde_json::{json, Value};

fn reactions(stream: &str, emoji: &str, n: usize, ts: i64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"user_id": format!("{stream}-u{i}"), "emoji_type": emoji, "timestamp": ts, "stream_id": stream}))
        .collect()
}

/// Per-emoji sums over what `follower` received.
fn received(follower: &Follower) -> BTreeMap<String, u64> {
    common::sums(&follower.windows())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_three_streams_each_receive_only_their_stream_exactly() {
    let (system, _seen) = start(&[]).await;
    let base = format!("http://{}", system.http_addr);
    let http = reqwest::Client::new();
    let sse = reqwest::Client::new();
    let streams = [
        ("match-1", "🔥", 30),
        ("match-2", "😂", 20),
        ("concert", "❤️", 10),
    ];
    let mut followers = Vec::new();
    for (stream, _, _) in streams {
        for _ in 0..2 {
            let reg = register(&http, &base, Some(stream)).await;
            assert_eq!(reg["stream_id"], stream);
            let url = reg["events_url"].as_str().unwrap().to_owned();
            assert!(url.contains(&format!("stream_id={stream}&")), "{url}");
            followers.push((stream, Follower::open(&sse, &url, None).await));
        }
    }
    // A client of the default stream, as the first contract registered (no body).
    let plain: Value = http
        .post(format!("{base}/clients"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plain["stream_id"], "default");
    assert!(!plain["events_url"].as_str().unwrap().contains("stream_id"));
    let default = Follower::open(&sse, plain["events_url"].as_str().unwrap(), None).await;

    let ts = now_ms();
    let mut all = Vec::new();
    for (stream, emoji, n) in streams {
        all.extend(reactions(stream, emoji, n, ts));
    }
    all.extend(
        (0..5).map(|i| json!({"user_id": format!("d{i}"), "emoji_type": "👍", "timestamp": ts})),
    );
    common::post_batch(&system, &all).await;

    for (stream, follower) in &followers {
        let (_, emoji, n) = streams.iter().find(|s| s.0 == *stream).unwrap();
        let want = BTreeMap::from([(emoji.to_string(), *n as u64)]);
        follower
            .wait_until(&format!("{stream} counted {n}"), PATIENCE, |events| {
                events.iter().map(|e| e.summary.total).sum::<u64>() >= *n as u64
            })
            .await;
        assert_eq!(
            received(follower),
            want,
            "{stream}: exact, and nothing of the others"
        );
        assert!(follower
            .windows()
            .iter()
            .all(|w| w.stream_id.as_str() == *stream));
    }
    default
        .wait_until("the default stream counted 5", PATIENCE, |events| {
            events.iter().map(|e| e.summary.total).sum::<u64>() >= 5
        })
        .await;
    assert_eq!(received(&default), BTreeMap::from([("👍".to_string(), 5)]));

    // GET /streams: every active stream, most viewers first, viewers counted.
    let listed = get_json(&http, &format!("{base}/streams")).await;
    let listed = listed.as_array().unwrap();
    let view: Vec<(String, u64)> = listed
        .iter()
        .map(|s| {
            (
                s["stream_id"].as_str().unwrap().to_owned(),
                s["viewers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        view,
        [
            ("concert".to_string(), 2),
            ("match-1".to_string(), 2),
            ("match-2".to_string(), 2),
            ("default".to_string(), 1),
        ]
    );
    let one = get_json(&http, &format!("{base}/streams/match-2")).await;
    assert_eq!(one["viewers"], 2);
    assert!(one["last_window"].as_u64().is_some());
    let unknown = http
        .get(format!("{base}/streams/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"],
        "unknown_stream"
    );

    // Viewers leave: the count follows.
    let (_, gone) = followers.remove(0);
    gone.close().await;
    poll_until("match-1 has one viewer", PATIENCE, || async {
        let one: Value = http
            .get(format!("{base}/streams/match-1"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match one["viewers"].as_u64() {
            Some(1) => Ok(()),
            _ => Err(one.to_string()),
        }
    })
    .await;

    // Metrics count streams without a label per stream.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let active: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("emostream_streams_active "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(active, 4.0);
    assert!(!metrics.contains("stream_id="), "no stream_id label");
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_idles_after_its_span_and_comes_back_with_its_next_reaction() {
    let (system, seen) = start(&[
        "--stream-idle-windows",
        "2",
        "--window-ms",
        "500",
        "--lateness-ms",
        "100",
    ])
    .await;
    let base = format!("http://{}", system.http_addr);
    let http = reqwest::Client::new();
    let reg = register(&http, &base, Some("brief")).await;
    let follower = Follower::open(
        &reqwest::Client::new(),
        reg["events_url"].as_str().unwrap(),
        None,
    )
    .await;
    common::post_batch(&system, &reactions("brief", "🎉", 3, now_ms())).await;
    follower.wait_for_ids(3).await;
    // Its window, then two empty ones, then nothing while default's tick goes on.
    let first = follower.ids()[0];
    let default_later = |k: u64| {
        let seen = seen.clone();
        move || {
            seen.lock()
                .unwrap()
                .iter()
                .any(|w| w.stream_id.as_str() == "default" && w.window >= k)
        }
    };
    wait_until(
        "four more windows closed",
        PATIENCE,
        default_later(first + 6),
    )
    .await;
    assert_eq!(follower.ids(), [first, first + 1, first + 2]);
    let totals: Vec<u64> = follower.windows().iter().map(|w| w.total).collect();
    assert_eq!(totals, [3, 0, 0]);
    let listed = get_json(&http, &format!("{base}/streams")).await;
    let listed = listed.as_array().unwrap();
    assert!(
        listed.iter().all(|s| s["stream_id"] != "brief"),
        "an idle stream is not listed: {listed:?}"
    );
    // The next reaction brings it back, on the same event stream.
    common::post_batch(&system, &reactions("brief", "🎉", 1, now_ms())).await;
    follower
        .wait_until("the stream came back", PATIENCE, |events| {
            events.iter().map(|e| e.summary.total).sum::<u64>() >= 4
        })
        .await;
    let ids = follower.ids();
    assert!(ids[3] > first + 3, "a gap while idle: {ids:?}");
    // Nothing it said was repeated or lost.
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stream_id_is_refused_with_its_own_error() {
    let (system, _seen) = start(&[]).await;
    let base = format!("http://{}", system.http_addr);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let single = post(
        "/emoji",
        json!({"user_id": "u", "emoji_type": "🔥", "stream_id": "no spaces"}),
    )
    .await
    .unwrap();
    assert_eq!(single.status(), 400);
    let body: Value = single.json().await.unwrap();
    assert_eq!(body["error"], "invalid_stream_id");
    assert!(body["message"].as_str().unwrap().contains("stream_id"));
    let batch = post(
        "/emoji/batch",
        json!([
            {"user_id": "u", "emoji_type": "🔥", "stream_id": "fine"},
            {"user_id": "u", "emoji_type": "🔥", "stream_id": "x".repeat(65)},
        ]),
    )
    .await
    .unwrap();
    assert_eq!(batch.status(), 400);
    let body: Value = batch.json().await.unwrap();
    assert_eq!(body["error"], "invalid_stream_id");
    assert!(
        body["message"].as_str().unwrap().contains('1'),
        "names the item: {body}"
    );
    let registration = post("/clients", json!({"stream_id": "a/b"})).await.unwrap();
    assert_eq!(registration.status(), 400);
    assert_eq!(
        registration.json::<Value>().await.unwrap()["error"],
        "invalid_stream_id"
    );
    let events = http
        .get(format!(
            "{base}/clusters/0/subscribers/0/events?stream_id=a%20b"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 400);
    assert_eq!(
        events.json::<Value>().await.unwrap()["error"],
        "invalid_stream_id"
    );
    system.shutdown().await.unwrap();
}

/// `POST /clients` over HTTP/2 (prior knowledge) with `body` sent as data frames of a stream,
/// so no `Content-Length` goes with it: the status and the JSON answer.
async fn register_over_http2(addr: std::net::SocketAddr, body: Vec<&'static [u8]>) -> (u16, Value) {
    use http_body_util::BodyExt;
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    let frames = futures_util::stream::iter(body.into_iter().map(|chunk| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(
            chunk,
        )))
    }));
    let request = hyper::Request::post(format!("http://{addr}/clients"))
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_over_http2_without_content_length_names_its_stream_within_the_limit() {
    let (system, _) = start(&[]).await;
    let (status, client) = register_over_http2(
        system.http_addr,
        vec![b"{\"stream_id\":", b" \"match-42\"}"],
    )
    .await;
    assert_eq!(status, 201, "{client}");
    let url = client["events_url"].as_str().unwrap();
    assert!(url.contains("stream_id=match-42"), "{url}");
    // Past the limit without a Content-Length to check first: refused as it is read.
    let chunk: &'static [u8] = &[b' '; 1024];
    let (status, refusal) = register_over_http2(system.http_addr, vec![chunk; 5]).await;
    assert_eq!(status, 413, "{refusal}");
    assert_eq!(refusal["error"], "payload_too_large");
    system.shutdown().await.unwrap();
}
