//! Command-line flags. Every flag also reads an `EMOSTREAM_*` environment variable.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dataflows::deployment::Deployment;
use dataflows::{ScaleRule, Settings, Windowing};

use crate::kafka::producer::Ack;
use crate::logging::LogFormat;
use crate::peers::hostfile::Host;

/// Real-time emoji reactions for live events.
#[derive(Debug, Parser)]
#[command(name = "emostream", version, about, long_about = None)]
pub struct Cli {
    /// Log lines on stderr: `text`, or `json` (one object per line) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text,
          env = "EMOSTREAM_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Count reactions from an NDJSON file (or `-` for stdin); print one window summary per
    /// line on stdout, from the first window to the last, empty ones included, and a summary
    /// of what was read on stderr.
    Replay(ReplayArgs),
    /// Run everything in one process: a broker (embedded unless --brokers), the ingest API and
    /// the live dataflow. Stops on Ctrl-C or SIGTERM, after emitting the windows read so far.
    Run(Box<RunArgs>),
    /// Load a running system: send reactions over HTTP at a set rate, follow the windows on
    /// registered SSE clients, and check every window each client receives against a ledger of
    /// what was sent. Exits non-zero when any window is lost, doubled or wrong. Run it against
    /// a system no one else is sending to: their reactions would count as wrong.
    Load(crate::load::LoadArgs),
    /// Mint a token (HS256, from the secret file `run --auth-hs256-secret-file` checks with)
    /// for a user and the streams it may react on and watch; printed on stdout.
    Token(crate::auth::mint::TokenArgs),
}

/// Flags of `emostream run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080", env = "EMOSTREAM_HTTP")]
    pub http: SocketAddr,
    /// Kafka bootstrap servers (`host:port,...`). Without it, an embedded in-memory broker runs
    /// in-process (not durable; for trying emostream out).
    #[arg(long, env = "EMOSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Topic of reactions.
    #[arg(
        long,
        default_value = "emoji-reactions",
        env = "EMOSTREAM_REACTIONS_TOPIC"
    )]
    pub reactions_topic: String,
    /// Topic of window summaries.
    #[arg(long, default_value = "emoji-windows", env = "EMOSTREAM_WINDOWS_TOPIC")]
    pub windows_topic: String,
    /// Partitions of the reactions topic when emostream creates it.
    #[arg(long, default_value_t = 4, env = "EMOSTREAM_PARTITIONS",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub partitions: u16,
    /// Replication factor of topics emostream creates on --brokers.
    #[arg(long, default_value_t = 1, env = "EMOSTREAM_REPLICATION",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub replication: u16,
    /// Consumer group whose committed offsets record what has been emitted.
    #[arg(long, default_value = "emostream", env = "EMOSTREAM_GROUP_ID")]
    pub group_id: String,
    /// Producer batching delay in ms (the reactions topic is written every 0.5 s by default).
    #[arg(long, default_value_t = 500, env = "EMOSTREAM_LINGER_MS")]
    pub linger_ms: u64,
    /// Reactions the producer queue holds; beyond it the API answers 503.
    #[arg(long, default_value_t = 100_000, env = "EMOSTREAM_PRODUCER_QUEUE",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub producer_queue: u64,
    /// When the API answers 202: once the reaction is queued, or once the broker has it.
    #[arg(long, value_enum, default_value_t = Ack::Queued, env = "EMOSTREAM_ACK")]
    pub ack: Ack,
    /// How long the broker has to confirm reactions, in ms: with `--ack broker` every request
    /// is answered within it (and a second), `503 broker_unavailable` if the broker did not
    /// confirm; with either, nothing confirmed for this long makes `/readyz` answer 503.
    #[arg(long, default_value_t = 10_000, env = "EMOSTREAM_ACK_TIMEOUT_MS",
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub ack_timeout_ms: u64,
    /// Per-user limit in reactions per second (off when not given); beyond it the API answers 429.
    #[arg(long, env = "EMOSTREAM_RATE_LIMIT", value_parser = crate::run_cmd::non_zero)]
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// Burst allowed by the per-user limit (default: one second's worth).
    #[arg(long, env = "EMOSTREAM_RATE_LIMIT_BURST", value_parser = crate::run_cmd::non_zero)]
    pub rate_limit_burst: Option<std::num::NonZeroU32>,
    /// Registrations (`POST /clients`) per second from one client address; 0 turns the limit
    /// off (e.g. behind a proxy, where every client has the proxy's address).
    #[arg(long, default_value_t = 50, env = "EMOSTREAM_REGISTRATION_RATE_LIMIT")]
    pub registration_rate_limit: u32,
    /// Registrations one client address may make at once before the rate applies.
    #[arg(long, default_value = "1000", env = "EMOSTREAM_REGISTRATION_BURST",
          value_parser = crate::run_cmd::non_zero)]
    pub registration_burst: std::num::NonZeroU32,
    /// A partition with no reaction for this many ms follows the wall clock, so windows close
    /// when nobody reacts.
    #[arg(long, default_value_t = 1000, env = "EMOSTREAM_IDLE_MS")]
    pub idle_ms: u64,
    /// This process's HTTP base URL as clients and the other processes reach it
    /// (`http://host:port`), used in each registration's `events_url`; by default the
    /// hostfile's second column, else `http://` and the --http address.
    #[arg(long, env = "EMOSTREAM_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// Origins (`https://example.com`, comma-separated or repeated) whose web pages may post
    /// reactions and register clients; default none. Event streams are readable from any
    /// origin.
    #[arg(long, env = "EMOSTREAM_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// A file holding the secret the processes of a cluster share (the same file on every
    /// process): the endpoints they use among themselves refuse callers without it. Needed
    /// with --processes above 1.
    #[arg(long, env = "EMOSTREAM_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// Delivery settings.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Tokens.
    #[command(flatten)]
    pub auth: crate::auth::args::AuthArgs,
    /// Connection limits.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Dataflow settings.
    #[command(flatten)]
    pub dataflow: DataflowArgs,
}

