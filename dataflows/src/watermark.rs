//! The live windowing rule: per partition of a live input, which windows are closed, and where
//! the source reading those partitions holds its capability.
//!
//! Each partition has its own event-time clock ([`EventClock`]); its [`Watermark`] is the first
//! window still open on it. A reaction for a window below its partition's watermark is late.
//! A partition with no message for the idle time follows the wall clock instead (less the idle
//! time and the lateness), so windows keep closing when nobody reacts; but only once it has
//! been read to its end: a partition with a backlog (after a restart, or while the broker is
//! slow to answer) is waiting, not idle, and its reactions are counted when they come. A
//! watermark never goes
//! back, and the source holds its capability at the least watermark of its partitions
//! ([`PartitionWatermarks::hold`]), so a counted reaction can always be emitted at its window.
//!
//! Time is handed in: wall-clock milliseconds and a monotonic [`Instant`] for idleness. Nothing
//! here reads a clock, so the rule is tested without sleeping. Replay's twin of this rule (one
//! ordered input, never idle) is `DecideLate` in [`crate::replay`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::window::{EventClock, WindowId, Windowing};

/// A partition's watermark: the first window still open on it (every window below is closed),
/// and what drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watermark {
    /// Driven by the event times read from the partition (or, before any, by the first window
    /// the source may emit).
    EventTime(WindowId),
    /// No message for the idle time: following the wall clock, less the idle time and the
    /// lateness, until the partition's next message.
    Idle(WindowId),
}

impl Watermark {
    /// The first window still open.
    pub fn open_from(self) -> WindowId {
        match self {
            Watermark::EventTime(window) | Watermark::Idle(window) => window,
        }
    }
}

/// What became of a reaction read from a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Counted in this window, which is still open on the partition.
    Counted(WindowId),
    /// Its window (given) had already closed on the partition.
    Late(WindowId),
}

/// The rule's state for one partition.
#[derive(Clone, Copy, Debug)]
struct PartitionClock {
    /// The greatest event time read; advanced by late reactions too.
    clock: EventClock,
    /// Never decreases.
    watermark: Watermark,
    /// When the partition last had a message, valid or not (the source's start before any).
    last_message: Instant,
    /// Read to its end, and no message since: a partition with a backlog is not idle.
    at_end: bool,
}

/// The watermarks of the partitions one source reads, keyed by partition `P`.
#[derive(Clone, Debug)]
pub struct PartitionWatermarks<P> {
    windowing: Windowing,
    /// A partition with no message for this long is idle.
    idle: Duration,
    /// `idle` in the milliseconds the wall clock is read in.
    idle_ms: i64,
    partitions: BTreeMap<P, PartitionClock>,
}

impl<P: Ord> PartitionWatermarks<P> {
    /// The watermarks of `partitions`, for a source started at `start`. Every partition starts
    /// open from `first_window` (windows below it were emitted before a restart, so their
    /// reactions are late) and counts as last heard from at `start`.
    pub fn new(
        windowing: Windowing,
        idle_ms: u64,
        first_window: WindowId,
        partitions: impl IntoIterator<Item = P>,
        start: Instant,
    ) -> Self {
        let initial = PartitionClock {
            clock: EventClock::default(),
            watermark: Watermark::EventTime(first_window),
            last_message: start,
            at_end: false,
        };
        PartitionWatermarks {
            windowing,
            idle: Duration::from_millis(idle_ms),
            idle_ms: i64::try_from(idle_ms).unwrap_or(i64::MAX),
            partitions: partitions.into_iter().map(|p| (p, initial)).collect(),
        }
    }

    /// Records a message on `partition` at `at` that carries no valid reaction: the partition
    /// is not idle. Returns false for a partition not among these.
    pub fn heard(&mut self, partition: &P, at: Instant) -> bool {
        self.partitions
            .get_mut(partition)
            .map(|p| p.heard(at))
            .is_some()
    }

    /// Records a reaction with event time `ts_ms` read on `partition` at `at`: counted in its
    /// window if that window is still open on the partition, else late. Either way the
    /// partition's clock moves forward. `None` for a partition not among these.
    pub fn observe(&mut self, partition: &P, ts_ms: i64, at: Instant) -> Option<Arrival> {
        let windowing = self.windowing;
        let p = self.partitions.get_mut(partition)?;
        p.heard(at);
        let window = windowing.window_of(ts_ms);
        p.clock.observe(ts_ms);
        let open_from = p.watermark.open_from();
        if window < open_from {
            return Some(Arrival::Late(window));
        }
        p.watermark = Watermark::EventTime(open_from.max(p.clock.open_from(&windowing)));
        Some(Arrival::Counted(window))
    }

