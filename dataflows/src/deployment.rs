//! Where the workers run: threads of one process, or the same threads in each of several
//! processes (peers) on one or several hosts, connected by timely's networking.
//!
//! Timely moves the data between processes; this module only opens its TCP connections. It
//! does so itself, with the handshake timely uses (process `p` connects to every process below
//! it and sends its index; it accepts the others), because timely's own connection loop retries
//! forever and reports on stdout, which is `replay`'s output. Here a peer that does not connect
//! within [`Deployment::connect_timeout`] ends the start with an error that names it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Hooks, WorkerGuards};
use timely::worker::Worker;
use timely::WorkerConfig;

/// Threads per process, and the processes of the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// Worker threads in each process.
    pub threads: usize,
    /// This process's index in `addresses`.
    pub process: usize,
    /// Every process's timely address (`host:port`), in process order; empty for one process.
    pub addresses: Vec<String>,
    /// How long to wait for every other process to connect.
    pub connect_timeout: Duration,
}

impl Deployment {
    /// `threads` workers in this process alone.
    pub fn single(threads: usize) -> Deployment {
        Deployment {
            threads: threads.max(1),
            process: 0,
            addresses: Vec::new(),
            connect_timeout: Duration::from_secs(30),
        }
    }

    /// Processes in the deployment.
    pub fn processes(&self) -> usize {
        self.addresses.len().max(1)
    }

    /// Workers of every process.
    pub fn peers(&self) -> usize {
        self.threads * self.processes()
    }

    /// The process that runs global worker `worker` (timely numbers workers process by
    /// process).
    pub fn process_of(&self, worker: usize) -> usize {
        worker / self.threads.max(1)
    }
}

/// Why this process's workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another process did not connect in time, or a connection did not come from a peer: the
    /// message names the process.
    #[error("{0}")]
    Peers(String),
    /// This process cannot listen on its own address in the hostfile.
    #[error("{0}")]
    Listen(String),
    /// Timely, or this process's sockets, failed.
    #[error("{0}")]
    Local(String),
}

/// Starts the workers of this process, each running `func`, as [`timely::execute()`] does; with
/// several processes, first connects to every other one.
pub fn execute<T, F>(deployment: &Deployment, func: F) -> Result<WorkerGuards<T>, StartError>
where
    T: Send + 'static,
    F: Fn(&mut Worker) -> T + Send + Sync + 'static,
{
    let threads = deployment.threads.max(1);
    if deployment.processes() == 1 {
        return timely::execute(timely::Config::process(threads), func).map_err(StartError::Local);
    }
    let sockets = connect(deployment)?;
    let hooks = Hooks::default();
    let local =
        ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) =
        initialize_networking_from_sockets(local, sockets, deployment.process, threads, hooks)
            .map_err(|e| {
                StartError::Local(format!("cannot start timely's network threads: {e}"))
            })?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    timely::execute::execute_from(builders, Box::new(guard), WorkerConfig::default(), func)
        .map_err(StartError::Local)
}

