//! ZooKeeper's txn serialization (zookeeper.jute's `org.apache.zookeeper.txn` module):
//! a TxnHeader, the record its type calls for, and since 3.6 a TxnDigest. This is
//! what a PROPOSAL or INFORM carries and what ZooKeeper's txn log files hold, laid out
//! as `Util.marshallTxnEntry` writes it.
//!
//! Decoding keeps every distinction the bytes make (null against empty, a create
//! with or without parentCVersion), so that encoding what was decoded gives the same
//! bytes back.

use bytes::BufMut;

use crate::proto::jute::{DecodeError, JuteWrite, Reader};
use crate::proto::Acl;

/// The txn types (ZooDefs.OpCode) a TxnHeader may carry.
pub mod txn_type {
    pub const ERROR: i32 = -1;
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const SET_DATA: i32 = 5;
    pub const SET_ACL: i32 = 7;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const CREATE_SESSION: i32 = -10;
    pub const CLOSE_SESSION: i32 = -11;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    pub client_id: i64,
    pub cxid: i32,
    pub zxid: i64,
    /// Wall-clock ms of the leader that made the txn.
    pub time: i64,
    pub txn_type: i32,
}

impl TxnHeader {
    pub const BYTES: usize = 8 + 4 + 8 + 8 + 4;

    pub fn decode(r: &mut Reader) -> Result<TxnHeader, DecodeError> {
        Ok(TxnHeader {
            client_id: r.i64()?,
            cxid: r.i32()?,
            zxid: r.i64()?,
            time: r.i64()?,
            txn_type: r.i32()?,
        })
    }

    pub fn encode(&self, b: &mut impl BufMut) {
        b.put_i64(self.client_id);
        b.put_i32(self.cxid);
        b.put_i64(self.zxid);
        b.put_i64(self.time);
        b.put_i32(self.txn_type);
    }
}

/// The data tree's digest after the txn (3.6+, when digests are enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnDigest {
    pub version: i32,
    pub tree_digest: i64,
}

impl TxnDigest {
    pub const BYTES: usize = 4 + 8;
}

fn decode_acls(r: &mut Reader) -> Result<Option<Vec<Acl>>, DecodeError> {
    // An ACL is at least perms + two empty strings.
    match r.vec_len_opt(12)? {
        None => Ok(None),
        Some(n) => (0..n)
            .map(|_| Acl::decode(r))
            .collect::<Result<_, _>>()
            .map(Some),
    }
}

/// The bytes `encode_acls` writes.
fn acls_len(acls: &Option<Vec<Acl>>) -> usize {
    4 + acls.as_ref().map_or(0, |v| {
        v.iter()
            .map(|a| 12 + a.id.scheme.len() + a.id.id.len())
            .sum::<usize>()
    })
}

fn encode_acls(b: &mut impl BufMut, acls: &Option<Vec<Acl>>) {
    match acls {
        None => b.put_i32(-1),
        Some(v) => {
            b.put_i32(v.len() as i32);
            for a in v {
                a.encode(b);
            }
        }
    }
}

fn decode_data(r: &mut Reader) -> Result<Option<Vec<u8>>, DecodeError> {
    Ok(r.buffer_opt()?.map(<[u8]>::to_vec))
}

/// A txn record, by the header's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRecord {
    /// create, create2. `parent_cversion` is None in the pre-3.3 layout (CreateTxnV0).
    Create {
        path: String,
        data: Option<Vec<u8>>,
        acl: Option<Vec<Acl>>,
        ephemeral: bool,
        parent_cversion: Option<i32>,
    },
    CreateContainer {
        path: String,
        data: Option<Vec<u8>>,
        acl: Option<Vec<Acl>>,
        parent_cversion: i32,
    },
    CreateTtl {
        path: String,
        data: Option<Vec<u8>>,
        acl: Option<Vec<Acl>>,
        parent_cversion: i32,
        ttl: i64,
    },
    /// delete, deleteContainer.
    Delete {
        path: String,
    },
    /// setData, reconfig.
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    CheckVersion {
        path: String,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Option<Vec<Acl>>,
        version: i32,
    },
    CreateSession {
        timeout_ms: i32,
    },
    /// closeSession, with the ephemerals to delete (3.6+; None: the older empty body).
    CloseSession {
        paths_to_delete: Option<Vec<String>>,
    },
    Error {
        err: i32,
    },
    Multi(Vec<MultiEntry>),
}

