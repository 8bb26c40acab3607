//! Delivery routes: registration, the tree, and each subscriber's event stream.
//!
//! These serve one process's view; with several processes, the ones that do not hold the
//! registrations put `crate::peers`' forwarding routes in front of these.

use std::net::SocketAddr;
use std::sync::Arc;

use dataflows::HubId;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderName, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

use super::events::{self, events_path, EventsRequest, Opening, SSE_HEADERS};
use super::hub::ClientStream;
use super::registry::Registry;
use crate::http_error::ApiError;

/// `POST /clients`, `DELETE /clients/{id}`, `GET /clusters`,
/// `GET /clusters/{c}/subscribers/{s}/events`. `local` names this server in `events_url`
/// when a request has no `Host`.
pub fn routes(registry: Arc<Registry>, local: SocketAddr) -> BoxedFilter<(Response,)> {
    let with_registry = warp::any().map(move || Arc::clone(&registry));
    let register = warp::path!("clients")
        .and(warp::post())
        .and(crate::http_error::json_content_type())
        .and(with_registry.clone())
        .and(warp::header::optional::<String>("host"))
        .map(move |registry: Arc<Registry>, host: Option<String>| {
            register(&registry, host.unwrap_or_else(|| local.to_string()))
        });
    let release = warp::path!("clients" / String)
        .and(warp::delete())
        .and(with_registry.clone())
        .and_then(|id: String, registry: Arc<Registry>| async move {
            if registry.release(&id) {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(warp::reject::custom(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_client",
                    format!("no client {id} is registered (already released?)"),
                )))
            }
        });
    let tree = warp::path!("clusters")
        .and(warp::get())
        .and(with_registry.clone())
        .map(|registry: Arc<Registry>| warp::reply::json(&registry.view()).into_response());
    let events = warp::path!("clusters" / u32 / "subscribers" / u32 / "events")
        .and(warp::get())
        .and(with_registry)
        .and(warp::header::optional::<String>("last-event-id"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and_then(
            |cluster: u32,
             subscriber: u32,
             registry: Arc<Registry>,
             last: Option<String>,
             query: String| async move {
                let request = EventsRequest {
                    hub: HubId {
                        cluster,
                        subscriber,
                    },
                    query: Some(&query),
                    last_event_id: last.as_deref(),
                };
                match events::open(&registry, &request) {
                    Opening::Here(stream) => Ok(sse_response(stream)),
                    Opening::Elsewhere(location) => Ok(redirect(&location)),
                    Opening::Refused(e) => Err(warp::reject::custom(e)),
                }
            },
        );
    register
        .or(release)
        .unify()
        .or(tree)
        .unify()
        .or(events)
        .unify()
        .boxed()
}

/// Registers a client; its `events_url` points at the process that serves its stream, else at
/// `host`.
fn register(registry: &Registry, host: String) -> Response {
    let assignment = registry.register();
    let path = format!(
        "{}?client_id={}",
        events_path(assignment.hub),
        assignment.client_id
    );
    let base = registry
        .hub(assignment.hub)
        .and_then(|hub| registry.serving(hub.index).url)
        .unwrap_or_else(|| format!("http://{host}"));
    let body = serde_json::json!({
        "client_id": assignment.client_id,
        "cluster": assignment.hub.cluster,
        "subscriber": assignment.hub.subscriber,
        "events_url": format!("{base}{path}"),
    });
    let mut response =
        warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/clients/{}", assignment.client_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn sse_response(stream: ClientStream) -> Response {
    let mut response = warp::reply::stream(stream).into_response();
    let headers = response.headers_mut();
    for (name, value) in SSE_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sse_head_is_valid_http() {
        for (name, value) in SSE_HEADERS {
            assert!(HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| n.as_str() == name));
            assert!(HeaderValue::from_str(value).is_ok());
        }
    }
}
