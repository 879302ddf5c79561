//! A shard's watch registrations: which of its sessions watch which paths, and
//! which sessions an event reaches (WatchManager semantics).
//!
//! One-shot data watches (from getData/exists) and child watches (from getChildren)
//! fire once and are cleared; persistent watches fire for every event on their path;
//! persistent-recursive watches fire for every event on their path and below, except
//! NodeChildrenChanged. A session gets at most one notification per event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::proto::codes::WatcherType;
use crate::proto::EventType;
use crate::tree::path;

#[derive(Default, Debug)]
struct Kinds {
    data: HashMap<Arc<str>, HashSet<i64>>,
    child: HashMap<Arc<str>, HashSet<i64>>,
    persistent: HashMap<Arc<str>, HashSet<i64>>,
    recursive: HashMap<Arc<str>, HashSet<i64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    Data,
    Child,
    Persistent,
    PersistentRecursive,
}

#[derive(Default, Debug)]
pub struct WatchTable {
    by_path: Kinds,
    /// session -> (path -> kinds), for removal and `wchc`.
    by_session: HashMap<i64, BTreeMap<Arc<str>, Vec<WatchKind>>>,
    count: usize,
}

impl WatchTable {
    fn map(&mut self, kind: WatchKind) -> &mut HashMap<Arc<str>, HashSet<i64>> {
        match kind {
            WatchKind::Data => &mut self.by_path.data,
            WatchKind::Child => &mut self.by_path.child,
            WatchKind::Persistent => &mut self.by_path.persistent,
            WatchKind::PersistentRecursive => &mut self.by_path.recursive,
        }
    }

    fn map_ref(&self, kind: WatchKind) -> &HashMap<Arc<str>, HashSet<i64>> {
        match kind {
            WatchKind::Data => &self.by_path.data,
            WatchKind::Child => &self.by_path.child,
            WatchKind::Persistent => &self.by_path.persistent,
            WatchKind::PersistentRecursive => &self.by_path.recursive,
        }
    }

    pub fn add(&mut self, session: i64, path: &str, kind: WatchKind) {
        let key: Arc<str> = Arc::from(path);
        if self
            .map(kind)
            .entry(key.clone())
            .or_default()
            .insert(session)
        {
            self.count += 1;
            self.by_session
                .entry(session)
                .or_default()
                .entry(key)
                .or_default()
                .push(kind);
        }
    }

    /// Removes one registration; true if it existed.
    pub fn remove(&mut self, session: i64, path: &str, kind: WatchKind) -> bool {
        let removed = match self.map(kind).get_mut(path) {
            Some(set) => {
                let r = set.remove(&session);
                if set.is_empty() {
                    self.map(kind).remove(path);
                }
                r
            }
            None => false,
        };
        if removed {
            self.count -= 1;
            if let Some(paths) = self.by_session.get_mut(&session) {
                if let Some(kinds) = paths.get_mut(path) {
                    kinds.retain(|k| *k != kind);
                    if kinds.is_empty() {
                        paths.remove(path);
                    }
                }
                if paths.is_empty() {
                    self.by_session.remove(&session);
                }
            }
        }
        removed
    }

    pub fn contains(&self, session: i64, path: &str, kind: WatchKind) -> bool {
        self.map_ref(kind)
            .get(path)
            .is_some_and(|s| s.contains(&session))
    }

