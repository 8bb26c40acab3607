//! Dataflow tests: reactions through the replay dataflow, observed with timely's capture.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod support;

use std::sync::{mpsc, Arc, Mutex};

use dataflows::replay::{replay_dataflow, ReplayInput, ReplayReport};
use dataflows::{Settings, WindowId, WindowSummary};
use timely::dataflow::operators::capture::{Capture, Extract};

const NOW: i64 = 1_763_900_000_000;

fn reaction(user: &str, emoji: &str, ts: i64) -> String {
    format!(r#"{{"user_id":"{user}","emoji_type":"{emoji}","timestamp":{ts}}}"#)
}

type Captured = Vec<(WindowId, Vec<WindowSummary>)>;

/// Runs `lines` through the replay dataflow on `workers` threads, in blocks of `block_bytes`,
/// dropping late reactions (no corrections: `tests/corrections.rs` has those).
fn run(lines: &[String], workers: usize, block_bytes: usize) -> (Captured, ReplayReport) {
    let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let input = ReplayInput::new(std::io::Cursor::new(text.into_bytes()), block_bytes);
    let report = Arc::new(Mutex::new(ReplayReport::default()));
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let worker_report = Arc::clone(&report);
    timely::execute(timely::Config::process(workers), move |worker| {
        let tx = tx.lock().unwrap().clone();
        let input = input.clone();
        let report = (worker.index() == 0).then(|| Arc::clone(&worker_report));
        worker.dataflow::<WindowId, _, _>(move |scope| {
            let settings = Settings {
                correction_horizon_ms: 0,
                ..Settings::default()
            };
            replay_dataflow(scope, input, &settings, NOW, report).capture_into(tx);
        });
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let report = report.lock().unwrap().clone();
    (rx.extract(), report)
}

fn counts(summary: &WindowSummary) -> Vec<(&str, u64, u64)> {
    summary
        .emojis
        .iter()
        .map(|e| (e.emoji.as_str(), e.count, e.scaled))
        .collect()
}

#[test]
fn window_boundary_is_at_the_multiple_of_two_seconds() {
    let (out, _) = run(
        &[reaction("a", "🔥", 1999), reaction("b", "🔥", 2000)],
        1,
        1 << 16,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, 0, "timely time is the window");
    assert_eq!(counts(&out[0].1[0]), [("🔥", 1, 1)]);
    assert_eq!((out[0].1[0].start_ms, out[0].1[0].end_ms), (0, 2000));
    assert_eq!(out[1].0, 1);
    assert_eq!(counts(&out[1].1[0]), [("🔥", 1, 1)]);
}

#[test]
fn scaling_boundaries_and_empty_windows() {
    let mut lines: Vec<String> = (0..1000)
        .map(|i| reaction(&format!("u{i}"), "🔥", 100))
        .collect();
    lines.extend((0..1001).map(|i| reaction(&format!("v{i}"), "😂", 200)));
    lines.push(reaction("late-comer", "👍", 4100));
    let (out, report) = run(&lines, 2, 4096);
    let summaries: Vec<&WindowSummary> = out.iter().flat_map(|(_, s)| s).collect();
    assert_eq!(summaries.len(), 3);
    assert_eq!(counts(summaries[0]), [("😂", 1001, 2), ("🔥", 1000, 1)]);
    assert_eq!(summaries[0].total, 2001);
    assert_eq!(summaries[1].window, 1);
    assert_eq!(summaries[1].total, 0);
    assert!(summaries[1].emojis.is_empty());
    assert_eq!(counts(summaries[2]), [("👍", 1, 1)]);
    assert_eq!((report.lines, report.counted, report.late), (2002, 2002, 0));
}

#[test]
fn late_reactions_are_dropped_and_counted() {
    let lines = [
        reaction("a", "🔥", 1000),
        reaction("b", "🔥", 2499), // window 0 is still open: its end + lateness is 2500
        reaction("c", "🔥", 1500),
        reaction("d", "😂", 2500), // closes window 0
        reaction("e", "🔥", 1999), // late
        reaction("f", "😂", 1998), // late
        reaction("g", "😂", 2001),
    ];
    for workers in [1, 3] {
        // One line per block, so every lateness decision crosses blocks (and workers).
        let (out, report) = run(&lines, workers, 1);
        let summaries: Vec<&WindowSummary> = out.iter().flat_map(|(_, s)| s).collect();
        assert_eq!(counts(summaries[0]), [("🔥", 2, 1)], "workers={workers}");
        assert_eq!(
            counts(summaries[1]),
            [("😂", 2, 1), ("🔥", 1, 1)],
            "workers={workers}"
        );
        assert_eq!(
            (report.lines, report.counted, report.late),
            (7, 5, 2),
            "workers={workers}"
        );
    }
}

#[test]
fn invalid_lines_are_counted_and_skipped() {
    let lines = [
        reaction("a", "🔥", 10),
        "{not json".to_string(),
        reaction("b", "abc", 10),
        reaction("", "🔥", 10),
        reaction("c", "🔥", NOW + 60_000),
        reaction("d", "😂", 20),
    ];
    let (out, report) = run(&lines, 2, 1);
    assert_eq!(out.len(), 1);
    assert_eq!(
        counts(&out[0].1[0]),
        [("🔥", 1, 1), ("😂", 1, 1)],
        "ties by emoji"
    );
    assert_eq!(report.lines, 6);
    assert_eq!(report.invalid.total(), 4);
    use dataflows::Field::*;
    for field in [Body, UserId, EmojiType, Timestamp] {
        assert_eq!(report.invalid.get(field), 1, "{field:?}");
    }
    let numbers: Vec<u64> = report.errors.iter().map(|(line, _)| *line).collect();
    assert_eq!(
        numbers,
        [2, 3, 4, 5],
        "first errors in input order with line numbers"
    );
}

/// A deterministic mix: skewed emojis, jittered and out-of-order timestamps, some late lines,
/// some invalid ones.
fn mixed_input(n: usize) -> Vec<String> {
    let emojis = ["🔥", "❤️", "😂", "👍🏽", "🇮🇳", "👨‍👩‍👧", "🎉", "😮"];
    let mut random = support::XorShift::new(0x2545_f491_4f6c_dd1du64);
    (0..n)
        .map(|i| {
            let r = random.next();
            if r.is_multiple_of(97) {
                return format!("garbage {i}");
            }
            let emoji = emojis[(r >> 8) as usize % emojis.len()]
                .min(emojis[(r >> 16) as usize % emojis.len()]);
            let base = 1_700_000_000_000 + (i as i64) * 7;
            let jitter = ((r >> 24) % 4000) as i64 - ((r >> 40) % 3) as i64 * 1000;
            reaction(&format!("user{}", r % 500), emoji, base + jitter)
        })
        .collect()
}

#[test]
fn one_and_four_workers_give_identical_results() {
    let lines = mixed_input(20_000);
    let (one, one_report) = run(&lines, 1, 2048);
    let (four, four_report) = run(&lines, 4, 2048);
    assert!(one.len() > 50, "many windows");
    assert!(
        one_report.late > 0 && one_report.invalid.total() > 0,
        "the input exercises both"
    );
    assert_eq!(one, four);
    assert_eq!(one_report, four_report);
    // And the block size (how the input is cut) does not matter either.
    let (coarse, _) = run(&lines, 2, 1 << 20);
    assert_eq!(one, coarse);
    // Windows are contiguous.
    let ids: Vec<WindowId> = one.iter().map(|(t, _)| *t).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn live_mode_emits_every_window_once_from_the_start() {
    use dataflows::operators::{Activity, Summarize};
    use dataflows::{Emoji, EmojiCount, StreamId};
    use timely::dataflow::operators::{Input, Probe};
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    timely::execute(timely::Config::process(3), move |worker| {
        let tx = tx.lock().unwrap().clone();
        let probe = timely::dataflow::ProbeHandle::new();
        let mut input = worker.dataflow::<WindowId, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<(StreamId, WindowId, EmojiCount)>>();
            stream
                .summarize(&Settings::default(), Activity::from(3))
                .probe_with(&probe)
                .capture_into(tx);
            input
        });
        let fire = Emoji::parse("🔥").unwrap();
        input.advance_to(3);
        if worker.index() == 1 {
            input.send((
                StreamId::default(),
                3,
                EmojiCount {
                    emoji: fire,
                    count: 2,
                    scaled: 1,
                },
            ));
        }
        input.advance_to(5);
        input.send((
            StreamId::default(),
            5,
            EmojiCount {
                emoji: fire,
                count: 1,
                scaled: 1,
            },
        ));
        input.advance_to(9);
        while probe.less_than(&9) {
            worker.step();
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let out = rx.extract();
    let windows: Vec<(WindowId, u64)> = out
        .iter()
        .flat_map(|(t, s)| s.iter().map(move |s| (*t, s.total)))
        .collect();
    // 3 (data), 4 (empty), 5 (one per worker), then empty windows up to the frontier.
    assert_eq!(windows, [(3, 2), (4, 0), (5, 3), (6, 0), (7, 0), (8, 0)]);
}

/// An input that gives `first`, then nothing until `release` is signalled (or 20 s have
/// passed), then `rest`: a pipe whose writer waits for the reader's output.
struct Gated {
    first: std::io::Cursor<Vec<u8>>,
    rest: std::io::Cursor<Vec<u8>>,
    release: mpsc::Receiver<()>,
    released_in_time: Arc<Mutex<Option<bool>>>,
}

impl std::io::Read for Gated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.first.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        let mut released = self.released_in_time.lock().unwrap();
        if released.is_none() {
            let signalled = self
                .release
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_ok();
            *released = Some(signalled);
        }
        drop(released);
        self.rest.read(buf)
    }
}

#[test]
fn replay_emits_windows_while_its_input_is_still_open() {
    use dataflows::replay::replay;
    let text = |range: std::ops::Range<i64>| -> Vec<u8> {
        range
            .map(|i| format!("{}\n", reaction(&format!("u{i}"), "🔥", i * 100)))
            .collect::<String>()
            .into_bytes()
    };
    for workers in [1, 2] {
        // 0 to 10 s of reactions; the rest (10 to 20 s) only once window 0 has come out.
        let (release, gate) = mpsc::channel();
        let released_in_time = Arc::new(Mutex::new(None));
        let input = Gated {
            first: std::io::Cursor::new(text(0..100)),
            rest: std::io::Cursor::new(text(100..200)),
            release: gate,
            released_in_time: Arc::clone(&released_in_time),
        };
        let config = small_blocks(workers);
        let mut windows = Vec::new();
        let report = replay(input, &config, |summary| {
            if summary.window == 0 {
                let _ = release.send(());
            }
            windows.push((summary.window, summary.total));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            *released_in_time.lock().unwrap(),
            Some(true),
            "{workers} worker(s): window 0 was not emitted while the input was open"
        );
        assert_eq!(report.counted, 200);
        assert_eq!(windows.len(), 10);
        assert!(windows.iter().all(|(_, total)| *total == 20), "{windows:?}");
    }
}

/// An input that counts the bytes read from it.
struct Counted {
    inner: std::io::Cursor<Vec<u8>>,
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl Counted {
    /// `text` to read, and the count of bytes read from it.
    fn new(text: &[u8]) -> (Counted, Arc<std::sync::atomic::AtomicUsize>) {
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let input = Counted {
            inner: std::io::Cursor::new(text.to_vec()),
            read: Arc::clone(&read),
        };
        (input, read)
    }
}

/// 400 windows of 10 reactions each.
fn four_hundred_windows() -> Vec<u8> {
    (0..4000i64)
        .map(|i| format!("{}\n", reaction(&format!("u{i}"), "🔥", i * 200)))
        .collect::<String>()
        .into_bytes()
}

/// A replay of `workers` on one process, in blocks of 512 bytes so a small input spans many.
fn small_blocks(workers: usize) -> dataflows::replay::ReplayConfig {
    dataflows::replay::ReplayConfig {
        settings: Settings::default(),
        deployment: dataflows::deployment::Deployment::single(workers),
        block_bytes: 512,
        now_ms: NOW,
    }
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn replay_reads_no_further_ahead_than_a_slow_consumer_takes() {
    use dataflows::replay::replay;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let text = four_hundred_windows();
    let total = text.len();
    for workers in [1, 2] {
        let (input, read) = Counted::new(&text);
        let config = small_blocks(workers);
        let mut stalled_at = None;
        let mut windows = 0;
        let report = replay(input, &config, |_summary| {
            if stalled_at.is_none() {
                // The consumer stalls on its first window until the reading has stopped.
                let start = Instant::now();
                let mut last = read.load(Ordering::Relaxed);
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let now = read.load(Ordering::Relaxed);
                    if now == last || start.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                    last = now;
                }
                stalled_at = Some(read.load(Ordering::Relaxed));
            }
            windows += 1;
            Ok(())
        })
        .unwrap();
        let stalled_at = stalled_at.unwrap();
        assert!(
            stalled_at < total / 2,
            "{workers} worker(s): {stalled_at} of {total} bytes read while the consumer had taken one window"
        );
        assert_eq!(report.counted, 4000);
        assert_eq!(windows, 400);
    }
}

#[test]
fn replay_stops_reading_once_its_output_has_failed() {
    use dataflows::replay::{replay, ReplayError};
    use std::sync::atomic::Ordering;
    // An output that fails at its first window (a closed pipe): the rest is not read.
    let text = four_hundred_windows();
    let total = text.len();
    for workers in [1, 2] {
        let (input, read) = Counted::new(&text);
        let config = small_blocks(workers);
        let result = replay(input, &config, |_summary| {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        });
        assert!(
            matches!(result, Err(ReplayError::Output(_))),
            "{workers} worker(s): {result:?}"
        );
        let read = read.load(Ordering::Relaxed);
        assert!(
            read < total / 2,
            "{workers} worker(s): {read} of {total} bytes read after the output had failed"
        );
    }
}
