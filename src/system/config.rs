//! The one configuration value of a running system, translated once from the flags.
//!
//! Everything `start` needs is here, checked: a bad combination of flags fails before
//! anything is started, with a [`ConfigError`] that names the flag to fix.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use dataflows::{Settings, Topology};

use crate::cli::{ConfigError, Placement, RunArgs};
use crate::delivery::HubSettings;
use crate::kafka::producer::ProducerSettings;
use crate::kafka::KafkaSettings;

/// What a system runs with.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// Where the workers run (threads, processes, hostfile).
    pub placement: Placement,
    /// Each process's advertised HTTP base URL, when there are several processes.
    pub advertised: Option<Vec<String>>,
    /// This process's base URL in `events_url` (`--advertise-http`); `None`: `http://` and
    /// the address it listens on.
    pub advertise_http: Option<String>,
    /// Origins whose pages may post reactions and register clients.
    pub cors: crate::cors::Cors,
    /// What the processes present to each other; `None` for one process.
    pub cluster_secret: Option<crate::peers::ClusterSecret>,
    /// External brokers (`--brokers`); `None` starts the embedded one.
    pub external_brokers: Option<String>,
    /// Replication factor of topics created on external brokers.
    pub replication: i32,
    /// Topics, group and (once connected) the brokers.
    pub kafka: KafkaSettings,
    /// Windows, lateness, scaling.
    pub settings: Settings,
    /// A partition with no message for this long follows the wall clock.
    pub idle_ms: u64,
    /// The reactions producer.
    pub producer: ProducerSettings,
    /// Per-user rate limit (reactions per second, burst).
    pub rate_limit: Option<(NonZeroU32, NonZeroU32)>,
    /// Per-address limit of registrations (per second, burst).
    pub registration_limit: Option<(NonZeroU32, NonZeroU32)>,
    /// The initial delivery tree.
    pub topology: Topology,
    /// Clients a subscriber takes before the tree grows.
    pub subscriber_capacity: usize,
    /// A registered client without an event stream for this long is released.
    pub client_ttl: Duration,
    /// Clients registered at once (`--max-clients`).
    pub max_clients: usize,
    /// Retention and queueing of each hub.
    pub hubs: HubSettings,
    /// Between keep-alive comments on idle streams.
    pub keep_alive: Duration,
    /// Tokens, when on.
    pub auth: Option<crate::auth::AuthConfig>,
}

impl RunConfig {
    /// Checks the flags and reads the hostfile.
    pub fn from_args(args: &RunArgs) -> Result<RunConfig, ConfigError> {
        let placement = args.dataflow.placement()?;
        let several = placement.deployment.processes() > 1;
        if several && args.brokers.is_none() {
            return Err(ConfigError(
                "several processes (--processes above 1) need --brokers: the embedded broker lives inside one process"
                    .into(),
            ));
        }
        let advertise_http = args.advertise_http.as_deref().map(base_url).transpose()?;
        let advertised = if several {
            Some(crate::peers::advertised_http(
                &placement,
                advertise_http.as_deref(),
            )?)
        } else {
            None
        };
        let cluster_secret = match (&args.cluster_secret_file, several) {
            (Some(path), true) => Some(crate::peers::ClusterSecret::read(path)?),
            (None, true) => {
                return Err(ConfigError(
                    "several processes (--processes above 1) need --cluster-secret-file: the same file on every process, holding a secret only they know (e.g. `head -c 32 /dev/urandom | base64 > cluster.secret`)"
                        .into(),
                ))
            }
            (_, false) => None,
        };
        let cors = crate::cors::Cors::new(&args.cors_origin)?;
        let delivery = &args.delivery;
        let saturating = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(RunConfig {
            http: args.http,
            advertised,
            advertise_http,
            cors,
            cluster_secret,
            external_brokers: args.brokers.clone(),
            replication: i32::from(args.replication),
            kafka: KafkaSettings {
                brokers: args.brokers.clone().unwrap_or_default(),
                reactions_topic: args.reactions_topic.clone(),
                windows_topic: args.windows_topic.clone(),
                partitions: i32::from(args.partitions),
                group_id: args.group_id.clone(),
            },
            settings: args.dataflow.settings()?,
            idle_ms: args.idle_ms,
            producer: ProducerSettings {
                linger_ms: args.linger_ms,
                queue_messages: args.producer_queue,
                ack: args.ack,
                ack_timeout: Duration::from_millis(args.ack_timeout_ms),
                // Only the embedded broker drops what has not been read.
                unread_limit: args
                    .brokers
                    .is_none()
                    .then_some(crate::kafka::embedded::UNREAD_PER_PARTITION),
            },
            rate_limit: args
                .rate_limit
                .map(|per_second| (per_second, args.rate_limit_burst.unwrap_or(per_second))),
            registration_limit: NonZeroU32::new(args.registration_rate_limit)
                .map(|per_second| (per_second, args.registration_burst)),
            topology: Topology {
                clusters: delivery.clusters,
                subscribers: delivery.subscribers,
            },
            subscriber_capacity: saturating(delivery.subscriber_capacity),
            client_ttl: Duration::from_secs(delivery.client_ttl_secs),
            max_clients: saturating(delivery.max_clients),
            hubs: HubSettings {
                retention: saturating(delivery.retention),
                client_queue: saturating(delivery.client_queue),
                max_resume_bytes: saturating(delivery.max_resume_bytes),
                idle_windows: args.dataflow.stream_idle_windows,
            },
            keep_alive: Duration::from_secs(delivery.keep_alive_secs),
            auth: args.auth.config()?,
            placement,
        })
    }

    /// Whether this is one process of several.
    pub fn several_processes(&self) -> bool {
        self.placement.deployment.processes() > 1
    }
}

/// `--advertise-http` checked: an `http` or `https` base URL with a host and no path, without
/// its trailing slash.
fn base_url(given: &str) -> Result<String, ConfigError> {
    let invalid = |why: &str| {
        ConfigError(format!(
            "--advertise-http {given:?}: {why}; give the base URL clients reach this process at, like http://host:8080"
        ))
    };
    let url = reqwest::Url::parse(given).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a path, query or fragment"));
    }
    Ok(given.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_address_is_a_base_url() {
        assert_eq!(base_url("http://h:8080/").unwrap(), "http://h:8080");
        assert_eq!(
            base_url("https://live.example").unwrap(),
            "https://live.example"
        );
        for bad in [
            "h:8080",
            "ftp://h",
            "http://h/x",
            "http://h?x=1",
            "http://",
            "h",
        ] {
            let e = base_url(bad).unwrap_err();
            assert!(e.0.contains("--advertise-http"), "{bad}: {e}");
        }
    }
}
