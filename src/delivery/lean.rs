//! Event streams served straight on the socket, without hyper.
//!
//! A hyper connection keeps an 8 KiB read buffer and an 8 KiB write buffer for its whole
//! life: that is most of what an open SSE connection costs. Event streams need neither: the
//! request is read once, then the shared frame bytes are written as they come. So the server
//! reads each connection's request head first; a valid `GET` of an events path is served
//! here, and everything else (errors included) goes to hyper with the bytes already read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::events::{self, EventsRequest, Opening, SSE_HEADERS};
use super::hub::ClientStream;
use super::registry::Registry;
use crate::auth::{Auth, Presented};
use crate::limits::Activity;
use crate::stats::Stats;

/// The largest request head read before giving the connection to hyper: room for the long
/// cookies browsers send (a token cookie among them), since a WebSocket can only be served
/// here.
const MAX_HEAD: usize = 16 * 1024;

/// The most header lines read before giving the connection to hyper.
const MAX_HEADERS: usize = 64;

/// What the first bytes of a connection turned out to be.
pub enum Request {
    /// An event stream this module serves.
    Events(ClientStream),
    /// A WebSocket this module serves: its stream and the `Sec-WebSocket-Accept` to answer.
    WebSocket(ClientStream, String),
    /// Anything else, for hyper: the bytes read so far come first.
    Other(Bytes),
    /// A request refused here, answered and closed.
    Refused(Refusal),
}

/// An answer that closes the connection.
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The whole response.
    bytes: Vec<u8>,
}

impl Refusal {
    fn new(status: u16, reason: &str, code: &str, message: &str) -> Refusal {
        let body = serde_json::json!({ "error": code, "message": message }).to_string();
        let bytes = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        Refusal {
            status,
            bytes: bytes.into_bytes(),
        }
    }
}

/// Writes the refusal and closes the connection.
pub async fn refuse(mut socket: TcpStream, refusal: &Refusal) {
    let _ = socket.write_all(&refusal.bytes).await;
    let _ = socket.shutdown().await;
}

/// Reads the request head and decides who serves it. `Err` means the client went away.
pub async fn classify(
    stream: &mut TcpStream,
    registry: &Arc<Registry>,
    auth: Option<&Auth>,
) -> io::Result<Request> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                if len < head.len() && is_events_request(&request) {
                    return Ok(Request::Refused(pipelined()));
                }
                if !for_an_unknown_hub(&request, registry) {
                    let served = served_here(&request, registry, auth);
                    return Ok(served.unwrap_or_else(|| Request::Other(Bytes::from(head))));
                }
                // A copy of another process's tree may not have a hub the tree just grew:
                // copied again, the request is decided on the copy as it is then.
                registry.refresh().await;
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut request = httparse::Request::new(&mut headers);
                let _ = request.parse(&head);
                let served = served_here(&request, registry, auth);
                return Ok(served.unwrap_or_else(|| Request::Other(Bytes::from(head))));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => continue,
            // Too long or malformed: hyper answers it as it answers any bad request.
            _ => return Ok(Request::Other(Bytes::from(head))),
        }
    }
}

/// The event stream or WebSocket served on the socket, if this request is one.
fn served_here(
    request: &httparse::Request<'_, '_>,
    registry: &Arc<Registry>,
    auth: Option<&Auth>,
) -> Option<Request> {
    match events_stream(request, registry, auth)? {
        (stream, None) => Some(Request::Events(stream)),
        (stream, Some(accept)) => Some(Request::WebSocket(stream, accept)),
    }
}

/// An events or WebSocket request for a hub a copy of another process's tree does not have.
fn for_an_unknown_hub(request: &httparse::Request<'_, '_>, registry: &Registry) -> bool {
    let (Some(method), Some(path)) = (request.method, target(request)) else {
        return false;
    };
    registry.is_copy()
        && EventsRequest::parse(method, path, None).is_some_and(|e| registry.hub(e.hub).is_none())
}