/// The sockets to every other process, in process order, `None` at this process's place.
fn connect(deployment: &Deployment) -> Result<Vec<Option<TcpStream>>, StartError> {
    let me = deployment.process;
    let addresses = &deployment.addresses;
    let Some(my_address) = addresses.get(me) else {
        return Err(StartError::Local(format!(
            "process {me} is out of range: the hostfile lists {} processes (0 to {})",
            addresses.len(),
            addresses.len().saturating_sub(1)
        )));
    };
    let deadline = Instant::now() + deployment.connect_timeout;
    // Listen before connecting, so two processes starting together both make progress.
    let listener = TcpListener::bind(my_address).map_err(|e| {
        StartError::Listen(format!("process {me} cannot listen on {my_address}: {e}"))
    })?;
    let mut sockets: Vec<Option<TcpStream>> = (0..addresses.len()).map(|_| None).collect();
    for (peer, address) in addresses.iter().enumerate().take(me) {
        let mut stream = connect_until(address, deadline).map_err(|e| {
            StartError::Peers(format!(
                "process {peer} at {address} did not accept a connection within {}s (--connect-timeout-secs) ({e}): is it running, with the same hostfile?",
                deployment.connect_timeout.as_secs()
            ))
        })?;
        stream.write_all(&(me as u64).to_be_bytes()).map_err(|e| {
            StartError::Peers(format!("cannot greet process {peer} at {address}: {e}"))
        })?;
        sockets[peer] = Some(stream);
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| StartError::Local(format!("cannot poll {my_address}: {e}")))?;
    while sockets.iter().skip(me + 1).any(Option::is_none) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut index = [0u8; 8];
                let Ok(()) = stream.read_exact(&mut index) else {
                    continue; // not a peer: a port scan, a health check
                };
                let peer = u64::from_be_bytes(index) as usize;
                if peer <= me || peer >= addresses.len() || sockets[peer].is_some() {
                    return Err(StartError::Peers(format!(
                        "a connection from {from} claims to be process {peer}: check that every process has the same hostfile and its own --process"
                    )));
                }
                let _ = stream.set_read_timeout(None);
                sockets[peer] = Some(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = sockets
                        .iter()
                        .enumerate()
                        .skip(me + 1)
                        .filter(|(_, s)| s.is_none())
                        .map(|(p, _)| format!("process {p} ({})", addresses[p]))
                        .collect();
                    return Err(StartError::Peers(format!(
                        "{} did not connect to {my_address} within {}s (--connect-timeout-secs): is it running, with the same hostfile?",
                        missing.join(", "),
                        deployment.connect_timeout.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(StartError::Local(format!(
                    "cannot accept on {my_address}: {e}"
                )))
            }
        }
    }
    for stream in sockets.iter().flatten() {
        stream
            .set_nodelay(true)
            .map_err(|e| StartError::Local(format!("cannot set TCP_NODELAY: {e}")))?;
    }
    Ok(sockets)
}

fn connect_until(address: &str, deadline: Instant) -> std::io::Result<TcpStream> {
    loop {
        let attempt = address.to_socket_addrs().and_then(|mut addrs| {
            let addr = addrs
                .next()
                .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address"))?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        });
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use timely::dataflow::operators::{Exchange, Inspect, ToStream};

    fn free_addresses(n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
                l.local_addr().expect("bound").to_string()
            })
            .collect()
    }

    #[test]
    fn two_processes_exchange_data_through_timely() {
        let addresses = free_addresses(2);
        let (tx, rx) = mpsc::channel();
        let handles: Vec<_> = (0..2)
            .map(|process| {
                let deployment = Deployment {
                    threads: 2,
                    process,
                    addresses: addresses.clone(),
                    connect_timeout: Duration::from_secs(20),
                };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let tx = std::sync::Mutex::new(tx);
                    let guards = execute(&deployment, move |worker| {
                        let me = worker.index();
                        let tx = tx.lock().expect("not poisoned").clone();
                        worker.dataflow::<u64, _, _>(move |scope| {
                            // Every worker sends 0..8; each number goes to worker n mod 4.
                            (0..8u64)
                                .to_stream(scope)
                                .container::<Vec<_>>()
                                .exchange(|n| *n)
                                .inspect(move |n: &u64| {
                                    let _ = tx.send((me, *n));
                                });
                        });
                    })
                    .expect("the processes start");
                    for r in guards.join() {
                        r.expect("a worker finishes");
                    }
                })
            })
            .collect();
        drop(tx);
        for h in handles {
            h.join().expect("a process thread finishes");
        }
        let mut seen: Vec<(usize, u64)> = rx.iter().collect();
        seen.sort();
        assert_eq!(seen.len(), 32);
        assert!(seen.iter().all(|(worker, n)| *n as usize % 4 == *worker));
    }

    #[test]
    fn a_missing_peer_is_named_after_the_timeout() {
        let addresses = free_addresses(2);
        let deployment = Deployment {
            threads: 1,
            process: 1,
            addresses: addresses.clone(),
            connect_timeout: Duration::from_millis(600),
        };
        let e = execute(&deployment, |_| ()).err().expect("no peer");
        assert!(matches!(e, StartError::Peers(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("process 0") && e.contains(&addresses[0]), "{e}");

        let deployment = Deployment {
            process: 0,
            ..deployment
        };
        let e = execute(&deployment, |_| ()).err().expect("no peer");
        assert!(matches!(e, StartError::Peers(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("process 1") && e.contains(&addresses[1]), "{e}");

        let deployment = Deployment {
            process: 2,
            ..deployment
        };
        let e = execute(&deployment, |_| ()).err().expect("out of range");
        assert!(e.to_string().contains("out of range"), "{e}");
    }
}
