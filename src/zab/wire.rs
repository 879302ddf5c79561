//! ZooKeeper's quorum protocol on the wire, byte for byte, as Apache ZooKeeper 3.8
//! speaks it, so that ringkeeper and ZooKeeper members can share one ensemble.
//!
//! Two kinds of connection run between members:
//! - **election** (QuorumCnxManager): the connecting side opens with its protocol
//!   version, server id and election address; then both sides send length-prefixed
//!   notifications (FastLeaderElection's vote: state, proposed leader, its zxid, the
//!   election epoch, the peer epoch, a version, and the sender's configuration);
//! - **learner** (Leader, Learner, LearnerHandler): jute `QuorumPacket`s back to back
//!   with no framing of their own; after a SNAP the leader writes its whole data tree
//!   and the string "BenWasHere" into the same stream.
//!
//! Pure codecs: no sockets, no clock. [`split_election_stream`] and
//! [`split_quorum_stream`] cut one direction of a recorded connection into what was
//! sent, which is how the tests check these codecs against real ZooKeeper traffic.

use bytes::{BufMut, Bytes};
use thiserror::Error;

use crate::proto::jute::{DecodeError, JuteWrite, Reader};
use crate::proto::Id;
use crate::zkformat::snapshot::{ZkTree, SNAP_SIGNATURE};
use crate::zkformat::txn::ZkTxn;

/// The protocol version an election connection opens with (QuorumCnxManager):
/// V1 sends one election address, V2 (multiAddress.enabled) a `|`-separated list.
pub const ELECTION_PROTOCOL_V1: i64 = -65536;
pub const ELECTION_PROTOCOL_V2: i64 = -65535;
/// The longest address list an opening message may carry (QuorumCnxManager.maxBuffer).
pub const ELECTION_ADDRESS_BYTES_MAX: usize = 2048;
/// The longest election message a member accepts (QuorumCnxManager.PACKETMAXSIZE).
pub const ELECTION_MESSAGE_BYTES_MAX: usize = 512 * 1024;
/// The notification version that carries the sender's configuration (3.5+).
pub const NOTIFICATION_VERSION: i32 = 2;
/// The learner protocol version a 3.4+ leader announces in LEADERINFO.
pub const LEADER_PROTOCOL_VERSION: i32 = 0x10000;
/// The learner protocol version ringkeeper members send in LearnerInfo, and a
/// ringkeeper leader in LEADERINFO to a learner that sent it: ZooKeeper's 0x10000
/// (ZooKeeper only checks that a version is at least that) plus "RK". With it a SNAP
/// comes in ringkeeper's envelope (`peering::snap_image`).
pub const RINGKEEPER_PROTOCOL_VERSION: i32 = 0x0001_524B;
/// Ringkeeper's second version: the first, and between a leader and a learner that
/// both send it, an ACK or a COMMIT may stand for every proposal up to its zxid (a
/// learner ACKs the last of what one write made durable; a leader COMMITs the last
/// of what one quorum made committed).
pub const RINGKEEPER_PROTOCOL_V2: i32 = 0x0002_524B;

/// Whether a learner protocol version is one of ringkeeper's (and which one: 1, 2).
pub fn ringkeeper_version(v: i32) -> Option<u16> {
    (v & 0xFFFF == 0x524B && v >> 16 >= 1).then_some((v >> 16) as u16)
}

/// QuorumPacket types (Leader.java).
pub mod packet_type {
    pub const REQUEST: i32 = 1;
    pub const PROPOSAL: i32 = 2;
    pub const ACK: i32 = 3;
    pub const COMMIT: i32 = 4;
    pub const PING: i32 = 5;
    pub const REVALIDATE: i32 = 6;
    pub const SYNC: i32 = 7;
    pub const INFORM: i32 = 8;
    pub const COMMITANDACTIVATE: i32 = 9;
    pub const NEWLEADER: i32 = 10;
    pub const FOLLOWERINFO: i32 = 11;
    pub const UPTODATE: i32 = 12;
    pub const DIFF: i32 = 13;
    pub const TRUNC: i32 = 14;
    pub const SNAP: i32 = 15;
    pub const OBSERVERINFO: i32 = 16;
    pub const LEADERINFO: i32 = 17;
    pub const ACKEPOCH: i32 = 18;
    pub const INFORMANDACTIVATE: i32 = 19;

