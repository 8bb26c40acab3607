//! The delivery tree and its clients: least-loaded assignment, growth at capacity.
//!
//! Load is the number of clients assigned to a subscriber (registered and not released).
//! A new client goes to the subscriber with the fewest, ties to the lowest (cluster,
//! subscriber). When every subscriber holds `capacity` clients, a subscriber is added to the
//! cluster with the fewest clients (ties to the lowest cluster).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use dataflows::{Partition, Topology};
use serde::{Deserialize, Serialize};

use super::hub::{Hub, HubSettings};
use crate::stats::Stats;

/// A registered client's assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The id to release it with.
    pub client_id: String,
    /// Where its events are.
    pub partition: Partition,
}

/// The tree as `GET /clusters` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TreeView {
    /// Clients one subscriber takes before the tree grows.
    pub capacity: usize,
    /// Clients registered.
    pub clients: usize,
    /// Every cluster.
    pub clusters: Vec<ClusterView>,
}

/// One cluster in [`TreeView`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterView {
    /// Its index.
    pub cluster: u32,
    /// Clients assigned to its subscribers.
    pub clients: usize,
    /// Its subscribers.
    pub subscribers: Vec<SubscriberView>,
}

/// One subscriber in [`TreeView`].
#[derive(Debug, Serialize, Deserialize)]
pub struct SubscriberView {
    /// Its index in its cluster.
    pub subscriber: u32,
    /// Clients assigned to it.
    pub clients: usize,
    /// Event streams open on it now (on every process).
    pub connected: usize,
    /// Where its events are (a path on the owning process).
    pub events_path: String,
    /// Its index in the delivery tree; the worker `hub mod workers` owns it.
    pub hub: usize,
    /// The process of that worker, which serves its events.
    pub process: usize,
}

/// The processes of a cluster, as delivery sees them.
#[derive(Clone, Debug)]
pub struct Membership {
    /// This process.
    pub process: usize,
    /// Worker threads per process.
    pub threads: usize,
    /// Each process's advertised HTTP base URL (`http://host:port`), in process order.
    pub http: Vec<String>,
}

impl Membership {
    /// One process of `threads` workers, reached at `http`.
    pub fn single(threads: usize, http: String) -> Membership {
        Membership {
            process: 0,
            threads: threads.max(1),
            http: vec![http],
        }
    }

    /// Processes in the cluster.
    pub fn processes(&self) -> usize {
        self.http.len().max(1)
    }

    /// The process whose worker owns hub `index`.
    pub fn owner(&self, index: usize) -> usize {
        (index % (self.threads * self.processes())) / self.threads
    }

    /// This process holds the registrations (process 0); the others forward to it.
    pub fn is_leader(&self) -> bool {
        self.process == 0
    }
}

/// Every hub, and who is assigned where.
pub struct Registry {
    hubs: RwLock<Vec<Arc<Hub>>>,
    tree: Mutex<Tree>,
    capacity: usize,
    client_ttl: Duration,
    hub_settings: HubSettings,
    stats: Arc<Stats>,
    membership: RwLock<Membership>,
    /// On a process that is not the leader: streams open here by client id (the registrations
    /// live on the leader, which hears of these in heartbeats).
    attached_here: Mutex<HashMap<String, usize>>,
    /// On the leader: event streams open on each other process, by hub index.
    connected_elsewhere: Mutex<HashMap<usize, HashMap<usize, usize>>>,
}

struct Client {
    hub: usize,
    /// Event streams open with this client's id.
    streams: usize,
    /// Since when it has had no stream.
    idle_since: Instant,
}

struct Tree {
    /// Hub indexes by cluster, in subscriber order.
    clusters: Vec<Vec<usize>>,
    /// Assigned clients by hub index.
    assigned: Vec<usize>,
    clients: HashMap<String, Client>,
}

/// The path of a subscriber's event stream.
pub fn events_path(partition: Partition) -> String {
    format!(
        "/clusters/{}/subscribers/{}/events",
        partition.cluster, partition.subscriber
    )
}

