//! The delivery tree and its clients: least-loaded assignment, growth at capacity.
//!
//! Load is the number of clients assigned to a subscriber (registered and not released).
//! A new client goes to the subscriber with the fewest, ties to the lowest (cluster,
//! subscriber). When every subscriber holds `capacity` clients, a subscriber is added to the
//! cluster with the fewest clients (ties to the lowest cluster). Added subscribers go again,
//! last added first, once no client is assigned to them and no stream is open on them: a
//! registration flood must not leave the tree (and its memory) grown for good. Hub numbers stay
//! dense, so [`dataflows::hub_owner`] keeps its answer for every hub that remains.
//!
//! When several processes serve the tree ([`SharedTree`]), the one holding the registrations
//! runs all of the above; the others only keep a copy of the hubs, to serve the ones they own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use dataflows::{hub_owner, HubId, Topology};
use serde::{Deserialize, Serialize};

use super::events::events_path;
use super::hub::{Hub, HubSettings};
use super::shared::{Serving, SharedTree};
use super::streams::StreamStore;
use crate::stats::Stats;

/// A registered client's assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The id to release it with.
    pub client_id: String,
    /// Where its events are.
    pub hub: HubId,
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
    /// Its index in the delivery tree; [`dataflows::hub_owner`] says which worker owns it.
    pub hub: usize,
    /// The process of that worker, which serves its events.
    pub process: usize,
}

