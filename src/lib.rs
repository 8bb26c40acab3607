//! The `emostream` service: HTTP ingest, Kafka, the live dataflow, and the command line over
//! the dataflows in `emostream-dataflows`.
//!
//! # Layout
//! - [`cli`]: flags, each with its `EMOSTREAM_*` variable.
//! - [`replay_cmd`], [`run_cmd`]: the commands; `main.rs` only dispatches.
//! - [`system`]: the lifecycle of `run` (start steps, tasks, faults, ordered stop);
//!   [`error`]: failures classified, and their exit statuses.
//! - [`ingest`], [`server`], [`http_error`], [`rate_limit`]: the HTTP API.
//! - [`delivery`]: SSE hubs, registration, the delivery routes.
//! - [`peers`]: the processes of one deployment: hostfile, peer loss, who serves which hub,
//!   and how the processes that do not hold the registrations follow the one that does.
//! - [`kafka`]: producer, per-worker source, windows sink, embedded broker, topics, resume.
//! - [`live`]: the live dataflow's assembly; [`stats`]: counters; [`metrics`]: their
//!   Prometheus exposition.
//! - [`dashboard`]: the live page at `/`; [`load`]: `emostream load`, the load generator.

pub mod auth;
pub mod cli;
pub mod cors;
pub mod dashboard;
pub mod delivery;
pub mod drop_log;
pub mod error;
pub mod http_error;
pub mod ingest;
pub mod kafka;
pub mod limits;
pub mod live;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod metrics_format;
pub mod openapi;
pub mod peers;
pub mod rate_limit;
pub mod replay_cmd;
pub mod run_cmd;
pub mod server;
pub mod stats;
pub mod system;

/// The `tracing` target of the one line logged per closed window (debug level; shown by the
/// default filter, silenced with `EMOSTREAM_LOG=info`).
pub const WINDOW_LOG: &str = "emostream::windows";
