//! One SSE hub per (cluster, subscriber): where a registered client is assigned, the clients
//! it serves, and their keep-alives.
//!
//! A hub's event stream for stream X follows X's [`StreamChannel`], kept once per process
//! ([`super::streams`]); the hub itself carries only keep-alives and its own end (shutdown, or
//! its removal from the tree). Publishing never blocks on clients: each reads the shared
//! broadcast ring at its own pace, so the queue per client is a position in one ring.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use dataflows::{HubId, WindowId};
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::frame::{preface, Frame, KEEP_ALIVE};
use super::streams::StreamChannel;
use crate::stats::Stats;

/// Retention and queueing of the streams a process delivers.
#[derive(Clone, Copy, Debug)]
pub struct HubSettings {
    /// Windows of each stream kept for `Last-Event-ID` replay.
    pub retention: usize,
    /// Windows a client may fall behind before it is resynced.
    pub client_queue: usize,
    /// Encoded bytes a resume (`Last-Event-ID`) may replay; past it the client is resynced
    /// to the latest window, so one small request cannot ask for the whole retention.
    pub max_resume_bytes: usize,
    /// Windows a stream gets after one with reactions: it is active (listed) while it gets them.
    pub idle_windows: u64,
}

/// Resyncs in a row (with fewer than `client_queue` windows between them) after which a
/// client is closed: it cannot keep up, and resyncing it again only costs the others.
pub const MAX_RESYNCS_IN_A_ROW: u32 = 3;

/// One (cluster, subscriber) hub.
pub struct Hub {
    /// Its place in the tree.
    pub id: HubId,
    /// Its index in creation order; [`dataflows::hub_owner`] says which worker owns it.
    pub index: usize,
    /// Keep-alives to the hub's clients; dropped to end their streams.
    control: Mutex<Option<broadcast::Sender<()>>>,
    connected: AtomicUsize,
    /// Removed from the tree: its streams end (and their clients, reconnecting, learn the
    /// subscriber is gone) rather than hang.
    retired: AtomicBool,
    stats: Arc<Stats>,
}

impl Hub {
    /// A hub with no clients.
    pub fn new(id: HubId, index: usize, stats: Arc<Stats>) -> Hub {
        Hub {
            id,
            index,
            // Keep-alives are idempotent: a client that misses some has had others.
            control: Mutex::new(Some(broadcast::channel(2).0)),
            connected: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            stats,
        }
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Option<broadcast::Sender<()>>> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a keep-alive comment to every client.
    pub fn keep_alive(&self) {
        if let Some(control) = self.control().as_ref() {
            // An error only means no client is connected.
            let _ = control.send(());
        }
    }

    /// Ends every client's stream (after the windows already published to it): used at
    /// shutdown.
    pub fn close(&self) {
        *self.control() = None;
    }

    /// Ends every client's stream at once and refuses new ones: the hub left the tree.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        // Dropping the sender wakes the streams waiting on it, which then see the flag.
        self.close();
    }

    /// Whether the hub left the tree.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Clients connected now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// A client's stream of `channel`'s stream: the retained windows after `last_event_id`
    /// (the latest one without an id), then the live windows, with no gap and no duplicate
    /// between the two. A resume that would replay more than `max_resume_bytes` is resynced to
    /// the latest window instead.
    pub fn subscribe(
        self: &Arc<Self>,
        channel: &Arc<StreamChannel>,
        last_event_id: Option<WindowId>,
    ) -> ClientStream {
        let control = match self.control().as_ref() {
            Some(control) => control.subscribe(),
            None => broadcast::channel(1).1,
        };
        let settings = channel.settings();
        let (start, live) =
            channel.follow(|retained| start(retained, last_event_id, settings.max_resume_bytes));
        let mut first_resync = None;
        let mut last_sent = last_event_id;
        let mut replay = VecDeque::new();
        let mut ahead = false;
        match start {
            Start::Replay(windows) => replay = windows,
            Start::Resync(latest, why) => {
                match why {
                    Resync::Ahead => self.stats.resyncs.inc(),
                    Resync::TooManyBytes => {
                        self.stats.resume_truncated.inc();
                        tracing::debug!(
                            cluster = self.id.cluster,
                            subscriber = self.id.subscriber,
                            stream = %channel.id,
                            last_event_id,
                            "a resume would replay more than {} bytes: resynced to the latest window",
                            settings.max_resume_bytes
                        );
                    }
                }
                last_sent = Some(latest.window);
                first_resync = Some(latest);
            }
            Start::AheadOfNothingYet => ahead = true,
        }
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.stats.streams_open[Transport::Sse as usize].fetch_add(1, Ordering::Relaxed);
        ClientStream {
            hub: Arc::clone(self),
            channel: Arc::clone(channel),
            client_queue: settings.client_queue,
            preface: true,
            first_resync,
            replay,
            live: BroadcastStream::new(live),
            control: BroadcastStream::new(control),
            last_sent,
            since_resync: usize::MAX,
            resyncs_in_a_row: 0,
            done: false,
            on_close: None,
            ahead,
            expires: None,
            transport: Transport::Sse,
        }
    }
}

