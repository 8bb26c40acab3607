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
use crate::delivery::routes::Registration;
use crate::delivery::Registry;
use crate::http_error::ApiError;

/// `POST /peers/heartbeat` (answered by the leader); on a follower also `POST /clients`,
/// `DELETE /clients/{id}`, `GET /clusters` and `GET /streams[/{id}]`, forwarded to the leader, and a copy of the
/// leader's tree before an event stream of a subscriber this process does not know yet.
/// On a single process there are no peers, and none of these routes exist.
pub fn routes(
    peers: Arc<Peers>,
    registry: Arc<Registry>,
    registration: Registration,
) -> BoxedFilter<(Response,)> {
    if peers.membership().deployment.processes() == 1 {
        return warp::any()
            .and_then(|| async { Err::<Response, _>(warp::reject::not_found()) })
            .boxed();
    }
    let heartbeat = heartbeat(Arc::clone(&peers), Arc::clone(&registry));
    if peers.membership().is_leader() {
        return heartbeat;
    }
    let leader = Leader::new(
        peers.membership().leader_http(),
        peers.membership().secret.clone(),
    );
    let with_leader = warp::any().map(move || leader.clone());
    let register = warp::path!("clients")
        .and(warp::post())
        .and(crate::http_error::json_content_type())
        .and(registration.within_limit())
        .and(crate::auth::presented())
        .and(crate::delivery::routes::registration_body(
            registration.body_timeout,
        ))
        .and(with_leader.clone())
        .and({
            let registration = registration.clone();
            warp::any().map(move || registration.clone())
        })
        .then(
            |presented: crate::auth::Presented,
             stream: dataflows::StreamId,
             leader: Leader,
             registration: Registration| async move {
                // The token is checked here, where it arrived: the leader trusts the secret.
                if let Err(e) = registration.watcher(&presented, Some(stream.as_str())) {
                    return e.into_response();
                }
                // Checked here, so the leader's refusal cannot differ from ours.
                let body = serde_json::json!({ "stream_id": stream.as_str() }).to_string();
                leader.forward(Method::POST, "/clients", Some(body)).await
            },
        );
    let release = warp::path!("clients" / String)
        .and(warp::delete())
        .and(with_leader.clone())
        .then(|id: String, leader: Leader| async move {
            leader
                .forward(Method::DELETE, &format!("/clients/{id}"), None)
                .await
        });
    // A refused viewer is answered here, not rejected: a rejection would fall through to
    // delivery's own listing routes, which would check (and count) the token again.
    let viewer = {
        let registration = registration.clone();
        crate::auth::presented().map(move |presented: crate::auth::Presented| {
            registration.watcher(&presented, None).err()
        })
    };
    let tree = warp::path!("clusters")
        .and(warp::get())
        .and(viewer.clone())
        .and(with_leader.clone())
        .then(|refused: Option<ApiError>, leader: Leader| async move {
            match refused {
                None => leader.forward(Method::GET, "/clusters", None).await,
                Some(e) => e.into_response(),
            }
        });
    // The leader hears every process's viewers: one answer for the cluster.
    let streams = warp::path!("streams")
        .and(warp::get())
        .and(viewer.clone())
        .and(with_leader.clone())
        .then(|refused: Option<ApiError>, leader: Leader| async move {
            match refused {
                None => leader.forward(Method::GET, "/streams", None).await,
                Some(e) => e.into_response(),
            }
        });
    let stream = warp::path!("streams" / String)
        .and(warp::get())
        .and(viewer)
        .and(with_leader.clone())
        .then(
            |id: String, refused: Option<ApiError>, leader: Leader| async move {
                if let Some(e) = refused {
                    return e.into_response();
                }
                // Ids outside the stream alphabet are unknown anyway; not forwarded as paths.
                match dataflows::StreamId::parse(&id) {
                    Ok(id) => {
                        leader
                            .forward(Method::GET, &format!("/streams/{id}"), None)
                            .await
                    }
                    Err(_) => ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_stream",
                        format!("no stream {id:?} is active; GET /streams lists those that are"),
                    )
                    .into_response(),
                }
            },
        );
    let with_registry = warp::any().map(move || Arc::clone(&registry));
    // Declines after the copy, so delivery's route answers with the tree as it is now.
    let sync = warp::path!("clusters" / u32 / "subscribers" / u32 / "events")
        .and(warp::get())
        .and(with_registry)
        .and_then(
            |cluster: u32, subscriber: u32, registry: Arc<Registry>| async move {
                let id = dataflows::HubId {
                    cluster,
                    subscriber,
                };
                if registry.hub(id).is_none() {
                    // Failing, delivery's route answers 404 for the tree it has.
                    registry.refresh().await;
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
        .or(streams)
        .unify()
        .or(stream)
        .unify()
        .or(sync)
        .unify()
        .boxed()
}

/// Bounds a heartbeat: its client ids and hub counts, for a follower with some 200,000
/// streams open.
const MAX_HEARTBEAT_BYTES: u64 = 8 * 1024 * 1024;

fn heartbeat(peers: Arc<Peers>, registry: Arc<Registry>) -> BoxedFilter<(Response,)> {
    let secret = peers.membership().secret.clone();
    // `HEARTBEAT_PATH`, which the followers post to (`path!` takes literals only).
    warp::path!("peers" / "heartbeat")
        .and(warp::post())
        // Checked before the body is read: a caller without the secret sends nothing in.
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |authorization: Option<String>| {
            let admitted = secret
                .as_ref()
                .is_some_and(|s| s.admits(authorization.as_deref()));
            async move {
                if admitted {
                    Ok(())
                } else {
                    Err(warp::reject::custom(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "heartbeats come from the cluster's processes, with the secret of --cluster-secret-file",
                    )))
                }
            }
        })
        .untuple_one()
        .and(warp::body::content_length_limit(MAX_HEARTBEAT_BYTES))
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
                peers.heartbeat(&registry, &beat).map_err(|why| {
                    warp::reject::custom(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_heartbeat",
                        why,
                    ))
                })?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
        })
        .boxed()
}
