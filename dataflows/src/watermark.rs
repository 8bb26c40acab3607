//! The live windowing rule: per partition of a live input, which windows are closed, and where
//! the source reading those partitions holds its capability.
//!
//! Two clocks drive a partition, and its [`Watermark`] (the first window still open on it) is
//! the earlier of them:
//!
//! - **Marks.** Every producer of the ingest writes a *mark* into every partition a few times a
//!   second: its clock at that moment. A producer keeps its writes to a partition in order, so a
//!   mark promises that every reaction that producer queued before the mark's time precedes it
//!   in the partition. The partition's mark time is the least over the producers of the latest
//!   mark read from each, and no window closes before every producer has vouched for it. A
//!   stalled producer, a broker that does not answer, a backlog not yet read: each holds the
//!   marks back, so windows wait for the reactions accepted before them, later but never wrong.
//! - **Event time.** The greatest event time read, where a reaction's event time is its
//!   `timestamp` but never later than the time it was queued (the Kafka record's timestamp):
//!   a client's clock running ahead cannot close other users' windows. A partition with no
//!   reaction for the idle time stops following event time and follows its marks alone, so
//!   windows keep closing when nobody reacts.
//!
//! A reaction for a window below its partition's watermark is late. A watermark never goes
//! back, and the source holds its capability at the least watermark of its partitions
//! ([`PartitionWatermarks::hold`]), so a counted reaction can always be emitted at its window.
//!
//! Time is handed in: milliseconds of the producers' clocks and a monotonic [`Instant`] for
//! idleness. Nothing here reads a clock, so the rule is tested without sleeping. Replay's twin
//! of this rule (one ordered input, never idle) is `DecideLate` in [`crate::replay`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::window::{EventClock, WindowId, Windowing};

/// A partition's watermark: the first window still open on it (every window below is closed),
/// and what drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watermark {
    /// Reactions arrive: the earlier of the event time read and the marks.
    EventTime(WindowId),
    /// No reaction for the idle time: following the marks alone, until the next reaction.
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
#[derive(Clone, Debug)]
struct PartitionClock {
    /// The greatest event time read (each bounded by its queueing time); late reactions too.
    clock: EventClock,
    /// The latest mark read from each producer (`None`: none yet).
    marks: Vec<Option<i64>>,
    /// Never decreases.
    watermark: Watermark,
    /// When the partition last had a reaction (valid or not; marks do not count), or the
    /// source's start before any.
    last_reaction: Instant,
}

/// The watermarks of the partitions one source reads, keyed by partition `P`.
#[derive(Clone, Debug)]
pub struct PartitionWatermarks<P> {
    windowing: Windowing,
    /// A partition with no reaction for this long is idle.
    idle: Duration,
    partitions: BTreeMap<P, PartitionClock>,
}

impl<P: Ord> PartitionWatermarks<P> {
    /// The watermarks of `partitions`, written to by `producers` producers (numbered from 0),
    /// for a source started at `start`. Every partition starts open from `first_window`
    /// (windows below it were emitted before a restart, so their reactions are late).
    pub fn new(
        windowing: Windowing,
        idle_ms: u64,
        producers: usize,
        first_window: WindowId,
        partitions: impl IntoIterator<Item = P>,
        start: Instant,
    ) -> Self {
        let initial = PartitionClock {
            clock: EventClock::default(),
            marks: vec![None; producers],
            watermark: Watermark::EventTime(first_window),
            last_reaction: start,
        };
        PartitionWatermarks {
            windowing,
            idle: Duration::from_millis(idle_ms),
            partitions: partitions
                .into_iter()
                .map(|p| (p, initial.clone()))
                .collect(),
        }
    }

    /// Records a message on `partition` at `at` that carries no valid reaction: the partition
    /// is not idle. Returns false for a partition not among these.
    pub fn heard(&mut self, partition: &P, at: Instant) -> bool {
        let windowing = self.windowing;
        self.partitions
            .get_mut(partition)
            .map(|p| {
                p.heard(at);
                p.advance(&windowing);
            })
            .is_some()
    }

