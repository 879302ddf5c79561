//! The tree a snapshot holds, read in place from its map: the bottom layer of a
//! [`DataTree`](super::DataTree) after a restart. Nothing is copied or indexed on load;
//! a path is found by a binary search of the snapshot's node table, and node data is handed out as `Bytes` slices of the map (page cache, not heap).

use std::sync::Arc;

use bytes::Bytes;
use ringkeeper_storage::snapshot::{ChildRun, SnapSession, SnapStat, Snapshot, SnapshotError};

use super::{Children, Node};
use crate::proto::jute::Reader;
use crate::proto::{Acl, Stat};

/// Owns the map so `Bytes` can borrow from it.
struct MapOwner(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0[..]
    }
}

/// Node `i` of a base tree is its snapshot's table record `i`.
pub struct BaseTree {
    snap: Snapshot,
    all: Bytes,
    acls: Vec<Arc<Vec<Acl>>>,
}

impl std::fmt::Debug for BaseTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BaseTree({})", self.snap.path().display())
    }
}

impl BaseTree {
    /// Takes over an opened (validated) snapshot; decodes its ACL lists, the only
    /// part read up front.
    pub fn new(snap: Snapshot) -> Result<BaseTree, SnapshotError> {
        let mut acls = Vec::new();
        for (i, enc) in snap.acl_lists().enumerate() {
            let list = Acl::decode_list(&mut Reader::new(enc)).map_err(|e| SnapshotError::Bad {
                path: snap.path().to_path_buf(),
                offset: 0,
                reason: format!("ACL list {i} does not decode: {e}"),
            })?;
            acls.push(Arc::new(list));
        }
        let all = Bytes::from_owner(MapOwner(snap.map().clone()));
        Ok(BaseTree { snap, all, acls })
    }

    pub fn zxid(&self) -> i64 {
        self.snap.zxid
    }

    /// The number of nodes (at least the root).
    pub fn node_count(&self) -> usize {
        self.snap.node_count() as usize
    }

    pub fn data_size(&self) -> u64 {
        self.snap.data_size()
    }

    pub fn sessions(&self) -> &[SnapSession] {
        self.snap.sessions()
    }

    /// Nodes with an ephemeral owner (ephemerals, containers, TTL nodes).
    pub fn specials(&self) -> impl Iterator<Item = u32> + '_ {
        self.snap.specials()
    }

    pub fn path(&self, i: u32) -> &str {
        std::str::from_utf8(self.snap.path_bytes(i)).expect("paths are UTF-8, checked at open")
    }

    /// The last component of node `i`'s path.
    pub fn name(&self, i: u32) -> &str {
        let p = self.path(i);
        &p[p.rfind('/').map_or(0, |s| s + 1)..]
    }

    /// Node `i`'s children, sorted by name.
    pub fn children(&self, i: u32) -> ChildRun<'_> {
        self.snap.child_run(i)
    }

    /// Whether `parent` has a child called `name`.
    pub fn has_child(&self, parent: u32, name: &str) -> bool {
        let run = self.children(parent);
        let (mut lo, mut hi) = (0, run.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.name(run.get(mid)).as_bytes().cmp(name.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// The node at `path`.
    pub fn lookup(&self, path: &str) -> Option<u32> {
        self.snap.find(path.as_bytes())
    }

    pub fn data(&self, i: u32) -> Option<Bytes> {
        self.snap.node(i).data.map(|r| {
            if r.is_empty() {
                Bytes::new()
            } else {
                self.all.slice(r)
            }
        })
    }

    /// Node `i`'s data, borrowed from the map.
    pub fn data_slice(&self, i: u32) -> Option<&[u8]> {
        self.snap.node(i).data.map(|r| &self.snap.map()[r])
    }

    pub fn acl(&self, i: u32) -> &Arc<Vec<Acl>> {
        &self.acls[self.snap.node(i).acl as usize]
    }

    /// The stat as stored (see [`Node`]): data length and child count are 0.
    pub fn stat(&self, i: u32) -> Stat {
        stored_stat(self.snap.node(i).stat)
    }

    /// The stat clients see, from one read of the record.
    pub fn reported_stat(&self, i: u32) -> Stat {
        let n = self.snap.node(i);
        super::reported_stat(
            stored_stat(n.stat),
            n.data.map_or(0, |r| r.len()),
            n.child_count as usize,
        )
    }

    pub fn data_len(&self, i: u32) -> usize {
        self.snap.node(i).data.map_or(0, |r| r.len())
    }

    /// Node `i` as an owned node, for the overlay to change: its data still a slice
    /// of the map, its children still the base's run.
    pub fn to_node(&self, i: u32) -> Node {
        Node {
            data: self.data(i),
            acl: self.acl(i).clone(),
            stat: self.stat(i),
            children: Children::of_base(i, self.children(i).len() as u32),
        }
    }
}

/// A snapshot's stat as the tree stores it (see [`Node`]): data length and child
/// count are derived on read, so 0 here.
fn stored_stat(s: SnapStat) -> Stat {
    Stat {
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
    }
}
