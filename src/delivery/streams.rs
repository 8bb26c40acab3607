//! The streams this process delivers: for each, the windows retained for reconnects and the
//! live broadcast its viewers follow, kept once per process whichever hubs its viewers use.
//!
//! One worker of the process publishes every window here ([`StreamStore::publish`]); a hub's
//! event stream for stream X follows X's [`StreamChannel`]. A stream without viewers costs its
//! retained windows and nothing per window beyond the push: its broadcast exists only while
//! someone follows it, so delivery grows with viewers, not with streams × hubs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dataflows::{StreamId, WindowId, WindowSummary};
use serde::Serialize;
use tokio::sync::broadcast;

use super::frame::Frame;
use super::hub::HubSettings;

/// One stream's retained windows and live broadcast.
pub struct StreamChannel {
    /// The stream.
    pub id: StreamId,
    settings: HubSettings,
    state: Mutex<ChannelState>,
    viewers: AtomicUsize,
    /// The newest window's WebSocket messages, made by its first WebSocket viewer for all.
    ws_latest: Mutex<Option<(WindowId, WsMessages)>>,
}

/// A window's WebSocket messages (its leading corrections, then the window), shared.
pub type WsMessages = Arc<[tokio_tungstenite::tungstenite::Utf8Bytes]>;

struct ChannelState {
    retained: VecDeque<Frame>,
    /// Exists while the stream has viewers.
    live: Option<broadcast::Sender<Frame>>,
    /// The last window in which the stream had reactions.
    last_reacted: Option<WindowId>,
    /// Reactions in the newest retained window.
    last_total: u64,
    /// Corrections waiting for the stream's next window, which they lead.
    corrections: Vec<u8>,
}

impl StreamChannel {
    fn new(id: StreamId, settings: HubSettings) -> StreamChannel {
        StreamChannel {
            id,
            settings,
            state: Mutex::new(ChannelState {
                retained: VecDeque::new(),
                live: None,
                last_reacted: None,
                last_total: 0,
                corrections: Vec::new(),
            }),
            viewers: AtomicUsize::new(0),
            ws_latest: Mutex::new(None),
        }
    }

    /// `frame`'s WebSocket messages: made once for the newest window, whose live viewers all
    /// ask for it; an older one (a resume) is made for the one viewer that asks.
    pub fn ws_window(&self, frame: &Frame) -> WsMessages {
        let mut latest = self.ws_latest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((window, messages)) = latest.as_ref() {
            if *window == frame.window {
                return Arc::clone(messages);
            }
        }
        let messages: WsMessages = frame.ws_messages(false).into();
        if latest
            .as_ref()
            .is_none_or(|(window, _)| frame.window > *window)
        {
            *latest = Some((frame.window, Arc::clone(&messages)));
        }
        messages
    }

    fn state(&self) -> MutexGuard<'_, ChannelState> {
        // Every change keeps the state consistent at each panic point (push, pop, send).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream's settings (retention, queue, resume bound).
    pub fn settings(&self) -> HubSettings {
        self.settings
    }

    /// Event streams following this stream in this process now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Holds a correction (an `event: correction`) of `window`, with `total` reactions now, for
    /// the stream's next window. A correcting reaction counts as a reaction in its window.
    fn correct(&self, event: &[u8], window: WindowId, total: u64) {
        let mut state = self.state();
        state.corrections.extend_from_slice(event);
        if total > 0 && state.last_reacted.is_none_or(|last| last < window) {
            state.last_reacted = Some(window);
        }
    }

    /// Retains a window (led by the corrections held for it) and sends it to every viewer.
    /// Windows come in order; one already retained is ignored.
    fn publish(&self, window: WindowId, json: &str, total: u64) {
        let mut state = self.state();
        if state
            .retained
            .back()
            .is_some_and(|last| last.window >= window)
        {
            return;
        }
        let corrections = std::mem::take(&mut state.corrections);
        let frame = Frame::window_after(window, json, &corrections);
        if total > 0 {
            state.last_reacted = Some(frame.window);
        }
        state.last_total = total;
        let retention = self.settings.retention.max(1);
        if state.retained.capacity() == 0 {
            // Exactly the retention: a ring grown by doubling would hold up to twice the slots.
            state.retained.reserve_exact(retention);
        }
        if state.retained.len() >= retention {
            state.retained.pop_front();
        }
        if let Some(live) = &state.live {
            // An error only means every viewer left since the last sweep.
            let _ = live.send(frame.clone());
        }
        state.retained.push_back(frame);
    }

