//! `emostream replay` as a user runs it: the real binary, files, stdin, exit codes.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn emostream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emostream"))
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn replay(file: &Path, workers: u32) -> Output {
    replay_with(file, workers, &[])
}

fn replay_with(file: &Path, workers: u32, flags: &[&str]) -> Output {
    let out = emostream()
        .arg("replay")
        .arg(file)
        .args(["--workers", &workers.to_string()])
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Each `tests/data/NAME.ndjson` with a `NAME.expected.ndjson` beside it is a golden case.
#[test]
fn golden_cases() {
    let mut cases = 0;
    for entry in std::fs::read_dir(data("")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_suffix(".ndjson")
            .filter(|s| !s.ends_with(".expected"))
        else {
            continue;
        };
        let expected = std::fs::read_to_string(data(&format!("{stem}.expected.ndjson"))).unwrap();
        for workers in [1, 2, 4] {
            let out = replay(&path, workers);
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                expected,
                "{name} with {workers} workers"
            );
        }
        cases += 1;
    }
    assert!(cases >= 1);
}

#[test]
fn stderr_reports_errors_and_counts() {
    let out = replay(&data("sample.ndjson"), 2);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("line 7: emoji_type: must be exactly one emoji, got 2 characters"),
        "{stderr}"
    );
    assert!(stderr.contains("line 11: body:"), "{stderr}");
    assert!(
        stderr.contains(
            "read 12 reactions: 10 counted (2 of them correcting a closed window), 2 invalid (body 1, emoji_type 1), 0 late; 8 windows"
        ),
        "{stderr}"
    );
}

fn generated(n: usize) -> String {
    let emojis = ["🔥", "❤️", "😂", "👍", "🎉"];
    (0..n)
        .map(|i| {
            // Mostly in order, every 7th line behind by up to 3 s, so some are late.
            let behind = if i % 7 == 0 { (i % 3000) as i64 } else { 0 };
            let ts = 1_763_856_000_000 + (i as i64) * 3 - behind;
            let emoji = emojis[(i * i) % emojis.len()];
            format!(
                "{{\"user_id\":\"u{}\",\"emoji_type\":\"{emoji}\",\"timestamp\":{ts}}}\n",
                i % 97
            )
        })
        .collect()
}

#[test]
fn output_is_byte_identical_for_1_2_and_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reactions.ndjson");
    // Over a MiB, so the input is cut into several blocks.
    std::fs::write(&file, generated(30_000)).unwrap();
    // Drop-only, with corrections (the default), and with a horizon short enough that some
    // late reactions correct their window and others are dropped: (flags, corrections?, late?).
    for (flags, corrects, drops) in [
        (&["--correction-horizon-ms", "0"][..], false, true),
        (&[][..], true, false),
        (&["--correction-horizon-ms", "2000"][..], true, true),
    ] {
        let one = replay_with(&file, 1, flags);
        assert!(one.stdout.len() > 1000);
        for workers in [2, 4] {
            let other = replay_with(&file, workers, flags);
            assert!(
                one.stdout == other.stdout,
                "stdout differs with {workers} workers, {flags:?}"
            );
            assert_eq!(
                one.stderr, other.stderr,
                "summary differs with {workers} workers, {flags:?}"
            );
        }
        let stderr = String::from_utf8(one.stderr).unwrap();
        assert_eq!(
            stderr.contains("correcting a closed window"),
            corrects,
            "{flags:?}: {stderr}"
        );
        assert_eq!(!stderr.contains(" 0 late"), drops, "{flags:?}: {stderr}");
        let revised = String::from_utf8(one.stdout)
            .unwrap()
            .lines()
            .any(|l| !l.ends_with("\"revision\":0}"));
        assert_eq!(revised, corrects, "{flags:?}: corrections in the output");
    }
}

/// `n` distinct free addresses on loopback.
fn free_addresses(n: usize) -> Vec<String> {
    common::free_ports(n)
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect()
}

