//! SSE (or WebSocket) fan-out: many connections on one subscriber, measured from a separate
//! client process.
//!
//! ```sh
//! cargo build --release --bin emostream
//! cargo run --release -p emostream-bench --bin fanout -- --connections 19000
//! cargo run --release -p emostream-bench --bin fanout -- --connections 19000 --transport ws
//! ```
//! Starts `emostream run` as a child process, opens the connections (spread over several
//! 127.0.0.x source addresses: one address runs out of ports near 28k), keeps reactions
//! flowing, and records when each connection receives each window. Prints the fan-out spread
//! (receipt minus the window's first receipt on any connection), window end → receipt, and
//! the server's memory per connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use dataflows::wall_clock_ms;
use emostream_bench::{ms, percentile, rss_kib, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

/// How the connections follow the subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    /// Server-Sent Events on `--path`.
    Sse,
    /// The subscriber's WebSocket (`--path` with `/events` replaced by `/ws`).
    Ws,
}

#[derive(Parser)]
#[command(about = "SSE or WebSocket fan-out to many connections on one subscriber")]
struct Args {
    /// SSE or WebSocket.
    #[arg(long, value_enum, default_value_t = Transport::Sse)]
    transport: Transport,
    /// The server binary.
    #[arg(long, default_value = "target/release/emostream")]
    server_bin: PathBuf,
    /// Connections to open.
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
    /// Windows to measure once every connection is open.
    #[arg(long, default_value_t = 10)]
    windows: u64,
    /// The subscriber's events path.
    #[arg(long, default_value = "/clusters/0/subscribers/0/events")]
    path: String,
    /// The server's window length (ms).
    #[arg(long, default_value_t = 2000)]
    window_ms: u64,
    /// Connections per source address (127.0.0.1, 127.0.0.2, ...).
    #[arg(long, default_value_t = 10_000)]
    per_address: usize,
}

