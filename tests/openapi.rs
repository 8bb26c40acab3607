//! `docs/openapi.json` against the server it describes: every documented operation is served
//! with a documented status and content type, the routes that take a token refuse a request
//! without one when tokens are on (and the others do not), and `GET /openapi.json` serves the
//! document. Schemathesis (`tests/openapi/run-schemathesis.sh`, run by CI) checks the bodies.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use common::{register, start};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "the secret of the openapi test, over 32 bytes";

fn document() -> Value {
    serde_json::from_str(emostream::openapi::DOCUMENT).unwrap()
}

/// Every (method, path template, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    // Deleting the client comes last: the event stream uses it.
    ops.sort_by_key(|(method, _, _)| method == "delete");
    ops
}

/// Whether the operation takes a token: its security lists a scheme.
fn takes_a_token(op: &Value) -> bool {
    op["security"].as_array().is_some_and(|s| {
        s.iter()
            .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
    })
}

/// The documented example of a JSON request body, if the operation takes one.
fn example_body(op: &Value) -> Option<Value> {
    let json = &op["requestBody"]["content"]["application/json"];
    if json.is_null() {
        return None;
    }
    if !json["example"].is_null() {
        return Some(json["example"].clone());
    }
    json["examples"]
        .as_object()
        .and_then(|e| e.values().next())
        .map(|e| e["value"].clone())
        .or(Some(json!({})))
}

fn without_user(reaction: &mut Value) {
    if let Some(fields) = reaction.as_object_mut() {
        fields.remove("user_id");
    }
}

fn token() -> String {
    let now = common::now_ms() as u64 / 1000;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "openapi", "exp": now + 600, "emostream": {"subscribe": ["*"]}}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served_as_documented_and_guarded_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let (system, _seen) = start(&[
        "--auth-hs256-secret-file",
        secret.to_str().unwrap(),
        "--auth-subscribers",
    ])
    .await;
    let base = format!("http://{}", system.http_addr);
    let token = token();
    let http = reqwest::Client::new();
    let authorized = {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let client = register(&authorized, &base, None).await;
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    for scheme in ["bearerAuth", "cookieAuth"] {
        assert!(
            doc["components"]["securitySchemes"][scheme].is_object(),
            "{scheme} is declared"
        );
    }

    let ops = operations(&doc);
    assert!(ops.len() >= 10, "{ops:?}");
    for (method, template, op) in &ops {
        let path = template
            .replace("{cluster}", &client["cluster"].to_string())
            .replace("{subscriber}", &client["subscriber"].to_string())
            .replace("{client_id}", client["client_id"].as_str().unwrap())
            .replace("{stream_id}", "default");
        assert!(!path.contains('{'), "{template}: a parameter left unfilled");
        let what = format!("{} {template}", method.to_uppercase());
        let request = |http: &reqwest::Client| {
            let mut r = http.request(
                method.to_uppercase().parse().unwrap(),
                format!("{base}{path}"),
            );
            if let Some(mut body) = example_body(op) {
                // The token's user stands in for the example's.
                match &mut body {
                    Value::Array(items) => items.iter_mut().for_each(without_user),
                    item => without_user(item),
                }
                r = r.json(&body);
            }
            r
        };

        // Without a token.
        if method != "delete" {
            let response = request(&http).send().await.unwrap();
            let status = response.status().as_u16();
            if takes_a_token(op) {
                assert_eq!(status, 401, "{what} without a token");
            } else {
                assert_ne!(status, 401, "{what} takes no token");
            }
        }

        // With one.
        let response = request(&authorized).send().await.unwrap();
        let status = response.status().as_u16().to_string();
        let documented = &op["responses"][&status];
        assert!(
            documented.is_object(),
            "{what} answered {status}, which the document does not list"
        );
        // Nothing is active yet, so the one stream asked for is unknown; a plain GET of the
        // WebSocket is no upgrade (tests/websocket.rs upgrades); all else succeeds.
        match template.as_str() {
            "/streams/{stream_id}" => assert_eq!(status, "404", "{what}"),
            t if t.ends_with("/ws") => assert_eq!(status, "400", "{what}"),
            _ => assert!(
                status.starts_with('2'),
                "{what} with a token answered {status}"
            ),
        }
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let documented = match documented["$ref"].as_str() {
            Some(pointer) => doc.pointer(&pointer[1..]).unwrap().clone(),
            None => documented.clone(),
        };
        match (&content_type, documented["content"].as_object()) {
            (Some(ct), Some(content)) => assert!(
                content.contains_key(ct),
                "{what} {status}: content type {ct} is not documented ({:?})",
                content.keys().collect::<Vec<_>>()
            ),
            (None, None) => {}
            (ct, content) => panic!("{what} {status}: sent {ct:?}, documented {content:?}"),
        }
        if content_type.as_deref() == Some("application/json") && status != "204" {
            let body: Value = response.json().await.unwrap();
            assert_ne!(body["error"], "not_found", "{what}: no such route");
        }
    }

    // The document served is the document.
    let served: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, doc);
    system.shutdown().await.unwrap();
}