    /// Records that `partition` has been read to its end (the last offset the broker had when
    /// the consumer last fetched it): until its next message, it may go idle. Returns false for
    /// a partition not among these.
    pub fn reached_end(&mut self, partition: &P) -> bool {
        self.partitions
            .get_mut(partition)
            .map(|p| p.at_end = true)
            .is_some()
    }

    /// Advances idle partitions at wall-clock time `wall_ms` (monotonic time `at`): a partition
    /// read to its end ([`PartitionWatermarks::reached_end`]) whose last message is at least
    /// the idle time old becomes [`Watermark::Idle`], open from the window the wall clock less
    /// the idle time has reached, if that is later.
    pub fn tick(&mut self, wall_ms: i64, at: Instant) {
        let idle_window = self
            .windowing
            .open_from(wall_ms.saturating_sub(self.idle_ms));
        for p in self.partitions.values_mut() {
            if p.at_end && at.saturating_duration_since(p.last_message) >= self.idle {
                p.watermark = Watermark::Idle(p.watermark.open_from().max(idle_window));
            }
        }
    }

    /// The least watermark over the partitions: where the source holds its capability. It never
    /// decreases. `None` when there are no partitions, so nothing needs holding.
    pub fn hold(&self) -> Option<WindowId> {
        self.partitions
            .values()
            .map(|p| p.watermark.open_from())
            .min()
    }

    /// A partition's watermark, `None` for a partition not among these.
    pub fn watermark(&self, partition: &P) -> Option<Watermark> {
        self.partitions.get(partition).map(|p| p.watermark)
    }

    /// A partition's event time: the greatest timestamp read on it, if any.
    pub fn event_time_ms(&self, partition: &P) -> Option<i64> {
        self.partitions.get(partition)?.clock.max_seen_ms()
    }
}

impl PartitionClock {
    /// A message ends idleness; the watermark it reached stays.
    fn heard(&mut self, at: Instant) {
        self.last_message = at;
        self.at_end = false;
        self.watermark = Watermark::EventTime(self.watermark.open_from());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE_MS: u64 = 1000;

    /// Two partitions (0 and 1) with the default windowing (2 s windows, 500 ms lateness),
    /// started at `t0`, both read to their end (empty).
    fn two(first_window: WindowId, t0: Instant) -> PartitionWatermarks<i32> {
        let mut w =
            PartitionWatermarks::new(Windowing::default(), IDLE_MS, first_window, [0, 1], t0);
        assert!(w.reached_end(&0) && w.reached_end(&1));
        w
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn partitions_start_open_from_the_first_window() {
        let t0 = Instant::now();
        let mut w = two(5, t0);
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(5)));
        assert_eq!(w.hold(), Some(5));
        assert_eq!(w.observe(&0, 9_999, t0), Some(Arrival::Late(4)));
        assert_eq!(w.observe(&0, 10_000, t0), Some(Arrival::Counted(5)));
        assert_eq!(w.observe(&7, 10_000, t0), None, "not one of ours");
        assert!(!w.heard(&7, t0));
    }

