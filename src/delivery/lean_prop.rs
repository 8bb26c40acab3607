//! Property tests of [`classify`], which reads the first request head of every connection
//! before anything else has looked at it. Heads are generated well formed, then varied
//! (methods, paths, versions, headers, what follows the head) and mutated byte by byte, and
//! written in arbitrary pieces. Whatever arrives, `classify` answers (within a timeout, the
//! client having closed its side) without panicking, and:
//! - a well-formed `GET` of an events path served here, alone, is an event stream;
//! - anything it serves as an event stream, warp's route would also have answered with `200`
//!   and `text/event-stream` (checked by asking the route through hyper);
//! - anything else goes to hyper with exactly the bytes read: they and what is left on the
//!   socket are what was sent;
//! - it gives up on a connection only when the client left mid-head.
//!
//! `PROPTEST_CASES` raises the case count for a longer hunt.

use dataflows::Topology;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

/// The tree every case runs against: hubs 0/0 to 1/1, all served here.
const TOPOLOGY: Topology = Topology {
    clusters: 2,
    subscribers: 2,
};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// What one case sends.
#[derive(Clone, Debug)]
struct Sent {
    bytes: Vec<u8>,
    /// Sizes of the writes the bytes are sent in, cycled.
    pieces: Vec<usize>,
}

/// A well-formed events `GET` for a hub that exists, with nothing after it.
fn events_head() -> impl Strategy<Value = Vec<u8>> {
    (
        0..TOPOLOGY.clusters,
        0..TOPOLOGY.subscribers,
        prop_oneof![
            Just(String::new()),
            Just("?".to_owned()),
            "\\?client_id=[a-zA-Z0-9%+-]{0,12}",
            "\\?[a-z]{1,5}=[a-z0-9]{0,5}(&client_id=[a-z0-9-]{1,8})?",
        ],
        select(vec!["HTTP/1.1", "HTTP/1.0"]),
        prop_oneof![
            Just(None),
            (0..u64::MAX).prop_map(|n| Some(n.to_string())),
            Just(Some(String::new())),
            Just(Some(" 7 ".to_owned())),
        ],
        select(vec!["Last-Event-ID", "last-event-id", "LAST-EVENT-ID"]),
        prop::collection::vec(header(), 0..8),
        select(vec!["\r\n", "\n"]),
    )
        .prop_map(
            |(cluster, subscriber, query, version, last, name, headers, eol)| {
                let mut head = format!(
                    "GET /clusters/{cluster}/subscribers/{subscriber}/events{query} {version}{eol}"
                );
                let mut headers: Vec<String> = headers
                    .into_iter()
                    .filter(|h| !h.to_ascii_lowercase().starts_with("last-event-id"))
                    .collect();
                if let Some(last) = last {
                    // Anywhere among the others: the first such header counts.
                    let at = cluster as usize % (headers.len() + 1);
                    headers.insert(at, format!("{name}: {last}"));
                }
                for h in headers {
                    head.push_str(&h);
                    head.push_str(eol);
                }
                head.push_str(eol);
                head.into_bytes()
            },
        )
}

/// A header line without its line end.
fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        "Host: [a-z0-9.:]{1,20}",
        Just("Accept: text/event-stream".to_owned()),
        Just("Connection: keep-alive".to_owned()),
        Just("Cache-Control: no-cache".to_owned()),
        "[A-Za-z][A-Za-z0-9-]{0,15}: [ -~]{0,30}",
    ]
}

/// Any request head: other methods, paths, versions and headers, and what may follow.
fn other_head() -> impl Strategy<Value = Vec<u8>> {
    (
        select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get", "GETT", "PRI", "G\0T",
        ]),
        prop_oneof![
            (0..4u32, 0..4u32).prop_map(|(c, s)| format!("/clusters/{c}/subscribers/{s}/events")),
            select(vec![
                "/clusters/0/subscribers/0/events/",
                "/clusters/0/subscribers/0/event",
                "//clusters/0/subscribers/0/events",
                "/clusters/-1/subscribers/0/events",
                "/clusters/+1/subscribers/0/events",
                "/clusters/01/subscribers/0/events",
                "/clusters/99999999999/subscribers/0/events",
                "/clusters/%30/subscribers/0/events",
                "/clusters/0/subscribers/0/events#x",
                "/clusters/0/subscribers/0/events?client_id=%zz&&",
                "http://h/clusters/0/subscribers/0/events",
                "*",
                "/clusters",
                "/healthz",
                "/emoji",
                "/",
                "",
            ])
            .prop_map(str::to_owned),
            "/[ -~]{0,40}",
        ],
        select(vec![
            "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/1", "", "http/1.1",
        ]),
        prop::collection::vec(
            prop_oneof![
                header().prop_map(String::into_bytes),
                "Last-Event-ID: [ -~]{0,12}".prop_map(String::into_bytes),
                Just(b"Last-Event-ID: \xff\xfe".to_vec()),
                "Content-Length: [0-9]{1,4}".prop_map(String::into_bytes),
                Just(b"Transfer-Encoding: chunked".to_vec()),
                Just(b"Bad Header: x".to_vec()),
                Just(b" folded".to_vec()),
            ],
            0..6,
        ),
        select(vec!["\r\n", "\n", "\r"]),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => Just(br#"{"user_id":"u","emoji_type":"x"}"#.to_vec()),
            1 => Just(b"GET /healthz HTTP/1.1\r\n\r\n".to_vec()),
            1 => prop::collection::vec(any::<u8>(), 1..64),
        ],
    )
        .prop_map(|(method, path, version, headers, eol, after)| {
            let mut head = format!("{method} {path} {version}{eol}").into_bytes();
            for h in headers {
                head.extend_from_slice(&h);
                head.extend_from_slice(eol.as_bytes());
            }
            head.extend_from_slice(eol.as_bytes());
            head.extend_from_slice(&after);
            head
        })
}