    /// The name ZooKeeper's logs use for a packet type.
    pub fn name(t: i32) -> &'static str {
        match t {
            REQUEST => "REQUEST",
            PROPOSAL => "PROPOSAL",
            ACK => "ACK",
            COMMIT => "COMMIT",
            PING => "PING",
            REVALIDATE => "REVALIDATE",
            SYNC => "SYNC",
            INFORM => "INFORM",
            COMMITANDACTIVATE => "COMMITANDACTIVATE",
            NEWLEADER => "NEWLEADER",
            FOLLOWERINFO => "FOLLOWERINFO",
            UPTODATE => "UPTODATE",
            DIFF => "DIFF",
            TRUNC => "TRUNC",
            SNAP => "SNAP",
            OBSERVERINFO => "OBSERVERINFO",
            LEADERINFO => "LEADERINFO",
            ACKEPOCH => "ACKEPOCH",
            INFORMANDACTIVATE => "INFORMANDACTIVATE",
            _ => "UNKNOWN",
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("unknown election protocol version {0}")]
    ElectionVersion(i64),
    #[error("election address list of {0} bytes (at most {ELECTION_ADDRESS_BYTES_MAX})")]
    AddressLength(i32),
    #[error("election message of {0} bytes (1 to {ELECTION_MESSAGE_BYTES_MAX})")]
    MessageLength(i32),
    #[error("notification of {0} bytes (at least 28)")]
    ShortNotification(usize),
    #[error("notification config of {len} bytes in a message of {capacity}")]
    ConfigLength { len: i32, capacity: usize },
    #[error("{packet} packet data: {err}")]
    Payload {
        packet: &'static str,
        err: DecodeError,
    },
    #[error("the tree sent with SNAP ends with {0:?}, not \"BenWasHere\"")]
    SnapSignature(String),
    #[error("what follows a ringkeeper leader's SNAP {0}")]
    SnapEnvelope(String),
}

/// What the connecting side of an election connection sends first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionOpening {
    /// A protocol version (V1 or V2), then the sender's id and its election
    /// address(es) as text (`host:port`, `|`-separated under V2).
    Versioned {
        protocol_version: i64,
        server_id: i64,
        addresses: String,
    },
    /// Before 3.5: the sender's id alone (a non-negative long).
    ServerIdOnly(i64),
}

impl ElectionOpening {
    pub fn decode(r: &mut Reader) -> Result<ElectionOpening, WireError> {
        let first = r.i64()?;
        if first >= 0 {
            return Ok(ElectionOpening::ServerIdOnly(first));
        }
        if first != ELECTION_PROTOCOL_V1 && first != ELECTION_PROTOCOL_V2 {
            return Err(WireError::ElectionVersion(first));
        }
        let server_id = r.i64()?;
        let len = r.i32()?;
        if len <= 0 || len as usize > ELECTION_ADDRESS_BYTES_MAX {
            return Err(WireError::AddressLength(len));
        }
        let offset = r.position();
        let addresses = std::str::from_utf8(r.bytes(len as usize)?)
            .map_err(|_| DecodeError::BadUtf8 { offset })?
            .to_string();
        Ok(ElectionOpening::Versioned {
            protocol_version: first,
            server_id,
            addresses,
        })
    }

    pub fn encode(&self, b: &mut impl BufMut) {
        match self {
            ElectionOpening::ServerIdOnly(id) => b.put_i64(*id),
            ElectionOpening::Versioned {
                protocol_version,
                server_id,
                addresses,
            } => {
                b.put_i64(*protocol_version);
                b.put_i64(*server_id);
                b.put_i32(addresses.len() as i32);
                b.put_slice(addresses.as_bytes());
            }
        }
    }

    pub fn server_id(&self) -> i64 {
        match self {
            ElectionOpening::ServerIdOnly(id) => *id,
            ElectionOpening::Versioned { server_id, .. } => *server_id,
        }
    }
}

/// A member's election state, as notifications carry it (QuorumPeer.ServerState).
pub mod peer_state {
    pub const LOOKING: i32 = 0;
    pub const FOLLOWING: i32 = 1;
    pub const LEADING: i32 = 2;
    pub const OBSERVING: i32 = 3;
}

