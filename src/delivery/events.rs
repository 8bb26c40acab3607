//! Opening a subscriber's event stream: the one place that reads an events request (its hub,
//! `client_id`, `Last-Event-ID`) and decides what it gets, and the one response head an event
//! stream starts with. The socket path ([`super::lean`]) and the warp route
//! ([`super::routes`]) both use them.

use std::sync::Arc;

use dataflows::{HubId, StreamId, WindowId};
use warp::http::StatusCode;

use super::hub::{ClientStream, Hub};
use super::registry::Registry;
use crate::http_error::ApiError;

/// The headers of an event stream's `200`, in the order they are written. Any origin may read
/// the stream: with several processes a page served by one follows events served by another.
/// Proxies such as nginx would otherwise buffer the stream (`x-accel-buffering`).
pub const SSE_HEADERS: [(&str, &str); 4] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("access-control-allow-origin", "*"),
    ("x-accel-buffering", "no"),
];

/// The path of a subscriber's event stream.
pub fn events_path(hub: HubId) -> String {
    format!(
        "/clusters/{}/subscribers/{}/events",
        hub.cluster, hub.subscriber
    )
}

/// The path of a subscriber's WebSocket.
pub fn ws_path(hub: HubId) -> String {
    format!(
        "/clusters/{}/subscribers/{}/ws",
        hub.cluster, hub.subscriber
    )
}

/// The WebSocket URL of an `events_url` (`http(s)://../events?q` becomes `ws(s)://../ws?q`),
/// resuming after `last_event_id` when given.
pub fn ws_url(events_url: &str, last_event_id: Option<&str>) -> String {
    let (path, query) = match events_url.split_once('?') {
        Some((path, query)) => (path, Some(query).filter(|q| !q.is_empty())),
        None => (events_url, None),
    };
    let path = path
        .strip_suffix("/events")
        .map_or_else(|| path.to_owned(), |p| format!("{p}/ws"));
    let path = match (path.strip_prefix("http://"), path.strip_prefix("https://")) {
        (Some(rest), _) => format!("ws://{rest}"),
        (_, Some(rest)) => format!("wss://{rest}"),
        _ => path,
    };
    let resume = last_event_id.map(|id| format!("last_event_id={id}"));
    match (query, resume) {
        (None, None) => path,
        (Some(q), None) => format!("{path}?{q}"),
        (None, Some(r)) => format!("{path}?{r}"),
        (Some(q), Some(r)) => format!("{path}?{q}&{r}"),
    }
}

/// A request for a subscriber's event stream.
#[derive(Clone, Copy, Debug)]
pub struct EventsRequest<'a> {
    /// The subscriber.
    pub hub: HubId,
    /// The query string as sent, without `?` (`stream_id` names the stream, `client_id` ties
    /// the stream to a registration).
    pub query: Option<&'a str>,
    /// The `Last-Event-ID` header, if any (a WebSocket takes `last_event_id` in the query).
    pub last_event_id: Option<&'a str>,
    /// The WebSocket door (`.../ws`) rather than SSE (`.../events`).
    pub websocket: bool,
}

impl<'a> EventsRequest<'a> {
    /// A `GET /clusters/{c}/subscribers/{s}/events[?query]` or `.../ws[?query]`; `None` for
    /// any other request.
    pub fn parse(method: &str, target: &'a str, last_event_id: Option<&'a str>) -> Option<Self> {
        if method != "GET" {
            return None;
        }
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let rest = path.strip_prefix("/clusters/")?;
        let (cluster, rest) = rest.split_once("/subscribers/")?;
        let (subscriber, websocket) = match rest.strip_suffix("/events") {
            Some(subscriber) => (subscriber, false),
            None => (rest.strip_suffix("/ws")?, true),
        };
        Some(EventsRequest {
            hub: HubId {
                cluster: cluster.parse().ok()?,
                subscriber: subscriber.parse().ok()?,
            },
            query,
            last_event_id,
            websocket,
        })
    }