/// An event stream holds its connection until it ends, so a request sent after it on the
/// same connection would never be answered: it is refused instead.
fn pipelined() -> Refusal {
    Refusal::new(
        400,
        "Bad Request",
        "pipelined_after_events",
        "an event stream takes its connection for as long as it runs: send other requests on another connection",
    )
}

fn is_events_request(request: &httparse::Request<'_, '_>) -> bool {
    match (request.method, target(request)) {
        (Some(method), Some(path)) => EventsRequest::parse(method, path, None).is_some(),
        _ => false,
    }
}

/// The request target, if hyper would take it: httparse lets through characters (`>`, `{`)
/// that the URI parser hyper uses refuses with a 400, and this path must answer as hyper does.
fn target<'h>(request: &httparse::Request<'h, '_>) -> Option<&'h str> {
    let path = request.path?;
    warp::http::uri::PathAndQuery::try_from(path).ok()?;
    Some(path)
}

/// The stream, if [`events::open`] serves this request here (with the upgrade's accept key
/// for a WebSocket); anything else (redirects and errors included) is left to the routes.
fn events_stream(
    request: &httparse::Request<'_, '_>,
    registry: &Arc<Registry>,
    auth: Option<&Auth>,
) -> Option<(ClientStream, Option<String>)> {
    // The first header, as warp reads it; one that is not text gets warp's error.
    let header = |name: &str| match request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
    {
        Some(header) => std::str::from_utf8(header.value).ok().map(Some),
        None => Some(None),
    };
    let last_event_id = header("last-event-id")?;
    let events = EventsRequest::parse(request.method?, target(request)?, last_event_id)?;
    let accept = match events.websocket {
        true => {
            let get = |name: &str| header(name).flatten();
            Some(super::ws::accept_key(get).ok()?)
        }
        false => None,
    };
    // A refusal is the routes' to answer (and count).
    let identity = match auth {
        Some(auth) if auth.guards_subscribers() => {
            let presented = Presented::from_headers(header("authorization")?, header("cookie")?);
            if events.websocket
                && !super::ws::origin_may_use_cookie(&presented, header("origin")?, header("host")?)
            {
                return None;
            }
            let stream = events.stream_id().ok()?;
            auth.check_watcher(&presented, Some(stream.as_str())).ok()?
        }
        _ => None,
    };
    match events::open(registry, &events) {
        Opening::Here(stream) => Some((
            match identity {
                Some(identity) => match auth {
                    Some(auth) => stream.until(auth.deadline(&identity)),
                    None => stream,
                },
                None => stream,
            },
            accept,
        )),
        Opening::Elsewhere(_) | Opening::Refused(_) => None,
    }
}

/// The response head, built once: every event stream starts with the same bytes.
static HEAD: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(head);

/// The response head: [`SSE_HEADERS`], and no chunked framing, since the body runs until the
/// connection closes.
fn head() -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for (name, value) in SSE_HEADERS {
        head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// Writes the stream's events to the socket until the stream ends or the client leaves. A
/// write that cannot complete within `write_timeout` (the client stopped reading and the
/// socket's buffers are full) closes the client as slow: the hub's resync is for clients that
/// fall behind and still read, this is for those that do not.
pub async fn serve_events<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    mut events: ClientStream,
    write_timeout: Duration,
    stats: &Stats,
) {
    let write = async |socket: &mut S, bytes: &[u8]| match tokio::time::timeout(
        write_timeout,
        socket.write_all(bytes),
    )
    .await
    {
        Ok(written) => written.is_ok(),
        Err(_) => {
            stats.slow_clients_closed.inc();
            false
        }
    };
    if !write(&mut socket, &HEAD).await {
        return;
    }
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            next = events.next() => match next {
                Some(Ok(bytes)) => {
                    if !write(&mut socket, &bytes).await {
                        return;
                    }
                }
                _ => break,
            },
            // A client sends nothing after its request: a read returns when it leaves, or
            // when it sent a request that this connection will never answer, which the close
            // tells it.
            read = socket.read(&mut probe) => match read {
                Ok(n) if n > 0 => {
                    stats.refused(400);
                    return;
                }
                _ => return,
            },
        }
    }
    let _ = socket.shutdown().await;
}

