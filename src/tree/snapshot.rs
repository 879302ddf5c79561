//! A tree version to and from the snapshot format of `ringkeeper_storage::snapshot`.
//! Loading reads nothing but the session table and the special nodes: the snapshot
//! becomes the tree's base, read in place (see [`super::base`]).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringkeeper_storage::snapshot::{
    NodeRecord, SnapSession, SnapStat, Snapshot, SnapshotError, SnapshotWriter,
};

use super::base::BaseTree;
use super::DataTree;
use crate::proto::Acl;

/// The fields of a Stat a snapshot keeps (ZooKeeper's StatPersisted: no data length
/// or child count, which the node itself gives).
pub fn persisted_stat(st: &crate::proto::Stat) -> SnapStat {
    SnapStat {
        czxid: st.czxid,
        mzxid: st.mzxid,
        ctime: st.ctime,
        mtime: st.mtime,
        version: st.version,
        cversion: st.cversion,
        aversion: st.aversion,
        ephemeral_owner: st.ephemeral_owner,
        pzxid: st.pzxid,
    }
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
        let mut w = SnapshotWriter::create(dir, self.last_zxid, sessions, self.node_count as u64)?;
        // ACL lists are shared between nodes: write each distinct one once.
        let mut by_ptr: HashMap<*const Vec<Acl>, u32> = HashMap::new();
        let mut by_value: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut last: Option<(*const Vec<Acl>, u32)> = None;
        self.for_each_node(|path, n| {
            let ptr = Arc::as_ptr(n.acl());
            let acl = match last {
                Some((p, i)) if p == ptr => i,
                _ => *by_ptr.entry(ptr).or_insert_with(|| {
                    let mut enc = Vec::new();
                    Acl::encode_list(n.acl(), &mut enc);
                    *by_value
                        .entry(enc)
                        .or_insert_with_key(|enc| w.acl_list(enc))
                }),
            };
            last = Some((ptr, acl));
            let st = n.stored_stat();
            w.node(&NodeRecord {
                path,
                data: n.data_slice(),
                acl,
                child_count: n.child_count() as u32,
                stat: persisted_stat(&st),
            })
        })?;
        w.finish(durable)
    }

    /// The tree a snapshot holds, read in place, and the session table stored with it.
    pub fn from_snapshot(snap: Snapshot) -> Result<(DataTree, Vec<SnapSession>), SnapshotError> {
        let base = BaseTree::new(snap)?;
        let sessions = base.sessions().to_vec();
        Ok((DataTree::from_base(base), sessions))
    }
}
