//! `emostream run` as two processes (peers) on loopback, against tansu: reactions posted
//! to either process, clients on hubs owned by each, registration asked of either, redirects
//! for foreign hubs, each window written once, and a lost process noticed.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{now_ms, start_tansu};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts process `process`; its log goes to `{hostfile}.{process}.log`.
fn spawn(process: usize, hostfile: &Path, http: &str, brokers: &str) -> Process {
    let log = std::fs::File::create(hostfile.with_extension(format!("{process}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_emostream"))
        .args(["run", "--brokers", brokers, "--http", http])
        .args(["--processes", "2", "--process", &process.to_string()])
        .arg("--hostfile")
        .arg(hostfile)
        .args(["--workers", "1", "--partitions", "4", "--clusters", "2"])
        .args([
            "--subscribers",
            "2",
            "--idle-ms",
            "1000",
            "--linger-ms",
            "20",
        ])
        .args(["--group-id", "cluster-test", "--client-ttl-secs", "3"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Process(child)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}

type Received = Arc<Mutex<Vec<Value>>>;

fn follow(url: String) -> Received {
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        // A page from one process may follow events served by another.
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if event.event == "window" {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&event.data).unwrap());
            }
        }
    });
    received
}

fn sums(windows: &[Value], after: i64) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for w in windows
        .iter()
        .filter(|w| w["end_ms"].as_i64().unwrap() > after)
    {
        for e in w["emojis"].as_array().unwrap() {
            *sums
                .entry(e["emoji"].as_str().unwrap().to_owned())
                .or_default() += e["count"].as_u64().unwrap();
        }
    }
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_work_and_deliver_every_window_exactly() {
    let Some((_broker, brokers)) = start_tansu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (t0, t1) = (free_port(), free_port());
    let (h0, h1) = (free_port(), free_port());
    let hostfile = dir.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{t0} http://127.0.0.1:{h0}\n127.0.0.1:{t1} http://127.0.0.1:{h1}\n"),
    )
    .unwrap();
    let p0 = spawn(0, &hostfile, &format!("127.0.0.1:{h0}"), &brokers);
    let mut p1 = spawn(1, &hostfile, &format!("127.0.0.1:{h1}"), &brokers);
    let bases = [
        format!("http://127.0.0.1:{h0}"),
        format!("http://127.0.0.1:{h1}"),
    ];
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for base in &bases {
        wait_ready(&http, base).await;
    }

    // Registration asked of either process: one least-loaded answer, four clients on four hubs,
    // each events URL on the process that owns the hub.
    let mut clients = Vec::new();
    for i in 0..4 {
        let r = http
            .post(format!("{}/clients", bases[i % 2]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        clients.push(r.json::<Value>().await.unwrap());
    }
    let tree = get_json(&http, &format!("{}/clusters", bases[1])).await;
    let mut owners = BTreeMap::new();
    for c in tree["clusters"].as_array().unwrap() {
        for s in c["subscribers"].as_array().unwrap() {
            assert_eq!(s["clients"], 1, "{tree}");
            owners.insert(
                (
                    c["cluster"].as_u64().unwrap(),
                    s["subscriber"].as_u64().unwrap(),
                ),
                s["process"].as_u64().unwrap() as usize,
            );
        }
    }
    assert_eq!(owners.values().filter(|p| **p == 0).count(), 2, "{tree}");
    assert_eq!(owners.values().filter(|p| **p == 1).count(), 2, "{tree}");
    let same = get_json(&http, &format!("{}/clusters", bases[0])).await;
    assert_eq!(tree["clients"], same["clients"]);
    let mut assigned = std::collections::BTreeSet::new();
    for c in &clients {
        let key = (
            c["cluster"].as_u64().unwrap(),
            c["subscriber"].as_u64().unwrap(),
        );
        assert!(assigned.insert(key), "two clients on one hub: {clients:?}");
        let owner = owners[&key];
        assert!(
            c["events_url"].as_str().unwrap().starts_with(&bases[owner]),
            "{c} should point at process {owner}"
        );
    }

    // A hub owned by the other process is a redirect there.
    let (&(cluster, subscriber), &owner) = owners.iter().find(|(_, p)| **p == 1).unwrap();
    let path = format!("/clusters/{cluster}/subscribers/{subscriber}/events?client_id=x");
    let r = http
        .get(format!("{}{path}", bases[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("{}{path}", bases[owner])
    );

    let streams: Vec<Received> = clients
        .iter()
        .map(|c| follow(c["events_url"].as_str().unwrap().to_owned()))
        .collect();
    // Process 0 counts the streams served by both processes (heartbeats) and, past the time to
    // live, still holds every client, those on process 1's hubs included.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tree = get_json(&http, &format!("{}/clusters", bases[0])).await;
        let connected: Vec<u64> = tree["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["subscribers"].as_array().unwrap().iter())
            .map(|s| s["connected"].as_u64().unwrap())
            .collect();
        if connected == [1, 1, 1, 1] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connected per hub: {connected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tree = get_json(&http, &format!("{}/clusters", bases[1])).await;
    assert_eq!(
        tree["clients"], 4,
        "no client with an open stream expired: {tree}"
    );
    let started = now_ms();
    let reactions = |emoji: &str, n: usize, user: &str| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"user_id": format!("{user}{i}"), "emoji_type": emoji, "timestamp": now_ms()}))
            .collect()
    };
    for (base, emoji, n) in [(&bases[0], "🔥", 20), (&bases[1], "😂", 30)] {
        let r = http
            .post(format!("{base}/emoji/batch"))
            .json(&reactions(emoji, n, base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let expected: BTreeMap<String, u64> = [("🔥".to_owned(), 20), ("😂".to_owned(), 30)].into();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let all: Vec<BTreeMap<String, u64>> = streams
            .iter()
            .map(|s| sums(&s.lock().unwrap(), started))
            .collect();
        if all.iter().all(|s| *s == expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clients saw {all:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in &streams {
        let ids: Vec<i64> = s
            .lock()
            .unwrap()
            .iter()
            .map(|w| w["window"].as_i64().unwrap())
            .collect();
        assert!(
            ids.windows(2).all(|p| p[1] == p[0] + 1),
            "contiguous, once each: {ids:?}"
        );
    }
    let written = common::windows_topic(&brokers);
    let mut ids: Vec<_> = written.iter().map(|w| w.window).collect();
    ids.dedup();
    assert_eq!(
        ids.len(),
        written.len(),
        "each window written once for both processes"
    );
    let topic_sums = common::sums(&written);
    assert_eq!(topic_sums, expected);

    // Process 1 dies: process 0 says so and exits non-zero within seconds.
    drop(streams);
    let _ = p1.0.kill();
    let _ = p1.0.wait();
    let mut p0 = p0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = p0.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "process 0 kept running without process 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(3));
    let stderr = std::fs::read_to_string(hostfile.with_extension("0.log")).unwrap();
    assert!(
        stderr.contains(&format!("lost process 1 (127.0.0.1:{t1})")),
        "{stderr}"
    );
    drop(p0);

    // The restarted processes resume after the last window written: nothing lost or repeated.
    let _p0 = spawn(0, &hostfile, &format!("127.0.0.1:{h0}"), &brokers);
    let _p1 = spawn(1, &hostfile, &format!("127.0.0.1:{h1}"), &brokers);
    for base in &bases {
        wait_ready(&http, base).await;
    }
    let r = http
        .post(format!("{}/emoji/batch", bases[1]))
        .json(&reactions("🎉", 7, "again"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let expected: BTreeMap<String, u64> = [
        ("🔥".to_owned(), 20),
        ("😂".to_owned(), 30),
        ("🎉".to_owned(), 7),
    ]
    .into();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let written = common::windows_topic(&brokers);
        if common::sums(&written) == expected {
            common::assert_contiguous(&written);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart the windows topic holds {:?}",
            common::sums(&written)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
