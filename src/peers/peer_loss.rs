//! Several processes cannot go on without one of them: timely's network threads panic when a
//! connection to a peer fails, and the workers then wait forever. This hook turns that panic
//! into a clear message naming the lost peer and, for `run`, a fault that stops the system
//! with [`EXIT_PEER_LOST`], so supervisors see the failure within seconds and restart every
//! process.

/// The exit status of a process that lost a peer.
pub const EXIT_PEER_LOST: i32 = crate::error::exit::PEER as i32;

/// For `run`: a lost peer becomes a [`Fault`](crate::system::Fault) of the deployment's
/// processes, so the system stops through its ordered shutdown and exits with
/// [`EXIT_PEER_LOST`]. `addresses` are the processes' timely addresses, in process order.
pub fn report_peer_loss(addresses: Vec<String>, faults: crate::system::Faults) {
    on_peer_loss(addresses, move |message| {
        faults.report(crate::system::Component::Peers, message);
    });
}

/// For `replay`, which has nothing to drain: a lost peer ends the process at once.
pub fn exit_on_peer_loss(addresses: Vec<String>) {
    on_peer_loss(addresses, |message| {
        eprintln!("emostream: {message}");
        std::process::exit(EXIT_PEER_LOST);
    });
}

/// Installs the hook: panics of timely's network threads go to `lost` with a message naming
/// the peer; every other panic goes to the default hook.
fn on_peer_loss(addresses: Vec<String>, lost: impl Fn(String) + Send + Sync + 'static) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("");
        match lost_peer(name, message) {
            Some(peer) => {
                let address = addresses.get(peer).map_or("?", String::as_str);
                lost(format!(
                    "lost process {peer} ({address}): {message}; the processes cannot continue without it (restart every process: they resume from the committed offsets)"
                ));
            }
            None if message.contains("timely communication error") => {
                lost(format!(
                    "the connections between the processes failed: {message}"
                ));
            }
            None => default(info),
        }
    }));
}

/// The peer a panic of timely's network thread `thread` is about, if it is one.
fn lost_peer(thread: &str, message: &str) -> Option<usize> {
    if !message.contains("timely communication error") {
        return None;
    }
    let peer = thread
        .strip_prefix("timely:recv-")
        .or_else(|| thread.strip_prefix("timely:send-"))?;
    peer.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_peer_of_a_failed_network_thread() {
        let message = "timely communication error: reading data: Connection reset by peer";
        assert_eq!(lost_peer("timely:recv-2", message), Some(2));
        assert_eq!(lost_peer("timely:send-0", message), Some(0));
        assert_eq!(lost_peer("timely:work-0", message), None);
        assert_eq!(lost_peer("timely:recv-1", "index out of bounds"), None);
    }
}
