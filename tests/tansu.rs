//! The end-to-end test against a Kafka-protocol broker that emostream does not embed: tansu.
//!
//! It needs tansu on the PATH (`cargo install tansu --locked --features dynostore`; `.ci/run`
//! installs it), so it is ignored by default; `--include-ignored` runs it, and a missing tansu
//! then fails it.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use common::start_tansu;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu on the PATH; run with --include-ignored"]
async fn reactions_posted_come_out_as_windows_against_tansu() {
    let (_broker, address) = start_tansu();
    // tansu answers a fetch up to half a second after the data arrives: the default idleness
    // (not the 200 ms of the in-process tests) leaves room for that.
    common::end_to_end(&["--brokers", &address, "--idle-ms", "1000"]).await;
}
