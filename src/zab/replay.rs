//! Replays what a leader sent on one recorded learner connection through ringkeeper's
//! learner, and sets what it answers beside what the recorded learner answered.
//!
//! This is how ringkeeper's learner is checked against a live Apache ZooKeeper leader:
//! record an ensemble's quorum connections (tests/python/test_quorum_wire.py does),
//! then replay each. The learner starts from the state the recorded one announced
//! (acceptedEpoch in FOLLOWERINFO, currentEpoch in ACKEPOCH); its log is on disk as
//! soon as it is written. It must take the whole stream without a complaint and
//! acknowledge what the recorded learner acknowledged.

use super::history::{History, Zxid};
use super::learner::Learner;
use super::messages::{Effect, Msg};
use super::packets::{from_packet, learner_info};
use super::peer::{Local, PeerConfig};
use super::wire::{packet_type as t, Direction, QuorumItem};

/// What the replay found.
#[derive(Debug, Default)]
pub struct Replay {
    pub learner_id: i64,
    /// Packets the leader sent.
    pub packets: usize,
    /// REVALIDATE and SYNC answers among them: session and sync traffic, which the
    /// learner state machine leaves to its driver (not replayed).
    pub session_packets: usize,
    /// Whether the learner reached broadcast (UPTODATE taken).
    pub up_to_date: bool,
    /// How the learner was synced: DIFF, TRUNC or SNAP.
    pub sync: Option<&'static str>,
    pub applied: Vec<Zxid>,
    /// The zxids ringkeeper's learner ACKed, and the recorded learner's ACKs.
    pub acks: Vec<Zxid>,
    pub recorded_acks: Vec<Zxid>,
}

/// Replays `from_leader` (the leader's side of one learner connection) with the
/// learner's state taken from `to_leader` (the learner's side). Fails with what the
/// learner refused.
pub fn replay_learner(
    to_leader: &[QuorumItem],
    from_leader: &[QuorumItem],
) -> Result<Replay, String> {
    let mut r = Replay::default();
    let (mut accepted_epoch, mut current_epoch, mut observer) = (None, None, false);
    for item in to_leader {
        let QuorumItem::Packet(p) = item else {
            continue;
        };
        if matches!(p.packet_type, t::REVALIDATE | t::SYNC) {
            continue; // session and sync traffic
        }
        match from_packet(p, Direction::ToLeader).map_err(|e| e.to_string())? {
            Msg::LearnerInfo {
                accepted_epoch: a,
                observer: o,
                ..
            } => {
                r.learner_id = learner_info(p).map_err(|e| e.to_string())?.server_id;
                accepted_epoch = Some(a);
                observer = o;
            }
            Msg::AckEpoch {
                current_epoch: c, ..
            } if current_epoch.is_none() => current_epoch = Some(c),
            Msg::Ack { zxid } => r.recorded_acks.push(zxid),
            _ => {}
        }
    }
    let accepted_epoch =
        accepted_epoch.ok_or("the learner's side holds no FOLLOWERINFO or OBSERVERINFO")?;
    // -1: the learner had accepted the leader's epoch already.
    let current_epoch = current_epoch.filter(|c| *c >= 0).unwrap_or(accepted_epoch);
    const LEADER: i64 = 0;
    let mut local = Local {
        cfg: PeerConfig {
            my_id: r.learner_id,
            voters: [LEADER, r.learner_id].into_iter().collect(),
            observers: Default::default(),
            tick_ms: 2_000,
            init_limit: 10,
            sync_limit: 5,
            retain: 500,
            cumulative: false,
        },
        accepted_epoch,
        current_epoch,
        history: History::recovered(0, Vec::new(), 0, 500),
        persisted: 0,
        touches: Default::default(),
    };
    let mut out = Vec::new();
    let mut learner = Learner::start(0, LEADER, observer, &local, &mut out);
    for item in from_leader {
        let QuorumItem::Packet(p) = item else {
            continue; // the tree after SNAP: SNAP itself tells the learner
        };
        r.packets += 1;
        if matches!(p.packet_type, t::REVALIDATE | t::SYNC) {
            r.session_packets += 1;
            continue;
        }
        let msg = from_packet(p, Direction::FromLeader)
            .map_err(|e| format!("packet {}: {e}", r.packets))?;
        if let Msg::Diff { .. } | Msg::Trunc { .. } | Msg::Snap { .. } = msg {
            r.sync.get_or_insert(p.type_name());
        }
        let step = learner.on_message(0, &mut local, msg, &mut out);
        step.map_err(|q| format!("packet {} ({}): {}", r.packets, p.type_name(), q.0))?;
        // The disk keeps up at once.
        local.persisted = local.history.last_logged();
        learner
            .on_persisted(&mut local, &mut out)
            .map_err(|q| q.0)?;
        r.up_to_date |= learner.role().is_some();
    }
    for e in out {
        match e {
            Effect::Apply(t) => r.applied.push(t.zxid),
            Effect::Send {
                msg: Msg::Ack { zxid },
                ..
            } => r.acks.push(zxid),
            _ => {}
        }
    }
    Ok(r)
}
