//! What the public port shows: `events_url` names the configured address whatever `Host`
//! says, the CORS policy is the one `--cors-origin` gives, the processes' own endpoints do not
//! exist on a single process, and requests no route answers are refused with a status and
//! counted, those hyper answers itself and those sent after an event stream included.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::time::Duration;

use common::start;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` on a new connection and reads until the server closes it.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut got))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

fn refusals(system: &emostream::system::System, status: u16) -> u64 {
    system
        .stats
        .refusals()
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_url_names_the_configured_address_never_the_host_header() {
    let (system, _) = start(&[]).await;
    let http = reqwest::Client::new();
    let registered: Value = http
        .post(format!("http://{}/clients", system.http_addr))
        .header("host", "evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = registered["events_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://{}/clusters/", system.http_addr)),
        "{url}"
    );
    system.shutdown().await.unwrap();

    let (system, _) = start(&["--advertise-http", "https://live.example/"]).await;
    let registered: Value = http
        .post(format!("http://{}/clients", system.http_addr))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = registered["events_url"].as_str().unwrap();
    assert!(url.starts_with("https://live.example/clusters/"), "{url}");
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cors_policy_is_the_listed_origins_for_posts_and_any_for_event_streams() {
    let (system, _) = start(&["--cors-origin", "https://live.example"]).await;
    let base = format!("http://{}", system.http_addr);
    let http = reqwest::Client::new();
    let preflight = |path: &str, origin: &str| {
        http.request(reqwest::Method::OPTIONS, format!("{base}{path}"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("/emoji", "https://live.example").await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://live.example"
    );
    let refused = preflight("/clients", "https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "origin_not_allowed");
    let events = preflight("/clusters/0/subscribers/0/events", "https://evil.example")
        .await
        .unwrap();
    assert_eq!(events.headers()["access-control-allow-origin"], "*");

    // A listed origin may read the answer to its post; another may not.
    let post = |origin: &'static str| {
        http.post(format!("{base}/emoji"))
            .header("origin", origin)
            .json(&json!({"user_id": "u", "emoji_type": "🔥", "timestamp": common::now_ms()}))
            .send()
    };
    let listed = post("https://live.example").await.unwrap();
    assert_eq!(listed.status(), 202);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://live.example"
    );
    let other = post("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    system.shutdown().await.unwrap();

    // By default no origin is listed.
    let (system, _) = start(&[]).await;
    let refused = http
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/emoji", system.http_addr),
        )
        .header("origin", "https://live.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_process_has_no_internal_endpoints() {
    let (system, _) = start(&[]).await;
    let beat = reqwest::Client::new()
        .post(format!("http://{}/peers/heartbeat", system.http_addr))
        .json(&json!({"process": 1, "attached": [], "connected": [[0, 1000000]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), 404);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_hyper_refuses_and_requests_after_an_event_stream_are_refused_and_counted() {
    let (system, _) = start(&[]).await;
    let garbage = exchange(system.http_addr, b"\x16\x03\x01 not http\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    // Request targets without a path (a fuzz run found these panicking warp's path filters).
    for target in [&b"CONNECT live.example:443"[..], b"OPTIONS *"] {
        let mut request = target.to_vec();
        request.extend_from_slice(
            b" HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\nConnection: close\r\n\r\n",
        );
        let answer = exchange(system.http_addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
    let mut huge = b"GET /healthz HTTP/1.1\r\n".to_vec();
    for i in 0..200 {
        huge.extend_from_slice(format!("x-header-{i}: v\r\n").as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let too_large = exchange(system.http_addr, &huge).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    let pipelined = exchange(
        system.http_addr,
        b"GET /clusters/0/subscribers/0/events HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(pipelined.starts_with("HTTP/1.1 400"), "{pipelined}");
    assert!(
        pipelined.contains(r#""error":"pipelined_after_events""#),
        "{pipelined}"
    );
    // Sent once the stream runs: the connection is closed, the only answer it can get.
    let mut socket = TcpStream::connect(system.http_addr).await.unwrap();
    socket
        .write_all(b"GET /clusters/0/subscribers/0/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 256];
    let n = socket.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest))
        .await
        .expect("the stream is closed")
        .unwrap();
    assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1"));
    assert_eq!(refusals(&system, 400), 3);
    assert!(refusals(&system, 404) + refusals(&system, 405) >= 2);
    assert_eq!(refusals(&system, 431), 1);
    let metrics = reqwest::get(format!("http://{}/metrics", system.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"emostream_http_refusals_total{status="431"} 1"#),
        "{metrics}"
    );
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_client_address() {
    let (system, _) = start(&[
        "--registration-rate-limit",
        "1",
        "--registration-burst",
        "3",
    ])
    .await;
    let http = reqwest::Client::new();
    let register = || {
        http.post(format!("http://{}/clients", system.http_addr))
            .json(&json!({}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(register().await.unwrap().status(), 201);
    }
    let limited = register().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "registration_rate_limited");
    assert_eq!(system.stats.registrations.get(), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        register().await.unwrap().status(),
        201,
        "the bucket refills"
    );
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_past_max_clients_are_refused_until_one_is_released() {
    let (system, _) = start(&["--max-clients", "2"]).await;
    let http = reqwest::Client::new();
    let register = || {
        http.post(format!("http://{}/clients", system.http_addr))
            .json(&json!({}))
            .send()
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = register().await.unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        ids.push(body["client_id"].as_str().unwrap().to_owned());
    }
    let refused = register().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_clients");
    assert!(body["message"].as_str().unwrap().contains("--max-clients"));
    let released = http
        .delete(format!("http://{}/clients/{}", system.http_addr, ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 204);
    assert_eq!(register().await.unwrap().status(), 201, "a place freed");
    system.shutdown().await.unwrap();
}
