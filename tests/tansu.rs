//! The end-to-end test against a Kafka-protocol broker that emostream does not embed: tansu.
//!
//! It needs tansu on the PATH (`cargo install tansu --locked --features dynostore`; `.ci/run`
//! installs it). Without it the test says so and skips, unless `EMOSTREAM_REQUIRE_TANSU=1`
//! (set by CI), where a missing tansu fails the test.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tansu() -> Option<(Broker, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new("tansu")
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(child) => Broker(child),
        Err(e) => {
            let required = std::env::var("EMOSTREAM_REQUIRE_TANSU").as_deref() == Ok("1");
            assert!(
                !required,
                "tansu is required (EMOSTREAM_REQUIRE_TANSU=1) but cannot start: {e}"
            );
            eprintln!("skipping: tansu is not installed ({e}); cargo install tansu --locked --features dynostore");
            return None;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((child, format!("127.0.0.1:{port}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_posted_come_out_as_windows_against_tansu() {
    let Some((_broker, address)) = start_tansu() else {
        return;
    };
    // tansu answers a fetch up to half a second after the data arrives: the default idleness
    // (not the 200 ms of the in-process tests) leaves room for that.
    common::end_to_end(&["--brokers", &address, "--idle-ms", "1000"]).await;
}
