//! Connection limits: idle connections cannot lock other clients out. Connections beyond
//! `--max-connections` are answered `503 too_many_connections` and closed while the server
//! keeps accepting; a connection that sends no request head within `--header-timeout-ms`, or a
//! keep-alive connection idle for `--idle-timeout-ms`, is closed and counted.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use common::start;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (`Ok(bytes)`), or `None` if it is still open after `within`.
async fn read_to_close(socket: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_hit_the_cap_get_closed_and_nobody_is_locked_out() {
    let (system, _) = start(&[
        "--max-connections",
        "8",
        "--header-timeout-ms",
        "800",
        "--idle-timeout-ms",
        "800",
    ])
    .await;
    let addr = system.http_addr;
    // Eight connections that never send a byte take every place.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ninth = TcpStream::connect(addr).await.unwrap();
    let answer = read_to_close(&mut ninth, Duration::from_secs(3))
        .await
        .expect("the ninth connection is answered and closed");
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(
        answer.contains(r#""error":"too_many_connections""#),
        "{answer}"
    );
    assert_eq!(system.stats.connections_refused.get(), 1);

    // The header timeout closes the silent ones, and the places come back.
    for socket in &mut silent {
        assert!(
            read_to_close(socket, Duration::from_secs(3))
                .await
                .is_some(),
            "a connection with no request head is closed"
        );
    }
    assert_eq!(system.stats.connections_timed_out.get(), 8);
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (system, _) = start(&["--idle-timeout-ms", "700"]).await;
    let mut socket = TcpStream::connect(system.http_addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = socket.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    // Kept alive, then idle: closed after 0.7 s, well before 3.
    let began = Instant::now();
    let rest = read_to_close(&mut socket, Duration::from_secs(3)).await;
    assert!(rest.is_some(), "the idle keep-alive connection is closed");
    assert!(
        began.elapsed() >= Duration::from_millis(600),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(system.stats.connections_timed_out.get(), 1);

    // A connection that keeps asking stays served.
    let mut busy = TcpStream::connect(system.http_addr).await.unwrap();
    for _ in 0..4 {
        busy.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = busy.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    system.shutdown().await.unwrap();
}

/// Sends `head` and `body` and the half-close if asked, then reads the whole answer.
async fn answer_to(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
    half_close: bool,
) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    if half_close {
        socket.shutdown().await.unwrap();
    }
    let got = read_to_close(&mut socket, Duration::from_secs(5))
        .await
        .expect("an answer, then the close");
    String::from_utf8(got).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_a_408_and_one_cut_short_a_400() {
    let (system, _) = start(&["--header-timeout-ms", "500"]).await;
    let head = "POST /emoji HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    let stalled = answer_to(system.http_addr, head, br#"{"user_id":"#, false).await;
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert!(stalled.contains(r#""error":"body_timeout""#), "{stalled}");
    let cut = answer_to(system.http_addr, head, br#"{"user_id":"#, true).await;
    assert!(cut.starts_with("HTTP/1.1 400"), "{cut}");
    assert!(cut.contains(r#""error":"incomplete_body""#), "{cut}");
    assert_eq!(system.stats.accepted.get(), 0);
    system.shutdown().await.unwrap();
}

/// One HTTP/2 connection holds at most 16 requests open at once: 16 event streams open, a
/// 17th waits until one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_holds_at_most_16_event_streams() {
    let (system, _) = start(&[]).await;
    let addr = system.http_addr;
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    let open = |mut sender: hyper::client::conn::http2::SendRequest<String>| async move {
        let request = hyper::Request::get(format!("http://{addr}/clusters/0/subscribers/0/events"))
            .body(String::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response
    };
    let mut streams = Vec::new();
    for _ in 0..16 {
        streams.push(open(sender.clone()).await);
    }
    let mut seventeenth = tokio::spawn(open(sender.clone()));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut seventeenth)
            .await
            .is_err(),
        "a 17th stream opened on one connection"
    );
    drop(streams.pop());
    let response = tokio::time::timeout(Duration::from_secs(5), seventeenth)
        .await
        .expect("the 17th opens once one closes")
        .unwrap();
    assert_eq!(response.status(), 200);
    system.shutdown().await.unwrap();
}
