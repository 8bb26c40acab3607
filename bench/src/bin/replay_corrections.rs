//! What corrections cost a replay (issue 16): the same file replayed with the default
//! correction horizon and drop-only.
//!
//! ```sh
//! cargo build --release --bin emostream
//! cargo run --release -p emostream-bench --bin replay_corrections
//! ```
//! Generates 2,000,000 reactions over 10 minutes of event time, about 1% of them 3-6 s late,
//! and times the release `emostream replay --workers 2` with `--correction-horizon-ms 10000`
//! and `0` (best and median of a few runs, least CPU), output to /dev/null. It prints what each
//! run counted, corrected and dropped (the late reactions are corrected with the horizon and
//! dropped without it), and the ratio of the rates.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use emostream_bench::children_cpu;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(about = "Replay with corrections against drop-only on the same file")]
struct Args {
    /// Reactions to generate.
    #[arg(long, default_value_t = 2_000_000)]
    reactions: u64,
    /// Share of reactions that arrive late.
    #[arg(long, default_value_t = 0.01)]
    late_fraction: f64,
    /// Streams the reactions are spread over (evenly).
    #[arg(long, default_value_t = 1)]
    streams: u64,
    /// Horizon of the corrected runs, in ms.
    #[arg(long, default_value_t = 10_000)]
    horizon_ms: u64,
    /// Workers of the replay.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Runs per setting; the best and the median are printed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Random seed.
    #[arg(long, default_value_t = 16)]
    seed: u64,
    /// The emostream binary (build it first).
    #[arg(long, default_value = "target/release/emostream")]
    bin: PathBuf,
    /// Where the input goes (about 150 MiB).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("emostream-replay-corrections"))]
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
    let input = args.dir.join("reactions.ndjson");
    generate(&args, &input)?;
    println!(
        "{} reactions, {:.1}% of them 3-6 s late, {} stream(s); {} worker(s), best and median of {} runs, output to /dev/null:",
        args.reactions,
        args.late_fraction * 100.0,
        args.streams,
        args.workers,
        args.runs
    );
    let corrected = bench(&args, &input, args.horizon_ms)?;
    let dropped = bench(&args, &input, 0)?;
    let ratio = |pick: fn(&Timed) -> Duration| {
        pick(&dropped).as_secs_f64() / pick(&corrected).as_secs_f64()
    };
    println!(
        "ratio (corrections rate / drop-only rate): best {:.2}, median {:.2}, by CPU time {:.2}",
        ratio(|t| t.best),
        ratio(|t| t.median),
        ratio(|t| t.cpu)
    );
    Ok(())
}

fn generate(args: &Args, path: &Path) -> anyhow::Result<()> {
    let emojis = ["🔥", "😂", "❤️", "👏", "🎉", "😮", "👍", "🙌"];
    let mut rng = StdRng::seed_from_u64(args.seed);
    let start_ms: i64 = 1_763_856_000_000;
    let span_ms = 10.0 * 60_000.0;
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    for i in 0..args.reactions {
        let emoji = emojis[(rng.random::<f64>().powi(2) * emojis.len() as f64) as usize];
        let mut ts = start_ms + (i as f64 / args.reactions as f64 * span_ms) as i64
            - rng.random_range(0..300);
        if rng.random::<f64>() < args.late_fraction {
            ts -= rng.random_range(3000..6000);
        }
        let user = rng.random_range(0..100_000);
        let stream = rng.random_range(0..args.streams.max(1));
        if args.streams > 1 {
            writeln!(
                out,
                r#"{{"user_id":"user-{user}","emoji_type":"{emoji}","timestamp":{ts},"stream_id":"event-{stream}"}}"#
            )?;
        } else {
            writeln!(
                out,
                r#"{{"user_id":"user-{user}","emoji_type":"{emoji}","timestamp":{ts}}}"#
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

struct Timed {
    best: Duration,
    median: Duration,
    cpu: Duration,
}

fn bench(args: &Args, input: &Path, horizon_ms: u64) -> anyhow::Result<Timed> {
    let (mut times, mut cpu) = (Vec::new(), Vec::new());
    let mut summary = String::new();
    for _ in 0..args.runs.max(1) {
        let (start, cpu_before) = (Instant::now(), children_cpu()?);
        let out = Command::new(&args.bin)
            .arg("replay")
            .arg(input)
            .args(["--workers", &args.workers.to_string()])
            .args(["--correction-horizon-ms", &horizon_ms.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot start {}", args.bin.display()))?;
        times.push(start.elapsed());
        cpu.push(children_cpu()? - cpu_before);
        ensure!(
            out.status.success(),
            "replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        summary = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    times.sort();
    cpu.sort();
    let reactions = args.reactions as f64;
    let (best, median) = (times[0], times[times.len() / 2]);
    println!(
        "  horizon {horizon_ms:>5} ms  best {:.3} s = {:>5.2} M reactions/s   median {:.3} s = {:>5.2} M/s   CPU least {:.2} s\n    {summary}",
        best.as_secs_f64(),
        reactions / best.as_secs_f64() / 1e6,
        median.as_secs_f64(),
        reactions / median.as_secs_f64() / 1e6,
        cpu[0].as_secs_f64(),
    );
    Ok(Timed {
        best,
        median,
        cpu: cpu[0],
    })
}
