//! Delivery: windows to clients as Server-Sent Events.
//!
//! ```text
//! durable windows ─▶ broadcast to every worker ─▶ each worker publishes into the hubs it
//!   owns (dataflows::hub_owner) ─▶ Hub (retained ring + live broadcast) ─▶ ClientStream per
//!   connection (replay after Last-Event-ID, then live; resync when behind)
//! ```
//! - [`frame`]: a window encoded once as SSE bytes, shared by every connection.
//! - [`hub`]: one (cluster, subscriber) hub and its clients' streams.
//! - [`registry`]: the tree, least-loaded assignment, growth at capacity and shrinking after.
//! - [`events`]: what an event-stream request gets, and the head every stream starts with.
//! - [`routes`]: the HTTP side; [`lean`]: event streams served without hyper's buffers.
//! - [`shared`]: what delivery asks of other processes serving the same tree.

pub mod events;
pub mod frame;
pub mod hub;
pub mod lean;
pub mod registry;
pub mod routes;
pub mod shared;

pub use frame::Frame;
pub use hub::{Hub, HubSettings};
pub use registry::Registry;
pub use shared::{Serving, SharedTree};
