//! Delivery routes: registration, the tree, and each subscriber's event stream.

use std::net::SocketAddr;
use std::sync::Arc;

use dataflows::{Partition, WindowId};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

use super::registry::{events_path, Membership, Registry};
use crate::http_error::ApiError;

/// `POST /clients`, `DELETE /clients/{id}`, `GET /clusters`,
/// `GET /clusters/{c}/subscribers/{s}/events`. `local` names this server in `events_url`
/// when a request has no `Host`.
pub fn routes(registry: Arc<Registry>, local: SocketAddr) -> BoxedFilter<(Response,)> {
    let with_registry = warp::any().map(move || Arc::clone(&registry));
    let leader = Leader::new();
    let register = warp::path!("clients")
        .and(warp::post())
        .and(with_registry.clone())
        .and(warp::header::optional::<String>("host"))
        .and(leader.filter())
        .then(
            move |registry: Arc<Registry>, host: Option<String>, leader: Leader| async move {
                let membership = registry.membership();
                if !membership.is_leader() {
                    return leader
                        .forward(&membership, Method::POST, "/clients", None)
                        .await;
                }
                let assignment = registry.register();
                let path = format!(
                    "{}?client_id={}",
                    events_path(assignment.partition),
                    assignment.client_id
                );
                let base = match registry.hub(assignment.partition) {
                    // In a cluster the owning process serves the stream: point there at once.
                    Some(hub) if membership.processes() > 1 => {
                        membership.http[membership.owner(hub.index)].clone()
                    }
                    _ => format!("http://{}", host.unwrap_or_else(|| local.to_string())),
                };
                let body = serde_json::json!({
                    "client_id": assignment.client_id,
                    "cluster": assignment.partition.cluster,
                    "subscriber": assignment.partition.subscriber,
                    "events_url": format!("{base}{path}"),
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
            },
        );
    let release = warp::path!("clients" / String)
        .and(warp::delete())
        .and(with_registry.clone())
        .and(leader.filter())
        .and_then(
            |id: String, registry: Arc<Registry>, leader: Leader| async move {
                let membership = registry.membership();
                if !membership.is_leader() {
                    let path = format!("/clients/{id}");
                    return Ok(leader
                        .forward(&membership, Method::DELETE, &path, None)
                        .await);
                }
                if registry.release(&id) {
                    Ok(StatusCode::NO_CONTENT.into_response())
                } else {
                    Err(warp::reject::custom(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_client",
                        format!("no client {id} is registered (already released?)"),
                    )))
                }
            },
        );
    let tree = warp::path!("clusters")
        .and(warp::get())
        .and(with_registry.clone())
        .and(leader.filter())
        .then(|registry: Arc<Registry>, leader: Leader| async move {
            let membership = registry.membership();
            if !membership.is_leader() {
                return leader
                    .forward(&membership, Method::GET, "/clusters", None)
                    .await;
            }
            warp::reply::json(&registry.view()).into_response()
        });
    let heartbeat = warp::path!("cluster" / "heartbeat")
        .and(warp::post())
        .and(with_registry.clone())
        .and(warp::body::content_length_limit(16 * 1024 * 1024))
        .and(warp::body::json())
        .and_then(|registry: Arc<Registry>, beat: Heartbeat| async move {
            if !registry.membership().is_leader() {
                return Err(warp::reject::custom(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_leader",
                    "heartbeats go to process 0",
                )));
            }
            registry.heartbeat(beat.process, &beat.attached, &beat.connected);
            Ok(StatusCode::NO_CONTENT.into_response())
        });
    let events = warp::path!("clusters" / u32 / "subscribers" / u32 / "events")
        .and(warp::get())
        .and(with_registry)
        .and(warp::header::optional::<String>("last-event-id"))
        .and(warp::query::<EventsQuery>())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(leader.filter())
        .and_then(
            |cluster: u32,
             subscriber: u32,
             registry: Arc<Registry>,
             last: Option<String>,
             query: EventsQuery,
             raw_query: String,
             leader: Leader| async move {
                let partition = Partition {
                    cluster,
                    subscriber,
                };
                let membership = registry.membership();
                if registry.hub(partition).is_none() && !membership.is_leader() {
                    // The tree may have grown on the leader since the last look.
                    leader.sync(&registry).await;
                }
                let hub = registry.hub(partition).ok_or_else(|| {
                    warp::reject::custom(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_subscriber",
                        format!(
                            "there is no subscriber {subscriber} in cluster {cluster}; GET /clusters lists them"
                        ),
                    ))
                })?;
                let owner = membership.owner(hub.index);
                if owner != membership.process {
                    let query = if raw_query.is_empty() { String::new() } else { format!("?{raw_query}") };
                    let location = format!("{}{}{query}", membership.http[owner], events_path(partition));
                    return Ok(redirect(&location));
                }
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
        .or(heartbeat)
        .unify()
        .or(events)
        .unify()
        .boxed()
}

/// What a process tells the leader every few seconds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// The sending process.
    pub process: usize,
    /// Clients with an event stream open there.
    pub attached: Vec<String>,
    /// Open streams there per hub index.
    pub connected: Vec<(usize, usize)>,
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The way to the leader (process 0) from the other processes of a cluster.
#[derive(Clone)]
pub struct Leader {
    http: reqwest::Client,
}

impl Leader {
    fn new() -> Leader {
        Leader {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    fn filter(&self) -> impl Filter<Extract = (Leader,), Error = std::convert::Infallible> + Clone {
        let leader = self.clone();
        warp::any().map(move || leader.clone())
    }

    /// Sends the request to the leader and answers with its answer.
    async fn forward(
        &self,
        membership: &Membership,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Response {
        let url = format!("{}{path}", membership.http[0]);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.body(body);
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => return leader_unavailable(&url, &e.to_string()),
        };
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut headers = Vec::new();
        for name in [header::CONTENT_TYPE, header::LOCATION] {
            if let Some(v) = answer
                .headers()
                .get(name.as_str())
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
            {
                headers.push((name, v));
            }
        }
        let bytes = match answer.bytes().await {
            Ok(b) => b,
            Err(e) => return leader_unavailable(&url, &e.to_string()),
        };
        let mut response = warp::reply::with_status(bytes.to_vec(), status).into_response();
        for (name, value) in headers {
            response.headers_mut().insert(name, value);
        }
        response
    }

    /// Fetches the leader's tree and adds the hubs this process lacks.
    pub async fn sync(&self, registry: &Registry) {
        let membership = registry.membership();
        let url = format!("{}/clusters", membership.http[0]);
        let Ok(answer) = self.http.get(&url).send().await else {
            return;
        };
        if let Ok(view) = answer.json::<super::registry::TreeView>().await {
            registry.adopt(&view);
        }
    }

    /// Tells the leader which clients have streams open on this process.
    pub async fn heartbeat(&self, registry: &Registry) -> Result<(), String> {
        let membership = registry.membership();
        let (attached, connected) = registry.attached_here();
        let beat = Heartbeat {
            process: membership.process,
            attached,
            connected,
        };
        let url = format!("{}/cluster/heartbeat", membership.http[0]);
        let answer = self
            .http
            .post(&url)
            .json(&beat)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", answer.status()))
        }
    }

    /// A way to the leader, for background tasks.
    pub fn client() -> Leader {
        Leader::new()
    }
}

fn leader_unavailable(url: &str, why: &str) -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "leader_unavailable",
        format!("process 0 holds the registrations and did not answer ({url}: {why}); retry"),
    )
    .retry_after(1)
    .into_response();
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
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
    // In a cluster a page served by one process follows events served by another.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
