//! Slow clients and large windows: a connection whose reads can be paused, windows made large.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use emostream::system::System;
use serde_json::Value;

use super::{post_batch, wait_until, Seen, PATIENCE};

/// The index of the last window the system emitted.
pub fn last_window(seen: &Seen) -> Option<u64> {
    seen.lock().unwrap().last().map(|w| w.window)
}

/// Posts one reaction for each of `n` distinct emojis, so the window's summary is large.
pub async fn post_many_emojis(system: &System, n: usize) {
    let ts = super::now_ms();
    let reactions: Vec<Value> = emojis::iter()
        .filter(|e| dataflows::Emoji::parse(e.as_str()).is_ok())
        .take(n)
        .enumerate()
        .map(|(i, e)| serde_json::json!({"user_id": format!("m{i}"), "emoji_type": e.as_str(), "timestamp": ts}))
        .collect();
    post_batch(system, &reactions).await;
}

/// Posts large windows until `windows` more have been emitted, so a client that stopped
/// reading has its socket's buffers full: the hub notices a lagging client only when its
/// stream is polled again, i.e. once the socket drains.
pub async fn fill_with_large_windows(system: &System, seen: &Seen, windows: u64) {
    wait_until("a first window", PATIENCE, || last_window(seen).is_some()).await;
    let until = last_window(seen).unwrap() + windows;
    let give_up = std::time::Instant::now() + 2 * PATIENCE;
    while last_window(seen).is_none_or(|w| w < until) {
        assert!(
            std::time::Instant::now() < give_up,
            "windows stopped at {:?} (waiting for {until}); watermarks {:?}, consumed {}, late {}",
            last_window(seen),
            system
                .stats
                .watermarks
                .iter()
                .map(|w| w.get())
                .collect::<Vec<_>>(),
            system.stats.consumed.get(),
            system.stats.late.get(),
        );
        post_many_emojis(system, 5000).await;
        // Paces the load, not a wait for a condition: a few large batches per window keep
        // every window large without flooding the broker.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Whether a connection's reads are paused, and the reader to wake when they resume.
#[derive(Default)]
pub struct Pause {
    paused: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Pause {
    /// Pauses or resumes the reads.
    pub fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            if let Some(waker) = self.waker.lock().unwrap().take() {
                waker.wake();
            }
        }
    }
}

/// A connection whose reads can be paused: while paused, it reads nothing, as a client that
/// stopped reading would; resuming wakes the reader.
pub struct Pausable {
    /// The connection.
    pub inner: tokio::net::TcpStream,
    /// Whether its reads are paused.
    pub pause: Arc<Pause>,
}

impl Pausable {
    /// A connection to `addr` with a small receive buffer (4 KiB), so the server's writes back
    /// up soon once its reads are paused; and the switch that pauses them.
    pub fn connect_small(addr: std::net::SocketAddr) -> (Pausable, Arc<Pause>) {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        socket.set_nonblocking(true).unwrap();
        let pause = Arc::new(Pause::default());
        let stream = Pausable {
            inner: tokio::net::TcpStream::from_std(socket.into()).unwrap(),
            pause: Arc::clone(&pause),
        };
        (stream, pause)
    }
}

impl tokio::io::AsyncRead for Pausable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // The waker is stored before the flag is read, so a resume in between is not missed.
        *self.pause.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.pause.paused.load(Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Pausable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
