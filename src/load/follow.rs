//! The load generator's clients: each registers with `POST /clients`, follows its events URL
//! with an SSE parser (or the subscriber's WebSocket, `--transport ws`), reconnects after the
//! last window it received when the stream ends, and keeps every window it receives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataflows::wall_clock_ms;
use eventsource_stream::Eventsource;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;

use super::ledger::{Inbox, Receipt};

/// What `POST /clients` answered.
#[derive(Debug, Clone, Deserialize)]
pub struct Registration {
    /// The client's id.
    pub client_id: String,
    /// Its cluster.
    pub cluster: u32,
    /// Its subscriber.
    pub subscriber: u32,
    /// Where its events are.
    pub events_url: String,
    /// The stream it follows; a server from before streams names none (its default stream).
    #[serde(default)]
    pub stream_id: Option<String>,
}

/// How long registration waits out the server's registration rate limit.
const REGISTRATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Registers one client for `stream` (none: the default stream, with the body `{}` as before
/// streams existed), waiting as the server asks while its registration rate limit holds.
pub async fn register(
    client: &reqwest::Client,
    target: &str,
    stream: Option<&str>,
) -> Result<Registration, super::LoadError> {
    let body = match stream {
        Some(id) => serde_json::json!({ "stream_id": id }).to_string(),
        None => "{}".to_owned(),
    };
    let began = std::time::Instant::now();
    let response = loop {
        let response = client
            .post(format!("{target}/clients"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| super::LoadError::System(format!("POST {target}/clients: {e}")))?;
        if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS
            || began.elapsed() > REGISTRATION_PATIENCE
        {
            break response;
        }
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    };
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| super::LoadError::System(format!("POST {target}/clients: {e}")))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(super::LoadError::System(format!(
            "POST {target}/clients answered {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let registration: Registration = serde_json::from_slice(&body).map_err(|e| {
        super::LoadError::System(format!(
            "POST {target}/clients answered with an unexpected body: {e}"
        ))
    })?;
    let asked = stream.unwrap_or(dataflows::StreamId::DEFAULT);
    match registration.stream_id.as_deref() {
        Some(given) if given != asked => Err(super::LoadError::System(format!(
            "POST {target}/clients registered a client for stream {given:?}, asked {asked:?}"
        ))),
        _ => Ok(registration),
    }
}

/// Releases a client; a failure only leaves it to expire on the server.
pub async fn release(client: &reqwest::Client, target: &str, registration: &Registration) {
    let _ = client
        .delete(format!("{target}/clients/{}", registration.client_id))
        .send()
        .await;
}

/// Counts over every follower.
#[derive(Debug, Default)]
pub struct FollowStats {
    /// Windows received (resyncs included).
    pub windows: AtomicU64,
    /// `event: resync` received.
    pub resyncs: AtomicU64,
    /// `event: correction` received.
    pub corrections: AtomicU64,
    /// Streams that ended or failed and were reopened.
    pub reconnects: AtomicU64,
    /// Events that are not the contract's (not JSON, or not a window summary).
    pub malformed: AtomicU64,
    /// The first of those, and why.
    pub first_malformed: Mutex<Option<String>>,
}

impl FollowStats {
    fn malformed(&self, why: String) {
        if self.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
            *self
                .first_malformed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(why);
        }
    }
}

/// How a client follows its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Server-Sent Events (`.../events`).
    Sse,
    /// WebSocket messages (`.../ws`).
    Ws,
}

/// One event: its kind, its id (empty for a correction) and its window; or why it is not one.
type Received = Result<(String, String, WindowData), String>;

/// How long opening a stream may take (connection, and the response head or the upgrade): a
/// server that accepts and never answers would otherwise hold the run for ever.
const OPEN_WITHIN: Duration = Duration::from_secs(10);

/// Opens the stream after `last_id`; `Err` says why it did not open.
async fn open(
    client: &reqwest::Client,
    transport: Transport,
    events_url: &str,
    last_id: Option<&str>,
) -> Result<BoxStream<'static, Received>, String> {
    match transport {
        Transport::Sse => {
            let mut request = client.get(events_url).header("accept", "text/event-stream");
            if let Some(id) = last_id {
                request = request.header("last-event-id", id);
            }
            let response = tokio::time::timeout(OPEN_WITHIN, request.send())
                .await
                .map_err(|_| format!("GET {events_url}: no answer within {OPEN_WITHIN:?}"))?
                .map_err(|e| format!("GET {events_url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("GET {events_url} answered {}", response.status()));
            }
            Ok(response
                .bytes_stream()
                .eventsource()
                .take_while(|event| std::future::ready(event.is_ok()))
                .filter_map(|event| async move {
                    let event = event.ok()?;
                    Some(match serde_json::from_str::<WindowData>(&event.data) {
                        Ok(data) => Ok((event.event, event.id, data)),
                        Err(e) => Err(malformed(&event.event, &event.data, &e)),
                    })
                })
                .boxed())
        }
        Transport::Ws => {
            let url = crate::delivery::events::ws_url(events_url, last_id);
            let (socket, _) =
                tokio::time::timeout(OPEN_WITHIN, tokio_tungstenite::connect_async(&url))
                    .await
                    .map_err(|_| format!("WebSocket {url}: no answer within {OPEN_WITHIN:?}"))?
                    .map_err(|e| format!("WebSocket {url}: {e}"))?;
            Ok(socket
                .take_while(|message| std::future::ready(message.is_ok()))
                .filter_map(|message| async move {
                    let Ok(tokio_tungstenite::tungstenite::Message::Text(text)) = message else {
                        return None;
                    };
                    Some(match serde_json::from_str::<WsEvent>(text.as_str()) {
                        Ok(event) => Ok((event.event, event.id.unwrap_or_default(), event.data)),
                        Err(e) => Err(malformed("message", text.as_str(), &e)),
                    })
                })
                .boxed())
        }
    }
}

