//! Floods: what one abusive client can do to a running server, measured from outside.
//!
//! ```sh
//! cargo build --release --bin emostream
//! cargo run --release -p emostream-bench --bin flood
//! ```
//! Starts `emostream run` as a child process with a small cap and short timeouts, then:
//! 1. opens more idle connections than `--max-connections` and times what a legitimate client
//!    gets meanwhile, and how long until the idle ones are closed;
//! 2. registers clients from one address as fast as it can (the per-address limit), and
//!    watches the tree grow and shrink back once they expire;
//! 3. posts reactions of new user ids as fast as it can under `--rate-limit` and records the
//!    server's memory while the limiter forgets them.
//!
//! Prints each figure; asserts nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use emostream_bench::{ms, rss_kib, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "Connection, registration and user-id floods against one server")]
struct Args {
    /// The server binary.
    #[arg(long, default_value = "target/release/emostream")]
    server_bin: PathBuf,
    /// The server's --max-connections.
    #[arg(long, default_value_t = 8_000)]
    max_connections: usize,
    /// Idle connections the flood opens (beyond the cap, they are refused).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// The server's --header-timeout-ms.
    #[arg(long, default_value_t = 5_000)]
    header_timeout_ms: u64,
    /// Registrations the flood asks for.
    #[arg(long, default_value_t = 5_000)]
    registrations: usize,
    /// Seconds of new user ids.
    #[arg(long, default_value_t = 10)]
    user_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    emostream_bench::raise_open_files()?;
    let (max, timeout) = (
        args.max_connections.to_string(),
        args.header_timeout_ms.to_string(),
    );
    let flags = [
        "--max-connections",
        &max,
        "--header-timeout-ms",
        &timeout,
        "--subscriber-capacity",
        "10",
        "--client-ttl-secs",
        "5",
        "--rate-limit",
        "5",
    ];
    let server = Server::start(&args.server_bin, &flags, "/tmp/emostream-flood-server.log").await?;
    let (pid, addr) = (server.pid(), server.addr);
    let http = reqwest::Client::new();
    println!("server RSS at start: {} KiB", rss_kib(pid)?);
    connections(&args, addr, pid).await?;
    registrations(&args, &http, addr).await?;
    user_ids(&args, &http, addr, pid).await?;
    Ok(())
}

/// The status of one `GET /healthz` on a new connection, and how long it took.
async fn legitimate(addr: SocketAddr) -> (String, Duration) {
    let began = Instant::now();
    let answer = async {
        let mut socket = TcpStream::connect(addr).await?;
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut got = Vec::new();
        socket.read_to_end(&mut got).await?;
        anyhow::Ok(
            String::from_utf8_lossy(&got)
                .get(9..12)
                .unwrap_or("???")
                .to_owned(),
        )
    };
    let status = match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => format!("failed ({e})"),
        Err(_) => "no answer in 10 s".into(),
    };
    (status, began.elapsed())
}

async fn connections(args: &Args, addr: SocketAddr, pid: u32) -> anyhow::Result<()> {
    println!(
        "\n== {} idle connections against --max-connections {}",
        args.idle, args.max_connections
    );
    let began = Instant::now();
    let mut idle = Vec::with_capacity(args.idle);
    for _ in 0..args.idle {
        match TcpStream::connect(addr).await {
            Ok(s) => idle.push(s),
            Err(e) => {
                println!("connect failed after {}: {e}", idle.len());
                break;
            }
        }
    }
    println!("opened {} in {}", idle.len(), ms(began.elapsed()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("server RSS with the flood: {} KiB", rss_kib(pid)?);
    for _ in 0..3 {
        let (status, took) = legitimate(addr).await;
        println!(
            "a legitimate GET /healthz during the flood: {status} in {}",
            ms(took)
        );
    }
    // Those beyond the cap were answered and closed at once; the rest close at the header
    // timeout.
    let mut refused = 0;
    let mut closed_at = Vec::new();
    let waiting: Vec<_> = idle
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut got)).await;
                (got.starts_with(b"HTTP/1.1 503"), began.elapsed())
            })
        })
        .collect();
    for w in waiting {
        let (was_refused, at) = w.await?;
        if was_refused {
            refused += 1;
        } else {
            closed_at.push(at);
        }
    }
    closed_at.sort();
    println!(
        "{refused} answered 503 too_many_connections; {} closed by the header timeout, the last {} after the flood began",
        closed_at.len(),
        closed_at.last().map_or("-".into(), |d| ms(*d))
    );
    let (status, took) = legitimate(addr).await;
    println!("a legitimate GET /healthz after: {status} in {}", ms(took));
    println!("server RSS after: {} KiB", rss_kib(pid)?);
    Ok(())
}

async fn registrations(
    args: &Args,
    http: &reqwest::Client,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    println!(
        "\n== {} registrations from one address (capacity 10 per subscriber, 5 s to live)",
        args.registrations
    );
    let subscribers = |tree: serde_json::Value| -> usize {
        tree["clusters"].as_array().map_or(0, |c| {
            c.iter()
                .map(|c| c["subscribers"].as_array().map_or(0, Vec::len))
                .sum()
        })
    };
    let tree = |http: reqwest::Client| async move {
        let t: serde_json::Value = http
            .get(format!("http://{addr}/clusters"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(subscribers(t))
    };
    let before = tree(http.clone()).await?;
    let began = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..args.registrations {
        let r = http
            .post(format!("http://{addr}/clients"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await?;
        *statuses.entry(r.status().as_u16()).or_insert(0u64) += 1;
    }
    let grown = tree(http.clone()).await?;
    println!(
        "answers {statuses:?} in {}; subscribers {before} -> {grown}",
        ms(began.elapsed())
    );
    let shrink = Instant::now();
    while tree(http.clone()).await? > before && shrink.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "subscribers back to {} {} after the flood ended",
        tree(http.clone()).await?,
        ms(shrink.elapsed())
    );
    Ok(())
}

async fn user_ids(
    args: &Args,
    http: &reqwest::Client,
    addr: SocketAddr,
    pid: u32,
) -> anyhow::Result<()> {
    println!(
        "\n== new user ids for {} s under --rate-limit 5 (batches of 1,000)",
        args.user_secs
    );
    let before = rss_kib(pid)?;
    let began = Instant::now();
    let mut sent = 0u64;
    let mut n = 0u64;
    while began.elapsed() < Duration::from_secs(args.user_secs) {
        let body = format!(
            "[{}]",
            (0..1000)
                .map(|i| format!(r#"{{"user_id":"flood-{n}-{i}","emoji_type":"🔥"}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        n += 1;
        let r = http
            .post(format!("http://{addr}/emoji/batch"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if r.status().is_success() {
            sent += 1000;
        }
    }
    let peak = rss_kib(pid)?;
    println!(
        "{sent} reactions of {sent} new users accepted in {:.1} s; server RSS {before} -> {peak} KiB",
        began.elapsed().as_secs_f64()
    );
    for after in [2, 5] {
        tokio::time::sleep(Duration::from_secs(if after == 2 { 2 } else { 3 })).await;
        println!("server RSS {after} s after: {} KiB", rss_kib(pid)?);
    }
    Ok(())
}