/// One txn of a MultiTxn: its type and its record, which ZooKeeper nests as a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiEntry {
    pub txn_type: i32,
    pub record: TxnRecord,
    /// Bytes of the buffer after the record, which ZooKeeper does not read either.
    /// They occur on the wire: applying a failed multi turns each sub-txn's type into
    /// error in place, keeping its record's bytes, and a leader that later sends that
    /// txn from its in-memory log (a DIFF) sends it so: an error whose buffer is, say,
    /// a CreateTxn, of which a reader takes the first int as the error code.
    pub unread: Vec<u8>,
}

impl TxnRecord {
    /// Decodes the record of a txn of type `txn_type`, reading the whole of `r`'s
    /// record (the caller checks what follows).
    fn decode(txn_type: i32, r: &mut Reader) -> Result<TxnRecord, DecodeError> {
        use txn_type::*;
        Ok(match txn_type {
            CREATE | CREATE2 => {
                let path = r.string()?;
                let data = decode_data(r)?;
                let acl = decode_acls(r)?;
                let ephemeral = r.bool()?;
                // CreateTxnV0 ends here; CreateTxn adds parentCVersion.
                let parent_cversion = if r.remaining() >= 4 {
                    Some(r.i32()?)
                } else {
                    None
                };
                TxnRecord::Create {
                    path,
                    data,
                    acl,
                    ephemeral,
                    parent_cversion,
                }
            }
            CREATE_CONTAINER => TxnRecord::CreateContainer {
                path: r.string()?,
                data: decode_data(r)?,
                acl: decode_acls(r)?,
                parent_cversion: r.i32()?,
            },
            CREATE_TTL => TxnRecord::CreateTtl {
                path: r.string()?,
                data: decode_data(r)?,
                acl: decode_acls(r)?,
                parent_cversion: r.i32()?,
                ttl: r.i64()?,
            },
            DELETE | DELETE_CONTAINER => TxnRecord::Delete { path: r.string()? },
            SET_DATA | RECONFIG => TxnRecord::SetData {
                path: r.string()?,
                data: decode_data(r)?,
                version: r.i32()?,
            },
            CHECK => TxnRecord::CheckVersion {
                path: r.string()?,
                version: r.i32()?,
            },
            SET_ACL => TxnRecord::SetAcl {
                path: r.string()?,
                acl: decode_acls(r)?,
                version: r.i32()?,
            },
            CREATE_SESSION => TxnRecord::CreateSession {
                timeout_ms: r.i32()?,
            },
            CLOSE_SESSION => {
                let paths_to_delete = match r.vec_len_opt(4)? {
                    None => None,
                    Some(n) => Some((0..n).map(|_| r.string()).collect::<Result<_, _>>()?),
                };
                TxnRecord::CloseSession { paths_to_delete }
            }
            ERROR => TxnRecord::Error { err: r.i32()? },
            MULTI => {
                let n = r.vec_len(8)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = r.i32()?;
                    let body = r.buffer()?;
                    let mut inner = Reader::new(body);
                    let record = TxnRecord::decode(t, &mut inner)?;
                    let unread = inner.rest().to_vec();
                    entries.push(MultiEntry {
                        txn_type: t,
                        record,
                        unread,
                    });
                }
                TxnRecord::Multi(entries)
            }
            other => return Err(DecodeError::UnknownOpCode(other)),
        })
    }

    /// The bytes `encode` writes.
    fn encoded_len(&self) -> usize {
        let bytes = |d: &Option<Vec<u8>>| 4 + d.as_ref().map_or(0, Vec::len);
        match self {
            TxnRecord::Create {
                path,
                data,
                acl,
                parent_cversion,
                ..
            } => {
                let cversion = parent_cversion.map_or(0, |_| 4);
                4 + path.len() + bytes(data) + acls_len(acl) + 1 + cversion
            }
            TxnRecord::CreateContainer {
                path, data, acl, ..
            } => 4 + path.len() + bytes(data) + acls_len(acl) + 4,
            TxnRecord::CreateTtl {
                path, data, acl, ..
            } => 4 + path.len() + bytes(data) + acls_len(acl) + 4 + 8,
            TxnRecord::Delete { path } => 4 + path.len(),
            TxnRecord::SetData { path, data, .. } => 4 + path.len() + bytes(data) + 4,
            TxnRecord::CheckVersion { path, .. } => 4 + path.len() + 4,
            TxnRecord::SetAcl { path, acl, .. } => 4 + path.len() + acls_len(acl) + 4,
            TxnRecord::CreateSession { .. } | TxnRecord::Error { .. } => 4,
            TxnRecord::CloseSession { paths_to_delete } => {
                4 + paths_to_delete
                    .as_ref()
                    .map_or(0, |p| p.iter().map(|s| 4 + s.len()).sum())
            }
            TxnRecord::Multi(entries) => {
                4 + entries
                    .iter()
                    .map(|e| 8 + e.record.encoded_len() + e.unread.len())
                    .sum::<usize>()
            }
        }
    }

    pub fn encode(&self, b: &mut Vec<u8>) {
        match self {
            TxnRecord::Create {
                path,
                data,
                acl,
                ephemeral,
                parent_cversion,
            } => {
                b.put_string(path);
                b.put_buffer_opt(data.as_deref());
                encode_acls(b, acl);
                b.put_bool_jute(*ephemeral);
                if let Some(v) = parent_cversion {
                    b.put_i32(*v);
                }
            }
            TxnRecord::CreateContainer {
                path,
                data,
                acl,
                parent_cversion,
            } => {
                b.put_string(path);
                b.put_buffer_opt(data.as_deref());
                encode_acls(b, acl);
                b.put_i32(*parent_cversion);
            }
            TxnRecord::CreateTtl {
                path,
                data,
                acl,
                parent_cversion,
                ttl,
            } => {
                b.put_string(path);
                b.put_buffer_opt(data.as_deref());
                encode_acls(b, acl);
                b.put_i32(*parent_cversion);
                b.put_i64(*ttl);
            }
            TxnRecord::Delete { path } => b.put_string(path),
            TxnRecord::SetData {
                path,
                data,
                version,
            } => {
                b.put_string(path);
                b.put_buffer_opt(data.as_deref());
                b.put_i32(*version);
            }
            TxnRecord::CheckVersion { path, version } => {
                b.put_string(path);
                b.put_i32(*version);
            }
            TxnRecord::SetAcl { path, acl, version } => {
                b.put_string(path);
                encode_acls(b, acl);
                b.put_i32(*version);
            }
            TxnRecord::CreateSession { timeout_ms } => b.put_i32(*timeout_ms),
            TxnRecord::CloseSession { paths_to_delete } => match paths_to_delete {
                None => b.put_i32(-1),
                Some(p) => b.put_strings(p),
            },
            TxnRecord::Error { err } => b.put_i32(*err),
            TxnRecord::Multi(entries) => {
                b.put_i32(entries.len() as i32);
                let mut inner = Vec::new();
                for e in entries {
                    inner.clear();
                    e.record.encode(&mut inner);
                    inner.extend_from_slice(&e.unread);
                    b.put_i32(e.txn_type);
                    b.put_buffer(&inner);
                }
            }
        }
    }
}

