//! An HTTP fuzz run against the whole system on the embedded broker: for a bounded time, a few
//! connections at a time send generated requests over raw TCP: the real routes with random
//! methods, mutated headers (`Content-Type`, `Content-Length` wrong, short or huge,
//! `Transfer-Encoding` chunked or garbled, `Last-Event-ID` garbage), reaction bodies built
//! then mutated, truncated heads, binary garbage, pipelined requests, heads written in pieces.
//!
//! It fails on any `5xx`, on a panic anywhere in the process (a panicking connection task
//! would otherwise only drop its connection), on a connection that gets neither an answer
//! nor a close within [`HANG`] (an event stream legitimately stays open: for those only the
//! head must arrive), on `/healthz` or `/readyz` not answering `200` at the end, and on a
//! shutdown that does not finish.
//!
//! `EMOSTREAM_FUZZ_SECS` sets the run's length (60 s by default). The run prints its seed;
//! `EMOSTREAM_FUZZ_SEED` replays the same sequence of cases (their interleaving differs), and
//! `EMOSTREAM_FUZZ_CASE`, a case's own seed as a failure prints it, replays that case alone.
#![allow(clippy::unwrap_used)] // test code: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a connection may go with neither an answer nor a close once the client has sent
/// all it will: the server's own deadlines (below) are half a second each.
const HANG: Duration = Duration::from_secs(8);
/// Connections at once.
const CONCURRENCY: usize = 4;

/// SplitMix64: small, and a seed replays the same cases whatever crate versions are locked.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    /// Between `low` and `high` (excluded) random bytes.
    fn bytes(&mut self, low: usize, high: usize) -> Vec<u8> {
        let n = self.range(low, high);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The seed of case `n` of a run seeded with `seed`.
fn case_seed(seed: u64, n: u64) -> u64 {
    Rng(seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407)).next()
}

// ---------------------------------------------------------------------------------------
// Generated requests.

const EMOJIS: &[&str] = &["🔥", "😂", "❤", "❤️", "👍🏽", "🇮🇳", "👨‍👩‍👧"];

fn now_ms() -> i64 {
    dataflows::wall_clock_ms()
}

/// A JSON string holding arbitrary text, escapes and all.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// A reaction object, usually valid, sometimes with one field bad or missing.
fn reaction(rng: &mut Rng) -> String {
    let users = ["u1", "u2", "u3", "a b", "ünï", "", " ", "\u{202e}x", "x\ny"];
    let long = "x".repeat(129);
    let user = match rng.below(10) {
        0 => json_string(&long),
        1 => rng.pick(&["7", "null", "[\"u\"]", "{}"]).to_string(),
        2 => json_string(rng.pick(&users)),
        // Few users, so that the rate limit answers too.
        _ => json_string(&format!("user{}", rng.below(8))),
    };
    let emoji = match rng.below(10) {
        0 => rng
            .pick(&["\"\"", "\"abc\"", "\"🔥🔥\"", "5", "null", "\"\\ud83d\""])
            .to_string(),
        _ => json_string(rng.pick(EMOJIS)),
    };
    let now = now_ms();
    let timestamp = match rng.below(12) {
        0 => Some("-1".to_string()),
        1 => Some((now + 60_000).to_string()),
        2 => Some("1.5".to_string()),
        3 => Some("\"2025-11-23T00:00:00Z\"".to_string()),
        4 => Some("\"2025-11-23 00:00:00Z\"".to_string()),
        5 => Some("99999999999999999999999".to_string()),
        6 => Some("true".to_string()),
        7 | 8 => None,
        _ => Some((now - rng.below(5000) as i64).to_string()),
    };
    let mut fields = vec![
        format!("\"user_id\":{user}"),
        format!("\"emoji_type\":{emoji}"),
    ];
    if let Some(ts) = timestamp {
        fields.push(format!("\"timestamp\":{ts}"));
    }
    if rng.chance(10) {
        fields.push("\"extra\":[1,{\"a\":null}]".into());
    }
    if rng.chance(5) {
        fields.push("\"user_id\":\"dup\"".into());
    }
    let n = fields.len();
    for i in (1..n).rev() {
        fields.swap(i, rng.below(i + 1));
    }
    format!("{{{}}}", fields.join(","))
}

fn batch_json(rng: &mut Rng) -> String {
    let n = match rng.below(20) {
        0 => 0,
        1 => rng.range(200, 400),
        _ => rng.range(1, 20),
    };
    let items: Vec<String> = (0..n).map(|_| reaction(rng)).collect();
    format!("[{}]", items.join(","))
}