    fn kinds_for(t: WatcherType) -> &'static [WatchKind] {
        match t {
            WatcherType::Children => &[WatchKind::Child],
            WatcherType::Data => &[WatchKind::Data],
            WatcherType::Persistent => &[WatchKind::Persistent],
            WatcherType::PersistentRecursive => &[WatchKind::PersistentRecursive],
            WatcherType::Any => &[
                WatchKind::Data,
                WatchKind::Child,
                WatchKind::Persistent,
                WatchKind::PersistentRecursive,
            ],
        }
    }

    /// removeWatches: true if anything was removed.
    pub fn remove_type(&mut self, session: i64, path: &str, t: WatcherType) -> bool {
        let mut any = false;
        for k in Self::kinds_for(t) {
            any |= self.remove(session, path, *k);
        }
        any
    }

    /// checkWatches: true if the session has a watch of that type on the path.
    pub fn has_type(&self, session: i64, path: &str, t: WatcherType) -> bool {
        Self::kinds_for(t)
            .iter()
            .any(|k| self.contains(session, path, *k))
    }

    /// Drops every watch of a session (its connection closed).
    pub fn remove_session(&mut self, session: i64) {
        if let Some(paths) = self.by_session.remove(&session) {
            for (p, kinds) in paths {
                for k in kinds {
                    let map = self.map(k);
                    let mut removed = false;
                    if let Some(set) = map.get_mut(&p) {
                        removed = set.remove(&session);
                        if set.is_empty() {
                            map.remove(&p);
                        }
                    }
                    if removed {
                        self.count -= 1;
                    }
                }
            }
        }
    }

    /// The sessions an event reaches, each once; one-shot watches it fires are cleared.
    pub fn fire(&mut self, event_path: &str, event: EventType, out: &mut Vec<i64>) {
        out.clear();
        if self.count == 0 {
            return;
        }
        let one_shot: &[WatchKind] = match event {
            EventType::NodeCreated | EventType::NodeDataChanged => &[WatchKind::Data],
            EventType::NodeDeleted => &[WatchKind::Data, WatchKind::Child],
            EventType::NodeChildrenChanged => &[WatchKind::Child],
            EventType::None => &[],
        };
        for kind in one_shot {
            if let Some(set) = self.map(*kind).remove(event_path) {
                for s in set {
                    self.count -= 1;
                    if let Some(paths) = self.by_session.get_mut(&s) {
                        if let Some(kinds) = paths.get_mut(event_path) {
                            kinds.retain(|k| k != kind);
                            if kinds.is_empty() {
                                paths.remove(event_path);
                            }
                        }
                        if paths.is_empty() {
                            self.by_session.remove(&s);
                        }
                    }
                    out.push(s);
                }
            }
        }
        if let Some(set) = self.by_path.persistent.get(event_path) {
            out.extend(set.iter().copied());
        }
        if event != EventType::NodeChildrenChanged && !self.by_path.recursive.is_empty() {
            let mut p = event_path;
            loop {
                if let Some(set) = self.by_path.recursive.get(p) {
                    out.extend(set.iter().copied());
                }
                if p == "/" {
                    break;
                }
                p = path::parent(p);
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Registrations of every kind (a session watching one path two ways counts twice).
    pub fn watch_count(&self) -> usize {
        self.count
    }

    /// The (session, path) pairs ZooKeeper's watch manager of `side` would hold.
    /// ZooKeeper keeps two per tree: dataWatches (getData/exists watches) and
    /// childWatches (getChildren watches); addWatch registers a persistent or a
    /// persistent-recursive watch with both (3.8). A session watching a path counts
    /// once per manager, whatever kinds it holds there. The four-letter words report
    /// through these views so that their figures read as ZooKeeper's do.
    pub fn zookeeper_view(&self, side: WatchSide) -> impl Iterator<Item = (i64, &str)> + '_ {
        self.by_session.iter().flat_map(move |(sid, paths)| {
            paths
                .iter()
                .filter(move |(_, kinds)| kinds.iter().any(|k| side.holds(*k)))
                .map(move |(p, _)| (*sid, &**p))
        })
    }
}

/// One of ZooKeeper's two watch managers (see [`WatchTable::zookeeper_view`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchSide {
    Data,
    Child,
}

