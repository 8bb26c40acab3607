//! A delivery tree served by several processes: what delivery asks of them, as a trait they
//! implement (`crate::peers` does), so that delivery itself knows nothing of how processes
//! find each other or report to one another. A registry without one serves every hub here and
//! holds every registration.

/// Who serves a hub's event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    /// The process.
    pub process: usize,
    /// Whether that is this process.
    pub here: bool,
    /// Its base URL (`http://host:port`), when processes send clients to each other.
    pub url: Option<String>,
}

impl Serving {
    /// Everything is served here, by the only process.
    pub fn alone() -> Serving {
        Serving {
            process: 0,
            here: true,
            url: None,
        }
    }
}

/// The processes sharing one tree, as delivery sees them.
pub trait SharedTree: Send + Sync {
    /// Who serves hub number `hub`.
    fn serving(&self, hub: usize) -> Serving;

    /// Whether this process holds the registrations (and counts each client's streams).
    fn holds_registrations(&self) -> bool;

    /// Streams of hub number `hub` open on the other processes, as they last reported.
    fn connected_elsewhere(&self, hub: usize) -> usize;

    /// Event streams open on the other processes per stream id, as they last reported.
    fn viewers_elsewhere(&self) -> std::collections::HashMap<String, usize> {
        std::collections::HashMap::new()
    }

    /// On a process that does not hold the registrations: a stream of `client_id` opened here.
    fn attached(&self, client_id: &str);

    /// On a process that does not hold the registrations: a stream of `client_id` ended here.
    fn detached(&self, client_id: &str);

    /// On a process that does not hold the registrations: copies the holder's tree into
    /// `registry` now, for a client that came for a hub the copy does not have yet. `None`
    /// when there is nothing to do (or it was done a moment ago).
    fn refresh<'a>(&'a self, _registry: &'a super::Registry) -> Option<Refresh<'a>> {
        None
    }
}

/// The future of [`SharedTree::refresh`].
pub type Refresh<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
