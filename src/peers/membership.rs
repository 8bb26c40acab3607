//! Who owns each hub, and what the followers report: [`Peers`] is delivery's
//! [`SharedTree`] for a deployment's processes.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use dataflows::deployment::Deployment;
use dataflows::hub_owner;

use super::leader::{Heartbeat, Leader};
use super::secret::ClusterSecret;
use crate::delivery::shared::Refresh;
use crate::delivery::{Registry, Serving, SharedTree};

/// The processes of a deployment, and where each serves HTTP.
#[derive(Clone, Debug)]
pub struct Membership {
    /// Threads, processes, and this process's index.
    pub deployment: Deployment,
    /// Each process's advertised HTTP base URL (`http://host:port`), in process order; empty
    /// for one process.
    pub http: Vec<String>,
    /// What the processes present to each other; `None` for one process.
    pub secret: Option<ClusterSecret>,
}

impl Membership {
    /// The process whose worker owns hub number `hub`, and so serves its events.
    pub fn owner(&self, hub: usize) -> usize {
        self.deployment
            .process_of(hub_owner(hub, self.deployment.peers()))
    }

    /// Whether this is process 0, which holds the registrations; the others forward to it.
    pub fn is_leader(&self) -> bool {
        self.deployment.process == 0
    }

    /// The leader's HTTP base URL.
    pub fn leader_http(&self) -> &str {
        self.http.first().map_or("", String::as_str)
    }
}

/// The processes as delivery sees them, with what the followers report.
pub struct Peers {
    membership: Membership,
    /// On a follower: streams open here by client id (the leader hears of them in heartbeats).
    attached_here: Mutex<HashMap<String, usize>>,
    /// On the leader: streams open on each other process, by hub number, then process.
    connected_elsewhere: Mutex<HashMap<usize, HashMap<usize, usize>>>,
    /// On the leader: each other process's viewers per stream id.
    viewers_elsewhere: Mutex<HashMap<usize, Vec<(String, usize)>>>,
    /// On a follower: the way to the leader, for copies of its tree on demand.
    leader: OnceLock<Leader>,
    /// When the last copy on demand began. One runs at a time, and a request waits for the
    /// next to begin after it came, so requests for unknown hubs share copies rather than
    /// flood the leader.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl Peers {
    /// Nothing reported yet.
    pub fn new(membership: Membership) -> Peers {
        Peers {
            membership,
            attached_here: Mutex::new(HashMap::new()),
            connected_elsewhere: Mutex::new(HashMap::new()),
            viewers_elsewhere: Mutex::new(HashMap::new()),
            leader: OnceLock::new(),
            refreshed: tokio::sync::Mutex::new(None),
        }
    }

    /// The processes.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// On the leader: keeps alive the clients with streams open on the sender, and records
    /// its open streams per hub. A beat of a process that does not exist is refused, with
    /// why; counts for hubs the tree does not have (removed since the follower's last copy)
    /// are not taken.
    pub fn heartbeat(&self, registry: &Registry, beat: &Heartbeat) -> Result<(), String> {
        let processes = self.membership.deployment.processes();
        if beat.process == 0 || beat.process >= processes {
            return Err(format!(
                "process {} sends no heartbeats: the followers are 1 to {}",
                beat.process,
                processes.saturating_sub(1)
            ));
        }
        let hubs = registry.hub_count();
        registry.touch(&beat.attached);
        let mut elsewhere = self
            .connected_elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for per_process in elsewhere.values_mut() {
            per_process.remove(&beat.process);
        }
        for (hub, n) in beat.connected.iter().filter(|(hub, _)| *hub < hubs) {
            elsewhere.entry(*hub).or_default().insert(beat.process, *n);
        }
        drop(elsewhere);
        // Only ids a stream can have: a beat cannot plant arbitrary names in GET /streams.
        let viewers = beat
            .viewers
            .iter()
            .filter(|(id, _)| dataflows::StreamId::parse(id).is_ok())
            .cloned()
            .collect();
        self.viewers_elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(beat.process, viewers);
        Ok(())
    }

    /// On a follower: the clients with streams open here, and the open streams per hub.
    pub fn next_heartbeat(&self, registry: &Registry) -> Heartbeat {
        let attached = self
            .attached_here
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut connected = Vec::new();
        registry.for_each(|hub| {
            if hub.connected() > 0 {
                connected.push((hub.index, hub.connected()));
            }
        });
        Heartbeat {
            process: self.membership.deployment.process,
            attached,
            connected,
            viewers: registry.streams().viewers(),
        }
    }
}

impl SharedTree for Peers {
    fn serving(&self, hub: usize) -> Serving {
        let process = self.membership.owner(hub);
        Serving {
            process,
            here: process == self.membership.deployment.process,
            url: self.membership.http.get(process).cloned(),
        }
    }

    fn holds_registrations(&self) -> bool {
        self.membership.is_leader()
    }