impl WatchSide {
    fn holds(self, kind: WatchKind) -> bool {
        match kind {
            WatchKind::Data => self == WatchSide::Data,
            WatchKind::Child => self == WatchSide::Child,
            WatchKind::Persistent | WatchKind::PersistentRecursive => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(t: &mut WatchTable, p: &str, e: EventType) -> Vec<i64> {
        let mut v = Vec::new();
        t.fire(p, e, &mut v);
        v
    }

    #[test]
    fn one_shot_watches_fire_once() {
        let mut t = WatchTable::default();
        t.add(1, "/a", WatchKind::Data);
        assert_eq!(fire(&mut t, "/a", EventType::NodeDataChanged), vec![1]);
        assert!(fire(&mut t, "/a", EventType::NodeDataChanged).is_empty());
        assert_eq!(t.watch_count(), 0);
    }

    #[test]
    fn delete_clears_data_and_child_watches_with_one_event() {
        let mut t = WatchTable::default();
        t.add(1, "/a", WatchKind::Data);
        t.add(1, "/a", WatchKind::Child);
        assert_eq!(fire(&mut t, "/a", EventType::NodeDeleted), vec![1]);
        assert_eq!(t.watch_count(), 0);
        assert_eq!(t.zookeeper_view(WatchSide::Data).count(), 0);
        assert_eq!(t.zookeeper_view(WatchSide::Child).count(), 0);
    }

    #[test]
    fn persistent_recursive_skips_child_events_and_stays() {
        let mut t = WatchTable::default();
        t.add(7, "/a", WatchKind::PersistentRecursive);
        assert_eq!(fire(&mut t, "/a/b/c", EventType::NodeCreated), vec![7]);
        assert!(fire(&mut t, "/a/b", EventType::NodeChildrenChanged).is_empty());
        assert_eq!(fire(&mut t, "/a", EventType::NodeDataChanged), vec![7]);
        assert!(fire(&mut t, "/ab", EventType::NodeCreated).is_empty());
        assert_eq!(t.watch_count(), 1);
    }

    #[test]
    fn persistent_watch_gets_child_events_of_its_path_only() {
        let mut t = WatchTable::default();
        t.add(3, "/a", WatchKind::Persistent);
        assert_eq!(fire(&mut t, "/a", EventType::NodeChildrenChanged), vec![3]);
        assert!(fire(&mut t, "/a/b", EventType::NodeCreated).is_empty());
        assert!(t.remove_type(3, "/a", WatcherType::Any));
        assert!(!t.remove_type(3, "/a", WatcherType::Any));
    }

    #[test]
    fn zookeeper_views_count_a_path_once_per_manager() {
        let mut t = WatchTable::default();
        t.add(1, "/a", WatchKind::Data);
        t.add(1, "/a", WatchKind::Persistent);
        t.add(1, "/b", WatchKind::Child);
        t.add(2, "/r", WatchKind::PersistentRecursive);
        let view = |side| {
            let mut v: Vec<(i64, String)> = t
                .zookeeper_view(side)
                .map(|(s, p)| (s, p.to_string()))
                .collect();
            v.sort();
            v
        };
        let pairs = |v: &[(i64, &str)]| -> Vec<(i64, String)> {
            v.iter().map(|(s, p)| (*s, p.to_string())).collect()
        };
        assert_eq!(view(WatchSide::Data), pairs(&[(1, "/a"), (2, "/r")]));
        assert_eq!(
            view(WatchSide::Child),
            pairs(&[(1, "/a"), (1, "/b"), (2, "/r")])
        );
        assert_eq!(t.watch_count(), 4);
    }

    #[test]
    fn removing_a_session_drops_all_its_watches() {
        let mut t = WatchTable::default();
        t.add(1, "/a", WatchKind::Data);
        t.add(1, "/b", WatchKind::Child);
        t.add(2, "/a", WatchKind::Data);
        t.remove_session(1);
        assert_eq!(t.watch_count(), 1);
        assert_eq!(fire(&mut t, "/a", EventType::NodeDeleted), vec![2]);
    }
}
