//! `GET /metrics`: every metric's name and help text, in OpenMetrics or Prometheus' 0.0.4
//! text format as the scraper asks ([`crate::metrics_format`]).
//!
//! The service counts in plain atomics ([`Stats`]) and the delivery tree knows its own loads;
//! this collector reads both at scrape time, so the hot paths never touch a metrics registry.
//! The text is encoded by `prometheus-client` (OpenMetrics: counters end in `_total`); times
//! are in seconds, named `_seconds`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as MetricRegistry;
use warp::filters::BoxedFilter;
use warp::http::header::CONTENT_TYPE;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::delivery::registry::TreeView;
use crate::delivery::Registry;
use crate::stats::{Counter, RejectReason, Stats};

use crate::metrics_format::Format;

/// Reads the service's counters and the delivery tree at each scrape.
#[derive(Clone)]
pub struct Metrics {
    stats: Arc<Stats>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Metrics of a running system.
    pub fn new(stats: Arc<Stats>, registry: Arc<Registry>) -> Metrics {
        Metrics { stats, registry }
    }

    /// The exposition text.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut registry = MetricRegistry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// `GET /metrics`, in the format the scraper's `Accept` asks for.
pub fn route(metrics: Metrics) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>("accept"))
        .map(move |accept: Option<String>| match metrics.render() {
            Ok(text) => {
                let format = Format::negotiate(accept.as_deref());
                let text = match format {
                    Format::OpenMetrics => text,
                    Format::Text => crate::metrics_format::to_text_0_0_4(&text),
                };
                let mut response =
                    warp::reply::with_header(text, CONTENT_TYPE, format.content_type())
                        .into_response();
                // The format depends on Accept: a cache must not serve one scraper's to another.
                response.headers_mut().insert(
                    warp::http::header::VARY,
                    warp::http::HeaderValue::from_static("accept"),
                );
                response
            }
            Err(_) => crate::http_error::ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics_unavailable",
                "the metrics could not be encoded",
            )
            .into_response(),
        })
        .boxed()
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: &Counter) -> Fmt {
    let metric = ConstCounter::new(value.get());
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Fmt {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A gauge per `label` value. A family with no sample yet (before librdkafka's first
/// statistics, before the workers start) is left out rather than sent empty.
fn gauge_family<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: Vec<(String, N)>,
) -> Fmt
where
    N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug,
{
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (value, n) in samples {
        let labels = [(label, value)];
        ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let s = &self.stats;
        let e = &mut encoder;
        // The order is the exposition's order: ingest, then the dataflow, then delivery.
        encode_ingest(e, s)?;
        encode_source(e, s)?;
        encode_skipped(e, s)?;
        encode_windows(e, s)?;
        encode_corrections(e, s)?;
        encode_delivery(e, s, &self.registry.view())?;
        encode_streams(e, &self.registry)
    }
}

/// Streams as counts only: a `stream_id` label would give a scraper one series per live event
/// (thousands); per-stream figures are in `GET /streams`.
fn encode_streams(e: &mut DescriptorEncoder, registry: &crate::delivery::Registry) -> Fmt {
    let streams = registry.streams();
    gauge(
        e,
        "emostream_streams_active",
        "Streams that had reactions within the last --stream-idle-windows windows.",
        streams.active_count() as i64,
    )?;
    gauge(
        e,
        "emostream_streams_held",
        "Streams this process keeps windows or viewers of (active or not).",
        streams.len() as i64,
    )
}

/// The HTTP API and the Kafka producer: what was accepted, refused and delivered to the broker.
fn encode_ingest(e: &mut DescriptorEncoder, s: &Stats) -> Fmt {
    counter(
        e,
        "emostream_reactions_accepted",
        "Reactions accepted by the HTTP API (202).",
        &s.accepted,
    )?;
    {
        let mut family = e.encode_descriptor(
            "emostream_reactions_rejected",
            "Reactions refused by the HTTP API, by reason; a batch refused whole counts each of its reactions.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for reason in RejectReason::ALL {
            let labels = [("reason", reason.label())];
            ConstCounter::new(s.rejected(reason)).encode(family.encode_family(&labels)?)?;
        }
    }
    {
        let mut family = e.encode_descriptor(
            "emostream_auth_refused",
            "Requests refused for their token (401, 403), by reason.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for reason in crate::auth::Reason::ALL {
            let labels = [("reason", reason.label())];
            ConstCounter::new(s.auth_refused[reason as usize].get())
                .encode(family.encode_family(&labels)?)?;
        }
    }
    counter(
        e,
        "emostream_streams_expired",
        "Event streams closed because their token expired.",
        &s.streams_expired,
    )?;
    let refusals = s.refusals();
    // A family with no sample is not valid OpenMetrics: it appears with the first refusal.
    if !refusals.is_empty() {
        let mut family = e.encode_descriptor(
            "emostream_http_refusals",
            "HTTP requests answered with an error status (4xx, 5xx) by the API, by status.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (status, n) in refusals {
            let labels = [("status", status.to_string())];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
    }
    counter(
        e,
        "emostream_producer_queue_full",
        "Requests answered 503 because the producer queue was full.",
        &s.rejected_queue_full,
    )?;
    counter(
        e,
        "emostream_reactions_produced",
        "Reactions the Kafka broker acknowledged.",
        &s.produced,
    )?;
    counter(
        e,
        "emostream_reactions_produce_failed",
        "Reactions the producer could not deliver after its retries.",
        &s.produce_failed,
    )?;
    counter(
        e,
        "emostream_reactions_unconfirmed",
        "Reactions answered 503 (--ack broker) because the broker did not confirm them within --ack-timeout-ms: they may be counted or not.",
        &s.unconfirmed,
    )
}

/// The Kafka source of the dataflow: what each partition read and how far behind it is.
fn encode_source(e: &mut DescriptorEncoder, s: &Stats) -> Fmt {
    {
        let mut family = e.encode_descriptor(
            "emostream_reactions_consumed",
            "Messages read from the reactions topic, by partition.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (p, partition) in s.partitions.iter().enumerate() {
            let labels = [("partition", p.to_string())];
            ConstCounter::new(partition.consumed.get()).encode(family.encode_family(&labels)?)?;
        }
    }
    let lags: Vec<(String, i64)> = s
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.lag.get() >= 0)
        .map(|(p, partition)| (p.to_string(), partition.lag.get()))
        .collect();
    gauge_family(
        e,
        "emostream_consumer_lag",
        "Messages of a partition on the broker not yet read by this process (from librdkafka's statistics, every second).",
        "partition",
        lags,
    )
}

/// Messages the dataflow could not count: invalid, late, or never read.
fn encode_skipped(e: &mut DescriptorEncoder, s: &Stats) -> Fmt {
    counter(
        e,
        "emostream_invalid_messages",
        "Messages on the reactions topic that were not valid reactions (skipped).",
        &s.invalid_on_topic,
    )?;
    counter(
        e,
        "emostream_late_reactions",
        "Reactions dropped because their window had closed past the correction horizon.",
        &s.late,
    )?;
    counter(
        e,
        "emostream_lost_messages",
        "Offsets of the reactions topic never read (the broker dropped them).",
        &s.lost,
    )
}

/// Corrections: late reactions counted into closed windows, the windows emitted again, and the
/// state the horizon holds.
fn encode_corrections(e: &mut DescriptorEncoder, s: &Stats) -> Fmt {
    counter(
        e,
        "emostream_corrected_reactions",
        "Late reactions counted into their closed window (within --correction-horizon-ms).",
        &s.corrected,
    )?;
    counter(
        e,
        "emostream_corrections",
        "Corrected windows emitted (a window again, whole, with a higher revision).",
        &s.corrections_emitted,
    )?;
    gauge(
        e,
        "emostream_correction_windows_held",
        "(stream, window) pairs within the correction horizon whose counts are kept.",
        s.corrections_held.windows() as i64,
    )?;
    gauge(
        e,
        "emostream_correction_keys_held",
        "(stream, window, emoji) counts kept within the correction horizon.",
        s.corrections_held.keys() as i64,
    )
}

/// The dataflow's windows: each worker's watermark, the windows emitted and how late they close.
fn encode_windows(e: &mut DescriptorEncoder, s: &Stats) -> Fmt {
    let watermarks: Vec<(String, f64)> = s
        .watermarks
        .iter()
        .enumerate()
        .filter(|(_, w)| w.get() != i64::MIN)
        .map(|(w, watermark)| (w.to_string(), watermark.get() as f64 / 1000.0))
        .collect();
    gauge_family(
        e,
        "emostream_watermark_seconds",
        "Event time below which a worker's windows are closed, in seconds since the Unix epoch.",
        "worker",
        watermarks,
    )?;
    counter(
        e,
        "emostream_windows_emitted",
        "Windows written to the windows topic.",
        &s.windows_emitted,
    )?;
    s.window_close_delay.encode(e.encode_descriptor(
        "emostream_window_close_delay_seconds",
        "Time from a window's end to its emission (lateness and idleness waits included).",
        None,
        s.window_close_delay.metric_type(),
    )?)
}

/// Per subscriber: its open event streams and its assigned clients, one gauge family each.
fn encode_subscriber_loads(e: &mut DescriptorEncoder, tree: &TreeView) -> Fmt {
    for (name, help, connected) in [
        (
            "emostream_sse_clients",
            "Event streams open on a subscriber.",
            true,
        ),
        (
            "emostream_assigned_clients",
            "Registered clients assigned to a subscriber.",
            false,
        ),
    ] {
        let mut family = e.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for cluster in &tree.clusters {
            for subscriber in &cluster.subscribers {
                let labels = [
                    ("cluster", cluster.cluster.to_string()),
                    ("subscriber", subscriber.subscriber.to_string()),
                ];
                let value = if connected {
                    subscriber.connected
                } else {
                    subscriber.clients
                };
                ConstGauge::new(value as i64).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

/// Delivery: the load of every subscriber, client registrations and the SSE streams' events.
fn encode_delivery(e: &mut DescriptorEncoder, s: &Stats, tree: &TreeView) -> Fmt {
    encode_subscriber_loads(e, tree)?;
    counter(
        e,
        "emostream_registrations",
        "Clients registered with POST /clients.",
        &s.registrations,
    )?;
    counter(
        e,
        "emostream_clients_expired",
        "Registered clients released for having no event stream for the time to live.",
        &s.clients_expired,
    )?;
    counter(
        e,
        "emostream_sse_events_sent",
        "SSE events sent, over every connection.",
        &s.events_sent,
    )?;
    {
        let mut family = e.encode_descriptor(
            "emostream_events_sent",
            "Events sent to clients, by transport (sse, ws).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (transport, value) in [("sse", &s.events_sent), ("ws", &s.ws_events_sent)] {
            ConstCounter::new(value.get())
                .encode(family.encode_family(&[("transport", transport)])?)?;
        }
    }
    {
        let mut family = e.encode_descriptor(
            "emostream_event_streams_open",
            "Event streams open in this process, by transport (sse, ws).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (transport, open) in ["sse", "ws"].iter().zip(&s.streams_open) {
            ConstGauge::new(open.load(std::sync::atomic::Ordering::Relaxed))
                .encode(family.encode_family(&[("transport", *transport)])?)?;
        }
    }
    counter(
        e,
        "emostream_ws_unanswered_pings",
        "WebSocket clients closed for not answering a ping within a keep-alive interval.",
        &s.ws_unanswered_pings,
    )?;
    counter(
        e,
        "emostream_sse_resyncs",
        "Clients that fell behind and were sent the latest window instead.",
        &s.resyncs,
    )?;
    counter(
        e,
        "emostream_sse_slow_clients_closed",
        "Clients closed because they kept falling behind or stopped reading.",
        &s.slow_clients_closed,
    )?;
    counter(
        e,
        "emostream_resume_truncated",
        "Resumes (Last-Event-ID) whose missed windows were over --max-resume-bytes, resynced to the latest window instead.",
        &s.resume_truncated,
    )?;
    counter(
        e,
        "emostream_connections_refused",
        "Connections beyond --max-connections, answered 503 too_many_connections.",
        &s.connections_refused,
    )?;
    counter(
        e,
        "emostream_connections_timed_out",
        "Connections closed for no request head within --header-timeout-ms or idle for --idle-timeout-ms.",
        &s.connections_timed_out,
    )?;
    gauge(
        e,
        "emostream_subscribers",
        "Subscribers (SSE hubs) in the delivery tree.",
        tree.clusters
            .iter()
            .map(|c| c.subscribers.len() as i64)
            .sum(),
    )
}
