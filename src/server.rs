//! The HTTP server: every route on one port, errors as JSON, and a shutdown that does not wait
//! on open streams forever. Event streams are served on the socket directly
//! ([`crate::delivery::lean`]); every other request goes to hyper with the warp routes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::delivery::{lean, Registry};
use crate::http_error::recover;
use crate::ingest::{self, Ingest};
use crate::kafka::producer::ReactionProducer;
use crate::system::Faults;

/// What `/readyz` checks.
pub trait Readiness: Send + Sync + 'static {
    /// `None` when ready, else why not.
    fn not_ready(&self) -> Option<String>;
}

/// Serves the ingest and health routes, and `more` (delivery, metrics, the dashboard), on
/// `listener` until `shutdown` resolves.
pub fn serve(
    listener: tokio::net::TcpListener,
    ingest: Ingest,
    more: BoxedFilter<(Response,)>,
    registry: Arc<Registry>,
    readiness: Arc<dyn Readiness>,
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
        .recover(recover);
    async move {
        let graceful = GracefulShutdown::new();
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
            let routes = routes.clone();
            let registry = Arc::clone(&registry);
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let mut socket = socket;
                let first =
                    tokio::time::timeout(HEAD_TIMEOUT, lean::classify(&mut socket, &registry));
                match first.await {
                    Ok(Ok(lean::Request::Events(events))) => {
                        lean::serve_events(socket, events).await
                    }
                    Ok(Ok(lean::Request::Other(head))) => {
                        let io = TokioIo::new(lean::Rewound::new(head, socket));
                        let service = TowerToHyperService::new(warp::service(routes));
                        let builder = auto::Builder::new(TokioExecutor::new());
                        let connection = builder.serve_connection_with_upgrades(io, service);
                        if let Err(e) = watcher.watch(connection).await {
                            tracing::debug!("HTTP connection ended: {e}");
                        }
                    }
                    // The client left, or sent no request head in time.
                    Ok(Err(_)) | Err(_) => {}
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    }
}

/// How long a new connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

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
