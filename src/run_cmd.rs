//! `emostream run`: the command around the system's lifecycle ([`crate::system`]): an async
//! runtime, the banner, Ctrl-C and SIGTERM as the shutdown.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::cli::RunArgs;
use crate::error::RunError;
use crate::system::{run_until, System};

/// Runs until Ctrl-C or SIGTERM, or until a fault stops the system.
pub fn run(args: &RunArgs) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Internal(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(run_until(args, shutdown_signal(), |system| {
        print_banner(args, system)
    }));
    // A blocking task stuck on the broker must not keep the process from exiting.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

fn print_banner(args: &RunArgs, system: &System) {
    let base = format!("http://{}", system.http_addr);
    println!("emostream is running");
    println!("  dashboard: {base}/");
    println!(
        "  brokers:   {}{}",
        system.brokers,
        if args.brokers.is_none() {
            " (embedded)"
        } else {
            ""
        }
    );
    println!("  send:      curl -X POST {base}/emoji -H 'content-type: application/json' -d '{{\"user_id\":\"me\",\"emoji_type\":\"🔥\"}}'");
    println!("  register:  curl -X POST {base}/clients   (answers with your events_url)");
    println!("  events:    curl -N {base}/clusters/0/subscribers/0/events");
    println!("  tree:      {base}/clusters");
    println!("  health:    {base}/healthz  {base}/readyz  metrics: {base}/metrics");
    println!(
        "  windows:   logged here as they close, and written to topic {}",
        args.windows_topic
    );
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Parses `--rate-limit`'s value.
pub fn non_zero(s: &str) -> Result<NonZeroU32, String> {
    s.parse::<NonZeroU32>()
        .map_err(|_| format!("{s:?} is not a whole number above 0"))
}
