//! The end-to-end test against Apache Kafka 4.4.0 (KRaft, one node, started by
//! `tests/kafka/start.sh`): reactions posted over HTTP come out as windows with exact counts,
//! in `on_window` and in the windows topic.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use common::Kafka;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn reactions_posted_come_out_as_windows_against_kafka() {
    let kafka = tokio::task::spawn_blocking(Kafka::start).await.unwrap();
    common::end_to_end(&["--brokers", &kafka.brokers, "--idle-ms", "1000"]).await;
}
