//! The embedded broker: librdkafka's in-process mock cluster, so one command runs everything.
//!
//! The mock keeps each partition in memory, bounded to about 5 MiB (older messages are dropped
//! from the head), and nothing survives the process. It is for trying emostream out and for
//! tests; durable deployments use `--brokers`. The mock cluster is not `Send`, so it lives on a
//! thread of its own and hands out only its address.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use super::BrokerError;

/// Reactions a partition may hold that the sources have not read: a reaction takes about
/// 100 bytes there, so this stays well inside the mock's 5 MiB, which drops unread messages
/// beyond it (and a consumer that falls behind that far resets and falls further behind). The
/// ingest answers 503 beyond it: a burst waits for the sources instead of being lost.
pub const UNREAD_PER_PARTITION: u64 = 30_000;

/// A running embedded broker. Dropping it shuts the broker down.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with `topics` (name, partitions) created.
    pub fn start(topics: &[(String, i32)]) -> Result<Self, BrokerError> {
        let topics = topics.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(format!("cannot start the embedded broker: {e}")));
                        return;
                    }
                };
                for (topic, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(topic, *partitions, 1) {
                        let _ = ready_tx.send(Err(format!("cannot create topic {topic}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until the handle is dropped (the sender goes away).
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| format!("cannot start the embedded broker thread: {e}"))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| "the embedded broker thread ended before it was ready".to_string())??;
        Ok(EmbeddedBroker {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The `host:port` to bootstrap from.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
