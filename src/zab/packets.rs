//! [`Msg`] on the wire: each one as the [`QuorumPacket`] Apache ZooKeeper 3.8 sends for
//! it (type, zxid, data), and back.
//!
//! A txn's bytes are ZooKeeper's serialization (TxnHeader, record, digest) and travel
//! untouched. What a packet carries beyond what the state machines use (the learner's
//! server id and protocol version, NEWLEADER's configuration) is the driver's: it
//! passes it in [`Outgoing`] and reads it with [`learner_info`].

use bytes::Bytes;

use super::history::{make_zxid, Txn};
use super::messages::Msg;
use super::wire::{
    packet_type as t, ringkeeper_version, Direction, LearnerInfo, Payload, QuorumPacket, WireError,
    RINGKEEPER_PROTOCOL_V2,
};
use crate::config::ServerId;
use crate::zkformat::txn::ZkTxn;

/// What the sending member adds to its packets.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub my_id: ServerId,
    /// The ensemble's configuration as NEWLEADER carries it (ZooKeeper's
    /// QuorumVerifier text); None sends null, which ZooKeeper learners accept.
    pub config: Option<&'a [u8]>,
    /// The zxid a PING carries: a leader's last proposed, a learner's last logged.
    pub last_proposed: i64,
    /// Whether the packet goes to our leader (a learner's PING carries its sessions'
    /// touches, empty here, where a leader's carries null).
    pub to_leader: bool,
    /// The learner protocol version LearnerInfo and LEADERINFO carry (ZooKeeper's
    /// [`super::wire::LEADER_PROTOCOL_VERSION`], or a higher one two ringkeeper
    /// members agree on).
    pub protocol_version: i32,
}