    /// Records a reaction with event time `ts_ms`, queued at `queued_ms`, read on `partition`
    /// at `at`: counted in its window if that window is still open on the partition, else
    /// late. Either way the partition's clock moves forward, to `ts_ms` but never past
    /// `queued_ms`. `None` for a partition not among these.
    pub fn observe(
        &mut self,
        partition: &P,
        ts_ms: i64,
        queued_ms: i64,
        at: Instant,
    ) -> Option<Arrival> {
        let windowing = self.windowing;
        let p = self.partitions.get_mut(partition)?;
        p.heard(at);
        let window = windowing.window_of(ts_ms);
        p.clock.observe(ts_ms.min(queued_ms));
        let late = window < p.watermark.open_from();
        p.advance(&windowing);
        Some(if late {
            Arrival::Late(window)
        } else {
            Arrival::Counted(window)
        })
    }

    /// Records a mark of `producer` read on `partition`: every reaction that producer queued
    /// before `at_ms` has been read. Returns false for a partition not among these or a
    /// producer beyond the count given at the start (a mark of another deployment).
    pub fn mark(&mut self, partition: &P, producer: usize, at_ms: i64) -> bool {
        let windowing = self.windowing;
        let Some(p) = self.partitions.get_mut(partition) else {
            return false;
        };
        let Some(mark) = p.marks.get_mut(producer) else {
            return false;
        };
        *mark = Some(mark.map_or(at_ms, |m| m.max(at_ms)));
        p.advance(&windowing);
        true
    }