/// How a stream resuming after `last_event_id` starts, given what is retained.
fn start(retained: &VecDeque<Frame>, last_event_id: Option<WindowId>, max_bytes: usize) -> Start {
    let Some(last) = last_event_id else {
        // A new client starts from the current state, not five minutes of history.
        return Start::Replay(retained.back().cloned().into_iter().collect());
    };
    let Some(latest) = retained.back() else {
        return Start::AheadOfNothingYet;
    };
    // An id past every window published here (another system's, or made up) would skip
    // every window to come: resync such a client to the latest instead.
    if last > latest.window {
        return Start::Resync(latest.clone(), Resync::Ahead);
    }
    match missed(retained, last, max_bytes) {
        Some(replay) => Start::Replay(replay),
        None => Start::Resync(latest.clone(), Resync::TooManyBytes),
    }
}

/// The retained windows after `last`, or `None` when their events add up to more than
/// `max_bytes`. Counted from the newest back, so an oversized resume stops early and copies
/// nothing.
fn missed(retained: &VecDeque<Frame>, last: WindowId, max_bytes: usize) -> Option<VecDeque<Frame>> {
    let mut bytes = 0usize;
    let mut count = 0;
    for frame in retained.iter().rev().take_while(|f| f.window > last) {
        bytes = bytes.saturating_add(frame.event.len());
        if bytes > max_bytes {
            return None;
        }
        count += 1;
    }
    Some(
        retained
            .iter()
            .skip(retained.len() - count)
            .cloned()
            .collect(),
    )
}

/// How a client's stream starts.
enum Start {
    /// With these windows, then live.
    Replay(VecDeque<Frame>),
    /// With this (the latest) window as a resync.
    Resync(Frame, Resync),
    /// The client's id is past every window, and nothing is retained yet: the first window it
    /// would skip is sent as a resync.
    AheadOfNothingYet,
}

/// Why a resuming client starts with a resync.
enum Resync {
    /// Its id is past every window published here.
    Ahead,
    /// The windows after its id are too many bytes to replay.
    TooManyBytes,
}

/// How a client receives its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket messages.
    WebSocket,
}

impl Transport {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WebSocket => "ws",
        }
    }
}

/// What a client's stream sends next, before it is encoded for its transport.
#[derive(Debug)]
pub enum Out {
    /// The start of the stream (SSE's `retry:` hint; nothing on a WebSocket).
    Preface,
    /// A window, led by the corrections made in its epoch.
    Window(Frame),
    /// The latest window, for a client that fell behind (or resumed past what is kept).
    Resync(Frame),
    /// Time for a keep-alive (an SSE comment, a WebSocket ping).
    KeepAlive,
}

impl Out {
    /// The SSE bytes.
    pub fn sse(&self) -> Bytes {
        match self {
            Out::Preface => preface(),
            Out::Window(frame) => frame.event.clone(),
            Out::Resync(frame) => frame.resync(),
            Out::KeepAlive => KEEP_ALIVE,
        }
    }
}

/// One client's stream of events: SSE bytes as a [`Stream`], or [`Out`]s for other transports.
pub struct ClientStream {
    hub: Arc<Hub>,
    channel: Arc<StreamChannel>,
    client_queue: usize,
    preface: bool,
    /// A resync to send before anything else (a resume past what is kept).
    first_resync: Option<Frame>,
    replay: VecDeque<Frame>,
    live: BroadcastStream<Frame>,
    control: BroadcastStream<()>,
    last_sent: Option<WindowId>,
    since_resync: usize,
    resyncs_in_a_row: u32,
    done: bool,
    on_close: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// The client's `Last-Event-ID` is past every window published so far: the first window it
    /// would skip is sent as a resync instead.
    ahead: bool,
    /// When the token it was opened with expires: the stream ends then.
    expires: Option<Pin<Box<tokio::time::Sleep>>>,
    transport: Transport,
}

