//! ZooKeeper's serialized data tree, as `SerializeUtils.serializeSnapshot` writes it:
//! the sessions with their timeouts, the ACL cache (each ACL list under the long that
//! nodes refer to it by), then every node (path, data, ACL reference, persisted stat)
//! parent first, from the root (whose path is "") to a "/" that ends the list.
//!
//! A leader sends exactly this after a SNAP packet (followed by the string
//! "BenWasHere"), and ZooKeeper's snapshot files hold it between their file header and
//! their digest and checksum.

use bytes::BufMut;

use crate::proto::jute::{DecodeError, JuteWrite, Reader};
use crate::proto::Acl;

/// The string a leader writes after the tree it sends with SNAP.
pub const SNAP_SIGNATURE: &str = "BenWasHere";

/// A node's stat as ZooKeeper stores it (StatPersisted: no data length or child
/// count): the same fields as a ringkeeper snapshot's node stat.
pub use ringkeeper_storage::snapshot::SnapStat as StatPersisted;

fn decode_stat(r: &mut Reader) -> Result<StatPersisted, DecodeError> {
    Ok(StatPersisted {
        czxid: r.i64()?,
        mzxid: r.i64()?,
        ctime: r.i64()?,
        mtime: r.i64()?,
        version: r.i32()?,
        cversion: r.i32()?,
        aversion: r.i32()?,
        ephemeral_owner: r.i64()?,
        pzxid: r.i64()?,
    })
}