    /// Makes the partitions with no reaction for the idle time, at monotonic time `at`,
    /// [`Watermark::Idle`]: from now on they follow their marks alone.
    pub fn tick(&mut self, at: Instant) {
        let windowing = self.windowing;
        for p in self.partitions.values_mut() {
            if at.saturating_duration_since(p.last_reaction) >= self.idle {
                p.watermark = Watermark::Idle(p.watermark.open_from());
                p.advance(&windowing);
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

    /// A partition's event time: the greatest (bounded) timestamp read on it, if any.
    pub fn event_time_ms(&self, partition: &P) -> Option<i64> {
        self.partitions.get(partition)?.clock.max_seen_ms()
    }

    /// A partition's mark time: the least over the producers of their latest marks, once
    /// every producer has marked it.
    pub fn mark_time_ms(&self, partition: &P) -> Option<i64> {
        self.partitions.get(partition)?.mark_time()
    }
}

impl PartitionClock {
    /// A reaction (or an invalid message) ends idleness; the watermark it reached stays.
    fn heard(&mut self, at: Instant) {
        self.last_reaction = at;
        self.watermark = Watermark::EventTime(self.watermark.open_from());
    }

    /// The least of the producers' latest marks: `None` while one has not marked (`None` sorts
    /// below every time), or when there are no producers.
    fn mark_time(&self) -> Option<i64> {
        self.marks.iter().copied().min().flatten()
    }

    /// Moves the watermark up to what the clocks allow now; never back.
    fn advance(&mut self, windowing: &Windowing) {
        let Some(marks) = self.mark_time() else {
            return;
        };
        let allowed = match self.watermark {
            Watermark::Idle(_) => windowing.open_from(marks),
            Watermark::EventTime(_) => match self.clock.max_seen_ms() {
                Some(event) => windowing.open_from(marks.min(event)),
                None => return,
            },
        };
        let open_from = self.watermark.open_from().max(allowed);
        self.watermark = match self.watermark {
            Watermark::Idle(_) => Watermark::Idle(open_from),
            Watermark::EventTime(_) => Watermark::EventTime(open_from),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE_MS: u64 = 1000;
    /// Far ahead of every timestamp in these tests: the marks do not hold anything back.
    const LATER: i64 = 1_000_000;

    /// Two partitions (0 and 1) written by one producer, with the default windowing (2 s
    /// windows, 500 ms lateness), started at `t0`.
    fn two(first_window: WindowId, t0: Instant) -> PartitionWatermarks<i32> {
        PartitionWatermarks::new(Windowing::default(), IDLE_MS, 1, first_window, [0, 1], t0)
    }

    /// `two`, with both partitions marked far ahead: event time alone decides.
    fn marked(first_window: WindowId, t0: Instant) -> PartitionWatermarks<i32> {
        let mut w = two(first_window, t0);
        assert!(w.mark(&0, 0, LATER) && w.mark(&1, 0, LATER));
        w
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn partitions_start_open_from_the_first_window() {
        let t0 = Instant::now();
        let mut w = marked(5, t0);
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(5)));
        assert_eq!(w.hold(), Some(5));
        assert_eq!(w.observe(&0, 9_999, LATER, t0), Some(Arrival::Late(4)));
        assert_eq!(w.observe(&0, 10_000, LATER, t0), Some(Arrival::Counted(5)));
        assert_eq!(w.observe(&7, 10_000, LATER, t0), None, "not one of ours");
        assert!(!w.heard(&7, t0));
        assert!(!w.mark(&7, 0, 1), "not one of ours");
        assert!(!w.mark(&0, 1, 1), "a producer of another deployment");
    }

    #[test]
    fn lateness_is_decided_per_partition() {
        let t0 = Instant::now();
        let mut w = marked(0, t0);
        assert_eq!(w.observe(&0, 10_500, LATER, t0), Some(Arrival::Counted(5)));
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(5)));
        assert_eq!(w.observe(&0, 9_999, LATER, t0), Some(Arrival::Late(4)));
        assert_eq!(
            w.observe(&1, 9_999, LATER, t0),
            Some(Arrival::Counted(4)),
            "partition 1 has not passed window 4"
        );
        assert_eq!(
            w.observe(&0, 10_000, LATER, t0),
            Some(Arrival::Counted(5)),
            "window 5 is open until event time 12 500"
        );
    }

    #[test]
    fn the_hold_is_the_least_watermark_and_never_decreases() {
        let t0 = Instant::now();
        let mut w = marked(0, t0);
        assert_eq!(w.hold(), Some(0));
        w.observe(&0, 20_500, LATER, t0);
        assert_eq!(w.hold(), Some(0), "partition 1 has read nothing");
        w.observe(&1, 10_500, LATER, t0);
        assert_eq!(w.hold(), Some(5));
        w.observe(&1, 8_000, LATER, t0);
        assert_eq!(w.hold(), Some(5), "an older reaction does not move it back");
        w.observe(&1, 30_500, LATER, t0);
        assert_eq!(w.hold(), Some(10), "now partition 0 is the least");
        assert_eq!(
            PartitionWatermarks::<i32>::new(Windowing::default(), IDLE_MS, 1, 3, [], t0).hold(),
            None
        );
    }

    #[test]
    fn a_timestamp_ahead_of_its_queueing_moves_the_clock_only_to_the_queueing() {
        let t0 = Instant::now();
        let mut w = marked(0, t0);
        // Queued at 100 000 and stamped 9.9 s ahead: counted in its own (future) window...
        assert_eq!(
            w.observe(&0, 109_900, 100_000, t0),
            Some(Arrival::Counted(54))
        );
        assert_eq!(w.event_time_ms(&0), Some(100_000));
        // ...while the others, stamped when they were queued, are not late.
        assert_eq!(
            w.observe(&0, 100_100, 100_100, t0),
            Some(Arrival::Counted(50))
        );
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(49)));
    }

    #[test]
    fn no_window_closes_before_every_producer_has_marked_past_it() {
        let t0 = Instant::now();
        let mut w = PartitionWatermarks::new(Windowing::default(), IDLE_MS, 2, 0, [0], t0);
        w.observe(&0, 20_500, 20_500, t0);
        assert_eq!(w.hold(), Some(0), "no mark yet");
        w.mark(&0, 0, 30_000);
        assert_eq!(w.hold(), Some(0), "producer 1 has not marked");
        w.mark(&0, 1, 12_500);
        assert_eq!(w.mark_time_ms(&0), Some(12_500));
        assert_eq!(
            w.hold(),
            Some(6),
            "producer 1 vouched up to 12 500 less the lateness"
        );
        // Producer 1 is stalled: its reactions from before its last mark's time...
        assert_eq!(
            w.observe(&0, 12_400, 12_400, t0),
            Some(Arrival::Counted(6)),
            "a reaction producer 1 queued after its mark, for a window still open"
        );
        w.mark(&0, 1, 40_000);
        assert_eq!(w.hold(), Some(10), "event time 20 500 decides now");
        w.mark(&0, 1, 10_000);
        assert_eq!(w.mark_time_ms(&0), Some(30_000), "a mark never goes back");
    }