    /// A new viewer: what is retained now and the live broadcast after it, under one lock so a
    /// window is in exactly one of the two.
    pub(super) fn follow<T>(
        &self,
        start: impl FnOnce(&VecDeque<Frame>) -> T,
    ) -> (T, broadcast::Receiver<Frame>) {
        let mut state = self.state();
        let queue = self.settings.client_queue.max(1);
        let live = state
            .live
            .get_or_insert_with(|| broadcast::channel(queue).0)
            .subscribe();
        self.viewers.fetch_add(1, Ordering::Relaxed);
        (start(&state.retained), live)
    }

    /// A viewer left.
    pub(super) fn unfollow(&self) {
        self.viewers.fetch_sub(1, Ordering::Relaxed);
    }

    /// The latest window with a fresh follower of the live broadcast, for a viewer that fell
    /// behind: under one lock, so the window after the latest is the follower's first.
    pub(super) fn catch_up(&self) -> Option<(Frame, broadcast::Receiver<Frame>)> {
        let mut state = self.state();
        let latest = state.retained.back()?.clone();
        let queue = self.settings.client_queue.max(1);
        let live = state
            .live
            .get_or_insert_with(|| broadcast::channel(queue).0)
            .subscribe();
        Some((latest, live))
    }

    /// The newest retained window.
    pub fn latest(&self) -> Option<Frame> {
        self.state().retained.back().cloned()
    }
}

/// A stream as `GET /streams` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StreamInfo {
    /// The stream.
    pub stream_id: String,
    /// Its latest window.
    pub last_window: WindowId,
    /// Reactions in its latest window.
    pub last_total: u64,
    /// Event streams following it.
    pub viewers: usize,
}

/// Every stream this process delivers.
pub struct StreamStore {
    settings: HubSettings,
    inner: Mutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    streams: HashMap<StreamId, Arc<StreamChannel>>,
    /// The latest window published for any stream.
    latest: Option<WindowId>,
}

impl StreamStore {
    /// An empty store; `settings.idle_windows` decides which streams are active.
    pub fn new(settings: HubSettings) -> StreamStore {
        StreamStore {
            settings,
            inner: Mutex::new(StoreState::default()),
        }
    }

    fn inner(&self) -> MutexGuard<'_, StoreState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Retains `summary` for its stream and sends it to the stream's viewers. Called by one
    /// thread, in window order.
    pub fn publish(&self, summary: &WindowSummary) {
        self.publish_json(summary, &summary.to_json());
    }

    /// A correction of one of `summary`'s stream's windows, encoded as `json`: it goes out, and
    /// is retained, with the stream's next window (the window of the epoch that made it).
    pub fn publish_correction(&self, summary: &WindowSummary, json: &str) {
        self.channel(&summary.stream_id).correct(
            &super::frame::correction(json),
            summary.window,
            summary.total,
        );
    }

    /// [`StreamStore::publish`] for a summary already encoded as `json`.
    pub fn publish_json(&self, summary: &WindowSummary, json: &str) {
        let channel = {
            let mut inner = self.inner();
            if inner.latest.is_none_or(|l| summary.window > l) {
                inner.latest = Some(summary.window);
                self.sweep(&mut inner, summary.window);
            }
            match inner.streams.get(summary.stream_id.as_str()) {
                Some(channel) => Arc::clone(channel),
                None => {
                    let channel =
                        Arc::new(StreamChannel::new(summary.stream_id.clone(), self.settings));
                    inner
                        .streams
                        .insert(summary.stream_id.clone(), Arc::clone(&channel));
                    channel
                }
            }
        };
        // Framed once, outside the store's lock, and shared by every viewer.
        channel.publish(summary.window, json, summary.total);
    }

