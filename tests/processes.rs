//! `emostream run` as two processes (peers) on loopback, against Apache Kafka: reactions posted
//! to either process, clients on hubs owned by each, registration asked of either, redirects
//! for foreign hubs, each window written once, and a lost process noticed.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, get_json, now_ms, poll_until, Follower, Kafka};
use dataflows::WindowSummary;
use serde_json::{json, Value};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The hostfile of two processes on loopback, in `dir`, and their free ports: timely 0 and 1,
/// then HTTP 0 and 1.
fn write_hostfile(dir: &Path) -> (std::path::PathBuf, [u16; 4]) {
    let [t0, t1, h0, h1] = free_ports(4)[..] else {
        unreachable!()
    };
    let hostfile = dir.join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{t0} http://127.0.0.1:{h0}\n127.0.0.1:{t1} http://127.0.0.1:{h1}\n"),
    )
    .unwrap();
    (hostfile, [t0, t1, h0, h1])
}

/// Starts process `process`; its log goes to `{hostfile}.{process}.log`.
/// The cluster's secret lies beside the hostfile, in `{hostfile}.secret`.
fn spawn(process: usize, hostfile: &Path, http: &str, brokers: &str) -> Process {
    spawn_with(process, hostfile, http, brokers, &[])
}

/// [`spawn`] with more flags.
fn spawn_with(
    process: usize,
    hostfile: &Path,
    http: &str,
    brokers: &str,
    extra: &[&str],
) -> Process {
    let secret = hostfile.with_extension("secret");
    std::fs::write(&secret, "processes-test-secret-0123456789\n").unwrap();
    let log = std::fs::File::create(hostfile.with_extension(format!("{process}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_emostream"))
        .args(["run", "--brokers", brokers, "--http", http])
        .args(["--processes", "2", "--process", &process.to_string()])
        .arg("--hostfile")
        .arg(hostfile)
        .arg("--cluster-secret-file")
        .arg(&secret)
        .args(["--workers", "1", "--partitions", "4", "--clusters", "2"])
        .args([
            "--subscribers",
            "2",
            "--idle-ms",
            "1000",
            "--linger-ms",
            "20",
        ])
        .args(["--group-id", "processes-test", "--client-ttl-secs", "3"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Process(child)
}

/// Waits until process `process` (of `hostfile`) at `base` is ready; a failure shows the end of
/// its log.
async fn wait_ready(http: &reqwest::Client, base: &str, hostfile: &Path, process: usize) {
    let log = hostfile.with_extension(format!("{process}.log"));
    poll_until(
        &format!("{base} is ready"),
        Duration::from_secs(60),
        || async {
            let state = match http.get(format!("{base}/readyz")).send().await {
                Ok(r) if r.status() == 200 => return Ok(()),
                Ok(r) => format!("/readyz answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
            Err(format!("{state}; its log, last lines first:\n{tail}"))
        },
    )
    .await
}

/// Follows `url`, which a page from another process may read.
async fn follow(sse: &reqwest::Client, url: &str) -> Follower {
    let follower = Follower::open(sse, url, None).await;
    // A page from one process may follow events served by another.
    assert_eq!(follower.headers["access-control-allow-origin"], "*");
    follower
}

/// Per-emoji sums over the windows that end after `after`.
fn sums(windows: &[WindowSummary], after: i64) -> BTreeMap<String, u64> {
    let recent: Vec<WindowSummary> = windows
        .iter()
        .filter(|w| w.end_ms > after)
        .cloned()
        .collect();
    common::sums(&recent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn two_processes_share_the_work_and_deliver_every_window_exactly() {
    let kafka = tokio::task::spawn_blocking(Kafka::start).await.unwrap();
    let brokers = kafka.brokers.clone();
    let dir = tempfile::tempdir().unwrap();
    let (hostfile, [_, t1, h0, h1]) = write_hostfile(dir.path());
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
    for (process, base) in bases.iter().enumerate() {
        wait_ready(&http, base, &hostfile, process).await;
    }

    // Registration asked of either process: one least-loaded answer, four clients on four hubs,
    // each events URL on the process that owns the hub.
    let mut clients = Vec::new();
    for i in 0..4 {
        let r = http
            .post(format!("{}/clients", bases[i % 2]))
            .json(&json!({}))
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

    let sse = reqwest::Client::new();
    let mut streams = Vec::new();
    for c in &clients {
        streams.push(follow(&sse, c["events_url"].as_str().unwrap()).await);
    }
    // Process 0 counts the streams served by both processes (heartbeats) and, past the time to
    // live, still holds every client, those on process 1's hubs included.
    poll_until(
        "process 0 counts one stream per hub",
        Duration::from_secs(15),
        || async {
            let tree = get_json(&http, &format!("{}/clusters", bases[0])).await;
            let connected: Vec<u64> = tree["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|c| c["subscribers"].as_array().unwrap().iter())
                .map(|s| s["connected"].as_u64().unwrap())
                .collect();
            if connected == [1, 1, 1, 1] {
                Ok(())
            } else {
                Err(format!("connected per hub: {connected:?}"))
            }
        },
    )
    .await;
    // Anyone else's heartbeat is refused before its body is read: no forged loads.
    let forged = json!({"process": 1, "attached": [], "connected": [[0, 1000000]]});
    for authorization in [None, Some("Bearer not-the-cluster-secret")] {
        let mut request = http
            .post(format!("{}/peers/heartbeat", bases[0]))
            .json(&forged);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 401, "{authorization:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    let tree = get_json(&http, &format!("{}/clusters", bases[0])).await;
    assert!(
        tree["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["subscribers"].as_array().unwrap().iter())
            .all(|s| s["connected"] == 1),
        "a refused heartbeat changed the tree: {tree}"
    );
    // Time must pass in the other processes, not a condition come true: past the 3 s time to
    // live, no client with an open stream may have expired.
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
    let what = format!("the client's windows sum to {expected:?}");
    for s in &streams {
        let within = deadline.saturating_duration_since(Instant::now());
        s.wait_until(&what, within, |events| {
            let windows: Vec<WindowSummary> = events
                .iter()
                .filter(|e| e.kind == "window")
                .map(|e| e.summary.clone())
                .collect();
            sums(&windows, started) == expected
        })
        .await;
    }
    for s in &streams {
        let ids: Vec<u64> = s.windows_of("window").iter().map(|w| w.window).collect();
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

    // Streams: clients of two streams registered at either process land on hubs of both;
    // each receives its stream alone, exactly, and either process lists the same viewers.
    let mut named = Vec::new();
    for i in 0..4 {
        let stream = ["east", "west"][i % 2];
        let r = http
            .post(format!("{}/clients", bases[(i / 2) % 2]))
            .json(&json!({ "stream_id": stream }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let reg: Value = r.json().await.unwrap();
        assert_eq!(reg["stream_id"], stream);
        let follower = follow(&sse, reg["events_url"].as_str().unwrap()).await;
        named.push((stream, reg, follower));
    }
    let hosts: std::collections::BTreeSet<&str> = named
        .iter()
        .map(|(_, reg, _)| {
            let url = reg["events_url"].as_str().unwrap();
            if url.starts_with(&bases[0]) {
                "p0"
            } else {
                "p1"
            }
        })
        .collect();
    assert_eq!(hosts.len(), 2, "stream clients on both processes");
    for (base, stream, emoji, n) in [(&bases[0], "east", "🌅", 11), (&bases[1], "west", "🌇", 13)]
    {
        let batch: Vec<Value> = (0..n)
            .map(|i| json!({"user_id": format!("{stream}{i}"), "emoji_type": emoji, "timestamp": now_ms(), "stream_id": stream}))
            .collect();
        let r = http
            .post(format!("{base}/emoji/batch"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    for (stream, _, follower) in &named {
        let (emoji, n) = if *stream == "east" {
            ("🌅", 11)
        } else {
            ("🌇", 13)
        };
        let want: BTreeMap<String, u64> = [(emoji.to_owned(), n)].into();
        follower
            .wait_until(
                &format!("{stream} sums to {want:?}"),
                Duration::from_secs(40),
                |events| {
                    let windows: Vec<WindowSummary> =
                        events.iter().map(|e| e.summary.clone()).collect();
                    common::sums(&windows) == want
                },
            )
            .await;
        assert!(follower
            .windows()
            .iter()
            .all(|w| w.stream_id.as_str() == *stream));
    }
    let listing = |base: String| {
        let http = http.clone();
        async move {
            let all = get_json(&http, &format!("{base}/streams")).await;
            let mut viewers: Vec<(String, u64)> = all
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["stream_id"] != "default")
                .map(|s| {
                    (
                        s["stream_id"].as_str().unwrap().to_owned(),
                        s["viewers"].as_u64().unwrap(),
                    )
                })
                .collect();
            viewers.sort();
            viewers
        }
    };
    poll_until(
        "both processes list two viewers of each stream",
        Duration::from_secs(15),
        || {
            let (a, b) = (listing(bases[0].clone()), listing(bases[1].clone()));
            async move {
                let (a, b) = (a.await, b.await);
                let want = vec![("east".to_owned(), 2), ("west".to_owned(), 2)];
                if a == want && b == want {
                    Ok(())
                } else {
                    Err(format!("process 0: {a:?}, process 1: {b:?}"))
                }
            }
        },
    )
    .await;
    drop(named);

    // Process 1 dies: process 0 says so and exits non-zero within seconds.
    drop(streams);
    let _ = p1.0.kill();
    let _ = p1.0.wait();
    let mut p0 = p0;
    let status = poll_until(
        "process 0 exits without process 1",
        Duration::from_secs(20),
        || {
            std::future::ready(
                p0.0.try_wait()
                    .unwrap()
                    .ok_or_else(|| "still running".to_owned()),
            )
        },
    )
    .await;
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
    for (process, base) in bases.iter().enumerate() {
        wait_ready(&http, base, &hostfile, process).await;
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
        ("🌅".to_owned(), 11),
        ("🌇".to_owned(), 13),
    ]
    .into();
    let written = poll_until(
        "after the restart the windows topic holds every reaction",
        Duration::from_secs(40),
        || {
            let written = common::windows_topic(&brokers);
            std::future::ready(if common::sums(&written) == expected {
                Ok(written)
            } else {
                Err(format!("{:?}", common::sums(&written)))
            })
        },
    )
    .await;
    // Every stream's windows once each, with no gap across the stop and the restart (the named
    // streams were inside their idle span when the processes stopped).
    for stream in ["default", "east", "west"] {
        common::assert_contiguous(&common::of_stream(&written, stream));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn two_processes_check_tokens_each_once() {
    let kafka = tokio::task::spawn_blocking(Kafka::start).await.unwrap();
    let brokers = kafka.brokers.clone();
    let dir = tempfile::tempdir().unwrap();
    let (hostfile, [_, _, h0, h1]) = write_hostfile(dir.path());
    let secret = dir.path().join("token-secret");
    std::fs::write(&secret, "the token secret of the processes test\n").unwrap();
    let auth = [
        "--auth-hs256-secret-file",
        secret.to_str().unwrap(),
        "--auth-subscribers",
    ];
    let _p0 = spawn_with(0, &hostfile, &format!("127.0.0.1:{h0}"), &brokers, &auth);
    let _p1 = spawn_with(1, &hostfile, &format!("127.0.0.1:{h1}"), &brokers, &auth);
    let bases = [
        format!("http://127.0.0.1:{h0}"),
        format!("http://127.0.0.1:{h1}"),
    ];
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (process, base) in bases.iter().enumerate() {
        wait_ready(&http, base, &hostfile, process).await;
    }
    let minted = Command::new(env!("CARGO_BIN_EXE_emostream"))
        .args(["token", "--secret-file", secret.to_str().unwrap()])
        .args(["--sub", "viewer", "--subscribe", "match-*"])
        .output()
        .unwrap();
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();

    // The follower (process 1) checks the token itself, once, and the leader trusts it.
    for path in ["/streams", "/clusters", "/streams/match-1"] {
        let r = http
            .get(format!("{}{path}", bases[1]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    assert_eq!(
        common::metric(
            std::net::SocketAddr::from(([127, 0, 0, 1], h1)),
            "emostream_auth_refused_total{reason=\"missing\"}"
        )
        .await,
        3.0,
        "each refusal counted once"
    );
    let r = http
        .get(format!("{}/streams", bases[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (stream, status) in [("concert", 403), ("match-1", 201)] {
        let r = http
            .post(format!("{}/clients", bases[1]))
            .bearer_auth(&token)
            .json(&json!({ "stream_id": stream }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{stream}");
        if status == 201 {
            let client: Value = r.json().await.unwrap();
            let url = client["events_url"].as_str().unwrap();
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 401, "the event stream needs the token too");
            let r = http.get(url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
        }
    }
    let r = http
        .post(format!("{}/emoji", bases[0]))
        .bearer_auth(&token)
        .json(&json!({"emoji_type": "🔥", "stream_id": "match-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The follower copies the leader's tree every second, with the cluster secret: the leader
    // refuses none of the copies.
    let leader = std::net::SocketAddr::from(([127, 0, 0, 1], h0));
    let missing = "emostream_auth_refused_total{reason=\"missing\"}";
    let before = common::metric(leader, missing).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        common::metric(leader, missing).await,
        before,
        "the leader refused the follower's copies of the tree"
    );
}

/// The tree grows on process 0; a client sent to a new hub that process 1 serves opens its
/// WebSocket there at once, before process 1's copy of the tree (every second) has the hub:
/// the socket path copies the tree on demand, as the SSE route does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: tests/kafka/start.sh fetches it with Maven (Java 17); run with --include-ignored"]
async fn a_websocket_to_a_hub_the_tree_just_grew_is_served_by_the_follower() {
    let kafka = tokio::task::spawn_blocking(Kafka::start).await.unwrap();
    let brokers = kafka.brokers.clone();
    let dir = tempfile::tempdir().unwrap();
    let (hostfile, [_, _, h0, h1]) = write_hostfile(dir.path());
    let grow = ["--subscriber-capacity", "1"];
    let _p0 = spawn_with(0, &hostfile, &format!("127.0.0.1:{h0}"), &brokers, &grow);
    let _p1 = spawn_with(1, &hostfile, &format!("127.0.0.1:{h1}"), &brokers, &grow);
    let bases = [
        format!("http://127.0.0.1:{h0}"),
        format!("http://127.0.0.1:{h1}"),
    ];
    let http = reqwest::Client::new();
    for (process, base) in bases.iter().enumerate() {
        wait_ready(&http, base, &hostfile, process).await;
    }
    // 2 × 2 hubs of one client each: from the fifth client on, every one adds a hub. Each
    // client opens its WebSocket as soon as it is registered (so none expires).
    let mut on_the_follower = Vec::new();
    let mut all = Vec::new();
    for _ in 0..12 {
        let client = common::register(&http, &bases[0], None).await;
        let url = client["events_url"].as_str().unwrap();
        let socket = common::ws::open(&common::ws::ws_url(url, None), &[]).await;
        if client["subscriber"].as_u64().unwrap() >= 2 && url.starts_with(&bases[1]) {
            on_the_follower.push(socket);
        } else {
            all.push(socket);
        }
    }
    assert!(
        on_the_follower.len() >= 2,
        "grown hubs process 1 serves: {}",
        on_the_follower.len()
    );
    for socket in &on_the_follower {
        socket.wait_for_ids(1).await;
    }
}
