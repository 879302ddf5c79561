//! A tree version to and from the snapshot format of `ringkeeper_storage::snapshot`.
//! Loading does not copy node data: every node's data is a `Bytes` slice of the map.

use std::collections::HashMap as StdHashMap;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use imbl::{HashMap, OrdMap, OrdSet};
use ringkeeper_storage::snapshot::{SnapSession, SnapStat, Snapshot, SnapshotWriter};

use super::{path, Children, DataTree, Node};
use crate::proto::jute::Reader;
use crate::proto::{Acl, Stat};

/// Owns the map so `Bytes` can borrow from it.
struct MapOwner(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0[..]
    }
}

/// Each parent's children, from paths in depth-first pre-order (a node's parent is on
/// the stack of its ancestors): (index of the parent, its child set).
fn child_sets(paths: &[Arc<str>]) -> Result<Vec<(usize, Children)>, String> {
    let mut sets: Vec<(usize, Children)> = Vec::new();
    // Stack of (node index, index in `sets` of its child set, if it has children yet).
    let mut stack: Vec<(usize, Option<usize>)> = vec![(0, None)];
    for (i, p) in paths.iter().enumerate().skip(1) {
        let parent = path::parent(p);
        while let Some(&(top, _)) = stack.last() {
            if &*paths[top] == parent {
                break;
            }
            stack.pop();
        }
        let Some(top) = stack.last_mut() else {
            return Err(format!("node {p} does not follow its parent"));
        };
        let set = *top.1.get_or_insert_with(|| {
            sets.push((top.0, Children::default()));
            sets.len() - 1
        });
        if !sets[set].1.insert(Arc::from(path::name(p))) {
            return Err(format!("node {p} appears twice"));
        }
        stack.push((i, None));
    }
    Ok(sets)
}

impl DataTree {
    /// Writes this version, with `sessions`, as the snapshot for its last zxid in
    /// `dir`. `durable` is asked, before the snapshot is published, whether the log
    /// holds every txn up to that zxid (see `SnapshotWriter::finish`).
    pub fn write_snapshot(
        &self,
        sessions: &[SnapSession],
        dir: &Path,
        durable: impl FnOnce() -> bool,
    ) -> io::Result<Option<PathBuf>> {
        let mut w = SnapshotWriter::create(dir, self.last_zxid)?;
        // ACL lists are shared between nodes: write each distinct one once.
        let mut by_ptr: StdHashMap<*const Vec<Acl>, u32> = StdHashMap::new();
        let mut by_value: StdHashMap<Vec<u8>, u32> = StdHashMap::new();
        let mut lists: Vec<Vec<u8>> = Vec::new();
        let order = self.preorder();
        let mut node_acl: Vec<u32> = Vec::with_capacity(order.len());
        for (_, n) in &order {
            let idx = *by_ptr.entry(Arc::as_ptr(&n.acl)).or_insert_with(|| {
                let mut enc = Vec::new();
                Acl::encode_list(&n.acl, &mut enc);
                *by_value.entry(enc.clone()).or_insert_with(|| {
                    lists.push(enc);
                    lists.len() as u32 - 1
                })
            });
            node_acl.push(idx);
        }
        for l in &lists {
            w.acl_list(l)?;
        }
        for s in sessions {
            w.session(s)?;
        }
        for ((p, n), acl) in order.iter().zip(node_acl) {
            let st = &n.stat;
            w.node(
                p,
                n.data.as_deref(),
                acl,
                &SnapStat {
                    czxid: st.czxid,
                    mzxid: st.mzxid,
                    ctime: st.ctime,
                    mtime: st.mtime,
                    version: st.version,
                    cversion: st.cversion,
                    aversion: st.aversion,
                    ephemeral_owner: st.ephemeral_owner,
                    pzxid: st.pzxid,
                },
            )?;
        }
        w.finish(durable)
    }