    /// The channel of `id`, made (empty) for a viewer that comes before the stream's first
    /// window.
    pub fn channel(&self, id: &StreamId) -> Arc<StreamChannel> {
        let mut inner = self.inner();
        if let Some(channel) = inner.streams.get(id.as_str()) {
            return Arc::clone(channel);
        }
        let channel = Arc::new(StreamChannel::new(id.clone(), self.settings));
        inner.streams.insert(id.clone(), Arc::clone(&channel));
        channel
    }

    /// Frees what no one needs any more: a stream's broadcast once it has no viewers, and the
    /// whole stream once it has no viewers and nothing retained within the retention.
    fn sweep(&self, inner: &mut StoreState, latest: WindowId) {
        let retention = self.settings.retention.max(1) as u64;
        inner.streams.retain(|_, channel| {
            if channel.viewers() > 0 {
                return true;
            }
            let mut state = channel.state();
            if state.live.as_ref().is_some_and(|l| l.receiver_count() == 0) {
                state.live = None;
            }
            // Corrections waiting for the stream's next window (coming in this epoch).
            !state.corrections.is_empty()
                || state
                    .retained
                    .back()
                    .is_some_and(|last| last.window.saturating_add(retention) > latest)
        });
    }

    /// Whether a stream that last reacted in `last_reacted` still gets windows at `latest`.
    /// The default stream never idles.
    fn is_active(
        &self,
        id: &StreamId,
        last_reacted: Option<WindowId>,
        latest: Option<WindowId>,
    ) -> bool {
        if id.as_str() == StreamId::DEFAULT {
            return latest.is_some();
        }
        match (last_reacted, latest) {
            (Some(reacted), Some(latest)) => {
                reacted.saturating_add(self.settings.idle_windows) >= latest
            }
            _ => false,
        }
    }

    /// The active streams with their latest window and the viewers here, unordered.
    pub fn active(&self) -> Vec<StreamInfo> {
        let (channels, latest) = {
            let inner = self.inner();
            let channels: Vec<_> = inner.streams.values().cloned().collect();
            (channels, inner.latest)
        };
        channels
            .iter()
            .filter_map(|channel| self.info(channel, latest))
            .collect()
    }

    /// Stream `id`, if it is active: one lookup, not the whole list.
    pub fn active_one(&self, id: &StreamId) -> Option<StreamInfo> {
        let (channel, latest) = {
            let inner = self.inner();
            (inner.streams.get(id).cloned()?, inner.latest)
        };
        self.info(&channel, latest)
    }

    fn info(&self, channel: &StreamChannel, latest: Option<WindowId>) -> Option<StreamInfo> {
        let state = channel.state();
        if !self.is_active(&channel.id, state.last_reacted, latest) {
            return None;
        }
        let last = state.retained.back()?;
        Some(StreamInfo {
            stream_id: channel.id.as_str().to_owned(),
            last_window: last.window,
            last_total: state.last_total,
            viewers: channel.viewers(),
        })
    }

    /// Active streams now.
    pub fn active_count(&self) -> usize {
        let inner = self.inner();
        let latest = inner.latest;
        inner
            .streams
            .values()
            .filter(|c| self.is_active(&c.id, c.state().last_reacted, latest))
            .count()
    }

    /// Viewers here of every stream that has some.
    pub fn viewers(&self) -> Vec<(String, usize)> {
        self.inner()
            .streams
            .values()
            .filter(|c| c.viewers() > 0)
            .map(|c| (c.id.as_str().to_owned(), c.viewers()))
            .collect()
    }

    /// Streams held (active or not, with viewers or retained windows).
    pub fn len(&self) -> usize {
        self.inner().streams.len()
    }

    /// Whether no stream is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflows::{Emoji, EmojiCount, Windowing};

    fn settings() -> HubSettings {
        HubSettings {
            retention: 4,
            client_queue: 4,
            max_resume_bytes: usize::MAX,
            idle_windows: 2,
        }
    }