/// Runs a replay on `processes` processes of `workers` threads; returns process 0's output
/// and checks the others printed no window.
fn replay_on_processes(file: &Path, processes: usize, workers: u32, dir: &Path) -> Output {
    let hostfile = dir.join(format!("hosts-{processes}-{workers}"));
    std::fs::write(&hostfile, free_addresses(processes).join("\n")).unwrap();
    let children: Vec<_> = (0..processes)
        .map(|p| {
            emostream()
                .arg("replay")
                .arg(file)
                .args(["--workers", &workers.to_string()])
                .args(["--processes", &processes.to_string()])
                .args(["--process", &p.to_string()])
                .arg("--hostfile")
                .arg(&hostfile)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (p, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success(),
            "process {p}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if p > 0 {
            assert!(out.stdout.is_empty(), "process {p} printed windows");
        }
    }
    outputs.swap_remove(0)
}

#[test]
fn a_replay_on_two_processes_is_byte_identical_to_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reactions.ndjson");
    std::fs::write(&file, generated(30_000)).unwrap();
    let one = replay(&file, 1);
    assert!(
        String::from_utf8_lossy(&one.stdout).contains(r#""revision":1"#),
        "the late lines make corrections, which must agree too"
    );
    for (processes, workers) in [(1, 2), (2, 1), (2, 2)] {
        let other = if processes == 1 {
            replay(&file, workers)
        } else {
            replay_on_processes(&file, processes, workers, dir.path())
        };
        assert!(
            one.stdout == other.stdout,
            "stdout differs on {processes} processes × {workers} workers"
        );
        assert_eq!(
            String::from_utf8_lossy(&one.stderr),
            String::from_utf8_lossy(&other.stderr),
            "summary differs on {processes} processes × {workers} workers"
        );
    }
}

#[test]
fn process_flags_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.ndjson");
    std::fs::write(&file, generated(10)).unwrap();
    let hostfile = dir.path().join("hosts");
    std::fs::write(&hostfile, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let unused = free_addresses(1).pop().unwrap();
    let lonely = dir.path().join("lonely");
    std::fs::write(&lonely, format!("{unused}\n127.0.0.1:9\n")).unwrap();
    for (args, says) in [
        (vec!["--processes", "2"], "--hostfile"),
        (
            vec![
                "--processes",
                "2",
                "--process",
                "2",
                "--hostfile",
                hostfile.to_str().unwrap(),
            ],
            "--process 2",
        ),
        (
            vec!["--processes", "3", "--hostfile", hostfile.to_str().unwrap()],
            "lists 2 processes",
        ),
        (
            vec!["--processes", "2", "--hostfile", "/nonexistent/hosts"],
            "cannot read",
        ),
        (
            vec![
                "--processes",
                "2",
                "--hostfile",
                lonely.to_str().unwrap(),
                "--connect-timeout-secs",
                "1",
            ],
            "within 1s (--connect-timeout-secs)",
        ),
    ] {
        let out = emostream()
            .arg("replay")
            .arg(&file)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn reads_stdin() {
    let mut child = emostream()
        .args(["replay", "-", "--workers", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(data("sample.ndjson")).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout,
        std::fs::read(data("sample.expected.ndjson")).unwrap()
    );
}

#[test]
fn environment_variables_set_flags() {
    let out = emostream()
        .args(["replay"])
        .arg(data("sample.ndjson"))
        .env("EMOSTREAM_WINDOW_MS", "10000")
        .env("EMOSTREAM_SCALE_PER", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with(r#"{"stream_id":"default","window":176385600,"start_ms":1763856000000,"end_ms":1763856010000"#),
        "{first}"
    );
}

#[test]
fn bad_invocations_say_what_to_fix() {
    let out = emostream()
        .args(["replay", "/no/such/file.ndjson"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot open /no/such/file.ndjson"),
        "{stderr}"
    );

    let out = emostream()
        .args(["replay", "-", "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--workers"));

    let out = emostream()
        .args(["replay", "-", "--window-ms", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--window-ms"));
}
