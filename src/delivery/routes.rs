//! Delivery routes: registration, the tree, and each subscriber's event stream.

use std::net::SocketAddr;
use std::sync::Arc;

use dataflows::{Partition, WindowId};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

use super::registry::{events_path, Registry};
use crate::http_error::ApiError;

/// `POST /clients`, `DELETE /clients/{id}`, `GET /clusters`,
/// `GET /clusters/{c}/subscribers/{s}/events`. `local` names this server in `events_url`
/// when a request has no `Host`.
pub fn routes(registry: Arc<Registry>, local: SocketAddr) -> BoxedFilter<(Response,)> {
    let with_registry = warp::any().map(move || Arc::clone(&registry));
    let register = warp::path!("clients")
        .and(warp::post())
        .and(with_registry.clone())
        .and(warp::header::optional::<String>("host"))
        .map(move |registry: Arc<Registry>, host: Option<String>| {
            let assignment = registry.register();
            let host = host.unwrap_or_else(|| local.to_string());
            let path = format!(
                "{}?client_id={}",
                events_path(assignment.partition),
                assignment.client_id
            );
            let body = serde_json::json!({
                "client_id": assignment.client_id,
                "cluster": assignment.partition.cluster,
                "subscriber": assignment.partition.subscriber,
                "events_url": format!("http://{host}{path}"),
            });
            let mut response =
                warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED)
                    .into_response();
            if let Ok(location) =
                HeaderValue::from_str(&format!("/clients/{}", assignment.client_id))
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
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
        .and(warp::query::<EventsQuery>())
        .and_then(
            |cluster: u32,
             subscriber: u32,
             registry: Arc<Registry>,
             last: Option<String>,
             query: EventsQuery| async move {
                let partition = Partition {
                    cluster,
                    subscriber,
                };
                let hub = registry.hub(partition).ok_or_else(|| {
                    warp::reject::custom(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_subscriber",
                        format!(
                            "there is no subscriber {subscriber} in cluster {cluster}; GET /clusters lists them"
                        ),
                    ))
                })?;
                let last = parse_last_event_id(last.as_deref()).map_err(warp::reject::custom)?;
                let mut stream = hub.subscribe(last);
                // A registered client keeps its place while it has a stream open.
                if let Some(id) = query.client_id.filter(|id| registry.attach(id)) {
                    stream = stream.on_close(move || registry.detach(&id));
                }
                Ok::<_, warp::Rejection>(sse_response(stream))
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

/// The events URL's query: `client_id` ties the stream to a registration.
#[derive(Debug, serde::Deserialize)]
struct EventsQuery {
    client_id: Option<String>,
}

fn parse_last_event_id(value: Option<&str>) -> Result<Option<WindowId>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_last_event_id",
                format!("Last-Event-ID must be a window index (a non-negative integer), not {v:?}"),
            )
        }),
    }
}

fn sse_response(stream: super::hub::ClientStream) -> Response {
    let mut response = warp::reply::stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