    /// The `client_id` query parameter, decoded.
    fn client_id(&self) -> Option<String> {
        self.param("client_id")
    }

    /// A query parameter, decoded.
    fn param(&self, name: &str) -> Option<String> {
        self.query?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| form_decode(value))
        })
    }

    /// The `stream_id` query parameter: the stream to follow (the default stream when absent).
    pub fn stream_id(&self) -> Result<StreamId, ApiError> {
        match self.param("stream_id") {
            None => Ok(StreamId::default()),
            Some(id) => StreamId::parse(&id).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_stream_id",
                    format!("stream_id {e}"),
                )
            }),
        }
    }
}

/// What an events request gets.
pub enum Opening {
    /// The stream, served by this process.
    Here(ClientStream),
    /// A redirect (`307`) to this location on the process that serves the hub.
    Elsewhere(String),
    /// An error answer: an unknown subscriber, a bad `Last-Event-ID`.
    Refused(ApiError),
}

/// Where a request for a hub is served.
pub enum Location {
    /// By this process.
    Here(Arc<Hub>),
    /// By another process, at this location (with the request's path and query).
    Elsewhere(String),
}

/// Where `request`'s hub is served, or why it cannot be: an unknown subscriber.
pub fn locate(registry: &Registry, request: &EventsRequest<'_>) -> Result<Location, ApiError> {
    let id = request.hub;
    let Some(hub) = registry.hub(id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_subscriber",
            format!(
                "there is no subscriber {} in cluster {}; GET /clusters lists them",
                id.subscriber, id.cluster
            ),
        ));
    };
    let serving = registry.serving(hub.index);
    if !serving.here {
        if let Some(url) = serving.url {
            let query = match request.query {
                Some(q) if !q.is_empty() => format!("?{q}"),
                _ => String::new(),
            };
            let path = if request.websocket {
                ws_path(id)
            } else {
                events_path(id)
            };
            return Ok(Location::Elsewhere(format!("{url}{path}{query}")));
        }
    }
    Ok(Location::Here(hub))
}

/// Decides what `request` gets. A stream served here is subscribed, and a registered client's
/// stream keeps its place until it closes.
pub fn open(registry: &Arc<Registry>, request: &EventsRequest<'_>) -> Opening {
    let hub = match locate(registry, request) {
        Ok(Location::Here(hub)) => hub,
        Ok(Location::Elsewhere(location)) => return Opening::Elsewhere(location),
        Err(e) => return Opening::Refused(e),
    };
    let (last, stream_id) = match resume_and_stream(request) {
        Ok(parsed) => parsed,
        Err(e) => return Opening::Refused(e),
    };
    let channel = registry.streams().channel(&stream_id);
    let mut stream = hub.subscribe(&channel, last);
    if request.websocket {
        stream = stream.over(super::hub::Transport::WebSocket);
    }
    if let Some(client_id) = request.client_id().filter(|c| registry.attach(c)) {
        let registry = Arc::clone(registry);
        stream = stream.on_close(move || registry.detach(&client_id));
    }
    Opening::Here(stream)
}

/// Where `request` resumes (the last window its client has) and the stream it follows, or why
/// either is invalid.
pub fn resume_and_stream(
    request: &EventsRequest<'_>,
) -> Result<(Option<WindowId>, StreamId), ApiError> {
    let last = if request.websocket {
        parse_last_event_id("last_event_id", request.param("last_event_id").as_deref())
    } else {
        parse_last_event_id("Last-Event-ID", request.last_event_id)
    }?;
    Ok((last, request.stream_id()?))
}

fn parse_last_event_id(name: &str, value: Option<&str>) -> Result<Option<WindowId>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_last_event_id",
                format!("{name} must be a window index (a non-negative integer), not {v:?}"),
            )
        }),
    }
}