impl ClientStream {
    /// Ends the stream at `deadline` (its token's expiry); the client reconnects with a
    /// fresh token and `Last-Event-ID`, and misses nothing.
    pub fn until(mut self, deadline: std::time::Instant) -> Self {
        self.expires = Some(Box::pin(tokio::time::sleep_until(deadline.into())));
        self
    }

    /// Calls `f` when the stream ends or the client goes away.
    pub fn on_close(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.on_close = Some(Box::new(f));
        self
    }

    /// Marks the stream as carried over `transport` (SSE unless told).
    pub fn over(mut self, transport: Transport) -> Self {
        let open = &self.hub.stats.streams_open;
        open[self.transport as usize].fetch_sub(1, Ordering::Relaxed);
        open[transport as usize].fetch_add(1, Ordering::Relaxed);
        self.transport = transport;
        self
    }

    /// The stream this client follows.
    pub fn channel(&self) -> &Arc<StreamChannel> {
        &self.channel
    }

    /// Whether the stream ended because its client kept falling behind.
    pub fn closed_as_slow(&self) -> bool {
        self.done && self.resyncs_in_a_row >= MAX_RESYNCS_IN_A_ROW
    }

    /// Whether the stream ended because its token expired.
    pub fn expired(&self) -> bool {
        self.done && self.expires.as_ref().is_some_and(|e| e.is_elapsed())
    }

    fn count_sent(&self) {
        match self.transport {
            Transport::Sse => self.hub.stats.events_sent.inc(),
            Transport::WebSocket => self.hub.stats.ws_events_sent.inc(),
        }
    }

    fn send(&mut self, frame: Frame) -> Out {
        self.last_sent = Some(frame.window);
        self.since_resync = self.since_resync.saturating_add(1);
        self.count_sent();
        Out::Window(frame)
    }

    /// The client fell behind: skip to the latest window, or close it when it keeps falling
    /// behind.
    fn resync(&mut self) -> Option<Out> {
        if self.since_resync < self.client_queue {
            self.resyncs_in_a_row += 1;
        } else {
            self.resyncs_in_a_row = 1;
        }
        if self.resyncs_in_a_row >= MAX_RESYNCS_IN_A_ROW {
            self.hub.stats.slow_clients_closed.inc();
            tracing::debug!(
                cluster = self.hub.id.cluster,
                subscriber = self.hub.id.subscriber,
                stream = %self.channel.id,
                "closing a client that fell behind {MAX_RESYNCS_IN_A_ROW} times in a row"
            );
            self.done = true;
            return None;
        }
        let (latest, live) = self.channel.catch_up()?;
        // The old follower still points at the windows it missed.
        self.live = BroadcastStream::new(live);
        self.hub.stats.resyncs.inc();
        self.last_sent = Some(latest.window);
        self.since_resync = 0;
        self.count_sent();
        Some(Out::Resync(latest))
    }

    /// The next thing to send; `None` once the stream has ended.
    pub fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<Option<Out>> {
        let this = self;
        if this.done || this.hub.is_retired() {
            return Poll::Ready(None);
        }
        if let Some(expires) = &mut this.expires {
            if expires.as_mut().poll(cx).is_ready() {
                this.done = true;
                this.hub.stats.streams_expired.inc();
                return Poll::Ready(None);
            }
        }
        if this.preface {
            this.preface = false;
            return Poll::Ready(Some(Out::Preface));
        }
        if let Some(latest) = this.first_resync.take() {
            this.count_sent();
            return Poll::Ready(Some(Out::Resync(latest)));
        }
        if let Some(frame) = this.replay.pop_front() {
            return Poll::Ready(Some(this.send(frame)));
        }
        loop {
            match Pin::new(&mut this.live).poll_next(cx) {
                // The stream's broadcast outlives its viewers: it ends only with the process.
                Poll::Pending | Poll::Ready(None) => {}
                Poll::Ready(Some(Ok(frame))) => {
                    if this.last_sent.is_some_and(|last| frame.window <= last) {
                        if this.ahead {
                            this.ahead = false;
                            this.last_sent = Some(frame.window);
                            this.hub.stats.resyncs.inc();
                            this.count_sent();
                            return Poll::Ready(Some(Out::Resync(frame)));
                        }
                        continue;
                    }
                    this.ahead = false;
                    return Poll::Ready(Some(this.send(frame)));
                }
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => {
                    match this.resync() {
                        Some(out) => return Poll::Ready(Some(out)),
                        None if this.done => return Poll::Ready(None),
                        None => continue,
                    }
                }
            }
            return match Pin::new(&mut this.control).poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    Poll::Ready(None)
                }
                // A keep-alive; one missed among many is no loss.
                Poll::Ready(Some(_)) => Poll::Ready(Some(Out::KeepAlive)),
            };
        }
    }

    /// The next thing to send; `None` once the stream has ended.
    pub async fn next_out(&mut self) -> Option<Out> {
        std::future::poll_fn(|cx| self.poll_out(cx)).await
    }
}