impl Registry {
    /// The initial tree: `topology.clusters` × `topology.subscribers` hubs.
    pub fn new(
        topology: Topology,
        capacity: usize,
        client_ttl: Duration,
        hub_settings: HubSettings,
        stats: Arc<Stats>,
    ) -> Registry {
        let mut hubs = Vec::new();
        let mut clusters = Vec::new();
        for cluster in 0..topology.clusters {
            let mut members = Vec::new();
            for subscriber in 0..topology.subscribers {
                let partition = Partition {
                    cluster,
                    subscriber,
                };
                members.push(hubs.len());
                hubs.push(Arc::new(Hub::new(
                    partition,
                    hubs.len(),
                    hub_settings,
                    Arc::clone(&stats),
                )));
            }
            clusters.push(members);
        }
        let assigned = vec![0; hubs.len()];
        Registry {
            hubs: RwLock::new(hubs),
            tree: Mutex::new(Tree {
                clusters,
                assigned,
                clients: HashMap::new(),
            }),
            capacity: capacity.max(1),
            client_ttl,
            hub_settings,
            stats,
            membership: RwLock::new(Membership::single(1, String::new())),
            attached_here: Mutex::new(HashMap::new()),
            connected_elsewhere: Mutex::new(HashMap::new()),
        }
    }

    /// Sets who owns which hub and where each process is reached.
    pub fn set_membership(&self, membership: Membership) {
        *self.membership.write().unwrap_or_else(|e| e.into_inner()) = membership;
    }

