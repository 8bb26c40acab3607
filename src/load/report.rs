//! The load generator's report, as text for people and as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::ledger::{Check, StreamCheck};

/// Percentiles of a latency, in ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Samples.
    pub samples: u64,
}

impl Percentiles {
    /// From a histogram of µs.
    pub fn of_us(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        Percentiles {
            p50: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99: h.value_at_quantile(0.99) as f64 / 1000.0,
            p999: h.value_at_quantile(0.999) as f64 / 1000.0,
            samples: h.len(),
        }
    }
}

/// Everything a load run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The system loaded.
    pub target: String,
    /// Seconds spent sending.
    pub duration_s: f64,
    /// Reactions per second asked for.
    pub rate_asked: f64,
    /// Reactions per request.
    pub batch: usize,
    /// Users the reactions came from.
    pub users: u64,
    /// SSE clients that followed the windows.
    pub sse_clients: usize,
    /// Subscribers those clients were assigned to.
    pub sse_subscribers: usize,
    /// Reactions sent.
    pub sent: u64,
    /// Reactions sent per second.
    pub sent_per_s: f64,
    /// Reactions accepted (202).
    pub accepted: u64,
    /// Reactions accepted per second.
    pub accepted_per_s: f64,
    /// Reactions refused, by HTTP status.
    pub refused: BTreeMap<u16, u64>,
    /// Requests that got no answer.
    pub transport_errors: u64,
    /// The first of those errors.
    pub first_transport_error: Option<String>,
    /// Latency of the reaction requests.
    pub http_latency_ms: Percentiles,
    /// From a reaction's send to the receipt of its window, over every client.
    pub window_latency_ms: Percentiles,
    /// Windows received by the clients, resyncs included.
    pub windows_received: u64,
    /// `event: resync` received.
    pub resyncs: u64,
    /// `event: correction` received by the clients.
    pub corrections: u64,
    /// Streams reopened.
    pub reconnects: u64,
    /// Events the clients could not read as the contract's (none on a healthy run).
    pub malformed_events: u64,
    /// The first of those, and why.
    pub first_malformed_event: Option<String>,
    /// The check of every window against the ledger.
    pub check: Check,
    /// Every client received every window with the ledger's counts.
    pub exact: bool,
    /// Streams the load was spread over (`--streams`).
    pub streams: usize,
    /// The Zipf exponent of the spread (`--stream-skew`).
    pub stream_skew: f64,
    /// Streams with at least one SSE client: only their windows are checked.
    pub streams_watched: usize,
    /// Accepted reactions to streams no client followed (so not checked).
    pub unwatched_accepted: u64,
    /// Every stream's figures, hottest first (by rank, not by what was sent).
    pub per_stream: Vec<StreamFigures>,
}

/// One stream's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StreamFigures {
    /// The stream.
    pub stream_id: String,
    /// Reactions sent to it.
    pub sent: u64,
    /// Reactions to it accepted.
    pub accepted: u64,
    /// The check of its windows (nothing checked when no client follows it).
    #[serde(flatten)]
    pub check: StreamCheck,
}

/// Per-stream lines printed for the streams with the most reactions; every stream with a
/// problem is printed too, up to [`PROBLEM_LINES`]. `--json` has them all.
const TOP_STREAM_LINES: usize = 5;

/// Streams with problems printed at most.
const PROBLEM_LINES: usize = 20;