/// Flags that bound what one connection may hold.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Open connections served at once; beyond, a new one is answered
    /// `503 too_many_connections` and closed. Default: the open-file limit less what the broker
    /// clients, logs and the dataflow need.
    #[arg(long, env = "EMOSTREAM_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// A new connection's request head must be complete within this, in ms.
    #[arg(long, default_value_t = 10_000, env = "EMOSTREAM_HEADER_TIMEOUT_MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub header_timeout_ms: u64,
    /// A keep-alive connection idle this long (no next request head, no bytes either way), in
    /// ms, is closed.
    #[arg(long, default_value_t = 30_000, env = "EMOSTREAM_IDLE_TIMEOUT_MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub idle_timeout_ms: u64,
    /// An event-stream write that cannot complete within this, in ms, closes a slow client.
    #[arg(long, default_value_t = 10_000, env = "EMOSTREAM_WRITE_TIMEOUT_MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub write_timeout_ms: u64,
}

/// Flags of SSE delivery.
#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// Clusters (groups of subscribers) in the delivery tree.
    #[arg(long, default_value_t = 3, env = "EMOSTREAM_CLUSTERS",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub clusters: u32,
    /// Subscribers per cluster at start.
    #[arg(long, default_value_t = 3, env = "EMOSTREAM_SUBSCRIBERS",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub subscribers: u32,
    /// Clients a subscriber is assigned before a subscriber is added to the least-loaded
    /// cluster.
    #[arg(long, default_value_t = 10_000, env = "EMOSTREAM_SUBSCRIBER_CAPACITY",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub subscriber_capacity: u64,
    /// Clients registered at once, over the whole tree; beyond it `POST /clients` answers
    /// `503 too_many_clients` until some are released or expire.
    #[arg(long, default_value_t = 1_000_000, env = "EMOSTREAM_MAX_CLIENTS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_clients: u64,
    /// A registered client with no open event stream for this long is released.
    #[arg(long, default_value_t = 60, env = "EMOSTREAM_CLIENT_TTL_SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub client_ttl_secs: u64,
    /// Windows each subscriber keeps for clients reconnecting with `Last-Event-ID`.
    #[arg(long, default_value_t = 150, env = "EMOSTREAM_RETENTION",
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub retention: u64,
    /// Windows a client may fall behind before it is sent `event: resync` with the latest.
    #[arg(long, default_value_t = 16, env = "EMOSTREAM_CLIENT_QUEUE",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub client_queue: u64,
    /// Bytes of missed windows one reconnect with `Last-Event-ID` may replay; a client that
    /// missed more is sent `event: resync` with the latest window instead. 0 never replays.
    #[arg(long, default_value_t = 1 << 20, env = "EMOSTREAM_MAX_RESUME_BYTES")]
    pub max_resume_bytes: u64,
    /// Seconds between keep-alive comments on idle streams.
    #[arg(long, default_value_t = 15, env = "EMOSTREAM_KEEP_ALIVE_SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive_secs: u64,
}

/// Flags of `emostream replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// NDJSON reactions, one `{"user_id", "emoji_type", "timestamp"}` object per line; `-` reads stdin.
    #[arg(value_name = "FILE", env = "EMOSTREAM_REPLAY_FILE")]
    pub file: PathBuf,
    /// Dataflow settings.
    #[command(flatten)]
    pub dataflow: DataflowArgs,
}

