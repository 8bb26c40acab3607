//! Kafka-to-window throughput of the Kafka source alone.
//!
//! ```sh
//! cargo run --release -p emostream-bench --bin source -- --reactions 500000 --workers 1 --workers 2
//! ```
//! Fills the embedded broker's reactions topic first, then starts the live dataflow on it and
//! times how fast its workers read, validate and window the backlog. Timestamps lie a few
//! seconds ahead, so no reaction is late when it is read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use dataflows::wall_clock_ms;
use emostream::cli::{Cli as EmostreamCli, Command};
use emostream::kafka::embedded::EmbeddedBroker;
use emostream::system::System;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

#[derive(Parser)]
#[command(about = "Kafka-to-window throughput of the source alone")]
struct Args {
    /// Reactions in the backlog.
    #[arg(long, default_value_t = 500_000)]
    reactions: u64,
    /// Partitions of the reactions topic (the embedded broker keeps ~5 MiB each).
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    /// Worker counts to time (repeat the flag).
    #[arg(long, default_values_t = [1, 2])]
    workers: Vec<u16>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for &workers in &args.workers {
        let rate = run(&args, workers).await?;
        println!("{workers} worker(s): {rate:.0} reactions/s read, validated and windowed");
    }
    Ok(())
}

async fn run(args: &Args, workers: u16) -> anyhow::Result<f64> {
    let topics = [
        ("emoji-reactions".to_string(), args.partitions),
        ("emoji-windows".to_string(), 1),
    ];
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&topics))
        .await?
        .map_err(anyhow::Error::msg)?;
    let brokers = broker.bootstrap_servers().to_string();
    let fill = brokers.clone();
    let n = args.reactions;
    tokio::task::spawn_blocking(move || fill_topic(&fill, n)).await??;

    let argv = [
        "emostream",
        "run",
        "--http",
        "127.0.0.1:0",
        "--brokers",
        &brokers,
        "--workers",
        &workers.to_string(),
    ];
    let Command::Run(run_args) = EmostreamCli::try_parse_from(argv)?.command else {
        bail!("not a run command");
    };
    let system = System::start(&run_args, None)
        .await
        .map_err(anyhow::Error::msg)?;
    // The clock starts at the first message read (start-up is not the source's work); the
    // count at that moment is subtracted.
    let deadline = Instant::now() + Duration::from_secs(120);
    while system.stats.consumed.get() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let (start, before) = (Instant::now(), system.stats.consumed.get());
    while system.stats.consumed.get() < n {
        if Instant::now() > deadline {
            bail!("only {} of {n} read", system.stats.consumed.get());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    let stats = Arc::clone(&system.stats);
    system.shutdown().await.map_err(anyhow::Error::msg)?;
    tokio::task::spawn_blocking(move || drop(broker)).await?;
    if stats.late.get() + stats.invalid_on_topic.get() + stats.lost.get() > 0 {
        bail!(
            "late {} invalid {} lost {}: the figures would not be comparable",
            stats.late.get(),
            stats.invalid_on_topic.get(),
            stats.lost.get()
        );
    }
    Ok((n - before) as f64 / took.as_secs_f64())
}

fn fill_topic(brokers: &str, n: u64) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create the producer")?;
    // One timestamp (no disorder to be late by), ahead by less than the 10 s future limit and
    // far enough that filling and reading the backlog end before its window could close.
    let ts = wall_clock_ms() + 8000;
    let emojis = ["🔥", "😂", "❤️", "👏", "🎉", "😮", "👍", "🙌"];
    for i in 0..n {
        let user = format!("user{i}");
        let payload = format!(
            r#"{{"user_id":"{user}","emoji_type":"{}","timestamp":{}}}"#,
            emojis[i as usize % emojis.len()],
            ts
        );
        let mut record = BaseRecord::to("emoji-reactions")
            .key(&user)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("the backlog did not reach the broker")?;
    Ok(())
}
