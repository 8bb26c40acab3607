//! Free loopback ports for processes a test starts with a fixed address (a hostfile, a
//! broker's listener): the one place tests pick them.

use std::net::TcpListener;

/// `n` distinct free ports on 127.0.0.1. All are held at once, so none is handed out twice,
/// then released for the process under test to bind; another program could take one in
/// between, a race the tests accept.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One free port on 127.0.0.1 (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}