/// A connection whose first bytes were already read: they are read again first. Every byte
/// it moves is recorded in its [`Activity`], for the idle timeout.
pub struct Rewound {
    prefix: Bytes,
    inner: TcpStream,
    activity: Activity,
}

impl Rewound {
    /// `prefix` then the rest of `inner`.
    pub fn new(prefix: Bytes, inner: TcpStream, activity: Activity) -> Self {
        Rewound {
            prefix,
            inner,
            activity,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[path = "lean_prop.rs"]
mod properties;

#[cfg(test)]
mod tests {

    use dataflows::Topology;

    use super::*;

    async fn classify_bytes(request: &[u8]) -> Request {
        let registry = Arc::new(Registry::for_tests(
            Topology {
                clusters: 2,
                subscribers: 2,
            },
            10,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(request).await.unwrap();
        classify(&mut server, &registry, None).await.unwrap()
    }

    #[test]
    fn the_head_is_the_one_written_before() {
        let before = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\naccess-control-allow-origin: *\r\nx-accel-buffering: no\r\nconnection: close\r\n\r\n";
        assert_eq!(head(), before);
    }

    #[tokio::test]
    async fn a_valid_events_request_is_served_here() {
        let request = b"GET /clusters/1/subscribers/0/events?client_id=x HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 41\r\n\r\n";
        assert!(matches!(classify_bytes(request).await, Request::Events(_)));
    }

    #[tokio::test]
    async fn everything_else_goes_to_hyper_with_every_byte_read() {
        for request in [
            &b"POST /emoji HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"[..],
            b"GET /clusters/9/subscribers/0/events HTTP/1.1\r\n\r\n",
            b"GET /clusters/0/subscribers/0/events HTTP/1.1\r\nLast-Event-ID: soon\r\n\r\n",
            b"HEAD /clusters/0/subscribers/0/events HTTP/1.1\r\n\r\n",
            // httparse takes `>` in a target; hyper's URI parser answers it 400.
            b"GET /clusters/0/subscribers/0/events?>a=aa HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"nonsense\r\n\r\n",
        ] {
            match classify_bytes(request).await {
                Request::Other(head) => assert_eq!(&head[..], request),
                _ => panic!("not for hyper: {}", String::from_utf8_lossy(request)),
            }
        }
    }

    #[tokio::test]
    async fn a_request_pipelined_after_an_event_stream_is_refused() {
        let request =
            b"GET /clusters/1/subscribers/0/events HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n";
        let Request::Refused(refusal) = classify_bytes(request).await else {
            panic!("a pipelined request after an event stream is not refused");
        };
        assert_eq!(refusal.status, 400);
        let answer = String::from_utf8(refusal.bytes).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "pipelined_after_events");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
        let registry = Arc::new(Registry::for_tests(
            Topology {
                clusters: 1,
                subscribers: 1,
            },
            10,
        ));
        let hub = registry.hub(dataflows::HubId {
            cluster: 0,
            subscriber: 0,
        });
        let channel = registry.streams().channel(&dataflows::StreamId::default());
        let stream = hub.expect("hub 0/0").subscribe(&channel, None);
        // 64 bytes of buffer and a reader that never reads: the head alone does not fit.
        let (server, _client) = tokio::io::duplex(64);
        let stats = Stats::default();
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            serve_events(server, stream, Duration::from_millis(100), &stats),
        )
        .await;
        assert!(served.is_ok(), "the stream ended at the write timeout");
        assert_eq!(stats.slow_clients_closed.get(), 1);
    }
}