/// Every hub, and who is assigned where.
pub struct Registry {
    hubs: RwLock<Vec<Arc<Hub>>>,
    tree: Mutex<Tree>,
    /// Hubs of the initial topology, which are never removed.
    initial: usize,
    capacity: usize,
    client_ttl: Duration,
    /// The streams this process delivers, whichever hub their viewers use.
    streams: Arc<StreamStore>,
    stats: Arc<Stats>,
    /// The other processes serving this tree, if any.
    shared: OnceLock<Arc<dyn SharedTree>>,
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
        let mut clusters: Vec<Vec<usize>> = vec![Vec::new(); topology.clusters as usize];
        for id in topology.hubs() {
            clusters[id.cluster as usize].push(hubs.len());
            let hub = Hub::new(id, hubs.len(), Arc::clone(&stats));
            hubs.push(Arc::new(hub));
        }
        let assigned = vec![0; hubs.len()];
        Registry {
            initial: hubs.len(),
            hubs: RwLock::new(hubs),
            tree: Mutex::new(Tree {
                clusters,
                assigned,
                clients: HashMap::new(),
            }),
            capacity: capacity.max(1),
            client_ttl,
            streams: Arc::new(StreamStore::new(hub_settings)),
            stats,
            shared: OnceLock::new(),
        }
    }

    /// The streams this process delivers.
    pub fn streams(&self) -> &Arc<StreamStore> {
        &self.streams
    }

    /// Viewers of each stream on the other processes, as they last reported.
    pub fn viewers_elsewhere(&self) -> HashMap<String, usize> {
        self.shared
            .get()
            .map(|s| s.viewers_elsewhere())
            .unwrap_or_default()
    }

    /// Shares the tree with other processes; `false` (and no change) if it already is.
    pub fn share(&self, processes: Arc<dyn SharedTree>) -> bool {
        self.shared.set(processes).is_ok()
    }

    /// Who serves hub number `hub`.
    pub fn serving(&self, hub: usize) -> Serving {
        self.shared
            .get()
            .map_or_else(Serving::alone, |shared| shared.serving(hub))
    }

    /// On a copy of another process's tree: copies it again now, if that was not done a moment
    /// ago (a client came for a hub the copy does not have yet).
    pub async fn refresh(&self) {
        if let Some(refresh) = self
            .held_elsewhere()
            .and_then(|shared| shared.refresh(self))
        {
            refresh.await;
        }
    }

    /// Whether this is a copy of a tree another process holds.
    pub fn is_copy(&self) -> bool {
        self.held_elsewhere().is_some()
    }

    /// The other processes, when one of them holds the registrations.
    fn held_elsewhere(&self) -> Option<&Arc<dyn SharedTree>> {
        self.shared.get().filter(|s| !s.holds_registrations())
    }

    /// Adds hub `id` as number `index` if that is the next number; `false` otherwise. Copies of
    /// the tree grow this way, in the holder's order, so hub numbers agree everywhere.
    pub fn add_hub(&self, id: HubId, index: usize) -> bool {
        let mut tree = self.tree();
        let mut hubs = self.hubs.write().unwrap_or_else(|e| e.into_inner());
        if index != hubs.len() {
            return false;
        }
        self.push_hub(&mut tree, &mut hubs, id);
        true
    }

    /// Makes this copy's hubs `theirs` (the holder's, by hub number): drops its hubs from the
    /// first that differs, as the holder's tree shrinks from the end (never those of the
    /// initial topology), then adds the ones it lacks. Under one lock, so two syncs at once
    /// cannot undo each other. The streams of a dropped hub end.
    pub fn follow(&self, theirs: &[HubId]) {
        let mut tree = self.tree();
        let mut hubs = self.hubs.write().unwrap_or_else(|e| e.into_inner());
        let agreeing = hubs
            .iter()
            .zip(theirs)
            .take_while(|(hub, id)| hub.id == **id)
            .count();
        let before = hubs.len();
        while hubs.len() > agreeing.max(self.initial) {
            remove_last(&mut tree, &mut hubs);
        }
        let removed = before - hubs.len();
        if removed > 0 {
            tracing::info!(
                removed,
                subscribers = hubs.len(),
                "removed subscribers that process 0 no longer has"
            );
        }
        for &id in theirs.iter().skip(hubs.len()) {
            self.push_hub(&mut tree, &mut hubs, id);
        }
    }

    /// Adds hub `id` as the next number.
    fn push_hub(&self, tree: &mut Tree, hubs: &mut Vec<Arc<Hub>>, id: HubId) {
        let index = hubs.len();
        let hub = Hub::new(id, index, Arc::clone(&self.stats));
        hubs.push(Arc::new(hub));
        while tree.clusters.len() <= id.cluster as usize {
            tree.clusters.push(Vec::new());
        }
        tree.clusters[id.cluster as usize].push(index);
        tree.assigned.push(0);
    }

    /// Restarts the time to live of these clients: they have streams open on another process.
    pub fn touch(&self, client_ids: &[String]) {
        let now = Instant::now();
        let mut tree = self.tree();
        for id in client_ids {
            if let Some(client) = tree.clients.get_mut(id) {
                client.idle_since = now;
            }
        }
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        // Every update leaves the tree consistent before anything can panic.
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hubs(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Hub>>> {
        self.hubs.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Hubs in the tree (their numbers are 0 to this less one).
    pub fn hub_count(&self) -> usize {
        self.hubs().len()
    }

    /// The hub `id`, if the tree has it.
    pub fn hub(&self, id: HubId) -> Option<Arc<Hub>> {
        let tree = self.tree();
        let index = *tree
            .clusters
            .get(id.cluster as usize)?
            .get(id.subscriber as usize)?;
        self.hubs().get(index).cloned()
    }

    /// Calls `f` on every hub worker `worker` of `peers` owns.
    pub fn for_each_owned(&self, worker: usize, peers: usize, mut f: impl FnMut(&Hub)) {
        for hub in self
            .hubs()
            .iter()
            .filter(|h| hub_owner(h.index, peers) == worker)
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
        self.assign(&mut tree)
    }

    /// [`Registry::register`], unless `max` clients are registered already (checked under the
    /// same lock, so concurrent registrations cannot pass it).
    pub fn register_within(&self, max: usize) -> Option<Assignment> {
        let mut tree = self.tree();
        (tree.clients.len() < max).then(|| self.assign(&mut tree))
    }

    fn assign(&self, tree: &mut Tree) -> Assignment {
        let least = tree
            .clusters
            .iter()
            .flatten()
            .copied()
            .filter(|&h| tree.assigned[h] < self.capacity)
            .min_by_key(|&h| tree.assigned[h]);
        let index = match least {
            Some(index) => index,
            None => self.grow(tree),
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
        let hub = self.hubs()[index].id;
        Assignment { client_id, hub }
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
        let id = HubId {
            cluster: cluster as u32,
            subscriber: tree.clusters[cluster].len() as u32,
        };
        hubs.push(Arc::new(Hub::new(id, index, Arc::clone(&self.stats))));
        tree.clusters[cluster].push(index);
        tree.assigned.push(0);
        tracing::info!(
            cluster = id.cluster,
            subscriber = id.subscriber,
            capacity = self.capacity,
            "every subscriber is at capacity: added one"
        );
        index
    }

    /// Removes the added subscribers that nobody uses, last added first: it stops at the
    /// first with a client assigned or a stream open (here or on another process). Returns how
    /// many went. Only the process holding the registrations decides this; copies follow it
    /// with [`Registry::follow`].
    pub fn shrink(&self) -> usize {
        if self.held_elsewhere().is_some() {
            return 0;
        }
        let mut tree = self.tree();
        self.shrink_idle(&mut tree)
    }

    fn shrink_idle(&self, tree: &mut Tree) -> usize {
        let elsewhere = |h: usize| self.shared.get().map_or(0, |s| s.connected_elsewhere(h));
        let mut hubs = self.hubs.write().unwrap_or_else(|e| e.into_inner());
        let before = hubs.len();
        while hubs.len() > self.initial {
            let index = hubs.len() - 1;
            let in_use = tree.assigned[index] > 0 || hubs[index].connected() + elsewhere(index) > 0;
            if in_use {
                break;
            }
            remove_last(tree, &mut hubs);
        }
        let removed = before - hubs.len();
        if removed > 0 {
            tracing::info!(
                removed,
                subscribers = hubs.len(),
                "removed added subscribers with no client assigned and no stream open"
            );
        }
        removed
    }

    /// Every hub's id, by hub number.
    pub fn hub_ids(&self) -> Vec<HubId> {
        self.hubs().iter().map(|h| h.id).collect()
    }

    /// Releases a client; `false` if the id is unknown.
    pub fn release(&self, client_id: &str) -> bool {
        let mut tree = self.tree();
        let Some(client) = tree.clients.remove(client_id) else {
            return false;
        };
        tree.assigned[client.hub] -= 1;
        // Only the last hub can be removed, so only its last client's release is worth a look.
        let last = tree.assigned.len() - 1;
        if client.hub == last && tree.assigned[last] == 0 && self.held_elsewhere().is_none() {
            self.shrink_idle(&mut tree);
        }
        true
    }

    /// Notes an event stream opened by a registered client; `false` if the id is unknown.
    /// Where another process holds the registrations every id is taken: that one checks them.
    pub fn attach(&self, client_id: &str) -> bool {
        if let Some(holder) = self.held_elsewhere() {
            // Only an id of the shape registration gives goes into the heartbeats: any other
            // cannot be registered, and long ones would swell the heartbeat past its limit.
            if !is_client_id(client_id) {
                return false;
            }
            holder.attached(client_id);
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
        if let Some(holder) = self.held_elsewhere() {
            holder.detached(client_id);
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
        let elsewhere = |h: usize| self.shared.get().map_or(0, |s| s.connected_elsewhere(h));
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
                        subscriber: hubs[h].id.subscriber,
                        clients: tree.assigned[h],
                        connected: hubs[h].connected() + elsewhere(h),
                        events_path: events_path(hubs[h].id),
                        hub: h,
                        process: self.serving(h).process,
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

/// Removes the last hub, which is the last subscriber of its cluster: hubs are only ever added
/// at the end of both. Its streams end, so their clients come back to find it gone.
fn remove_last(tree: &mut Tree, hubs: &mut Vec<Arc<Hub>>) {
    let Some(hub) = hubs.pop() else {
        return;
    };
    tree.assigned.pop();
    if let Some(members) = tree.clusters.get_mut(hub.id.cluster as usize) {
        let popped = members.pop();
        debug_assert_eq!(popped, Some(hub.index), "the last hub ends its cluster");
    }
    hub.retire();
}

/// Whether `id` has the shape of the ids registration gives (a UUID, 32 lowercase hex digits).
fn is_client_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A small registry for unit tests: clients expire after 60 s, hubs retain and queue 4 windows.
#[cfg(test)]
impl Registry {
    pub(crate) fn for_tests(topology: Topology, capacity: usize) -> Registry {
        Registry::new(
            topology,
            capacity,
            Duration::from_secs(60),
            HubSettings {
                retention: 4,
                client_queue: 4,
                max_resume_bytes: usize::MAX,
                idle_windows: 30,
            },
            Arc::default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(clusters: u32, subscribers: u32, capacity: usize) -> Registry {
        Registry::for_tests(
            Topology {
                clusters,
                subscribers,
            },
            capacity,
        )
    }

    fn at(cluster: u32, subscriber: u32) -> HubId {
        HubId {
            cluster,
            subscriber,
        }
    }

    #[test]
    fn clients_go_to_the_least_loaded_subscriber_ties_to_the_lowest() {
        let r = registry(2, 2, 10);
        let got: Vec<_> = (0..6).map(|_| r.register().hub).collect();
        assert_eq!(
            got,
            [at(0, 0), at(0, 1), at(1, 0), at(1, 1), at(0, 0), at(0, 1)]
        );
        // Releasing one of (1, 0)'s... it has 1; (1, 0) and (1, 1) have 1, the others 2.
        let third = r.register();
        assert_eq!(third.hub, at(1, 0));
        assert!(r.release(&third.client_id));
        assert!(!r.release(&third.client_id), "a released id is unknown");
        assert_eq!(r.register().hub, at(1, 0));
    }

    #[test]
    fn a_full_tree_grows_in_the_least_loaded_cluster() {
        let r = registry(2, 1, 2);
        let ids: Vec<_> = (0..4).map(|_| r.register()).collect();
        // Free one place in cluster 1: cluster 1 becomes the least loaded, but it has room
        // now, so no growth yet.
        assert!(r.release(&ids[3].client_id));
        assert_eq!(r.register().hub, at(1, 0));
        // Full again: cluster 0 and 1 tie at 2, so cluster 0 grows.
        assert_eq!(r.register().hub, at(0, 1));
        assert_eq!(r.register().hub, at(0, 1));
        // Cluster 1 (2 clients) now has fewer than cluster 0 (4).
        assert_eq!(r.register().hub, at(1, 1));
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
    fn a_copy_of_the_tree_grows_only_in_number_order() {
        let r = registry(1, 1, 1);
        assert!(!r.add_hub(at(1, 0), 2), "a gap");
        assert!(r.add_hub(at(1, 0), 1));
        assert!(!r.add_hub(at(1, 0), 1), "already there");
        let view = r.view();
        assert_eq!(view.clusters[1].subscribers[0].hub, 1);
        assert!(r.hub(at(1, 0)).is_some());
    }

    #[test]
    fn a_touched_client_starts_its_ttl_again() {
        let r = registry(1, 1, 10);
        let client = r.register();
        std::thread::sleep(Duration::from_millis(300));
        let touched = Instant::now();
        r.touch(std::slice::from_ref(&client.client_id));
        let ttl = touched + Duration::from_secs(60);
        assert_eq!(r.expire(ttl), 0);
        assert_eq!(r.expire(ttl + Duration::from_millis(200)), 1);
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

    /// Subscribers per cluster.
    fn sizes(r: &Registry) -> Vec<usize> {
        r.view()
            .clusters
            .iter()
            .map(|c| c.subscribers.len())
            .collect()
    }

    #[test]
    fn added_subscribers_go_once_their_clients_are_released_or_expired() {
        let r = registry(2, 1, 1);
        let clients: Vec<_> = (0..6).map(|_| r.register()).collect();
        assert_eq!(sizes(&r), [3, 3]);
        let added = r.hub(at(1, 2)).unwrap();
        for client in &clients[..3] {
            assert!(r.release(&client.client_id));
        }
        assert_eq!(r.hub_count(), 6, "the last ones still have clients");
        assert_eq!(r.expire(Instant::now() + Duration::from_secs(61)), 3);
        assert_eq!(r.shrink(), 4);
        assert_eq!(sizes(&r), [1, 1], "back to the topology, never below");
        assert_eq!(r.shrink(), 0);
        assert!(added.is_retired());
        assert!(r.hub(at(1, 2)).is_none());
        // Growing again numbers the hubs from where the tree ends.
        let grown = (0..3).map(|_| r.register()).last().unwrap();
        assert_eq!(grown.hub, at(0, 1));
        assert_eq!(r.view().clusters[0].subscribers[1].hub, 2);
    }

    #[test]
    fn an_added_subscriber_with_a_stream_open_stays() {
        let r = registry(1, 1, 1);
        let clients: Vec<_> = (0..3).map(|_| r.register()).collect();
        let channel = r.streams().channel(&dataflows::StreamId::default());
        let stream = r.hub(at(0, 2)).unwrap().subscribe(&channel, None);
        for client in &clients {
            assert!(r.release(&client.client_id));
        }
        assert_eq!(r.shrink(), 0);
        assert_eq!(sizes(&r), [3], "and so do the ones before it");
        drop(stream);
        assert_eq!(r.shrink(), 2);
        assert_eq!(sizes(&r), [1]);
    }

    /// Another process serving the tree with `streams` open on hub `hub`.
    struct Elsewhere {
        hub: usize,
        streams: std::sync::atomic::AtomicUsize,
    }

    impl SharedTree for Elsewhere {
        fn serving(&self, _: usize) -> Serving {
            Serving::alone()
        }
        fn holds_registrations(&self) -> bool {
            true
        }
        fn connected_elsewhere(&self, hub: usize) -> usize {
            match hub == self.hub {
                true => self.streams.load(std::sync::atomic::Ordering::Relaxed),
                false => 0,
            }
        }
        fn attached(&self, _: &str) {}
        fn detached(&self, _: &str) {}
    }

    #[test]
    fn an_added_subscriber_with_a_stream_open_on_another_process_stays() {
        let r = registry(1, 1, 1);
        let elsewhere = Arc::new(Elsewhere {
            hub: 1,
            streams: 1.into(),
        });
        assert!(r.share(Arc::clone(&elsewhere) as Arc<dyn SharedTree>));
        let clients: Vec<_> = (0..2).map(|_| r.register()).collect();
        for client in &clients {
            assert!(r.release(&client.client_id));
        }
        assert_eq!(sizes(&r), [2]);
        elsewhere
            .streams
            .store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(r.shrink(), 1);
    }

    #[test]
    fn only_the_trailing_unused_subscribers_go() {
        let r = registry(1, 1, 1);
        let clients: Vec<_> = (0..4).map(|_| r.register()).collect();
        // The last hub's last client leaving removes it at once; hub 1 is empty but hub 2,
        // after it, still has a client.
        assert!(r.release(&clients[1].client_id));
        assert!(r.release(&clients[3].client_id));
        assert_eq!(sizes(&r), [3]);
        assert_eq!(r.shrink(), 0);
        assert!(r.release(&clients[2].client_id));
        assert_eq!(sizes(&r), [1]);
        assert_eq!(r.view().clients, 1);
    }

    /// A follower's view: process 0 holds the registrations; the ids attached are noted.
    #[derive(Default)]
    struct Follower {
        attached: Mutex<Vec<String>>,
    }

    impl SharedTree for Follower {
        fn serving(&self, _: usize) -> Serving {
            Serving::alone()
        }
        fn holds_registrations(&self) -> bool {
            false
        }
        fn connected_elsewhere(&self, _: usize) -> usize {
            0
        }
        fn attached(&self, id: &str) {
            self.attached
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(id.to_owned());
        }
        fn detached(&self, _: &str) {}
    }

    #[test]
    fn a_follower_reports_only_ids_of_the_shape_registration_gives() {
        let r = registry(1, 1, 1);
        let follower = Arc::new(Follower::default());
        assert!(r.share(Arc::clone(&follower) as Arc<dyn SharedTree>));
        let registered = uuid::Uuid::new_v4().simple().to_string();
        assert!(r.attach(&registered));
        for bogus in [
            "nobody",
            &"a".repeat(16 * 1024),
            "0123456789ABCDEF0123456789ABCDEF",
        ] {
            assert!(!r.attach(bogus), "{bogus:.40}");
        }
        assert_eq!(*follower.attached.lock().unwrap(), [registered]);
    }

    #[test]
    fn registrations_past_the_maximum_are_refused_until_one_is_released() {
        let r = registry(1, 1, 10);
        let first = r.register_within(2).unwrap();
        assert!(r.register_within(2).is_some());
        assert!(r.register_within(2).is_none());
        assert_eq!(r.view().clients, 2);
        assert!(r.release(&first.client_id));
        assert!(r.register_within(2).is_some());
    }
}
