//! Tokens from the outside: JWTs minted by the `jsonwebtoken` crate's encoder (and by
//! `emostream token`), sent to a running system as a client would, checked by status, error
//! body, `WWW-Authenticate`, what reaches the windows and what `/metrics` counts. The keys under
//! `tests/data/keys` are test keys, made with `openssl genpkey`.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{metric, poll_until, register, start, wait_for_total, Follower};
use emostream::system::System;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, COOKIE};
use serde_json::{json, Value};

const SECRET: &str = "a test secret of more than thirty-two bytes";
const OTHER_SECRET: &str = "another secret, also more than thirty-two bytes";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys")
}

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).unwrap()
}

/// Claims valid for an hour, for `sub`, with an `emostream` claim when `grants` is not null.
fn claims(sub: &str, grants: Value) -> Value {
    let mut c = json!({"sub": sub, "exp": now() + 3600, "iat": now()});
    if !grants.is_null() {
        c["emostream"] = grants;
    }
    c
}

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A token with `alg: none` and no signature, as an attacker would send it.
fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{body}.")
}

fn write_secret(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    // A trailing newline, as an editor leaves it: not part of the secret.
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

/// A system checking HS256 tokens signed with [`SECRET`], with `extra` flags: the secret lies
/// in the folder returned (kept while the test runs), at the path returned.
async fn start_hs256(extra: &[&str]) -> (System, common::Seen, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_secret(dir.path(), "secret", SECRET);
    let mut flags = vec!["--auth-hs256-secret-file", secret.to_str().unwrap()];
    flags.extend_from_slice(extra);
    let (system, seen) = start(&flags).await;
    (system, seen, dir, secret)
}

fn reaction(user: Option<&str>, stream: Option<&str>) -> Value {
    let mut r = json!({"emoji_type": "🔥", "timestamp": common::now_ms()});
    if let Some(user) = user {
        r["user_id"] = json!(user);
    }
    if let Some(stream) = stream {
        r["stream_id"] = json!(stream);
    }
    r
}

/// POSTs one reaction with `headers`; the status and the body.
async fn post(
    system: &System,
    headers: &[(&str, String)],
    body: &Value,
) -> (u16, Value, HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/emoji", system.http_addr))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

/// A 401 as the contract gives it: `unauthorized`, `WWW-Authenticate: Bearer`, a message.
fn assert_unauthorized(what: &str, (status, body, headers): (u16, Value, HeaderMap)) {
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["error"], "unauthorized", "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    assert_eq!(
        headers["www-authenticate"], "Bearer error=\"invalid_token\"",
        "{what}"
    );
}

fn assert_forbidden(what: &str, code: &str, (status, body, _): (u16, Value, HeaderMap)) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
}

