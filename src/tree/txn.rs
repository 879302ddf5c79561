//! Transactions: the deterministic state changes the broadcast core orders, logs and
//! applies. A txn carries everything needed to replay it (the outcome of every check
//! was decided when it was prepared).

use std::sync::Arc;

use bytes::Bytes;

use crate::proto::{Acl, EventType, Stat};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    Create {
        path: String,
        data: Option<Bytes>,
        acl: Vec<Acl>,
        ephemeral_owner: i64,
        parent_cversion: i32,
    },
    Delete {
        path: String,
    },
    SetData {
        path: String,
        data: Option<Bytes>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        aversion: i32,
    },
    Check {
        path: String,
    },
    Multi(Vec<Txn>),
    /// A multi that failed: the per-op error codes.
    MultiError(Vec<i32>),
    CreateSession {
        session_id: i64,
        timeout_ms: i32,
        /// Logged so that a restart can honour the password clients already hold.
        passwd: [u8; crate::session::table::PASSWD_BYTES],
    },
    CloseSession {
        session_id: i64,
    },
    /// A rejected write; it still consumes a zxid, as in ZooKeeper.
    Error(i32),
}

/// What applying a txn produced, for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    Created { path: String, stat: Stat },
    Stat(Stat),
    Multi(Vec<Applied>),
}

/// A watch trigger: an event on a path, fired to the sessions watching it that may
/// READ the node under `acl` (the changed node's ACL, or the parent's for
/// NodeChildrenChanged), as ZooKeeper does since CVE-2024-23944.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Inline when short, as the overlay's keys: most writes allocate nothing for it.
    pub path: super::Name,
    pub event: EventType,
    pub acl: Arc<Vec<Acl>>,
}

impl Trigger {
    pub fn new(path: &str, event: EventType, acl: Arc<Vec<Acl>>) -> Trigger {
        Trigger {
            path: super::Name::new(path),
            event,
            acl,
        }
    }
}

/// Who asked for a txn: ZooKeeper's TxnHeader clientId and cxid. Logged with the txn,
/// so a txn read back from the log can be sent to a learner as ZooKeeper would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    pub session_id: i64,
    pub cxid: i32,
}

impl Origin {
    /// What a record logged without its origin (before it was logged) can say of
    /// it: a session's own txns and an ephemeral's create name the session; cxid 0.
    pub fn derived(txn: &Txn) -> Origin {
        let session_id = match txn {
            Txn::CreateSession { session_id, .. } | Txn::CloseSession { session_id } => *session_id,
            Txn::Create {
                ephemeral_owner, ..
            } if *ephemeral_owner > 0 => *ephemeral_owner,
            Txn::Multi(txns) => txns
                .iter()
                .map(|t| Origin::derived(t).session_id)
                .find(|s| *s != 0)
                .unwrap_or(0),
            _ => 0,
        };
        Origin {
            session_id,
            cxid: 0,
        }
    }
}

/// A txn as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub time_ms: i64,
    pub txn: Txn,
    pub origin: Origin,
}

/// The encoding of a txn as the log stores it: its wall-clock time, a tag and the
/// txn's fields in jute, then its origin (session, cxid; absent from records written
/// before origins were logged). Replaying `(zxid, time, txn)` in zxid order rebuilds
/// the tree.
impl super::DataTree {
    /// Applies a txn as the log holds it (see `Txn::encode_logged`), replayed after a
    /// snapshot: at recovery, and when the core's tree is rebuilt on a new snapshot.
    /// A txn that does not fit the tree (its node missing, its parent missing, a node
    /// with children deleted: the log and the snapshot disagree, or the log is not
    /// ours) is an error here, found before the txn changes anything. Within a multi,
    /// the ops before the one that does not fit are applied: the caller drops the tree.
    pub fn apply_logged(
        &mut self,
        zxid: i64,
        payload: &[u8],
        triggers: &mut Vec<Trigger>,
    ) -> Result<Logged, String> {
        let logged = Txn::decode_logged(payload).map_err(|e| format!("undecodable txn: {e}"))?;
        if zxid < self.last_zxid {
            return Err(format!(
                "zxid {zxid:#x} comes after {:#x}: zxids go backwards",
                self.last_zxid
            ));
        }
        self.apply_fitting(&logged.txn, zxid, logged.time_ms, triggers)
            .map_err(|what| format!("does not fit the recovered tree ({what})"))?;
        Ok(logged)
    }