/// A whole txn entry: header, record (none for the types without one) and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkTxn {
    pub header: TxnHeader,
    pub record: Option<TxnRecord>,
    pub digest: Option<TxnDigest>,
}

impl ZkTxn {
    /// Decodes a whole entry (the bytes of a PROPOSAL's data, or of one log record).
    ///
    /// A closeSession's body is a CloseSessionTxn since 3.6 and empty before (and with
    /// `zookeeper.closeSessionTxn.enabled=false`); the bytes tell which: the record is
    /// taken if what follows it is nothing or a digest.
    pub fn decode(bytes: &[u8]) -> Result<ZkTxn, DecodeError> {
        let mut r = Reader::new(bytes);
        let header = TxnHeader::decode(&mut r)?;
        let body = r.rest();
        let attempt = |with_record: bool| -> Result<ZkTxn, DecodeError> {
            let mut r = Reader::new(body);
            let record = if with_record {
                Some(TxnRecord::decode(header.txn_type, &mut r)?)
            } else {
                None
            };
            let digest = match r.remaining() {
                0 => None,
                TxnDigest::BYTES => Some(TxnDigest {
                    version: r.i32()?,
                    tree_digest: r.i64()?,
                }),
                n => return Err(DecodeError::Trailing(n)),
            };
            Ok(ZkTxn {
                header,
                record,
                digest,
            })
        };
        match attempt(true) {
            Ok(t) => Ok(t),
            Err(e) if header.txn_type == txn_type::CLOSE_SESSION => attempt(false).map_err(|_| e),
            Err(e) => Err(e),
        }
    }

    pub fn encode(&self, b: &mut Vec<u8>) {
        self.header.encode(b);
        if let Some(rec) = &self.record {
            rec.encode(b);
        }
        if let Some(d) = &self.digest {
            b.put_i32(d.version);
            b.put_i64(d.tree_digest);
        }
    }

