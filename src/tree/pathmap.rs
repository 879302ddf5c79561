//! A sorted map from paths to values that clones in O(1): a B+tree whose pages are
//! shared between clones and copied on the first write after a clone.
//!
//! The broadcast core cuts a tree version for the shards once per batch, so after
//! every cut the first write to each page copies it (and the dropped version's copy
//! is released later). That copy is what a write pays for the versions, so pages are
//! small: a leaf holds at most `LEAF_CAP` entries (imbl's B-tree, used before, copies
//! 64 entries and 65 child slots for every leaf touched, each entry a reference count
//! to bump and, when the old version goes, to drop). Entries live only in the leaves;
//! inner pages hold their children's lower bounds.

use std::sync::Arc;

use smallvec::SmallVec;

use super::Name;

/// Entries per leaf at most. A write after a cut copies one leaf and the inner pages
/// above it (those are shared by the batch's other writes).
const LEAF_CAP: usize = 16;
/// Children per inner page at most.
const INNER_CAP: usize = 32;

/// A page with fewer entries (or children) than this is merged with a neighbour.
const LEAF_MIN: usize = LEAF_CAP / 4;
const INNER_MIN: usize = INNER_CAP / 4;

#[derive(Clone)]
struct Leaf<V> {
    entries: SmallVec<[(Name, V); LEAF_CAP]>,
}

impl<V> Leaf<V> {
    /// Where `key` is (Ok), or would go (Err).
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

/// Children in key order, each with a lower bound of its keys: child i holds the keys
/// k with `bound[i] <= k < bound[i + 1]`. The first bound is never compared (every key
/// below the second goes to the first child), so it may be stale.
#[derive(Clone)]
struct Inner<V> {
    children: SmallVec<[(Name, Page<V>); INNER_CAP]>,
}

enum Page<V> {
    Leaf(Arc<Leaf<V>>),
    Inner(Arc<Inner<V>>),
}

impl<V> Clone for Page<V> {
    fn clone(&self) -> Self {
        match self {
            Page::Leaf(l) => Page::Leaf(l.clone()),
            Page::Inner(i) => Page::Inner(i.clone()),
        }
    }
}

impl<V: Clone> Page<V> {
    fn underfull(&self) -> bool {
        match self {
            Page::Leaf(l) => l.entries.len() < LEAF_MIN,
            Page::Inner(i) => i.children.len() < INNER_MIN,
        }
    }

    /// Inserts, splitting this page when it is full: the new right sibling and its
    /// lower bound come back with the replaced value, if any.
    fn insert(&mut self, key: Name, value: V) -> (Option<V>, Option<(Name, Page<V>)>) {
        match self {
            Page::Leaf(leaf) => {
                let at = leaf.find(&key);
                let leaf = Arc::make_mut(leaf);
                match at {
                    Ok(i) => (Some(std::mem::replace(&mut leaf.entries[i].1, value)), None),
                    Err(i) if leaf.entries.len() < LEAF_CAP => {
                        leaf.entries.insert(i, (key, value));
                        (None, None)
                    }
                    Err(i) => {
                        let mut right: SmallVec<[(Name, V); LEAF_CAP]> =
                            leaf.entries.drain(LEAF_CAP / 2..).collect();
                        if i <= LEAF_CAP / 2 {
                            leaf.entries.insert(i, (key, value));
                        } else {
                            right.insert(i - LEAF_CAP / 2, (key, value));
                        }
                        let bound = right[0].0.clone();
                        (
                            None,
                            Some((bound, Page::Leaf(Arc::new(Leaf { entries: right })))),
                        )
                    }
                }
            }
            Page::Inner(inner) => {
                let inner = Arc::make_mut(inner);
                let i = child_for(&inner.children, &key);
                let (old, split) = inner.children[i].1.insert(key, value);
                let Some(sibling) = split else {
                    return (old, None);
                };
                if inner.children.len() < INNER_CAP {
                    inner.children.insert(i + 1, sibling);
                    return (old, None);
                }
                // Split before the insert, so that no page ever holds more than it
                // can inline.
                let mut right: SmallVec<[(Name, Page<V>); INNER_CAP]> =
                    inner.children.drain(INNER_CAP / 2..).collect();
                if i < INNER_CAP / 2 {
                    inner.children.insert(i + 1, sibling);
                } else {
                    right.insert(i + 1 - INNER_CAP / 2, sibling);
                }
                let bound = right[0].0.clone();
                (
                    old,
                    Some((bound, Page::Inner(Arc::new(Inner { children: right })))),
                )
            }
        }
    }

