//! What follows a SNAP packet on a learner connection.
//!
//! - To an Apache ZooKeeper learner, or from an Apache ZooKeeper leader: ZooKeeper's
//!   serialized data tree and its signature, as ZooKeeper sends it.
//! - Between ringkeeper members (the learner's LearnerInfo and the leader's LEADERINFO
//!   both carry [`RINGKEEPER_PROTOCOL_VERSION`]): an envelope, `"RKSNAP01"` and a kind
//!   byte. Kind 0: ZooKeeper's tree and signature follow, as above (a leader that
//!   cannot send files). Kind 1: the leader's files: `snapshot zxid: i64 | snapshot
//!   length: u64 | log length: u64`, the newest snapshot file at or below the SNAP's
//!   zxid as it lies on the leader's disk (empty: none, the tree starts empty), then
//!   the log records after it up to the SNAP's zxid, framed as the log frames them.
//!   The learner checks both, writes them as its own files and maps the snapshot in
//!   place: joining costs a file copy, not a parse and a rewrite of the tree.

use bytes::Bytes;

use crate::proto::jute::{DecodeError, Reader};
use crate::zab::wire::WireError;
use crate::zkformat::snapshot::{ZkTree, ZkTreeDecoder, SNAP_SIGNATURE};

pub use crate::zab::wire::RINGKEEPER_PROTOCOL_VERSION;

const ENVELOPE_MAGIC: &[u8; 8] = b"RKSNAP01";
const KIND_TREE: u8 = 0;
const KIND_FILES: u8 = 1;
/// Magic, kind, snapshot zxid, the two lengths.
const FILES_HEADER_BYTES: usize = 8 + 1 + 8 + 8 + 8;

/// A ringkeeper leader's files for a SNAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapFiles {
    /// The snapshot's zxid (0 without one).
    pub snapshot_zxid: i64,
    /// The snapshot file's bytes; empty when there is none.
    pub snapshot: Bytes,
    /// The log records after `snapshot_zxid` up to the SNAP's zxid, framed.
    pub log: Bytes,
}

/// The state a SNAP brings: ZooKeeper's tree, or a ringkeeper leader's files.
#[derive(Debug)]
pub enum SnapImage {
    Tree(ZkTree),
    Files(SnapFiles),
}

/// The bytes that follow a SNAP packet to a ringkeeper learner sending files: the
/// envelope's header, then the snapshot and the log, each queued as it is.
pub fn files_parts(files: SnapFiles) -> [Bytes; 3] {
    let mut h = Vec::with_capacity(FILES_HEADER_BYTES);
    h.extend_from_slice(ENVELOPE_MAGIC);
    h.push(KIND_FILES);
    h.extend_from_slice(&files.snapshot_zxid.to_be_bytes());
    h.extend_from_slice(&(files.snapshot.len() as u64).to_be_bytes());
    h.extend_from_slice(&(files.log.len() as u64).to_be_bytes());
    [Bytes::from(h), files.snapshot, files.log]
}

/// The envelope's header for ZooKeeper's tree (sent to a ringkeeper learner by a
/// leader that has no files to send); the tree and its signature follow.
pub fn tree_envelope() -> Vec<u8> {
    let mut h = ENVELOPE_MAGIC.to_vec();
    h.push(KIND_TREE);
    h
}

/// Decodes what follows a SNAP as it arrives: each call gets everything from the
/// first byte after the packet on, and returns Truncated until all of it is there.
pub struct SnapDecoder {
    /// The leader is a ringkeeper member that knows we are one: an envelope comes.
    envelope: bool,
    tree: Option<ZkTreeDecoder>,
}

impl SnapDecoder {
    pub fn new(envelope: bool) -> SnapDecoder {
        SnapDecoder {
            envelope,
            tree: None,
        }
    }

