//! Delivery routes: registration, the tree, and each subscriber's event stream.
//!
//! These serve one process's view; with several processes, the ones that do not hold the
//! registrations put `crate::peers`' forwarding routes in front of these.

use std::sync::Arc;

use dataflows::{HubId, StreamId};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderName, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

use super::events::{self, events_path, EventsRequest, Location, Opening, SSE_HEADERS};
use super::hub::ClientStream;
use super::registry::{Assignment, Registry};
use crate::auth::{presented, Auth, Identity, Presented};
use crate::http_error::ApiError;
use crate::peers::ClusterSecret;
use crate::rate_limit::{KeyedRateLimit, Limited};
use crate::server::ClientAddr;

/// `POST /clients`, `DELETE /clients/{id}`, `GET /clusters`,
/// `GET /clusters/{c}/subscribers/{s}/events`, `GET /streams`, `GET /streams/{id}`. `public` (`http://host:port`) is this server
/// in `events_url`: never the request's `Host`, which any caller can set.
pub fn routes(
    registry: Arc<Registry>,
    public: String,
    registration: Registration,
) -> BoxedFilter<(Response,)> {
    let with_registry = warp::any().map(move || Arc::clone(&registry));
    let public: Arc<str> = public.into();
    let register = warp::path!("clients")
        .and(warp::post())
        .and(crate::http_error::json_content_type())
        .and(registration.within_limit())
        .and(presented())
        .and(registration_body(registration.body_timeout))
        .and(with_registry.clone())
        .and(with_registration(&registration))
        .map(
            move |presented: Presented,
                  stream: StreamId,
                  registry: Arc<Registry>,
                  registration: Registration| {
                match registration.watcher(&presented, Some(stream.as_str())) {
                    Ok(_) => match registry.register_within(registration.max_clients) {
                        Some(assignment) => registered(&registry, &public, &stream, assignment),
                        None => too_many_clients(registration.max_clients).into_response(),
                    },
                    Err(e) => e.into_response(),
                }
            },
        );
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
        .and(registration.viewer())
        .and(with_registry.clone())
        .map(|registry: Arc<Registry>| warp::reply::json(&registry.view()).into_response());
    let events = warp::path!("clusters" / u32 / "subscribers" / u32 / "events")
        .and(warp::get())
        .and(with_registry.clone())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(presented())
        .and(with_registration(&registration))
        .and_then(
            |cluster: u32,
             subscriber: u32,
             registry: Arc<Registry>,
             last: Option<String>,
             query: String,
             presented: Presented,
             registration: Registration| async move {
                let request = EventsRequest {
                    hub: HubId {
                        cluster,
                        subscriber,
                    },
                    query: Some(&query),
                    last_event_id: last.as_deref(),
                    websocket: false,
                };
                let stream_id = request.stream_id().map_err(warp::reject::custom)?;
                let identity = registration
                    .watcher(&presented, Some(stream_id.as_str()))
                    .map_err(warp::reject::custom)?;
                match events::open(&registry, &request) {
                    Opening::Here(stream) => Ok(sse_response(
                        match (identity, registration.auth.as_deref()) {
                            (Some(identity), Some(auth)) => stream.until(auth.deadline(&identity)),
                            _ => stream,
                        },
                    )),
                    Opening::Elsewhere(location) => Ok(redirect(&location)),
                    Opening::Refused(e) => Err(warp::reject::custom(e)),
                }
            },
        );
    // A WebSocket upgrade served here is one the socket path let through: its refusals, and
    // an upgrade that was not a connection's first request.
    let ws = warp::path!("clusters" / u32 / "subscribers" / u32 / "ws")
        .and(warp::get())
        .and(with_registry.clone())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(presented())
        .and(with_registration(&registration))
        .and_then(
            |cluster: u32,
             subscriber: u32,
             registry: Arc<Registry>,
             headers: warp::http::HeaderMap,
             query: String,
             presented: Presented,
             registration: Registration| async move {
                let request = EventsRequest {
                    hub: HubId {
                        cluster,
                        subscriber,
                    },
                    query: Some(&query),
                    last_event_id: None,
                    websocket: true,
                };
                let stream_id = request.stream_id().map_err(warp::reject::custom)?;
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                if registration
                    .auth
                    .as_ref()
                    .is_some_and(|a| a.guards_subscribers())
                    && !super::ws::origin_may_use_cookie(
                        &presented,
                        header("origin"),
                        header("host"),
                    )
                {
                    let origin = header("origin").unwrap_or_default();
                    return Err(warp::reject::custom(super::ws::foreign_origin(origin)));
                }
                registration
                    .watcher(&presented, Some(stream_id.as_str()))
                    .map_err(warp::reject::custom)?;
                super::ws::accept_key(header).map_err(warp::reject::custom)?;
                // Served here, the upgrade should have been taken on the socket before warp
                // saw it; it is refused without subscribing anything.
                match events::locate(&registry, &request) {
                    Ok(Location::Elsewhere(location)) => Ok(redirect(&location)),
                    Err(e) => Err(warp::reject::custom(e)),
                    Ok(Location::Here(_)) => {
                        events::resume_and_stream(&request).map_err(warp::reject::custom)?;
                        Err(warp::reject::custom(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "websocket_not_first",
                            "open a WebSocket as the first request of a new HTTP/1.1 connection, with a request head of at most 16 KiB and 64 header lines",
                        )))
                    }
                }
            },
        );
    register
        .or(release)
        .unify()
        .or(ws)
        .unify()
        .or(tree)
        .unify()
        .or(events)
        .unify()
        .or(super::listing::routes(with_registry, registration.viewer()))
        .unify()
        .boxed()
}