    /// Removes `key`, rebalancing the child it came from when that leaves it too small.
    /// The caller has checked that `key` is there (the pages on its way are copied).
    fn remove(&mut self, key: &str) -> Option<V> {
        match self {
            Page::Leaf(leaf) => {
                let i = leaf.find(key).ok()?;
                Some(Arc::make_mut(leaf).entries.remove(i).1)
            }
            Page::Inner(inner) => {
                let inner = Arc::make_mut(inner);
                let i = child_for(&inner.children, key);
                let old = inner.children[i].1.remove(key);
                if inner.children[i].1.underfull() && inner.children.len() > 1 {
                    rebalance(&mut inner.children, i);
                }
                old
            }
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        let mut page = self;
        loop {
            match page {
                Page::Leaf(leaf) => {
                    let i = leaf.find(key).ok()?;
                    return Some(&leaf.entries[i].1);
                }
                Page::Inner(inner) => page = &inner.children[child_for(&inner.children, key)].1,
            }
        }
    }
}

/// The child of an inner page whose keys range over `key`.
fn child_for<V>(children: &[(Name, Page<V>)], key: &str) -> usize {
    children[1..].partition_point(|(bound, _)| bound.as_str() <= key)
}

/// Merges the underfull child `i` with a neighbour; if the two hold more than one page
/// takes, they are split evenly again.
fn rebalance<V: Clone>(children: &mut SmallVec<[(Name, Page<V>); INNER_CAP]>, i: usize) {
    let left = if i > 0 { i - 1 } else { i };
    let (bound, right) = children.remove(left + 1);
    // The two are joined in a list of their own (they may hold more than one page
    // inlines), then put back as one page or two.
    let joined = match (&mut children[left].1, right) {
        (Page::Leaf(l), Page::Leaf(r)) => {
            let l = Arc::make_mut(l);
            let mut all: Vec<_> = l.entries.drain(..).collect();
            all.extend(r.entries.iter().cloned());
            let right = (all.len() > LEAF_CAP).then(|| all.split_off(all.len() / 2));
            l.entries = all.into_iter().collect();
            let right: SmallVec<[(Name, V); LEAF_CAP]> =
                right.map(|r| r.into_iter().collect()).unwrap_or_default();
            if right.is_empty() {
                return;
            }
            (
                right[0].0.clone(),
                Page::Leaf(Arc::new(Leaf { entries: right })),
            )
        }
        (Page::Inner(l), Page::Inner(r)) => {
            let l = Arc::make_mut(l);
            let mut all: Vec<_> = l.children.drain(..).collect();
            // The right page's first bound may be stale; the parent's is exact.
            let mut moved = r.children.iter().cloned();
            if let Some((_, first)) = moved.next() {
                all.push((bound, first));
            }
            all.extend(moved);
            let right = (all.len() > INNER_CAP).then(|| all.split_off(all.len() / 2));
            l.children = all.into_iter().collect();
            let right: SmallVec<[(Name, Page<V>); INNER_CAP]> =
                right.map(|r| r.into_iter().collect()).unwrap_or_default();
            if right.is_empty() {
                return;
            }
            (
                right[0].0.clone(),
                Page::Inner(Arc::new(Inner { children: right })),
            )
        }
        _ => unreachable!("siblings are at the same height"),
    };
    children.insert(left + 1, joined);
}

/// A sorted map from paths to values (see the module's documentation).
pub struct PathMap<V> {
    root: Option<Page<V>>,
    len: usize,
}

impl<V> Clone for PathMap<V> {
    fn clone(&self) -> Self {
        PathMap {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<V> Default for PathMap<V> {
    fn default() -> Self {
        PathMap { root: None, len: 0 }
    }
}

impl<V: Clone> PathMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.root.as_ref()?.get(key)
    }

    /// The value at `key`, to change in place: the pages on its way are copied if a
    /// clone shares them, even when `key` is absent (every caller then inserts it, which
    /// copies the same pages).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let mut page = self.root.as_mut()?;
        loop {
            match page {
                Page::Leaf(leaf) => {
                    let leaf = Arc::make_mut(leaf);
                    let i = leaf.find(key).ok()?;
                    return Some(&mut leaf.entries[i].1);
                }
                Page::Inner(inner) => {
                    let inner = Arc::make_mut(inner);
                    let i = child_for(&inner.children, key);
                    page = &mut inner.children[i].1;
                }
            }
        }
    }

