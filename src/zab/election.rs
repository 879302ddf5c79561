//! Fast leader election, as Apache ZooKeeper runs it (FastLeaderElection), as a sans-IO
//! state machine: ballots in, ballots out, time passed in as ms. No sockets, clocks or
//! randomness here; the driver delivers ballots, calls [`Election::tick`] by
//! [`Election::next_deadline`], and sends what comes out.
//!
//! The rules, ZooKeeper's:
//! - A member that starts looking bumps its logical clock (the election epoch), votes
//!   for itself with its (currentEpoch, last logged zxid) and tells every voter.
//! - Votes are ordered by (peer epoch, zxid, server id). A looking member that hears a
//!   vote of its election epoch that beats its own adopts it and tells everyone again;
//!   a vote of a later election epoch makes it join that election (its own vote or the
//!   better one); a vote of an earlier one is ignored, and its sender, being behind, is
//!   sent our vote back.
//! - Once a quorum of voters' latest votes (this election epoch) equal its own, it
//!   waits `finalize_wait_ms` for a better vote; one that beats its vote reopens the
//!   round, others in that wait are dropped. If none comes, it leads or follows.
//! - A member that is not looking answers every looking member with the vote it
//!   decided. A looking member that sees a quorum of voters following or leading one
//!   leader, the leader itself among them as LEADING, follows that leader (this is how
//!   a restarted member joins an ensemble that already has one).
//! - Observers vote for no one; they learn the leader from the voters' answers.
//! - With nothing heard for the notification interval (200 ms, doubling up to 60 s),
//!   a looking member sends its vote to every voter again.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{peer_state, Notification, NOTIFICATION_VERSION};

pub use crate::config::ServerId;

/// The id an observer proposes (ZooKeeper's Long.MIN_VALUE): no one.
pub const NO_LEADER: ServerId = i64::MIN;

/// The notification interval's start and cap (FastLeaderElection's
/// minNotificationInterval, which is also finalizeWait, and maxNotificationInterval).
pub const NOTIFICATION_INTERVAL_MS_MIN: u64 = 200;
pub const NOTIFICATION_INTERVAL_MS_MAX: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Looking,
    Following,
    Leading,
    Observing,
}

impl PeerState {
    pub fn to_wire(self) -> i32 {
        match self {
            PeerState::Looking => peer_state::LOOKING,
            PeerState::Following => peer_state::FOLLOWING,
            PeerState::Leading => peer_state::LEADING,
            PeerState::Observing => peer_state::OBSERVING,
        }
    }

    pub fn from_wire(v: i32) -> Option<PeerState> {
        Some(match v {
            peer_state::LOOKING => PeerState::Looking,
            peer_state::FOLLOWING => PeerState::Following,
            peer_state::LEADING => PeerState::Leading,
            peer_state::OBSERVING => PeerState::Observing,
            _ => return None,
        })
    }
}

/// A proposed leader and the history it would lead with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub leader: ServerId,
    pub zxid: i64,
    pub peer_epoch: i64,
}

impl Vote {
    /// ZooKeeper's totalOrderPredicate: whether `self` beats `other` (later peer epoch,
    /// then later zxid, then higher id).
    pub fn beats(&self, other: &Vote) -> bool {
        (self.peer_epoch, self.zxid, self.leader) > (other.peer_epoch, other.zxid, other.leader)
    }
}

/// What one member tells another: its vote, the election epoch it was cast in, and its
/// own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ballot {
    pub vote: Vote,
    pub election_epoch: i64,
    pub state: PeerState,
}

impl Ballot {
    /// The notification that carries this ballot, with the sender's configuration text.
    pub fn to_notification(&self, config: Vec<u8>) -> Notification {
        Notification::current(
            self.state.to_wire(),
            self.vote.leader,
            self.vote.zxid,
            self.election_epoch,
            self.vote.peer_epoch,
            config,
        )
    }

