//! The tests' SSE client: follows one event stream with a real SSE parser
//! (`eventsource-stream`), checks every event against the contract (an id that is the window
//! index, a window summary as data), records it, and lets a test wait for what it expects. A
//! wait wakes on each event rather than on a timer, and fails with the stream's URL, the ids
//! received and how the stream ended.

use std::fmt::Display;
use std::time::{Duration, Instant};

use dataflows::{WindowId, WindowSummary};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use tokio::sync::watch;

use super::wait::PATIENCE;

/// One event received.
#[derive(Debug, Clone)]
pub struct Event {
    /// The `event:` field: `window`, `resync` for a client that fell behind, or `correction`.
    pub kind: String,
    /// The `id:` field, checked to be the window index; a correction has none, and this is
    /// the index of the window it corrects.
    pub id: WindowId,
    /// The `data:` field.
    pub summary: WindowSummary,
}

/// How a stream stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The server closed it.
    Closed,
    /// The server closed a WebSocket with this close code and reason.
    ClosedWith(u16, String),
    /// The connection failed.
    Failed(String),
    /// An event broke the contract; the follower stopped reading there.
    Broken(String),
}

/// Everything a follower has seen so far.
#[derive(Debug, Default)]
pub struct Log {
    pub events: Vec<Event>,
    pub end: Option<End>,
}

/// A client following one event stream in a task of its own. Dropping it leaves the task
/// reading until the stream ends; [`Follower::close`] hangs up.
pub struct Follower {
    /// The stream's URL, to name it in failures.
    pub url: String,
    /// The response's headers.
    pub headers: HeaderMap,
    log: watch::Receiver<Log>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Opens `url` with `http`, resuming after `last_event_id` when given; the response must
    /// be a 200 event stream.
    pub async fn open(
        http: &reqwest::Client,
        url: &str,
        last_event_id: Option<WindowId>,
    ) -> Follower {
        let mut request = http.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{url} is an SSE stream"
        );
        let headers = response.headers().clone();
        Follower::read(url, headers, response.bytes_stream())
    }

    /// Follows a response body already opened by other means (a hand-made connection).
    pub fn read<S, B, E>(url: &str, headers: HeaderMap, body: S) -> Follower
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
        E: Display + Send + 'static,
    {
        let events = body.eventsource().map(|event| match event {
            Err(e) => Err(End::Failed(e.to_string())),
            Ok(event) => checked(event).map_err(End::Broken),
        });
        Follower::follow(url, headers, events)
    }

    /// Follows events already parsed (from another transport): the stream's end, or the
    /// first `Err`, is how it ended.
    pub fn follow<S>(url: &str, headers: HeaderMap, events: S) -> Follower
    where
        S: Stream<Item = Result<Event, End>> + Send + 'static,
    {
        let (sink, log) = watch::channel(Log::default());
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let end = loop {
                match events.next().await {
                    None => break End::Closed,
                    Some(Err(end)) => break end,
                    Some(Ok(event)) => sink.send_modify(|log| log.events.push(event)),
                }
            };
            sink.send_modify(|log| log.end = Some(end));
        });
        Follower {
            url: url.to_owned(),
            headers,
            log,
            task,
        }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.log.borrow().events.clone()
    }

    /// The ids received so far, in order (corrections have none).
    pub fn ids(&self) -> Vec<WindowId> {
        ids(&self.log.borrow())
    }

    /// The windows received so far, resyncs included, corrections not.
    pub fn windows(&self) -> Vec<WindowSummary> {
        self.windows_where(|e| e.kind != "correction")
    }

    /// The corrections received so far.
    pub fn corrections(&self) -> Vec<WindowSummary> {
        self.windows_of("correction")
    }

    /// The windows received so far in events of `kind`.
    pub fn windows_of(&self, kind: &str) -> Vec<WindowSummary> {
        self.windows_where(|e| e.kind == kind)
    }

    fn windows_where(&self, keep: impl Fn(&Event) -> bool) -> Vec<WindowSummary> {
        let log = self.log.borrow();
        log.events
            .iter()
            .filter(|e| keep(e))
            .map(|e| e.summary.clone())
            .collect()
    }

    /// The event kinds received so far, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.log
            .borrow()
            .events
            .iter()
            .map(|e| e.kind.clone())
            .collect()
    }

    /// How the stream ended, if it has.
    pub fn end(&self) -> Option<End> {
        self.log.borrow().end.clone()
    }

    /// Waits until `done` holds for the events received; fails past `within`, when the stream
    /// breaks the contract, or when it ends first.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&[Event]) -> bool,
    ) {
        let mut log = self.log.clone();
        // `wait_for` answers with a read guard: it is dropped here, before the borrow below,
        // since a second read while the reader task waits to write would deadlock.
        let timed_out = tokio::time::timeout(
            within,
            log.wait_for(|log| log.end.is_some() || done(&log.events)),
        )
        .await
        .is_err();
        let log = self.log.borrow();
        if let Some(End::Broken(why)) = &log.end {
            panic!("{}: {why} (after ids {:?})", self.url, ids(&log));
        }
        if done(&log.events) {
            return;
        }
        match timed_out {
            true => panic!(
                "{}: timed out after {within:?} waiting until {what}; ids received: {:?}",
                self.url,
                ids(&log)
            ),
            false => panic!(
                "{}: the stream ended ({:?}) before {what}; ids received: {:?}",
                self.url,
                log.end,
                ids(&log)
            ),
        }
    }

    /// Waits until window `k` (or a later one) has arrived.
    pub async fn wait_for_window(&self, k: WindowId) {
        self.wait_until(&format!("window {k} arrived"), PATIENCE, |events| {
            events.last().is_some_and(|e| e.id >= k)
        })
        .await
    }

    /// Waits until `n` events have arrived.
    pub async fn wait_for_ids(&self, n: usize) {
        self.wait_until(&format!("{n} events arrived"), PATIENCE, |events| {
            events.len() >= n
        })
        .await
    }

    /// Waits until the stream has ended, however it ended (a broken contract fails).
    pub async fn wait_ended(&self, within: Duration) {
        let mut log = self.log.clone();
        let ended = tokio::time::timeout(within, log.wait_for(|log| log.end.is_some()))
            .await
            .is_ok();
        let log = self.log.borrow();
        if let Some(End::Broken(why)) = &log.end {
            panic!("{}: {why} (after ids {:?})", self.url, ids(&log));
        }
        assert!(
            ended,
            "{}: still open after {within:?}; ids received: {:?}",
            self.url,
            ids(&log)
        );
    }

    /// Hangs up, as a client that goes away does.
    pub async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Waits until every follower has window `k` (or a later one), all within one [`PATIENCE`].