/// A vote, as FastLeaderElection sends it. Older members sent shorter messages:
/// 28 bytes (no peer epoch) and 40 bytes (a peer epoch and an unread version); the
/// current layout is 44 bytes and the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub state: i32,
    pub leader: i64,
    pub zxid: i64,
    pub election_epoch: i64,
    /// None in the 28-byte layout (the receiver takes the epoch of `zxid`).
    pub peer_epoch: Option<i64>,
    /// None in the 28-byte layout.
    pub version: Option<i32>,
    /// The sender's configuration (`server.N=...` lines and `version=`), when
    /// `version` > 1.
    pub config: Option<Vec<u8>>,
    /// Bytes after the fields the version defines (receivers ignore them).
    pub trailing: Vec<u8>,
}

impl Notification {
    /// Decodes one message's bytes, by the rules of FastLeaderElection's receiver.
    pub fn decode(msg: &[u8]) -> Result<Notification, WireError> {
        if msg.len() < 28 {
            return Err(WireError::ShortNotification(msg.len()));
        }
        let mut r = Reader::new(msg);
        let state = r.i32()?;
        let leader = r.i64()?;
        let zxid = r.i64()?;
        let election_epoch = r.i64()?;
        let (mut peer_epoch, mut version, mut config) = (None, None, None);
        if msg.len() > 28 {
            peer_epoch = Some(r.i64()?);
            let v = r.i32()?;
            version = Some(v);
            if msg.len() != 40 && v > 1 {
                let len = r.i32()?;
                if len < 0 || len as usize > msg.len() {
                    return Err(WireError::ConfigLength {
                        len,
                        capacity: msg.len(),
                    });
                }
                config = Some(r.bytes(len as usize)?.to_vec());
            }
        }
        Ok(Notification {
            state,
            leader,
            zxid,
            election_epoch,
            peer_epoch,
            version,
            config,
            trailing: r.rest().to_vec(),
        })
    }

    /// The message's bytes (without the length prefix).
    pub fn encode(&self, b: &mut Vec<u8>) {
        b.put_i32(self.state);
        b.put_i64(self.leader);
        b.put_i64(self.zxid);
        b.put_i64(self.election_epoch);
        if let Some(e) = self.peer_epoch {
            b.put_i64(e);
            b.put_i32(self.version.unwrap_or(0));
            if let Some(c) = &self.config {
                b.put_i32(c.len() as i32);
                b.put_slice(c);
            }
        }
        b.put_slice(&self.trailing);
    }

    /// The current layout (version 2, with the configuration).
    pub fn current(
        state: i32,
        leader: i64,
        zxid: i64,
        election_epoch: i64,
        peer_epoch: i64,
        config: Vec<u8>,
    ) -> Notification {
        Notification {
            state,
            leader,
            zxid,
            election_epoch,
            peer_epoch: Some(peer_epoch),
            version: Some(NOTIFICATION_VERSION),
            config: Some(config),
            trailing: Vec::new(),
        }
    }
}

/// Reads one length-prefixed election message.
fn election_message<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], WireError> {
    let len = r.i32()?;
    if len <= 0 || len as usize > ELECTION_MESSAGE_BYTES_MAX {
        return Err(WireError::MessageLength(len));
    }
    Ok(r.bytes(len as usize)?)
}