    fn apply_fitting(
        &mut self,
        txn: &Txn,
        zxid: i64,
        time_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Result<(), String> {
        match txn {
            Txn::Multi(txns) => {
                self.last_zxid = zxid;
                for t in txns {
                    self.apply_fitting(t, zxid, time_ms, triggers)?;
                }
            }
            other => {
                self.fits(other)?;
                self.apply(other, zxid, time_ms, triggers);
            }
        }
        Ok(())
    }

    /// Whether `apply` can apply `txn` (not a multi) to this tree: every node it
    /// changes is there, every node it makes is not and has a parent that takes
    /// children, every node it deletes has none.
    fn fits(&self, txn: &Txn) -> Result<(), String> {
        let valid =
            |path: &str| super::path::validate(path).map_err(|e| format!("path {path:?}: {e}"));
        let existing = |path: &str| {
            valid(path)?;
            self.node(path).ok_or_else(|| format!("{path} is missing"))
        };
        let deletable = |path: &str| -> Result<(), String> {
            if path == "/" {
                return Err("the root deleted".into());
            }
            if existing(path)?.has_children() {
                return Err(format!("{path} deleted with children"));
            }
            Ok(())
        };
        match txn {
            Txn::Create { path, .. } => {
                valid(path)?;
                if path == "/" || self.node(path).is_some() {
                    return Err(format!("{path} created again"));
                }
                let parent = existing(super::path::parent(path))?;
                if super::node_kind(parent.stored_stat().ephemeral_owner)
                    == super::NodeKind::Ephemeral
                {
                    return Err(format!("{path} created under an ephemeral node"));
                }
            }
            Txn::Delete { path } => deletable(path)?,
            Txn::SetData { path, .. } | Txn::SetAcl { path, .. } => {
                existing(path)?;
            }
            Txn::CloseSession { session_id } => {
                for p in self.ephemerals_of(*session_id) {
                    deletable(&p)?;
                }
            }
            Txn::Check { .. }
            | Txn::CreateSession { .. }
            | Txn::Error(_)
            | Txn::MultiError(_)
            | Txn::Multi(_) => {}
        }
        Ok(())
    }
}

mod codec {
    use bytes::BufMut;

    use super::{Logged, Origin, Txn};
    use crate::proto::jute::{to_bytes, DecodeError, JuteWrite, Reader};
    use crate::proto::Acl;

    const CREATE: u8 = 1;
    const DELETE: u8 = 2;
    const SET_DATA: u8 = 3;
    const SET_ACL: u8 = 4;
    const CHECK: u8 = 5;
    const MULTI: u8 = 6;
    const MULTI_ERROR: u8 = 7;
    const CREATE_SESSION: u8 = 8;
    const CLOSE_SESSION: u8 = 9;
    const ERROR: u8 = 10;

    impl Txn {
        /// Appends `time_ms`, the txn and its origin.
        pub fn encode_logged(&self, time_ms: i64, origin: Origin, out: &mut Vec<u8>) {
            out.put_i64(time_ms);
            self.encode(out);
            out.put_i64(origin.session_id);
            out.put_i32(origin.cxid);
        }

        /// The session a logged closeSession closes, read without decoding the rest;
        /// None for any other txn.
        pub fn logged_close_session(b: &[u8]) -> Option<i64> {
            let mut r = Reader::new(b.get(8..)?);
            (r.u8().ok()? == CLOSE_SESSION).then(|| r.i64().ok())?
        }

        /// Decodes what [`Txn::encode_logged`] wrote (or, without the origin, what
        /// it wrote before origins were logged: the origin is then derived).
        pub fn decode_logged(b: &[u8]) -> Result<Logged, DecodeError> {
            let mut r = Reader::new(b);
            let time_ms = r.i64()?;
            let txn = Txn::decode(&mut r, true)?;
            let origin = if r.remaining() == 0 {
                Origin::derived(&txn)
            } else {
                Origin {
                    session_id: r.i64()?,
                    cxid: r.i32()?,
                }
            };
            r.finish()?;
            Ok(Logged {
                time_ms,
                txn,
                origin,
            })
        }

