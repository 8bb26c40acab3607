//! emostream benchmarks. Each prints its figures; none asserts a speed.
//!
//! ```sh
//! cargo run --release -p emostream-bench -- gen --reactions 2000000 --out /tmp/reactions.ndjson
//! cargo run --release -p emostream-bench -- replay /tmp/reactions.ndjson --workers 1 --workers 2
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use dataflows::replay::{replay, ReplayConfig, DEFAULT_BLOCK_BYTES};
use dataflows::Settings;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(name = "emostream-bench", about = "Benchmarks for emostream")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write NDJSON reactions: skewed emoji popularity, ordered event time with jitter.
    Gen {
        /// Reactions to write.
        #[arg(long, default_value_t = 2_000_000)]
        reactions: u64,
        /// Distinct emojis (popularity falls off as 1/rank).
        #[arg(long, default_value_t = 20)]
        emojis: usize,
        /// Event time covered, in minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Distinct users.
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Random seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Output file (`-` for stdout).
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
    /// Time `replay` of a file with each worker count, and a single-threaded parse + count of
    /// the same file as the baseline.
    Replay {
        /// NDJSON reactions (see `gen`).
        file: PathBuf,
        /// Worker counts to time (repeat the flag).
        #[arg(long, default_values_t = [1, 2])]
        workers: Vec<usize>,
        /// Runs per configuration; the best and the median are printed.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gen {
            reactions,
            emojis,
            minutes,
            users,
            seed,
            out,
        } => generate(reactions, emojis, minutes, users, seed, &out),
        Command::Replay {
            file,
            workers,
            runs,
        } => bench_replay(&file, &workers, runs),
    }
}

fn generate(
    reactions: u64,
    emojis: usize,
    minutes: u64,
    users: u64,
    seed: u64,
    out: &PathBuf,
) -> anyhow::Result<()> {
    let table: Vec<&str> = emojis::iter()
        .filter(|e| e.group() == emojis::Group::SmileysAndEmotion)
        .map(|e| e.as_str())
        .take(emojis.max(1))
        .collect();
    // Zipf-like popularity: weight 1/rank, sampled through the cumulative sum.
    let weights: Vec<f64> = (1..=table.len()).map(|rank| 1.0 / rank as f64).collect();
    let total: f64 = weights.iter().sum();
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / total;
            Some(*acc)
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let start_ms: i64 = 1_763_856_000_000;
    let span_ms = (minutes * 60_000) as f64;
    let writer: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(out).with_context(|| format!("cannot create {}", out.display()))?)
    };
    let mut writer = BufWriter::with_capacity(1 << 20, writer);
    for i in 0..reactions {
        let pick: f64 = rng.random();
        let emoji = table[cumulative
            .partition_point(|c| *c < pick)
            .min(table.len() - 1)];
        // Event time advances with the line; clients' clocks and network add up to 300 ms of disorder.
        let ts =
            start_ms + (i as f64 / reactions as f64 * span_ms) as i64 - rng.random_range(0..300);
        let user = rng.random_range(0..users.max(1));
        writeln!(
            writer,
            r#"{{"user_id":"user-{user}","emoji_type":"{emoji}","timestamp":{ts}}}"#
        )?;
    }
    writer.flush()?;
    Ok(())
}

fn bench_replay(file: &PathBuf, workers: &[usize], runs: usize) -> anyhow::Result<()> {
    let bytes = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    println!(
        "replay of {} ({:.1} MiB), {} runs each, best and median:",
        file.display(),
        bytes as f64 / (1 << 20) as f64,
        runs
    );
    let (reactions, times) = time_runs(runs, || baseline(file))?;
    print_row(
        "baseline: serde_json + HashMap, 1 thread",
        reactions,
        &times,
    );
    for &w in workers {
        let config = ReplayConfig {
            settings: Settings::default(),
            deployment: dataflows::deployment::Deployment::single(w),
            block_bytes: DEFAULT_BLOCK_BYTES,
            now_ms: i64::MAX / 2,
        };
        let (reactions, times) = time_runs(runs, || {
            let input = File::open(file)?;
            let mut windows = 0u64;
            let report = replay(input, &config, |_| {
                windows += 1;
                Ok(())
            })?;
            anyhow::ensure!(windows > 0, "no windows");
            Ok(report.lines)
        })?;
        print_row(
            &format!("emostream replay, {w} worker(s)"),
            reactions,
            &times,
        );
    }
    Ok(())
}

/// The reference point: read the file, parse each line with serde_json, count per emoji in a
/// HashMap, on one thread, with no validation and no windows.
fn baseline(file: &PathBuf) -> anyhow::Result<u64> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        emoji_type: &'a str,
        #[allow(dead_code)]
        timestamp: i64,
    }
    let text = std::fs::read(file)?;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut lines = 0;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let raw: Raw<'_> = serde_json::from_slice(line)?;
        *counts.entry(raw.emoji_type).or_default() += 1;
        lines += 1;
    }
    anyhow::ensure!(!counts.is_empty(), "empty input");
    Ok(lines)
}

fn time_runs(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let mut reactions = 0;
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        reactions = f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok((reactions, times))
}

fn print_row(name: &str, reactions: u64, times: &[Duration]) {
    let rate = |d: Duration| reactions as f64 / d.as_secs_f64() / 1e6;
    let best = times[0];
    let median = times[times.len() / 2];
    println!(
        "  {name:<44} {reactions} reactions  best {:>7.3} s = {:>5.2} M/s   median {:>7.3} s = {:>5.2} M/s",
        best.as_secs_f64(),
        rate(best),
        median.as_secs_f64(),
        rate(median)
    );
}
