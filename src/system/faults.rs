//! Faults: what stops windows from flowing, reported from any thread (timely workers, tokio
//! tasks, the panic hook of timely's network threads), seen by `/readyz` and by the run loop.
//!
//! The first fault wins: it is the reason `/readyz` gives and the exit status of the run, except
//! that a lost peer always decides the status (every process must then be restarted).
//! Reporting also cancels [`Faults::failed`], which the run loop waits on instead of polling,
//! and a fault after which the dataflow can never drain cancels [`Faults::undrainable`], so a
//! stop does not wait for workers that cannot finish.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The part of the system that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The live dataflow (a source could not start, a worker failed).
    Dataflow,
    /// A worker of the live dataflow that died (panicked): the others wait on it for ever.
    Worker,
    /// The producer that writes windows to the windows topic.
    WindowsProducer,
    /// Another process of the deployment.
    Peers,
    /// The Kafka brokers: the log emostream reads is gone or changed under it.
    Broker,
    /// A named background task.
    Task(&'static str),
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::Dataflow => f.write_str("the dataflow"),
            Component::Worker => f.write_str("a dataflow worker"),
            Component::WindowsProducer => f.write_str("the windows producer"),
            Component::Peers => f.write_str("the deployment's processes"),
            Component::Broker => f.write_str("the Kafka brokers"),
            Component::Task(name) => write!(f, "task {name}"),
        }
    }
}

/// One fault: where, and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What failed.
    pub component: Component,
    /// What happened, for a person.
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.component, self.message)
    }
}

impl Component {
    /// Whether the dataflow can still drain after this fails: without a peer, or after a
    /// worker died, the workers wait forever, and without the windows producer no window
    /// becomes durable.
    fn blocks_drain(self) -> bool {
        matches!(
            self,
            Component::Peers | Component::WindowsProducer | Component::Worker
        )
    }
}

/// A shared record of the first fault. Cheap to clone; `Send + Sync`.
#[derive(Clone, Default)]
pub struct Faults {
    first: Arc<Mutex<Recorded>>,
    failed: CancellationToken,
    undrainable: CancellationToken,
}

#[derive(Default)]
struct Recorded {
    first: Option<Fault>,
    peer_lost: Option<Fault>,
}

impl Faults {
    /// No fault yet.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Records a fault (the first one is kept), logs it, and wakes whoever waits on
    /// [`Faults::failed`].
    pub fn report(&self, component: Component, message: impl Into<String>) {
        let fault = Fault {
            component,
            message: message.into(),
        };
        tracing::error!("{fault}");
        if component.blocks_drain() {
            self.undrainable.cancel();
        }
        let mut recorded = self.recorded();
        if component == Component::Peers {
            recorded.peer_lost.get_or_insert_with(|| fault.clone());
        }
        recorded.first.get_or_insert(fault);
        drop(recorded);
        self.failed.cancel();
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        // Every update leaves the record whole before anything can panic.
        self.first.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first fault, if any.
    pub fn first(&self) -> Option<Fault> {
        self.recorded().first.clone()
    }

    /// The fault that decides the exit status: a lost peer if any, else the first.
    pub fn decisive(&self) -> Option<Fault> {
        let recorded = self.recorded();
        recorded
            .peer_lost
            .clone()
            .or_else(|| recorded.first.clone())
    }

    /// Cancelled once a fault is reported after which the dataflow cannot drain.
    pub fn undrainable(&self) -> &CancellationToken {
        &self.undrainable
    }

    /// Cancelled once a fault is reported.
    pub fn failed(&self) -> &CancellationToken {
        &self.failed
    }

    /// A guard that reports a fault of `component` if it is dropped by a panic: held by a
    /// worker thread or a task for as long as it runs, it makes a panic there stop the system
    /// instead of leaving it up without the part that died.
    pub fn on_panic(&self, component: Component, what: impl Into<String>) -> PanicGuard {
        PanicGuard {
            faults: self.clone(),
            component,
            what: what.into(),
        }
    }
}

/// See [`Faults::on_panic`].
pub struct PanicGuard {
    faults: Faults,
    component: Component,
    what: String,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.faults.report(
                self.component,
                format!("{} panicked (its message is in the log above)", self.what),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_under_the_guard_is_a_fault_and_an_end_without_one_is_not() {
        let faults = Faults::new();
        let guarded = faults.clone();
        let ended = std::thread::spawn(move || {
            let _guard = guarded.on_panic(Component::Dataflow, "worker 1");
        })
        .join();
        assert!(ended.is_ok());
        assert_eq!(faults.first(), None);
        let guarded = faults.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = guarded.on_panic(Component::Worker, "worker 1");
            panic!("an operator's bug");
        })
        .join();
        assert!(panicked.is_err());
        let fault = faults.first().expect("the panic is a fault");
        assert_eq!(fault.component, Component::Worker);
        assert!(fault.message.contains("worker 1 panicked"), "{fault}");
        assert!(faults.failed().is_cancelled());
        assert!(
            faults.undrainable().is_cancelled(),
            "the stop does not wait for workers that wait on a dead one"
        );
    }

    #[tokio::test]
    async fn the_first_fault_is_kept_and_wakes_the_waiter() {
        let faults = Faults::new();
        assert_eq!(faults.first(), None);
        let waiter = {
            let faults = faults.clone();
            tokio::spawn(async move { faults.failed().cancelled().await })
        };
        let reporter = faults.clone();
        std::thread::spawn(move || {
            reporter.report(Component::WindowsProducer, "cannot create it");
            reporter.report(Component::Dataflow, "later");
        })
        .join()
        .unwrap();
        waiter.await.unwrap();
        let first = faults.first().unwrap();
        assert_eq!(first.component, Component::WindowsProducer);
        assert_eq!(first.to_string(), "the windows producer: cannot create it");
        assert!(faults.undrainable().is_cancelled());
        assert_eq!(faults.decisive(), Some(first));
    }

    #[test]
    fn a_lost_peer_decides_the_status_whenever_it_comes() {
        let faults = Faults::new();
        faults.report(Component::Dataflow, "a source cannot start");
        assert!(
            !faults.undrainable().is_cancelled(),
            "the others still drain"
        );
        faults.report(Component::Peers, "lost process 1");
        assert!(faults.undrainable().is_cancelled());
        assert_eq!(faults.first().unwrap().component, Component::Dataflow);
        assert_eq!(faults.decisive().unwrap().component, Component::Peers);
    }
}
