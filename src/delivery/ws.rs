//! WebSocket delivery: `GET /clusters/{c}/subscribers/{s}/ws?stream_id=X[&last_event_id=K]`,
//! a second door to the same hubs, retention and resume as the event streams.
//!
//! Like SSE it is served straight on the socket ([`super::lean`]): the upgrade is checked and
//! answered there, then `tokio-tungstenite` frames the messages. Each event is one text
//! message, `{"event": "window"|"correction"|"resync", "id": "k"|null, "data": {..}}`, made
//! once per window for every WebSocket client of its stream
//! ([`super::streams::StreamChannel::ws_window`]). The hub's keep-alive is a ping here; a
//! client that has not answered the last ping by the next is closed. Messages from the client
//! other than pongs and closes are ignored; one over [`MAX_INCOMING`] bytes closes it (1009).

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use warp::http::StatusCode;

use super::hub::{ClientStream, Out};
use crate::http_error::ApiError;
use crate::stats::Stats;

/// The largest message a client may send: it has nothing to say but pongs and closes.
pub const MAX_INCOMING: usize = 4096;

/// The close code of a stream whose token expired: reconnect with a fresh one.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// The close code of a client closed as too slow (it kept falling behind).
pub const CLOSE_TOO_SLOW: u16 = 4002;

/// The least time a ping is given before the next keep-alive may close its client: keep-alives
/// can come in a burst (a keep-alive task that was late, a lagging control ring), and a pong
/// cannot answer a ping sent a moment ago.
const PONG_GRACE: Duration = Duration::from_millis(500);

/// The `Sec-WebSocket-Accept` of a valid upgrade request, or a 400 naming what is wrong.
/// `header` reads a request header by (lowercase) name.
pub fn accept_key<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Result<String, ApiError> {
    let bad = |message: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_websocket_upgrade",
            message.to_owned(),
        )
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") {
        return Err(bad(
            "this path is a WebSocket: send Upgrade: websocket (or use .../events for SSE)",
        ));
    }
    if !has_token("connection", "upgrade") {
        return Err(bad("a WebSocket upgrade needs Connection: Upgrade"));
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(bad(
            "Sec-WebSocket-Version must be 13 (RFC 6455), the only version served",
        ));
    }
    let Some(key) = header("sec-websocket-key").map(str::trim) else {
        return Err(bad("a WebSocket upgrade needs Sec-WebSocket-Key"));
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 => {
            Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        _ => Err(bad(
            "Sec-WebSocket-Key must be 16 random bytes in base64 (RFC 6455, section 4.1)",
        )),
    }
}

/// Whether a WebSocket that would be authorized by its token cookie comes from a page that
/// may use it. A browser sends the cookie whatever page opens the socket, and WebSockets
/// have no CORS: a cookie is honoured only without `Origin` (not a browser) or from a page of
/// this server (`Origin`'s host is the request's `Host`). A bearer header is always honoured:
/// a page can send one only if it holds the token.
pub fn origin_may_use_cookie(
    presented: &crate::auth::Presented,
    origin: Option<&str>,
    host: Option<&str>,
) -> bool {
    let bearer = presented
        .authorization
        .as_deref()
        .and_then(|a| a.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    if bearer || presented.cookie.is_none() {
        return true;
    }
    match origin {
        None => true,
        Some(origin) => {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            authority.is_some_and(|a| host.is_some_and(|h| a.eq_ignore_ascii_case(h)))
        }
    }
}

/// The 403 of [`origin_may_use_cookie`].
pub fn foreign_origin(origin: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        format!("a page of {origin} may not open this WebSocket with the token cookie: send the token in Authorization instead"),
    )
}

/// The `101 Switching Protocols` that accepts an upgrade.
fn switching(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// Small buffers: a client sends next to nothing, and every message is written as it comes.
fn config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 128;
    // A window and the corrections leading it go out in one write, at the flush.
    config.write_buffer_size = 64 * 1024;
    config.max_write_buffer_size = 1 << 20;
    config.max_message_size = Some(MAX_INCOMING);
    config.max_frame_size = Some(MAX_INCOMING);
    config
}

/// Why the server ends a connection.
enum End {
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
    /// Drop the connection: the client is gone.
    Drop,
    /// Drop the connection at once: it does not take what is written.
    Stuck,
}

