//! Helpers shared by the benchmark binaries.

use anyhow::Context;
use std::time::Duration;

/// Percentile `p` (0..=100) of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Resident memory of process `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The peak resident set of process `pid` so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// A KiB figure of `/proc/{pid}/status`.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

/// Raises this process's open-files limit as far as it goes (each connection a benchmark opens
/// is a file) and says how far that is.
pub fn raise_open_files() -> anyhow::Result<u64> {
    use anyhow::Context;
    let limit =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-files limit")?;
    println!("client open-files limit: {limit}");
    Ok(limit)
}

/// A server a benchmark started; killed when dropped, however the benchmark ends.
pub struct Server {
    child: std::process::Child,
    /// Where it serves HTTP.
    pub addr: std::net::SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `bin run` on a free loopback port with `extra` flags, its log in `log`, and
    /// waits until it is ready (30 s at most).
    pub async fn start(bin: &std::path::Path, extra: &[&str], log: &str) -> anyhow::Result<Server> {
        use anyhow::Context;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let child = std::process::Command::new(bin)
            .args(["run", "--http", &addr.to_string()])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("cannot start {} (build it first)", bin.display()))?;
        let server = Server { child, addr };
        let http = reqwest::Client::new();
        let began = std::time::Instant::now();
        while http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            if began.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the server did not get ready; see {log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(server)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// User and system time of this process's waited-for children so far, from /proc: on a
/// machine shared with other work the wall time varies more than the CPU a replay takes.
pub fn children_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // cutime and cstime are fields 16 and 17, in USER_HZ ticks (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .context("short /proc/self/stat")?
            .parse::<u64>()?)
    };
    Ok(Duration::from_millis((tick(13)? + tick(14)?) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
