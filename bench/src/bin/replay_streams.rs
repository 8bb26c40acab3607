//! Replay of many streams against the same lines on one stream (issue 15).
//!
//! ```sh
//! cargo build --release --bin emostream
//! cargo run --release -p emostream-bench --bin replay_streams
//! ```
//! Generates 2,000,000 reactions spread over 10,000 streams (stream popularity Zipf with
//! exponent 1.1), writes them once with their `stream_id` and once with it removed (every line
//! in the default stream), and times the release `emostream replay --workers 2` on each, best
//! and median of a few runs. The output is written to a file, as a user's `> out.ndjson` would,
//! unless `--discard` sends it to /dev/null. Many streams emit far more lines than one (each
//! active stream gets up to `--stream-idle-windows` empty windows after each window with
//! reactions), so the output's lines and bytes are printed too; the sums of `total` over both
//! outputs must match, or the figures would not be comparable.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use emostream_bench::{children_cpu, peak_rss_kib};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(about = "Replay of many streams against the same lines on one stream")]
struct Args {
    /// Reactions to generate.
    #[arg(long, default_value_t = 2_000_000)]
    reactions: u64,
    /// Streams they are spread over.
    #[arg(long, default_value_t = 10_000)]
    streams: u64,
    /// Zipf exponent of stream popularity: stream of rank k gets a share ∝ 1/k^skew.
    #[arg(long, default_value_t = 1.1)]
    skew: f64,
    /// Event time covered, in minutes.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Random seed.
    #[arg(long, default_value_t = 15)]
    seed: u64,
    /// Workers of the replay.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// `--stream-idle-windows` of the replay (emostream's default, 30, when not given): 0 shows
    /// what counting many streams costs without the empty windows of idle ones.
    #[arg(long)]
    idle_windows: Option<u64>,
    /// `--correction-horizon-ms` of the replay (emostream's default, 10000, when not given): 0
    /// counts drop-only, without differential's corrections; with `--idle-windows` below 5 it
    /// must be lowered too.
    #[arg(long)]
    correction_horizon_ms: Option<u64>,
    /// Runs per input; the best and the median are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Send the replay's output to /dev/null instead of a file (lines and bytes are then
    /// counted from one extra run to a file).
    #[arg(long)]
    discard: bool,
    /// The emostream binary (build it first).
    #[arg(long, default_value = "target/release/emostream")]
    bin: PathBuf,
    /// Where the inputs and outputs go (they take about 300 MiB and 400 MiB).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("emostream-replay-streams"))]
    dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.bin.exists(),
        "{} is missing: cargo build --release --bin emostream",
        args.bin.display()
    );
    std::fs::create_dir_all(&args.dir)?;
    let many = args.dir.join("streams.ndjson");
    let one = args.dir.join("one-stream.ndjson");
    generate(&args, &many, &one)?;
    println!(
        "{} reactions over {} streams (Zipf {}), {} min of event time; {} worker(s), idle windows {}, correction horizon {}, best and median of {} runs, output to {}:",
        args.reactions,
        args.streams,
        args.skew,
        args.minutes,
        args.workers,
        args.idle_windows.map_or("30 (default)".to_string(), |n| n.to_string()),
        args.correction_horizon_ms
            .map_or("10000 ms (default)".to_string(), |n| format!("{n} ms")),
        args.runs,
        if args.discard { "/dev/null" } else { "a file" }
    );
    let one_stream = bench(&args, &one, "one stream")?;
    let streams = bench(&args, &many, &format!("{} streams", args.streams))?;
    ensure!(
        one_stream.total == streams.total && one_stream.total > 0,
        "the outputs count {} and {} reactions: not the same input",
        one_stream.total,
        streams.total
    );
    let ratio = |pick: fn(&Timed) -> Duration| {
        pick(&one_stream).as_secs_f64() / pick(&streams).as_secs_f64()
    };
    println!(
        "ratio (streams rate / one-stream rate): best {:.2}, median {:.2}, by CPU time {:.2}",
        ratio(|t| t.best),
        ratio(|t| t.median),
        ratio(|t| t.cpu)
    );
    Ok(())
}