        fn encode(&self, out: &mut Vec<u8>) {
            match self {
                Txn::Create {
                    path,
                    data,
                    acl,
                    ephemeral_owner,
                    parent_cversion,
                } => {
                    out.put_u8(CREATE);
                    out.put_string(path);
                    out.put_buffer_opt(data.as_deref());
                    Acl::encode_list(acl, out);
                    out.put_i64(*ephemeral_owner);
                    out.put_i32(*parent_cversion);
                }
                Txn::Delete { path } => {
                    out.put_u8(DELETE);
                    out.put_string(path);
                }
                Txn::SetData {
                    path,
                    data,
                    version,
                } => {
                    out.put_u8(SET_DATA);
                    out.put_string(path);
                    out.put_buffer_opt(data.as_deref());
                    out.put_i32(*version);
                }
                Txn::SetAcl {
                    path,
                    acl,
                    aversion,
                } => {
                    out.put_u8(SET_ACL);
                    out.put_string(path);
                    Acl::encode_list(acl, out);
                    out.put_i32(*aversion);
                }
                Txn::Check { path } => {
                    out.put_u8(CHECK);
                    out.put_string(path);
                }
                Txn::Multi(txns) => {
                    out.put_u8(MULTI);
                    out.put_i32(txns.len() as i32);
                    for t in txns {
                        t.encode(out);
                    }
                }
                Txn::MultiError(codes) => {
                    out.put_u8(MULTI_ERROR);
                    out.put_i32(codes.len() as i32);
                    for c in codes {
                        out.put_i32(*c);
                    }
                }
                Txn::CreateSession {
                    session_id,
                    timeout_ms,
                    passwd,
                } => {
                    out.put_u8(CREATE_SESSION);
                    out.put_i64(*session_id);
                    out.put_i32(*timeout_ms);
                    out.put_slice(passwd);
                }
                Txn::CloseSession { session_id } => {
                    out.put_u8(CLOSE_SESSION);
                    out.put_i64(*session_id);
                }
                Txn::Error(code) => {
                    out.put_u8(ERROR);
                    out.put_i32(*code);
                }
            }
        }

        /// `top` is false inside a multi, which cannot nest.
        fn decode(r: &mut Reader, top: bool) -> Result<Txn, DecodeError> {
            let tag = r.u8()?;
            Ok(match tag {
                CREATE => Txn::Create {
                    path: r.string()?,
                    data: r.buffer_opt()?.map(to_bytes),
                    acl: Acl::decode_list(r)?,
                    ephemeral_owner: r.i64()?,
                    parent_cversion: r.i32()?,
                },
                DELETE => Txn::Delete { path: r.string()? },
                SET_DATA => Txn::SetData {
                    path: r.string()?,
                    data: r.buffer_opt()?.map(to_bytes),
                    version: r.i32()?,
                },
                SET_ACL => Txn::SetAcl {
                    path: r.string()?,
                    acl: Acl::decode_list(r)?,
                    aversion: r.i32()?,
                },
                CHECK => Txn::Check { path: r.string()? },
                MULTI if top => {
                    let n = r.vec_len(2)?;
                    let mut txns = Vec::with_capacity(n);
                    for _ in 0..n {
                        txns.push(Txn::decode(r, false)?);
                    }
                    Txn::Multi(txns)
                }
                MULTI_ERROR => {
                    let n = r.vec_len(4)?;
                    Txn::MultiError((0..n).map(|_| r.i32()).collect::<Result<_, _>>()?)
                }
                CREATE_SESSION => Txn::CreateSession {
                    session_id: r.i64()?,
                    timeout_ms: r.i32()?,
                    passwd: r.array()?,
                },
                CLOSE_SESSION => Txn::CloseSession {
                    session_id: r.i64()?,
                },
                ERROR => Txn::Error(r.i32()?),
                other => {
                    return Err(DecodeError::BadValue {
                        field: "txn type",
                        value: other as i64,
                    })
                }
            })
        }
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;
    use crate::proto::Id;
    use proptest::prelude::*;

