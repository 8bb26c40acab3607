//! Warnings about what was dropped or degraded, as counts per interval: a line per late
//! reaction or per slow client would drown the log exactly when it matters.

use std::sync::Arc;
use std::time::Duration;

use crate::stats::{Counter, RejectReason, Stats};

/// How often the counts are compared.
pub const EVERY: Duration = Duration::from_secs(10);

/// One watched count and what it means.
struct Watched {
    what: &'static str,
    read: fn(&Stats) -> u64,
    last: u64,
}

fn watch(what: &'static str, read: fn(&Stats) -> u64) -> Watched {
    Watched {
        what,
        read,
        last: 0,
    }
}

fn get(c: &Counter) -> u64 {
    c.get()
}

/// Logs a warning for each count that grew since the last look; runs until aborted.
pub async fn warn_on_drops(stats: Arc<Stats>) {
    let mut watched = watched();
    let mut every = tokio::time::interval(EVERY);
    loop {
        every.tick().await;
        for (what, grew, total) in growth(&mut watched, &stats) {
            tracing::warn!(
                count = grew,
                total,
                "{grew} {what} in the last {}s ({total} in all)",
                EVERY.as_secs()
            );
        }
    }
}

/// What grew since the last call: (what, by how much, total).
fn growth(watched: &mut [Watched], stats: &Stats) -> Vec<(&'static str, u64, u64)> {
    let mut grown = Vec::new();
    for w in watched {
        let now = (w.read)(stats);
        if now > w.last {
            grown.push((w.what, now - w.last, now));
        }
        w.last = now;
    }
    grown
}

fn watched() -> [Watched; 7] {
    [
        watch("late reactions dropped (their window had closed)", |s| {
            get(&s.late)
        }),
        watch("invalid messages on the reactions topic skipped", |s| {
            get(&s.invalid_on_topic)
        }),
        watch(
            "reaction offsets never read (the broker dropped them)",
            |s| get(&s.lost),
        ),
        watch("reactions the producer failed to deliver", |s| {
            get(&s.produce_failed)
        }),
        watch("reactions refused with 503 (producer queue full)", |s| {
            s.rejected(RejectReason::QueueFull)
        }),
        watch("slow SSE clients resynced to the latest window", |s| {
            get(&s.resyncs)
        }),
        watch("slow SSE clients closed", |s| get(&s.slow_clients_closed)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_what_grew_since_the_last_look() {
        let stats = Stats::default();
        let mut watched = watched();
        assert!(growth(&mut watched, &stats).is_empty());
        stats.late.add(3);
        stats.resyncs.inc();
        let grown = growth(&mut watched, &stats);
        assert_eq!(
            grown,
            vec![
                ("late reactions dropped (their window had closed)", 3, 3),
                ("slow SSE clients resynced to the latest window", 1, 1),
            ]
        );
        stats.late.add(2);
        assert_eq!(
            growth(&mut watched, &stats),
            vec![("late reactions dropped (their window had closed)", 2, 5)]
        );
        assert!(growth(&mut watched, &stats).is_empty());
    }
}
