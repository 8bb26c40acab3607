//! The way from a follower to the leader (process 0): requests forwarded to it, its tree
//! copied, heartbeats sent; and [`follow_the_leader`], the follower's loop doing the last two.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflows::HubId;
use warp::http::{header, HeaderValue, Method, StatusCode};
use warp::reply::{Reply, Response};

use super::membership::Peers;
use super::secret::ClusterSecret;
use crate::delivery::registry::TreeView;
use crate::delivery::Registry;
use crate::http_error::ApiError;

/// The path heartbeats go to on the leader.
pub const HEARTBEAT_PATH: &str = "/peers/heartbeat";

/// What a follower tells the leader every few seconds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// The sending process.
    pub process: usize,
    /// Clients with an event stream open there.
    pub attached: Vec<String>,
    /// Open streams there per hub number.
    pub connected: Vec<(usize, usize)>,
    /// Open event streams there per stream id (only streams that have some).
    #[serde(default)]
    pub viewers: Vec<(String, usize)>,
}

/// The way to the leader.
#[derive(Clone)]
pub struct Leader {
    http: reqwest::Client,
    /// The leader's HTTP base URL.
    base: String,
    /// Presented with each heartbeat.
    secret: Option<ClusterSecret>,
}

impl Leader {
    /// The leader at `base` (`http://host:port`).
    pub fn new(base: &str, secret: Option<ClusterSecret>) -> Leader {
        Leader {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            base: base.to_owned(),
            secret,
        }
    }

    /// A request to the leader's `path`, with the cluster secret: the leader then knows it
    /// comes from a process of the cluster (which checked the client's token and applied the
    /// registration limit), and lets it see what token holders may (the tree, with
    /// --auth-subscribers). The URL, for messages, and the request.
    fn request(&self, method: Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(secret) = &self.secret {
            request = request.header(header::AUTHORIZATION.as_str(), secret.header());
        }
        (url, request)
    }

    /// Sends `request` to `url`: its answer if a success, why not otherwise.
    async fn send(
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        let answer = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(answer);
        }
        let body = answer.text().await.unwrap_or_default();
        Err(format!("{url} answered {status}: {body}"))
    }

    /// Sends the request (with `body`, JSON, for a POST) to the leader and answers with its
    /// answer.
    pub async fn forward(&self, method: Method, path: &str, body: Option<String>) -> Response {
        let (url, mut request) = self.request(method.clone(), path);
        if method == Method::POST {
            request = request
                .header(header::CONTENT_TYPE.as_str(), "application/json")
                .body(body.unwrap_or_else(|| "{}".to_owned()));
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => return leader_unavailable(&url, &e.to_string()),
        };
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut headers = Vec::new();
        for name in [header::CONTENT_TYPE, header::LOCATION, header::RETRY_AFTER] {
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

    /// Fetches the leader's tree and makes `registry`'s hubs follow it; why it could not, if
    /// it could not.
    pub async fn sync(&self, registry: &Registry) -> Result<(), String> {
        let (url, request) = self.request(Method::GET, "/clusters");
        let view = Self::send(&url, request)
            .await?
            .json::<TreeView>()
            .await
            .map_err(|e| format!("{url} answered a tree that does not parse: {e}"))?;
        adopt(registry, &view);
        Ok(())
    }

    /// Tells the leader which clients have streams open on this process.
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), String> {
        let (url, request) = self.request(Method::POST, HEARTBEAT_PATH);
        Self::send(&url, request.json(beat)).await.map(drop)
    }
}