/// Appends one election message with its length prefix.
pub fn put_election_message(b: &mut Vec<u8>, n: &Notification) {
    let at = b.len();
    b.put_i32(0);
    n.encode(b);
    let len = (b.len() - at - 4) as i32;
    b[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// ZooKeeper's QuorumPacket: every message between a leader and its learners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumPacket {
    pub packet_type: i32,
    pub zxid: i64,
    /// What the data means depends on the type (and direction): see [`Payload`].
    /// Shared, so that a proposal's txn goes into each follower's packet uncopied.
    pub data: Option<Bytes>,
    /// The requester's identities, on REQUEST; null otherwise.
    pub authinfo: Option<Vec<Id>>,
}

impl QuorumPacket {
    pub fn new(packet_type: i32, zxid: i64, data: Option<Bytes>) -> QuorumPacket {
        QuorumPacket {
            packet_type,
            zxid,
            data,
            authinfo: None,
        }
    }

    pub fn decode(r: &mut Reader) -> Result<QuorumPacket, WireError> {
        let packet_type = r.i32()?;
        let zxid = r.i64()?;
        let data = r.buffer_opt()?.map(Bytes::copy_from_slice);
        let authinfo = match r.vec_len_opt(8)? {
            None => None,
            Some(n) => {
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(Id {
                        scheme: r.string()?,
                        id: r.string()?,
                    });
                }
                Some(ids)
            }
        };
        Ok(QuorumPacket {
            packet_type,
            zxid,
            data,
            authinfo,
        })
    }

    pub fn encode(&self, b: &mut Vec<u8>) {
        b.put_i32(self.packet_type);
        b.put_i64(self.zxid);
        b.put_buffer_opt(self.data.as_deref());
        match &self.authinfo {
            None => b.put_i32(-1),
            Some(ids) => {
                b.put_i32(ids.len() as i32);
                for id in ids {
                    b.put_string(&id.scheme);
                    b.put_string(&id.id);
                }
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        packet_type::name(self.packet_type)
    }

    /// The typed meaning of `data` for a packet sent in `direction`.
    pub fn payload(&self, direction: Direction) -> Result<Payload, WireError> {
        Payload::decode(self.packet_type, direction, self.data.as_deref()).map_err(|err| {
            WireError::Payload {
                packet: self.type_name(),
                err,
            }
        })
    }
}

/// Which way a learner-protocol packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToLeader,
    FromLeader,
}

/// What FOLLOWERINFO and OBSERVERINFO carry. Members before 3.4 sent the id alone,
/// 3.4 added the protocol version and 3.5 the config version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnerInfo {
    pub server_id: i64,
    pub protocol_version: Option<i32>,
    pub config_version: Option<i64>,
}

/// The meaning of a QuorumPacket's data, by its type and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// No data (null), as ACK, COMMIT, UPTODATE, DIFF, TRUNC, SNAP and the leader's
    /// PING carry.
    Nothing,
    /// Data this codec keeps as bytes: NEWLEADER's and the *ANDACTIVATE packets'
    /// configuration, a SYNC's, or an empty buffer where null was expected.
    Bytes(Vec<u8>),
    LearnerInfo(LearnerInfo),
    /// LEADERINFO: the leader's protocol version.
    LeaderInfo {
        protocol_version: i32,
    },
    /// ACKEPOCH: the learner's current epoch (-1 if it has none).
    AckEpoch {
        current_epoch: i32,
    },
    /// PROPOSAL and INFORM: a txn.
    Txn(ZkTxn),
    /// REQUEST: a client's request forwarded by a learner; `request` is the request
    /// record's bytes, as the client sent them (empty for closeSession, createSession).
    Request {
        session_id: i64,
        cxid: i32,
        op: i32,
        request: Vec<u8>,
    },
    /// A learner's PING: the sessions it has seen activity from, with their timeouts.
    Touches(Vec<(i64, i32)>),
    /// A learner's REVALIDATE: a session reconnecting to it.
    Revalidate {
        session_id: i64,
        timeout_ms: i32,
    },
    /// The leader's answer to REVALIDATE.
    Revalidated {
        session_id: i64,
        valid: bool,
    },
}

impl Payload {
    pub fn decode(
        packet_type: i32,
        direction: Direction,
        data: Option<&[u8]>,
    ) -> Result<Payload, DecodeError> {
        use packet_type::*;
        let Some(bytes) = data else {
            return Ok(Payload::Nothing);
        };
        let mut r = Reader::new(bytes);
        let payload = match (packet_type, direction) {
            (FOLLOWERINFO | OBSERVERINFO, _) => {
                let server_id = r.i64()?;
                let protocol_version = if r.remaining() >= 4 {
                    Some(r.i32()?)
                } else {
                    None
                };
                let config_version = if r.remaining() >= 8 {
                    Some(r.i64()?)
                } else {
                    None
                };
                Payload::LearnerInfo(LearnerInfo {
                    server_id,
                    protocol_version,
                    config_version,
                })
            }
            (LEADERINFO, _) => Payload::LeaderInfo {
                protocol_version: r.i32()?,
            },
            (ACKEPOCH, _) => Payload::AckEpoch {
                current_epoch: r.i32()?,
            },
            (PROPOSAL | INFORM, _) => Payload::Txn(ZkTxn::decode(r.rest())?),
            (REQUEST, Direction::ToLeader) => Payload::Request {
                session_id: r.i64()?,
                cxid: r.i32()?,
                op: r.i32()?,
                request: r.rest().to_vec(),
            },
            (PING, Direction::ToLeader) => {
                let mut touches = Vec::with_capacity(r.remaining() / 12);
                while r.remaining() > 0 {
                    touches.push((r.i64()?, r.i32()?));
                }
                Payload::Touches(touches)
            }
            (REVALIDATE, Direction::ToLeader) => Payload::Revalidate {
                session_id: r.i64()?,
                timeout_ms: r.i32()?,
            },
            (REVALIDATE, Direction::FromLeader) => Payload::Revalidated {
                session_id: r.i64()?,
                valid: r.bool()?,
            },
            _ => Payload::Bytes(r.rest().to_vec()),
        };
        r.finish()?;
        Ok(payload)
    }

