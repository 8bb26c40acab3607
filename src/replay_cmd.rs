//! `emostream replay`: NDJSON reactions in, window summaries out.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use dataflows::reaction::Field;
use dataflows::replay::{replay_ndjson, ReplayConfig, ReplayReport, DEFAULT_BLOCK_BYTES};
use dataflows::wall_clock_ms;

use crate::cli::ReplayArgs;

/// Runs a replay, writing summaries to `out`. Returns what was read.
pub fn run(args: &ReplayArgs, out: &mut dyn Write) -> anyhow::Result<ReplayReport> {
    let placement = args.dataflow.placement().map_err(anyhow::Error::msg)?;
    if placement.deployment.processes() > 1 {
        crate::peers::peer_loss::exit_on_peer_loss(placement.deployment.addresses.clone());
    }
    if placement.deployment.processes() > 1 && args.file.as_os_str() == "-" {
        anyhow::bail!(
            "a replay on several processes reads a file that every process can open, not stdin (-)"
        );
    }
    let input: Box<dyn Read + Send> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        let file = File::open(&args.file).map_err(|e| {
            anyhow::anyhow!(
                "cannot open {}: {e}; give a readable NDJSON file, or - for stdin",
                args.file.display()
            )
        })?;
        Box::new(file)
    };
    let config = ReplayConfig {
        settings: args.dataflow.settings()?,
        deployment: placement.deployment,
        block_bytes: DEFAULT_BLOCK_BYTES,
        now_ms: wall_clock_ms(),
    };
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let report = replay_ndjson(input, &config, &mut out)?;
    out.flush()?;
    Ok(report)
}

/// The stderr summary of a replay.
pub fn describe(report: &ReplayReport) -> String {
    let mut text = String::new();
    for (line, reason) in &report.errors {
        text.push_str(&format!("line {line}: {reason}\n"));
    }
    let by_field: Vec<String> = Field::ALL
        .iter()
        .filter(|f| report.invalid.get(**f) > 0)
        .map(|f| format!("{} {}", f.name(), report.invalid.get(*f)))
        .collect();
    let by_field = if by_field.is_empty() {
        String::new()
    } else {
        format!(" ({})", by_field.join(", "))
    };
    let corrected = if report.corrected > 0 {
        format!(" ({} of them correcting a closed window)", report.corrected)
    } else {
        String::new()
    };
    text.push_str(&format!(
        "read {} reactions: {} counted{corrected}, {} invalid{by_field}, {} late; {} windows\n",
        report.lines,
        report.counted,
        report.invalid.total(),
        report.late,
        report.windows
    ));
    text
}
