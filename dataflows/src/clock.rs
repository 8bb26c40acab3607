//! The wall clock: the one place that reads the system time.
//!
//! Everything else takes time as an argument (the watermark unit, reaction validation), so it
//! can be tested without sleeping; only the edges of the program call [`wall_clock_ms`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as reactions carry them (0 if the clock is before it).
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