    /// The packet data this payload is sent as.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut b = Vec::new();
        match self {
            Payload::Nothing => return None,
            Payload::Bytes(v) => b.extend_from_slice(v),
            Payload::LearnerInfo(li) => {
                b.put_i64(li.server_id);
                if let Some(v) = li.protocol_version {
                    b.put_i32(v);
                }
                if let Some(v) = li.config_version {
                    b.put_i64(v);
                }
            }
            Payload::LeaderInfo { protocol_version } => b.put_i32(*protocol_version),
            Payload::AckEpoch { current_epoch } => b.put_i32(*current_epoch),
            Payload::Txn(t) => t.encode(&mut b),
            Payload::Request {
                session_id,
                cxid,
                op,
                request,
            } => {
                b.put_i64(*session_id);
                b.put_i32(*cxid);
                b.put_i32(*op);
                b.put_slice(request);
            }
            Payload::Touches(t) => {
                for (id, timeout) in t {
                    b.put_i64(*id);
                    b.put_i32(*timeout);
                }
            }
            Payload::Revalidate {
                session_id,
                timeout_ms,
            } => {
                b.put_i64(*session_id);
                b.put_i32(*timeout_ms);
            }
            Payload::Revalidated { session_id, valid } => {
                b.put_i64(*session_id);
                b.put_bool_jute(*valid);
            }
        }
        Some(b)
    }
}

/// One thing sent on a recorded connection, with where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent<T> {
    pub at: std::ops::Range<usize>,
    pub item: T,
}

/// What one direction of an election connection carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionItem {
    Opening(ElectionOpening),
    Notification(Notification),
}

/// What one direction of a learner connection carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumItem {
    Packet(QuorumPacket),
    /// The data tree a leader sends after SNAP (the signature after it checked).
    SnapTree(ZkTree),
}

/// A recorded stream cut into items, and how many bytes at its end did not make a
/// whole item (a connection closed mid-write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<T> {
    pub items: Vec<Sent<T>>,
    pub incomplete_tail_bytes: usize,
}

/// Runs `next` over `stream` until it ends: a truncated last item is counted as an
/// incomplete tail; any other error stops the split with the offset it happened at.
fn split<T>(
    stream: &[u8],
    mut next: impl FnMut(&mut Reader) -> Result<T, WireError>,
) -> Result<Split<T>, (usize, WireError)> {
    let mut r = Reader::new(stream);
    let mut items = Vec::new();
    while r.remaining() > 0 {
        let start = r.position();
        let mut attempt = Reader::new(&stream[start..]);
        match next(&mut attempt) {
            Ok(item) => {
                let end = start + attempt.position();
                r.bytes(end - start).map_err(|e| (start, e.into()))?;
                items.push(Sent {
                    at: start..end,
                    item,
                });
            }
            Err(WireError::Decode(DecodeError::Truncated { .. })) => {
                return Ok(Split {
                    items,
                    incomplete_tail_bytes: stream.len() - start,
                })
            }
            Err(e) => return Err((start, e)),
        }
    }
    Ok(Split {
        items,
        incomplete_tail_bytes: 0,
    })
}

