//! SSE frames: each window is encoded once, and the bytes are shared by every connection.

use bytes::Bytes;
use dataflows::{WindowId, WindowSummary};

/// The `retry:` hint sent first on every stream: browsers reconnect after this many ms.
pub const RETRY_MS: u64 = 2000;

/// A keep-alive comment.
pub const KEEP_ALIVE: Bytes = Bytes::from_static(b":\n\n");

/// One window, ready to send.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The window index (the SSE `id`).
    pub window: WindowId,
    /// The summary JSON (the SSE `data`): a slice of `event`, so a retained window is one
    /// allocation.
    pub json: Bytes,
    /// The whole `event: window` SSE event.
    pub event: Bytes,
}

impl Frame {
    /// Encodes a window summary.
    pub fn window(summary: &WindowSummary) -> Frame {
        let json = summary.to_json();
        let event = encode(summary.window, "window", json.as_bytes());
        let head = event.len() - json.len() - 2;
        Frame {
            window: summary.window,
            json: event.slice(head..head + json.len()),
            event,
        }
    }

    /// The same window as an `event: resync`, for a client that fell behind.
    pub fn resync(&self) -> Bytes {
        encode(self.window, "resync", &self.json)
    }
}

/// The first bytes of every stream.
pub fn preface() -> Bytes {
    Bytes::from(format!("retry: {RETRY_MS}\n\n"))
}

fn encode(id: WindowId, event: &str, json: &[u8]) -> Bytes {
    // The summary JSON is one line (serde_json escapes newlines in strings), so one `data:`
    // line carries it.
    let mut out = Vec::with_capacity(json.len() + 48);
    out.extend_from_slice(format!("id: {id}\nevent: {event}\ndata: ").as_bytes());
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
        assert_eq!(&frame.json[..], summary.to_json().as_bytes());
        assert_eq!(
            text,
            format!("id: 7\nevent: window\ndata: {}\n\n", summary.to_json())
        );
        assert!(std::str::from_utf8(&frame.resync())
            .unwrap()
            .starts_with("id: 7\nevent: resync\ndata: {"));
    }
}
