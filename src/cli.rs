//! Command-line flags. Every flag also reads an `EMOSTREAM_*` environment variable.

use std::num::NonZeroU64;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dataflows::{ScaleRule, Settings, Windowing};

/// Real-time emoji reactions for live events.
#[derive(Debug, Parser)]
#[command(name = "emostream", version, about, long_about = None)]
pub struct Cli {
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
}

impl DataflowArgs {
    /// The dataflow settings these flags describe.
    pub fn settings(&self) -> Settings {
        Settings {
            windowing: Windowing {
                window_ms: self.window_ms,
                lateness_ms: self.lateness_ms,
            },
            scale: ScaleRule {
                per: self.scale_per,
            },
        }
    }
}
