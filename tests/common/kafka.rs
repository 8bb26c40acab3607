//! Apache Kafka 4.4.0 for the tests, one broker per test: `tests/kafka/start.sh` fetches the
//! jars once with Maven (Java 17 and Maven are all it needs), formats a KRaft node in a
//! temporary directory and starts it. The tests that use it are ignored by default
//! (`#[ignore = "needs Apache Kafka ..."]`); CI runs them with `--include-ignored`.
//!
//! The handle can pause the broker (SIGSTOP), resume it, kill it (SIGKILL) and start it again
//! on the same data, for outage tests; dropping it stops the broker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex};

/// Whether a test of this binary holds a broker: the tests of one binary take turns, since a
/// broker, the system under test and its clients already share the 2 cores of a CI machine.
static BUSY: Mutex<bool> = Mutex::new(false);
static FREE: Condvar = Condvar::new();

fn take_turn() {
    let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        busy = FREE.wait(busy).unwrap_or_else(|e| e.into_inner());
    }
    *busy = true;
}

fn end_turn() {
    *BUSY.lock().unwrap_or_else(|e| e.into_inner()) = false;
    FREE.notify_one();
}

/// A running broker and its directory (config, data, log).
pub struct Kafka {
    dir: tempfile::TempDir,
    /// `host:port` to bootstrap from.
    pub brokers: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/start.sh")
}

fn run_script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs tests/kafka/start.sh");
    assert!(
        out.status.success(),
        "tests/kafka/start.sh {args:?} failed (it needs Java 17 and Maven): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Kafka {
    /// Starts a fresh broker on a free loopback port, once no other test of this binary holds
    /// one.
    pub fn start() -> Kafka {
        take_turn();
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Ports below the ephemeral range, from the pool every test of the binary shares: a
        // restart finds them free again.
        let ports = super::ports::free_ports(2);
        let started = std::panic::catch_unwind(|| {
            run_script(&[
                "start",
                &dir.path().to_string_lossy(),
                "127.0.0.1",
                &ports[0].to_string(),
                &ports[1].to_string(),
            ])
        });
        match started {
            Ok(brokers) => Kafka { dir, brokers },
            Err(panic) => {
                end_turn();
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .expect("the broker's pid file")
            .trim()
            .parse()
            .expect("a pid")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} the broker");
    }

    /// Stops the broker's process where it is (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the broker (SIGKILL): nothing is flushed beyond what the broker had written.
    pub fn kill(&self) {
        self.signal("-KILL");
        let pid = self.pid().to_string();
        // Wait until it is gone, so a restart does not find its ports taken.
        for _ in 0..200 {
            let alive = Command::new("kill")
                .args(["-0", &pid])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !alive {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the broker (pid {pid}) outlived SIGKILL");
    }

    /// Starts the broker again on the same data and address (after [`Kafka::kill`]).
    pub fn restart(&self) {
        let brokers = run_script(&["start", &self.dir.path().to_string_lossy()]);
        assert_eq!(brokers, self.brokers, "a restart keeps the address");
    }

    /// Kills the broker and starts it again on the same address with no data: a broker that
    /// lost its disk, or was replaced by an empty one.
    pub fn restart_empty(&self) {
        self.kill();
        std::fs::remove_dir_all(self.dir.path().join("data")).expect("the broker's data removed");
        self.restart();
    }

    /// `kafka-consumer-groups` against this broker, e.g. `["--describe", "--group", "g"]`.
    pub fn consumer_groups(&self, args: &[&str]) -> String {
        let mut all = vec!["groups", self.dir.path().to_str().expect("a UTF-8 path")];
        all.extend_from_slice(args);
        run_script(&all)
    }

    /// The broker's log, for a failing test's message.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.dir.path().to_string_lossy()])
            .status();
        end_turn();
    }
}