    #[test]
    fn a_silent_partition_follows_its_marks_once_idle() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        w.mark(&0, 0, 100_000);
        w.mark(&1, 0, 100_000);
        assert_eq!(
            w.hold(),
            Some(0),
            "nothing read, not yet idle: event time decides"
        );
        w.tick(ms(t0, IDLE_MS - 1));
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(0)));
        w.tick(ms(t0, IDLE_MS));
        // The marks less the lateness: 99 500 is in window 49.
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(49)));
        assert_eq!(w.watermark(&1), Some(Watermark::Idle(49)));
        assert_eq!(w.hold(), Some(49));
        w.mark(&0, 0, 102_000);
        w.mark(&1, 0, 102_000);
        assert_eq!(w.hold(), Some(50));
    }

    #[test]
    fn an_idle_partition_without_marks_stays_where_it_is() {
        let t0 = Instant::now();
        let mut w = two(3, t0);
        w.tick(ms(t0, 100 * IDLE_MS));
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(3)));
        assert_eq!(
            w.hold(),
            Some(3),
            "a producer that never marked (stalled, or a broker that does not answer) holds every window"
        );
        w.mark(&0, 0, 20_000);
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(9)));
        assert_eq!(w.hold(), Some(3));
    }

    #[test]
    fn a_reaction_ends_idleness_and_keeps_the_watermark() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        w.mark(&0, 0, 100_000);
        w.mark(&1, 0, 110_000);
        w.tick(ms(t0, IDLE_MS));
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(49)));
        assert_eq!(
            w.observe(&0, 20_000, 20_000, ms(t0, IDLE_MS + 1)),
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
        w.tick(ms(t0, 2 * IDLE_MS));
        assert_eq!(
            w.watermark(&0),
            Some(Watermark::EventTime(49)),
            "heard from {} ms ago",
            IDLE_MS - 1
        );
        assert_eq!(w.watermark(&1), Some(Watermark::Idle(54)));
    }

    #[test]
    fn an_invalid_message_also_ends_idleness_but_a_mark_does_not() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        assert!(w.heard(&1, ms(t0, 600)));
        w.mark(&0, 0, 100_000);
        w.mark(&1, 0, 100_000);
        w.tick(ms(t0, IDLE_MS));
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(49)));
        assert_eq!(w.watermark(&1), Some(Watermark::EventTime(0)));
        assert_eq!(w.event_time_ms(&1), None);
    }

    #[test]
    fn a_busy_partition_behind_the_marks_holds_back_an_idle_one() {
        let t0 = Instant::now();
        let mut w = two(0, t0);
        // Partition 0 keeps reading reactions 60 s old; partition 1 is silent.
        for step in 0..5u64 {
            let at = ms(t0, step * 400);
            let now = 100_000 + step as i64 * 400;
            w.mark(&0, 0, now);
            w.mark(&1, 0, now);
            let ts = 40_000 + step as i64 * 400;
            assert!(matches!(
                w.observe(&0, ts, now, at),
                Some(Arrival::Counted(_))
            ));
            w.tick(at);
        }
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(20)));
        assert!(matches!(w.watermark(&1), Some(Watermark::Idle(open)) if open > 20));
        assert_eq!(w.hold(), Some(20), "the busy partition holds the source");
    }

    #[test]
    fn the_marks_never_move_a_watermark_back() {
        let t0 = Instant::now();
        let mut w = marked(0, t0);
        w.observe(&0, 200_500, 200_500, t0);
        assert_eq!(w.watermark(&0), Some(Watermark::EventTime(100)));
        w.mark(&0, 0, 2_000_000);
        w.tick(ms(t0, IDLE_MS));
        assert_eq!(w.watermark(&0), Some(Watermark::Idle(999)));
        let mut w = two(60, t0);
        w.mark(&0, 0, 10_000);
        w.tick(ms(t0, IDLE_MS));
        assert_eq!(
            w.watermark(&0),
            Some(Watermark::Idle(60)),
            "the first window stays"
        );
    }
}
