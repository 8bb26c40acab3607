//! Named background tasks under one cancellation token, in the shape of Arroyo's shutdown guard
//! (`spawn_task(name, future)`) built from tokio-util's `CancellationToken` and `TaskTracker`.
//!
//! Every task runs until the token is cancelled. A task that returns an error reports a
//! [`Fault`](super::Fault) naming it, which stops the whole system (the run loop waits on
//! [`Faults::failed`](super::Faults::failed)) and sets the exit status. Stopping is
//! time-boxed: a task that ignores cancellation is named in the log and left behind.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::faults::{Component, Faults};

/// The system's background tasks.
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    faults: Faults,
    /// Names of the tasks still running, to say which one a stop waited for.
    running: Arc<Mutex<Vec<&'static str>>>,
}

impl Tasks {
    /// No task yet; failures are reported to `faults`.
    pub fn new(faults: Faults) -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            faults,
            running: Arc::default(),
        }
    }

    /// Cancelled when the tasks are told to stop; loops select on it.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` until it ends or the tasks are stopped. `Err` reports a fault.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let stop = self.stop.clone();
        let faults = self.faults.clone();
        let running = Arc::clone(&self.running);
        lock(&running).push(name);
        self.tracker.spawn(async move {
            // Run as a task of its own, so a panic in it comes back here as the join's error.
            let task = tokio::spawn(async move {
                tokio::select! {
                    outcome = task => outcome,
                    () = stop.cancelled() => Ok(()),
                }
            });
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => faults.report(Component::Task(name), e),
                Err(e) if e.is_panic() => faults.report(
                    Component::Task(name),
                    "it panicked (its message is in the log above)",
                ),
                // Cancelled: the runtime is shutting down.
                Err(_) => {}
            }
            let mut running = lock(&running);
            if let Some(i) = running.iter().position(|n| *n == name) {
                running.remove(i);
            }
        });
    }

    /// Cancels every task and waits up to `within` for them; `false` if some are still running.
    pub async fn stop(&self, within: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::warn!(
            "tasks still running {within:?} after the stop: {:?}",
            lock(&self.running)
        );
        false
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_reports_a_fault_and_a_stop_ends_the_others() {
        let faults = Faults::new();
        let tasks = Tasks::new(faults.clone());
        let ticks = Arc::new(Mutex::new(0u32));
        let counted = Arc::clone(&ticks);
        tasks.spawn("ticker", async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                *lock(&counted) += 1;
            }
        });
        tasks.spawn("doomed", async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Err("the broker is gone".to_string())
        });
        faults.failed().cancelled().await;
        let fault = faults.first().unwrap();
        assert_eq!(fault.component, Component::Task("doomed"));
        assert!(*lock(&ticks) >= 5, "the ticker ran meanwhile");
        assert!(tasks.stop(Duration::from_secs(1)).await);
        let after = *lock(&ticks);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(*lock(&ticks), after, "stopped tasks do not run");
    }

    #[tokio::test]
    async fn a_task_that_panics_reports_a_fault() {
        let faults = Faults::new();
        let tasks = Tasks::new(faults.clone());
        tasks.spawn("fragile", async {
            tokio::task::yield_now().await;
            panic!("a bug in a background task");
        });
        tokio::time::timeout(Duration::from_secs(5), faults.failed().cancelled())
            .await
            .expect("the panic is reported");
        let fault = faults.first().unwrap();
        assert_eq!(fault.component, Component::Task("fragile"));
        assert!(fault.message.contains("panicked"), "{fault}");
        assert!(tasks.stop(Duration::from_secs(1)).await);
    }
}