/// Why a packet is not a [`Msg`].
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{0} packets are not handled by this member")]
    Unsupported(&'static str),
    #[error("{packet} without its data")]
    Missing { packet: &'static str },
}

pub fn to_packet(msg: &Msg, out: &Outgoing<'_>) -> QuorumPacket {
    let p = |ty, zxid, data: Option<Vec<u8>>| QuorumPacket::new(ty, zxid, data.map(Bytes::from));
    match msg {
        Msg::LearnerInfo {
            accepted_epoch,
            observer,
            cumulative,
        } => {
            let version = announced_version(*cumulative, out);
            let mut data = Vec::with_capacity(20);
            data.extend_from_slice(&out.my_id.to_be_bytes());
            data.extend_from_slice(&version.to_be_bytes());
            // The configuration version: ours is the static zoo.cfg's, 0.
            data.extend_from_slice(&0i64.to_be_bytes());
            let kind = if *observer {
                t::OBSERVERINFO
            } else {
                t::FOLLOWERINFO
            };
            p(kind, make_zxid(*accepted_epoch, 0), Some(data))
        }
        Msg::LeaderInfo {
            new_epoch,
            cumulative,
        } => {
            let version = announced_version(*cumulative, out);
            p(
                t::LEADERINFO,
                make_zxid(*new_epoch, 0),
                Some(version.to_be_bytes().to_vec()),
            )
        }
        Msg::AckEpoch {
            current_epoch,
            last_zxid,
        } => p(
            t::ACKEPOCH,
            *last_zxid,
            Some((*current_epoch as i32).to_be_bytes().to_vec()),
        ),
        Msg::Ack { zxid } => p(t::ACK, *zxid, None),
        Msg::Request { data, auth } => QuorumPacket {
            authinfo: Some(auth.clone()),
            ..p(t::REQUEST, -1, Some(data.to_vec()))
        },
        Msg::Revalidate {
            session_id,
            timeout_ms,
        } => p(
            t::REVALIDATE,
            -1,
            Payload::Revalidate {
                session_id: *session_id,
                timeout_ms: *timeout_ms,
            }
            .encode(),
        ),
        Msg::Revalidated { session_id, valid } => p(
            t::REVALIDATE,
            -1,
            Payload::Revalidated {
                session_id: *session_id,
                valid: *valid,
            }
            .encode(),
        ),
        Msg::Diff { zxid } => p(t::DIFF, *zxid, None),
        Msg::Trunc { zxid } => p(t::TRUNC, *zxid, None),
        Msg::Snap { zxid } => p(t::SNAP, *zxid, None),
        Msg::Proposal(txn) => QuorumPacket::new(t::PROPOSAL, txn.zxid, Some(txn.data.clone())),
        Msg::Commit { zxid } => p(t::COMMIT, *zxid, None),
        Msg::Inform(txn) => QuorumPacket::new(t::INFORM, txn.zxid, Some(txn.data.clone())),
        Msg::NewLeader { zxid } => p(t::NEWLEADER, *zxid, out.config.map(<[u8]>::to_vec)),
        Msg::UpToDate => p(t::UPTODATE, -1, None),
        Msg::Sync => p(t::SYNC, 0, None),
        Msg::Ping { touches } => {
            let data = out.to_leader.then(|| {
                let mut b = Vec::with_capacity(touches.len() * 12);
                for (id, timeout_ms) in touches {
                    b.extend_from_slice(&id.to_be_bytes());
                    b.extend_from_slice(&timeout_ms.to_be_bytes());
                }
                b
            });
            p(t::PING, out.last_proposed, data)
        }
    }
}

/// The learner protocol version LearnerInfo or LEADERINFO announces: ringkeeper's
/// version 2 when the sender ACKs and COMMITs cumulatively with the other side.
fn announced_version(cumulative: bool, out: &Outgoing<'_>) -> i32 {
    if cumulative {
        RINGKEEPER_PROTOCOL_V2
    } else {
        out.protocol_version
    }
}

/// Whether a learner protocol version says its sender ACKs and COMMITs cumulatively
/// (ringkeeper's version 2 or later).
fn cumulative_version(v: i32) -> bool {
    ringkeeper_version(v).is_some_and(|n| n >= 2)
}

/// The learner's id and versions from a FOLLOWERINFO or OBSERVERINFO.
pub fn learner_info(p: &QuorumPacket) -> Result<LearnerInfo, PacketError> {
    match p.payload(Direction::ToLeader)? {
        super::wire::Payload::LearnerInfo(info) => Ok(info),
        _ => Err(PacketError::Missing {
            packet: p.type_name(),
        }),
    }
}

/// The [`Msg`] a packet sent in `direction` means.
pub fn from_packet(p: &QuorumPacket, direction: Direction) -> Result<Msg, PacketError> {
    from_packet_keeping_txn(p, direction).map(|(msg, _)| msg)
}

/// As [`from_packet`], with the txn a PROPOSAL or INFORM carries as it was decoded
/// to check it (the replica that logs it need not decode it again).
pub fn from_packet_keeping_txn(
    p: &QuorumPacket,
    direction: Direction,
) -> Result<(Msg, Option<ZkTxn>), PacketError> {
    let mut decoded = None;
    let msg = message(p, direction, &mut decoded)?;
    Ok((msg, decoded))
}

fn message(
    p: &QuorumPacket,
    direction: Direction,
    decoded: &mut Option<ZkTxn>,
) -> Result<Msg, PacketError> {
    let name = p.type_name();
    let txn = |p: &QuorumPacket| match &p.data {
        Some(d) => Ok(Txn {
            zxid: p.zxid,
            data: d.clone(),
        }),
        None => Err(PacketError::Missing { packet: name }),
    };
    let epoch = p.zxid >> 32;
    Ok(match (p.packet_type, direction) {
        (t::FOLLOWERINFO | t::OBSERVERINFO, Direction::ToLeader) => {
            let info = learner_info(p)?;
            Msg::LearnerInfo {
                accepted_epoch: epoch,
                observer: p.packet_type == t::OBSERVERINFO,
                cumulative: info.protocol_version.is_some_and(cumulative_version),
            }
        }
        (t::ACKEPOCH, Direction::ToLeader) => match p.payload(direction)? {
            super::wire::Payload::AckEpoch { current_epoch } => Msg::AckEpoch {
                current_epoch: i64::from(current_epoch),
                last_zxid: p.zxid,
            },
            _ => return Err(PacketError::Missing { packet: name }),
        },
        (t::ACK, Direction::ToLeader) => Msg::Ack { zxid: p.zxid },
        (t::REQUEST, Direction::ToLeader) => Msg::Request {
            data: p.data.clone().unwrap_or_default(),
            auth: p.authinfo.clone().unwrap_or_default(),
        },
        (t::REVALIDATE, _) => match p.payload(direction)? {
            Payload::Revalidate {
                session_id,
                timeout_ms,
            } => Msg::Revalidate {
                session_id,
                timeout_ms,
            },
            Payload::Revalidated { session_id, valid } => Msg::Revalidated { session_id, valid },
            _ => return Err(PacketError::Missing { packet: name }),
        },
        (t::LEADERINFO, Direction::FromLeader) => match p.payload(direction)? {
            Payload::LeaderInfo { protocol_version } => Msg::LeaderInfo {
                new_epoch: epoch,
                cumulative: cumulative_version(protocol_version),
            },
            _ => return Err(PacketError::Missing { packet: name }),
        },
        (t::DIFF, Direction::FromLeader) => Msg::Diff { zxid: p.zxid },
        (t::TRUNC, Direction::FromLeader) => Msg::Trunc { zxid: p.zxid },
        (t::SNAP, Direction::FromLeader) => Msg::Snap { zxid: p.zxid },
        (t::PROPOSAL, Direction::FromLeader) => {
            // A txn ZooKeeper can read.
            if let Payload::Txn(z) = p.payload(direction)? {
                *decoded = Some(z);
            }
            Msg::Proposal(txn(p)?)
        }
        (t::COMMIT, Direction::FromLeader) => Msg::Commit { zxid: p.zxid },
        (t::INFORM, Direction::FromLeader) => {
            if let Payload::Txn(z) = p.payload(direction)? {
                *decoded = Some(z);
            }
            Msg::Inform(txn(p)?)
        }
        (t::NEWLEADER, Direction::FromLeader) => Msg::NewLeader { zxid: p.zxid },
        (t::UPTODATE, Direction::FromLeader) => Msg::UpToDate,
        (t::SYNC, Direction::FromLeader) => Msg::Sync,
        (t::PING, Direction::ToLeader) => match p.payload(direction)? {
            super::wire::Payload::Touches(touches) => Msg::Ping { touches },
            _ => Msg::Ping {
                touches: Vec::new(),
            },
        },
        (t::PING, Direction::FromLeader) => Msg::Ping {
            touches: Vec::new(),
        },
        _ => return Err(PacketError::Unsupported(name)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zab::wire::LEADER_PROTOCOL_VERSION;
    use crate::zkformat::txn::{TxnHeader, TxnRecord, ZkTxn};

    fn zk_txn(zxid: i64) -> Bytes {
        let txn = ZkTxn {
            header: TxnHeader {
                client_id: 0x100,
                cxid: 7,
                zxid,
                time: 1_700_000_000_000,
                txn_type: 5,
            },
            record: Some(TxnRecord::SetData {
                path: "/a".into(),
                data: Some(b"x".to_vec()),
                version: 1,
            }),
            digest: None,
        };
        Bytes::from(txn.to_bytes())
    }

    #[test]
    fn every_message_round_trips_through_its_packet_and_bytes() {
        let z = make_zxid(3, 9);
        let out = Outgoing {
            my_id: 2,
            config: Some(b"server.1=127.0.0.1:2888:3888:participant\nversion=0"),
            last_proposed: z,
            to_leader: false,
            protocol_version: LEADER_PROTOCOL_VERSION,
        };
        let to_leader = [
            Msg::LearnerInfo {
                accepted_epoch: 4,
                observer: false,
                cumulative: false,
            },
            Msg::LearnerInfo {
                accepted_epoch: 0,
                observer: true,
                cumulative: false,
            },
            Msg::LearnerInfo {
                accepted_epoch: 4,
                observer: false,
                cumulative: true,
            },
            Msg::AckEpoch {
                current_epoch: -1,
                last_zxid: z,
            },
            Msg::AckEpoch {
                current_epoch: 3,
                last_zxid: z,
            },
            Msg::Ack { zxid: z },
            Msg::Request {
                data: Bytes::from_static(b"\0\0\0\0\0\0\0\x01\0\0\0\x02\0\0\0\x05"),
                auth: vec![crate::proto::Id {
                    scheme: "digest".into(),
                    id: "u:x".into(),
                }],
            },
            Msg::Ping {
                touches: vec![(0x100, 30_000), (0x101, 4_000)],
            },
            Msg::Ping {
                touches: Vec::new(),
            },
            Msg::Revalidate {
                session_id: 0x1_0000_0000_0007,
                timeout_ms: 30_000,
            },
        ];
        let from_leader = [
            Msg::LeaderInfo {
                new_epoch: 5,
                cumulative: false,
            },
            Msg::LeaderInfo {
                new_epoch: 5,
                cumulative: true,
            },
            Msg::Diff { zxid: z },
            Msg::Trunc { zxid: z },
            Msg::Snap { zxid: z },
            Msg::Proposal(Txn {
                zxid: z,
                data: zk_txn(z),
            }),
            Msg::Commit { zxid: z },
            Msg::Inform(Txn {
                zxid: z,
                data: zk_txn(z),
            }),
            Msg::NewLeader {
                zxid: make_zxid(5, 0),
            },
            Msg::UpToDate,
            Msg::Sync,
            Msg::Ping {
                touches: Vec::new(),
            },
            Msg::Revalidated {
                session_id: 0x1_0000_0000_0007,
                valid: true,
            },
        ];
        for (msgs, dir) in [
            (&to_leader[..], Direction::ToLeader),
            (&from_leader[..], Direction::FromLeader),
        ] {
            let out = Outgoing {
                to_leader: dir == Direction::ToLeader,
                ..out.clone()
            };
            for m in msgs {
                let p = to_packet(m, &out);
                let mut bytes = Vec::new();
                p.encode(&mut bytes);
                let back =
                    QuorumPacket::decode(&mut crate::proto::jute::Reader::new(&bytes)).unwrap();
                assert_eq!(back, p);
                assert_eq!(&from_packet(&back, dir).unwrap(), m, "{}", p.type_name());
            }
        }
        let info = learner_info(&to_packet(&to_leader[0], &out)).unwrap();
        assert_eq!(
            (info.server_id, info.protocol_version, info.config_version),
            (2, Some(LEADER_PROTOCOL_VERSION), Some(0))
        );
        // Version 1 (a ringkeeper member that ACKs one by one) is not cumulative.
        let v1 = Outgoing {
            protocol_version: super::super::wire::RINGKEEPER_PROTOCOL_VERSION,
            ..out.clone()
        };
        let back = from_packet(&to_packet(&to_leader[0], &v1), Direction::ToLeader).unwrap();
        assert_eq!(back, to_leader[0]);
        let info = learner_info(&to_packet(&to_leader[2], &out)).unwrap();
        assert_eq!(info.protocol_version, Some(RINGKEEPER_PROTOCOL_V2));
    }

    #[test]
    fn what_is_not_a_message_is_named() {
        let owner_change = QuorumPacket::new(t::OBSERVERINFO, 0, None);
        assert!(matches!(
            from_packet(&owner_change, Direction::FromLeader),
            Err(PacketError::Unsupported("OBSERVERINFO"))
        ));
        let revalidate = QuorumPacket::new(t::REVALIDATE, -1, None);
        assert!(matches!(
            from_packet(&revalidate, Direction::ToLeader),
            Err(PacketError::Missing { .. })
        ));
        let bare = QuorumPacket::new(t::PROPOSAL, 1, None);
        assert!(matches!(
            from_packet(&bare, Direction::FromLeader),
            Err(PacketError::Missing { .. })
        ));
        let garbage = QuorumPacket::new(t::PROPOSAL, 1, Some(vec![1, 2, 3].into()));
        assert!(matches!(
            from_packet(&garbage, Direction::FromLeader),
            Err(PacketError::Wire(_))
        ));
    }
}