pub async fn wait_all_for_window(followers: &[Follower], k: WindowId) {
    let deadline = Instant::now() + PATIENCE;
    for follower in followers {
        let within = deadline.saturating_duration_since(Instant::now());
        follower
            .wait_until(&format!("every client has window {k}"), within, |events| {
                events.last().is_some_and(|e| e.id >= k)
            })
            .await;
    }
}

fn ids(log: &Log) -> Vec<WindowId> {
    log.events
        .iter()
        .filter(|e| e.kind != "correction")
        .map(|e| e.id)
        .collect()
}

/// An event as the contract has it, or what is wrong with it.
fn checked(event: eventsource_stream::Event) -> Result<Event, String> {
    if event.event == "correction" {
        // No `id` line: the parser repeats the last id seen, which is not the window's.
        let summary: WindowSummary = serde_json::from_str(&event.data)
            .map_err(|e| format!("correction data {:?}: {e}", event.data))?;
        return Ok(Event {
            kind: event.event,
            id: summary.window,
            summary,
        });
    }
    let id: WindowId = event
        .id
        .parse()
        .map_err(|e| format!("event id {:?}: {e}", event.id))?;
    let summary: WindowSummary = serde_json::from_str(&event.data)
        .map_err(|e| format!("event {id} data {:?}: {e}", event.data))?;
    if summary.window != id {
        return Err(format!(
            "event id {id} is not its window index {}",
            summary.window
        ));
    }
    Ok(Event {
        kind: event.event,
        id,
        summary,
    })
}