    /// The ballot a notification carries; None for a state no member has. A 28-byte
    /// notification has no peer epoch: ZooKeeper takes the epoch of its zxid.
    pub fn from_notification(n: &Notification) -> Option<Ballot> {
        debug_assert!(n.version.unwrap_or(0) <= NOTIFICATION_VERSION || n.config.is_some());
        Some(Ballot {
            vote: Vote {
                leader: n.leader,
                zxid: n.zxid,
                peer_epoch: n.peer_epoch.unwrap_or(n.zxid >> 32),
            },
            election_epoch: n.election_epoch,
            state: PeerState::from_wire(n.state)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub my_id: ServerId,
    /// The participants: only their votes count, and only they may lead.
    pub voters: BTreeSet<ServerId>,
    pub finalize_wait_ms: u64,
    pub notification_interval_ms_max: u64,
}

impl ElectionConfig {
    pub fn new(my_id: ServerId, voters: impl IntoIterator<Item = ServerId>) -> ElectionConfig {
        ElectionConfig {
            my_id,
            voters: voters.into_iter().collect(),
            finalize_wait_ms: NOTIFICATION_INTERVAL_MS_MIN,
            notification_interval_ms_max: NOTIFICATION_INTERVAL_MS_MAX,
        }
    }

    fn is_voter(&self, id: ServerId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `ids` (voters or not) hold a majority of the voters.
    pub fn is_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a ServerId>) -> bool {
        let n = ids.into_iter().filter(|i| self.is_voter(**i)).count();
        2 * n > self.voters.len()
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send {
        to: ServerId,
        ballot: Ballot,
    },
    /// The election is over for this member: it now leads, follows or observes
    /// `vote.leader`.
    Decided {
        state: PeerState,
        vote: Vote,
        election_epoch: i64,
    },
}

/// One member's side of leader election.
#[derive(Debug, Clone)]
pub struct Election {
    cfg: ElectionConfig,
    state: PeerState,
    /// What this member votes with for itself: (currentEpoch, last logged zxid).
    own: Vote,
    logical_clock: i64,
    proposal: Vote,
    /// Latest ballot of each member in this election epoch (and same-epoch ballots of
    /// members that already decided).
    received: BTreeMap<ServerId, Ballot>,
    /// Ballots of members that have decided, whatever their election epoch.
    out_of_election: BTreeMap<ServerId, Ballot>,
    interval_ms: u64,
    resend_at_ms: u64,
    finalize_at_ms: Option<u64>,
    /// The vote this member decided, and the election epoch it was decided in.
    decided: Option<(Vote, i64)>,
}

impl Election {
    /// A member that has not started looking yet (it answers no one until it does).
    pub fn new(cfg: ElectionConfig) -> Election {
        let me = cfg.my_id;
        Election {
            cfg,
            state: PeerState::Looking,
            own: Vote {
                leader: me,
                zxid: -1,
                peer_epoch: -1,
            },
            logical_clock: 0,
            proposal: Vote {
                leader: me,
                zxid: -1,
                peer_epoch: -1,
            },
            received: BTreeMap::new(),
            out_of_election: BTreeMap::new(),
            interval_ms: NOTIFICATION_INTERVAL_MS_MIN,
            resend_at_ms: u64::MAX,
            finalize_at_ms: None,
            decided: None,
        }
    }

    pub fn state(&self) -> PeerState {
        self.state
    }

    pub fn logical_clock(&self) -> i64 {
        self.logical_clock
    }

    /// The vote this member decided (None while looking).
    pub fn decided(&self) -> Option<(Vote, i64)> {
        self.decided.filter(|_| self.state != PeerState::Looking)
    }

    /// This member's current proposal.
    pub fn proposal(&self) -> Vote {
        self.proposal
    }

    /// The ballots this member holds: this election epoch's, and those of members
    /// that have decided (for checks).
    pub fn ballots(&self) -> impl Iterator<Item = (ServerId, Ballot)> + '_ {
        self.received
            .iter()
            .chain(self.out_of_election.iter())
            .map(|(id, b)| (*id, *b))
    }

    /// ZooKeeper's Vote.equals, as vote counting uses it: against a looking ballot,
    /// every field; between decided ballots, the leader and the peer epoch.
    pub fn agrees(b: &Ballot, with: &Ballot) -> bool {
        if b.state == PeerState::Looking || with.state == PeerState::Looking {
            b.vote == with.vote && b.election_epoch == with.election_epoch
        } else {
            b.vote.leader == with.vote.leader && b.vote.peer_epoch == with.vote.peer_epoch
        }
    }

    /// After discovery: the epoch this member now leads or follows in becomes the peer
    /// epoch of the vote it answers lookers with (ZooKeeper's updateElectionVote), so
    /// that a member looking later sees one vote for the leader from all of them.
    pub fn update_peer_epoch(&mut self, epoch: i64) {
        if self.state == PeerState::Looking {
            return;
        }
        if let Some((vote, _)) = &mut self.decided {
            vote.peer_epoch = epoch;
            self.proposal = *vote;
        }
    }

    /// When [`tick`](Election::tick) must be called next (ms), if at all.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.state != PeerState::Looking {
            return None;
        }
        Some(self.finalize_at_ms.unwrap_or(self.resend_at_ms))
    }

    fn is_observer(&self) -> bool {
        !self.cfg.is_voter(self.cfg.my_id)
    }

    /// Starts an election round (ZooKeeper's lookForLeader), with this member's
    /// current epoch and last logged zxid.
    pub fn look(&mut self, now_ms: u64, current_epoch: i64, last_zxid: i64, out: &mut Vec<Effect>) {
        self.state = PeerState::Looking;
        self.decided = None;
        self.own = if self.is_observer() {
            Vote {
                leader: NO_LEADER,
                zxid: -1,
                peer_epoch: i64::MIN,
            }
        } else {
            Vote {
                leader: self.cfg.my_id,
                zxid: last_zxid,
                peer_epoch: current_epoch,
            }
        };
        self.logical_clock += 1;
        self.received.clear();
        self.out_of_election.clear();
        self.proposal = self.own;
        self.interval_ms = NOTIFICATION_INTERVAL_MS_MIN;
        self.finalize_at_ms = None;
        self.send_notifications(now_ms, out);
    }

    fn my_ballot(&self) -> Ballot {
        Ballot {
            vote: self.proposal,
            election_epoch: self.logical_clock,
            state: self.state,
        }
    }

    /// Sends the proposal to every voter; our own copy is counted at once.
    fn send_notifications(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        let ballot = self.my_ballot();
        for &to in &self.cfg.voters {
            if to != self.cfg.my_id {
                out.push(Effect::Send { to, ballot });
            }
        }
        self.resend_at_ms = now_ms + self.interval_ms;
        if self.cfg.is_voter(self.cfg.my_id) {
            self.on_looking(now_ms, self.cfg.my_id, ballot, out);
        }
    }

    /// Time has passed: resend after a silent interval, or end the finalize wait.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        if self.state != PeerState::Looking {
            return;
        }
        if let Some(at) = self.finalize_at_ms {
            if now_ms >= at {
                self.finalize_at_ms = None;
                self.decide(self.proposal, self.logical_clock, out);
            }
            return;
        }
        if now_ms >= self.resend_at_ms {
            self.interval_ms = (self.interval_ms * 2).min(self.cfg.notification_interval_ms_max);
            self.send_notifications(now_ms, out);
        }
    }

    fn decide(&mut self, vote: Vote, election_epoch: i64, out: &mut Vec<Effect>) {
        self.state = if vote.leader == self.cfg.my_id {
            PeerState::Leading
        } else if self.is_observer() {
            PeerState::Observing
        } else {
            PeerState::Following
        };
        self.logical_clock = election_epoch;
        self.proposal = vote;
        self.decided = Some((vote, election_epoch));
        self.finalize_at_ms = None;
        out.push(Effect::Decided {
            state: self.state,
            vote,
            election_epoch,
        });
    }

    /// A ballot from member `from`.
    pub fn receive(&mut self, now_ms: u64, from: ServerId, ballot: Ballot, out: &mut Vec<Effect>) {
        if from == self.cfg.my_id || self.logical_clock == 0 {
            return; // our own echo, or we have not started looking yet
        }
        // Members that do not vote are answered at once and not counted.
        if !self.cfg.is_voter(from) {
            let current = self.decided.map_or(self.proposal, |(v, _)| v);
            out.push(Effect::Send {
                to: from,
                ballot: Ballot {
                    vote: current,
                    election_epoch: self.logical_clock,
                    state: self.state,
                },
            });
            return;
        }
        if self.state != PeerState::Looking {
            // Decided: tell a looking member what we decided.
            if ballot.state == PeerState::Looking {
                if let Some((vote, epoch)) = self.decided {
                    out.push(Effect::Send {
                        to: from,
                        ballot: Ballot {
                            vote,
                            election_epoch: epoch,
                            state: self.state,
                        },
                    });
                }
            }
            return;
        }
        // A looking member behind us gets our vote back.
        if ballot.state == PeerState::Looking && ballot.election_epoch < self.logical_clock {
            out.push(Effect::Send {
                to: from,
                ballot: self.my_ballot(),
            });
        }
        self.resend_at_ms = now_ms + self.interval_ms;
        if self.finalize_at_ms.is_some() {
            // In the finalize wait, only a better vote matters; others are dropped.
            if !(self.cfg.is_voter(ballot.vote.leader) && ballot.vote.beats(&self.proposal)) {
                self.finalize_at_ms = Some(now_ms + self.cfg.finalize_wait_ms);
                return;
            }
            self.finalize_at_ms = None;
        }
        if !self.cfg.is_voter(ballot.vote.leader) {
            return;
        }
        match ballot.state {
            PeerState::Looking => self.on_looking(now_ms, from, ballot, out),
            PeerState::Observing => {}
            PeerState::Following | PeerState::Leading => self.on_decided(from, ballot, out),
        }
    }

    fn on_looking(&mut self, now_ms: u64, from: ServerId, ballot: Ballot, out: &mut Vec<Effect>) {
        // An observer (no history of its own to vote with) ignores looking votes, and
        // a looking vote with no history is no candidate.
        if self.is_observer() || ballot.vote.zxid == -1 {
            return;
        }
        if ballot.election_epoch > self.logical_clock {
            self.logical_clock = ballot.election_epoch;
            self.received.clear();
            self.proposal = if ballot.vote.beats(&self.own) {
                ballot.vote
            } else {
                self.own
            };
            self.send_notifications(now_ms, out);
        } else if ballot.election_epoch < self.logical_clock {
            return;
        } else if ballot.vote.beats(&self.proposal) {
            self.proposal = ballot.vote;
            self.send_notifications(now_ms, out);
        }
        self.received.insert(from, ballot);
        let target = self.proposal;
        let agreeing = self
            .received
            .iter()
            .filter(|(_, b)| b.vote == target && b.election_epoch == self.logical_clock)
            .map(|(id, _)| id);
        if self.cfg.is_quorum(agreeing) && self.finalize_at_ms.is_none() {
            self.finalize_at_ms = Some(now_ms + self.cfg.finalize_wait_ms);
        }
    }

    /// A ballot from a member that follows or leads already.
    fn on_decided(&mut self, from: ServerId, ballot: Ballot, out: &mut Vec<Effect>) {
        if ballot.election_epoch == self.logical_clock {
            self.received.insert(from, ballot);
            if self.quorum_follows(&self.received, &ballot) {
                self.decide(ballot.vote, ballot.election_epoch, out);
                return;
            }
        }
        self.out_of_election.insert(from, ballot);
        if self.quorum_follows(&self.out_of_election, &ballot) {
            self.decide(ballot.vote, ballot.election_epoch, out);
        }
    }

    /// Whether a quorum of `votes` agrees with the decided `ballot` and its leader is
    /// confirmed among them.
    fn quorum_follows(&self, votes: &BTreeMap<ServerId, Ballot>, ballot: &Ballot) -> bool {
        let agreeing = votes
            .iter()
            .filter(|(_, b)| Election::agrees(b, ballot))
            .map(|(id, _)| id);
        self.cfg.is_quorum(agreeing)
            && self.leader_confirmed(votes, ballot.vote.leader, ballot.election_epoch)
    }

    /// ZooKeeper's checkLeader: another member may be followed only once it has said
    /// it leads; this member may lead only in its own election epoch.
    fn leader_confirmed(
        &self,
        votes: &BTreeMap<ServerId, Ballot>,
        leader: ServerId,
        election_epoch: i64,
    ) -> bool {
        if leader != self.cfg.my_id {
            votes
                .get(&leader)
                .is_some_and(|b| b.state == PeerState::Leading)
        } else {
            self.logical_clock == election_epoch
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: ServerId, n: i64) -> Election {
        Election::new(ElectionConfig::new(id, 1..=n))
    }

    fn sends(out: &[Effect]) -> Vec<(ServerId, Ballot)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Send { to, ballot } => Some((*to, *ballot)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn votes_order_by_epoch_then_zxid_then_id() {
        let v = |leader, zxid, peer_epoch| Vote {
            leader,
            zxid,
            peer_epoch,
        };
        assert!(v(1, 0, 2).beats(&v(3, 100, 1)));
        assert!(v(1, 5, 1).beats(&v(3, 4, 1)));
        assert!(v(3, 5, 1).beats(&v(1, 5, 1)));
        assert!(!v(3, 5, 1).beats(&v(3, 5, 1)));
    }

    #[test]
    fn looking_starts_a_new_election_epoch_and_tells_every_voter() {
        let mut m = member(2, 3);
        let mut out = Vec::new();
        m.look(0, 1, 0x1_0000_0005, &mut out);
        assert_eq!(m.logical_clock(), 1);
        let s = sends(&out);
        assert_eq!(s.iter().map(|(to, _)| *to).collect::<Vec<_>>(), vec![1, 3]);
        assert!(s
            .iter()
            .all(|(_, b)| b.vote.leader == 2 && b.state == PeerState::Looking));
    }

    #[test]
    fn a_better_vote_is_adopted_and_a_quorum_decides_after_the_finalize_wait() {
        let mut m = member(1, 3);
        let mut out = Vec::new();
        m.look(0, 1, 10, &mut out);
        out.clear();
        let better = Ballot {
            vote: Vote {
                leader: 3,
                zxid: 20,
                peer_epoch: 1,
            },
            election_epoch: 1,
            state: PeerState::Looking,
        };
        m.receive(5, 3, better, &mut out);
        assert_eq!(m.proposal(), better.vote);
        assert_eq!(sends(&out).len(), 2, "the new vote goes to both others");
        // Ourselves and 3 agree: a quorum of 3; decided after the finalize wait.
        assert_eq!(m.next_deadline(), Some(5 + NOTIFICATION_INTERVAL_MS_MIN));
        out.clear();
        m.tick(5 + NOTIFICATION_INTERVAL_MS_MIN, &mut out);
        assert_eq!(
            out,
            vec![Effect::Decided {
                state: PeerState::Following,
                vote: better.vote,
                election_epoch: 1
            }]
        );
    }

    #[test]
    fn a_member_behind_is_answered_and_a_decided_member_answers_lookers() {
        let mut m = member(1, 3);
        let mut out = Vec::new();
        m.look(0, 1, 10, &mut out);
        m.look(1, 1, 10, &mut out); // election epoch 2
        out.clear();
        let behind = Ballot {
            vote: Vote {
                leader: 2,
                zxid: 1,
                peer_epoch: 1,
            },
            election_epoch: 1,
            state: PeerState::Looking,
        };
        m.receive(2, 2, behind, &mut out);
        assert_eq!(sends(&out), vec![(2, m.my_ballot())]);
    }

    #[test]
    fn a_restarted_member_follows_the_leader_a_quorum_follows() {
        let mut m = member(3, 3);
        let mut out = Vec::new();
        m.look(0, 1, 0, &mut out);
        let lead = Vote {
            leader: 1,
            zxid: 50,
            peer_epoch: 2,
        };
        let from = |state| Ballot {
            vote: lead,
            election_epoch: 7,
            state,
        };
        out.clear();
        m.receive(1, 2, from(PeerState::Following), &mut out);
        assert!(
            out.is_empty(),
            "one follower is no quorum, and the leader has not spoken"
        );
        m.receive(2, 1, from(PeerState::Leading), &mut out);
        assert_eq!(
            out,
            vec![Effect::Decided {
                state: PeerState::Following,
                vote: lead,
                election_epoch: 7
            }]
        );
        assert_eq!(m.logical_clock(), 7);
    }

    #[test]
    fn silence_makes_a_looking_member_resend_with_a_doubling_interval() {
        let mut m = member(1, 3);
        let mut out = Vec::new();
        m.look(0, 1, 0, &mut out);
        out.clear();
        m.tick(199, &mut out);
        assert!(out.is_empty());
        m.tick(200, &mut out);
        assert_eq!(sends(&out).len(), 2);
        assert_eq!(m.next_deadline(), Some(600));
    }

    #[test]
    fn ballots_travel_as_current_notifications() {
        let b = Ballot {
            vote: Vote {
                leader: 2,
                zxid: 0x2_0000_0003,
                peer_epoch: 2,
            },
            election_epoch: 4,
            state: PeerState::Following,
        };
        let n = b.to_notification(b"version=0".to_vec());
        assert_eq!(Ballot::from_notification(&n), Some(b));
    }
}