fn assert_accepted(what: &str, (status, body, _): (u16, Value, HeaderMap)) {
    assert_eq!(status, 202, "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_takes_the_user_from_a_valid_token_and_refuses_every_bad_one() {
    let (system, seen, _dir, secret) = start_hs256(&[]).await;

    let alice = hs256(SECRET, &claims("alice", Value::Null));
    assert_accepted(
        "no user_id: the token's sub",
        post(&system, &bearer(&alice), &reaction(None, None)).await,
    );
    assert_accepted(
        "user_id equal to sub",
        post(&system, &bearer(&alice), &reaction(Some("alice"), None)).await,
    );
    assert_accepted(
        "the cookie, as a browser sends it",
        post(
            &system,
            &[("cookie", format!("theme=dark; emostream_token={alice}"))],
            &reaction(None, None),
        )
        .await,
    );
    let response = post(&system, &bearer(&alice), &reaction(Some("bob"), None)).await;
    assert_forbidden("another user's reaction", "user_mismatch", response);

    let refused = [
        ("no token", vec![]),
        (
            "expired",
            bearer(&hs256(SECRET, &json!({"sub": "alice", "exp": now() - 60}))),
        ),
        (
            "not yet valid",
            bearer(&hs256(
                SECRET,
                &json!({"sub": "alice", "exp": now() + 3600, "nbf": now() + 600}),
            )),
        ),
        (
            "issued in the future",
            bearer(&hs256(
                SECRET,
                &json!({"sub": "alice", "exp": now() + 3600, "iat": now() + 600}),
            )),
        ),
        (
            "signed with another secret",
            bearer(&hs256(OTHER_SECRET, &claims("alice", Value::Null))),
        ),
        ("alg none", bearer(&unsigned(&claims("alice", Value::Null)))),
        ("no exp", bearer(&hs256(SECRET, &json!({"sub": "alice"})))),
        ("not a JWT", bearer("not-a-token")),
        (
            "another scheme",
            vec![("authorization", "Basic YWxpY2U6cHc=".into())],
        ),
        (
            // The header is the token when both come: a bad one is not rescued by the cookie.
            "a bad header beside a good cookie",
            vec![
                ("authorization", "Bearer not-a-token".into()),
                ("cookie", format!("emostream_token={alice}")),
            ],
        ),
    ];
    for (what, headers) in &refused {
        assert_unauthorized(what, post(&system, headers, &reaction(None, None)).await);
    }

    // Publish globs.
    let fan = hs256(SECRET, &claims("fan", json!({"publish": ["match-*"]})));
    assert_accepted(
        "a stream the token covers",
        post(&system, &bearer(&fan), &reaction(None, Some("match-42"))).await,
    );
    let response = post(&system, &bearer(&fan), &reaction(None, Some("concert-1"))).await;
    assert_forbidden("a stream it does not", "stream_forbidden", response);
    let response = post(&system, &bearer(&fan), &reaction(None, None)).await;
    assert_forbidden(
        "the default stream is a stream too",
        "stream_forbidden",
        response,
    );

    // A batch is refused whole when one item is not the token's user.
    let response = reqwest::Client::new()
        .post(format!("http://{}/emoji/batch", system.http_addr))
        .bearer_auth(&alice)
        .json(&json!([
            reaction(None, None),
            reaction(Some("mallory"), None)
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "user_mismatch"
    );

    // `emostream token`, as a demo or a script uses it.
    let minted = Command::new(env!("CARGO_BIN_EXE_emostream"))
        .args(["token", "--secret-file", secret.to_str().unwrap()])
        .args([
            "--sub",
            "carol",
            "--publish",
            "match-*,cup-*",
            "--ttl-secs",
            "600",
        ])
        .output()
        .unwrap();
    assert!(minted.status.success(), "{minted:?}");
    let carol = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    assert_accepted(
        "a token of emostream token",
        post(
            &system,
            &bearer(&carol),
            &reaction(Some("carol"), Some("cup-1")),
        )
        .await,
    );
    let response = post(&system, &bearer(&carol), &reaction(None, Some("other"))).await;
    assert_forbidden("outside its --publish", "stream_forbidden", response);

    // Only the accepted reactions are counted: three on the default stream, two elsewhere.
    wait_for_total(&system, &seen, 5).await;
    let counted: u64 = seen.lock().unwrap().iter().map(|w| w.total).sum();
    assert_eq!(counted, 5);

    let addr = system.http_addr;
    let refusals = |reason: &'static str| async move {
        metric(
            addr,
            &format!("emostream_auth_refused_total{{reason=\"{reason}\"}}"),
        )
        .await
    };
    assert_eq!(refusals("missing").await, 1.0);
    assert_eq!(refusals("expired").await, 1.0);
    assert_eq!(refusals("not_yet_valid").await, 2.0);
    assert_eq!(refusals("bad_signature").await, 1.0);
    assert_eq!(refusals("claims").await, 1.0);
    assert_eq!(refusals("user_mismatch").await, 2.0);
    assert_eq!(refusals("stream_forbidden").await, 3.0);
    assert!(refusals("malformed").await >= 4.0);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_counts_per_sub_and_listings_stay_public_without_auth_subscribers() {
    let (system, _seen, _dir, _secret) =
        start_hs256(&["--rate-limit", "1", "--rate-limit-burst", "2"]).await;
    // Two tokens of one user are one user to the limit; another user has a budget of its own.
    let first = hs256(SECRET, &claims("fay", json!({"publish": ["*"]})));
    let second = hs256(SECRET, &claims("fay", Value::Null));
    let other = hs256(SECRET, &claims("gus", Value::Null));
    assert_accepted(
        "fay, 1",
        post(&system, &bearer(&first), &reaction(None, None)).await,
    );
    assert_accepted(
        "fay, 2",
        post(&system, &bearer(&second), &reaction(None, None)).await,
    );
    let (status, body, headers) = post(&system, &bearer(&first), &reaction(None, None)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert!(headers.contains_key("retry-after"));
    assert_accepted(
        "gus",
        post(&system, &bearer(&other), &reaction(None, None)).await,
    );

    let base = format!("http://{}", system.http_addr);
    for path in ["/streams", "/clusters"] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "{path} needs no token without --auth-subscribers"
        );
    }
    let registered = register(&reqwest::Client::new(), &base, None).await;
    let open = Follower::open(
        &reqwest::Client::new(),
        registered["events_url"].as_str().unwrap(),
        None,
    )
    .await;
    open.close().await;
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_and_issuer_are_required_when_configured() {
    let (system, _seen, _dir, _secret) = start_hs256(&[
        "--auth-audience",
        "emostream",
        "--auth-issuer",
        "https://id.example",
    ])
    .await;
    let with = |aud: Option<&str>, iss: Option<&str>| {
        let mut c = claims("hal", Value::Null);
        if let Some(aud) = aud {
            c["aud"] = json!(aud);
        }
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        hs256(SECRET, &c)
    };
    let good = with(Some("emostream"), Some("https://id.example"));
    assert_accepted(
        "aud and iss as configured",
        post(&system, &bearer(&good), &reaction(None, None)).await,
    );
    for (what, token) in [
        ("no aud", with(None, Some("https://id.example"))),
        (
            "another aud",
            with(Some("billing"), Some("https://id.example")),
        ),
        ("no iss", with(Some("emostream"), None)),
        (
            "another iss",
            with(Some("emostream"), Some("https://evil.example")),
        ),
        (
            "a sub that is no user id",
            hs256(
                SECRET,
                &json!({"sub": " ", "exp": now() + 600, "aud": "emostream", "iss": "https://id.example"}),
            ),
        ),
    ] {
        assert_unauthorized(
            what,
            post(&system, &bearer(&token), &reaction(None, None)).await,
        );
    }
    assert_eq!(
        metric(
            system.http_addr,
            "emostream_auth_refused_total{reason=\"claims\"}"
        )
        .await,
        5.0
    );
    // A token too long to be one is refused before any check.
    let (_, body, _) = post(&system, &bearer(&"a".repeat(10_000)), &reaction(None, None)).await;
    assert!(
        body["message"].as_str().unwrap().contains("longer"),
        "{body}"
    );
    // A proxy's Basic credentials are not a token: the cookie beside them is.
    assert_accepted(
        "Basic header and a token cookie",
        post(
            &system,
            &[
                ("authorization", "Basic cHJveHk6cHc=".into()),
                ("cookie", format!("emostream_token={good}")),
            ],
            &reaction(None, None),
        )
        .await,
    );
    system.shutdown().await.unwrap();
}

/// A JWK set of an RSA, an EC and an Ed25519 key, each with its `kid`.
fn jwks() -> (JwkSet, [(Algorithm, &'static str, EncodingKey); 3]) {
    let keys = [
        (
            Algorithm::RS256,
            "rsa-1",
            EncodingKey::from_rsa_pem(&key_file("rsa.pem")).unwrap(),
        ),
        (
            Algorithm::ES256,
            "ec-1",
            EncodingKey::from_ec_pem(&key_file("ec.pem")).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            "ed-1",
            EncodingKey::from_ed_pem(&key_file("ed25519.pem")).unwrap(),
        ),
    ];
    let set = JwkSet {
        keys: keys
            .iter()
            .map(|(alg, kid, key)| {
                let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
                jwk.common.key_id = Some((*kid).to_owned());
                jwk
            })
            .collect(),
    };
    (set, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwk_set_chooses_the_key_by_kid_and_each_key_takes_its_own_algorithm_only() {
    let dir = tempfile::tempdir().unwrap();
    let (set, keys) = jwks();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, serde_json::to_vec(&set).unwrap()).unwrap();
    let (system, seen) = start(&["--auth-jwks-file", file.to_str().unwrap()]).await;

    let c = claims("dana", Value::Null);
    for (alg, kid, key) in &keys {
        assert_accepted(
            &format!("{alg:?} with kid {kid}"),
            post(
                &system,
                &bearer(&signed(*alg, Some(kid), key, &c)),
                &reaction(None, None),
            )
            .await,
        );
    }

    let rsa = &keys[0].2;
    let other_rsa = EncodingKey::from_rsa_pem(&key_file("rsa-other.pem")).unwrap();
    // The classic confusion: HMAC keyed with the RSA public key, which anyone has.
    let public_as_secret = EncodingKey::from_secret(&key_file("rsa.pub.pem")).unwrap();
    let refused = [
        (
            "an unknown kid",
            signed(Algorithm::RS256, Some("rsa-9"), rsa, &c),
        ),
        (
            "no kid among several keys",
            signed(Algorithm::RS256, None, rsa, &c),
        ),
        (
            "signed by another RSA key",
            signed(Algorithm::RS256, Some("rsa-1"), &other_rsa, &c),
        ),
        (
            "HS256 with the RSA public key as its secret",
            signed(Algorithm::HS256, Some("rsa-1"), &public_as_secret, &c),
        ),
        (
            "the EC key's token naming the RSA key",
            signed(Algorithm::ES256, Some("rsa-1"), &keys[1].2, &c),
        ),
        ("alg none", unsigned(&c)),
    ];
    for (what, token) in &refused {
        assert_unauthorized(
            what,
            post(&system, &bearer(token), &reaction(None, None)).await,
        );
    }
    assert_eq!(
        metric(
            system.http_addr,
            "emostream_auth_refused_total{reason=\"unknown_key\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            system.http_addr,
            "emostream_auth_refused_total{reason=\"bad_signature\"}"
        )
        .await,
        3.0
    );
    wait_for_total(&system, &seen, 3).await;
    system.shutdown().await.unwrap();
}

fn client_with(name: reqwest::header::HeaderName, value: String) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_str(&value).unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_need_a_token_for_their_stream_and_an_open_stream_ends_when_it_expires() {
    let (system, _seen, _dir, _secret) =
        start_hs256(&["--auth-subscribers", "--auth-leeway-secs", "0"]).await;
    let base = format!("http://{}", system.http_addr);
    let anonymous = reqwest::Client::new();
    let viewer_token = hs256(SECRET, &claims("viewer", json!({"subscribe": ["match-*"]})));
    let viewer = client_with(AUTHORIZATION, format!("Bearer {viewer_token}"));

    // Listings need a token, any valid one.
    for path in ["/streams", "/clusters"] {
        let response = anonymous.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        let response = viewer.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }

    // Registration: a token whose subscribe patterns match the stream.
    let response = anonymous
        .post(format!("{base}/clients"))
        .json(&json!({"stream_id": "match-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = viewer
        .post(format!("{base}/clients"))
        .json(&json!({"stream_id": "concert-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "stream_forbidden"
    );
    let publisher = hs256(SECRET, &claims("publisher", Value::Null));
    let response = client_with(AUTHORIZATION, format!("Bearer {publisher}"))
        .post(format!("{base}/clients"))
        .json(&json!({"stream_id": "match-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "no subscribe claim: no stream to watch"
    );
    let registered = register(&viewer, &base, Some("match-1")).await;
    let events_url = registered["events_url"].as_str().unwrap().to_owned();

    // Event streams: the same rule, from the header or from the cookie.
    let response = anonymous.get(&events_url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let forbidden_url = events_url.replace("match-1", "concert-1");
    assert_ne!(forbidden_url, events_url);
    let response = viewer.get(&forbidden_url).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let by_header = Follower::open(&viewer, &events_url, None).await;
    let by_cookie = Follower::open(
        &client_with(COOKIE, format!("emostream_token={viewer_token}")),
        &events_url,
        None,
    )
    .await;

    // A token about to expire: its stream is open, then ends at the expiry.
    let short = hs256(
        SECRET,
        &json!({"sub": "brief", "exp": now() + 3, "emostream": {"subscribe": ["*"]}}),
    );
    let brief = Follower::open(
        &client_with(AUTHORIZATION, format!("Bearer {short}")),
        &events_url,
        None,
    )
    .await;
    // The WebSocket door: the same rule, header or cookie, and the same end at expiry.
    let ws_url = common::ws::ws_url(&events_url, None);
    match tokio_tungstenite::connect_async(&ws_url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("a WebSocket without a token: {:?}", other.map(|(_, r)| r)),
    }
    let forbidden_ws = common::ws::ws_url(&forbidden_url, None);
    let bearer_header = format!("Bearer {viewer_token}");
    match tokio_tungstenite::connect_async({
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = forbidden_ws.as_str().into_client_request().unwrap();
        r.headers_mut()
            .insert("authorization", bearer_header.parse().unwrap());
        r
    })
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!(
            "a WebSocket of a forbidden stream: {:?}",
            other.map(|(_, r)| r)
        ),
    }
    let ws_by_header = common::ws::open(&ws_url, &[("authorization", &bearer_header)]).await;
    let cookie = format!("emostream_token={viewer_token}");
    // A browser sends the cookie whichever page opens the socket: only this server's pages
    // may use it (WebSockets have no CORS).
    let own_page = format!("http://{}", system.http_addr);
    let ws_by_cookie =
        common::ws::open(&ws_url, &[("cookie", &cookie), ("origin", &own_page)]).await;
    match tokio_tungstenite::connect_async({
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = ws_url.as_str().into_client_request().unwrap();
        r.headers_mut().insert("cookie", cookie.parse().unwrap());
        r.headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        r
    })
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!(
            "a foreign page's WebSocket with the cookie: {:?}",
            other.map(|(_, r)| r)
        ),
    }
    let short_bearer = format!("Bearer {short}");
    let ws_brief = common::ws::open(&ws_url, &[("authorization", &short_bearer)]).await;

    brief.wait_ended(Duration::from_secs(15)).await;
    ws_brief.wait_ended(Duration::from_secs(15)).await;
    assert_eq!(
        ws_brief.end(),
        Some(common::sse::End::ClosedWith(
            4001,
            "the token expired: reconnect with a fresh one".into()
        ))
    );
    assert!(ws_by_header.end().is_none());
    assert!(ws_by_cookie.end().is_none());
    assert!(
        by_header.end().is_none(),
        "a valid token's stream stays open"
    );
    assert!(
        by_cookie.end().is_none(),
        "a valid cookie's stream stays open"
    );
    assert_eq!(
        metric(system.http_addr, "emostream_streams_expired_total").await,
        2.0
    );
    // And its token opens nothing more.
    let response = client_with(AUTHORIZATION, format!("Bearer {short}"))
        .get(&events_url)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    by_header.close().await;
    by_cookie.close().await;
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_keys_without_a_restart_and_a_broken_file_keeps_the_old_ones() {
    let (system, _seen, dir, _secret) = start_hs256(&[]).await;
    let old = hs256(SECRET, &claims("erin", Value::Null));
    let new = hs256(OTHER_SECRET, &claims("erin", Value::Null));
    assert_accepted(
        "the old key",
        post(&system, &bearer(&old), &reaction(None, None)).await,
    );
    assert_unauthorized(
        "the new key, early",
        post(&system, &bearer(&new), &reaction(None, None)).await,
    );

    let hangup = || {
        let status = Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    write_secret(dir.path(), "secret", OTHER_SECRET);
    hangup();
    poll_until("the new key is in use", Duration::from_secs(10), || async {
        match post(&system, &bearer(&new), &reaction(None, None)).await.0 {
            202 => Ok(()),
            other => Err(format!("{other}")),
        }
    })
    .await;
    assert_unauthorized(
        "the old key, once rotated out (a remembered token is forgotten)",
        post(&system, &bearer(&old), &reaction(None, None)).await,
    );

    // A secret too short to use: the reload fails, the keys in use stay.
    write_secret(dir.path(), "secret", "short");
    hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_accepted(
        "the current key",
        post(&system, &bearer(&new), &reaction(None, None)).await,
    );
    system.shutdown().await.unwrap();
}

#[test]
fn start_refuses_a_key_file_it_cannot_use_and_says_which_flag() {
    let dir = tempfile::tempdir().unwrap();
    let short = write_secret(dir.path(), "short", "too short");
    let jwks_with_secret = dir.path().join("oct.json");
    std::fs::write(
        &jwks_with_secret,
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#,
    )
    .unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--auth-hs256-secret-file", short.to_str().unwrap()],
            "--auth-hs256-secret-file",
        ),
        (
            &["--auth-hs256-secret-file", "/nonexistent/secret"],
            "cannot read",
        ),
        (
            &["--auth-jwks-file", jwks_with_secret.to_str().unwrap()],
            "oct",
        ),
        (
            &["--auth-subscribers"],
            "--auth-hs256-secret-file or --auth-jwks-file",
        ),
    ];
    for (flags, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_emostream"))
            .args(["run", "--http", "127.0.0.1:0"])
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}

/// `tests/browser/token.mjs` pastes a token into the dashboard of a server with
/// `--auth-subscribers`, sees it kept in the cookie, goes live and has a click counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node, Chromium and `npm ci --prefix tests/browser`; run with --include-ignored"]
async fn the_dashboard_takes_a_pasted_token_into_its_cookie() {
    let (scripts, chromium) = common::browser::prerequisites();
    let (system, _seen, _dir, _secret) = start_hs256(&["--auth-subscribers"]).await;
    let token = hs256(SECRET, &claims("browser", json!({"subscribe": ["*"]})));
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-token.png");
    let mut node = Command::new("node");
    node.arg(scripts.join("token.mjs"))
        .arg(format!("http://{}/", system.http_addr))
        .arg(&token)
        .arg(&screenshot)
        .env("CHROMIUM", &chromium);
    let status = tokio::task::spawn_blocking(move || node.status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser test failed: {status}");
    system.shutdown().await.unwrap();
}
