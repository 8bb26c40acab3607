//! The window pipeline shared by every source: partial counts in, window summaries out.
//!
//! ```text
//! partial counts ((stream, emoji), n) @ window ─▶ CountByKey ─▶ Scale ─▶ Summarize ─▶ summaries @ window
//!   (pre-counted per worker)      (exchange by (stream, emoji))      (per stream, idle rule, in order)
//! ```
//! Delivery to the tree's hubs follows where they are served ([`crate::route::hub_owner`]).

use timely::dataflow::StreamVec;

use crate::operators::{Activity, CountByKey, CountKey, Scale, Summarize};
use crate::scale::ScaleRule;
use crate::summary::WindowSummary;
use crate::window::{WindowId, Windowing};

/// How many windows a stream keeps getting after one with reactions, by default (one minute of
/// 2 s windows).
pub const DEFAULT_IDLE_WINDOWS: u64 = 30;

/// Settings every dataflow shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Window length and lateness.
    pub windowing: Windowing,
    /// Counts to displayed emojis.
    pub scale: ScaleRule,
    /// Windows a stream gets after each window in which it had reactions, empty or not.
    pub idle_windows: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            windowing: Windowing::default(),
            scale: ScaleRule::default(),
            idle_windows: DEFAULT_IDLE_WINDOWS,
        }
    }
}

/// Counts, scales and summarizes partial counts whose timely time is their window.
pub fn window_summaries<'scope>(
    partial_counts: StreamVec<'scope, WindowId, (CountKey, u64)>,
    settings: &Settings,
    activity: Activity,
) -> StreamVec<'scope, WindowId, WindowSummary> {
    partial_counts
        .count_by_key()
        .scale(settings.scale)
        .summarize(settings.windowing, settings.idle_windows, activity)
}
