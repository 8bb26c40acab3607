//! emostream's dataflows: emoji reactions in, per-window counts out.
//!
//! Event time is cut into windows (2 s by default); window `k = floor(ts_ms / window_ms)` is also
//! the timely epoch its data travels in. Sources hold their timely capability at their watermark
//! (the greatest event time read, less the allowed lateness), so a window closes once every
//! worker's watermark has passed it; reactions for a closed window are late, counted, and
//! dropped. The live rule (a watermark per partition, idle partitions following the wall clock,
//! the hold at the least of them) is [`watermark`]; the Kafka source that applies it only reads
//! and commits. Replay's rule (one ordered input) is in [`replay`]. Each closed window becomes a
//! [`WindowSummary`] per stream ([`StreamId`]): counts per emoji, scaled by a [`ScaleRule`],
//! sorted by count. Counting is spread over the workers by (stream, emoji), so one hot stream
//! uses all of them; which windows without reactions a stream still gets is the idle rule
//! ([`operators::Summarize`]). Each summary then goes to the hubs of the delivery tree (one per
//! (cluster, subscriber)) on the worker that owns them ([`route::hub_owner`]).
//!
//! The crate has no Kafka and no HTTP: sources and sinks are handed in. [`replay`] runs the
//! whole pipeline over a newline-delimited JSON input.
//!
//! # Layout
//! - [`reaction`]: the reaction type and its validation, shared by every entry point.
//! - [`emoji`], [`stream`], [`window`], [`scale`], [`summary`], [`route`]: the domain, as plain
//!   functions.
//! - [`watermark`]: the live windowing rule, as a value fed with the time; [`clock`]: the one
//!   wall clock.
//! - [`operators`]: the timely operators, one verb each; [`dataflow`] assembles them.
//! - [`blocks`], [`replay`]: parallel parsing of an ordered input, and the replay driver.
//! - [`deployment`]: where the workers run: threads of one process, or of several processes.
//!
//! # Example
//! ```
//! use dataflows::deployment::Deployment;
//! use dataflows::replay::{replay, ReplayConfig};
//! use dataflows::Settings;
//!
//! let input = concat!(
//!     r#"{"user_id":"a","emoji_type":"🔥","timestamp":1000}"#, "\n",
//!     r#"{"user_id":"b","emoji_type":"🔥","timestamp":1999}"#, "\n",
//!     r#"{"user_id":"c","emoji_type":"😂","timestamp":6000,"stream_id":"match-42"}"#, "\n",
//! );
//! let config = ReplayConfig {
//!     settings: Settings::default(),
//!     deployment: Deployment::single(2),
//!     block_bytes: 64,
//!     now_ms: 10_000,
//! };
//! let mut lines = Vec::new();
//! let report = replay(input.as_bytes(), &config, |w| Ok(lines.push(w.to_json()))).unwrap();
//! assert_eq!(lines, [
//!     r#"{"stream_id":"default","window":0,"start_ms":0,"end_ms":2000,"total":2,"emojis":[{"emoji":"🔥","count":2,"scaled":1}],"revision":0}"#,
//!     r#"{"stream_id":"default","window":1,"start_ms":2000,"end_ms":4000,"total":0,"emojis":[],"revision":0}"#,
//!     r#"{"stream_id":"default","window":2,"start_ms":4000,"end_ms":6000,"total":0,"emojis":[],"revision":0}"#,
//!     r#"{"stream_id":"default","window":3,"start_ms":6000,"end_ms":8000,"total":0,"emojis":[],"revision":0}"#,
//!     r#"{"stream_id":"match-42","window":3,"start_ms":6000,"end_ms":8000,"total":1,"emojis":[{"emoji":"😂","count":1,"scaled":1}],"revision":0}"#,
//! ]);
//! assert_eq!((report.lines, report.counted, report.late), (3, 3, 0));
//! ```
#![forbid(missing_docs)]

pub mod blocks;
pub mod clock;
pub mod dataflow;
pub mod deployment;
pub mod emoji;
pub mod operators;
pub mod reaction;
pub mod replay;
pub mod route;
pub mod scale;
pub mod stream;
pub mod summary;
pub mod watermark;
pub mod window;

pub use clock::wall_clock_ms;
pub use dataflow::{
    window_summaries, Settings, SettingsError, DEFAULT_CORRECTION_HORIZON_MS, DEFAULT_IDLE_WINDOWS,
};
pub use emoji::Emoji;
pub use reaction::{
    check_user_id, parse_reaction, Field, InvalidReaction, MissingTimestamp, Reaction,
};
pub use route::{hub_owner, HubId, Topology};
pub use scale::ScaleRule;
pub use stream::StreamId;
pub use summary::{EmojiCount, WindowSummary};
pub use watermark::{Arrival, PartitionWatermarks, Watermark};
pub use window::{EventClock, WindowId, Windowing};
