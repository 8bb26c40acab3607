//! Slow clients and large windows: a connection whose reads can be paused, windows made large.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use emostream::system::System;
use serde_json::Value;

use super::{post_batch, Seen};

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
