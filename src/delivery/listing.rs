//! `GET /streams` and `GET /streams/{id}`: the active streams, their latest window and their
//! viewers over the whole cluster.
//!
//! Every process holds every stream's windows; viewers are counted where their event streams
//! are open, and the other processes report theirs to the one that holds the registrations
//! (which answers these routes for the cluster: the others forward them there).

use std::collections::HashMap;
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::Filter;

use super::registry::Registry;
use super::streams::StreamInfo;
use crate::http_error::ApiError;

/// The active streams, most viewers first (then by id), viewers summed over the processes.
pub fn active_streams(registry: &Registry) -> Vec<StreamInfo> {
    let elsewhere: HashMap<String, usize> = registry.viewers_elsewhere();
    let mut streams = registry.streams().active();
    for stream in &mut streams {
        add_viewers_elsewhere(stream, &elsewhere);
    }
    streams.sort_by(|a, b| {
        b.viewers
            .cmp(&a.viewers)
            .then_with(|| a.stream_id.cmp(&b.stream_id))
    });
    streams
}

/// Adds to `stream`'s viewers here those the other processes reported.
fn add_viewers_elsewhere(stream: &mut StreamInfo, elsewhere: &HashMap<String, usize>) {
    if let Some(n) = elsewhere.get(&stream.stream_id) {
        stream.viewers = stream.viewers.saturating_add(*n);
    }
}

/// The routes, given a filter that yields the registry.
pub fn routes(
    with_registry: impl Filter<Extract = (Arc<Registry>,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    viewer: impl Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static,
) -> BoxedFilter<(Response,)> {
    let all = warp::path!("streams")
        .and(warp::get())
        .and(viewer.clone())
        .and(with_registry.clone())
        .map(|registry: Arc<Registry>| {
            warp::reply::json(&active_streams(&registry)).into_response()
        });
    let one = warp::path!("streams" / String)
        .and(warp::get())
        .and(viewer)
        .and(with_registry)
        .and_then(|id: String, registry: Arc<Registry>| async move {
            // Viewers of one stream still need the other processes' counts: the same sum.
            let found = dataflows::StreamId::parse(&id)
                .ok()
                .and_then(|stream| registry.streams().active_one(&stream))
                .map(|mut stream| {
                    add_viewers_elsewhere(&mut stream, &registry.viewers_elsewhere());
                    stream
                });
            match found {
                Some(stream) => Ok(warp::reply::json(&stream).into_response()),
                None => Err(warp::reject::custom(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_stream",
                    format!("no stream {id:?} is active; GET /streams lists those that are"),
                ))),
            }
        });
    all.or(one).unify().boxed()
}
