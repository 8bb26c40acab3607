//! Streams through the dataflow: the idle rule, ordering, worker independence and the spread
//! of one hot stream, observed with timely's capture.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Arc, Mutex};

use dataflows::operators::{Activity, CountByKey, Summarize};
use dataflows::replay::{replay_dataflow, ReplayInput, ReplayReport};
use dataflows::{Emoji, EmojiCount, Settings, StreamId, WindowId, WindowSummary};
use timely::dataflow::operators::capture::{Capture, Extract};
use timely::dataflow::operators::{Input, Inspect, Probe};

const NOW: i64 = 1_763_900_000_000;

fn reaction(stream: &str, user: &str, emoji: &str, ts: i64) -> String {
    format!(
        r#"{{"user_id":"{user}","emoji_type":"{emoji}","timestamp":{ts},"stream_id":"{stream}"}}"#
    )
}

/// Runs `lines` through the replay dataflow and returns `(window, stream, total)` per emitted
/// summary, in the order emitted, and the report.
fn run(lines: &[String], workers: usize, idle_windows: u64) -> (Vec<WindowSummary>, ReplayReport) {
    let settings = Settings {
        idle_windows,
        correction_horizon_ms: 0,
        ..Settings::default()
    };
    run_with(lines, workers, settings)
}