    pub fn feed(&mut self, r: &mut Reader) -> Result<SnapImage, WireError> {
        if self.envelope {
            let magic = r.bytes(ENVELOPE_MAGIC.len())?;
            if magic != ENVELOPE_MAGIC {
                return Err(WireError::SnapEnvelope(format!(
                    "starts with {magic:02x?}, not {ENVELOPE_MAGIC:?}"
                )));
            }
            match r.u8()? {
                KIND_TREE => {}
                KIND_FILES => return decode_files(r).map(SnapImage::Files),
                k => return Err(WireError::SnapEnvelope(format!("unknown kind {k}"))),
            }
        }
        let tree = self
            .tree
            .get_or_insert_with(ZkTreeDecoder::default)
            .feed(r)?;
        self.tree = None;
        let sig = r.string()?;
        if sig != SNAP_SIGNATURE {
            return Err(WireError::SnapSignature(sig));
        }
        Ok(SnapImage::Tree(tree))
    }
}

fn decode_files(r: &mut Reader) -> Result<SnapFiles, WireError> {
    let snapshot_zxid = r.i64()?;
    let snap_len = r.i64()? as u64;
    let log_len = r.i64()? as u64;
    let total = snap_len
        .checked_add(log_len)
        .filter(|t| *t < i64::MAX as u64);
    let Some(total) = total else {
        return Err(WireError::SnapEnvelope(format!(
            "lengths {snap_len} and {log_len}"
        )));
    };
    // The whole of it must be there before anything is copied out (checked first, so
    // a partial arrival costs nothing to look at again).
    if (r.remaining() as u64) < total {
        return Err(WireError::Decode(DecodeError::Truncated {
            offset: r.position(),
            needed: (total - r.remaining() as u64) as usize,
        }));
    }
    let snapshot = Bytes::copy_from_slice(r.bytes(snap_len as usize)?);
    let log = Bytes::copy_from_slice(r.bytes(log_len as usize)?);
    Ok(SnapFiles {
        snapshot_zxid,
        snapshot,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_in_pieces(envelope: bool, bytes: &[u8], step: usize) -> SnapImage {
        let mut d = SnapDecoder::new(envelope);
        let mut upto = 0;
        loop {
            upto = (upto + step).min(bytes.len());
            let mut r = Reader::new(&bytes[..upto]);
            match d.feed(&mut r) {
                Ok(image) => {
                    assert_eq!(r.position(), bytes.len(), "all of it, no more");
                    return image;
                }
                Err(WireError::Decode(DecodeError::Truncated { .. })) if upto < bytes.len() => {}
                Err(e) => panic!("at {upto} of {}: {e}", bytes.len()),
            }
        }
    }

    #[test]
    fn files_arrive_in_pieces_and_decode_once_whole() {
        let files = SnapFiles {
            snapshot_zxid: 0x1_0000_0007,
            snapshot: Bytes::from_static(b"snapshot bytes"),
            log: Bytes::from_static(b"log records"),
        };
        let bytes: Vec<u8> = files_parts(files.clone()).concat();
        for step in [1, 7, bytes.len()] {
            match feed_in_pieces(true, &bytes, step) {
                SnapImage::Files(f) => assert_eq!(f, files),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_tree_comes_bare_or_in_the_envelope() {
        let mut tree = Vec::new();
        ZkTree::default().encode(&mut tree);
        use crate::proto::jute::JuteWrite;
        tree.put_string(SNAP_SIGNATURE);
        let mut enveloped = tree_envelope();
        enveloped.extend_from_slice(&tree);
        assert!(matches!(
            feed_in_pieces(false, &tree, 3),
            SnapImage::Tree(_)
        ));
        assert!(matches!(
            feed_in_pieces(true, &enveloped, 3),
            SnapImage::Tree(_)
        ));
        // A ZooKeeper tree where an envelope is due, and an unknown kind, are refused.
        let mut r = Reader::new(&tree);
        assert!(matches!(
            SnapDecoder::new(true).feed(&mut r),
            Err(WireError::SnapEnvelope(_))
        ));
        let mut bad = tree_envelope();
        bad[8] = 9;
        let mut r = Reader::new(&bad);
        assert!(matches!(
            SnapDecoder::new(true).feed(&mut r),
            Err(WireError::SnapEnvelope(_))
        ));
    }
}
