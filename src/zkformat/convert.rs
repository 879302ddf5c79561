//! ringkeeper's txns and Apache ZooKeeper's, each into the other: what a member of a
//! mixed ensemble proposes and applies, and what importing or exporting a ZooKeeper
//! txn log needs.
//!
//! The two carry the same state change with different bookkeeping: ZooKeeper keeps
//! the session and the time in the TxnHeader and the kind of a node in the txn type
//! (create, createContainer, createTTL); ringkeeper keeps the kind in the ephemeral
//! owner, as both trees store it. A session's password is not in ZooKeeper's txn: it
//! derives it from the session id ([`zookeeper_password`]).

use bytes::Bytes;

use super::txn::{txn_type, MultiEntry, TxnHeader, TxnRecord, ZkTxn};
use crate::proto::codes::{CONTAINER_EPHEMERAL_OWNER, EXTENDED_OWNER_MASK, TTL_MAX_MS};
use crate::tree::Txn;

/// What a ZooKeeper txn header holds besides the txn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnContext {
    /// The session that asked for it (the header's clientId).
    pub session_id: i64,
    pub cxid: i32,
    pub zxid: i64,
    pub time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("a ZooKeeper txn of type {0} carries no record")]
    NoRecord(i32),
    #[error("ZooKeeper txn type {txn_type} does not go with a {record} record")]
    Mismatch { txn_type: i32, record: &'static str },
    #[error("a ringkeeper txn of kind {0} has no ZooKeeper form inside a multi")]
    NotInMulti(&'static str),
}

/// The password ZooKeeper gives session `session_id`: 16 bytes of a
/// `java.util.Random` seeded with the id XOR ZooKeeper's fixed secret
/// (`ZooKeeperServer.generatePasswd`), so that every member can check it.
pub fn zookeeper_password(session_id: i64) -> [u8; 16] {
    const SUPER_SECRET: i64 = 0xB341_5C00;
    const MULTIPLIER: i64 = 0x5_DEEC_E66D;
    const MASK: i64 = (1 << 48) - 1;
    let mut seed = ((session_id ^ SUPER_SECRET) ^ MULTIPLIER) & MASK;
    let mut next_int = || {
        seed = (seed.wrapping_mul(MULTIPLIER).wrapping_add(0xB)) & MASK;
        (seed >> 16) as i32
    };
    // Random.nextBytes: each int gives up to four bytes, low byte first.
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(4) {
        let mut r = next_int();
        for b in chunk {
            *b = r as u8;
            r >>= 8;
        }
    }
    out
}

fn owner_of_create(session_id: i64, ephemeral: bool) -> i64 {
    if ephemeral {
        session_id
    } else {
        0
    }
}

/// Data as the tree holds it, taken over without a copy.
fn bytes(v: Option<Vec<u8>>) -> Option<Bytes> {
    v.map(Bytes::from)
}

/// A ZooKeeper record as ringkeeper's txn (`session_id` is the header's clientId).
fn from_record(t: i32, record: TxnRecord, session_id: i64) -> Result<Txn, ConvertError> {
    use txn_type::*;
    let mismatch = |record| ConvertError::Mismatch {
        txn_type: t,
        record,
    };
    Ok(match record {
        TxnRecord::Create {
            path,
            data,
            acl,
            ephemeral,
            parent_cversion,
        } => Txn::Create {
            path,
            data: bytes(data),
            acl: acl.unwrap_or_default(),
            ephemeral_owner: owner_of_create(session_id, ephemeral),
            // CreateTxnV0 (before 3.3) had none: the parent's cversion was bumped.
            parent_cversion: parent_cversion.unwrap_or(-1),
        },
        TxnRecord::CreateContainer {
            path,
            data,
            acl,
            parent_cversion,
        } => Txn::Create {
            path,
            data: bytes(data),
            acl: acl.unwrap_or_default(),
            ephemeral_owner: CONTAINER_EPHEMERAL_OWNER,
            parent_cversion,
        },
        TxnRecord::CreateTtl {
            path,
            data,
            acl,
            parent_cversion,
            ttl,
        } => Txn::Create {
            path,
            data: bytes(data),
            acl: acl.unwrap_or_default(),
            ephemeral_owner: EXTENDED_OWNER_MASK | (ttl & TTL_MAX_MS),
            parent_cversion,
        },
        TxnRecord::Delete { path } => Txn::Delete { path },
        TxnRecord::SetData {
            path,
            data,
            version,
        } if t == SET_DATA => Txn::SetData {
            path,
            data: bytes(data),
            version,
        },
        TxnRecord::SetData { .. } => return Err(mismatch("reconfig (SetData)")),
        TxnRecord::CheckVersion { path, .. } => Txn::Check { path },
        TxnRecord::SetAcl { path, acl, version } => Txn::SetAcl {
            path,
            acl: acl.unwrap_or_default(),
            aversion: version,
        },
        TxnRecord::CreateSession { timeout_ms } => Txn::CreateSession {
            session_id,
            timeout_ms,
            passwd: zookeeper_password(session_id),
        },
        TxnRecord::CloseSession { .. } => Txn::CloseSession { session_id },
        TxnRecord::Error { err } => Txn::Error(err),
        TxnRecord::Multi(entries) => {
            // A failed multi is logged as a multi of errors, one per op.
            if entries.iter().all(|e| e.txn_type == ERROR) && !entries.is_empty() {
                let codes = entries
                    .iter()
                    .map(|e| match &e.record {
                        TxnRecord::Error { err } => Ok(*err),
                        _ => Err(mismatch("multi error entry")),
                    })
                    .collect::<Result<_, _>>()?;
                return Ok(Txn::MultiError(codes));
            }
            Txn::Multi(
                entries
                    .into_iter()
                    .map(|e| from_record(e.txn_type, e.record, session_id))
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

/// A ZooKeeper txn as ringkeeper's, with its wall-clock time.
pub fn from_zookeeper(z: ZkTxn) -> Result<(Txn, i64), ConvertError> {
    let h = z.header;
    let txn = match z.record {
        Some(r) => from_record(h.txn_type, r, h.client_id)?,
        // closeSession before 3.6 had an empty body.
        None if h.txn_type == txn_type::CLOSE_SESSION => Txn::CloseSession {
            session_id: h.client_id,
        },
        None => return Err(ConvertError::NoRecord(h.txn_type)),
    };
    Ok((txn, h.time_ms()))
}

impl TxnHeader {
    fn time_ms(&self) -> i64 {
        self.time
    }
}

/// ringkeeper's txn as ZooKeeper's type and record. `ephemerals` lists what a
/// closeSession deletes (ZooKeeper 3.6+ logs the paths).
fn to_record(txn: &Txn, session_id: i64, ephemerals: &[String]) -> (i32, TxnRecord) {
    use txn_type::*;
    let data = |d: &Option<Bytes>| d.as_ref().map(|b| b.to_vec());
    match txn {
        Txn::Create {
            path,
            data: d,
            acl,
            ephemeral_owner,
            parent_cversion,
        } => {
            let (path, data, acl) = (path.clone(), data(d), Some(acl.clone()));
            let owner = *ephemeral_owner;
            if owner == CONTAINER_EPHEMERAL_OWNER {
                (
                    CREATE_CONTAINER,
                    TxnRecord::CreateContainer {
                        path,
                        data,
                        acl,
                        parent_cversion: *parent_cversion,
                    },
                )
            } else if owner != 0 && owner & EXTENDED_OWNER_MASK == EXTENDED_OWNER_MASK {
                (
                    CREATE_TTL,
                    TxnRecord::CreateTtl {
                        path,
                        data,
                        acl,
                        parent_cversion: *parent_cversion,
                        ttl: owner & TTL_MAX_MS,
                    },
                )
            } else {
                // An ephemeral's owner is the session that created it: the header's.
                debug_assert!(
                    owner == 0 || owner == session_id,
                    "ephemeral of another session"
                );
                (
                    CREATE2,
                    TxnRecord::Create {
                        path,
                        data,
                        acl,
                        ephemeral: owner != 0,
                        parent_cversion: Some(*parent_cversion),
                    },
                )
            }
        }
        Txn::Delete { path } => (DELETE, TxnRecord::Delete { path: path.clone() }),
        Txn::SetData {
            path,
            data: d,
            version,
        } => (
            SET_DATA,
            TxnRecord::SetData {
                path: path.clone(),
                data: data(d),
                version: *version,
            },
        ),
        Txn::SetAcl {
            path,
            acl,
            aversion,
        } => (
            SET_ACL,
            TxnRecord::SetAcl {
                path: path.clone(),
                acl: Some(acl.clone()),
                version: *aversion,
            },
        ),
        // The version was checked when the multi was prepared; the txn only names the
        // path (ZooKeeper logs the version asked for, which nothing reads back).
        Txn::Check { path } => (
            CHECK,
            TxnRecord::CheckVersion {
                path: path.clone(),
                version: -1,
            },
        ),
        Txn::Multi(txns) => (
            MULTI,
            TxnRecord::Multi(
                txns.iter()
                    .map(|t| {
                        let (mut txn_type, record) = to_record(t, session_id, ephemerals);
                        // ZooKeeper 3.8's DataTree knows no create2 inside a multi (it
                        // drops the whole multi); its own leaders log create there.
                        if txn_type == CREATE2 {
                            txn_type = CREATE;
                        }
                        MultiEntry {
                            txn_type,
                            record,
                            unread: Vec::new(),
                        }
                    })
                    .collect(),
            ),
        ),
        Txn::MultiError(codes) => (
            MULTI,
            TxnRecord::Multi(
                codes
                    .iter()
                    .map(|&err| MultiEntry {
                        txn_type: ERROR,
                        record: TxnRecord::Error { err },
                        unread: Vec::new(),
                    })
                    .collect(),
            ),
        ),
        Txn::CreateSession { timeout_ms, .. } => (
            CREATE_SESSION,
            TxnRecord::CreateSession {
                timeout_ms: *timeout_ms,
            },
        ),
        Txn::CloseSession { .. } => (
            CLOSE_SESSION,
            TxnRecord::CloseSession {
                paths_to_delete: Some(ephemerals.to_vec()),
            },
        ),
        Txn::Error(err) => (ERROR, TxnRecord::Error { err: *err }),
    }
}

/// ringkeeper's txn as ZooKeeper serializes it (no digest). The session of a
/// createSession or closeSession is the txn's own; `ephemerals` are the paths a
/// closeSession deletes.
pub fn to_zookeeper(txn: &Txn, ctx: TxnContext, ephemerals: &[String]) -> ZkTxn {
    let session_id = match txn {
        Txn::CreateSession { session_id, .. } | Txn::CloseSession { session_id } => *session_id,
        _ => ctx.session_id,
    };
    let (txn_type, record) = to_record(txn, session_id, ephemerals);
    ZkTxn {
        header: TxnHeader {
            client_id: session_id,
            cxid: ctx.cxid,
            zxid: ctx.zxid,
            time: ctx.time_ms,
            txn_type,
        },
        record: Some(record),
        digest: None,
    }
}

/// ringkeeper's tree as ZooKeeper serializes a data tree (what follows a SNAP, and
/// what a ZooKeeper snapshot file holds after its header), with `sessions` (id,
/// timeout). Parents come before their children, as ZooKeeper needs when it reads;
/// each distinct ACL list is written once, the open one under ZooKeeper's key -1.
pub fn to_zookeeper_tree(
    tree: &crate::tree::DataTree,
    sessions: &[(i64, i32)],
) -> super::snapshot::ZkTree {
    use super::snapshot::{ZkNode, ZkTree};
    let open = crate::tree::acl::open_acl_unsafe();
    let mut acls: Vec<(i64, Option<Vec<crate::proto::Acl>>)> = Vec::new();
    let mut nodes = Vec::new();
    let _ = tree.for_each_node(|path, n| -> Result<(), ()> {
        let acl = n.acl();
        let acl_ref = if **acl == open {
            -1
        } else if let Some((k, _)) = acls.iter().find(|(_, a)| a.as_deref() == Some(&acl[..])) {
            *k
        } else {
            let k = acls.len() as i64 + 1;
            acls.push((k, Some(acl.to_vec())));
            k
        };
        let st = n.stored_stat();
        nodes.push(ZkNode {
            path: if path == "/" {
                String::new()
            } else {
                path.to_string()
            },
            data: n.data_slice().map(<[u8]>::to_vec),
            acl_ref,
            stat: crate::tree::snapshot::persisted_stat(&st),
        });
        Ok(())
    });
    ZkTree {
        sessions: sessions.to_vec(),
        acls,
        nodes,
    }
}

/// ZooKeeper's serialized tree (a SNAP's, or a ZooKeeper snapshot's) written as
/// ringkeeper's snapshot of `zxid` in `dir`, and opened as a tree read in place, with
/// its sessions (their passwords derived as ZooKeeper derives them). Fails on a tree
/// ZooKeeper itself would refuse: a node without its parent, an ACL key not in the
/// cache.
pub fn snapshot_from_zookeeper_tree(
    z: &super::snapshot::ZkTree,
    zxid: i64,
    dir: &std::path::Path,
) -> std::io::Result<(
    crate::tree::DataTree,
    Vec<ringkeeper_storage::snapshot::SnapSession>,
)> {
    use ringkeeper_storage::snapshot::{NodeRecord, SnapSession, Snapshot, SnapshotWriter};
    use std::collections::HashMap;
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let path_of = |p: &str| {
        if p.is_empty() {
            "/".to_string()
        } else {
            p.to_string()
        }
    };
    let mut nodes: Vec<(String, &super::snapshot::ZkNode)> =
        z.nodes.iter().map(|n| (path_of(&n.path), n)).collect();
    nodes.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut children: HashMap<&str, u32> = HashMap::new();
    for (p, _) in &nodes {
        if p != "/" {
            let parent = &p[..p.rfind('/').unwrap_or(0).max(1)];
            *children.entry(parent).or_default() += 1;
        }
    }
    let sessions: Vec<SnapSession> = z
        .sessions
        .iter()
        .map(|&(id, timeout_ms)| SnapSession {
            id,
            timeout_ms,
            passwd: zookeeper_password(id),
        })
        .collect();
    let mut w = SnapshotWriter::create(dir, zxid, &sessions, nodes.len() as u64)?;
    let mut acl_index: HashMap<i64, u32> = HashMap::new();
    let mut enc = Vec::new();
    crate::proto::Acl::encode_list(&crate::tree::acl::open_acl_unsafe(), &mut enc);
    acl_index.insert(-1, w.acl_list(&enc));
    for (key, list) in &z.acls {
        let mut enc = Vec::new();
        crate::proto::Acl::encode_list(list.as_deref().unwrap_or_default(), &mut enc);
        acl_index.insert(*key, w.acl_list(&enc));
    }
    for (path, n) in &nodes {
        let acl = *acl_index.get(&n.acl_ref).ok_or_else(|| {
            bad(format!(
                "{path} names ACL {} which the tree does not hold",
                n.acl_ref
            ))
        })?;
        w.node(&NodeRecord {
            path,
            data: n.data.as_deref(),
            acl,
            child_count: children.get(path.as_str()).copied().unwrap_or(0),
            stat: n.stat,
        })?;
    }
    let path = w
        .finish(|| true)?
        .ok_or_else(|| bad(format!("the snapshot of {zxid:#x} was not published")))?;
    let snap = Snapshot::open(&path).map_err(|e| bad(e.to_string()))?;
    crate::tree::DataTree::from_snapshot(snap).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::acl::open_acl_unsafe;

    fn ctx(session_id: i64) -> TxnContext {
        TxnContext {
            session_id,
            cxid: 7,
            zxid: 0x1_0000_0005,
            time_ms: 1_700_000_000_123,
        }
    }

    fn create(owner: i64) -> Txn {
        Txn::Create {
            path: "/a/b".into(),
            data: Some(Bytes::from_static(b"x")),
            acl: open_acl_unsafe(),
            ephemeral_owner: owner,
            parent_cversion: 4,
        }
    }

    #[test]
    fn every_txn_kind_goes_to_zookeeper_bytes_and_back() {
        let s = 0x1000_0000_0000_0042;
        let txns = vec![
            create(0),
            create(s),
            create(CONTAINER_EPHEMERAL_OWNER),
            create(EXTENDED_OWNER_MASK | 60_000),
            Txn::Delete { path: "/a".into() },
            Txn::SetData {
                path: "/a".into(),
                data: None,
                version: 3,
            },
            Txn::SetAcl {
                path: "/a".into(),
                acl: open_acl_unsafe(),
                aversion: 2,
            },
            Txn::Multi(vec![
                create(0),
                Txn::Check { path: "/a".into() },
                Txn::Delete {
                    path: "/a/b".into(),
                },
            ]),
            Txn::MultiError(vec![0, -101, -2]),
            Txn::CreateSession {
                session_id: s,
                timeout_ms: 30_000,
                passwd: zookeeper_password(s),
            },
            Txn::CloseSession { session_id: s },
            Txn::Error(-110),
        ];
        for txn in txns {
            let z = to_zookeeper(&txn, ctx(s), &["/eph".to_string()]);
            let bytes = z.to_bytes();
            let back = ZkTxn::decode(&bytes).unwrap();
            assert_eq!(back, z);
            assert_eq!(
                from_zookeeper(back).unwrap(),
                (txn.clone(), ctx(s).time_ms),
                "{txn:?}"
            );
        }
    }

    #[test]
    fn zookeepers_kinds_of_create_keep_their_meaning() {
        let z = to_zookeeper(&create(CONTAINER_EPHEMERAL_OWNER), ctx(5), &[]);
        assert_eq!(z.header.txn_type, txn_type::CREATE_CONTAINER);
        let z = to_zookeeper(&create(EXTENDED_OWNER_MASK | 1000), ctx(5), &[]);
        assert!(matches!(
            z.record,
            Some(TxnRecord::CreateTtl { ttl: 1000, .. })
        ));
        let z = to_zookeeper(&create(5), ctx(5), &[]);
        assert!(matches!(
            z.record,
            Some(TxnRecord::Create {
                ephemeral: true,
                ..
            })
        ));
        assert_eq!(z.header.client_id, 5);
        // Inside a multi a create is logged as create: ZooKeeper 3.8.0 drops a whole
        // multi holding a create2 (its DataTree does not know the type there).
        let z = to_zookeeper(&Txn::Multi(vec![create(0), create(5)]), ctx(5), &[]);
        let Some(TxnRecord::Multi(entries)) = z.record else {
            panic!("not a multi: {z:?}")
        };
        assert!(entries.iter().all(|e| e.txn_type == txn_type::CREATE));
        // A pre-3.3 create (no parentCVersion) and a pre-3.6 closeSession (no body).
        let old = ZkTxn {
            header: TxnHeader {
                client_id: 9,
                cxid: 1,
                zxid: 2,
                time: 3,
                txn_type: txn_type::CLOSE_SESSION,
            },
            record: None,
            digest: None,
        };
        assert_eq!(
            from_zookeeper(old).unwrap().0,
            Txn::CloseSession { session_id: 9 }
        );
    }

    #[test]
    fn a_tree_goes_out_in_zookeepers_layout() {
        use crate::proto::codes::perms;
        use crate::proto::{Acl, Id};
        let mut tree = crate::tree::DataTree::new();
        let read_only = vec![Acl {
            perms: perms::READ,
            id: Id::new("world", "anyone"),
        }];
        let c = |path: &str, acl: Vec<Acl>, owner| Txn::Create {
            path: path.into(),
            data: Some(Bytes::from(path.to_string())),
            acl,
            ephemeral_owner: owner,
            parent_cversion: 1,
        };
        tree.apply(&c("/a", open_acl_unsafe(), 0), 5, 100, &mut Vec::new());
        tree.apply(&c("/a/b", read_only.clone(), 0), 6, 101, &mut Vec::new());
        tree.apply(&c("/a/c", read_only.clone(), 0x77), 7, 102, &mut Vec::new());
        let z = to_zookeeper_tree(&tree, &[(0x77, 4000)]);
        let paths: Vec<&str> = z.nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(paths[0], "", "the root first, unnamed");
        for (i, p) in paths.iter().enumerate().skip(1) {
            let parent = &p[..p.rfind('/').unwrap()];
            assert!(paths[..i].contains(&parent), "{p} before its parent");
        }
        assert_eq!(
            z.acls,
            vec![(1, Some(read_only))],
            "one list written once; open is -1"
        );
        let b = z.nodes.iter().find(|n| n.path == "/a/b").unwrap();
        assert_eq!(
            (b.acl_ref, b.stat.czxid, b.data.as_deref()),
            (1, 6, Some(&b"/a/b"[..]))
        );
        let c = z.nodes.iter().find(|n| n.path == "/a/c").unwrap();
        assert_eq!(c.stat.ephemeral_owner, 0x77);
        // ZooKeeper's reader takes it back whole.
        let mut bytes = Vec::new();
        z.encode(&mut bytes);
        let back =
            super::super::snapshot::ZkTree::decode(&mut crate::proto::jute::Reader::new(&bytes))
                .unwrap();
        assert_eq!(back, z);
    }

    #[test]
    fn passwords_are_zookeepers() {
        // new java.util.Random(id ^ 0xB3415C00L).nextBytes(new byte[16]), printed by
        // OpenJDK 17: the password a ZooKeeper server hands session `id`.
        let hex = |p: [u8; 16]| p.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(zookeeper_password(42)),
            "c813ee495620c3a68794ef27a239e8a9"
        );
        assert_eq!(
            hex(zookeeper_password(0x1000_0000_0000_0042)),
            "922d61495537b21b84db9d39790dd5e3"
        );
        assert_eq!(
            hex(zookeeper_password(-1)),
            "20f62cb5648dc2d771471c8a2486a9ee"
        );
    }
}
