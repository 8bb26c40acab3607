//! SSE frames: each window is encoded once, and the bytes are shared by every connection.
//! WebSocket messages are made from the same frame ([`Frame::ws_messages`]), once per window
//! for all WebSocket clients (see [`super::streams::StreamChannel::ws_window`]).

use bytes::Bytes;
use dataflows::{WindowId, WindowSummary};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The `retry:` hint sent first on every stream: browsers reconnect after this many ms.
pub const RETRY_MS: u64 = 2000;

/// A keep-alive comment.
pub const KEEP_ALIVE: Bytes = Bytes::from_static(b":\n\n");

/// One window, ready to send. Retained windows are most of what a process keeps per stream, so
/// a frame is one allocation (the event) and the place of its JSON in it.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The window index (the SSE `id`).
    pub window: WindowId,
    /// The whole `event: window` SSE event.
    pub event: Bytes,
    /// Where the summary JSON (the SSE `data`) starts and ends in `event`.
    json_at: (u32, u32),
    /// Where the window's own event starts in `event` (after the corrections leading it).
    window_at: u32,
}

impl Frame {
    /// Encodes a window summary.
    pub fn window(summary: &WindowSummary) -> Frame {
        Frame::window_json(summary.window, &summary.to_json())
    }

    /// The frame of `window` whose summary is `json` (already encoded).
    pub fn window_json(window: WindowId, json: &str) -> Frame {
        Frame::window_after(window, json, &[])
    }

    /// The frame of `window`, led by `corrections` (whole `event: correction` events, see
    /// [`correction`]): corrections made in a window's epoch go out, and are replayed on
    /// resume, immediately before it.
    pub fn window_after(window: WindowId, json: &str, corrections: &[u8]) -> Frame {
        let event = encode(Some(window), "window", json.as_bytes(), corrections);
        let end = event.len() - 2;
        let start = end - json.len();
        Frame {
            window,
            event,
            json_at: (
                u32::try_from(start).unwrap_or(u32::MAX),
                u32::try_from(end).unwrap_or(u32::MAX),
            ),
            window_at: u32::try_from(corrections.len()).unwrap_or(u32::MAX),
        }
    }

    /// The summary JSON (the SSE `data`).
    pub fn json(&self) -> &[u8] {
        let (start, end) = (self.json_at.0 as usize, self.json_at.1 as usize);
        self.event.get(start..end).unwrap_or_default()
    }

    /// The same window as an `event: resync`, for a client that fell behind, led by the
    /// corrections made with it (those of the windows skipped are not sent again).
    pub fn resync(&self) -> Bytes {
        let corrections = self
            .event
            .get(..self.window_at as usize)
            .unwrap_or_default();
        encode(Some(self.window), "resync", self.json(), corrections)
    }
}

impl Frame {
    /// The frame as WebSocket text messages: each correction leading it, then the window (as
    /// a `resync` when `resync`), each `{"event": .., "id": "k"|null, "data": {..}}`.
    pub fn ws_messages(&self, resync: bool) -> Vec<Utf8Bytes> {
        let lead = self
            .event
            .get(..self.window_at as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        let mut messages: Vec<Utf8Bytes> = lead
            .split("\n\n")
            .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|json| ws_message("correction", None, json))
            .collect();
        let json = std::str::from_utf8(self.json()).unwrap_or("null");
        let kind = if resync { "resync" } else { "window" };
        messages.push(ws_message(kind, Some(self.window), json));
        messages
    }
}

/// One event as a WebSocket text message. The id is a string, as SSE's is.
fn ws_message(event: &str, id: Option<WindowId>, json: &str) -> Utf8Bytes {
    let head = match id {
        Some(id) => format!("{{\"event\":\"{event}\",\"id\":\"{id}\",\"data\":"),
        None => format!("{{\"event\":\"{event}\",\"id\":null,\"data\":"),
    };
    let mut message = String::with_capacity(head.len() + json.len() + 1);
    message.push_str(&head);
    message.push_str(json);
    message.push('}');
    Utf8Bytes::from(message)
}

/// A corrected window as an `event: correction`, with no `id`: its place is before the window
/// of the epoch that made it, whose id it shares on resume.
pub fn correction(json: &str) -> Bytes {
    encode(None, "correction", json.as_bytes(), &[])
}

/// The first bytes of every stream.
pub fn preface() -> Bytes {
    Bytes::from(format!("retry: {RETRY_MS}\n\n"))
}

fn encode(id: Option<WindowId>, event: &str, json: &[u8], before: &[u8]) -> Bytes {
    // The summary JSON is one line (serde_json escapes newlines in strings), so one `data:`
    // line carries it.
    let head = match id {
        Some(id) => format!("id: {id}\nevent: {event}\ndata: "),
        None => format!("event: {event}\ndata: "),
    };
    // Exactly the event's length: retained frames keep their allocation as it is.
    let mut out = Vec::with_capacity(before.len() + head.len() + json.len() + 2);
    out.extend_from_slice(before);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflows::{StreamId, Windowing};

    #[test]
    fn a_window_is_one_sse_event_with_its_index_as_id() {
        let summary = WindowSummary::new(StreamId::default(), 7, &Windowing::default(), vec![]);
        let frame = Frame::window(&summary);
        let text = std::str::from_utf8(&frame.event).unwrap();
        assert_eq!(frame.json(), summary.to_json().as_bytes());
        assert_eq!(
            text,
            format!("id: 7\nevent: window\ndata: {}\n\n", summary.to_json())
        );
        assert!(std::str::from_utf8(&frame.resync())
            .unwrap()
            .starts_with("id: 7\nevent: resync\ndata: {"));
    }

    #[test]
    fn corrections_lead_the_window_of_their_epoch_without_an_id() {
        let mut fixed = WindowSummary::new(StreamId::default(), 5, &Windowing::default(), vec![]);
        fixed.revision = 1;
        let window = WindowSummary::new(StreamId::default(), 7, &Windowing::default(), vec![]);
        let lead = correction(&fixed.to_json());
        let frame = Frame::window_after(7, &window.to_json(), &lead);
        assert_eq!(
            std::str::from_utf8(&frame.event).unwrap(),
            format!(
                "event: correction\ndata: {}\n\nid: 7\nevent: window\ndata: {}\n\n",
                fixed.to_json(),
                window.to_json()
            )
        );
        assert_eq!(frame.json(), window.to_json().as_bytes());
        let ws: Vec<serde_json::Value> = frame
            .ws_messages(false)
            .iter()
            .map(|m| serde_json::from_str(m.as_str()).unwrap())
            .collect();
        assert_eq!(
            ws,
            [
                serde_json::json!({"event": "correction", "id": null, "data": serde_json::from_str::<serde_json::Value>(&fixed.to_json()).unwrap()}),
                serde_json::json!({"event": "window", "id": "7", "data": serde_json::from_str::<serde_json::Value>(&window.to_json()).unwrap()}),
            ]
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(frame.ws_messages(true)[1].as_str()).unwrap()
                ["event"],
            "resync"
        );
        assert_eq!(
            std::str::from_utf8(&frame.resync()).unwrap(),
            format!(
                "event: correction\ndata: {}\n\nid: 7\nevent: resync\ndata: {}\n\n",
                fixed.to_json(),
                window.to_json()
            ),
            "a resync keeps the corrections made with its window"
        );
    }
}