/// Accepts the upgrade and sends the stream's events as messages until the stream ends or the
/// client leaves. A write that cannot complete within `write_timeout` closes the client as
/// slow, as on SSE.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    accept: &str,
    mut events: ClientStream,
    write_timeout: Duration,
    stats: &Stats,
) {
    let head = switching(accept);
    match Box::pin(tokio::time::timeout(write_timeout, socket.write_all(&head))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return,
        Err(_) => {
            stats.slow_clients_closed.inc();
            return;
        }
    }
    let mut ws = Box::pin(WebSocketStream::from_raw_socket(
        socket,
        Role::Server,
        Some(config()),
    ))
    .await;
    let mut ping_sent: Option<std::time::Instant> = None;
    let end = loop {
        tokio::select! {
            // What the client sent first: a pong that arrived must count before the next
            // keep-alive is taken for a missed one.
            biased;
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Pong(_))) => ping_sent = None,
                // tungstenite answers the close (and pings) itself.
                Some(Ok(Message::Close(_))) => break End::Drop,
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(_))) => {
                    break End::Close(CloseCode::Size, "clients send only pongs and closes")
                }
                Some(Err(WsError::Protocol(_))) => {
                    break End::Close(CloseCode::Protocol, "not a WebSocket frame")
                }
                Some(Err(WsError::Utf8(_))) => {
                    break End::Close(CloseCode::Invalid, "a text message that is not UTF-8")
                }
                Some(Err(_)) | None => break End::Drop,
            },
            out = events.next_out() => {
                let messages = match out {
                    None if events.expired() => break End::Close(
                        CloseCode::Library(CLOSE_TOKEN_EXPIRED),
                        "the token expired: reconnect with a fresh one",
                    ),
                    None if events.closed_as_slow() => break End::Close(
                        CloseCode::Library(CLOSE_TOO_SLOW),
                        "the client kept falling behind",
                    ),
                    None => break End::Close(CloseCode::Away, "the stream ended"),
                    Some(Out::Preface) => continue,
                    Some(Out::KeepAlive) => {
                        match ping_sent {
                            Some(at) if at.elapsed() >= PONG_GRACE => {
                                stats.ws_unanswered_pings.inc();
                                break End::Close(CloseCode::Policy, "no pong to the last ping");
                            }
                            // A keep-alive right behind the last: the ping stands.
                            Some(_) => continue,
                            None => ping_sent = Some(std::time::Instant::now()),
                        }
                        vec![Message::Ping(bytes::Bytes::new())]
                    }
                    Some(Out::Window(frame)) => events
                        .channel()
                        .ws_window(&frame)
                        .iter()
                        .map(|m| Message::Text(m.clone()))
                        .collect(),
                    Some(Out::Resync(frame)) => frame
                        .ws_messages(true)
                        .into_iter()
                        .map(Message::Text)
                        .collect(),
                };
                // Boxed for the time of the write: a connection waits for its next event far
                // longer than it writes, and the write's state would size every connection.
                let written = Box::pin(tokio::time::timeout(write_timeout, async {
                    for message in messages {
                        ws.feed(message).await?;
                    }
                    ws.flush().await
                }))
                .await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break End::Stuck,
                    Err(_) => {
                        stats.slow_clients_closed.inc();
                        break End::Stuck;
                    }
                }
            },
        }
    };
    // The client is no longer served: it leaves the counts and its registration now, not
    // after the close handshake.
    drop(events);
    // Boxed: the end is reached once, and its state would otherwise sit in every open
    // connection's future.
    Box::pin(finish(ws, end, write_timeout)).await
}

async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    end: End,
    write_timeout: Duration,
) {
    match end {
        End::Close(code, reason) => {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            if let Ok(Ok(())) = tokio::time::timeout(write_timeout, ws.close(Some(frame))).await {
                linger(&mut ws).await;
            }
        }
        End::Drop => {
            // A close the client started is answered on this flush.
            let _ = tokio::time::timeout(write_timeout, ws.flush()).await;
        }
        End::Stuck => {}
    }
}

/// How long a closed connection waits for the client's close before it hangs up.
const LINGER: Duration = Duration::from_secs(2);

/// Waits for the client to answer the close, reading (and dropping) what it still sends: a
/// socket closed with unread bytes is reset, and the reset can destroy the close frame before
/// the client reads it.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    let drained = tokio::time::timeout(LINGER, async {
        loop {
            match ws.next().await {
                Some(Ok(_)) => continue,
                Some(Err(WsError::ConnectionClosed)) | None => return,
                // A frame it could not parse (one too large): the rest is raw bytes to drop.
                Some(Err(_)) => break,
            }
        }
        // On the heap: an array here would sit in every connection's future.
        let mut sink = vec![0u8; 4096];
        while let Ok(n) = tokio::io::AsyncReadExt::read(ws.get_mut(), &mut sink).await {
            if n == 0 {
                return;
            }
        }
    });
    let _ = drained.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn a_token_cookie_counts_only_from_a_page_of_this_server() {
        let cookie = crate::auth::Presented::from_headers(None, Some("emostream_token=t"));
        let bearer = crate::auth::Presented::from_headers(Some("Bearer t"), None);
        let host = Some("live.example:8080");
        assert!(origin_may_use_cookie(&cookie, None, host));
        assert!(origin_may_use_cookie(
            &cookie,
            Some("https://live.example:8080"),
            host
        ));
        assert!(!origin_may_use_cookie(
            &cookie,
            Some("https://evil.example"),
            host
        ));
        assert!(!origin_may_use_cookie(&cookie, Some("null"), host));
        assert!(origin_may_use_cookie(
            &bearer,
            Some("https://evil.example"),
            host
        ));
    }

    #[test]
    fn a_valid_upgrade_gets_the_rfc_accept_key_and_a_bad_one_says_what_is_missing() {
        // The example of RFC 6455, section 1.3.
        let valid = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            accept_key(headers(&valid)).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        for (drop, says) in [
            ("upgrade", "Upgrade: websocket"),
            ("connection", "Connection: Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "Sec-WebSocket-Key"),
        ] {
            let without: Vec<_> = valid.iter().copied().filter(|(n, _)| *n != drop).collect();
            let e = accept_key(headers(&without)).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.code, "invalid_websocket_upgrade");
            assert!(e.message.contains(says), "{drop}: {}", e.message);
        }
        let mut short_key = valid;
        short_key[3].1 = "c2hvcnQ=";
        assert!(accept_key(headers(&short_key)).is_err());
    }
}
