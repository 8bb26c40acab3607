//! The HTTP server: every route on one port, errors as JSON, and a shutdown that does not wait
//! on open streams forever.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::http_error::recover;
use crate::ingest::{self, Ingest};
use crate::kafka::producer::ReactionProducer;

/// What `/readyz` checks.
pub trait Readiness: Send + Sync + 'static {
    /// `None` when ready, else why not.
    fn not_ready(&self) -> Option<String>;
}

/// Serves the routes on `listener` until `shutdown` resolves.
pub fn serve(
    listener: tokio::net::TcpListener,
    ingest: Ingest,
    delivery: BoxedFilter<(Response,)>,
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
        .or(delivery)
        .or(healthz)
        .or(readyz)
        .recover(recover);
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
}

/// Readiness of a running system: the broker answers and the dataflow runs.
pub struct SystemReadiness {
    /// Used to ask the broker for metadata.
    pub producer: ReactionProducer,
    /// Reports a dataflow that cannot run.
    pub dataflow_failure: Arc<dyn Fn() -> Option<String> + Send + Sync>,
}

impl Readiness for SystemReadiness {
    fn not_ready(&self) -> Option<String> {
        if let Some(failure) = (self.dataflow_failure)() {
            return Some(format!("the dataflow is not running: {failure}"));
        }
        if !self.producer.broker_reachable(Duration::from_secs(2)) {
            return Some("the Kafka broker does not answer".into());
        }
        None
    }
}

/// Binds `addr`, with a message that says what to do when the port is taken.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}; choose another address with --http"))
}