    /// Inserts or replaces; the value replaced comes back.
    pub fn insert(&mut self, key: Name, value: V) -> Option<V> {
        let Some(root) = self.root.as_mut() else {
            let mut entries = SmallVec::new();
            entries.push((key, value));
            self.root = Some(Page::Leaf(Arc::new(Leaf { entries })));
            self.len = 1;
            return None;
        };
        let (old, split) = root.insert(key, value);
        if let Some((bound, right)) = split {
            let left = self.root.take().expect("a root was there");
            let first = first_key(&left);
            let mut children = SmallVec::new();
            children.push((first, left));
            children.push((bound, right));
            self.root = Some(Page::Inner(Arc::new(Inner { children })));
        }
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        // Only pages on the way to a key that is there are copied.
        self.get(key)?;
        let old = self.root.as_mut()?.remove(key)?;
        self.len -= 1;
        // A root with one child hands over to it; an empty leaf root goes.
        loop {
            let next = match &self.root {
                Some(Page::Inner(inner)) if inner.children.len() == 1 => {
                    Some(inner.children[0].1.clone())
                }
                Some(Page::Leaf(leaf)) if leaf.entries.is_empty() => None,
                _ => break,
            };
            self.root = next;
        }
        Some(old)
    }

    /// Every entry, in key order (bytewise).
    pub fn iter(&self) -> Iter<'_, V> {
        let mut it = Iter {
            inner: Vec::new(),
            leaf: &[],
        };
        if let Some(root) = &self.root {
            it.descend(root);
        }
        it
    }
}

fn first_key<V: Clone>(page: &Page<V>) -> Name {
    match page {
        Page::Leaf(l) => l.entries[0].0.clone(),
        Page::Inner(i) => i.children[0].0.clone(),
    }
}

impl<V: Clone + std::fmt::Debug> std::fmt::Debug for PathMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// An in-order walk: the inner pages above the current leaf, each with its children
/// still to visit, and the rest of that leaf.
pub struct Iter<'a, V> {
    inner: Vec<std::slice::Iter<'a, (Name, Page<V>)>>,
    leaf: &'a [(Name, V)],
}

