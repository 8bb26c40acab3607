//! The HTTP server: every route on one port, errors as JSON, the connection limits
//! ([`crate::limits`]), and a shutdown that does not wait on open streams forever. Event
//! streams are served on the socket directly ([`crate::delivery::lean`]); every other request
//! goes to hyper with the warp routes.

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
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;

use crate::delivery::{lean, Registry};
use crate::http_error::recover;
use crate::ingest::{self, Ingest};
use crate::kafka::producer::ReactionProducer;
use crate::limits::{self, Activity, Limits, OpenConnections};
use crate::stats::Stats;
use crate::system::Faults;

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
    let routes = ingest::routes(ingest)
        .or(more)
        .or(healthz)
        .or(readyz)
        .recover(recover)
        .map(Reply::into_response)
        .map({
            let stats = Arc::clone(&stats);
            move |reply: warp::reply::Response| {
                let status = reply.status().as_u16();
                if status >= 400 {
                    stats.refused(status);
                }
                reply
            }
        })
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
                registry: Arc::clone(&registry),
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

/// What serving one connection needs.
struct Connection {
    routes: BoxedFilter<(Response,)>,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    limits: Limits,
}

impl Connection {
    /// Reads the request head (within the header timeout) and serves the connection: an event
    /// stream here, anything else with hyper until the connection is idle for the idle timeout.
    async fn serve(self, mut socket: TcpStream, watcher: Watcher) {
        let first = tokio::time::timeout(
            self.limits.header_timeout,
            lean::classify(&mut socket, &self.registry),
        );
        match first.await {
            Ok(Ok(lean::Request::Events(events))) => {
                lean::serve_events(socket, events, self.limits.write_timeout, &self.stats).await
            }
            Ok(Ok(lean::Request::Other(head))) => {
                let activity = Activity::new();
                let io = TokioIo::new(lean::Rewound::new(head, socket, activity.clone()));
                let service = TowerToHyperService::new(warp::service(self.routes));
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // hyper starts this timer when it waits for a request head: after a response,
                // it is the keep-alive connection's idle time.
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(self.limits.idle_timeout);
                let connection = builder.serve_connection_with_upgrades(io, service);
                tokio::select! {
                    served = watcher.watch(connection) => match served {
                        Ok(()) => {}
                        Err(e) if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) => {
                            self.stats.connections_timed_out.inc();
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

/// Readiness of a running system: nothing has stopped windows from flowing, and the broker
/// answers.
pub struct SystemReadiness {
    /// Used to ask the broker for metadata.
    pub producer: ReactionProducer,
    /// Any fault that stopped windows from flowing (the dataflow, the windows producer, a
    /// peer).
    pub faults: Faults,
}

impl Readiness for SystemReadiness {
    fn not_ready(&self) -> Option<String> {
        if let Some(fault) = self.faults.first() {
            return Some(format!("windows are not flowing: {fault}"));
        }
        if !self.producer.broker_reachable(Duration::from_secs(2)) {
            return Some("the Kafka broker does not answer".into());
        }
        None
    }
}