/// The longest registration body: `{"stream_id": ...}` with room for whitespace.
pub const MAX_REGISTRATION_BYTES: u64 = 4096;

/// The stream a registration names in its optional body (`{"stream_id": "match-42"}`); no
/// body, or one without the field, is the default stream. An HTTP/2 body may come without
/// `Content-Length`: it is read all the same, up to the limit.
pub fn registration_body(
    timeout: std::time::Duration,
) -> impl Filter<Extract = (StreamId,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::header::optional::<String>("transfer-encoding"))
        .and_then(|length: Option<u64>, chunked: Option<String>| async move {
            match (length, chunked) {
                (Some(n), _) if n > MAX_REGISTRATION_BYTES => {
                    Err(warp::reject::custom(too_large()))
                }
                (None, Some(_)) => Err(warp::reject::custom(ApiError::new(
                    StatusCode::LENGTH_REQUIRED,
                    "length_required",
                    "send the registration body with a Content-Length",
                ))),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(crate::ingest::body_within(timeout, MAX_REGISTRATION_BYTES))
        .and_then(|body: bytes::Bytes| async move {
            parse_registration(&body).map_err(warp::reject::custom)
        })
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("a registration body is at most {MAX_REGISTRATION_BYTES} bytes"),
    )
}

/// The stream named by a registration body.
pub fn parse_registration(body: &[u8]) -> Result<StreamId, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StreamId::default());
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the registration body is not JSON: {e}; send {{\"stream_id\": \"...\"}} or nothing"),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the registration body must be a JSON object: {\"stream_id\": \"...\"}",
        ));
    };
    match object.get("stream_id") {
        None | Some(serde_json::Value::Null) => Ok(StreamId::default()),
        Some(serde_json::Value::String(id)) => StreamId::parse(id).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_stream_id",
                format!("stream_id {e}"),
            )
        }),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_stream_id",
            format!("stream_id must be a string, not {other}"),
        )),
    }
}

/// What registration checks before it registers.
#[derive(Clone)]
pub struct Registration {
    /// How long a registration body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Registrations per client address.
    pub limit: Option<Arc<KeyedRateLimit>>,
    /// Requests that carry it come from another process of the cluster, which applied the
    /// limit to the client's address already.
    pub secret: Option<ClusterSecret>,
    /// Token checks, when tokens are on.
    pub auth: Option<Arc<Auth>>,
    /// Clients registered at once, over the tree.
    pub max_clients: usize,
}

fn with_registration(
    registration: &Registration,
) -> impl Filter<Extract = (Registration,), Error = std::convert::Infallible> + Clone {
    let registration = registration.clone();
    warp::any().map(move || registration.clone())
}

impl Default for Registration {
    /// No limit, no secret, and the default header timeout for the body.
    fn default() -> Self {
        Registration {
            body_timeout: std::time::Duration::from_secs(10),
            limit: None,
            secret: None,
            auth: None,
            max_clients: usize::MAX,
        }
    }
}

impl Registration {
    /// Whether a watcher may go on (see [`Auth::watcher`]): always, when tokens are off.
    pub fn watcher(
        &self,
        presented: &Presented,
        stream: Option<&str>,
    ) -> Result<Option<Arc<Identity>>, ApiError> {
        match &self.auth {
            None => Ok(None),
            Some(auth) => auth.watcher(presented, stream),
        }
    }