impl Report {
    /// The run passes: every window exact, or, with no SSE client to check, reactions accepted.
    pub fn passed(&self) -> bool {
        self.exact || (self.sse_clients == 0 && self.accepted > 0)
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let c = &self.check;
        let _ = writeln!(
            t,
            "emostream load: {} for {:.1} s, {} reactions/s asked, {} per request, {} users, {} SSE clients on {} subscribers",
            self.target, self.duration_s, self.rate_asked, self.batch, self.users, self.sse_clients,
            self.sse_subscribers
        );
        let refused: u64 = self.refused.values().sum();
        let _ = writeln!(
            t,
            "  sent       {} reactions ({:.0}/s); accepted {} ({:.0}/s); refused {}{}; no answer {}",
            self.sent,
            self.sent_per_s,
            self.accepted,
            self.accepted_per_s,
            refused,
            if self.refused.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.refused
                        .iter()
                        .map(|(s, n)| format!("{s}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.transport_errors
        );
        if let Some(e) = &self.first_transport_error {
            let _ = writeln!(t, "             first error: {e}");
        }
        let h = &self.http_latency_ms;
        let _ = writeln!(
            t,
            "  HTTP       p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms ({} requests)",
            h.p50, h.p99, h.p999, h.samples
        );
        let w = &self.window_latency_ms;
        let _ = writeln!(
            t,
            "  delivery   reaction sent → its window received: p50 {:.0} ms, p99 {:.0} ms",
            w.p50, w.p99
        );
        if self.streams <= 1 {
            let _ = writeln!(
                t,
                "  windows    {} windows × {} clients: {} exact, {} lost, {} doubled, {} wrong ({} received, {} corrections, {} resyncs, {} reconnects)",
                c.windows, self.sse_clients, c.exact, c.lost, c.doubled, c.wrong,
                self.windows_received, self.corrections, self.resyncs, self.reconnects
            );
        } else {
            self.streams_text(&mut t);
        }
        for f in &c.findings {
            let stream = if self.streams > 1 {
                format!(" ({})", f.stream_id)
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "             window {} client {}{stream}: {:?}",
                f.window, f.client, f.problem
            );
        }
        if let Some(first) = &self.first_malformed_event {
            let _ = writeln!(
                t,
                "  malformed  {} events the clients could not read; the first: {first}",
                self.malformed_events
            );
        }
        let verdict = if self.exact {
            "EXACT: every client received every window with the counts sent (its final revision)"
        } else if self.malformed_events > 0 {
            "MISMATCH: events were not the contract's (see malformed)"
        } else if self.sse_clients == 0 {
            "NOT CHECKED: no SSE clients (--sse-clients 0)"
        } else if c.deliveries == 0 {
            "NOTHING CHECKED: no reaction was accepted or no client was following"
        } else if c.other_stream > 0 {
            "MISMATCH: windows were lost, doubled, wrong or of another stream"
        } else {
            "MISMATCH: windows were lost, doubled or wrong"
        };
        let _ = writeln!(t, "  verdict    {verdict}");
        t
    }

    /// The streams' lines: what was checked, then the busiest streams and any with problems.
    fn streams_text(&self, t: &mut String) {
        let c = &self.check;
        let _ = writeln!(
            t,
            "  streams    {} streams (Zipf exponent {}): {} followed by the {} clients and checked; {} not followed, their {} accepted reactions not checked",
            self.streams,
            self.stream_skew,
            self.streams_watched,
            self.sse_clients,
            self.streams - self.streams_watched,
            self.unwatched_accepted
        );
        let _ = writeln!(
            t,
            "  windows    {} stream windows, {} deliveries: {} exact, {} lost, {} doubled, {} wrong, {} of another stream ({} received, {} corrections, {} resyncs, {} reconnects)",
            c.windows, c.deliveries, c.exact, c.lost, c.doubled, c.wrong, c.other_stream,
            self.windows_received, self.corrections, self.resyncs, self.reconnects
        );
        let mut busiest: Vec<&StreamFigures> = self.per_stream.iter().collect();
        busiest.sort_by_key(|s| std::cmp::Reverse(s.accepted));
        let top: Vec<&StreamFigures> = busiest.iter().take(TOP_STREAM_LINES).copied().collect();
        let troubled: Vec<&StreamFigures> = busiest
            .iter()
            .skip(TOP_STREAM_LINES)
            .filter(|s| s.check.has_problems())
            .copied()
            .collect();
        for s in top.iter().chain(troubled.iter().take(PROBLEM_LINES)) {
            let k = &s.check;
            let _ = writeln!(
                t,
                "             {:<12} sent {}, accepted {}; {} clients: {} windows, {} of {} deliveries exact, {} lost, {} doubled, {} wrong, {} of another stream",
                s.stream_id, s.sent, s.accepted, k.clients, k.windows, k.exact, k.deliveries,
                k.lost, k.doubled, k.wrong, k.other_stream
            );
        }
        let rest = self.per_stream.len() - top.len() - troubled.len().min(PROBLEM_LINES);
        if rest > 0 {
            let more = troubled.len().saturating_sub(PROBLEM_LINES);
            let _ = writeln!(
                t,
                "             … {rest} more streams ({more} of them with problems): --json lists every stream"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(per_stream: Vec<StreamFigures>) -> Report {
        Report {
            target: "http://127.0.0.1:8080".into(),
            duration_s: 1.0,
            rate_asked: 1.0,
            batch: 1,
            users: 1,
            sse_clients: per_stream.len(),
            sse_subscribers: 1,
            sent: 0,
            sent_per_s: 0.0,
            accepted: 0,
            accepted_per_s: 0.0,
            refused: BTreeMap::new(),
            transport_errors: 0,
            first_transport_error: None,
            http_latency_ms: Percentiles::default(),
            window_latency_ms: Percentiles::default(),
            windows_received: 0,
            resyncs: 0,
            corrections: 0,
            reconnects: 0,
            malformed_events: 0,
            first_malformed_event: None,
            check: Check::default(),
            exact: false,
            streams: per_stream.len(),
            stream_skew: 1.0,
            streams_watched: per_stream.len(),
            unwatched_accepted: 0,
            per_stream,
        }
    }

    #[test]
    fn the_text_names_the_busiest_streams_and_the_troubled_ones_and_json_all() {
        let per_stream: Vec<StreamFigures> = (0..100u64)
            .map(|k| StreamFigures {
                stream_id: format!("load-{k}"),
                sent: 1000 - k,
                accepted: 1000 - k,
                check: StreamCheck {
                    clients: 1,
                    windows: 3,
                    deliveries: 3,
                    exact: if k == 70 { 2 } else { 3 },
                    lost: u64::from(k == 70),
                    ..StreamCheck::default()
                },
            })
            .collect();
        let r = report(per_stream);
        let text = r.to_text();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("load-")).collect();
        let named: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(
            named,
            ["load-0", "load-1", "load-2", "load-3", "load-4", "load-70"],
            "{text}"
        );
        assert!(
            text.contains("94 more streams (0 of them with problems)"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["per_stream"].as_array().map(Vec::len), Some(100));
        assert_eq!(json["per_stream"][70]["lost"], 1);
        assert_eq!(json["per_stream"][70]["stream_id"], "load-70");
    }

    #[test]
    fn one_stream_keeps_the_report_as_before_streams() {
        let r = report(vec![StreamFigures {
            stream_id: "default".into(),
            sent: 1,
            accepted: 1,
            check: StreamCheck::default(),
        }]);
        let text = r.to_text();
        assert!(!text.contains("streams "), "{text}");
        assert!(text.contains("windows × 1 clients"), "{text}");
    }

    #[test]
    fn malformed_events_are_named_and_make_the_verdict_a_mismatch() {
        let mut r = report(vec![StreamFigures {
            stream_id: "default".into(),
            sent: 0,
            accepted: 0,
            check: StreamCheck::default(),
        }]);
        assert!(!r.to_text().contains("malformed"));
        r.malformed_events = 3;
        r.first_malformed_event = Some("window \"{}\": missing field `window`".into());
        let text = r.to_text();
        assert!(
            text.contains("malformed  3 events the clients could not read; the first: window"),
            "{text}"
        );
        assert!(
            text.contains("verdict    MISMATCH: events were not the contract's"),
            "{text}"
        );
    }
}