/// A well-formed events `GET` with one thing changed: most of what could make `classify`
/// serve a request that the route would refuse is one step away from a valid one.
fn varied_events_head() -> impl Strategy<Value = Vec<u8>> {
    let variation = prop_oneof![
        select(vec![
            "HEAD ", "POST ", "get ", "GETT ", " GET ", "GET  ", "OPTIONS "
        ])
        .prop_map(|to| ("GET ", to)),
        select(vec![
            "/events/",
            "/event",
            "/Events",
            "/events/x",
            "/eventsx"
        ])
        .prop_map(|to| ("/events", to)),
        select(vec![
            "/clusters/9",
            "/clusters/+0",
            "/clusters/-0",
            "/clusters/0x",
            "/clusters/"
        ])
        .prop_map(|to| ("/clusters/0", to)),
        select(vec![
            "/subscribers/9",
            "/subscribers/+1",
            "/subscribers/4294967296"
        ])
        .prop_map(|to| ("/subscribers/1", to)),
        select(vec![
            " HTTP/2.0",
            "",
            " http/1.1",
            " HTTP/1.1 x",
            " HTTP/1.10"
        ])
        .prop_map(|to| (" HTTP/1.1", to)),
        select(vec![
            "\nLast-Event-ID: soon\n",
            "\nLast-Event-ID: -1\n",
            "\nLast-Event-ID: 1.5\n",
            "\nLast-Event-ID: 18446744073709551616\n",
            "\nLast-Event-ID: \u{7f}\n",
            "\nBad Header: x\n",
            "\n folded\n",
        ])
        .prop_map(|to| ("\n", to)),
    ];
    (events_head(), variation, any::<bool>()).prop_map(|(head, (from, to), trailing)| {
        let mut head = replace_first(&head, from.as_bytes(), to.as_bytes());
        if trailing {
            head.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
        }
        head
    })
}

fn replace_first(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match bytes.windows(from.len()).position(|w| w == from) {
        Some(at) => [&bytes[..at], to, &bytes[at + from.len()..]].concat(),
        None => bytes.to_vec(),
    }
}

/// A head too long for `classify` to wait for the end of.
fn long_head() -> impl Strategy<Value = Vec<u8>> {
    (MAX_HEAD - 64..MAX_HEAD + 2048, any::<bool>()).prop_map(|(len, complete)| {
        let mut head = b"GET /clusters/0/subscribers/0/events HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(len, b'a');
        if complete {
            head.extend_from_slice(b"\r\n\r\n");
        }
        head
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Replace { at: usize, byte: u8 },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        3 => select(b"\r\n :/?&=0123456789GETH\t\0".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), 1..6usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::collection::vec(byte.clone(), 1..4))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), byte).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len();
        let at = |at: usize| at % (n + 1);
        match m {
            Mutation::Delete { at: a, len } => {
                let a = at(*a);
                bytes.drain(a..(a + len).min(n));
            }
            Mutation::Insert { at: a, bytes: new } => {
                let a = at(*a);
                bytes.splice(a..a, new.iter().copied());
            }
            Mutation::Replace { at: a, byte } if n > 0 => bytes[*a % n] = *byte,
            Mutation::Replace { .. } => {}
            Mutation::Truncate { at: a } => bytes.truncate(at(*a)),
        }
    }
    bytes
}

fn pieces() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![usize::MAX]),
        prop::collection::vec(1..64usize, 1..4),
        prop::collection::vec(1..3000usize, 1..3),
    ]
}

fn anything() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => varied_events_head(),
        3 => (events_head(), prop::collection::vec(mutation(), 1..4))
            .prop_map(|(head, m)| mutate(head, &m)),
        3 => other_head(),
        2 => (other_head(), prop::collection::vec(mutation(), 1..4))
            .prop_map(|(head, m)| mutate(head, &m)),
        1 => long_head(),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => (events_head(), other_head()).prop_map(|(mut a, b)| {
            a.extend_from_slice(&b);
            a
        }),
    ]
}