/// Why an event is not the contract's, with the start of what came.
fn malformed(kind: &str, data: &str, e: &serde_json::Error) -> String {
    let shown: String = data.chars().take(200).collect();
    format!("{kind} {shown:?}: {e}")
}

/// A WebSocket message.
#[derive(Deserialize)]
struct WsEvent {
    event: String,
    id: Option<String>,
    data: WindowData,
}

#[derive(Deserialize)]
struct WindowData {
    /// Absent from a server before streams: its one stream is the default.
    #[serde(default)]
    stream_id: Option<String>,
    window: i64,
    start_ms: i64,
    end_ms: i64,
    total: u64,
    emojis: Vec<EmojiData>,
    #[serde(default)]
    revision: u32,
}

#[derive(Deserialize)]
struct EmojiData {
    emoji: String,
    count: u64,
}

/// Follows `registration`'s events (for stream `followed`) until `stop` turns true; sends
/// `()` on `connected` when the first stream opens.
#[allow(clippy::too_many_arguments)] // each is one part of a follower, named at the call
pub async fn follow(
    client: reqwest::Client,
    transport: Transport,
    registration: Registration,
    followed: String,
    inbox: Arc<Mutex<Inbox>>,
    stats: Arc<FollowStats>,
    connected: tokio::sync::mpsc::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_id: Option<String> = None;
    let mut first = true;
    loop {
        let opened = tokio::select! {
            r = open(&client, transport, &registration.events_url, last_id.as_deref()) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match opened {
            Ok(mut events) => {
                if first {
                    first = false;
                    let _ = connected.send(Ok(())).await;
                }
                loop {
                    let event = tokio::select! {
                        e = events.next() => e,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    let Some(received) = event else { break };
                    let (kind, id, data) = match received {
                        Ok(received) => received,
                        Err(why) => {
                            stats.malformed(why);
                            continue;
                        }
                    };
                    let resync = kind == "resync";
                    let correction = kind == "correction";
                    if kind != "window" && !resync && !correction {
                        continue;
                    }
                    let stream_id = data
                        .stream_id
                        .as_deref()
                        .unwrap_or(dataflows::StreamId::DEFAULT);
                    // Ids count per stream: another stream's would resume this one wrongly. A
                    // correction has no id (the SSE parser repeats the last one).
                    if !id.is_empty() && stream_id == followed && !correction {
                        last_id = Some(id);
                    }
                    if correction {
                        stats.corrections.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.windows.fetch_add(1, Ordering::Relaxed);
                    }
                    if resync {
                        stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    let receipt = Receipt {
                        window: data.window,
                        start_ms: data.start_ms,
                        end_ms: data.end_ms,
                        total: data.total,
                        counts: data
                            .emojis
                            .into_iter()
                            .map(|e| (e.emoji, e.count))
                            .collect(),
                        at_ms: wall_clock_ms(),
                        resync,
                        revision: data.revision,
                        correction,
                    };
                    inbox
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .receive(stream_id, &followed, receipt);
                }
            }
            Err(why) => {
                if first {
                    let _ = connected.send(Err(why)).await;
                    return;
                }
            }
        }
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_never_answers_is_given_up_on() {
        // Accepts connections and never answers on them.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/clusters/0/subscribers/0/events");
        for transport in [Transport::Sse, Transport::Ws] {
            let Err(why) = open(&client, transport, &url, None).await else {
                panic!("{transport:?}: a silent server's stream opened");
            };
            assert!(why.contains("no answer within 10s"), "{transport:?}: {why}");
        }
        silent.abort();
    }

    /// A server whose event is not a window summary: the event is counted as malformed, with
    /// what came, and the next one is read.
    #[tokio::test]
    async fn an_event_that_is_not_a_summary_is_counted_and_the_next_is_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 4096];
            let _ = socket.read(&mut head).await;
            let good = r#"{"stream_id":"default","window":7,"start_ms":14000,"end_ms":16000,"total":0,"emojis":[],"revision":0}"#;
            let body = format!(
                "event: window\nid: 6\ndata: {{\"window\": \"six\"}}\n\nevent: window\nid: 7\ndata: {good}\n\n"
            );
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            // Held open until the test ends, so the client does not reconnect.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/clusters/0/subscribers/0/events");
        let mut events = open(&client, Transport::Sse, &url, None).await.unwrap();
        let stats = FollowStats::default();
        let Some(Err(why)) = events.next().await else {
            panic!("the malformed event was not reported");
        };
        stats.malformed(why);
        let Some(Ok((kind, id, data))) = events.next().await else {
            panic!("the next event was not read");
        };
        assert_eq!(
            (kind.as_str(), id.as_str(), data.window),
            ("window", "7", 7)
        );
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 1);
        let first = stats.first_malformed.lock().unwrap().clone().unwrap();
        assert!(first.contains("six"), "{first}");
        server.abort();
    }
}
