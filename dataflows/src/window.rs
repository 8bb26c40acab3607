//! Event-time windows: which window a reaction falls in, and when a window is closed.
//!
//! Window `k` covers `[k·len, (k+1)·len)` milliseconds since the Unix epoch, and `k` is also the
//! timely epoch the window's data carries. A window is closed once event time (the greatest
//! timestamp read) has passed its end by the allowed lateness; reactions for a closed window are
//! late.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

/// A window index: `floor(ts_ms / window_ms)`, and the timely timestamp of its data.
pub type WindowId = u64;

/// Window length and allowed lateness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windowing {
    /// Window length in milliseconds (default 2000).
    pub window_ms: NonZeroU64,
    /// How far event time may pass a window's end before the window closes (default 500).
    pub lateness_ms: u64,
}

impl Default for Windowing {
    fn default() -> Self {
        Windowing {
            window_ms: NonZeroU64::new(2000).expect("2000 is not zero"),
            lateness_ms: 500,
        }
    }
}

impl Windowing {
    /// The window of a (non-negative) timestamp.
    pub fn window_of(&self, ts_ms: i64) -> WindowId {
        (ts_ms.max(0) as u64) / self.window_ms.get()
    }

    /// First millisecond of a window.
    pub fn start_ms(&self, window: WindowId) -> i64 {
        (window.saturating_mul(self.window_ms.get())) as i64
    }

    /// First millisecond after a window.
    pub fn end_ms(&self, window: WindowId) -> i64 {
        self.start_ms(window.saturating_add(1))
    }

    /// The first window still open once event time has reached `event_time_ms`:
    /// every window below it is closed.
    pub fn open_from(&self, event_time_ms: i64) -> WindowId {
        self.window_of(event_time_ms.saturating_sub(self.lateness_ms as i64))
    }
}

/// The event-time clock of one ordered input (a file, a Kafka partition): the greatest
/// timestamp read so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventClock {
    max_seen_ms: Option<i64>,
}

impl EventClock {
    /// Moves the clock forward to `ts_ms` if it is ahead.
    pub fn observe(&mut self, ts_ms: i64) {
        self.max_seen_ms = Some(self.max_seen_ms.map_or(ts_ms, |m| m.max(ts_ms)));
    }

    /// Moves the clock forward to another clock's time.
    pub fn merge(&mut self, other: EventClock) {
        if let Some(ts) = other.max_seen_ms {
            self.observe(ts);
        }
    }

    /// The greatest timestamp read, if any.
    pub fn max_seen_ms(&self) -> Option<i64> {
        self.max_seen_ms
    }

    /// The first window still open by this clock (0 before anything was read).
    pub fn open_from(&self, windowing: &Windowing) -> WindowId {
        self.max_seen_ms.map_or(0, |m| windowing.open_from(m))
    }

    /// Whether a reaction for `window` read now would be late.
    pub fn is_late(&self, window: WindowId, windowing: &Windowing) -> bool {
        window < self.open_from(windowing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_fall_on_multiples_of_the_length() {
        let w = Windowing::default();
        assert_eq!(w.window_of(0), 0);
        assert_eq!(w.window_of(1999), 0);
        assert_eq!(w.window_of(2000), 1);
        assert_eq!(w.window_of(1_763_856_000_000), 881_928_000);
        assert_eq!(w.start_ms(881_928_000), 1_763_856_000_000);
        assert_eq!(w.end_ms(881_928_000), 1_763_856_002_000);
    }

    #[test]
    fn a_window_closes_lateness_after_its_end() {
        let w = Windowing::default();
        let mut clock = EventClock::default();
        assert_eq!(clock.open_from(&w), 0);
        clock.observe(2499);
        assert!(
            !clock.is_late(0, &w),
            "window 0 is open until event time 2500"
        );
        clock.observe(2500);
        assert!(clock.is_late(0, &w));
        assert!(!clock.is_late(1, &w));
        clock.observe(100);
        assert_eq!(clock.max_seen_ms(), Some(2500), "the clock never goes back");
    }
}