/// [`run`] with any settings.
pub fn run_with(
    lines: &[String],
    workers: usize,
    settings: Settings,
) -> (Vec<WindowSummary>, ReplayReport) {
    let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let input = ReplayInput::new(std::io::Cursor::new(text.into_bytes()), 512);
    let report = Arc::new(Mutex::new(ReplayReport::default()));
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let worker_report = Arc::clone(&report);
    timely::execute(timely::Config::process(workers), move |worker| {
        let tx = tx.lock().unwrap().clone();
        let input = input.clone();
        let report = (worker.index() == 0).then(|| Arc::clone(&worker_report));
        worker.dataflow::<WindowId, _, _>(move |scope| {
            replay_dataflow(scope, input, &settings, NOW, report).capture_into(tx);
        });
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let report = report.lock().unwrap().clone();
    let summaries = rx.extract().into_iter().flat_map(|(_, s)| s).collect();
    (summaries, report)
}

fn pairs(summaries: &[WindowSummary]) -> Vec<(WindowId, &str, u64)> {
    summaries
        .iter()
        .map(|s| (s.window, s.stream_id.as_str(), s.total))
        .collect()
}

#[test]
fn a_stream_gets_the_idle_span_after_each_window_with_reactions_then_nothing() {
    // Idle span 2: "a" reacts in windows 0 and 6, so it gets 0 (data), 1, 2, then nothing until
    // 6; "b" starts late, in window 3, and the input ends in window 6.
    let lines = [
        reaction("a", "u1", "🔥", 100),
        reaction("b", "u2", "😂", 6_100),
        reaction("a", "u3", "🔥", 12_100),
    ];
    for workers in [1, 3] {
        let (out, report) = run(&lines, workers, 2);
        assert_eq!(
            pairs(&out),
            [
                (0, "a", 1),
                (1, "a", 0),
                (2, "a", 0),
                (3, "b", 1),
                (4, "b", 0),
                (5, "b", 0),
                (6, "a", 1),
            ],
            "workers={workers}"
        );
        assert_eq!(report.counted, 3);
    }
}

#[test]
fn nothing_is_emitted_past_the_last_window_with_reactions() {
    // Both streams are still active at the end; replay stops at the last window with reactions.
    let lines = [reaction("x", "u", "🔥", 0), reaction("y", "u", "🔥", 2_000)];
    let (out, _) = run(&lines, 2, 30);
    assert_eq!(pairs(&out), [(0, "x", 1), (1, "x", 0), (1, "y", 1)]);
}

#[test]
fn many_streams_in_one_window_come_in_byte_order_with_their_own_counts() {
    let mut lines = Vec::new();
    let names: Vec<String> = (0..200)
        .map(|i| format!("s-{:03}", (i * 37) % 200))
        .collect();
    for (i, name) in names.iter().enumerate() {
        for k in 0..=(i % 5) {
            lines.push(reaction(name, &format!("u{k}"), "🔥", 500));
        }
    }
    lines.push(reaction("Z", "u", "😂", 600));
    let (out, report) = run(&lines, 4, 0);
    assert_eq!(report.counted, lines.len() as u64);
    let streams: Vec<&str> = out.iter().map(|s| s.stream_id.as_str()).collect();
    let mut sorted = streams.clone();
    sorted.sort_unstable();
    assert_eq!(streams, sorted, "byte order within a window");
    assert_eq!(streams[0], "Z", "upper case sorts first in byte order");
    assert_eq!(out.len(), 201);
    for (i, name) in names.iter().enumerate() {
        let s = out.iter().find(|s| s.stream_id.as_str() == name).unwrap();
        assert_eq!(s.total, (i % 5) as u64 + 1, "{name}");
        assert_eq!(s.window, 0);
    }
}

/// A deterministic mix over `streams` streams, skewed towards the first, with gaps longer than
/// the idle span, out-of-order and late lines.
fn mixed(n: usize, streams: u64) -> Vec<String> {
    let emojis = ["🔥", "❤️", "😂", "👍🏽", "🎉"];
    let mut random = support::XorShift::new(0x9e37_79b9_7f4a_7c15u64);
    (0..n)
        .map(|i| {
            let r = random.next();
            let stream = (r % streams).min((r >> 20) % streams);
            let emoji = emojis[(r >> 8) as usize % emojis.len()];
            // Every 4,000 lines the time jumps a minute ahead: longer than the idle span.
            let base = 1_700_000_000_000 + (i as i64) * 5 + (i as i64 / 4000) * 60_000;
            let jitter = ((r >> 24) % 3000) as i64;
            reaction(
                &format!("st{stream}"),
                &format!("u{}", r % 300),
                emoji,
                base + jitter,
            )
        })
        .collect()
}

#[test]
fn one_and_four_workers_emit_the_same_streams_and_windows() {
    let lines = mixed(20_000, 40);
    let (one, one_report) = run(&lines, 1, 5);
    let (four, four_report) = run(&lines, 4, 5);
    assert!(one_report.late > 0, "the input has late lines");
    let streams: BTreeSet<&str> = one.iter().map(|s| s.stream_id.as_str()).collect();
    assert!(streams.len() > 30, "many streams: {}", streams.len());
    // Gaps: some stream skips windows (idle past its span), and some windows are empty.
    assert!(one.iter().any(|s| s.total == 0));
    assert_eq!(one, four);
    assert_eq!(one_report, four_report);
    // Ordered by window, then by stream.
    assert!(one
        .windows(2)
        .all(|w| (w[0].window, &w[0].stream_id) < (w[1].window, &w[1].stream_id)));
    // Every stream's windows follow the rule: after a window with reactions, the next 5
    // windows come, and a window comes only if the stream reacted within the 5 before it.
    let mut by_stream: BTreeMap<&str, Vec<(WindowId, u64)>> = BTreeMap::new();
    for s in &one {
        by_stream
            .entry(s.stream_id.as_str())
            .or_default()
            .push((s.window, s.total));
    }
    let last = one.last().unwrap().window;
    for (stream, windows) in by_stream {
        let reacted: BTreeSet<WindowId> = windows
            .iter()
            .filter(|(_, t)| *t > 0)
            .map(|(w, _)| *w)
            .collect();
        let got: BTreeSet<WindowId> = windows.iter().map(|(w, _)| *w).collect();
        let want: BTreeSet<WindowId> = reacted
            .iter()
            .flat_map(|w| *w..=(*w + 5).min(last))
            .collect();
        assert_eq!(got, want, "{stream}");
    }
}

#[test]
fn one_hot_stream_is_counted_on_every_worker() {
    // One stream, many emojis: CountByKey spreads (stream, emoji) keys over the workers.
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let counted_on: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    let seen = Arc::clone(&counted_on);
    timely::execute(timely::Config::process(4), move |worker| {
        let tx = tx.lock().unwrap().clone();
        let seen = Arc::clone(&seen);
        let index = worker.index();
        let probe = timely::dataflow::ProbeHandle::new();
        let mut input = worker.dataflow::<WindowId, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<((StreamId, WindowId, Emoji), u64)>>();
            stream
                .count_by_key()
                .inspect(move |_| {
                    seen.lock().unwrap().insert(index);
                })
                .probe_with(&probe)
                .capture_into(tx);
            input
        });
        if index == 0 {
            let hot = StreamId::parse("final").unwrap();
            for emoji in emojis::iter().take(64) {
                let emoji = Emoji::parse(emoji.as_str()).unwrap();
                input.send(((hot.clone(), 0, emoji), 3));
                input.send(((hot.clone(), 0, emoji), 4));
            }
        }
        input.advance_to(1);
        while probe.less_than(&1) {
            worker.step();
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let out: Vec<((StreamId, WindowId, Emoji), u64)> =
        rx.extract().into_iter().flat_map(|(_, d)| d).collect();
    assert_eq!(out.len(), 64, "one final count per emoji");
    assert!(out.iter().all(|(_, n)| *n == 7));
    assert_eq!(
        counted_on.lock().unwrap().len(),
        4,
        "every worker counts part of the hot stream"
    );
}

#[test]
fn a_resumed_run_continues_the_active_streams_ticks() {
    // Resuming at window 10 with "a" last reacting in 8 and "b" in 5 (idle span 3): "a" gets
    // 10 and 11, "b" nothing; "c" reacts in 12.
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    timely::execute(timely::Config::process(2), move |worker| {
        let tx = tx.lock().unwrap().clone();
        let probe = timely::dataflow::ProbeHandle::new();
        let activity = Activity {
            from: Some(10),
            last_reacted: [
                (StreamId::parse("a").unwrap(), 8),
                (StreamId::parse("b").unwrap(), 5),
            ]
            .into_iter()
            .collect(),
            ..Activity::default()
        };
        let mut input = worker.dataflow::<WindowId, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<(StreamId, WindowId, EmojiCount)>>();
            stream
                .summarize(
                    &Settings {
                        idle_windows: 3,
                        correction_horizon_ms: 0,
                        ..Settings::default()
                    },
                    activity,
                )
                .probe_with(&probe)
                .capture_into(tx);
            input
        });
        input.advance_to(12);
        if worker.index() == 1 {
            input.send((
                StreamId::parse("c").unwrap(),
                12,
                EmojiCount {
                    emoji: Emoji::parse("🔥").unwrap(),
                    count: 2,
                    scaled: 1,
                },
            ));
        }
        input.advance_to(20);
        while probe.less_than(&20) {
            worker.step();
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let out: Vec<WindowSummary> = rx.extract().into_iter().flat_map(|(_, s)| s).collect();
    assert_eq!(
        pairs(&out),
        [
            (10, "a", 0),
            (11, "a", 0),
            (12, "c", 2),
            (13, "c", 0),
            (14, "c", 0),
            (15, "c", 0),
        ]
    );
}

#[test]
fn ndjson_replay_writes_the_summaries_json_in_order_for_any_worker_count() {
    use dataflows::deployment::Deployment;
    use dataflows::replay::{replay, replay_ndjson, ReplayConfig};
    let text: String = mixed(20_000, 40).iter().map(|l| format!("{l}\n")).collect();
    let config = |workers| ReplayConfig {
        settings: Settings {
            idle_windows: 5,
            ..Settings::default()
        },
        deployment: Deployment::single(workers),
        block_bytes: 4096,
        now_ms: NOW,
    };
    // The reference: the summaries replay hands over, each encoded by `to_json`.
    let mut expected = String::new();
    let report = replay(
        std::io::Cursor::new(text.clone().into_bytes()),
        &config(1),
        |s| {
            expected.push_str(&s.to_json());
            expected.push('\n');
            Ok(())
        },
    )
    .unwrap();
    assert!(report.windows > 100);
    for workers in [1, 3] {
        let mut out = Vec::new();
        let got = replay_ndjson(
            std::io::Cursor::new(text.clone().into_bytes()),
            &config(workers),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            expected,
            "workers={workers}"
        );
        assert_eq!(got, report, "workers={workers}");
    }
}

#[test]
fn the_default_stream_never_idles() {
    // Reactions that name no stream keep the steady tick of the first contract: every window
    // from the first to the last, however long the gap; a named stream idles.
    let lines = [
        r#"{"user_id":"u","emoji_type":"🔥","timestamp":0}"#.to_string(),
        reaction("named", "u", "🔥", 0),
        r#"{"user_id":"u","emoji_type":"😂","timestamp":20000}"#.to_string(),
    ];
    let (out, _) = run(&lines, 2, 2);
    let default: Vec<WindowId> = out
        .iter()
        .filter(|s| s.stream_id.as_str() == "default")
        .map(|s| s.window)
        .collect();
    assert_eq!(default, (0..=10).collect::<Vec<_>>());
    let named: Vec<WindowId> = out
        .iter()
        .filter(|s| s.stream_id.as_str() == "named")
        .map(|s| s.window)
        .collect();
    assert_eq!(named, [0, 1, 2]);
}