    fn arb_simple() -> impl Strategy<Value = Txn> {
        let path = "(/[a-z0-9]{1,4}){1,3}";
        let data =
            prop::option::of(prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from));
        let acl = prop::collection::vec(
            (0..32i32, "[a-z]{1,6}", "[a-z:0-9]{0,8}").prop_map(|(perms, s, i)| Acl {
                perms,
                id: Id { scheme: s, id: i },
            }),
            0..3,
        );
        prop_oneof![
            (path, data.clone(), acl.clone(), any::<i64>(), any::<i32>()).prop_map(
                |(path, data, acl, ephemeral_owner, parent_cversion)| Txn::Create {
                    path,
                    data,
                    acl,
                    ephemeral_owner,
                    parent_cversion
                }
            ),
            path.prop_map(|path| Txn::Delete { path }),
            (path, data, any::<i32>()).prop_map(|(path, data, version)| Txn::SetData {
                path,
                data,
                version
            }),
            (path, acl, any::<i32>()).prop_map(|(path, acl, aversion)| Txn::SetAcl {
                path,
                acl,
                aversion
            }),
            path.prop_map(|path| Txn::Check { path }),
            prop::collection::vec(any::<i32>(), 0..5).prop_map(Txn::MultiError),
            (any::<i64>(), any::<i32>(), any::<[u8; 16]>()).prop_map(
                |(session_id, timeout_ms, passwd)| Txn::CreateSession {
                    session_id,
                    timeout_ms,
                    passwd
                }
            ),
            any::<i64>().prop_map(|session_id| Txn::CloseSession { session_id }),
            any::<i32>().prop_map(Txn::Error),
        ]
    }

    fn arb_txn() -> impl Strategy<Value = Txn> {
        prop_oneof![
            arb_simple(),
            prop::collection::vec(arb_simple(), 0..4).prop_map(Txn::Multi),
        ]
    }

    proptest! {
        #[test]
        fn logged_txns_round_trip(
            txn in arb_txn(),
            time_ms in any::<i64>(),
            session_id in any::<i64>(),
            cxid in any::<i32>(),
        ) {
            let origin = Origin { session_id, cxid };
            let mut b = Vec::new();
            txn.encode_logged(time_ms, origin, &mut b);
            prop_assert_eq!(Txn::decode_logged(&b), Ok(Logged { time_ms, txn, origin }));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = Txn::decode_logged(&b);
        }
    }

    #[test]
    fn records_logged_before_origins_decode_with_a_derived_origin() {
        let eph = Txn::Create {
            path: "/e".into(),
            data: None,
            acl: vec![],
            ephemeral_owner: 0x51,
            parent_cversion: 3,
        };
        let plain = Txn::SetData {
            path: "/p".into(),
            data: None,
            version: 1,
        };
        let cases = [
            (eph.clone(), 0x51),
            (Txn::Multi(vec![plain.clone(), eph]), 0x51),
            (Txn::CloseSession { session_id: 0x77 }, 0x77),
            (plain, 0),
        ];
        for (txn, session_id) in cases {
            let mut b = Vec::new();
            txn.encode_logged(
                9,
                Origin {
                    session_id: 1,
                    cxid: 2,
                },
                &mut b,
            );
            b.truncate(b.len() - 12); // as written before the origin was logged
            let logged = Txn::decode_logged(&b).unwrap();
            assert_eq!(
                logged.origin,
                Origin {
                    session_id,
                    cxid: 0
                }
            );
            let closes = matches!(txn, Txn::CloseSession { .. }).then_some(session_id);
            assert_eq!(Txn::logged_close_session(&b), closes);
            assert_eq!((logged.time_ms, logged.txn), (9, txn));
        }
    }

    #[test]
    fn multi_cannot_nest() {
        let mut b = Vec::new();
        Txn::Multi(vec![]).encode_logged(0, Origin::default(), &mut b);
        // Wrap the encoded empty multi inside another multi by hand.
        let mut nested = 0i64.to_be_bytes().to_vec();
        nested.push(6);
        nested.extend_from_slice(&1i32.to_be_bytes());
        nested.extend_from_slice(&b[8..]);
        assert!(Txn::decode_logged(&nested).is_err());
    }
}
