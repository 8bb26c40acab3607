//! The tests' WebSocket client (`tokio-tungstenite`): follows a subscriber's WebSocket, checks
//! each message against the contract (`{"event", "id", "data"}`, the id the window index as a
//! string, null for a correction) and records it in a [`Follower`], like an SSE stream.

use dataflows::{WindowId, WindowSummary};
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::sse::{End, Event};
use super::Follower;

/// The `ws://` URL of an `http://` events URL, resuming after `last_event_id` when given.
pub fn ws_url(events_url: &str, last_event_id: Option<WindowId>) -> String {
    let last = last_event_id.map(|id| id.to_string());
    emostream::delivery::events::ws_url(events_url, last.as_deref())
}

/// Opens the WebSocket at `url` (`ws://...`) with `headers` and follows it; the upgrade must
/// succeed.
pub async fn open(url: &str, headers: &[(&str, &str)]) -> Follower {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("{url}: the upgrade failed: {e}"));
    assert_eq!(response.status(), 101, "{url}");
    let events = socket.filter_map(|message| async move {
        match message {
            Ok(Message::Text(text)) => Some(checked(text.as_str())),
            Ok(Message::Close(frame)) => Some(Err(match frame {
                Some(f) => End::ClosedWith(f.code.into(), f.reason.to_string()),
                None => End::Closed,
            })),
            Ok(Message::Binary(_)) => Some(Err(End::Broken("a binary message".into()))),
            Ok(_) => None,
            Err(e) => Some(Err(End::Failed(e.to_string()))),
        }
    });
    Follower::follow(url, HeaderMap::new(), events)
}

fn checked(text: &str) -> Result<Event, End> {
    let broken = |why: String| End::Broken(format!("{why}: {text}"));
    let message: serde_json::Value =
        serde_json::from_str(text).map_err(|e| broken(e.to_string()))?;
    let kind = message["event"]
        .as_str()
        .ok_or_else(|| broken("no event".into()))?
        .to_owned();
    let summary: WindowSummary = serde_json::from_value(message["data"].clone())
        .map_err(|e| broken(format!("data: {e}")))?;
    match (kind.as_str(), &message["id"]) {
        ("correction", serde_json::Value::Null) => {}
        ("window" | "resync", serde_json::Value::String(id))
            if id.parse::<WindowId>().ok() == Some(summary.window) => {}
        _ => return Err(broken("the id is not the window index as a string".into())),
    }
    Ok(Event {
        kind,
        id: summary.window,
        summary,
    })
}
