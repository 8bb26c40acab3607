//! Seeing it work: `/metrics` read with an OpenMetrics parser, `emostream load`'s ledger
//! check end to end, the dashboard's assets, and JSON logs.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use common::{batch, now_ms, poll_until, post_batch, start};
use emostream::cli::{Cli, Command as Sub};
use emostream::load::{LoadArgs, LoadError};
use openmetrics_parser::{MetricNumber, OpenMetricsValue};
use serde_json::{json, Value};

type Exposition =
    openmetrics_parser::MetricsExposition<openmetrics_parser::OpenMetricsType, OpenMetricsValue>;

/// What Prometheus 3 sends: OpenMetrics preferred, text 0.0.4 accepted.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

async fn scrape(addr: std::net::SocketAddr) -> Exposition {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("not valid OpenMetrics text ({e:?}):\n{text}"))
}

/// The sum of `family`'s samples whose labels include `labels`; `None` if it has none (a
/// gauge family with no sample yet is not in the exposition at all).
fn value(metrics: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let family = metrics.families.get(family)?;
    let mut sum = None;
    for sample in family.iter_samples() {
        let set = sample.get_labelset().unwrap();
        if labels
            .iter()
            .all(|(k, v)| set.get_label_value(k) == Some(*v))
        {
            let v = match &sample.value {
                OpenMetricsValue::Counter(c) => number(&c.value),
                OpenMetricsValue::Gauge(g) => number(g),
                OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                other => panic!("unexpected value {other:?}"),
            };
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

fn number(n: &MetricNumber) -> f64 {
    n.as_f64()
}

fn counter(metrics: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let kind = &metrics.families[family].family_type;
    assert_eq!(
        *kind,
        openmetrics_parser::OpenMetricsType::Counter,
        "{family} is a counter"
    );
    value(metrics, family, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_speak_text_0_0_4_to_a_scraper_that_does_not_ask_for_openmetrics() {
    let (system, seen) = start(&[]).await;
    let addr = system.http_addr;
    post_batch(&system, &batch("ana", "🔥", 7)).await;
    common::wait_for_total(&system, &seen, 7).await;
    let openmetrics = scrape(addr).await;

    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let mut request = reqwest::Client::new().get(format!("http://{addr}/metrics"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        let text = response.text().await.unwrap();
        assert!(!text.contains("# EOF"), "{accept:?}");
        let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("not valid 0.0.4 text ({e:?}):\n{text}"));
        // Every family is there, a counter under its samples' name, of the same type.
        for (name, family) in &openmetrics.families {
            let (text_name, kind) = match family.family_type {
                openmetrics_parser::OpenMetricsType::Counter => (
                    format!("{name}_total"),
                    openmetrics_parser::PrometheusType::Counter,
                ),
                openmetrics_parser::OpenMetricsType::Gauge => {
                    (name.clone(), openmetrics_parser::PrometheusType::Gauge)
                }
                openmetrics_parser::OpenMetricsType::Histogram => {
                    (name.clone(), openmetrics_parser::PrometheusType::Histogram)
                }
                ref other => panic!("{name}: unexpected type {other:?}"),
            };
            let found = parsed
                .families
                .get(&text_name)
                .unwrap_or_else(|| panic!("{text_name} missing from\n{text}"));
            assert_eq!(found.family_type, kind, "{text_name}");
            assert_eq!(found.help, family.help, "{text_name}");
        }
        let accepted = parsed.families["emostream_reactions_accepted_total"]
            .iter_samples()
            .map(|s| match &s.value {
                openmetrics_parser::PrometheusValue::Counter(c) => c.value.as_f64(),
                other => panic!("{other:?}"),
            })
            .sum::<f64>();
        assert_eq!(accepted, 7.0);
    }
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_reactions_flow() {
    let (system, seen) =
        start(&["--partitions", "4", "--clusters", "2", "--subscribers", "2"]).await;
    let addr = system.http_addr;
    let before = scrape(addr).await;
    assert_eq!(counter(&before, "emostream_reactions_accepted", &[]), 0.0);
    for family in [
        "emostream_reactions_rejected",
        "emostream_producer_queue_full",
        "emostream_reactions_produced",
        "emostream_reactions_consumed",
        "emostream_invalid_messages",
        "emostream_late_reactions",
        "emostream_windows_emitted",
        "emostream_registrations",
        "emostream_sse_events_sent",
        "emostream_sse_resyncs",
        "emostream_sse_slow_clients_closed",
    ] {
        assert!(before.families.contains_key(family), "{family} missing");
        assert!(
            !before.families[family].help.is_empty(),
            "{family} has no help"
        );
    }
    assert_eq!(
        before.families["emostream_window_close_delay_seconds"].family_type,
        openmetrics_parser::OpenMetricsType::Histogram
    );
    assert_eq!(
        value(
            &before,
            "emostream_sse_clients",
            &[("cluster", "1"), ("subscriber", "1")]
        ),
        Some(0.0)
    );

    // A client on its stream, 30 reactions, and refusals of two kinds.
    let http = reqwest::Client::new();
    let client: Value = http
        .post(format!("http://{addr}/clients"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (c, s) = (
        client["cluster"].to_string(),
        client["subscriber"].to_string(),
    );
    let stream = http
        .get(client["events_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    post_batch(&system, &batch("ana", "🔥", 30)).await;
    let bad = http
        .post(format!("http://{addr}/emoji"))
        .json(&json!({"user_id": "bo", "emoji_type": "not an emoji"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad_batch = http
        .post(format!("http://{addr}/emoji/batch"))
        .json(&json!([
            {"user_id": "bo", "emoji_type": "🔥", "timestamp": now_ms()},
            {"user_id": "", "emoji_type": "🔥", "timestamp": now_ms()},
            {"user_id": "bo", "emoji_type": "🔥", "timestamp": now_ms()},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_batch.status(), 400);
    common::wait_for_total(&system, &seen, 30).await;

    // Lag comes from librdkafka's statistics, once a second.
    let after = poll_until("the consumer lag is 0", Duration::from_secs(10), || async {
        let m = scrape(addr).await;
        match value(&m, "emostream_consumer_lag", &[]) {
            Some(0.0) => Ok(m),
            lag => Err(format!("lag {lag:?}")),
        }
    })
    .await;
    assert_eq!(counter(&after, "emostream_reactions_accepted", &[]), 30.0);
    assert_eq!(
        counter(&after, "emostream_http_refusals", &[("status", "400")]),
        2.0,
        "each refused request counted by its status"
    );
    assert_eq!(
        counter(
            &after,
            "emostream_reactions_rejected",
            &[("reason", "emoji_type")]
        ),
        1.0
    );
    // The batch is refused whole: its three reactions.
    assert_eq!(
        counter(
            &after,
            "emostream_reactions_rejected",
            &[("reason", "user_id")]
        ),
        3.0
    );
    assert_eq!(counter(&after, "emostream_reactions_consumed", &[]), 30.0);
    let partitions = after.families["emostream_reactions_consumed"]
        .iter_samples()
        .count();
    assert_eq!(partitions, 4, "one consumed counter per partition");
    assert_eq!(value(&after, "emostream_consumer_lag", &[]), Some(0.0));
    assert_eq!(counter(&after, "emostream_reactions_produced", &[]), 30.0);
    let emitted = counter(&after, "emostream_windows_emitted", &[]);
    assert!(emitted >= 1.0);
    assert!(value(&after, "emostream_window_close_delay_seconds", &[]).unwrap() >= 1.0);
    for worker in ["0", "1"] {
        let watermark =
            value(&after, "emostream_watermark_seconds", &[("worker", worker)]).unwrap();
        let age = now_ms() as f64 / 1000.0 - watermark;
        assert!(
            (0.0..30.0).contains(&age),
            "worker {worker} watermark {age} s behind"
        );
    }
    assert_eq!(counter(&after, "emostream_registrations", &[]), 1.0);
    assert_eq!(
        value(
            &after,
            "emostream_sse_clients",
            &[("cluster", &c), ("subscriber", &s)]
        ),
        Some(1.0)
    );
    assert_eq!(value(&after, "emostream_sse_clients", &[]), Some(1.0));
    assert_eq!(value(&after, "emostream_assigned_clients", &[]), Some(1.0));
    assert!(counter(&after, "emostream_sse_events_sent", &[]) >= 1.0);
    assert_eq!(value(&after, "emostream_subscribers", &[]), Some(4.0));
    drop(stream);
    system.shutdown().await.unwrap();
}

fn load_args(target: &str, extra: &[&str]) -> LoadArgs {
    let mut argv = vec!["emostream", "load", "--target", target];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Sub::Load(args) => args,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_finds_every_window_exact_and_reports_as_json() {
    let (system, _seen) = start(&[]).await;
    let target = format!("http://{}", system.http_addr);
    // The binary, as scripts run it: single reactions, JSON report, exit status 0.
    let output = Command::new(env!("CARGO_BIN_EXE_emostream"))
        .args([
            "load",
            "--target",
            &target,
            "--rate",
            "300",
            "--duration",
            "3",
            "--users",
            "50",
            "--sse-clients",
            "3",
            "--json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["exact"], true);
    assert!(
        report["check"]["windows"].as_u64().unwrap() >= 2,
        "{report:#}"
    );
    assert_eq!(report["check"]["deliveries"], report["check"]["exact"]);
    assert_eq!(report["check"]["lost"], 0);
    assert_eq!(report["sent"], report["accepted"]);
    assert!(report["accepted"].as_u64().unwrap() >= 600, "{report:#}");
    assert!(report["http_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(report["window_latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // Batches, in process.
    let report = emostream::load::load(&load_args(
        &target,
        &[
            "--rate",
            "2000",
            "--duration",
            "3",
            "--batch",
            "50",
            "--sse-clients",
            "2",
        ],
    ))
    .await
    .unwrap();
    assert!(report.exact, "{}", report.to_text());
    assert_eq!(report.accepted, report.sent);
    assert_eq!(report.check.deliveries, report.check.windows * 2);
    system.shutdown().await.unwrap();
}

/// `--late-fraction 0.05 --late-by-ms 3000` with clients following over `transport`: one
/// reaction in twenty corrects a window already emitted; every client's windows end,
/// corrected, exactly at the ledger's counts, and every event went over that transport.
async fn late_reactions_end_exact(transport: &str) {
    let (system, _seen) = start(&["--window-ms", "1000"]).await;
    let target = format!("http://{}", system.http_addr);
    let report = emostream::load::load(&load_args(
        &target,
        &[
            "--rate",
            "400",
            "--duration",
            "4",
            "--batch",
            "10",
            "--streams",
            "2",
            "--sse-clients",
            "3",
            "--late-fraction",
            "0.05",
            "--late-by-ms",
            "3000",
            "--transport",
            transport,
        ],
    ))
    .await
    .unwrap();
    let text = report.to_text();
    assert!(report.exact, "{text}");
    assert!(report.check.deliveries > 0, "{text}");
    assert!(
        report.corrections > 0,
        "late reactions made corrections: {text}"
    );
    assert!(system.stats.corrected.get() > 0, "{text}");
    assert_eq!(system.stats.late.get(), 0, "{text}");
    let (over, not_over) = match transport {
        "ws" => (&system.stats.ws_events_sent, &system.stats.events_sent),
        _ => (&system.stats.events_sent, &system.stats.ws_events_sent),
    };
    assert!(
        over.get() > 0 && not_over.get() == 0,
        "the clients followed over {transport} alone: {text}"
    );
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_late_reactions_finds_every_final_revision_exact() {
    late_reactions_end_exact("sse").await;
}

/// The same over the WebSocket door: the same ledger, the same exactness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_over_websocket_finds_every_final_revision_exact() {
    late_reactions_end_exact("ws").await;
}

/// A run right after another, on the same server and stream, with reactions stamped seconds in
/// the past: its windows hold none of the earlier run's reactions, so both end exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_right_after_another_finds_its_own_windows_exact() {
    let (system, _seen) = start(&["--window-ms", "1000"]).await;
    let target = format!("http://{}", system.http_addr);
    for late in ["0", "0.2"] {
        let report = emostream::load::load(&load_args(
            &target,
            &[
                "--rate",
                "400",
                "--duration",
                "2",
                "--batch",
                "10",
                "--sse-clients",
                "2",
                "--window-ms",
                "1000",
                "--late-fraction",
                late,
                "--late-by-ms",
                "3000",
            ],
        ))
        .await
        .unwrap();
        let text = report.to_text();
        assert!(report.exact, "late fraction {late}: {text}");
        assert!(report.check.deliveries > 0, "{text}");
    }
    system.shutdown().await.unwrap();
}

/// `--streams 3 --sse-clients 6`: clients on every stream, each checked against its own
/// stream's reactions: a client registered for a stream gets only its windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_finds_every_window_of_every_stream_exact() {
    let (system, _seen) = start(&[]).await;
    let target = format!("http://{}", system.http_addr);
    let report = emostream::load::load(&load_args(
        &target,
        &[
            "--rate",
            "600",
            "--duration",
            "3",
            "--batch",
            "10",
            "--streams",
            "3",
            "--sse-clients",
            "6",
        ],
    ))
    .await
    .unwrap();
    let text = report.to_text();
    assert!(report.exact, "{text}");
    assert_eq!(report.accepted, report.sent, "{text}");
    assert_eq!((report.streams, report.streams_watched), (3, 3), "{text}");
    assert_eq!(report.unwatched_accepted, 0);
    assert_eq!(report.check.other_stream, 0, "{text}");
    let names: Vec<&str> = report
        .per_stream
        .iter()
        .map(|s| s.stream_id.as_str())
        .collect();
    assert_eq!(names, ["load-0", "load-1", "load-2"]);
    // One client per stream, the other three by the same Zipf weights: 3, 2, 1.
    let clients: Vec<usize> = report.per_stream.iter().map(|s| s.check.clients).collect();
    assert_eq!(clients, [3, 2, 1], "{text}");
    for s in &report.per_stream {
        assert!(s.accepted > 0 && s.check.windows >= 2, "{text}");
        assert_eq!(
            s.check.deliveries,
            s.check.windows * s.check.clients as u64,
            "{text}"
        );
        assert_eq!(s.check.exact, s.check.deliveries, "{text}");
    }
    // Zipf 1.0 over 3 streams: shares 6/11, 3/11, 2/11.
    let (hot, cold) = (report.per_stream[0].sent, report.per_stream[2].sent);
    assert!(hot > 2 * cold, "{text}");
    assert_eq!(
        report.per_stream.iter().map(|s| s.accepted).sum::<u64>(),
        report.accepted
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["per_stream"].as_array().unwrap().len(), 3);
    assert_eq!(json["per_stream"][1]["stream_id"], "load-1");
    assert!(text.contains("3 streams"), "{text}");
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reports_windows_that_disagree_with_its_ledger() {
    let (system, _seen) = start(&[]).await;
    let target = format!("http://{}", system.http_addr);
    // Someone else reacts during the run: those windows carry more than the ledger.
    let intruder = {
        let target = target.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            // Timing is the point here, not a wait for a condition: the intruder reacts once
            // the load run is under way, then spreads its reactions over the run's windows.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for _ in 0..5 {
                let r = http
                    .post(format!("{target}/emoji"))
                    .json(&json!({"user_id": "intruder", "emoji_type": "🦄"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let report = emostream::load::load(&load_args(
        &target,
        &["--rate", "200", "--duration", "3", "--sse-clients", "2"],
    ))
    .await
    .unwrap();
    intruder.await.unwrap();
    assert!(!report.exact);
    assert!(report.check.wrong >= 2, "{}", report.to_text());
    assert_eq!(report.check.lost, 0);
    assert!(report.to_text().contains("MISMATCH"));
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_names_an_unreachable_target() {
    let args = load_args(
        "http://127.0.0.1:9",
        &["--duration", "1", "--sse-clients", "1"],
    );
    let e = emostream::load::load(&args).await.unwrap_err();
    assert!(matches!(e, LoadError::System(_)), "{e:?}");
    assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
    let args = load_args("localhost:8080", &["--duration", "1"]);
    let e = emostream::load::load(&args).await.unwrap_err();
    assert!(matches!(e, LoadError::Target(_)), "{e:?}");
    assert!(e.to_string().contains("--target"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary() {
    let (system, _seen) = start(&[]).await;
    let base = format!("http://{}", system.http_addr);
    for (path, kind, needle) in [
        ("/", "text/html", "/dashboard/app.js"),
        ("/dashboard/app.js", "text/javascript", "EventSource"),
        ("/dashboard/style.css", "text/css", "{"),
    ] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }
    system.shutdown().await.unwrap();
}

/// `tests/browser/dashboard.mjs` drives the page in headless Chromium: it clicks 🔥 and waits
/// for a window with its count, then follows `/?stream=match-2` and picks match-1 while both
/// streams get reactions, and checks each shows its own counts only. Needs node, `npm ci` in `tests/browser` and Chromium, so it
/// is ignored by default; CI installs them and runs it with `--include-ignored`, where a
/// missing piece fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node, Chromium and `npm ci --prefix tests/browser`; run with --include-ignored"]
async fn the_dashboard_shows_a_clicked_emoji_in_a_real_browser() {
    let (browser_dir, chromium) = common::browser::prerequisites();
    // dashboard.mjs checks the CORS policy too: the page's origin (127.0.0.1) is not listed,
    // localhost on the same port is.
    let port = common::free_port();
    let http = format!("127.0.0.1:{port}");
    let listed = format!("http://localhost:{port}");
    // The script posts once per window, so it must know the window's length.
    let window_ms = "2000";
    let (system, _seen) = start(&[
        "--http",
        &http,
        "--cors-origin",
        &listed,
        "--window-ms",
        window_ms,
    ])
    .await;
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let mut node = Command::new("node");
    node.arg(browser_dir.join("dashboard.mjs"))
        .arg(format!("http://{}/", system.http_addr))
        .arg(&screenshot)
        .arg(window_ms)
        .env("CHROMIUM", &chromium);
    let status = tokio::task::spawn_blocking(move || node.status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser test failed: {status}");
    assert!(screenshot.exists());
    eprintln!("dashboard screenshot: {}", screenshot.display());
    system.shutdown().await.unwrap();
}

#[test]
fn json_logs_carry_one_line_per_window() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_emostream"))
        .args([
            "--log-format",
            "json",
            "run",
            "--http",
            "127.0.0.1:0",
            "--idle-ms",
            "300",
            "--window-ms",
            "500",
            "--lateness-ms",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut windows = 0;
    let mut lines = 0;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let entry: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        lines += 1;
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
        if entry["target"] == "emostream::windows" {
            assert_eq!(entry["level"], "DEBUG");
            assert!(entry["window"].is_u64(), "{line}");
            windows += 1;
            if windows == 2 {
                break;
            }
        }
        assert!(lines < 200, "no window logged");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(windows, 2);
}