    /// The bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        TxnHeader::BYTES
            + self.record.as_ref().map_or(0, TxnRecord::encoded_len)
            + self.digest.map_or(0, |_| TxnDigest::BYTES)
    }

    /// The entry's bytes, in one allocation of the exact size.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.encoded_len());
        self.encode(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(txn_type: i32) -> TxnHeader {
        TxnHeader {
            client_id: 0x1000_0000_0000_0001,
            cxid: 7,
            zxid: 0x1_0000_0005,
            time: 1_796_000_000_000,
            txn_type,
        }
    }

    fn acl() -> Option<Vec<Acl>> {
        Some(vec![Acl {
            perms: 31,
            id: crate::proto::Id::new("world", "anyone"),
        }])
    }

    fn samples() -> Vec<ZkTxn> {
        use txn_type::*;
        let digest = Some(TxnDigest {
            version: 2,
            tree_digest: 0x1234_5678,
        });
        let records = vec![
            (
                CREATE2,
                Some(TxnRecord::Create {
                    path: "/a".into(),
                    data: Some(b"x".to_vec()),
                    acl: acl(),
                    ephemeral: true,
                    parent_cversion: Some(3),
                }),
            ),
            (
                CREATE,
                Some(TxnRecord::Create {
                    path: "/old".into(),
                    data: None,
                    acl: acl(),
                    ephemeral: false,
                    parent_cversion: None,
                }),
            ),
            (
                CREATE_TTL,
                Some(TxnRecord::CreateTtl {
                    path: "/t".into(),
                    data: Some(Vec::new()),
                    acl: acl(),
                    parent_cversion: 1,
                    ttl: 3_600_000,
                }),
            ),
            (
                CREATE_SESSION,
                Some(TxnRecord::CreateSession { timeout_ms: 30_000 }),
            ),
            (
                CLOSE_SESSION,
                Some(TxnRecord::CloseSession {
                    paths_to_delete: Some(vec!["/e1".into(), "/e2".into()]),
                }),
            ),
            (CLOSE_SESSION, None),
            (
                MULTI,
                Some(TxnRecord::Multi(vec![
                    MultiEntry {
                        txn_type: CHECK,
                        record: TxnRecord::CheckVersion {
                            path: "/a".into(),
                            version: 0,
                        },
                        unread: vec![],
                    },
                    MultiEntry {
                        txn_type: SET_DATA,
                        record: TxnRecord::SetData {
                            path: "/a".into(),
                            data: Some(b"y".to_vec()),
                            version: 1,
                        },
                        unread: vec![],
                    },
                    MultiEntry {
                        txn_type: ERROR,
                        record: TxnRecord::Error { err: -101 },
                        unread: vec![],
                    },
                    // A sub-txn turned into an error over its create record.
                    MultiEntry {
                        txn_type: ERROR,
                        record: TxnRecord::Error { err: 2 },
                        unread: b"/a\0\0\0\x01x".to_vec(),
                    },
                ])),
            ),
            (
                SET_ACL,
                Some(TxnRecord::SetAcl {
                    path: "/a".into(),
                    acl: acl(),
                    version: 0,
                }),
            ),
            (DELETE, Some(TxnRecord::Delete { path: "/a".into() })),
        ];
        let mut out = Vec::new();
        for (t, record) in records {
            // A pre-3.3 create never comes with a digest (3.6+).
            let old_create = matches!(
                record,
                Some(TxnRecord::Create {
                    parent_cversion: None,
                    ..
                })
            );
            for d in [None, digest] {
                if old_create && d.is_some() {
                    continue;
                }
                out.push(ZkTxn {
                    header: header(t),
                    record: record.clone(),
                    digest: d,
                });
            }
        }
        out
    }

    #[test]
    fn every_txn_kind_round_trips_with_and_without_a_digest() {
        for t in samples() {
            let bytes = t.to_bytes();
            assert_eq!(ZkTxn::decode(&bytes).unwrap(), t, "{t:?}");
            assert_eq!(bytes.len(), t.encoded_len(), "{t:?}");
        }
    }

    #[test]
    fn a_create_session_is_header_timeout_digest() {
        let t = ZkTxn {
            header: header(txn_type::CREATE_SESSION),
            record: Some(TxnRecord::CreateSession { timeout_ms: 30_000 }),
            digest: Some(TxnDigest {
                version: 2,
                tree_digest: 5,
            }),
        };
        let b = t.to_bytes();
        assert_eq!(b.len(), TxnHeader::BYTES + 4 + TxnDigest::BYTES);
        assert_eq!(
            &b[TxnHeader::BYTES..TxnHeader::BYTES + 4],
            &30_000i32.to_be_bytes()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(t) = ZkTxn::decode(&bytes) {
                // Whatever decodes re-encodes to bytes that decode the same.
                let again = t.to_bytes();
                prop_assert_eq!(again.len(), t.encoded_len());
                prop_assert_eq!(ZkTxn::decode(&again).unwrap(), t);
            }
        }
    }
}