/// Flags shared by every command that runs the dataflow.
#[derive(Debug, Clone, Args)]
pub struct DataflowArgs {
    /// Worker threads in this process.
    #[arg(long, short = 'w', default_value_t = 1, env = "EMOSTREAM_WORKERS",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,
    /// Window length in milliseconds.
    #[arg(long, default_value = "2000", env = "EMOSTREAM_WINDOW_MS")]
    pub window_ms: NonZeroU64,
    /// How long after a window's end (in event time) its reactions are still counted, in ms.
    #[arg(long, default_value_t = 500, env = "EMOSTREAM_LATENESS_MS")]
    pub lateness_ms: u64,
    /// Reactions per displayed emoji: `scaled = ceil(count / scale-per)`.
    #[arg(long, default_value = "1000", env = "EMOSTREAM_SCALE_PER")]
    pub scale_per: NonZeroU64,
    /// Windows a stream keeps getting, empty or not, after each window in which it had
    /// reactions; past them it gets none until its next reaction (30 = one minute of 2 s
    /// windows).
    #[arg(long, default_value_t = dataflows::DEFAULT_IDLE_WINDOWS, env = "EMOSTREAM_STREAM_IDLE_WINDOWS")]
    pub stream_idle_windows: u64,
    /// How far behind the watermark (in ms, counted in whole windows) a late reaction's window
    /// may be and still be corrected (emitted again with a higher "revision"); later ones are
    /// dropped and counted as late. 0 drops every late reaction. At most the idle span
    /// (--stream-idle-windows × --window-ms); by default 10000, or the idle span if shorter.
    #[arg(long, env = "EMOSTREAM_CORRECTION_HORIZON_MS")]
    pub correction_horizon_ms: Option<u64>,
    /// Processes running the dataflow together (peers); each runs --workers threads.
    #[arg(long, default_value_t = 1, env = "EMOSTREAM_PROCESSES",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub processes: u16,
    /// This process's index among the processes, 0 to --processes - 1.
    #[arg(long, default_value_t = 0, env = "EMOSTREAM_PROCESS")]
    pub process: u16,
    /// The processes' hostfile: one `host:port` per process, in process order, where timely's
    /// connections go, optionally followed by the process's advertised HTTP address
    /// (`http://host:port`). Needed with --processes above 1.
    #[arg(long, env = "EMOSTREAM_HOSTFILE")]
    pub hostfile: Option<PathBuf>,
    /// Seconds to wait for every other process to connect.
    #[arg(long, default_value_t = 30, env = "EMOSTREAM_CONNECT_TIMEOUT_SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub connect_timeout_secs: u64,
}

/// A flag, variable or file that must be fixed; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the workers run, as the flags describe it.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Threads and processes for timely.
    pub deployment: Deployment,
    /// Each process's hostfile entry (empty for one process).
    pub hosts: Vec<Host>,
}

impl DataflowArgs {
    /// Checks the process flags and reads the hostfile.
    pub fn placement(&self) -> Result<Placement, ConfigError> {
        let processes = usize::from(self.processes);
        let process = usize::from(self.process);
        let mut deployment = Deployment::single(usize::from(self.workers));
        deployment.connect_timeout = std::time::Duration::from_secs(self.connect_timeout_secs);
        if process >= processes {
            return Err(ConfigError(format!(
                "--process {process} is out of range: with --processes {processes} it is 0 to {}",
                processes - 1
            )));
        }
        let hosts = match (&self.hostfile, processes) {
            (None, 1) => Vec::new(),
            (None, _) => {
                return Err(ConfigError(format!(
                "--processes {processes} needs --hostfile: a file with one host:port per process"
            )))
            }
            (Some(path), _) => {
                let hosts = crate::peers::hostfile::read(path)?;
                if hosts.len() != processes {
                    return Err(ConfigError(format!(
                        "--hostfile {} lists {} processes but --processes is {processes}",
                        path.display(),
                        hosts.len()
                    )));
                }
                hosts
            }
        };
        if processes > 1 {
            deployment.process = process;
            deployment.addresses = hosts.iter().map(|h| h.timely.clone()).collect();
        }
        Ok(Placement { deployment, hosts })
    }

    /// The dataflow settings these flags describe, or why they do not work together.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let settings = Settings {
            windowing: Windowing {
                window_ms: self.window_ms,
                lateness_ms: self.lateness_ms,
            },
            scale: ScaleRule {
                per: self.scale_per,
            },
            idle_windows: self.stream_idle_windows,
            correction_horizon_ms: self.correction_horizon_ms.unwrap_or_else(|| {
                dataflows::DEFAULT_CORRECTION_HORIZON_MS.min(
                    self.stream_idle_windows
                        .saturating_mul(self.window_ms.get()),
                )
            }),
        };
        settings.check().map_err(|e| ConfigError(e.to_string()))?;
        Ok(settings)
    }
}
