//! The HTTP server: every route on one port, errors as JSON, the connection limits
//! ([`crate::limits`]), and a shutdown that does not wait on open streams forever. Event
//! streams are served on the socket directly ([`crate::delivery::lean`]); every other request
//! goes to hyper with the warp routes.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpStream;

use crate::cors::Cors;
use crate::delivery::{lean, Registry};
use crate::http_error::recover;
use crate::ingest::{self, Ingest};
use crate::limits::{self, Activity, Limits, OpenConnections};
use crate::stats::Stats;

/// The address a request came from, for routes limited per client address
/// (`warp::ext::optional::<ClientAddr>()`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// What `/readyz` checks.
pub trait Readiness: Send + Sync + 'static {
    /// `None` when ready, else why not.
    fn not_ready(&self) -> Option<String>;
}

/// Serves the ingest and health routes, and `more` (delivery, metrics, the dashboard), on
/// `listener` until `shutdown` resolves.
#[allow(clippy::too_many_arguments)] // each is one of the server's parts, named at the call
pub fn serve(
    listener: tokio::net::TcpListener,
    ingest: Ingest,
    more: BoxedFilter<(Response,)>,
    registry: Arc<Registry>,
    readiness: Arc<dyn Readiness>,
    limits: Limits,
    cors: Cors,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({ "status": "ok" })));
    let readyz = warp::path!("readyz").and(warp::get()).then(move || {
        let readiness = Arc::clone(&readiness);
        async move {
            let why = tokio::task::spawn_blocking(move || readiness.not_ready())
                .await
                .unwrap_or_else(|e| Some(format!("readiness check failed: {e}")));
            match why {
                None => warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({ "status": "ready" })),
                    StatusCode::OK,
                )
                .into_response(),
                Some(reason) => {
                    let mut r = warp::reply::with_status(
                        warp::reply::json(
                            &serde_json::json!({ "error": "not_ready", "message": reason }),
                        ),
                        StatusCode::SERVICE_UNAVAILABLE,
                    )
                    .into_response();
                    r.headers_mut()
                        .insert(warp::http::header::RETRY_AFTER, 1.into());
                    r
                }
            }
        }
    });
    let auth = ingest.auth.clone();
    let routes = ingest::routes(ingest)
        .or(more)
        .or(healthz)
        .or(readyz)
        .recover(recover)
        .map(Reply::into_response)
        .boxed();
    async move {
        let graceful = GracefulShutdown::new();
        let open = OpenConnections::default();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait for some to close.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Some(place) = open.take(limits.max_connections) else {
                stats.connections_refused.inc();
                tokio::spawn(limits::refuse(socket));
                continue;
            };
            let connection = Connection {
                routes: routes.clone(),
                cors: cors.clone(),
                registry: Arc::clone(&registry),
                auth: auth.clone(),
                stats: Arc::clone(&stats),
                limits,
            };
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                connection.serve(socket, watcher).await;
                drop(place);
            });
        }
        drop(listener);
        graceful.shutdown().await;
    }
}

