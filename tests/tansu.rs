//! The end-to-end test against a Kafka-protocol broker that emostream does not embed: tansu.
//!
//! It needs tansu on the PATH (`cargo install tansu --locked --features dynostore`; `.ci/run`
//! installs it). Without it the test says so and skips, unless `EMOSTREAM_REQUIRE_TANSU=1`
//! (set by CI), where a missing tansu fails the test.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use common::start_tansu;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_posted_come_out_as_windows_against_tansu() {
    let Some((_broker, address)) = start_tansu() else {
        return;
    };
    // tansu answers a fetch up to half a second after the data arrives: the default idleness
    // (not the 200 ms of the in-process tests) leaves room for that.
    common::end_to_end(&["--brokers", &address, "--idle-ms", "1000"]).await;
}