/// Decodes a form-encoded query value (`+` is a space, `%XX` a byte), as warp's query does.
fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {

    use dataflows::Topology;

    use super::*;
    use crate::delivery::{Serving, SharedTree};

    /// Two processes; this one, process 1, serves the odd hubs.
    struct Odd;

    impl SharedTree for Odd {
        fn serving(&self, hub: usize) -> Serving {
            Serving {
                process: hub % 2,
                here: hub % 2 == 1,
                url: Some(format!("http://p{}", hub % 2)),
            }
        }
        fn holds_registrations(&self) -> bool {
            false
        }
        fn connected_elsewhere(&self, _: usize) -> usize {
            0
        }
        fn attached(&self, _: &str) {}
        fn detached(&self, _: &str) {}
    }

    fn opening(target: &str, last_event_id: Option<&str>) -> Opening {
        let registry = Arc::new(Registry::for_tests(
            Topology {
                clusters: 1,
                subscribers: 2,
            },
            10,
        ));
        registry.share(Arc::new(Odd));
        let request = EventsRequest::parse("GET", target, last_event_id).expect("events");
        open(&registry, &request)
    }

    #[test]
    fn a_request_is_served_here_redirected_or_refused() {
        let here = opening("/clusters/0/subscribers/1/events", Some("4"));
        assert!(matches!(here, Opening::Here(_)));
        match opening("/clusters/0/subscribers/0/events?client_id=x", Some("soon")) {
            Opening::Elsewhere(location) => assert_eq!(
                location,
                "http://p0/clusters/0/subscribers/0/events?client_id=x"
            ),
            _ => panic!("hub 0 is served by process 0"),
        }
        for (target, last, code) in [
            (
                "/clusters/0/subscribers/2/events",
                None,
                "unknown_subscriber",
            ),
            (
                "/clusters/0/subscribers/1/events",
                Some("soon"),
                "invalid_last_event_id",
            ),
        ] {
            match opening(target, last) {
                Opening::Refused(e) => assert_eq!(e.code, code),
                _ => panic!("{target} is refused"),
            }
        }
    }

    #[test]
    fn parses_only_a_get_of_an_events_path() {
        let r = EventsRequest::parse("GET", "/clusters/1/subscribers/2/events?client_id=x", None)
            .expect("an events request");
        assert_eq!(
            r.hub,
            HubId {
                cluster: 1,
                subscriber: 2
            }
        );
        assert_eq!(r.client_id().as_deref(), Some("x"));
        for (method, target) in [
            ("HEAD", "/clusters/1/subscribers/2/events"),
            ("GET", "/clusters/1/subscribers/2"),
            ("GET", "/clusters/1/subscribers/2/wss"),
            ("GET", "/clusters/x/subscribers/2/events"),
            ("GET", "/clusters"),
        ] {
            assert!(
                EventsRequest::parse(method, target, None).is_none(),
                "{target}"
            );
        }
    }

    #[test]
    fn the_websocket_url_of_an_events_url() {
        assert_eq!(
            ws_url(
                "http://h:1/events/clusters/0/subscribers/1/events?stream_id=a&client_id=x",
                Some("7")
            ),
            "ws://h:1/events/clusters/0/subscribers/1/ws?stream_id=a&client_id=x&last_event_id=7"
        );
        assert_eq!(
            ws_url("https://live.example/clusters/0/subscribers/0/events", None),
            "wss://live.example/clusters/0/subscribers/0/ws"
        );
        assert_eq!(
            ws_url("http://h/clusters/0/subscribers/0/events?", Some("3")),
            "ws://h/clusters/0/subscribers/0/ws?last_event_id=3"
        );
    }

    #[test]
    fn decodes_the_client_id_as_a_form_value() {
        assert_eq!(form_decode("a%2Bb+c%zz"), "a+b c%zz");
        let r = EventsRequest::parse(
            "GET",
            "/clusters/0/subscribers/0/events?x=1&client_id=%61b",
            None,
        )
        .expect("an events request");
        assert_eq!(r.client_id().as_deref(), Some("ab"));
    }
}
