//! Delivery: windows to clients as Server-Sent Events.
//!
//! ```text
//! durable windows ─▶ broadcast to every worker ─▶ each worker publishes into the hubs it
//!   owns (hub index mod workers) ─▶ Hub (retained ring + live broadcast) ─▶ ClientStream per
//!   connection (replay after Last-Event-ID, then live; resync when behind)
//! ```
//! - [`frame`]: a window encoded once as SSE bytes, shared by every connection.
//! - [`hub`]: one (cluster, subscriber) hub and its clients' streams.
//! - [`registry`]: the tree, least-loaded assignment, growth at capacity.
//! - [`routes`]: the HTTP side; [`lean`]: event streams served without hyper's buffers.

pub mod frame;
pub mod hub;
pub mod lean;
pub mod registry;
pub mod routes;

pub use frame::Frame;
pub use hub::{Hub, HubSettings};
pub use registry::Registry;