/// Makes `registry`'s hubs the leader's, in number order, so the numbers agree with the
/// leader's: as far as its numbers run without a gap (the next sync fills one).
fn adopt(registry: &Registry, view: &TreeView) {
    let mut theirs: Vec<(usize, HubId)> = view
        .clusters
        .iter()
        .flat_map(|c| {
            c.subscribers.iter().map(move |s| {
                let id = HubId {
                    cluster: c.cluster,
                    subscriber: s.subscriber,
                };
                (s.hub, id)
            })
        })
        .collect();
    theirs.sort_by_key(|(index, _)| *index);
    let numbered: Vec<HubId> = theirs
        .iter()
        .enumerate()
        .take_while(|(position, (index, _))| position == index)
        .map(|(_, (_, id))| *id)
        .collect();
    registry.follow(&numbered);
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

/// On a follower, until `shutdown`: adopt the hubs the leader's tree grows, and tell the
/// leader which clients have streams open here, so it does not release them. `ttl` is the
/// clients' time to live, which the heartbeats must beat.
pub async fn follow_the_leader(
    peers: Arc<Peers>,
    registry: Arc<Registry>,
    ttl: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::select! {
        () = shutdown => {}
        () = follow(&peers, &registry, ttl) => {}
    }
}

async fn follow(peers: &Peers, registry: &Registry, ttl: Duration) {
    let membership = peers.membership();
    let leader = Leader::new(membership.leader_http(), membership.secret.clone());
    let beat_every = (ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut last_beat: Option<Instant> = None;
    let mut tree = Silence::new("copy the tree of process 0");
    let mut beats = Silence::new("send heartbeats to process 0, which holds the registrations,");
    loop {
        every.tick().await;
        tree.heard(leader.sync(registry).await);
        if last_beat.is_some_and(|at| at.elapsed() < beat_every) {
            continue;
        }
        last_beat = Some(Instant::now());
        beats.heard(leader.heartbeat(&peers.next_heartbeat(registry)).await);
    }
}

/// Failures of one request to the leader, warned about once they last: the processes start
/// together and process 0 may not serve HTTP yet.
struct Silence {
    what: &'static str,
    failing_since: Option<Instant>,
    warned: bool,
}

impl Silence {
    fn new(what: &'static str) -> Silence {
        Silence {
            what,
            failing_since: None,
            warned: false,
        }
    }

    fn heard(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.warned {
                    tracing::info!("could {} again", self.what);
                }
                self.failing_since = None;
                self.warned = false;
            }
            Err(e) => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if !self.warned && since.elapsed() >= Duration::from_secs(10) {
                    self.warned = true;
                    tracing::warn!("cannot {} for {:?}: {e}", self.what, since.elapsed());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use dataflows::Topology;

    use super::*;

    fn registry(capacity: usize) -> Registry {
        Registry::for_tests(
            Topology {
                clusters: 2,
                subscribers: 1,
            },
            capacity,
        )
    }

    #[test]
    fn a_copy_follows_the_leaders_tree_as_it_grows_and_shrinks() {
        let leader = registry(1);
        let copy = registry(1);
        let clients: Vec<_> = (0..5).map(|_| leader.register()).collect();
        adopt(&copy, &leader.view());
        assert_eq!(copy.hub_ids(), leader.hub_ids());
        assert_eq!(copy.hub_count(), 5);
        // The last two go on the leader: the copy drops them, and ends their streams.
        let doomed = copy.hub(clients[4].hub).unwrap();
        for client in &clients[3..] {
            assert!(leader.release(&client.client_id));
        }
        adopt(&copy, &leader.view());
        assert_eq!(copy.hub_ids(), leader.hub_ids());
        assert_eq!(copy.hub_count(), 3);
        assert!(doomed.is_retired());
        assert!(copy.hub(clients[4].hub).is_none());
    }

    #[test]
    fn a_copy_drops_a_hub_numbered_differently_since_the_last_sync() {
        let leader = registry(1);
        let copy = registry(1);
        let client = (0..3).map(|_| leader.register()).last().unwrap();
        adopt(&copy, &leader.view());
        assert_eq!(copy.hub_ids()[2], client.hub, "hub 2 is (0, 1)");
        // Between two syncs hub 2 went and another came back as number 2, in cluster 1.
        assert!(leader.release(&client.client_id));
        let other = HubId {
            cluster: 1,
            subscriber: 1,
        };
        assert!(leader.add_hub(other, 2));
        adopt(&copy, &leader.view());
        assert_eq!(copy.hub_ids(), leader.hub_ids());
        let sizes: Vec<usize> = copy
            .view()
            .clusters
            .iter()
            .map(|c| c.subscribers.len())
            .collect();
        assert_eq!(sizes, [1, 2]);
    }
}
