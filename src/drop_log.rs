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

fn get(c: &Counter) -> u64 {
    c.get()
}

/// Logs a warning for each count that grew since the last look; runs until aborted.
pub async fn warn_on_drops(stats: Arc<Stats>) {
    let mut watched = [
        Watched {
            what: "late reactions dropped (their window had closed)",
            read: |s| get(&s.late),
            last: 0,
        },
        Watched {
            what: "invalid messages on the reactions topic skipped",
            read: |s| get(&s.invalid_on_topic),
            last: 0,
        },
        Watched {
            what: "reaction offsets never read (the broker dropped them)",
            read: |s| get(&s.lost),
            last: 0,
        },
        Watched {
            what: "reactions the producer failed to deliver",
            read: |s| get(&s.produce_failed),
            last: 0,
        },
        Watched {
            what: "reactions refused with 503 (producer queue full)",
            read: |s| s.rejected(RejectReason::QueueFull),
            last: 0,
        },
        Watched {
            what: "slow SSE clients resynced to the latest window",
            read: |s| get(&s.resyncs),
            last: 0,
        },
        Watched {
            what: "slow SSE clients closed",
            read: |s| get(&s.slow_clients_closed),
            last: 0,
        },
    ];
    let mut every = tokio::time::interval(EVERY);
    loop {
        every.tick().await;
        for w in &mut watched {
            let now = (w.read)(&stats);
            if now > w.last {
                tracing::warn!(
                    count = now - w.last,
                    total = now,
                    "{} {} in the last {}s ({now} in all)",
                    now - w.last,
                    w.what,
                    EVERY.as_secs()
                );
            }
            w.last = now;
        }
    }
}
