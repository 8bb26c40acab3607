//! Reactions/s from `POST /emoji/batch` to closed windows, through the embedded broker or
//! an external one (`--brokers`, e.g. Apache Kafka from `tests/kafka/start.sh`).
//!
//! ```sh
//! cargo run --release -p emostream-bench --bin ingest -- --reactions 2000000
//! cargo run --release -p emostream-bench --bin ingest -- --brokers "$(bash tests/kafka/start.sh start /tmp/k)"
//! ```
//! The whole system runs in this process (as `emostream run` would); concurrent HTTP clients
//! post pre-serialized batches without timestamps (the server stamps them), and the clock
//! stops when every reaction is counted in a window that has closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use emostream::cli::{Cli as EmostreamCli, Command};
use emostream::system::System;
use emostream_bench::{ms, percentile};

#[derive(Parser)]
#[command(about = "POST /emoji/batch to closed windows, through a Kafka broker")]
struct Args {
    /// Reactions to send in all.
    #[arg(long, default_value_t = 2_000_000)]
    reactions: u64,
    /// Reactions per request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 8)]
    connections: u64,
    /// Dataflow workers.
    #[arg(long, default_value_t = 2)]
    workers: u16,
    /// Partitions of the reactions topic.
    #[arg(long, default_value_t = 8)]
    partitions: u16,
    /// An external broker (`host:port`), fresh for each run: the embedded one when absent.
    #[arg(long)]
    brokers: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (workers, partitions) = (args.workers.to_string(), args.partitions.to_string());
    let mut argv = vec!["emostream", "run", "--http", "127.0.0.1:0"];
    argv.extend(["--workers", &workers, "--partitions", &partitions]);
    if let Some(brokers) = &args.brokers {
        argv.extend(["--brokers", brokers]);
    }
    let Command::Run(run_args) = EmostreamCli::try_parse_from(argv)?.command else {
        bail!("not a run command");
    };
    let counted = Arc::new(AtomicU64::new(0));
    let sink = Arc::clone(&counted);
    let system = System::start(
        &run_args,
        Some(Arc::new(move |w: &dataflows::WindowSummary| {
            sink.fetch_add(w.total, Ordering::Relaxed);
        })),
    )
    .await
    .map_err(anyhow::Error::msg)?;

    let items: Arc<Vec<String>> = Arc::new(
        (0..args.batch)
            .map(|i| {
                let emoji = ["🔥", "😂", "❤️", "👏", "🎉"][i as usize % 5];
                format!(r#"{{"user_id":"bench{i}","emoji_type":"{emoji}"}}"#)
            })
            .collect(),
    );
    let body = format!("[{}]", items.join(","));
    let requests = args.reactions / args.batch;
    let sent_reactions = requests * args.batch;
    let url = format!("http://{}/emoji/batch", system.http_addr);
    let next = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests as usize)));
    let busy = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    println!(
        "sending {sent_reactions} reactions in {requests} requests of {} over {} connections",
        args.batch, args.connections
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (http, url, body, items) =
            (http.clone(), url.clone(), body.clone(), Arc::clone(&items));
        let (next, latencies, busy) =
            (Arc::clone(&next), Arc::clone(&latencies), Arc::clone(&busy));
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let mut body = body.clone();
                loop {
                    let sent = Instant::now();
                    let response = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = response.status();
                    let answer: serde_json::Value = response.json().await?;
                    if status == 202 {
                        latencies
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .push(sent.elapsed());
                        break;
                    }
                    if status == 503 {
                        // The producer queue is full: back off as a client should, and resend
                        // only what was not accepted.
                        busy.fetch_add(1, Ordering::Relaxed);
                        let accepted = answer["accepted"].as_u64().unwrap_or(0) as usize;
                        if accepted > 0 {
                            let rest = items.get(accepted..).unwrap_or_default();
                            body = format!("[{}]", rest.join(","));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    bail!("unexpected answer {status}");
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let accepted_in = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while system.stats.consumed.get() < sent_reactions && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consumed_in = start.elapsed();
    while counted.load(Ordering::Relaxed) < sent_reactions {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let windowed_in = start.elapsed();
    let counted = counted.load(Ordering::Relaxed);
    let stats = &system.stats;
    let mut latencies = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    latencies.sort();
    println!(
        "accepted: {sent_reactions} in {:.2} s = {:.0} reactions/s ({:.0} requests/s; {} answered 503 and were retried)",
        accepted_in.as_secs_f64(),
        sent_reactions as f64 / accepted_in.as_secs_f64(),
        requests as f64 / accepted_in.as_secs_f64(),
        busy.load(Ordering::Relaxed)
    );
    println!(
        "read by the dataflow from Kafka: all in {:.2} s = {:.0} reactions/s",
        consumed_in.as_secs_f64(),
        sent_reactions as f64 / consumed_in.as_secs_f64()
    );
    println!(
        "in closed windows: {counted} in {:.2} s = {:.0} reactions/s, including the last window's close ({:.2} s after the last read: window end, lateness, idleness)",
        windowed_in.as_secs_f64(),
        counted as f64 / windowed_in.as_secs_f64(),
        (windowed_in - consumed_in).as_secs_f64()
    );
    println!(
        "request latency: p50 {}  p99 {}  max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0))
    );
    println!(
        "late {}  lost {}  invalid on topic {}",
        stats.late.get(),
        stats.lost.get(),
        stats.invalid_on_topic.get()
    );
    system.shutdown().await.map_err(anyhow::Error::msg)?;
    if counted != sent_reactions {
        bail!("only {counted} of {sent_reactions} reactions reached windows");
    }
    Ok(())
}