/// What `classify` made of a case.
enum Outcome {
    Events,
    /// Given to hyper: the bytes `classify` read, and what was left on the socket.
    Other {
        read: Vec<u8>,
        rest: Vec<u8>,
    },
    /// The client left before a whole head arrived.
    Gone,
    /// Answered and closed here, with this status.
    Refused(u16),
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `sent` in its pieces, closes the writing side, and classifies what arrives.
async fn classify_sent(sent: &Sent, registry: &Arc<Registry>) -> Outcome {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    client.set_nodelay(true).unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    let bytes = sent.bytes.clone();
    let pieces = sent.pieces.clone();
    let writer = tokio::spawn(async move {
        let mut at = 0;
        // After a few pieces the rest goes at once: the pauses between pieces are what cost.
        for (i, size) in pieces.iter().cycle().enumerate() {
            if at >= bytes.len() {
                break;
            }
            let size = if i < 8 { *size } else { usize::MAX };
            let end = at.saturating_add(size).min(bytes.len());
            // A client that left early is a case like any other.
            if client.write_all(&bytes[at..end]).await.is_err() {
                return client;
            }
            at = end;
            // Lets `classify` read this piece before the next arrives.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = client.shutdown().await;
        client
    });
    let classified = tokio::time::timeout(
        Duration::from_secs(5),
        classify(&mut server, registry, None),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "classify hung on {:?}",
            String::from_utf8_lossy(&sent.bytes)
        )
    });
    let outcome = match classified {
        Ok(Request::Events(_) | Request::WebSocket(..)) => Outcome::Events,
        Ok(Request::Refused(refusal)) => Outcome::Refused(refusal.status),
        Ok(Request::Other(read)) => {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
                .await
                .expect("the rest of the bytes arrive")
                .unwrap();
            Outcome::Other {
                read: read.to_vec(),
                rest,
            }
        }
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
            Outcome::Gone
        }
    };
    drop(writer.await.unwrap());
    outcome
}

/// What warp's events route answers to `bytes`: the status and whether the body is an event
/// stream. hyper reads the bytes as the server's would.
async fn warp_answers(bytes: &[u8], registry: &Arc<Registry>) -> (u16, bool) {
    let routes = super::super::routes::routes(
        Arc::clone(registry),
        "http://127.0.0.1:1".into(),
        super::super::routes::Registration::default(),
    );
    let (server, mut client) = tokio::io::duplex(1 << 16);
    let service = hyper_util::service::TowerToHyperService::new(warp::service(routes));
    let served = tokio::spawn(
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service),
    );
    client.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let head = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    served.abort();
    assert!(
        head.is_ok(),
        "warp answers {:?}",
        String::from_utf8_lossy(bytes)
    );
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    (status, text.contains("content-type: text/event-stream"))
}

fn check(sent: &Sent, must_be_events: bool) -> Result<(), TestCaseError> {
    let registry = Arc::new(Registry::for_tests(TOPOLOGY, 10));
    let shown = String::from_utf8_lossy(&sent.bytes).into_owned();
    runtime().block_on(async {
        match classify_sent(sent, &registry).await {
            Outcome::Events => {
                if !must_be_events {
                    let (status, stream) = warp_answers(&sent.bytes, &registry).await;
                    prop_assert!(
                        status == 200 && stream,
                        "served as an event stream, but warp answers {status} to {shown:?}"
                    );
                }
            }
            Outcome::Other { read, rest } => {
                prop_assert!(
                    !must_be_events,
                    "a well-formed events GET given to hyper: {shown:?}"
                );
                prop_assert!(!read.is_empty());
                let mut all = read;
                all.extend_from_slice(&rest);
                prop_assert!(
                    all == sent.bytes,
                    "bytes lost or changed on the way to hyper: {shown:?}"
                );
            }
            // Only an events GET with a request pipelined behind it is refused here.
            Outcome::Refused(status) => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut request = httparse::Request::new(&mut headers);
                let pipelined = matches!(
                    request.parse(&sent.bytes),
                    Ok(httparse::Status::Complete(len)) if len < sent.bytes.len()
                );
                let events = matches!(
                    (request.method, request.path),
                    (Some(m), Some(p)) if EventsRequest::parse(m, p, None).is_some()
                );
                prop_assert!(
                    status == 400 && pipelined && events,
                    "refused {status} here, and not an events GET with more behind it: {shown:?}"
                );
            }
            Outcome::Gone => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let partial = matches!(
                    httparse::Request::new(&mut headers).parse(&sent.bytes),
                    Ok(httparse::Status::Partial)
                );
                prop_assert!(
                    partial && sent.bytes.len() < MAX_HEAD,
                    "gave up on a connection that sent a whole head, or too long a one: {shown:?}"
                );
                prop_assert!(
                    !must_be_events,
                    "a well-formed events GET was dropped: {shown:?}"
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(cases(200))]

    #[test]
    fn a_well_formed_events_get_is_an_event_stream(bytes in events_head(), pieces in pieces()) {
        check(&Sent { bytes, pieces }, true)?;
    }

    #[test]
    fn anything_else_answers_and_goes_to_hyper_whole(bytes in anything(), pieces in pieces()) {
        check(&Sent { bytes, pieces }, false)?;
    }
}