impl Stream for ClientStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_out(cx).map(|out| out.map(|out| Ok(out.sse())))
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.hub.connected.fetch_sub(1, Ordering::Relaxed);
        self.hub.stats.streams_open[self.transport as usize].fetch_sub(1, Ordering::Relaxed);
        self.channel.unfollow();
        if let Some(f) = self.on_close.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::delivery::streams::StreamStore;
    use dataflows::{StreamId, WindowSummary};

    /// A hub and the store its default stream comes from.
    struct Fixture {
        hub: Arc<Hub>,
        store: StreamStore,
        stats: Arc<Stats>,
    }

    impl Fixture {
        fn publish(&self, summary: WindowSummary) {
            self.store.publish(&summary);
        }
        fn subscribe(&self, last: Option<WindowId>) -> ClientStream {
            self.hub
                .subscribe(&self.store.channel(&StreamId::default()), last)
        }
        fn close(&self) {
            self.hub.close();
        }
        fn retire(&self) {
            self.hub.retire();
        }
        fn connected(&self) -> usize {
            self.hub.connected()
        }
    }

    fn hub(retention: usize, client_queue: usize) -> Fixture {
        hub_with(HubSettings {
            retention,
            client_queue,
            max_resume_bytes: usize::MAX,
            idle_windows: 30,
        })
    }

    fn hub_with(settings: HubSettings) -> Fixture {
        let id = HubId {
            cluster: 0,
            subscriber: 0,
        };
        let stats: Arc<Stats> = Arc::default();
        Fixture {
            hub: Arc::new(Hub::new(id, 0, Arc::clone(&stats))),
            store: StreamStore::new(settings),
            stats,
        }
    }

    fn frame(window: WindowId) -> WindowSummary {
        WindowSummary::new(
            StreamId::default(),
            window,
            &dataflows::Windowing::default(),
            vec![],
        )
    }

    /// The next event's (event type, id); `None` when the stream ended. Skips the preface.
    async fn next_event(stream: &mut ClientStream) -> Option<(String, WindowId)> {
        loop {
            let bytes = stream.next().await?.unwrap();
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            let (mut kind, mut id) = (None, None);
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.to_string());
                }
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().unwrap());
                }
            }
            if let (Some(kind), Some(id)) = (kind, id) {
                return Some((kind, id));
            }
        }
    }

    #[tokio::test]
    async fn replay_after_last_event_id_then_live_without_gap_or_duplicate() {
        let hub = hub(3, 8);
        for w in 1..=5 {
            hub.publish(frame(w));
        }
        hub.publish(frame(5)); // a repeat is ignored
        let mut stream = hub.subscribe(Some(3));
        hub.publish(frame(6));
        let mut got = vec![];
        for _ in 0..3 {
            got.push(next_event(&mut stream).await.unwrap());
        }
        let ids: Vec<_> = got.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, [4, 5, 6]);
        // Without an id: the latest window, then live.
        let mut fresh = hub.subscribe(None);
        assert_eq!(
            next_event(&mut fresh).await,
            Some(("window".to_string(), 6))
        );
        hub.publish(frame(7));
        assert_eq!(
            next_event(&mut fresh).await,
            Some(("window".to_string(), 7))
        );
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_resynced_to_the_latest_window() {
        let hub = hub(10, 2);
        let mut slow = hub.subscribe(None);
        for w in 1..=6 {
            hub.publish(frame(w));
        }
        assert_eq!(next_event(&mut slow).await, Some(("resync".to_string(), 6)));
        hub.publish(frame(7));
        assert_eq!(next_event(&mut slow).await, Some(("window".to_string(), 7)));
        assert_eq!(hub.stats.resyncs.get(), 1);
    }

    #[tokio::test]
    async fn an_id_past_every_window_is_resynced_to_the_latest() {
        let hub = hub(10, 4);
        for w in 1..=3 {
            hub.publish(frame(w));
        }
        let mut client = hub.subscribe(Some(4_294_967_296));
        assert_eq!(
            next_event(&mut client).await,
            Some(("resync".to_string(), 3))
        );
        hub.publish(frame(4));
        assert_eq!(
            next_event(&mut client).await,
            Some(("window".to_string(), 4))
        );
        // Before any window: the first one comes as a resync.
        let fresh = super::tests::hub(10, 4);
        let mut early = fresh.subscribe(Some(99));
        fresh.publish(frame(5));
        assert_eq!(
            next_event(&mut early).await,
            Some(("resync".to_string(), 5))
        );
        fresh.publish(frame(6));
        assert_eq!(
            next_event(&mut early).await,
            Some(("window".to_string(), 6))
        );
        // An id within the retained ones still resumes after it.
        let mut resuming = hub.subscribe(Some(2));
        assert_eq!(
            next_event(&mut resuming).await,
            Some(("window".to_string(), 3))
        );
    }

    #[tokio::test]
    async fn a_client_that_keeps_falling_behind_is_closed() {
        let hub = hub(10, 2);
        let mut slow = hub.subscribe(None);
        let mut next = 1;
        for round in 1..=MAX_RESYNCS_IN_A_ROW {
            for _ in 0..4 {
                hub.publish(frame(next));
                next += 1;
            }
            let event = next_event(&mut slow).await;
            if round < MAX_RESYNCS_IN_A_ROW {
                assert_eq!(event, Some(("resync".to_string(), next - 1)));
            } else {
                assert_eq!(event, None, "closed after {round} resyncs in a row");
            }
        }
        assert_eq!(hub.stats.slow_clients_closed.get(), 1);
        drop(slow);
        assert_eq!(hub.connected(), 0);
    }

    #[tokio::test]
    async fn close_ends_streams_after_what_was_sent() {
        let hub = hub(10, 8);
        let mut stream = hub.subscribe(None);
        hub.publish(frame(1));
        hub.close();
        assert_eq!(
            next_event(&mut stream).await,
            Some(("window".to_string(), 1))
        );
        assert_eq!(next_event(&mut stream).await, None);
    }

    #[tokio::test]
    async fn a_resume_past_the_byte_bound_is_resynced_to_the_latest() {
        // The bound holds exactly the last two windows.
        let two = Frame::window(&frame(4)).event.len() + Frame::window(&frame(5)).event.len();
        let hub = hub_with(HubSettings {
            retention: 10,
            client_queue: 8,
            max_resume_bytes: two,
            idle_windows: 30,
        });
        for w in 1..=5 {
            hub.publish(frame(w));
        }
        // Two missed windows fit, to the byte.
        let mut within = hub.subscribe(Some(3));
        assert_eq!(
            next_event(&mut within).await,
            Some(("window".to_string(), 4))
        );
        assert_eq!(
            next_event(&mut within).await,
            Some(("window".to_string(), 5))
        );
        // An id before every retained window asks for all five: the latest, as a resync.
        let mut early = hub.subscribe(Some(0));
        assert_eq!(
            next_event(&mut early).await,
            Some(("resync".to_string(), 5))
        );
        hub.publish(frame(6));
        assert_eq!(
            next_event(&mut early).await,
            Some(("window".to_string(), 6))
        );
        assert_eq!(
            next_event(&mut within).await,
            Some(("window".to_string(), 6))
        );
        assert_eq!(hub.stats.resume_truncated.get(), 1);
        assert_eq!(hub.stats.resyncs.get(), 0, "not a slow client");
    }

    #[tokio::test]
    async fn retiring_a_hub_ends_its_streams_now_and_later() {
        let hub = hub(10, 8);
        hub.publish(frame(1));
        let mut open = hub.subscribe(None);
        assert_eq!(next_event(&mut open).await, Some(("window".to_string(), 1)));
        let waiting = tokio::spawn(async move { next_event(&mut open).await });
        tokio::task::yield_now().await;
        hub.retire();
        assert_eq!(
            waiting.await.unwrap(),
            None,
            "a waiting stream is woken and ends"
        );
        // One that got the hub before it was removed, and subscribes after.
        let mut late = hub.subscribe(Some(0));
        assert!(late.next().await.is_none(), "not even the preface");
        drop(late);
        assert_eq!(hub.connected(), 0);
    }
}
