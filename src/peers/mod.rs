//! The processes (peers) of one deployment: the same dataflow runs on each, timely moves the
//! data between them, and each serves the event streams of the hubs its workers own.
//!
//! Process 0, the leader, holds the registrations; the others (followers) forward
//! registrations and the tree to it, copy the hubs its tree grows, and report the streams open
//! on them in heartbeats, so the leader neither releases their clients nor miscounts the tree.
//!
//! - [`hostfile`]: where each process is; [`peer_loss`]: exit when one is lost.
//! - [`membership`]: who owns each hub, and what the followers report ([`Peers`], delivery's
//!   [`crate::delivery::SharedTree`]).
//! - [`leader`]: the way to the leader, and the followers' loop; [`mod@routes`]: the heartbeat
//!   route, and the followers' forwarding; [`secret`]: what the processes present to each
//!   other.

pub mod hostfile;
pub mod leader;
pub mod membership;
pub mod peer_loss;
pub mod routes;
pub mod secret;

pub use leader::{follow_the_leader, Heartbeat, Leader};
pub use membership::{Membership, Peers};
pub use routes::routes;
pub use secret::ClusterSecret;

/// Each process's advertised HTTP base URL: the hostfile's second column, this process's from
/// `--advertise-http` when given.
pub fn advertised_http(
    placement: &crate::cli::Placement,
    mine: Option<&str>,
) -> Result<Vec<String>, crate::cli::ConfigError> {
    let me = placement.deployment.process;
    placement
        .hosts
        .iter()
        .enumerate()
        .map(|(p, host)| {
            let given = if p == me { mine.or(host.http.as_deref()) } else { host.http.as_deref() };
            given.map(|h| h.trim_end_matches('/').to_owned()).ok_or_else(|| {
                crate::cli::ConfigError(format!(
                    "the hostfile gives no HTTP address for process {p}: add it as a second column (e.g. `{} http://host:8080`) so the processes can send clients to each other",
                    host.timely
                ))
            })
        })
        .collect()
}