    #[test]
    fn lateness_is_decided_per_partition() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        assert_eq!(w.observe(&0, 10_500, t0), Some(Arrival::Counted(5)));
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(5)));
        assert_eq!(w.observe(&0, 9_999, t0), Some(Arrival::Late(4)));
        assert_eq!(
            w.observe(&1, 9_999, t0),
            Some(Arrival::Counted(4)),
            "partition 1 has not passed window 4"
        );
        assert_eq!(
            w.observe(&0, 10_000, t0),
            Some(Arrival::Counted(5)),
            "window 5 is open until event time 12 500"
        );
    }

    #[test]
    fn the_hold_is_the_least_watermark_and_never_decreases() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        assert_eq!(w.hold(), Some(0));
        w.observe(&0, 20_500, t0);
        assert_eq!(w.hold(), Some(0), "partition 1 has read nothing");
        w.observe(&1, 10_500, t0);
        assert_eq!(w.hold(), Some(5));
        w.observe(&1, 8_000, t0);
        assert_eq!(w.hold(), Some(5), "an older reaction does not move it back");
        w.observe(&1, 30_500, t0);
        assert_eq!(w.hold(), Some(10), "now partition 0 is the least");
        assert_eq!(
            PartitionWatermarks::<i32>::new(Windowing::default(), IDLE_MS, 3, [], t0).hold(),
            None
        );
    }

    #[test]
    fn a_silent_partition_follows_the_wall_clock_once_idle() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        let wall = 100_000;
        w.tick(wall, ms(t0, IDLE_MS - 1));
        assert_eq!(
            w.watermark(&0),
            Some(Watermark::EventTime(0)),
            "not yet idle"
        );
        w.tick(wall, ms(t0, IDLE_MS));
        // The wall clock less the idle time and the lateness: 98 500 is in window 49.
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(49)));
        assert_eq!(w.watermark(&1), Some(Watermark::Idle(49)));
        assert_eq!(w.hold(), Some(49));
        w.tick(wall + 2_000, ms(t0, IDLE_MS + 5));
        assert_eq!(w.hold(), Some(50));
    }

    #[test]
    fn a_message_ends_idleness_and_keeps_the_watermark() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        w.tick(100_000, ms(t0, IDLE_MS));
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(49)));
        assert_eq!(
            w.observe(&0, 20_000, ms(t0, IDLE_MS + 1)),
            Some(Arrival::Late(10))
        );
        assert_eq!(
            w.watermark(&0),
            Some(Watermark::EventTime(49)),
            "never back"
        );
        assert_eq!(
            w.event_time_ms(&0),
            Some(20_000),
            "a late reaction still moves the clock"
        );
        w.tick(110_000, ms(t0, 2 * IDLE_MS));
        assert_eq!(
            w.watermark(&0),
            Some(Watermark::EventTime(49)),
            "heard from {} ms ago",
            IDLE_MS - 1
        );
        assert_eq!(w.watermark(&1), Some(Watermark::Idle(54)));
    }

    #[test]
    fn an_invalid_message_also_ends_idleness() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        assert!(w.heard(&1, ms(t0, 600)));
        w.tick(100_000, ms(t0, IDLE_MS));
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(49)));
        assert_eq!(w.watermark(&1), Some(Watermark::EventTime(0)));
        assert_eq!(w.event_time_ms(&1), None);
    }

    #[test]
    fn a_busy_partition_behind_the_wall_clock_holds_back_an_idle_one() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        let wall = 100_000;
        // Partition 0 keeps reading reactions 60 s old; partition 1 is silent.
        for step in 0..5u64 {
            let at = ms(t0, step * 400);
            let ts = 40_000 + step as i64 * 400;
            assert!(matches!(w.observe(&0, ts, at), Some(Arrival::Counted(_))));
            w.tick(wall + step as i64 * 400, at);
        }
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(20)));
        assert!(matches!(w.watermark(&1), Some(Watermark::Idle(open)) if open > 20));
        assert_eq!(w.hold(), Some(20), "the busy partition holds the source");
    }

    #[test]
    fn the_idle_advance_never_moves_a_watermark_back() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        w.observe(&0, 200_500, t0);
        w.reached_end(&0);
        w.tick(100_000, ms(t0, IDLE_MS));
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(100)));
        assert_eq!(w.watermark(&1), Some(Watermark::Idle(49)));
    }

    #[test]
    fn a_partition_not_read_to_its_end_waits_instead_of_going_idle() {
        let t0 = Instant::now();
        let mut w = PartitionWatermarks::new(Windowing::default(), IDLE_MS, 0, [0, 1], t0);
        let wall = 100_000;
        w.tick(wall, ms(t0, 10 * IDLE_MS));
        assert_eq!(
            w.hold(),
            Some(0),
            "before the first fetch, nothing is known to be read"
        );
        // Partition 0 is empty; partition 1 has a backlog (a restart's, a slow first fetch).
        assert!(w.reached_end(&0));
        assert!(!w.reached_end(&7));
        w.tick(wall, ms(t0, 10 * IDLE_MS));
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(49)));
        assert_eq!(w.watermark(&1), Some(Watermark::EventTime(0)));
        assert_eq!(w.hold(), Some(0), "the backlog holds the source");
        assert_eq!(
            w.observe(&1, 3_000, ms(t0, 10 * IDLE_MS + 1)),
            Some(Arrival::Counted(1)),
            "its reactions, however old, are counted when they come"
        );
        w.reached_end(&1);
        w.tick(wall, ms(t0, 12 * IDLE_MS));
        assert_eq!(
            w.watermark(&1),
            Some(Watermark::Idle(49)),
            "read to its end"
        );
        w.observe(&1, 99_000, ms(t0, 12 * IDLE_MS + 1));
        w.tick(wall + 10_000, ms(t0, 20 * IDLE_MS));
        assert_eq!(
            w.watermark(&1),
            Some(Watermark::EventTime(49)),
            "a message since its end: more may follow"
        );
    }
}