fn encode_stat(s: &StatPersisted, b: &mut impl BufMut) {
    b.put_i64(s.czxid);
    b.put_i64(s.mzxid);
    b.put_i64(s.ctime);
    b.put_i64(s.mtime);
    b.put_i32(s.version);
    b.put_i32(s.cversion);
    b.put_i32(s.aversion);
    b.put_i64(s.ephemeral_owner);
    b.put_i64(s.pzxid);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkNode {
    /// "" for the root.
    pub path: String,
    pub data: Option<Vec<u8>>,
    /// The key of the node's ACL list in the cache (-1: open, ZooKeeper's OPEN_UNSAFE).
    pub acl_ref: i64,
    pub stat: StatPersisted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZkTree {
    /// (session id, timeout ms), in the order written.
    pub sessions: Vec<(i64, i32)>,
    /// (key, ACL list or null), in the order written.
    pub acls: Vec<(i64, Option<Vec<Acl>>)>,
    pub nodes: Vec<ZkNode>,
}

/// Bytes a StatPersisted takes: four longs, three ints, two longs.
const STAT_BYTES: usize = 4 * 8 + 3 * 4 + 2 * 8;
/// Bytes a node record takes at least: path length, data length, ACL ref, stat.
const NODE_BYTES_MIN: usize = 4 + 4 + 8 + STAT_BYTES;

impl ZkTree {
    pub fn decode(r: &mut Reader) -> Result<ZkTree, DecodeError> {
        ZkTreeDecoder::default().feed(r)
    }

    pub fn encode(&self, b: &mut Vec<u8>) {
        b.put_i32(self.sessions.len() as i32);
        for (id, timeout) in &self.sessions {
            b.put_i64(*id);
            b.put_i32(*timeout);
        }
        b.put_i32(self.acls.len() as i32);
        for (key, list) in &self.acls {
            b.put_i64(*key);
            match list {
                None => b.put_i32(-1),
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    for a in v {
                        a.encode(b);
                    }
                }
            }
        }
        for n in &self.nodes {
            b.put_string(&n.path);
            b.put_buffer_opt(n.data.as_deref());
            b.put_i64(n.acl_ref);
            encode_stat(&n.stat, b);
        }
        b.put_string("/");
    }
}

/// Decodes a [`ZkTree`] as its bytes arrive. A SNAP's tree can take hundreds of MB and
/// many reads: each [`feed`](ZkTreeDecoder::feed) goes on after the last whole element
/// the one before decoded, so the bytes are decoded once however many reads they take.
#[derive(Default)]
pub struct ZkTreeDecoder {
    /// Bytes of the tree taken so far, as whole elements.
    taken: usize,
    stage: DecodeStage,
    tree: ZkTree,
}

#[derive(Default)]
enum DecodeStage {
    #[default]
    Sessions,
    Acls(usize),
    Nodes,
}

impl ZkTreeDecoder {
    /// `r` is at the tree's first byte, with at least what earlier calls were given.
    /// The whole tree once it is there (`r` right after it); Truncated until then (the
    /// elements before the cut are kept).
    pub fn feed(&mut self, r: &mut Reader) -> Result<ZkTree, DecodeError> {
        r.bytes(self.taken)?;
        loop {
            let at = r.position();
            let done = self.element(r)?;
            self.taken += r.position() - at;
            if done {
                return Ok(std::mem::take(&mut self.tree));
            }
        }
    }

    /// Decodes the next element (all sessions, one ACL list, one node); true after
    /// the last.
    fn element(&mut self, r: &mut Reader) -> Result<bool, DecodeError> {
        match self.stage {
            DecodeStage::Sessions => {
                let n = r.vec_len(12)?;
                let mut sessions = Vec::with_capacity(n);
                for _ in 0..n {
                    sessions.push((r.i64()?, r.i32()?));
                }
                let acls = r.vec_len(12)?;
                self.tree.sessions = sessions;
                self.stage = DecodeStage::Acls(acls);
            }
            DecodeStage::Acls(0) => self.stage = DecodeStage::Nodes,
            DecodeStage::Acls(left) => {
                let key = r.i64()?;
                let list = match r.vec_len_opt(12)? {
                    None => None,
                    Some(m) => Some((0..m).map(|_| Acl::decode(r)).collect::<Result<_, _>>()?),
                };
                self.tree.acls.push((key, list));
                self.stage = DecodeStage::Acls(left - 1);
            }
            DecodeStage::Nodes => {
                let path = r.string()?;
                if path == "/" {
                    return Ok(true);
                }
                if r.remaining() < NODE_BYTES_MIN - 4 {
                    return Err(DecodeError::Truncated {
                        offset: r.position(),
                        needed: NODE_BYTES_MIN - 4 - r.remaining(),
                    });
                }
                self.tree.nodes.push(ZkNode {
                    path,
                    data: r.buffer_opt()?.map(<[u8]>::to_vec),
                    acl_ref: r.i64()?,
                    stat: decode_stat(r)?,
                });
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(z: i64) -> StatPersisted {
        StatPersisted {
            czxid: z,
            mzxid: z,
            ctime: 1,
            mtime: 2,
            version: 0,
            cversion: 1,
            aversion: 0,
            ephemeral_owner: 0,
            pzxid: z,
        }
    }

    fn sample() -> ZkTree {
        ZkTree {
            sessions: vec![(0x100, 30_000)],
            acls: vec![(
                1,
                Some(vec![Acl {
                    perms: 31,
                    id: crate::proto::Id::new("world", "anyone"),
                }]),
            )],
            nodes: vec![
                ZkNode {
                    path: String::new(),
                    data: Some(Vec::new()),
                    acl_ref: -1,
                    stat: stat(0),
                },
                ZkNode {
                    path: "/a".into(),
                    data: None,
                    acl_ref: 1,
                    stat: stat(5),
                },
                ZkNode {
                    path: "/a/b".into(),
                    data: Some(vec![7; 300]),
                    acl_ref: 1,
                    stat: stat(6),
                },
            ],
        }
    }

    #[test]
    fn a_tree_round_trips_and_ends_at_the_slash() {
        let t = sample();
        let mut b = Vec::new();
        t.encode(&mut b);
        b.extend_from_slice(b"more");
        let mut r = Reader::new(&b);
        assert_eq!(ZkTree::decode(&mut r).unwrap(), t);
        assert_eq!(r.rest(), b"more");
    }

    #[test]
    fn a_tree_fed_as_it_arrives_is_decoded_once_and_whole() {
        let t = sample();
        let mut b = Vec::new();
        t.encode(&mut b);
        b.extend_from_slice(b"more");
        // Every prefix, in order, as reads would bring them: Truncated until the
        // tree is all there, then the tree, with the reader right after it.
        let mut d = ZkTreeDecoder::default();
        let mut taken = Vec::new();
        for end in 0..b.len() {
            let mut r = Reader::new(&b[..end]);
            match d.feed(&mut r) {
                Ok(tree) => {
                    assert_eq!(tree, t);
                    assert_eq!(&b[r.position()..], b"more");
                    // The nodes were taken one by one as they came, never again.
                    assert!(taken.windows(2).all(|w| w[0] <= w[1]));
                    assert!(taken.last().is_some_and(|&n| n > b.len() / 2), "{taken:?}");
                    return;
                }
                Err(DecodeError::Truncated { .. }) => taken.push(d.taken),
                Err(e) => panic!("at {end}: {e}"),
            }
        }
        panic!("never whole; taken {taken:?}");
    }

    #[test]
    fn a_tree_without_its_end_is_truncated() {
        let mut b = Vec::new();
        b.put_i32(0);
        b.put_i32(0);
        b.put_string("");
        assert!(matches!(
            ZkTree::decode(&mut Reader::new(&b)),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