/// Writes the reactions twice: with their stream ids to `many`, without to `one`.
fn generate(args: &Args, many: &Path, one: &Path) -> anyhow::Result<()> {
    // Cumulative shares of the streams by rank, sampled with a binary search.
    let weights: Vec<f64> = (1..=args.streams.max(1))
        .map(|rank| (rank as f64).powf(-args.skew))
        .collect();
    let sum: f64 = weights.iter().sum();
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / sum;
            Some(*acc)
        })
        .collect();
    let emojis = ["🔥", "😂", "❤️", "👏", "🎉", "😮", "👍", "🙌"];
    let mut rng = StdRng::seed_from_u64(args.seed);
    let start_ms: i64 = 1_763_856_000_000;
    let span_ms = (args.minutes * 60_000) as f64;
    let create = |p: &Path| -> anyhow::Result<BufWriter<File>> {
        Ok(BufWriter::with_capacity(
            1 << 20,
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ))
    };
    let (mut many_out, mut one_out) = (create(many)?, create(one)?);
    for i in 0..args.reactions {
        let pick: f64 = rng.random();
        let rank = cumulative
            .partition_point(|c| *c < pick)
            .min(weights.len() - 1)
            + 1;
        // Popular emojis more often: a few dominate, as in a live event.
        let emoji = emojis[(rng.random::<f64>().powi(2) * emojis.len() as f64) as usize];
        // Event time advances with the line; clients' clocks and network add up to 300 ms of
        // disorder.
        let ts = start_ms + (i as f64 / args.reactions as f64 * span_ms) as i64
            - rng.random_range(0..300);
        let user = rng.random_range(0..100_000);
        let head = format!(r#"{{"user_id":"user-{user}","emoji_type":"{emoji}","timestamp":{ts}"#);
        writeln!(many_out, r#"{head},"stream_id":"event-{rank}"}}"#)?;
        writeln!(one_out, "{head}}}")?;
    }
    many_out.flush()?;
    one_out.flush()?;
    Ok(())
}

/// What the runs of one input measured.
struct Timed {
    best: Duration,
    median: Duration,
    /// The least CPU time of a run.
    cpu: Duration,
    /// Sum of `total` over the output's summaries: the reactions counted.
    total: u64,
}

fn bench(args: &Args, input: &Path, name: &str) -> anyhow::Result<Timed> {
    let out = input.with_extension("out");
    let (mut times, mut cpu, mut peak_kib) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.runs.max(1) {
        let sink = if args.discard {
            File::create("/dev/null")?
        } else {
            File::create(&out)?
        };
        let (start, cpu_before) = (Instant::now(), children_cpu()?);
        let mut child = replay_command(args, input)
            .stdout(sink)
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", args.bin.display()))?;
        // The peak resident set only grows: the last reading before the exit is close to it.
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if let Ok(kib) = peak_rss_kib(child.id()) {
                peak_kib = peak_kib.max(kib);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        times.push(start.elapsed());
        cpu.push(children_cpu()? - cpu_before);
        ensure!(
            status.success(),
            "replay of {} failed: {status}",
            input.display()
        );
    }
    if args.discard {
        // One untimed run to see what the output would have been.
        let status = replay_command(args, input)
            .stdout(File::create(&out)?)
            .stderr(Stdio::null())
            .status()?;
        ensure!(
            status.success(),
            "replay of {} failed: {status}",
            input.display()
        );
    }
    times.sort();
    cpu.sort();
    let (lines, bytes, total) = measure_output(&out)?;
    let reactions = args.reactions as f64;
    let (best, median) = (times[0], times[times.len() / 2]);
    println!(
        "  {name:<14} best {:.3} s = {:>5.2} M reactions/s   median {:.3} s = {:>5.2} M/s   CPU (user + sys) least {:.2} s   peak RSS {} MiB   output {lines} lines, {:.1} MiB",
        best.as_secs_f64(),
        reactions / best.as_secs_f64() / 1e6,
        median.as_secs_f64(),
        reactions / median.as_secs_f64() / 1e6,
        cpu[0].as_secs_f64(),
        peak_kib / 1024,
        bytes as f64 / (1 << 20) as f64
    );
    Ok(Timed {
        best,
        median,
        cpu: cpu[0],
        total,
    })
}

/// `emostream replay` of `input` with the benchmark's flags.
fn replay_command(args: &Args, input: &Path) -> Command {
    let mut command = Command::new(&args.bin);
    command
        .arg("replay")
        .arg(input)
        .args(["--workers", &args.workers.to_string()]);
    if let Some(idle) = args.idle_windows {
        command.args(["--stream-idle-windows", &idle.to_string()]);
    }
    if let Some(horizon) = args.correction_horizon_ms {
        command.args(["--correction-horizon-ms", &horizon.to_string()]);
    }
    command
}

/// Lines, bytes and the sum of `"total"` of a replay's output.
fn measure_output(path: &Path) -> anyhow::Result<(u64, u64, u64)> {
    let (mut lines, mut bytes, mut total) = (0, 0, 0);
    for line in BufReader::with_capacity(1 << 20, File::open(path)?).lines() {
        let line = line?;
        lines += 1;
        bytes += line.len() as u64 + 1;
        let field = line
            .split_once(r#""total":"#)
            .and_then(|(_, rest)| rest.split(',').next())
            .with_context(|| format!("no total in {line}"))?;
        total += field.parse::<u64>()?;
    }
    Ok((lines, bytes, total))
}