/// (connection, window, receipt ms since the epoch).
type Receipts = Arc<Mutex<Vec<(usize, u64, u64)>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    emostream_bench::raise_open_files()?;
    let server = Server::start(&args.server_bin, &[], "/tmp/emostream-fanout-server.log").await?;
    let (pid, addr) = (server.pid(), server.addr);
    let http = reqwest::Client::new();
    let rss_before = rss_kib(pid)?;

    let receipts: Receipts = Arc::default();
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let resyncs = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pace = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    for i in 0..args.connections {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i / args.per_address) as u8));
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
            args.path
        );
        let (receipts, connected, failed, resyncs, stop, pace) = (
            Arc::clone(&receipts),
            Arc::clone(&connected),
            Arc::clone(&failed),
            Arc::clone(&resyncs),
            Arc::clone(&stop),
            Arc::clone(&pace),
        );
        let (transport, path) = (args.transport, args.path.clone());
        tokio::spawn(async move {
            let result = match transport {
                Transport::Sse => {
                    follow(
                        i, source, addr, request, &receipts, &connected, &resyncs, &stop, &pace,
                    )
                    .await
                }
                Transport::Ws => {
                    let url = format!("ws://{addr}{}", path.replacen("/events", "/ws", 1));
                    follow_ws(
                        i, source, addr, &url, &receipts, &connected, &resyncs, &stop, &pace,
                    )
                    .await
                }
            };
            if let Err(e) = result {
                if let Ok(mut failed) = failed.lock() {
                    failed.push(format!("{e:#}"));
                }
            }
        });
    }
    loop {
        let (ok, bad) = (
            connected.load(Ordering::Relaxed),
            failed.lock().map_or(0, |f| f.len()),
        );
        if ok + bad >= args.connections {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {ok} of {} connections opened in 300 s",
                args.connections
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = connected.load(Ordering::Relaxed);
    println!(
        "{open} connections open in {:.1} s ({} failed)",
        started.elapsed().as_secs_f64(),
        args.connections - open
    );
    if let Ok(failed) = failed.lock() {
        for reason in failed.iter().take(5) {
            println!("  failure: {reason}");
        }
    }

    // Reactions keep flowing so windows carry counts.
    let feeder = {
        let (http, url) = (http.clone(), format!("http://{addr}/emoji/batch"));
        let body = format!(
            "[{}]",
            (0..100)
                .map(|i| format!(r#"{{"user_id":"f{i}","emoji_type":"🔥"}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        tokio::spawn(async move {
            loop {
                let _ = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let first = wall_clock_ms() as u64 / args.window_ms + 1;
    let last = first + args.windows - 1;
    println!("measuring windows {first}..={last}");
    let deadline =
        Instant::now() + Duration::from_millis((args.windows + 4) * args.window_ms + 5000);
    loop {
        let done = receipts
            .lock()
            .map_or(0, |r| r.iter().filter(|(_, w, _)| *w == last).count());
        if done >= open || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_after = rss_kib(pid)?;
    let client_rss = rss_kib(std::process::id())?;
    stop.store(true, Ordering::Relaxed);
    feeder.abort();
    drop(server);

    let receipts = receipts
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut spread = Vec::new();
    let mut delay = Vec::new();
    let mut received = 0usize;
    for window in first..=last {
        let times: Vec<u64> = receipts
            .iter()
            .filter(|(_, w, _)| *w == window)
            .map(|(_, _, t)| *t)
            .collect();
        received += times.len();
        let Some(&earliest) = times.iter().min() else {
            continue;
        };
        let end = (window + 1) * args.window_ms;
        for t in times {
            spread.push(Duration::from_millis(t - earliest));
            delay.push(Duration::from_millis(t.saturating_sub(end)));
        }
    }
    spread.sort();
    delay.sort();
    let expected = open * args.windows as usize;
    println!(
        "windows received: {received} of {expected} ({} missing); resyncs: {}",
        expected.saturating_sub(received),
        resyncs.load(Ordering::Relaxed)
    );
    println!(
        "fan-out spread: p50 {}  p99 {}  max {}",
        ms(percentile(&spread, 50.0)),
        ms(percentile(&spread, 99.0)),
        ms(percentile(&spread, 100.0))
    );
    println!(
        "window end → receipt: p50 {}  p99 {}",
        ms(percentile(&delay, 50.0)),
        ms(percentile(&delay, 99.0))
    );
    println!(
        "server RSS: {rss_before} KiB before, {rss_after} KiB with {open} connections → {:.1} KiB per connection",
        (rss_after.saturating_sub(rss_before)) as f64 / open.max(1) as f64
    );
    println!("client RSS: {client_rss} KiB");
    Ok(())
}

/// One connection: send the request, then note each window id as it arrives.
#[allow(clippy::too_many_arguments)]
async fn follow(
    index: usize,
    source: IpAddr,
    server: SocketAddr,
    request: String,
    receipts: &Receipts,
    connected: &AtomicUsize,
    resyncs: &AtomicUsize,
    stop: &AtomicBool,
    pace: &Semaphore,
) -> anyhow::Result<()> {
    let mut stream = {
        let _turn = pace.acquire().await?;
        let socket = TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("bind {source}"))?;
        let mut stream = socket.connect(server).await.context("connect")?;
        stream.write_all(request.as_bytes()).await?;
        stream
    };
    let mut buf = vec![0u8; 4096];
    let mut text = Vec::new();
    let mut open = false;
    while !stop.load(Ordering::Relaxed) {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("the server closed the stream");
        }
        let at = wall_clock_ms() as u64;
        text.extend_from_slice(&buf[..n]);
        if !open {
            if !text.starts_with(b"HTTP/1.1 200") {
                bail!(
                    "answer: {}",
                    String::from_utf8_lossy(&text[..text.len().min(40)])
                );
            }
            open = true;
            connected.fetch_add(1, Ordering::Relaxed);
        }
        // Events arrive whole in one chunk each; scan complete lines and keep the rest.
        let mut consumed = 0;
        while let Some(pos) = text[consumed..].windows(2).position(|w| w == b"\n\n") {
            let event = &text[consumed..consumed + pos];
            if let Some(id) = find_id(event) {
                if event.windows(13).any(|w| w == b"event: resync") {
                    resyncs.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut r) = receipts.lock() {
                    r.push((index, id, at));
                }
            }
            consumed += pos + 2;
        }
        text.drain(..consumed);
    }
    Ok(())
}

/// One WebSocket: upgrade, then note each window id as its message arrives.
#[allow(clippy::too_many_arguments)]
async fn follow_ws(
    index: usize,
    source: IpAddr,
    server: SocketAddr,
    url: &str,
    receipts: &Receipts,
    connected: &AtomicUsize,
    resyncs: &AtomicUsize,
    stop: &AtomicBool,
    pace: &Semaphore,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = {
        let _turn = pace.acquire().await?;
        let socket = TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("bind {source}"))?;
        let stream = socket.connect(server).await.context("connect")?;
        // Small buffers: 19,000 clients in this process.
        let mut config = WebSocketConfig::default();
        config.read_buffer_size = 4096;
        config.write_buffer_size = 0;
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("upgrade")?;
        ws
    };
    connected.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = ws.next().await else {
            bail!("the server closed the WebSocket");
        };
        let at = wall_clock_ms() as u64;
        let Message::Text(text) = message? else {
            continue;
        };
        // `{"event":"window","id":"k",...`: the id is the first quoted number.
        let text = text.as_str();
        let Some(rest) = text.split_once(r#""id":""#).map(|(_, r)| r) else {
            continue;
        };
        let Some(id) = rest.split('"').next().and_then(|d| d.parse::<u64>().ok()) else {
            continue;
        };
        if text.starts_with(r#"{"event":"resync""#) {
            resyncs.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut r) = receipts.lock() {
            r.push((index, id, at));
        }
    }
    Ok(())
}

fn find_id(event: &[u8]) -> Option<u64> {
    let start = event.windows(4).position(|w| w == b"id: ")? + 4;
    let digits: Vec<u8> = event[start..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}