impl<'a, V> Iter<'a, V> {
    fn descend(&mut self, mut page: &'a Page<V>) {
        loop {
            match page {
                Page::Leaf(l) => {
                    self.leaf = &l.entries;
                    return;
                }
                Page::Inner(i) => {
                    let mut children = i.children.iter();
                    let (_, first) = children.next().expect("an inner page has children");
                    self.inner.push(children);
                    page = first;
                }
            }
        }
    }
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Name, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(((k, v), rest)) = self.leaf.split_first() {
                self.leaf = rest;
                return Some((k, v));
            }
            let next = loop {
                let top = self.inner.last_mut()?;
                match top.next() {
                    Some((_, child)) => break child,
                    None => {
                        self.inner.pop();
                    }
                }
            };
            self.descend(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    impl<V: Clone> PathMap<V> {
        /// Checks the structure: keys sorted and within their bounds, every leaf at the
        /// same depth, no page over its capacity or under its minimum (the root aside),
        /// the length right.
        fn check(&self) {
            fn walk<V: Clone>(
                page: &Page<V>,
                lo: Option<&str>,
                hi: Option<&str>,
                depth: usize,
                leaf_depth: &mut Option<usize>,
                is_root: bool,
            ) -> usize {
                let in_range = |k: &str| lo.is_none_or(|lo| lo <= k) && hi.is_none_or(|hi| k < hi);
                match page {
                    Page::Leaf(l) => {
                        assert!(l.entries.len() <= LEAF_CAP);
                        assert!(is_root || l.entries.len() >= LEAF_MIN, "leaf underfull");
                        assert!(
                            l.entries.windows(2).all(|w| w[0].0 < w[1].0),
                            "leaf unsorted"
                        );
                        assert!(
                            l.entries.iter().all(|(k, _)| in_range(k)),
                            "key out of bounds"
                        );
                        assert_eq!(
                            *leaf_depth.get_or_insert(depth),
                            depth,
                            "leaves at two depths"
                        );
                        l.entries.len()
                    }
                    Page::Inner(i) => {
                        assert!(i.children.len() <= INNER_CAP);
                        let min = if is_root { 2 } else { INNER_MIN };
                        assert!(i.children.len() >= min, "inner page underfull");
                        let mut n = 0;
                        for (j, (_, child)) in i.children.iter().enumerate() {
                            let clo = if j == 0 {
                                lo
                            } else {
                                Some(i.children[j].0.as_str())
                            };
                            let chi = i.children.get(j + 1).map(|(b, _)| b.as_str()).or(hi);
                            n += walk(child, clo, chi, depth + 1, leaf_depth, false);
                        }
                        n
                    }
                }
            }
            let n = self
                .root
                .as_ref()
                .map_or(0, |r| walk(r, None, None, 0, &mut None, true));
            assert_eq!(n, self.len);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Bump(u16),
        Keep,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Keys from a small range, so that inserts replace and removes hit.
        let key = 0u16..1500;
        prop_oneof![
            4 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => key.clone().prop_map(Op::Remove),
            2 => key.prop_map(Op::Bump),
            1 => Just(Op::Keep),
        ]
    }

    fn name(k: u16) -> String {
        // Paths of several lengths, some past the inline size.
        match k % 3 {
            0 => format!("/a/{k}"),
            1 => format!("/a/long-name-past-the-inline-size-{k:05}"),
            _ => format!("/b{k:04}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Against std's BTreeMap, with clones kept along the way: every clone still
        /// holds what it held when it was taken.
        #[test]
        fn behaves_as_a_sorted_map_and_clones_stay_as_they_were(ops in prop::collection::vec(op(), 1..5000)) {
            let mut map = PathMap::new();
            let mut model = BTreeMap::new();
            let mut kept: Vec<(PathMap<u32>, BTreeMap<String, u32>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(map.insert(Name::new(name(k)), v), model.insert(name(k), v));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(map.remove(&name(k)), model.remove(&name(k)));
                    }
                    Op::Bump(k) => {
                        let got = map.get_mut(&name(k)).map(|v| { *v = v.wrapping_add(1); *v });
                        let want = model.get_mut(&name(k)).map(|v| { *v = v.wrapping_add(1); *v });
                        prop_assert_eq!(got, want);
                    }
                    Op::Keep => kept.push((map.clone(), model.clone())),
                }
                prop_assert_eq!(map.len(), model.len());
            }
            map.check();
            let all: Vec<(String, u32)> = map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let want: Vec<(String, u32)> = model.into_iter().collect();
            prop_assert_eq!(all, want);
            for (m, want) in kept {
                m.check();
                let got: Vec<(String, u32)> = m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn grows_and_shrinks_through_many_levels() {
        let mut map = PathMap::new();
        for i in 0..20_000u32 {
            // Keys out of order, so that splits happen everywhere.
            let k = (i.wrapping_mul(7919)) % 20_000;
            map.insert(Name::new(format!("/n/{k:06}")), k);
        }
        map.check();
        assert_eq!(map.len(), 20_000);
        let before = map.clone();
        for k in (0..20_000u32).filter(|k| k % 5 != 0) {
            assert_eq!(map.remove(&format!("/n/{k:06}")), Some(k));
        }
        map.check();
        assert_eq!(map.len(), 4_000);
        assert!(map
            .iter()
            .all(|(k, v)| k.as_str() == format!("/n/{v:06}") && v % 5 == 0));
        before.check();
        assert_eq!(before.len(), 20_000);
        for k in (0..20_000u32).filter(|k| k % 5 == 0) {
            assert_eq!(map.remove(&format!("/n/{k:06}")), Some(k));
        }
        map.check();
        assert!(map.is_empty() && map.iter().next().is_none() && map.root.is_none());
        assert_eq!(before.get("/n/019999"), Some(&19_999));
    }
}