    fn connected_elsewhere(&self, hub: usize) -> usize {
        self.connected_elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hub)
            .map_or(0, |per| per.values().fold(0, |a, n| a.saturating_add(*n)))
    }

    fn viewers_elsewhere(&self) -> HashMap<String, usize> {
        let mut sum: HashMap<String, usize> = HashMap::new();
        for per_process in self
            .viewers_elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            for (id, n) in per_process {
                let total = sum.entry(id.clone()).or_default();
                *total = total.saturating_add(*n);
            }
        }
        sum
    }

    fn attached(&self, client_id: &str) {
        *self
            .attached_here
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(client_id.to_owned())
            .or_default() += 1;
    }

    fn refresh<'a>(&'a self, registry: &'a Registry) -> Option<Refresh<'a>> {
        if self.membership.is_leader() {
            return None;
        }
        let asked = Instant::now();
        let leader = self.leader.get_or_init(|| {
            Leader::new(
                self.membership.leader_http(),
                self.membership.secret.clone(),
            )
        });
        Some(Box::pin(async move {
            let mut last = self.refreshed.lock().await;
            if last.is_some_and(|began| began >= asked) {
                return; // a copy begun since this request came has been made
            }
            *last = Some(Instant::now());
            // Failing, the request is answered from the copy as it is; the loop that copies
            // the tree every second warns if the failure lasts.
            if let Err(e) = leader.sync(registry).await {
                tracing::debug!("no copy of the leader's tree on demand: {e}");
            }
        }))
    }

    fn detached(&self, client_id: &str) {
        let mut here = self.attached_here.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = here.get_mut(client_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                here.remove(client_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use dataflows::Topology;

    use super::*;

    fn membership(process: usize, processes: usize, threads: usize) -> Membership {
        Membership {
            deployment: Deployment {
                threads,
                process,
                addresses: (0..processes).map(|p| format!("h{p}:1")).collect(),
                connect_timeout: Duration::from_secs(1),
            },
            http: (0..processes).map(|p| format!("http://h{p}")).collect(),
            secret: None,
        }
    }

    #[test]
    fn each_hub_is_served_by_the_process_of_the_worker_that_publishes_it() {
        let registry = Registry::for_tests(Topology::default(), 1);
        for _ in 0..14 {
            registry.register(); // capacity 1: the tree grows past its 9 hubs
        }
        for (processes, threads) in [(1, 1), (2, 1), (2, 2), (3, 2)] {
            let peers = processes * threads;
            let membership = membership(0, processes, threads);
            let mut served_by = vec![Vec::new(); 14];
            for worker in 0..peers {
                registry.for_each_owned(worker, peers, |hub| {
                    served_by[hub.index].push(worker / threads);
                });
            }
            for (hub, processes) in served_by.iter().enumerate() {
                assert_eq!(processes, &[membership.owner(hub)], "hub {hub}");
            }
        }
    }

    #[test]
    fn a_hub_is_served_by_the_process_of_the_worker_that_owns_it() {
        let m = membership(1, 2, 2);
        // Workers 0 and 1 run on process 0, 2 and 3 on process 1.
        let owners: Vec<_> = (0..6).map(|h| m.owner(h)).collect();
        assert_eq!(owners, [0, 0, 1, 1, 0, 0]);
        let peers = Peers::new(m);
        assert!(peers.serving(2).here);
        assert_eq!(peers.serving(4).url.as_deref(), Some("http://h0"));
        assert!(!peers.holds_registrations());
    }

    #[test]
    fn the_leader_counts_what_followers_report() {
        let registry = Registry::for_tests(Topology::default(), 10);
        let leader = Arc::new(Peers::new(membership(0, 2, 1)));
        assert!(registry.share(Arc::clone(&leader) as Arc<dyn SharedTree>));
        let beat = |connected: Vec<(usize, usize)>| Heartbeat {
            process: 1,
            attached: Vec::new(),
            connected,
            viewers: Vec::new(),
        };
        leader
            .heartbeat(&registry, &beat(vec![(1, 3), (3, 1)]))
            .unwrap();
        assert_eq!(leader.connected_elsewhere(1), 3);
        // A later beat replaces the earlier one.
        leader.heartbeat(&registry, &beat(vec![(3, 2)])).unwrap();
        assert_eq!(leader.connected_elsewhere(1), 0);
        assert_eq!(registry.view().clusters[1].subscribers[0].connected, 2);
    }

    #[test]
    fn the_leader_takes_beats_only_of_processes_and_hubs_that_exist() {
        let registry = Registry::for_tests(Topology::default(), 10);
        let leader = Arc::new(Peers::new(membership(0, 2, 1)));
        assert!(registry.share(Arc::clone(&leader) as Arc<dyn SharedTree>));
        let beat = |process: usize, connected: Vec<(usize, usize)>| Heartbeat {
            process,
            attached: Vec::new(),
            connected,
            viewers: Vec::new(),
        };
        for process in [0, 2, usize::MAX] {
            let refused = leader.heartbeat(&registry, &beat(process, vec![(1, 1)]));
            assert!(refused.unwrap_err().contains("followers are 1 to 1"));
        }
        assert_eq!(
            leader.connected_elsewhere(1),
            0,
            "a refused beat changes nothing"
        );
        leader
            .heartbeat(&registry, &beat(1, vec![(1, 1), (9, 1)]))
            .unwrap();
        assert_eq!(leader.connected_elsewhere(1), 1);
        assert_eq!(leader.connected_elsewhere(9), 0, "the tree has no hub 9");
        // Counts that would overflow a sum saturate instead.
        leader
            .heartbeat(&registry, &beat(1, vec![(1, usize::MAX)]))
            .unwrap();
        leader
            .connected_elsewhere
            .lock()
            .unwrap()
            .entry(1)
            .or_default()
            .insert(3, 5);
        assert_eq!(leader.connected_elsewhere(1), usize::MAX);
    }

    #[test]
    fn a_follower_reports_the_streams_open_here() {
        let follower = Peers::new(membership(1, 2, 1));
        follower.attached("a");
        follower.attached("a");
        follower.detached("a");
        follower.attached("b");
        follower.detached("b");
        let registry = Registry::for_tests(Topology::default(), 10);
        let beat = follower.next_heartbeat(&registry);
        assert_eq!((beat.process, beat.attached), (1, vec!["a".to_owned()]));
    }
}
