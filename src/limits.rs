//! What one connection may hold, so that no client can lock the others out: a cap on open
//! connections (beyond it a new one is answered `503 too_many_connections` and closed, and the
//! server keeps accepting), a deadline for a new connection's request head, an idle deadline
//! for keep-alive connections (no bytes either way), and a deadline for each event-stream write
//! (a client that does not read is closed). hyper has no timers of its own; these are them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::cli::ConnectionArgs;

/// Files the process needs besides client connections (broker sockets, logs, timely).
pub const FILES_KEPT_FOR_THE_REST: u64 = 200;

/// The limits of every connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// For a new connection's request head.
    pub header_timeout: Duration,
    /// For a keep-alive connection with nothing going on.
    pub idle_timeout: Duration,
    /// For each event-stream write.
    pub write_timeout: Duration,
}

impl Limits {
    /// The limits the flags ask for; without `--max-connections`, what `open_files` leaves
    /// once the rest of the process has its files.
    pub fn from_args(args: &ConnectionArgs, open_files: Option<u64>) -> Limits {
        let max = args.max_connections.unwrap_or_else(|| {
            open_files.map_or(10_000, |limit| {
                limit.saturating_sub(FILES_KEPT_FOR_THE_REST).max(1)
            })
        });
        Limits {
            max_connections: usize::try_from(max).unwrap_or(usize::MAX),
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            write_timeout: Duration::from_millis(args.write_timeout_ms),
        }
    }
}

/// The open connections, counted against the cap.
#[derive(Clone, Debug, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OpenConnections {
    /// A place for one more connection, if fewer than `max` are open.
    pub fn take(&self, max: usize) -> Option<Place> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| Place(Arc::clone(&self.0)))
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// What a connection beyond the cap is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 89\r\n\r\n{\"error\":\"too_many_connections\",\"message\":\"the server is at its connection limit; retry\"}";

/// Answers a connection beyond the cap and closes it, giving the client a second to take it.
pub async fn refuse(mut socket: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        socket.write_all(TOO_MANY).await?;
        socket.shutdown().await
    })
    .await;
}

/// When a connection last moved a byte, shared between its I/O (see
/// [`crate::delivery::lean::Rewound`]) and its watchdog.
#[derive(Clone, Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: Arc<AtomicU64>,
}

impl Activity {
    /// Activity starting now.
    pub fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: Arc::default(),
        }
    }

    /// Records that a byte moved now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once no byte has moved for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_taken_up_to_the_cap_and_given_back() {
        let open = OpenConnections::default();
        let a = open.take(2).unwrap();
        let _b = open.take(2).unwrap();
        assert!(open.take(2).is_none(), "at the cap");
        drop(a);
        assert_eq!(open.count(), 1);
        assert!(open.take(2).is_some());
    }

    #[test]
    fn the_refusal_is_one_whole_response() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
    }

    #[test]
    fn the_default_cap_leaves_files_for_the_rest() {
        let args = ConnectionArgs {
            max_connections: None,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            write_timeout_ms: 10_000,
        };
        assert_eq!(
            Limits::from_args(&args, Some(20_000)).max_connections,
            19_800
        );
        let asked = ConnectionArgs {
            max_connections: Some(50),
            ..args
        };
        assert_eq!(Limits::from_args(&asked, Some(20_000)).max_connections, 50);
    }
}