fn batch_ndjson(rng: &mut Rng) -> String {
    let n = rng.range(0, 20);
    let mut lines: Vec<String> = (0..n).map(|_| reaction(rng)).collect();
    if rng.chance(20) {
        lines.insert(rng.below(lines.len() + 1), "   ".into());
    }
    let mut body = lines.join(if rng.chance(20) { "\r\n" } else { "\n" });
    if rng.chance(50) {
        body.push('\n');
    }
    body
}

/// Byte-level damage: deletions, insertions of JSON-ish bytes, flips, a cut.
fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    const BYTES: &[u8] = b"{}[]\":,\\ \r\n\t0123456789-.e\0\xff";
    for _ in 0..rng.range(1, 4) {
        let n = bytes.len();
        let at = rng.below(n + 1);
        match rng.below(4) {
            0 => {
                let end = (at + rng.range(1, 8)).min(n);
                bytes.drain(at..end);
            }
            1 => {
                let b = rng.pick(BYTES);
                bytes.insert(at, b);
            }
            2 if n > 0 => bytes[at.min(n - 1)] = rng.next() as u8,
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn body_for(rng: &mut Rng, path: &str) -> Vec<u8> {
    let body = match (path, rng.below(12)) {
        (_, 0) => return rng.bytes(0, 200),
        (_, 1) => return Vec::new(),
        // Past /emoji's 16 KiB limit.
        (_, 2) => return vec![b' '; rng.range(16 * 1024, 20 * 1024)],
        ("/emoji/batch", n) if n % 2 == 0 => batch_ndjson(rng),
        ("/emoji/batch", _) => batch_json(rng),
        ("/clients", _) => rng.pick(&["{}", "", "null", "[]"]).to_string(),
        _ => reaction(rng),
    };
    if rng.chance(25) {
        mutate(rng, body.into_bytes())
    } else {
        body.into_bytes()
    }
}

/// A route of the server, or something near one.
fn target(rng: &mut Rng) -> (String, String) {
    let c = rng.below(5);
    let s = rng.below(5);
    let (method, path) = match rng.below(16) {
        0..=3 => ("POST", "/emoji".to_string()),
        4..=6 => ("POST", "/emoji/batch".to_string()),
        7 => ("POST", "/clients".to_string()),
        8 => (
            "DELETE",
            format!(
                "/clients/{}",
                rng.pick(&["x", "", "%00", "00000000-0000-0000-0000-000000000000"])
            ),
        ),
        9 => ("GET", "/clusters".to_string()),
        10 | 11 => {
            let query = rng.pick(&[
                "",
                "?client_id=nobody",
                "?client_id=",
                "?a=b&client_id=%zz",
                "?",
            ]);
            (
                "GET",
                format!("/clusters/{c}/subscribers/{s}/events{query}"),
            )
        }
        12 => (
            "GET",
            rng.pick(&["/healthz", "/readyz", "/metrics"]).to_string(),
        ),
        13 => (
            "GET",
            rng.pick(&["/", "/dashboard/app.js", "/dashboard/style.css"])
                .to_string(),
        ),
        14 => (
            "GET",
            rng.pick(&[
                "/emoji",
                "/clusters/0",
                "/clusters/4294967296/subscribers/0/events",
                "/clusters/-1/subscribers/0/events",
                "//healthz",
                "/healthz/",
                "/metrics?x=%",
                "*",
                "/%ff%fe",
                "/dashboard/../Cargo.toml",
            ])
            .to_string(),
        ),
        _ => {
            let mut path = b"/".to_vec();
            path.extend(rng.bytes(0, 30).into_iter().map(|b| b'!' + b % 94));
            ("GET", String::from_utf8(path).unwrap())
        }
    };
    // Another method for the same path, now and then.
    let method = if rng.chance(12) {
        rng.pick(&[
            "GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "get", "FUZZ",
        ])
    } else {
        method
    };
    (method.to_string(), path)
}

/// A valid reaction, as a client that follows the contract sends it.
fn valid_reaction(rng: &mut Rng) -> String {
    let emoji = json_string(rng.pick(EMOJIS));
    let user = rng.below(8);
    if rng.chance(50) {
        format!(r#"{{"user_id":"user{user}","emoji_type":{emoji}}}"#)
    } else {
        let ts = now_ms() - rng.below(3000) as i64;
        format!(r#"{{"user_id":"user{user}","emoji_type":{emoji},"timestamp":{ts}}}"#)
    }
}

/// A request as the contract has it, so that the paths past validation (the rate limit,
/// the producer, registration, streams) see load too.
fn clean_request(rng: &mut Rng) -> Vec<u8> {
    let (method, path, content_type, body) = match rng.below(8) {
        0..=2 => (
            "POST",
            "/emoji".to_string(),
            "application/json",
            valid_reaction(rng),
        ),
        3 => {
            let items: Vec<String> = (0..rng.range(1, 30)).map(|_| valid_reaction(rng)).collect();
            (
                "POST",
                "/emoji/batch".into(),
                "application/json",
                format!("[{}]", items.join(",")),
            )
        }
        4 => {
            let items: Vec<String> = (0..rng.range(1, 30)).map(|_| valid_reaction(rng)).collect();
            (
                "POST",
                "/emoji/batch".into(),
                "application/x-ndjson",
                items.join("\n"),
            )
        }
        5 => ("POST", "/clients".into(), "application/json", "{}".into()),
        6 => {
            let (c, s) = (rng.below(3), rng.below(3));
            (
                "GET",
                format!("/clusters/{c}/subscribers/{s}/events"),
                "",
                String::new(),
            )
        }
        _ => (
            "GET",
            rng.pick(&["/healthz", "/clusters", "/metrics", "/"]).into(),
            "",
            String::new(),
        ),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\n");
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

/// One request: a head with mutated headers, and a body framed rightly or wrongly.
fn request(rng: &mut Rng) -> (Vec<u8>, bool) {
    if rng.chance(35) {
        return (clean_request(rng), false);
    }
    let (method, path) = target(rng);
    let head_only = method == "HEAD";
    let body = if method == "POST" || rng.chance(5) {
        body_for(rng, &path)
    } else {
        Vec::new()
    };
    let version = if rng.chance(8) {
        rng.pick(&["HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/x", ""])
    } else {
        "HTTP/1.1"
    };
    let eol = if rng.chance(5) { "\n" } else { "\r\n" };
    let mut headers: Vec<Vec<u8>> = Vec::new();
    if rng.chance(90) {
        headers.push(b"Host: fuzz".to_vec());
    }
    let content_type = match rng.below(14) {
        0 => None,
        1 => Some("text/plain"),
        2 => Some("application/x-ndjson"),
        3 => Some("application/ndjson"),
        4 => Some("application/json; charset=utf-8"),
        5 => Some("APPLICATION/JSON"),
        6 => Some("application/json;;;"),
        7 => Some("\u{0}\u{1}garbage"),
        8 => Some(""),
        _ => Some("application/json"),
    };
    if let Some(ct) = content_type {
        headers.push(format!("Content-Type: {ct}").into_bytes());
        if rng.chance(3) {
            headers.push(b"Content-Type: text/plain".to_vec());
        }
    }
    let mut framed = body.clone();
    match rng.below(20) {
        // The body's right length.
        0..=11 => headers.push(format!("Content-Length: {}", body.len()).into_bytes()),
        12 => headers.push(format!("Content-Length: {}", body.len() / 2).into_bytes()),
        13 => {
            headers.push(format!("Content-Length: {}", body.len() + rng.range(1, 50)).into_bytes())
        }
        14 => headers.push(
            rng.pick(&[
                "Content-Length: 99999999999999",
                "Content-Length: 18446744073709551616",
                "Content-Length: -1",
                "Content-Length: 1e3",
                "Content-Length: ",
                "Content-Length: 5, 6",
            ])
            .as_bytes()
            .to_vec(),
        ),
        15 | 16 => {
            headers.push(b"Transfer-Encoding: chunked".to_vec());
            framed = chunked(rng, &body);
        }
        17 => {
            headers.push(
                rng.pick(&[
                    "Transfer-Encoding: chunked, gzip",
                    "Transfer-Encoding: gzip",
                    "Transfer-Encoding: chunkedx",
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                ])
                .as_bytes()
                .to_vec(),
            );
            framed = chunked(rng, &body);
        }
        18 => {
            headers.push(format!("Content-Length: {}", body.len()).into_bytes());
            headers.push(b"Transfer-Encoding: chunked".to_vec());
            framed = chunked(rng, &body);
        }
        // No framing at all.
        _ => {}
    }
    if path.contains("/events") || rng.chance(5) {
        let last = match rng.below(8) {
            0 => None,
            1 => Some("soon".to_string()),
            2 => Some("-1".to_string()),
            3 => Some("18446744073709551616".to_string()),
            4 => Some(String::new()),
            5 => Some("\u{7f}x".to_string()),
            _ => Some(rng.below(1000).to_string()),
        };
        if let Some(last) = last {
            headers.push(format!("Last-Event-ID: {last}").into_bytes());
        }
    }
    match rng.below(30) {
        0 => headers.push(b"Expect: 100-continue".to_vec()),
        1 => headers.push(b"Connection: close".to_vec()),
        2 => headers.push(format!("X-Long: {}", "a".repeat(rng.range(4000, 20_000))).into_bytes()),
        3 => headers.extend((0..rng.range(30, 120)).map(|i| format!("X-{i}: {i}").into_bytes())),
        4 => headers.push(b"Bad Header: x".to_vec()),
        5 => headers.push(b" folded continuation".to_vec()),
        6 => headers.push(b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA".to_vec()),
        7 => headers.push(b"X-Bin: \xff\xfe\x80".to_vec()),
        _ => {}
    }
    let n = headers.len();
    for i in (1..n).rev() {
        headers.swap(i, rng.below(i + 1));
    }
    let mut bytes = format!("{method} {path} {version}{eol}").into_bytes();
    for h in headers {
        bytes.extend_from_slice(&h);
        bytes.extend_from_slice(eol.as_bytes());
    }
    bytes.extend_from_slice(eol.as_bytes());
    bytes.extend_from_slice(&framed);
    (bytes, head_only)
}

/// `body` in chunks, sometimes garbled: bad sizes, missing line ends, no last chunk.
fn chunked(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = rng.range(1, rest.len().min(600) + 1);
        let size = match rng.below(30) {
            0 => "zz".to_string(),
            1 => format!("{:x}", n + 3),
            2 => format!("{n:x};ext=1"),
            3 => "ffffffffffffffffff".to_string(),
            _ => format!("{n:x}"),
        };
        out.extend_from_slice(size.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        if !rng.chance(3) {
            out.extend_from_slice(b"\r\n");
        }
        rest = &rest[n..];
    }
    if !rng.chance(5) {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

/// What a connection sends: pieces written with pauses between, then perhaps a half-close.
struct Plan {
    pieces: Vec<Vec<u8>>,
    half_close: bool,
    /// HEAD answers carry no body: only their first answer is read.
    head_only: bool,
    /// HTTP/2's preface: the answer is HTTP/2 frames, only the close is awaited.
    http2: bool,
    /// Requests sent whole, if known: once they are answered the case is over.
    requests: usize,
}

fn plan(rng: &mut Rng) -> Plan {
    let half_close = rng.chance(30);
    let mut http2 = false;
    let mut requests = 0;
    let (bytes, head_only) = match rng.below(20) {
        // Several requests in one write.
        0..=2 => {
            let mut all = Vec::new();
            let mut head_only = false;
            requests = rng.range(2, 5);
            for _ in 0..requests {
                let (r, h) = request(rng);
                head_only |= h;
                all.extend_from_slice(&r);
            }
            (all, head_only)
        }
        // A request cut short, in its head or its body.
        3 | 4 => {
            let (r, h) = request(rng);
            let cut = rng.below(r.len());
            (r[..cut].to_vec(), h)
        }
        5 => (rng.bytes(1, 300), false),
        6 => {
            let (r, h) = request(rng);
            (mutate(rng, r), h)
        }
        // A TLS client hello, or HTTP/2's preface, on the plain port.
        7 => {
            http2 = rng.chance(50);
            let hello: &[u8] = if http2 {
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"
            } else {
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
            };
            (hello.to_vec(), false)
        }
        _ => {
            requests = 1;
            request(rng)
        }
    };
    let mut pieces = Vec::new();
    if rng.chance(25) && bytes.len() > 1 {
        let mut rest = &bytes[..];
        while !rest.is_empty() && pieces.len() < 4 {
            let n = rng.range(1, rest.len() + 1);
            pieces.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            pieces.push(rest.to_vec());
        }
    } else {
        pieces.push(bytes);
    }
    Plan {
        pieces,
        half_close,
        head_only,
        http2,
        requests,
    }
}

// ---------------------------------------------------------------------------------------
// Answers.

/// What came back on one connection.
#[derive(Debug, Default)]
struct Answers {
    statuses: Vec<u16>,
    /// An answer's head said `text/event-stream`: the stream stays open, reading stops.
    event_stream: bool,
    /// Bytes that are not a well-formed answer.
    malformed: Option<String>,
}

/// Reads the answers in `bytes`, stopping at an event stream. `whole` says the server closed
/// cleanly after them: an answer cut short is then malformed, not still arriving.
fn answers(bytes: &[u8], head_only: bool, whole: bool) -> Answers {
    let mut out = Answers::default();
    let mut at = 0;
    while at < bytes.len() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&bytes[at..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if whole {
                    out.malformed = Some(format!(
                        "cut short: {:?}",
                        String::from_utf8_lossy(&bytes[at..])
                    ));
                }
                return out;
            }
            Err(e) => {
                out.malformed = Some(format!("{e}: {:?}", String::from_utf8_lossy(&bytes[at..])));
                return out;
            }
        };
        let status = response.code.unwrap_or_default();
        out.statuses.push(status);
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        if header("content-type").is_some_and(|ct| ct.starts_with("text/event-stream")) {
            out.event_stream = true;
            return out;
        }
        at += len;
        if (100..200).contains(&status) {
            continue;
        }
        if head_only {
            return out;
        }
        if status == 204 || status == 304 {
            continue;
        }
        if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            match skip_chunks(&bytes[at..]) {
                Some(n) => at += n,
                None => {
                    if whole {
                        out.malformed = Some("a chunked answer cut short".into());
                    }
                    return out;
                }
            }
        } else if let Some(n) =
            header("content-length").and_then(|n| n.trim().parse::<usize>().ok())
        {
            if bytes.len() - at < n {
                if whole {
                    out.malformed = Some("an answer shorter than its Content-Length".into());
                }
                return out;
            }
            at += n;
        } else {
            // Until the close.
            return out;
        }
    }
    out
}

/// The length of a chunked body at the start of `bytes`, if it is all there.
fn skip_chunks(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = bytes[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size = std::str::from_utf8(&bytes[at..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // No trailers from this server.
            return (bytes.get(at..at + 2)? == b"\r\n").then_some(at + 2);
        }
        at += size + 2;
        if at > bytes.len() {
            return None;
        }
    }
}

/// How one case ended.
#[derive(Debug)]
enum Ending {
    /// The server answered the one request sent, or closed the connection (after answering,
    /// or not).
    Closed(Answers),
    /// An event stream's head arrived; the stream is left open.
    EventStream(Answers),
    /// Neither an answer nor a close within [`HANG`] of the last byte sent.
    Hang(Answers),
}

async fn run_case(addr: SocketAddr, seed: u64) -> (Plan, Ending) {
    let mut rng = Rng(seed);
    let plan = plan(&mut rng);
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let mut received = Vec::new();
    let mut closed = false;
    let mut reset = false;
    for (i, piece) in plan.pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(rng.range(1, 30) as u64)).await;
        }
        // The server may close first (a refused body): what it answered is still read.
        if socket.write_all(piece).await.is_err() {
            break;
        }
    }
    if plan.half_close {
        let _ = socket.shutdown().await;
    }
    let deadline = Instant::now() + HANG;
    loop {
        let got = if plan.http2 {
            Answers::default()
        } else {
            answers(&received, plan.head_only, closed && !reset)
        };
        if got.event_stream {
            return (plan, Ending::EventStream(got));
        }
        // One request, answered: the rest would be the keep-alive's idle time.
        if plan.requests == 1 && got.statuses.iter().any(|s| *s >= 200) && got.malformed.is_none() {
            return (plan, Ending::Closed(got));
        }
        if closed {
            return (plan, Ending::Closed(got));
        }
        let mut chunk = [0u8; 16 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut chunk)).await {
            Ok(Ok(0)) => closed = true,
            // A close too: the server dropped a connection with bytes unread, and the reset
            // may have discarded the end of its answer.
            Ok(Err(_)) => (closed, reset) = (true, true),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Err(_) => {
                let got = if plan.http2 {
                    Answers::default()
                } else {
                    answers(&received, plan.head_only, false)
                };
                return (plan, Ending::Hang(got));
            }
        }
    }
}

/// What the run saw.
#[derive(Default)]
struct Tally {
    cases: u64,
    by_status: BTreeMap<u16, u64>,
    closed_unanswered: u64,
    event_streams: u64,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, seed: u64, plan: &Plan, ending: &Ending) {
        self.cases += 1;
        let (answers, hang) = match ending {
            Ending::Closed(a) => (a, false),
            Ending::EventStream(a) => {
                self.event_streams += 1;
                (a, false)
            }
            Ending::Hang(a) => (a, true),
        };
        if answers.statuses.is_empty() && matches!(ending, Ending::Closed(_)) {
            self.closed_unanswered += 1;
        }
        for status in &answers.statuses {
            *self.by_status.entry(*status).or_default() += 1;
        }
        let sent: Vec<u8> = plan.pieces.concat();
        let shown = String::from_utf8_lossy(&sent[..sent.len().min(1500)]).into_owned();
        let mut fail = |why: String| {
            self.failures.push(format!(
                "case {seed} (EMOSTREAM_FUZZ_CASE={seed}): {why}\n  sent {} bytes in {} piece(s){}: {shown:?}",
                sent.len(),
                plan.pieces.len(),
                if plan.half_close { ", then half-closed" } else { "" },
            ))
        };
        if let Some(status) = answers.statuses.iter().find(|s| **s >= 500) {
            fail(format!("answered {status}"));
        }
        if hang {
            fail(format!(
                "no answer and no close within {HANG:?} (answers so far: {:?})",
                answers.statuses
            ));
        }
        if let Some(malformed) = &answers.malformed {
            fail(format!("a malformed answer: {malformed}"));
        }
    }
}

async fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut socket = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    answers(&answer, false, true).statuses.first().copied()
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "an HTTP fuzz run of a minute: CI runs it with --include-ignored"]
async fn generated_requests_get_no_5xx_no_panic_and_no_hang() {
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    let default_hook = std::panic::take_hook();
    let seen = Arc::clone(&panics);
    std::panic::set_hook(Box::new(move |info| {
        seen.lock().unwrap().push(info.to_string());
        default_hook(info);
    }));

    let seed = env_u64("EMOSTREAM_FUZZ_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Rng(nanos as u64).next()
    });
    let one_case = env_u64("EMOSTREAM_FUZZ_CASE");
    let run_for = Duration::from_secs(env_u64("EMOSTREAM_FUZZ_SECS").unwrap_or(60));
    match one_case {
        Some(case) => println!("fuzz: replaying case {case} alone"),
        None => println!(
            "fuzz: seed {seed} (EMOSTREAM_FUZZ_SEED={seed} replays it), {} s, {CONCURRENCY} connections at once",
            run_for.as_secs()
        ),
    }

    // Short deadlines, so that a connection the server is right to keep waiting on is closed
    // well within HANG; a rate limit, so that its answers are fuzzed too.
    let (system, _) = common::start(&[
        "--header-timeout-ms",
        "500",
        "--idle-timeout-ms",
        "500",
        "--rate-limit",
        "5",
    ])
    .await;
    let addr = system.http_addr;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let began = Instant::now();
    match one_case {
        Some(case) => {
            let (plan, ending) = run_case(addr, case).await;
            println!("{ending:?}");
            tally.lock().unwrap().record(case, &plan, &ending);
        }
        None => {
            let next = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = (0..CONCURRENCY)
                .map(|_| {
                    let (next, tally) = (Arc::clone(&next), Arc::clone(&tally));
                    tokio::spawn(async move {
                        while began.elapsed() < run_for {
                            let case = case_seed(seed, next.fetch_add(1, Ordering::Relaxed));
                            let (plan, ending) = run_case(addr, case).await;
                            tally.lock().unwrap().record(case, &plan, &ending);
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await.unwrap();
            }
        }
    }

    let healthz = status_of(addr, "/healthz").await;
    let readyz = status_of(addr, "/readyz").await;
    let shutdown = tokio::time::timeout(Duration::from_secs(30), system.shutdown()).await;

    let tally = tally.lock().unwrap();
    println!(
        "fuzz: {} connections in {:.1} s; answers by status: {:?}; {} event streams; {} closed unanswered",
        tally.cases,
        began.elapsed().as_secs_f64(),
        tally.by_status,
        tally.event_streams,
        tally.closed_unanswered,
    );
    let mut failures = tally.failures.clone();
    failures.extend(
        panics
            .lock()
            .unwrap()
            .iter()
            .map(|p| format!("a panic: {p}")),
    );
    if healthz != Some(200) {
        failures.push(format!("/healthz answered {healthz:?} after the run"));
    }
    if readyz != Some(200) {
        failures.push(format!("/readyz answered {readyz:?} after the run"));
    }
    match shutdown {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("the shutdown failed: {e}")),
        Err(_) => failures.push("the shutdown did not finish within 30 s".into()),
    }
    let shown: Vec<&String> = failures.iter().take(20).collect();
    assert!(
        failures.is_empty(),
        "{} failure(s) (seed {seed}), the first {}:\n{}",
        failures.len(),
        shown.len(),
        shown
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
