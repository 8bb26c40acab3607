//! Waiting for a condition with a deadline instead of for a stretch of wall time: a test moves
//! on as soon as what it waits for holds, and a failure says what it waited for and the last
//! state it saw. Sleeps that are the point of a test (time must pass in another process) stay
//! in the tests, each with its reason.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for something the system does by itself (windows closing, streams
/// opening) before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The first pause between two checks is short so a test moves on as soon as the condition
/// holds; pauses double up to the longest so a slow condition (a Kafka read, an HTTP scrape) is
/// not hammered while it does not hold.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(200);

/// Checks `check` until it answers `Ok`, and returns its value. `Err` carries the state seen;
/// past `within`, the test fails naming `what` and the last such state.
pub async fn poll_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let state = match check().await {
            Ok(value) => return value,
            Err(state) => state,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}; last seen: {state}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Waits until `done` holds; past `within`, the test fails naming `what`.
pub async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    poll_until(what, within, || {
        std::future::ready(if done() {
            Ok(())
        } else {
            Err("not yet".to_owned())
        })
    })
    .await
}

/// [`poll_until`] for tests that run no async runtime: the thread sleeps between checks.
pub fn poll_until_blocking<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let state = match check() {
            Ok(value) => return value,
            Err(state) => state,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}; last seen: {state}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
