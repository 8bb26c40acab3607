//! The window pipeline shared by every source: partial counts in, window summaries out.
//!
//! ```text
//! partial counts ((stream, window, emoji), n) @ epoch ─▶ CountByKey ─▶ Scale ─────────▶ Summarize ─▶ summaries @ epoch
//!   (pre-counted per worker)        (exchange by (stream, emoji))  or Correct    (per stream, idle rule, in order)
//! ```
//! Without corrections every count travels at its own window's epoch and is final when the
//! epoch closes (plain timely). With a correction horizon, late reactions travel at the epoch
//! they were read in, and [`crate::operators::Correct`] (differential dataflow) keeps each
//! window's counts until its horizon has passed, re-emitting a window whole when they change.
//! Delivery to the tree's hubs follows where they are served ([`crate::route::hub_owner`]).

use timely::dataflow::operators::generic::source;
use timely::dataflow::operators::Concat;
use timely::dataflow::{Scope, StreamVec};

use std::sync::Arc;

use crate::operators::{Activity, Correct, CountByKey, CountKey, HeldState, Scale, Summarize};
use crate::scale::ScaleRule;
use crate::summary::WindowSummary;
use crate::window::{WindowId, Windowing};

/// How many windows a stream keeps getting after one with reactions, by default (one minute of
/// 2 s windows).
pub const DEFAULT_IDLE_WINDOWS: u64 = 30;

/// How far behind the watermark a late reaction may be and still correct its window, by
/// default.
pub const DEFAULT_CORRECTION_HORIZON_MS: u64 = 10_000;

/// Settings every dataflow shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Window length and lateness.
    pub windowing: Windowing,
    /// Counts to displayed emojis.
    pub scale: ScaleRule,
    /// Windows a stream gets after each window in which it had reactions, empty or not.
    pub idle_windows: u64,
    /// How far (in ms) a late reaction's window may be behind the open window and still be
    /// corrected; 0 drops every late reaction. Counted in whole windows
    /// ([`Settings::correction_windows`]).
    pub correction_horizon_ms: u64,
}

/// Settings that cannot work together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A correction could reach a window the idle rule no longer gives the stream.
    #[error("the correction horizon ({horizon_ms} ms) is longer than the idle span ({idle_windows} windows of {window_ms} ms = {idle_ms} ms): lower --correction-horizon-ms or raise --stream-idle-windows")]
    HorizonPastIdleSpan {
        /// The horizon asked for.
        horizon_ms: u64,
        /// The idle span in windows.
        idle_windows: u64,
        /// The window length.
        window_ms: u64,
        /// The idle span in ms.
        idle_ms: u64,
    },
}

impl Settings {
    /// The horizon in whole windows: a late reaction corrects its window when that window is at
    /// most this many windows behind the epoch it is read in (its end is then less than
    /// [`Settings::correction_horizon_ms`] behind the watermark); further behind, it is late.
    pub fn correction_windows(&self) -> u64 {
        self.correction_horizon_ms / self.windowing.window_ms.get()
    }

    /// Checks that the settings work together: a corrected window must still belong to an
    /// active stream when its correction goes out, so the horizon may not pass the idle span.
    pub fn check(&self) -> Result<(), SettingsError> {
        let window_ms = self.windowing.window_ms.get();
        let idle_ms = self.idle_windows.saturating_mul(window_ms);
        if self.correction_horizon_ms > idle_ms {
            return Err(SettingsError::HorizonPastIdleSpan {
                horizon_ms: self.correction_horizon_ms,
                idle_windows: self.idle_windows,
                window_ms,
                idle_ms,
            });
        }
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            windowing: Windowing::default(),
            scale: ScaleRule::default(),
            idle_windows: DEFAULT_IDLE_WINDOWS,
            correction_horizon_ms: DEFAULT_CORRECTION_HORIZON_MS,
        }
    }
}

/// Counts, scales and summarizes partial counts whose timely time is their epoch; with
/// corrections, `held` follows what they hold.
pub fn window_summaries<'scope>(
    partial_counts: StreamVec<'scope, WindowId, (CountKey, u64)>,
    settings: &Settings,
    activity: Activity,
    held: Arc<HeldState>,
) -> StreamVec<'scope, WindowId, WindowSummary> {
    let horizon = settings.correction_windows();
    if horizon == 0 {
        return partial_counts
            .count_by_key()
            .scale(settings.scale)
            .summarize(settings, activity);
    }
    let seeds = recent_counts(partial_counts.scope(), &activity);
    partial_counts
        .concat(seeds)
        .count_by_key()
        .correct(horizon, settings.scale, held)
        .summarize(settings, activity)
}

/// The counts of the windows a restart rebuilt ([`Activity::recent`]), on worker 0, at the
/// epoch before the first to emit: corrections of them then add to what they already had, and
/// summarizing emits nothing below its start.
fn recent_counts<'scope>(
    scope: Scope<'scope, WindowId>,
    activity: &Activity,
) -> StreamVec<'scope, WindowId, (CountKey, u64)> {
    let from = activity.from.unwrap_or(0);
    let recent = if scope.index() == 0 && from > 0 {
        activity.recent.clone()
    } else {
        Vec::new()
    };
    source(scope, "RecentWindows", move |cap, _info| {
        let mut cap = Some(cap);
        let mut recent = Some(recent);
        move |output| {
            if let (Some(held), Some(recent)) = (cap.take(), recent.take()) {
                let at = held.delayed(&from.saturating_sub(1).max(*held.time()));
                let mut session = output.session(&at);
                for summary in recent {
                    for e in &summary.emojis {
                        session.give((
                            (summary.stream_id.clone(), summary.window, e.emoji),
                            e.count,
                        ));
                    }
                }
            }
        }
    })
}