    /// Passes a request for the viewer listings (`GET /clusters`, `GET /streams`): public
    /// unless `--auth-subscribers`, then any valid token.
    pub fn viewer(&self) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
        let this = self.clone();
        presented()
            .and_then(move |presented: Presented| {
                let checked = this.watcher(&presented, None).map(|_| ());
                async move { checked.map_err(warp::reject::custom) }
            })
            .untuple_one()
    }

    /// Passes a registration within its address's limit, refuses it otherwise.
    pub fn within_limit(&self) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
        let this = self.clone();
        warp::ext::optional::<ClientAddr>()
            .and(warp::header::optional::<String>("authorization"))
            .and_then(
                move |client: Option<ClientAddr>, authorization: Option<String>| {
                    let checked = this.check(client, authorization.as_deref());
                    async move { checked.map_err(warp::reject::custom) }
                },
            )
            .untuple_one()
    }

    fn check(
        &self,
        client: Option<ClientAddr>,
        authorization: Option<&str>,
    ) -> Result<(), ApiError> {
        let (Some(limit), Some(ClientAddr(address))) = (&self.limit, client) else {
            return Ok(());
        };
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.admits(authorization))
        {
            return Ok(());
        }
        match limit.check(&address_key(address.ip()), 1) {
            Ok(()) => Ok(()),
            Err(Limited::Wait(wait)) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "registration_rate_limited",
                format!(
                    "{} registers clients too fast (--registration-rate-limit); retry later",
                    address.ip()
                ),
            )
            .retry_after(crate::rate_limit::retry_after_secs(wait))),
            Err(Limited::TooMany { .. } | Limited::Full) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "registration_limiter_full",
                "the registration limiter holds as many addresses as it may; retry",
            )
            .retry_after(1)),
        }
    }
}

/// Whom a registration limit counts: an IPv4 address, or an IPv6 /64 (one host usually holds a
/// whole /64, and could take a new address for each request).
fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The refusal of a registration past `--max-clients`.
fn too_many_clients(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_clients",
        format!(
            "{max} clients are registered (--max-clients); retry once some are released or expire"
        ),
    )
    .retry_after(5)
}

/// The answer to a registration of `stream`; its `events_url` points at the process that
/// serves its subscriber, else at `public`.
fn registered(
    registry: &Registry,
    public: &str,
    stream: &StreamId,
    assignment: Assignment,
) -> Response {
    // Stream ids need no escaping in a query: their alphabet is URL-safe. The default
    // stream's URL is the one clients had before streams existed.
    let stream_query = match stream.as_str() {
        StreamId::DEFAULT => String::new(),
        id => format!("stream_id={id}&"),
    };
    let path = format!(
        "{}?{stream_query}client_id={}",
        events_path(assignment.hub),
        assignment.client_id
    );
    let base = registry
        .hub(assignment.hub)
        .and_then(|hub| registry.serving(hub.index).url)
        .unwrap_or_else(|| public.to_owned());
    let body = serde_json::json!({
        "client_id": assignment.client_id,
        "cluster": assignment.hub.cluster,
        "subscriber": assignment.hub.subscriber,
        "events_url": format!("{base}{path}"),
        "stream_id": stream.as_str(),
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
    fn registrations_are_counted_per_ipv4_address_or_ipv6_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn a_registration_names_its_stream_or_none() {
        let ok = |body: &str| parse_registration(body.as_bytes()).unwrap();
        assert_eq!(ok("").as_str(), "default");
        assert_eq!(ok(" \n").as_str(), "default");
        assert_eq!(ok("{}").as_str(), "default");
        assert_eq!(ok(r#"{"stream_id":null}"#).as_str(), "default");
        assert_eq!(ok(r#"{"stream_id":"match-42","x":1}"#).as_str(), "match-42");
        let code = |body: &str| parse_registration(body.as_bytes()).unwrap_err().code;
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[]"), "invalid_json");
        assert_eq!(code(r#"{"stream_id":"a b"}"#), "invalid_stream_id");
        assert_eq!(code(r#"{"stream_id":7}"#), "invalid_stream_id");
    }

    #[test]
    fn the_sse_head_is_valid_http() {
        for (name, value) in SSE_HEADERS {
            assert!(HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| n.as_str() == name));
            assert!(HeaderValue::from_str(value).is_ok());
        }
    }
}
