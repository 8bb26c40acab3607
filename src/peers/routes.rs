//! The routes the processes use among themselves, and the followers' forwarding: on a
//! follower, these go in front of delivery's routes and send what the leader decides
//! (registration, release, the tree) to it.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

use super::leader::{Heartbeat, Leader};
use super::membership::Peers;
use crate::delivery::Registry;
use crate::http_error::ApiError;

/// `POST /peers/heartbeat` (answered by the leader); on a follower also `POST /clients`,
/// `DELETE /clients/{id}` and `GET /clusters`, forwarded to the leader, and a copy of the
/// leader's tree before an event stream of a subscriber this process does not know yet.
pub fn routes(peers: Arc<Peers>, registry: Arc<Registry>) -> BoxedFilter<(Response,)> {
    let heartbeat = heartbeat(Arc::clone(&peers), Arc::clone(&registry));
    if peers.membership().is_leader() {
        return heartbeat;
    }
    let leader = Leader::new(peers.membership().leader_http());
    let with_leader = warp::any().map(move || leader.clone());
    let register = warp::path!("clients")
        .and(warp::post())
        .and(crate::http_error::json_content_type())
        .and(with_leader.clone())
        .then(|leader: Leader| async move { leader.forward(Method::POST, "/clients").await });
    let release = warp::path!("clients" / String)
        .and(warp::delete())
        .and(with_leader.clone())
        .then(|id: String, leader: Leader| async move {
            leader
                .forward(Method::DELETE, &format!("/clients/{id}"))
                .await
        });
    let tree = warp::path!("clusters")
        .and(warp::get())
        .and(with_leader.clone())
        .then(|leader: Leader| async move { leader.forward(Method::GET, "/clusters").await });
    let with_registry = warp::any().map(move || Arc::clone(&registry));
    // Declines after the copy, so delivery's route answers with the tree as it is now.
    let sync = warp::path!("clusters" / u32 / "subscribers" / u32 / "events")
        .and(warp::get())
        .and(with_registry)
        .and(with_leader)
        .and_then(
            |cluster: u32, subscriber: u32, registry: Arc<Registry>, leader: Leader| async move {
                let id = dataflows::HubId {
                    cluster,
                    subscriber,
                };
                if registry.hub(id).is_none() {
                    leader.sync(&registry).await;
                }
                Err::<Response, _>(warp::reject::not_found())
            },
        );
    heartbeat
        .or(register)
        .unify()
        .or(release)
        .unify()
        .or(tree)
        .unify()
        .or(sync)
        .unify()
        .boxed()
}

fn heartbeat(peers: Arc<Peers>, registry: Arc<Registry>) -> BoxedFilter<(Response,)> {
    // `HEARTBEAT_PATH`, which the followers post to (`path!` takes literals only).
    warp::path!("peers" / "heartbeat")
        .and(warp::post())
        .and(warp::body::content_length_limit(16 * 1024 * 1024))
        .and(warp::body::json())
        .and_then(move |beat: Heartbeat| {
            let (peers, registry) = (Arc::clone(&peers), Arc::clone(&registry));
            async move {
                if !peers.membership().is_leader() {
                    return Err(warp::reject::custom(ApiError::new(
                        StatusCode::CONFLICT,
                        "not_leader",
                        "heartbeats go to process 0",
                    )));
                }
                peers.heartbeat(&registry, &beat);
                Ok(StatusCode::NO_CONTENT.into_response())
            }
        })
        .boxed()
}