/// Cuts one direction of an election connection into what was sent: the opening (if
/// this is the connecting side's direction), then notifications.
pub fn split_election_stream(
    stream: &[u8],
    connecting_side: bool,
) -> Result<Split<ElectionItem>, (usize, WireError)> {
    let mut opened = !connecting_side;
    split(stream, |r| {
        if !opened {
            let o = ElectionOpening::decode(r)?;
            opened = true;
            return Ok(ElectionItem::Opening(o));
        }
        let msg = election_message(r)?;
        // The message is whole: a field missing inside it is a malformed message, not
        // the end of the recording.
        let n = Notification::decode(msg).map_err(|e| match e {
            WireError::Decode(DecodeError::Truncated { .. }) => {
                WireError::ShortNotification(msg.len())
            }
            e => e,
        })?;
        Ok(ElectionItem::Notification(n))
    })
}

/// Cuts one direction of a learner connection into QuorumPackets, and the data tree
/// (with its signature) that follows a SNAP from the leader.
pub fn split_quorum_stream(
    stream: &[u8],
    direction: Direction,
) -> Result<Split<QuorumItem>, (usize, WireError)> {
    let mut tree_next = false;
    split(stream, |r| {
        if tree_next {
            let tree = ZkTree::decode(r)?;
            let signature = r.string()?;
            if signature != SNAP_SIGNATURE {
                return Err(WireError::SnapSignature(signature));
            }
            tree_next = false;
            return Ok(QuorumItem::SnapTree(tree));
        }
        let p = QuorumPacket::decode(r)?;
        tree_next = direction == Direction::FromLeader && p.packet_type == packet_type::SNAP;
        Ok(QuorumItem::Packet(p))
    })
}

impl QuorumItem {
    /// The item's bytes as sent.
    pub fn encode(&self, b: &mut Vec<u8>) {
        match self {
            QuorumItem::Packet(p) => p.encode(b),
            QuorumItem::SnapTree(t) => {
                t.encode(b);
                b.put_string(SNAP_SIGNATURE);
            }
        }
    }
}

