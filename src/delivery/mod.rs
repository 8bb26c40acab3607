//! Delivery: windows to clients as Server-Sent Events, or WebSocket messages.
//!
//! ```text
//! durable windows ─▶ broadcast to every worker ─▶ the first worker of each process publishes
//!   into its StreamStore (per stream: retained ring + live broadcast while it has viewers)
//!   ─▶ ClientStream per connection, on the hub the client was assigned (replay after
//!   Last-Event-ID, then live; resync when behind; keep-alives from the hub)
//! ```
//! - [`frame`]: a window encoded once as SSE bytes, shared by every connection.
//! - [`streams`]: each stream's retained windows and live broadcast, once per process.
//! - [`hub`]: one (cluster, subscriber) hub and its clients' streams.
//! - [`registry`]: the tree, least-loaded assignment, growth at capacity and shrinking after.
//! - [`events`]: what an event-stream request gets, and the head every stream starts with.
//! - [`listing`]: `GET /streams`, the active streams and their viewers.
//! - [`routes`]: the HTTP side; [`lean`]: event streams served without hyper's buffers.
//! - [`ws`]: the WebSocket door to the same hubs (upgrade, messages, pings).
//! - [`shared`]: what delivery asks of other processes serving the same tree.

pub mod events;
pub mod frame;
pub mod hub;
pub mod lean;
pub mod listing;
pub mod registry;
pub mod routes;
pub mod shared;
pub mod streams;
pub mod ws;

pub use frame::Frame;
pub use hub::{Hub, HubSettings};
pub use registry::Registry;
pub use shared::{Serving, SharedTree};