    fn summary(stream: &str, window: WindowId, n: u64) -> WindowSummary {
        let emojis = if n == 0 {
            vec![]
        } else {
            vec![EmojiCount {
                emoji: Emoji::parse("🔥").unwrap(),
                count: n,
                scaled: 1,
            }]
        };
        WindowSummary::new(
            StreamId::parse(stream).unwrap(),
            window,
            &Windowing::default(),
            emojis,
        )
    }

    #[test]
    fn a_correction_leads_its_stream_s_next_window_even_for_a_new_stream() {
        let store = StreamStore::new(settings());
        store.publish(&summary("a", 4, 1));
        // "late" had no reaction of its own in window 3: its first emission is a correction
        // made in epoch 5, then its window 5; "a"'s window 5 comes first and moves the store on.
        let mut fixed = summary("late", 3, 2);
        fixed.revision = 0;
        store.publish_correction(&fixed, &fixed.to_json());
        store.publish(&summary("a", 5, 1));
        store.publish(&summary("late", 5, 0));
        let late = store.channel(&StreamId::parse("late").unwrap());
        let frame = late.latest().unwrap();
        let text = std::str::from_utf8(&frame.event).unwrap();
        assert!(
            text.starts_with(&format!(
                "event: correction\ndata: {}\n\nid: 5\n",
                fixed.to_json()
            )),
            "{text}"
        );
        // The late reaction counts for the idle rule: the stream is active and listed.
        assert!(store.active().iter().any(|s| s.stream_id == "late"));
    }

    #[test]
    fn streams_are_kept_apart_and_listed_while_active() {
        let store = StreamStore::new(settings());
        store.publish(&summary("a", 1, 5));
        store.publish(&summary("b", 1, 7));
        store.publish(&summary("a", 2, 0));
        store.publish(&summary("b", 2, 3));
        let a = store.channel(&StreamId::parse("a").unwrap());
        assert_eq!(a.latest().unwrap().window, 2);
        let mut active = store.active();
        active.sort_by(|x, y| x.stream_id.cmp(&y.stream_id));
        assert_eq!(
            active,
            [
                StreamInfo {
                    stream_id: "a".into(),
                    last_window: 2,
                    last_total: 0,
                    viewers: 0
                },
                StreamInfo {
                    stream_id: "b".into(),
                    last_window: 2,
                    last_total: 3,
                    viewers: 0
                },
            ]
        );
        // "a" last reacted in 1: with an idle span of 2 it is active through window 3.
        store.publish(&summary("b", 3, 1));
        assert_eq!(store.active_count(), 2);
        store.publish(&summary("b", 4, 1));
        assert_eq!(store.active_count(), 1);
        assert_eq!(store.active()[0].stream_id, "b");
    }

    #[test]
    fn a_stream_without_viewers_is_freed_after_its_retention() {
        let store = StreamStore::new(settings());
        store.publish(&summary("gone", 1, 1));
        for w in 2..=4 {
            store.publish(&summary("stays", w, 1));
        }
        assert_eq!(store.len(), 2, "window 1 is still within a retention of 4");
        store.publish(&summary("stays", 5, 1));
        assert_eq!(store.len(), 1);
        // A viewer keeps a stream, even one that never had a window.
        let waiting = store.channel(&StreamId::parse("later").unwrap());
        let _ = waiting.follow(|_| ());
        store.publish(&summary("stays", 7, 1));
        assert_eq!(store.len(), 2);
        waiting.unfollow();
        store.publish(&summary("stays", 8, 1));
        assert_eq!(store.len(), 1);
        assert_eq!(store.viewers(), Vec::<(String, usize)>::new());
    }

    #[test]
    fn retention_is_per_stream() {
        let store = StreamStore::new(settings());
        for w in 1..=10 {
            store.publish(&summary("a", w, 1));
        }
        let a = store.channel(&StreamId::parse("a").unwrap());
        let (windows, _live) = a.follow(|r| r.iter().map(|f| f.window).collect::<Vec<_>>());
        assert_eq!(windows, [7, 8, 9, 10]);
        assert_eq!(store.viewers(), [("a".to_string(), 1)]);
    }
}