impl ElectionItem {
    /// The item's bytes as sent.
    pub fn encode(&self, b: &mut Vec<u8>) {
        match self {
            ElectionItem::Opening(o) => o.encode(b),
            ElectionItem::Notification(n) => put_election_message(b, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zkformat::txn::{txn_type, TxnDigest, TxnHeader, TxnRecord};
    use proptest::prelude::*;

    fn round_trip_packet(p: &QuorumPacket) -> QuorumPacket {
        let mut b = Vec::new();
        p.encode(&mut b);
        let mut r = Reader::new(&b);
        let back = QuorumPacket::decode(&mut r).unwrap();
        r.finish().unwrap();
        back
    }

    #[test]
    fn a_proposal_carries_a_zookeeper_txn() {
        let txn = ZkTxn {
            header: TxnHeader {
                client_id: 0x100,
                cxid: 1,
                zxid: 0x1_0000_0001,
                time: 5,
                txn_type: txn_type::CREATE_SESSION,
            },
            record: Some(TxnRecord::CreateSession { timeout_ms: 30_000 }),
            digest: Some(TxnDigest {
                version: 2,
                tree_digest: 9,
            }),
        };
        let p = QuorumPacket::new(
            packet_type::PROPOSAL,
            0x1_0000_0001,
            Payload::Txn(txn.clone()).encode().map(Bytes::from),
        );
        let back = round_trip_packet(&p);
        assert_eq!(back, p);
        assert_eq!(
            back.payload(Direction::FromLeader).unwrap(),
            Payload::Txn(txn)
        );
    }

    #[test]
    fn ping_and_revalidate_mean_different_things_each_way() {
        let touches = Payload::Touches(vec![(1, 30_000), (2, 4_000)]);
        let data = touches.encode();
        assert_eq!(
            Payload::decode(packet_type::PING, Direction::ToLeader, data.as_deref()).unwrap(),
            touches
        );
        assert_eq!(
            Payload::decode(packet_type::PING, Direction::FromLeader, None).unwrap(),
            Payload::Nothing
        );
        let answer = Payload::Revalidated {
            session_id: 7,
            valid: true,
        };
        let data = answer.encode().unwrap();
        assert_eq!(data.len(), 9);
        assert_eq!(
            Payload::decode(packet_type::REVALIDATE, Direction::FromLeader, Some(&data)).unwrap(),
            answer
        );
    }

    #[test]
    fn learner_info_of_every_generation_round_trips() {
        for li in [
            LearnerInfo {
                server_id: 3,
                protocol_version: None,
                config_version: None,
            },
            LearnerInfo {
                server_id: 3,
                protocol_version: Some(LEADER_PROTOCOL_VERSION),
                config_version: Some(-1),
            },
        ] {
            let data = Payload::LearnerInfo(li).encode();
            assert_eq!(
                Payload::decode(
                    packet_type::FOLLOWERINFO,
                    Direction::ToLeader,
                    data.as_deref()
                )
                .unwrap(),
                Payload::LearnerInfo(li)
            );
        }
    }

    #[test]
    fn notifications_of_every_layout_round_trip() {
        let config = b"server.1=127.0.0.1:2888:3888:participant\nversion=0".to_vec();
        let config_len = config.len();
        let current = Notification::current(peer_state::LOOKING, 3, 0x1_0000_0004, 2, 1, config);
        let mut old40 = current.clone();
        old40.version = Some(1);
        old40.config = None;
        let mut old28 = old40.clone();
        old28.peer_epoch = None;
        old28.version = None;
        for (n, len) in [(current, 44 + config_len), (old40, 40), (old28, 28)] {
            let mut b = Vec::new();
            n.encode(&mut b);
            assert_eq!(b.len(), len);
            assert_eq!(Notification::decode(&b).unwrap(), n);
        }
    }

    #[test]
    fn an_election_stream_splits_into_its_opening_and_messages() {
        let opening = ElectionOpening::Versioned {
            protocol_version: ELECTION_PROTOCOL_V1,
            server_id: 2,
            addresses: "127.0.0.1:3888".into(),
        };
        let n = Notification::current(peer_state::LOOKING, 2, 0, 1, 0, b"version=0".to_vec());
        let mut b = Vec::new();
        opening.encode(&mut b);
        put_election_message(&mut b, &n);
        put_election_message(&mut b, &n);
        b.extend_from_slice(&[0, 0]); // a message cut short by the close
        let split = split_election_stream(&b, true).unwrap();
        assert_eq!(split.items.len(), 3);
        assert_eq!(split.items[0].item, ElectionItem::Opening(opening));
        assert_eq!(split.incomplete_tail_bytes, 2);
        assert!(matches!(
            split_election_stream(&[0xff; 16], true),
            Err((0, WireError::ElectionVersion(_)))
        ));
    }

    #[test]
    fn the_tree_after_a_snap_is_read_with_its_signature() {
        let mut b = Vec::new();
        QuorumPacket::new(packet_type::SNAP, 0x1_0000_0002, None).encode(&mut b);
        let tree = ZkTree {
            sessions: vec![],
            acls: vec![],
            nodes: vec![],
        };
        QuorumItem::SnapTree(tree.clone()).encode(&mut b);
        QuorumPacket::new(packet_type::NEWLEADER, 0x1_0000_0000, None).encode(&mut b);
        let split = split_quorum_stream(&b, Direction::FromLeader).unwrap();
        assert_eq!(split.items.len(), 3);
        assert_eq!(split.items[1].item, QuorumItem::SnapTree(tree));
        // Sent to the leader, a SNAP is just a packet: no tree is looked for after it.
        let to_leader = split_quorum_stream(&b, Direction::ToLeader);
        assert!(to_leader.map_or(true, |s| s
            .items
            .iter()
            .all(|i| matches!(i.item, QuorumItem::Packet(_)))));
    }

    proptest! {
        #[test]
        fn arbitrary_streams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), leader in any::<bool>(), connecting in any::<bool>()) {
            let dir = if leader { Direction::FromLeader } else { Direction::ToLeader };
            if let Ok(s) = split_quorum_stream(&bytes, dir) {
                let mut again = Vec::new();
                for it in &s.items {
                    it.item.encode(&mut again);
                }
                prop_assert_eq!(&again[..], &bytes[..bytes.len() - s.incomplete_tail_bytes]);
            }
            if let Ok(s) = split_election_stream(&bytes, connecting) {
                let mut again = Vec::new();
                for it in &s.items {
                    it.item.encode(&mut again);
                }
                prop_assert_eq!(&again[..], &bytes[..bytes.len() - s.incomplete_tail_bytes]);
            }
        }
    }
}
