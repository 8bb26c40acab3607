//! Free loopback ports for processes a test starts with a fixed address (a hostfile, a
//! broker's listener): the one place tests pick them.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// Where picking starts: below the kernel's ephemeral range (Linux's default is 32768–60999),
/// so no outgoing connection is ever given one of these ports as its own. A port taken from
/// that range is free again whenever its process stops, and a test that restarts a process on
/// the same port could find it taken by some client's connection in between.
const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

/// The next port to try, shared by every test of the binary so that tests running at the same
/// time never pick the same one.
static NEXT: AtomicU16 = AtomicU16::new(0);

/// `n` distinct free ports on 127.0.0.1, below the ephemeral range. Each is bound once to
/// check it is free, then released for the process under test to bind; another program could
/// take one in between, a race the tests accept.
pub fn free_ports(n: usize) -> Vec<u16> {
    let span = LAST - FIRST;
    // Each test binary starts somewhere else, so binaries run side by side rarely meet.
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % u32::from(span)) as u16 + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(
        ports.len(),
        n,
        "no {n} free ports between {FIRST} and {LAST} on 127.0.0.1"
    );
    ports
}

/// One free port on 127.0.0.1 (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}
