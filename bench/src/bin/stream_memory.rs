//! Memory per active stream: what a process keeps for each stream it delivers (the retained
//! windows, encoded once, and the stream's bookkeeping), measured by filling a stream store as
//! the live dataflow does, window after window, for `--streams` streams over `--retention`
//! windows, and reading this process's resident memory before and after.
//!
//! Each window of each stream carries a few emojis (1 to `--emojis`), as a mostly small event's
//! windows do; a window's JSON is what the windows topic and SSE clients get.

use clap::Parser;
use dataflows::{Emoji, EmojiCount, StreamId, WindowSummary, Windowing};
use emostream::delivery::streams::StreamStore;
use emostream::delivery::HubSettings;
use emostream_bench::rss_kib;
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// Active streams.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Windows retained per stream (`--retention` of `emostream run`).
    #[arg(long, default_value_t = 150)]
    retention: usize,
    /// Most distinct emojis in one window of one stream.
    #[arg(long, default_value_t = 4)]
    emojis: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pid = std::process::id();
    let windowing = Windowing::default();
    let table: Vec<Emoji> = emojis::iter()
        .take(64)
        .filter_map(|e| Emoji::parse(e.as_str()).ok())
        .collect();
    let ids: Vec<StreamId> = (0..args.streams)
        .map(|i| StreamId::parse(&format!("stream-{i:05}")))
        .collect::<Result<_, _>>()?;
    let mut rng = StdRng::seed_from_u64(7);
    let store = StreamStore::new(HubSettings {
        retention: args.retention,
        client_queue: 16,
        max_resume_bytes: 1 << 20,
        idle_windows: u64::MAX / 2,
    });
    let first: u64 = 897_000_000;
    let before = rss_kib(pid)?;
    let mut json_bytes = 0usize;
    for window in first..first + args.retention as u64 {
        for id in &ids {
            let n = rng.random_range(0..=args.emojis);
            let emojis = (0..n)
                .map(|k| EmojiCount {
                    emoji: table[(k * 7 + window as usize) % table.len()],
                    count: rng.random_range(1..2_000),
                    scaled: 1,
                })
                .collect();
            let summary = WindowSummary::new(id.clone(), window, &windowing, emojis);
            json_bytes += summary.to_json().len();
            store.publish(&summary);
        }
    }
    let after = rss_kib(pid)?;
    let held = store.len();
    let active = store.active_count();
    let per_stream = (after.saturating_sub(before)) as f64 / held.max(1) as f64;
    println!(
        "{} streams held ({} active), {} windows retained each",
        held, active, args.retention
    );
    println!(
        "mean window JSON: {:.0} bytes (1 to {} emojis)",
        json_bytes as f64 / (held * args.retention).max(1) as f64,
        args.emojis
    );
    println!("resident memory: {before} KiB before, {after} KiB after");
    println!("memory per active stream: {per_stream:.1} KiB (target: at most 64 KiB)");
    Ok(())
}
