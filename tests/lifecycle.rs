//! The lifecycle of `emostream run`: a fault stops windows from flowing and says so on
//! `/readyz`, a shutdown future handed in stops the system, and each class of failure exits
//! with its own status.

#![allow(clippy::unwrap_used)] // a failure is the test failing

mod common;

use std::process::Command;
use std::time::Duration;

use emostream::error::{exit, RunError};
use emostream::system::{run_until, Component};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_turns_readyz_to_503_with_its_reason_and_stops_the_run() {
    let (system, _seen) = common::start(&[]).await;
    let readyz = format!("http://{}/readyz", system.http_addr);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&readyz).send().await.unwrap().status(), 200);

    // What the windows sink does when its producer cannot be created.
    system
        .faults()
        .report(Component::WindowsProducer, "cannot create it for test:1");
    tokio::time::timeout(Duration::from_secs(5), system.failed())
        .await
        .expect("waiters hear of the fault at once");
    let answer = http.get(&readyz).send().await.unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "not_ready");
    assert_eq!(
        body["message"],
        "windows are not flowing: the windows producer: cannot create it for test:1"
    );

    let stopped = system.shutdown().await.unwrap_err();
    assert!(matches!(stopped, RunError::Dataflow(_)), "{stopped:?}");
    assert_eq!(stopped.exit_code(), exit::INTERNAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_handed_in_stops_the_system_cleanly() {
    let args = common::run_args(&[]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let run = tokio::spawn(async move {
        run_until(
            &args,
            async move {
                let _ = stopped.await;
            },
            |system| {
                let _ = addr_tx.send(system.http_addr);
            },
        )
        .await
    });
    let addr = addr_rx.await.expect("the system started");
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the stop is time-boxed")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err(),
        "the listener is closed"
    );
}

fn emostream(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_emostream"))
        .arg("run")
        .args(args)
        .env("EMOSTREAM_LOG", "error")
        .output()
        .unwrap()
}

#[test]
fn each_failure_class_exits_with_its_own_status() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = emostream(&["--http", &taken_addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::BIND.into()), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {taken_addr}")) && stderr.contains("--http"),
        "{stderr}"
    );

    let out = emostream(&["--processes", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::CONFIG.into()), "{stderr}");
    assert!(stderr.contains("--hostfile"), "{stderr}");

    // A cluster without its secret would leave its internal endpoints open to anyone.
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts");
    std::fs::write(
        &hostfile,
        "127.0.0.1:1 http://127.0.0.1:2\n127.0.0.1:3 http://127.0.0.1:4\n",
    )
    .unwrap();
    let hostfile = hostfile.to_string_lossy();
    let cluster = [
        "--processes",
        "2",
        "--hostfile",
        &hostfile,
        "--brokers",
        "127.0.0.1:9",
    ];
    let out = emostream(&cluster);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::CONFIG.into()), "{stderr}");
    assert!(stderr.contains("--cluster-secret-file"), "{stderr}");
    let short = dir.path().join("short");
    std::fs::write(&short, "guessable\n").unwrap();
    let short = short.to_string_lossy();
    let out = emostream(&[&cluster[..], &["--cluster-secret-file", &short]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::CONFIG.into()), "{stderr}");
    assert!(stderr.contains("at least 16"), "{stderr}");
    let out = emostream(&["--advertise-http", "live.example:8080"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::CONFIG.into()), "{stderr}");
    assert!(stderr.contains("--advertise-http"), "{stderr}");
    let out = emostream(&["--cors-origin", "live.example"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::CONFIG.into()), "{stderr}");
    assert!(stderr.contains("--cors-origin"), "{stderr}");

    // Nothing listens on a port just released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = free.local_addr().unwrap().to_string();
    drop(free);
    let out = emostream(&["--http", "127.0.0.1:0", "--brokers", &nobody]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::BROKER.into()), "{stderr}");
    assert!(stderr.contains(&nobody), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_connects_exits_with_the_peer_status() {
    // The embedded broker of an in-process system listens on loopback: the binary can use it.
    let (system, _seen) = common::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts");
    let [t0, t1, h0, h1] = common::ports::free_ports(4)[..] else {
        unreachable!()
    };
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{t0} http://127.0.0.1:{h0}\n127.0.0.1:{t1} http://127.0.0.1:{h1}\n"),
    )
    .unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "lifecycle-test-secret-0123456789").unwrap();
    let args: Vec<String> = [
        "--cluster-secret-file",
        &secret.to_string_lossy(),
        "--http",
        &format!("127.0.0.1:{h1}"),
        "--brokers",
        &system.brokers,
        "--processes",
        "2",
        "--process",
        "1",
        "--hostfile",
        &hostfile.to_string_lossy(),
        "--connect-timeout-secs",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        emostream(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::PEER.into()), "{stderr}");
    assert!(
        stderr.contains(&format!("process 0 at 127.0.0.1:{t0}"))
            && stderr.contains("--connect-timeout-secs"),
        "{stderr}"
    );
    system.shutdown().await.unwrap();
}