    /// Every node, parents before children and siblings in name order (depth-first
    /// pre-order): the order snapshots are written in, which lets loading find each
    /// node's parent on a stack instead of looking it up.
    fn preorder(&self) -> Vec<(String, &Arc<Node>)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<String> = vec!["/".to_string()];
        while let Some(p) = stack.pop() {
            let Some(n) = self.nodes.get(p.as_str()) else {
                continue;
            };
            let first = stack.len();
            stack.extend(n.children.iter().map(|c| path::join(&p, c)));
            stack[first..].reverse();
            out.push((p, n));
        }
        out
    }

    /// Rebuilds the tree a snapshot holds, its node data served from the map.
    /// Returns the tree and the session table stored with it.
    pub fn from_snapshot(
        snap: &Snapshot,
    ) -> Result<(DataTree, Vec<SnapSession>), ringkeeper_storage::snapshot::SnapshotError> {
        let all = Bytes::from_owner(MapOwner(snap.map().clone()));
        let acls: std::cell::RefCell<Vec<Arc<Vec<Acl>>>> = Default::default();
        let mut sessions = Vec::new();
        let mut nodes: Vec<(Arc<str>, Node)> = Vec::with_capacity(snap.node_count() as usize);
        snap.read(
            |enc| {
                let mut r = Reader::new(enc);
                let list = Acl::decode_list(&mut r).map_err(|e| format!("bad ACL list: {e}"))?;
                acls.borrow_mut().push(Arc::new(list));
                Ok(())
            },
            |s| sessions.push(s),
            |n| {
                let path = std::str::from_utf8(&all[n.path.clone()])
                    .map_err(|_| "node path is not UTF-8".to_string())?;
                let acls = acls.borrow();
                let acl = acls
                    .get(n.acl as usize)
                    .ok_or_else(|| {
                        format!("node {path} names ACL list {} of {}", n.acl, acls.len())
                    })?
                    .clone();
                let data = n.data.map(|r| {
                    if r.is_empty() {
                        Bytes::new()
                    } else {
                        all.slice(r)
                    }
                });
                let s = n.stat;
                nodes.push((
                    Arc::from(path),
                    Node {
                        data,
                        acl,
                        stat: Stat {
                            czxid: s.czxid,
                            mzxid: s.mzxid,
                            ctime: s.ctime,
                            mtime: s.mtime,
                            version: s.version,
                            cversion: s.cversion,
                            aversion: s.aversion,
                            ephemeral_owner: s.ephemeral_owner,
                            data_length: 0,
                            num_children: 0,
                            pzxid: s.pzxid,
                        },
                        children: Children::default(),
                    },
                ));
                Ok(())
            },
        )?;
        let bad = |reason: String| ringkeeper_storage::snapshot::SnapshotError::Bad {
            path: snap.path().to_path_buf(),
            offset: 0,
            reason,
        };
        // Nodes come in depth-first pre-order, the root first.
        if nodes.first().map(|(p, _)| &**p) != Some("/") {
            return Err(bad("the first node is not the root".into()));
        }
        // Two B-trees to build: every parent's child set and the map of all nodes.
        // They are independent until the end, so on two threads: the sets from the
        // paths alone, the map with childless nodes, then each parent gets its set.
        let paths: Vec<Arc<str>> = nodes.iter().map(|(p, _)| p.clone()).collect();
        let (sets, map) = std::thread::scope(|scope| {
            let builder = scope.spawn(move || {
                nodes
                    .into_iter()
                    .map(|(p, n)| (p, Arc::new(n)))
                    .collect::<OrdMap<Arc<str>, Arc<Node>>>()
            });
            let sets = child_sets(&paths);
            let map = builder.join().expect("node map builder panicked");
            (sets, map)
        });
        let sets = sets.map_err(bad)?;
        let mut map = map;
        for (parent, children) in sets {
            let node = map
                .get_mut(&*paths[parent])
                .expect("every parent is in the map");
            Arc::get_mut(node)
                .expect("a freshly built node has one owner")
                .children = children;
        }
        let mut tree = DataTree {
            nodes: OrdMap::new(),
            ephemerals: HashMap::new(),
            containers: OrdSet::new(),
            ttls: OrdSet::new(),
            last_zxid: snap.zxid,
        };
        for (p, n) in map.iter() {
            tree.index_kind(p, n.stat.ephemeral_owner);
        }
        tree.nodes = map;
        Ok((tree, sessions))
    }
}
