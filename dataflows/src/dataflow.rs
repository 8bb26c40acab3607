//! The window pipeline shared by every source: partial counts in, window summaries out.
//!
//! ```text
//! partial counts (emoji, n) @ window ─▶ CountByEmoji ─▶ Scale ─▶ Summarize ─▶ summaries @ window
//!   (pre-counted per worker)          (exchange by emoji)        (one per window, in order)
//! ```
//! Delivery to the tree's hubs follows where they are served ([`crate::route::hub_owner`]).

use timely::dataflow::StreamVec;

use crate::emoji::Emoji;
use crate::operators::{CountByEmoji, EmptyWindows, Scale, Summarize};
use crate::scale::ScaleRule;
use crate::summary::WindowSummary;
use crate::window::{WindowId, Windowing};

/// Settings every dataflow shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Window length and lateness.
    pub windowing: Windowing,
    /// Counts to displayed emojis.
    pub scale: ScaleRule,
}

/// Counts, scales and summarizes partial counts whose timely time is their window.
pub fn window_summaries<'scope>(
    partial_counts: StreamVec<'scope, WindowId, (Emoji, u64)>,
    settings: &Settings,
    empty: EmptyWindows,
) -> StreamVec<'scope, WindowId, WindowSummary> {
    partial_counts
        .count_by_emoji()
        .scale(settings.scale)
        .summarize(settings.windowing, empty)
}
