//! The `emostream` service: HTTP ingest, Kafka, the live dataflow, and the command line over
//! the dataflows in `emostream-dataflows`.
//!
//! # Layout
//! - [`cli`]: flags, each with its `EMOSTREAM_*` variable.
//! - [`replay_cmd`], [`run_cmd`]: the commands; `main.rs` only dispatches.
//! - [`ingest`], [`server`], [`http_error`], [`rate_limit`]: the HTTP API.
//! - [`delivery`]: SSE hubs, registration, the delivery routes.
//! - [`kafka`]: producer, per-worker source, windows sink, embedded broker, topics, resume.
//! - [`live`]: the live dataflow's assembly; [`stats`]: counters.

pub mod cli;
pub mod delivery;
pub mod http_error;
pub mod ingest;
pub mod kafka;
pub mod live;
pub mod rate_limit;
pub mod replay_cmd;
pub mod run_cmd;
pub mod server;
pub mod stats;