    /// The cluster as delivery sees it.
    pub fn membership(&self) -> Membership {
        self.membership
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The hub of `partition` if this process serves its events.
    pub fn local_hub(&self, partition: Partition) -> Option<Arc<Hub>> {
        let hub = self.hub(partition)?;
        let membership = self.membership();
        (membership.owner(hub.index) == membership.process).then_some(hub)
    }

    /// Adds the hubs of the leader's tree that this process does not have yet (the tree grows
    /// on the leader).
    pub fn adopt(&self, view: &TreeView) {
        let mut tree = self.tree();
        let mut hubs = self.hubs.write().unwrap_or_else(|e| e.into_inner());
        let mut new: Vec<(u32, &SubscriberView)> = view
            .clusters
            .iter()
            .flat_map(|c| c.subscribers.iter().map(move |s| (c.cluster, s)))
            .filter(|(_, s)| s.hub >= hubs.len())
            .collect();
        new.sort_by_key(|(_, s)| s.hub);
        for (cluster, subscriber) in new {
            // Added in index order, so the indexes agree with the leader's.
            if subscriber.hub != hubs.len() {
                break;
            }
            let partition = Partition {
                cluster,
                subscriber: subscriber.subscriber,
            };
            hubs.push(Arc::new(Hub::new(
                partition,
                subscriber.hub,
                self.hub_settings,
                Arc::clone(&self.stats),
            )));
            while tree.clusters.len() <= cluster as usize {
                tree.clusters.push(Vec::new());
            }
            tree.clusters[cluster as usize].push(subscriber.hub);
            tree.assigned.push(0);
        }
    }

    /// On the leader: keeps alive the clients with streams open on another process, and
    /// records that process's open streams per hub.
    pub fn heartbeat(&self, from: usize, attached: &[String], connected: &[(usize, usize)]) {
        let now = Instant::now();
        let mut tree = self.tree();
        for id in attached {
            if let Some(client) = tree.clients.get_mut(id) {
                client.idle_since = now;
            }
        }
        drop(tree);
        let mut elsewhere = self
            .connected_elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for per_process in elsewhere.values_mut() {
            per_process.remove(&from);
        }
        for (hub, n) in connected {
            elsewhere.entry(*hub).or_default().insert(from, *n);
        }
    }

    /// On a process that is not the leader: the clients with streams open here, and the open
    /// streams per hub, for the heartbeat to the leader.
    pub fn attached_here(&self) -> (Vec<String>, Vec<(usize, usize)>) {
        let ids = self
            .attached_here
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let connected = self
            .hubs()
            .iter()
            .filter(|h| h.connected() > 0)
            .map(|h| (h.index, h.connected()))
            .collect();
        (ids, connected)
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        // Every update leaves the tree consistent before anything can panic.
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hubs(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Hub>>> {
        self.hubs.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The hub of `partition`, if the tree has it.
    pub fn hub(&self, partition: Partition) -> Option<Arc<Hub>> {
        let tree = self.tree();
        let index = *tree
            .clusters
            .get(partition.cluster as usize)?
            .get(partition.subscriber as usize)?;
        self.hubs().get(index).cloned()
    }

    /// Calls `f` on every hub worker `worker` of `peers` owns.
    pub fn for_each_owned(&self, worker: usize, peers: usize, mut f: impl FnMut(&Hub)) {
        for hub in self
            .hubs()
            .iter()
            .filter(|h| h.index % peers.max(1) == worker)
        {
            f(hub);
        }
    }

    /// Calls `f` on every hub.
    pub fn for_each(&self, mut f: impl FnMut(&Hub)) {
        for hub in self.hubs().iter() {
            f(hub);
        }
    }

    /// Assigns a new client to the least-loaded subscriber, adding one when all are full.
    pub fn register(&self) -> Assignment {
        let mut tree = self.tree();
        let least = tree
            .clusters
            .iter()
            .flatten()
            .copied()
            .filter(|&h| tree.assigned[h] < self.capacity)
            .min_by_key(|&h| tree.assigned[h]);
        let index = match least {
            Some(index) => index,
            None => self.grow(&mut tree),
        };
        tree.assigned[index] += 1;
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        tree.clients.insert(
            client_id.clone(),
            Client {
                hub: index,
                streams: 0,
                idle_since: Instant::now(),
            },
        );
        self.stats.registrations.inc();
        let partition = self.hubs()[index].partition;
        Assignment {
            client_id,
            partition,
        }
    }

    /// Adds a subscriber to the least-loaded cluster; returns its hub index.
    fn grow(&self, tree: &mut Tree) -> usize {
        let cluster = (0..tree.clusters.len())
            .min_by_key(|&c| {
                tree.clusters[c]
                    .iter()
                    .map(|&h| tree.assigned[h])
                    .sum::<usize>()
            })
            .unwrap_or(0);
        if tree.clusters.is_empty() {
            tree.clusters.push(Vec::new());
        }
        let mut hubs = self.hubs.write().unwrap_or_else(|e| e.into_inner());
        let index = hubs.len();
        let partition = Partition {
            cluster: cluster as u32,
            subscriber: tree.clusters[cluster].len() as u32,
        };
        hubs.push(Arc::new(Hub::new(
            partition,
            index,
            self.hub_settings,
            Arc::clone(&self.stats),
        )));
        tree.clusters[cluster].push(index);
        tree.assigned.push(0);
        tracing::info!(
            cluster = partition.cluster,
            subscriber = partition.subscriber,
            capacity = self.capacity,
            "every subscriber is at capacity: added one"
        );
        index
    }

    /// Releases a client; `false` if the id is unknown.
    pub fn release(&self, client_id: &str) -> bool {
        let mut tree = self.tree();
        match tree.clients.remove(client_id) {
            Some(client) => {
                tree.assigned[client.hub] -= 1;
                true
            }
            None => false,
        }
    }

    /// Notes an event stream opened by a registered client; `false` if the id is unknown.
    /// On a process that is not the leader every id is taken: the leader checks them.
    pub fn attach(&self, client_id: &str) -> bool {
        if !self.membership().is_leader() {
            *self
                .attached_here
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(client_id.to_owned())
                .or_default() += 1;
            return true;
        }
        match self.tree().clients.get_mut(client_id) {
            Some(client) => {
                client.streams += 1;
                true
            }
            None => false,
        }
    }

    /// Notes that one of a client's event streams ended.
    pub fn detach(&self, client_id: &str) {
        if !self.membership().is_leader() {
            let mut here = self.attached_here.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = here.get_mut(client_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    here.remove(client_id);
                }
            }
            return;
        }
        if let Some(client) = self.tree().clients.get_mut(client_id) {
            client.streams = client.streams.saturating_sub(1);
            if client.streams == 0 {
                client.idle_since = Instant::now();
            }
        }
    }

    /// Releases clients without a stream for longer than the time to live; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut tree = self.tree();
        let ttl = self.client_ttl;
        let expired: Vec<String> = tree
            .clients
            .iter()
            .filter(|(_, c)| c.streams == 0 && now.saturating_duration_since(c.idle_since) > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(client) = tree.clients.remove(id) {
                tree.assigned[client.hub] -= 1;
            }
        }
        self.stats.clients_expired.add(expired.len() as u64);
        expired.len()
    }

    /// The tree with its loads.
    pub fn view(&self) -> TreeView {
        let membership = self.membership();
        let elsewhere = self
            .connected_elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let connected = |h: usize| -> usize {
            elsewhere
                .get(&h)
                .map_or(0, |per| per.values().sum::<usize>())
        };
        let tree = self.tree();
        let hubs = self.hubs();
        let clusters = tree
            .clusters
            .iter()
            .enumerate()
            .map(|(c, members)| ClusterView {
                cluster: c as u32,
                clients: members.iter().map(|&h| tree.assigned[h]).sum(),
                subscribers: members
                    .iter()
                    .map(|&h| SubscriberView {
                        subscriber: hubs[h].partition.subscriber,
                        clients: tree.assigned[h],
                        connected: hubs[h].connected() + connected(h),
                        events_path: events_path(hubs[h].partition),
                        hub: h,
                        process: membership.owner(h),
                    })
                    .collect(),
            })
            .collect();
        TreeView {
            capacity: self.capacity,
            clients: tree.clients.len(),
            clusters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(clusters: u32, subscribers: u32, capacity: usize) -> Registry {
        Registry::new(
            Topology {
                clusters,
                subscribers,
            },
            capacity,
            Duration::from_secs(60),
            HubSettings {
                retention: 4,
                client_queue: 4,
            },
            Arc::default(),
        )
    }

    fn at(cluster: u32, subscriber: u32) -> Partition {
        Partition {
            cluster,
            subscriber,
        }
    }

    #[test]
    fn clients_go_to_the_least_loaded_subscriber_ties_to_the_lowest() {
        let r = registry(2, 2, 10);
        let got: Vec<_> = (0..6).map(|_| r.register().partition).collect();
        assert_eq!(
            got,
            [at(0, 0), at(0, 1), at(1, 0), at(1, 1), at(0, 0), at(0, 1)]
        );
        // Releasing one of (1, 0)'s... it has 1; (1, 0) and (1, 1) have 1, the others 2.
        let third = r.register();
        assert_eq!(third.partition, at(1, 0));
        assert!(r.release(&third.client_id));
        assert!(!r.release(&third.client_id), "a released id is unknown");
        assert_eq!(r.register().partition, at(1, 0));
    }

    #[test]
    fn a_full_tree_grows_in_the_least_loaded_cluster() {
        let r = registry(2, 1, 2);
        let ids: Vec<_> = (0..4).map(|_| r.register()).collect();
        // Free one place in cluster 1: cluster 1 becomes the least loaded, but it has room
        // now, so no growth yet.
        assert!(r.release(&ids[3].client_id));
        assert_eq!(r.register().partition, at(1, 0));
        // Full again: cluster 0 and 1 tie at 2, so cluster 0 grows.
        assert_eq!(r.register().partition, at(0, 1));
        assert_eq!(r.register().partition, at(0, 1));
        // Cluster 1 (2 clients) now has fewer than cluster 0 (4).
        assert_eq!(r.register().partition, at(1, 1));
        let view = r.view();
        let loads: Vec<Vec<usize>> = view
            .clusters
            .iter()
            .map(|c| c.subscribers.iter().map(|s| s.clients).collect())
            .collect();
        assert_eq!(loads, [vec![2, 2], vec![2, 1]]);
        assert_eq!(view.clients, 7);
        assert!(r.hub(at(1, 1)).is_some());
        assert!(r.hub(at(1, 2)).is_none());
    }

    #[test]
    fn every_hub_has_exactly_one_owner() {
        let r = registry(3, 3, 1);
        for _ in 0..12 {
            r.register();
        }
        for peers in 1..=4 {
            let mut owned = vec![0; 12];
            for worker in 0..peers {
                r.for_each_owned(worker, peers, |hub| owned[hub.index] += 1);
            }
            assert_eq!(owned, vec![1; 12]);
        }
    }

    #[test]
    fn clients_without_a_stream_expire_after_the_ttl() {
        let r = registry(1, 1, 10);
        let (ghost, viewer) = (r.register(), r.register());
        assert!(r.attach(&viewer.client_id));
        assert!(!r.attach("nobody"));
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(r.expire(later), 1, "the ghost, not the viewer");
        assert!(!r.release(&ghost.client_id));
        r.detach(&viewer.client_id);
        assert_eq!(
            r.expire(Instant::now()),
            0,
            "just left: still within the ttl"
        );
        assert_eq!(r.expire(Instant::now() + Duration::from_secs(61)), 1);
        assert_eq!(r.view().clients, 0);
        assert_eq!(r.stats.clients_expired.get(), 2);
    }
}