/// Serves one request hyper read: answers CORS preflights, lets the pages of allowed origins
/// read the routes' answers, and counts every error answer by status. Here rather than in warp
/// filters: warp's whole-path filters panic on a request target with no path
/// (`CONNECT host:443`).
async fn answer<B, S>(
    routes: &mut S,
    cors: &Cors,
    stats: &Stats,
    request: hyper::Request<B>,
) -> Response
where
    S: tower_service::Service<hyper::Request<B>, Response = Response, Error = Infallible>,
{
    let policy = crate::cors::policy(request.uri().path());
    let origin = || {
        request
            .headers()
            .get(warp::http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
    };
    let preflight = (request.method() == warp::http::Method::OPTIONS)
        .then(|| cors.answer_preflight(request.uri().path(), origin()))
        .flatten();
    // Only the answers of listed paths carry the origin back.
    let listed_origin = (policy == Some(crate::cors::Policy::Listed))
        .then(|| origin().map(str::to_owned))
        .flatten();
    let response = match preflight {
        Some(preflight) => preflight,
        None => {
            let mut response = match tower_service::Service::call(routes, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if policy == Some(crate::cors::Policy::Listed) {
                cors.let_read(listed_origin.as_deref(), &mut response);
            }
            response
        }
    };
    let status = response.status().as_u16();
    if status >= 400 {
        stats.refused(status);
    }
    response
}

/// What serving one connection needs.
struct Connection {
    routes: BoxedFilter<(Response,)>,
    cors: Cors,
    registry: Arc<Registry>,
    auth: Option<Arc<crate::auth::Auth>>,
    stats: Arc<Stats>,
    limits: Limits,
}

impl Connection {
    /// Reads the request head (within the header timeout) and serves the connection: an event
    /// stream here, anything else with hyper until the connection is idle for the idle timeout.
    async fn serve(self, mut socket: TcpStream, watcher: Watcher) {
        let first = tokio::time::timeout(
            self.limits.header_timeout,
            lean::classify(&mut socket, &self.registry, self.auth.as_deref()),
        );
        match first.await {
            Ok(Ok(lean::Request::Events(events))) => {
                lean::serve_events(socket, events, self.limits.write_timeout, &self.stats).await
            }
            Ok(Ok(lean::Request::WebSocket(events, accept))) => {
                // Boxed: every connection's task is as large as its largest branch, and an
                // event stream must not carry a WebSocket's state.
                Box::pin(crate::delivery::ws::serve(
                    socket,
                    &accept,
                    events,
                    self.limits.write_timeout,
                    &self.stats,
                ))
                .await
            }
            Ok(Ok(lean::Request::Refused(answer))) => {
                self.stats.refused(answer.status);
                lean::refuse(socket, &answer).await;
            }
            Ok(Ok(lean::Request::Other(head))) => {
                let activity = Activity::new();
                let client = socket.peer_addr().ok().map(ClientAddr);
                let io = TokioIo::new(lean::Rewound::new(head, socket, activity.clone()));
                let routes = warp::service(self.routes);
                let (cors, stats) = (self.cors, Arc::clone(&self.stats));
                let service = hyper::service::service_fn(move |mut request| {
                    // warp's own server tells routes the client's address; this one does too.
                    if let Some(client) = client {
                        request.extensions_mut().insert(client);
                    }
                    let (mut routes, cors, stats) =
                        (routes.clone(), cors.clone(), Arc::clone(&stats));
                    async move { Ok::<_, Infallible>(answer(&mut routes, &cors, &stats, request).await) }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // hyper starts this timer when it waits for a request head: after a response,
                // it is the keep-alive connection's idle time.
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(self.limits.idle_timeout);
                // An HTTP/2 connection multiplies what one connection may hold open (hyper's
                // default is 200 streams of 400 KB of send buffer): --max-connections then
                // bounds little.
                builder
                    .http2()
                    .max_concurrent_streams(H2_STREAMS)
                    .max_send_buf_size(H2_SEND_BUFFER);
                let connection = builder.serve_connection_with_upgrades(io, service);
                tokio::select! {
                    served = watcher.watch(connection) => match served {
                        Ok(()) => {}
                        Err(e) if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) => {
                            self.stats.connections_timed_out.inc();
                        }
                        // hyper answered a head it could not parse itself (400, or 431 for
                        // one too large): a refusal like any other.
                        Err(e) if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse) => {
                            let too_large = e
                                .downcast_ref::<hyper::Error>()
                                .is_some_and(hyper::Error::is_parse_too_large);
                            self.stats.refused(if too_large { 431 } else { 400 });
                        }
                        Err(e) => tracing::debug!("HTTP connection ended: {e}"),
                    },
                    // HTTP/2 and stalled bodies: nothing moved either way for the idle time.
                    () = activity.idle(self.limits.idle_timeout) => {
                        self.stats.connections_timed_out.inc();
                    }
                }
            }
            Ok(Err(_)) => {}
            Err(_) => self.stats.connections_timed_out.inc(),
        }
    }
}

/// Requests one HTTP/2 connection may have open at once.
const H2_STREAMS: u32 = 16;
/// What hyper buffers per HTTP/2 stream for a client that does not read.
const H2_SEND_BUFFER: usize = 64 * 1024;
