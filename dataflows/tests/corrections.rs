//! Corrections through the dataflow: late reactions within the horizon correct their window
//! (revision 1, 2, ...), whole and before the window of the epoch that made them; beyond the
//! horizon they are dropped; the state held is freed; any worker count gives the same output.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod support;

use std::sync::{mpsc, Arc, Mutex};

use dataflows::deployment::Deployment;
use dataflows::operators::{Activity, HeldState};
use dataflows::replay::{replay, ReplayConfig, ReplayReport};
use dataflows::{window_summaries, Emoji, Settings, StreamId, WindowId, WindowSummary};
use timely::dataflow::operators::capture::{Capture, Extract};
use timely::dataflow::operators::{Input, Probe};

const NOW: i64 = 1_763_900_000_000;

fn reaction(user: &str, emoji: &str, ts: i64, stream: Option<&str>) -> String {
    let stream = stream.map_or(String::new(), |s| format!(r#","stream_id":"{s}""#));
    format!(r#"{{"user_id":"{user}","emoji_type":"{emoji}","timestamp":{ts}{stream}}}"#)
}

fn line(user: &str, emoji: &str, ts: i64) -> String {
    reaction(user, emoji, ts, None)
}

/// Replays `lines` (one block per line, so every lateness decision crosses blocks and workers)
/// and returns the summaries in the order emitted.
fn run(lines: &[String], workers: usize, settings: Settings) -> (Vec<WindowSummary>, ReplayReport) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let config = ReplayConfig {
        settings,
        deployment: Deployment::single(workers),
        block_bytes: 1,
        now_ms: NOW,
    };
    let mut out = Vec::new();
    let report = replay(std::io::Cursor::new(text.into_bytes()), &config, |s| {
        out.push(s.clone());
        Ok(())
    })
    .unwrap();
    (out, report)
}

/// (stream, window, revision, total) of each summary.
fn shape(summaries: &[WindowSummary]) -> Vec<(&str, WindowId, u32, u64)> {
    summaries
        .iter()
        .map(|s| (s.stream_id.as_str(), s.window, s.revision, s.total))
        .collect()
}

fn counts(summary: &WindowSummary) -> Vec<(&str, u64)> {
    summary
        .emojis
        .iter()
        .map(|e| (e.emoji.as_str(), e.count))
        .collect()
}

#[test]
fn a_late_reaction_within_the_horizon_corrects_its_window_before_the_next() {
    let lines = [
        line("a", "🔥", 1000),
        line("b", "🔥", 5000), // event time 5000 closes windows 0 and 1
        line("c", "😂", 1500), // late for window 0, read while window 2 is open
    ];
    for workers in [1, 3] {
        let (out, report) = run(&lines, workers, Settings::default());
        assert_eq!(
            shape(&out),
            [
                ("default", 0, 0, 1),
                ("default", 1, 0, 0),
                ("default", 0, 1, 2),
                ("default", 2, 0, 1),
            ],
            "workers={workers}"
        );
        assert_eq!(counts(&out[2]), [("🔥", 1), ("😂", 1)]);
        assert_eq!(
            (report.counted, report.corrected, report.late),
            (3, 1, 0),
            "workers={workers}"
        );
    }
}

#[test]
fn several_late_reactions_for_one_window_in_one_epoch_make_one_correction() {
    let lines = [
        line("a", "🔥", 1000),
        line("b", "🔥", 5000),
        line("c", "😂", 1500),
        line("d", "😂", 1600),
        line("e", "🔥", 1700),
        line("f", "🔥", 5100),
    ];
    let (out, report) = run(&lines, 4, Settings::default());
    let fixes: Vec<&WindowSummary> = out.iter().filter(|s| s.revision > 0).collect();
    assert_eq!(fixes.len(), 1, "{:?}", shape(&out));
    assert_eq!(counts(fixes[0]), [("🔥", 2), ("😂", 2)]);
    assert_eq!(
        (fixes[0].window, fixes[0].revision, fixes[0].total),
        (0, 1, 4)
    );
    assert_eq!(report.corrected, 3);
}

#[test]
fn beyond_the_horizon_a_late_reaction_is_dropped_and_at_its_edge_it_corrects() {
    // Event time 20000 opens window 9 (19500 after the lateness). Horizon 10 s = 5 windows:
    // window 4 is exactly at the edge, window 0 beyond it.
    let lines = [
        line("a", "🔥", 1000),
        line("b", "🔥", 20_000),
        line("c", "😂", 1500),
        line("d", "😂", 9000),
    ];
    let (out, report) = run(&lines, 2, Settings::default());
    let fixes: Vec<_> = shape(&out).into_iter().filter(|s| s.2 > 0).collect();
    assert_eq!(fixes, [("default", 4, 1, 1)]);
    assert_eq!((report.corrected, report.late), (1, 1));
    let zero = Settings {
        correction_horizon_ms: 0,
        ..Settings::default()
    };
    let (out, report) = run(&lines, 2, zero);
    assert!(out.iter().all(|s| s.revision == 0));
    assert_eq!((report.corrected, report.late), (0, 2));
}

#[test]
fn a_late_reaction_for_a_window_its_stream_had_none_in_is_that_window_s_first_emission() {
    let lines = [
        line("a", "🔥", 1000),
        line("b", "🔥", 5000),
        reaction("c", "😂", 1500, Some("x")),
    ];
    let (out, _) = run(&lines, 2, Settings::default());
    assert_eq!(
        shape(&out),
        [
            ("default", 0, 0, 1),
            ("default", 1, 0, 0),
            // Never emitted before, so revision 0, and the stream is active from window 0 on.
            ("x", 0, 0, 1),
            ("default", 2, 0, 1),
            ("x", 2, 0, 0),
        ]
    );
}

#[test]
fn each_later_correction_of_a_window_counts_its_revision_up() {
    let lines = [
        line("a", "🔥", 1000),
        reaction("s", "🔥", 1000, Some("x")),
        line("b", "🔥", 5000),                // closes windows 0 and 1
        line("c", "😂", 1500),                // corrects default 0: revision 1
        reaction("t", "😂", 3000, Some("x")), // corrects x 1, emitted empty: revision 1
        reaction("u", "😂", 1200, Some("y")), // y's window 0, never emitted: revision 0
        line("d", "🔥", 7000),                // closes window 2
        line("e", "🔥", 1600),                // corrects default 0 again: revision 2
        reaction("v", "🔥", 1300, Some("y")), // corrects y 0 again: revision 1
    ];
    for workers in [1, 2, 3] {
        let (out, _) = run(&lines, workers, Settings::default());
        // Windows 0 and 1, first emissions and corrections, in the order emitted.
        let early: Vec<_> = shape(&out)
            .into_iter()
            .filter(|(_, window, _, _)| *window < 2)
            .collect();
        assert_eq!(
            early,
            [
                ("default", 0, 0, 1),
                ("x", 0, 0, 1),
                ("default", 1, 0, 0),
                ("x", 1, 0, 0),
                ("default", 0, 1, 2),
                ("x", 1, 1, 1),
                ("y", 0, 0, 1),
                ("default", 0, 2, 3),
                ("y", 0, 1, 2),
            ],
            "workers={workers}: {:?}",
            shape(&out)
        );
    }
}

#[test]
fn streams_sharing_their_first_16_bytes_come_out_in_byte_order() {
    // Summarizing orders streams by their first 16 bytes first: these three tie there and
    // must still come out in byte order ('B' < 'a'), with the correction's revision right.
    let (p, pa, pb) = ("abcdefghijklmnop", "abcdefghijklmnopa", "abcdefghijklmnopB");
    let lines = [
        reaction("a", "🔥", 1000, Some(pa)),
        reaction("b", "🔥", 1000, Some(p)),
        line("c", "🔥", 5000),               // closes windows 0 and 1
        reaction("d", "😂", 4100, Some(pb)), // starts in window 2
        reaction("e", "😂", 1500, Some(p)),  // corrects p's window 0
        line("f", "🔥", 7000),               // closes window 2
    ];
    for workers in [1, 2, 3] {
        let (out, _) = run(&lines, workers, Settings::default());
        let named: Vec<_> = shape(&out)
            .into_iter()
            .filter(|(stream, window, _, _)| stream.starts_with("abc") && *window < 3)
            .collect();
        assert_eq!(
            named,
            [
                (p, 0, 0, 1),
                (pa, 0, 0, 1),
                (p, 1, 0, 0),
                (pa, 1, 0, 0),
                (p, 0, 1, 2),
                (p, 2, 0, 0),
                (pb, 2, 0, 1),
                (pa, 2, 0, 0),
            ],
            "workers={workers}"
        );
    }
}

#[test]
fn one_and_four_workers_give_identical_corrections() {
    let mut random = support::XorShift::new(0x5eed_0016);
    let emojis = ["🔥", "❤️", "😂", "👍🏽", "🎉"];
    let lines: Vec<String> = (0..20_000)
        .map(|i| {
            let r = random.next();
            let stream = format!("s{}", (r % 7).min((r >> 12) % 7));
            let emoji = emojis[(r >> 8) as usize % emojis.len()];
            // One line in 50 is 3-14 s late: some correct their window, some are dropped.
            let behind = if r.is_multiple_of(50) {
                3000 + (r >> 30) % 11_000
            } else {
                0
            };
            let ts = 1_700_000_000_000 + i * 3 - behind as i64;
            reaction(&format!("u{}", r % 300), emoji, ts, Some(&stream))
        })
        .collect();
    let settings = Settings {
        idle_windows: 10,
        ..Settings::default()
    };
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let config = |workers| ReplayConfig {
        settings,
        deployment: Deployment::single(workers),
        block_bytes: 4096,
        now_ms: NOW,
    };
    let mut one = Vec::new();
    let one_report = replay(
        std::io::Cursor::new(text.clone().into_bytes()),
        &config(1),
        |s| {
            one.push(s.to_json());
            Ok(())
        },
    )
    .unwrap();
    let mut four = Vec::new();
    let four_report = replay(std::io::Cursor::new(text.into_bytes()), &config(4), |s| {
        four.push(s.to_json());
        Ok(())
    })
    .unwrap();
    assert_eq!(one, four);
    assert_eq!(one_report, four_report);
    assert!(one_report.corrected > 50, "{one_report:?}");
    assert!(one_report.late > 10, "{one_report:?}");
    assert!(one.iter().any(|l| l.contains(r#""revision":2"#)));
    // Every reaction counted ends in the final revision of its window.
    let mut last: std::collections::BTreeMap<(String, u64), u64> = Default::default();
    for line in &one {
        let s: WindowSummary = serde_json::from_str(line).unwrap();
        last.insert((s.stream_id.as_str().to_owned(), s.window), s.total);
    }
    assert_eq!(last.values().sum::<u64>(), one_report.counted);
}

#[test]
fn the_state_of_a_window_is_freed_once_it_has_passed_the_horizon() {
    let held = Arc::new(HeldState::default());
    let seen = Arc::clone(&held);
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let observed = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&observed);
    timely::execute(timely::Config::process(2), move |worker| {
        let tx = tx.lock().unwrap().clone();
        let held = Arc::clone(&seen);
        let record = Arc::clone(&record);
        let probe = timely::dataflow::ProbeHandle::new();
        let settings = Settings::default(); // horizon: 5 windows
        let mut input = worker.dataflow::<WindowId, _, _>(|scope| {
            let (input, counts) = scope.new_input::<Vec<((StreamId, WindowId, Emoji), u64)>>();
            window_summaries(counts, &settings, Activity::default(), held)
                .probe_with(&probe)
                .capture_into(tx);
            input
        });
        let fire = Emoji::parse("🔥").unwrap();
        let laugh = Emoji::parse("😂").unwrap();
        let stream = StreamId::parse("m").unwrap();
        let index = worker.index();
        let mut step_to = |input: &mut timely::dataflow::InputHandle<WindowId, _>, t| {
            input.advance_to(t);
            while probe.less_than(&t) {
                worker.step();
            }
        };
        if index == 0 {
            input.send(((stream.clone(), 0, fire), 3));
            input.send(((stream.clone(), 0, laugh), 1));
        }
        step_to(&mut input, 2);
        record
            .lock()
            .unwrap()
            .push(("window 0 closed", seen_state(&seen)));
        // Two corrections of window 0, at epochs 2 and 4.
        if index == 1 {
            input.send(((stream.clone(), 0, fire), 2));
        }
        step_to(&mut input, 4);
        if index == 0 {
            input.send(((stream.clone(), 0, laugh), 1));
        }
        step_to(&mut input, 5);
        record
            .lock()
            .unwrap()
            .push(("corrected twice", seen_state(&seen)));
        // Past window 0's horizon (epoch 6) with the input still open.
        step_to(&mut input, 8);
        record
            .lock()
            .unwrap()
            .push(("past the horizon", seen_state(&seen)));
        // A window still within its horizon when the input ends: freed then.
        if index == 0 {
            input.send(((stream.clone(), 8, fire), 1));
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let observed = observed.lock().unwrap().clone();
    for (when, state) in &observed {
        match *when {
            "past the horizon" => assert_eq!(*state, (0, 0), "{when}"),
            // One window, two emoji keys, whichever worker holds them.
            _ => assert_eq!(*state, (1, 2), "{when}"),
        }
    }
    assert_eq!(seen_state(&held), (0, 0), "held after the input ended");
    let out: Vec<(WindowId, WindowSummary)> = rx
        .extract()
        .into_iter()
        .flat_map(|(t, s)| s.into_iter().map(move |s| (t, s)))
        .collect();
    let revisions: Vec<(WindowId, u32, u64)> = out
        .iter()
        .filter(|(_, s)| s.window == 0)
        .map(|(t, s)| (*t, s.revision, s.total))
        .collect();
    assert_eq!(revisions, [(0, 0, 4), (2, 1, 6), (4, 2, 7)]);
}

fn seen_state(held: &HeldState) -> (usize, usize) {
    (held.windows(), held.keys())
}

/// A restart at window 10 that rebuilt stream `m`'s windows 8 (corrected once: 🔥 3, 😂 1) and
/// 9 (🔥 2) from the windows topic.
fn restarted_at_10(settings: &Settings) -> Activity {
    let stream = StreamId::parse("m").unwrap();
    let count = |emoji: &str, n| {
        dataflows::EmojiCount::scaled(Emoji::parse(emoji).unwrap(), n, settings.scale)
    };
    let mut eight = WindowSummary::new(
        stream.clone(),
        8,
        &settings.windowing,
        vec![count("🔥", 3), count("😂", 1)],
    );
    eight.revision = 1;
    let nine = WindowSummary::new(stream.clone(), 9, &settings.windowing, vec![count("🔥", 2)]);
    Activity {
        from: Some(10),
        last_reacted: [(stream, 9)].into_iter().collect(),
        recent: vec![eight, nine],
    }
}

#[test]
fn after_a_restart_a_rebuilt_window_is_corrected_from_its_counts_and_revision() {
    let settings = Settings::default(); // horizon: 5 windows
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    timely::execute(timely::Config::process(2), move |worker| {
        let tx = tx.lock().unwrap().clone();
        let probe = timely::dataflow::ProbeHandle::new();
        let activity = restarted_at_10(&settings);
        let held = Arc::new(HeldState::default());
        let mut input = worker.dataflow::<WindowId, _, _>(|scope| {
            let (input, counts) = scope.new_input::<Vec<((StreamId, WindowId, Emoji), u64)>>();
            window_summaries(counts, &settings, activity, held)
                .probe_with(&probe)
                .capture_into(tx);
            input
        });
        input.advance_to(10);
        let stream = StreamId::parse("m").unwrap();
        // Read in epoch 10: a late 😂 for window 8 (on worker 1), 🔥 for window 10.
        match worker.index() {
            0 => input.send(((stream, 10, Emoji::parse("🔥").unwrap()), 1)),
            _ => input.send(((stream, 8, Emoji::parse("😂").unwrap()), 1)),
        }
        input.advance_to(12);
        while probe.less_than(&12) {
            worker.step();
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let out: Vec<(WindowId, WindowSummary)> = rx
        .extract()
        .into_iter()
        .flat_map(|(t, s)| s.into_iter().map(move |s| (t, s)))
        .collect();
    let emitted: Vec<(WindowId, WindowId, u32, u64)> = out
        .iter()
        .map(|(t, s)| (*t, s.window, s.revision, s.total))
        .collect();
    // Nothing below the start comes out again; window 8 comes out as its second correction,
    // with what it had before the restart and the late reaction; window 11 is empty.
    assert_eq!(emitted, [(10, 8, 2, 5), (10, 10, 0, 1), (11, 11, 0, 0)]);
    let corrected = &out[0].1;
    assert_eq!(counts(corrected), [("🔥", 3), ("😂", 2)]);
}
