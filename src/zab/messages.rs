//! What the Zab state machines say to each other and ask of their driver.
//!
//! [`Msg`] is a learner packet as ZooKeeper names it (`wire::QuorumPacket` carries it
//! on the wire); [`Effect`] is an instruction to the driver. The driver runs effects in
//! the order given; the ones marked durable must be on disk before it runs the next.

use bytes::Bytes;

use super::election::{Ballot, ServerId};
use super::history::{Txn, Zxid};

/// A packet on the quorum connection between a learner and its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    // Learner to leader.
    /// FOLLOWERINFO / OBSERVERINFO: the learner's acceptedEpoch, and whether it takes
    /// a COMMIT for every proposal up to it and would ACK that way too (ringkeeper's
    /// protocol version 2; ZooKeeper's learners do neither).
    LearnerInfo {
        accepted_epoch: i64,
        observer: bool,
        cumulative: bool,
    },
    /// ACKEPOCH: the learner's currentEpoch (-1 if it had already accepted the epoch)
    /// and last logged zxid.
    AckEpoch {
        current_epoch: i64,
        last_zxid: Zxid,
    },
    /// ACK of NEWLEADER (zxid = epoch << 32) or of a proposal, once on disk.
    Ack {
        zxid: Zxid,
    },
    /// REQUEST: a client's request a learner forwards to be ordered (session, cxid,
    /// type and the request record, as ZooKeeper lays them out), with the identities
    /// the session has authenticated as.
    Request {
        data: Bytes,
        auth: Vec<crate::proto::Id>,
    },
    /// REVALIDATE: a client reconnects to the learner with this session; is it
    /// still valid (the learner's own tree may lag the leader's expiry)?
    Revalidate {
        session_id: i64,
        timeout_ms: i32,
    },
    // Leader to learner.
    /// The leader's answer to REVALIDATE.
    Revalidated {
        session_id: i64,
        valid: bool,
    },
    /// LEADERINFO: the epoch the leader proposes, and whether this learner and it
    /// ACK and COMMIT cumulatively (both said they could).
    LeaderInfo {
        new_epoch: i64,
        cumulative: bool,
    },
    Diff {
        zxid: Zxid,
    },
    Trunc {
        zxid: Zxid,
    },
    /// SNAP: the leader's tree as of `zxid` follows (the driver ships it).
    Snap {
        zxid: Zxid,
    },
    Proposal(Txn),
    Commit {
        zxid: Zxid,
    },
    /// INFORM: a committed txn, for observers.
    Inform(Txn),
    NewLeader {
        zxid: Zxid,
    },
    UpToDate,
    /// SYNC: every commit before it has been sent; the learner answers its oldest
    /// forwarded sync.
    Sync,
    // Both ways.
    /// PING; a learner's carries the sessions it saw activity from since its last
    /// one, with their timeouts (a leader's carries none).
    Ping {
        touches: Vec<(i64, i32)>,
    },
}

/// Whose sync the leader answers once it is safe to read after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A learner forwarded it (for one of its clients): it gets SYNC.
    Learner(ServerId),
    /// One of the leader's own clients, asked while it led `epoch`: the leader's
    /// driver gets [`Effect::Synced`] (if it still leads that epoch).
    Local { epoch: i64 },
}

/// What this member does in the ensemble, as `srvr` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Looking,
    /// Leading `epoch`, once a quorum has synced with it.
    Leading {
        epoch: i64,
    },
    /// Following (or observing) `leader` in `epoch`, once synced with it.
    Following {
        leader: ServerId,
        epoch: i64,
    },
    Observing {
        leader: ServerId,
        epoch: i64,
    },
}

/// An instruction to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// An election notification.
    Vote { to: ServerId, ballot: Ballot },
    /// Open the quorum connection to `leader` (closing any other this member has).
    Connect { leader: ServerId },
    /// Close the quorum connection with `peer`.
    Disconnect { peer: ServerId },
    /// Send on the quorum connection with `to`.
    Send { to: ServerId, msg: Msg },
    /// Durable: acceptedEpoch and currentEpoch.
    PersistEpochs { accepted: i64, current: i64 },
    /// Append to the log. Not durable at once: the driver reports how far the log is
    /// on disk with `Peer::persisted`.
    Append(Txn),
    /// Durable: cut the log back to `to` (txns after it go, appended or pending).
    Truncate { to: Zxid },
    /// Durable: the tree that followed SNAP from `leader` replaces ours; the log
    /// starts over after `zxid`.
    InstallSnapshot { leader: ServerId, zxid: Zxid },
    /// Apply a committed txn to the tree (in zxid order, each once).
    Apply(Txn),
    /// A learner forwarded a client's request (REQUEST's data: session, cxid, type
    /// and the request's bytes) for this leader to turn into a txn and propose.
    Forwarded {
        from: ServerId,
        data: Bytes,
        auth: Vec<crate::proto::Id>,
    },
    /// A learner reported activity of these sessions (id, timeout): they live on.
    Touched(Vec<(i64, i32)>),
    /// A learner asks whether a session a client reconnects with is valid: the
    /// driver asks the replica's session table and answers `from` with REVALIDATE.
    Revalidate {
        from: ServerId,
        session_id: i64,
        timeout_ms: i32,
    },
    /// Answer the oldest sync of this member's clients: as a learner, the leader's
    /// SYNC for the one it forwarded arrived; as leader, a sync of our own clients
    /// passed its read round (see [`Reader`]).
    Synced,
    /// The member's role changed.
    Role(Role),
    /// Something a peer did wrong or a role ended: for the log.
    Warn(String),
}
