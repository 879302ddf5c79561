//! One ensemble member's Zab, sans IO: leader election, then leading or learning
//! (discovery, synchronization, broadcast), and back to election when that ends.
//!
//! Inputs are method calls with the time passed in: ballots, quorum packets (tagged
//! with the connection they came on), closed connections, "the log is on disk up to
//! zxid", ticks, and writes to propose. Outputs are [`Effect`]s. Nothing in here reads a
//! clock, touches a socket or a file, or draws a random number.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::election::{Ballot, Election, ElectionConfig, PeerState, ServerId};
use super::history::{History, Zxid};
use super::leader::Leader;
use super::learner::Learner;
use super::messages::{Effect, Msg, Reader, Role};

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub my_id: ServerId,
    pub voters: BTreeSet<ServerId>,
    pub observers: BTreeSet<ServerId>,
    pub tick_ms: u64,
    /// Ticks a learner may take to connect and sync (ZooKeeper's initLimit).
    pub init_limit: u64,
    /// Ticks a member may go unheard once synced (ZooKeeper's syncLimit).
    pub sync_limit: u64,
    /// Committed txns kept for DIFFs (ZooKeeper keeps 500 in memory).
    pub retain: usize,
    /// ACK and COMMIT cumulatively with a leader or learner that offers it too (see
    /// [`Msg::LearnerInfo`]); ZooKeeper's members never do.
    pub cumulative: bool,
}

impl PeerConfig {
    pub fn is_voter(&self, id: ServerId) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a ServerId>) -> bool {
        let n = ids.into_iter().filter(|i| self.is_voter(**i)).count();
        2 * n > self.voters.len()
    }

    pub fn init_ms(&self) -> u64 {
        self.init_limit * self.tick_ms
    }

    pub fn sync_ms(&self) -> u64 {
        self.sync_limit * self.tick_ms
    }
}

/// What a member finds on its disk at start.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub accepted_epoch: i64,
    pub current_epoch: i64,
    pub history: History,
}

/// The state every role reads and changes: the persisted epochs, the log, and how
/// far the log is on disk.
#[derive(Debug)]
pub(crate) struct Local {
    pub cfg: PeerConfig,
    pub accepted_epoch: i64,
    pub current_epoch: i64,
    pub history: History,
    /// The log is on disk up to here.
    pub persisted: Zxid,
    /// Sessions of our clients that showed activity since the last PING to our
    /// leader, with their timeouts (what the next PING reports).
    pub touches: std::collections::BTreeMap<i64, i32>,
}

impl Local {
    pub fn persist_epochs(&self, out: &mut Vec<Effect>) {
        out.push(Effect::PersistEpochs {
            accepted: self.accepted_epoch,
            current: self.current_epoch,
        });
    }
}

/// Why a role ended; the member goes back to election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quit(pub String);

enum Doing {
    Looking,
    Leading(Leader),
    Learning(Learner),
}

/// The write could not be proposed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the established leader")]
    NotLeading,
    #[error("not following an established leader")]
    NotFollowing,
}

pub struct Peer {
    local: Local,
    election: Election,
    doing: Doing,
    /// FOLLOWERINFO / OBSERVERINFO that came while we were looking, latest per learner
    /// (from, connection, message): a learner may decide on us as leader before we
    /// decide ourselves. Handed to our leadership if we lead; if we follow, their
    /// connections are closed, so their learners look again at once.
    early_infos: Vec<(ServerId, u64, Msg)>,
}

impl Peer {
    pub fn new(cfg: PeerConfig, recovered: Recovered) -> Peer {
        let persisted = recovered.history.last_logged();
        Peer {
            election: Election::new(ElectionConfig::new(cfg.my_id, cfg.voters.iter().copied())),
            local: Local {
                cfg,
                accepted_epoch: recovered.accepted_epoch,
                current_epoch: recovered.current_epoch,
                history: recovered.history,
                persisted,
                touches: Default::default(),
            },
            doing: Doing::Looking,
            early_infos: Vec::new(),
        }
    }

    /// As leader, what `mntr` reports of the learners; None otherwise.
    pub fn leader_figures(&self) -> Option<super::leader::LeaderFigures> {
        match &self.doing {
            Doing::Leading(l) => Some(l.figures()),
            _ => None,
        }
    }

    pub fn role(&self) -> Role {
        match &self.doing {
            Doing::Looking => Role::Looking,
            Doing::Leading(l) => l.role().unwrap_or(Role::Looking),
            Doing::Learning(l) => l.role().unwrap_or(Role::Looking),
        }
    }

    /// Starts looking for a leader.
    pub fn start(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        self.look(now_ms, out);
    }

    fn look(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        self.doing = Doing::Looking;
        self.early_infos.clear();
        out.push(Effect::Role(Role::Looking));
        let mut votes = Vec::new();
        self.election.look(
            now_ms,
            self.local.current_epoch,
            self.local.history.last_logged(),
            &mut votes,
        );
        self.after_election(now_ms, votes, out);
    }

    fn quit(&mut self, now_ms: u64, why: Quit, out: &mut Vec<Effect>) {
        out.push(Effect::Warn(why.0));
        match &self.doing {
            Doing::Leading(l) => {
                for peer in l.connected() {
                    out.push(Effect::Disconnect { peer });
                }
            }
            Doing::Learning(l) => out.push(Effect::Disconnect { peer: l.leader() }),
            Doing::Looking => {}
        }
        self.look(now_ms, out);
    }

    fn after_election(
        &mut self,
        now_ms: u64,
        votes: Vec<super::election::Effect>,
        out: &mut Vec<Effect>,
    ) {
        for e in votes {
            match e {
                super::election::Effect::Send { to, ballot } => {
                    out.push(Effect::Vote { to, ballot })
                }
                super::election::Effect::Decided { state, vote, .. } => {
                    let early = std::mem::take(&mut self.early_infos);
                    self.doing = match state {
                        PeerState::Leading => {
                            let mut l = Leader::start(now_ms, &mut self.local, out);
                            for (from, conn, msg) in early {
                                if let Err(q) =
                                    l.on_message(now_ms, &mut self.local, from, conn, msg, out)
                                {
                                    self.doing = Doing::Leading(l);
                                    self.quit(now_ms, q, out);
                                    return;
                                }
                            }
                            Doing::Leading(l)
                        }
                        PeerState::Following | PeerState::Observing => {
                            for (from, _, _) in early {
                                if from != vote.leader {
                                    out.push(Effect::Disconnect { peer: from });
                                }
                            }
                            Doing::Learning(Learner::start(
                                now_ms,
                                vote.leader,
                                state == PeerState::Observing,
                                &self.local,
                                out,
                            ))
                        }
                        PeerState::Looking => Doing::Looking,
                    };
                }
            }
        }
    }

    /// Runs a role's step; a role that ends sends the member back to election.
    fn step(
        &mut self,
        now_ms: u64,
        out: &mut Vec<Effect>,
        f: impl FnOnce(&mut Doing, &mut Local, &mut Vec<Effect>) -> Result<(), Quit>,
    ) {
        let before = self.role();
        if let Err(q) = f(&mut self.doing, &mut self.local, out) {
            self.quit(now_ms, q, out);
            return;
        }
        let after = self.role();
        if after != before {
            if let Role::Leading { epoch }
            | Role::Following { epoch, .. }
            | Role::Observing { epoch, .. } = after
            {
                self.election.update_peer_epoch(epoch);
            }
            out.push(Effect::Role(after));
        }
    }

    pub fn on_vote(&mut self, now_ms: u64, from: ServerId, ballot: Ballot, out: &mut Vec<Effect>) {
        let mut votes = Vec::new();
        self.election.receive(now_ms, from, ballot, &mut votes);
        if matches!(self.doing, Doing::Looking) {
            self.after_election(now_ms, votes, out);
        } else {
            for e in votes {
                if let super::election::Effect::Send { to, ballot } = e {
                    out.push(Effect::Vote { to, ballot });
                }
            }
        }
    }

    /// A quorum packet from `from` on connection `conn`.
    pub fn on_message(
        &mut self,
        now_ms: u64,
        from: ServerId,
        conn: u64,
        msg: Msg,
        out: &mut Vec<Effect>,
    ) {
        if matches!(self.doing, Doing::Looking) && matches!(msg, Msg::LearnerInfo { .. }) {
            self.early_infos.retain(|(f, _, _)| *f != from);
            self.early_infos.push((from, conn, msg));
            return;
        }
        self.step(now_ms, out, |doing, local, out| match doing {
            Doing::Leading(l) => l.on_message(now_ms, local, from, conn, msg, out),
            Doing::Learning(l) if from == l.leader() => l.on_message(now_ms, local, msg, out),
            Doing::Learning(_) if matches!(msg, Msg::LearnerInfo { .. }) => {
                // It takes us for its leader; we are not: it is to look again.
                out.push(Effect::Disconnect { peer: from });
                Ok(())
            }
            _ => Ok(()),
        });
    }

    /// The quorum connection `conn` with `peer` closed.
    pub fn on_disconnected(
        &mut self,
        now_ms: u64,
        peer: ServerId,
        conn: u64,
        out: &mut Vec<Effect>,
    ) {
        self.step(now_ms, out, |doing, _local, _out| match doing {
            Doing::Leading(l) => {
                l.on_disconnected(peer, conn);
                Ok(())
            }
            Doing::Learning(l) if l.leader() == peer => {
                Err(Quit(format!("lost the connection to leader {peer}")))
            }
            _ => Ok(()),
        });
    }

    /// The log is on disk up to `zxid`.
    pub fn persisted(&mut self, now_ms: u64, zxid: Zxid, out: &mut Vec<Effect>) {
        self.local.persisted = self
            .local
            .persisted
            .max(zxid)
            .min(self.local.history.last_logged());
        self.step(now_ms, out, |doing, local, out| match doing {
            Doing::Leading(l) => l.on_persisted(now_ms, local, out),
            Doing::Learning(l) => l.on_persisted(local, out),
            Doing::Looking => Ok(()),
        });
    }

    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        if matches!(self.doing, Doing::Looking) {
            let mut votes = Vec::new();
            self.election.tick(now_ms, &mut votes);
            self.after_election(now_ms, votes, out);
            return;
        }
        self.step(now_ms, out, |doing, local, out| match doing {
            Doing::Leading(l) => l.tick(now_ms, local, out),
            Doing::Learning(l) => l.tick(now_ms, local, out),
            Doing::Looking => Ok(()),
        });
    }

    /// When `tick` must be called next.
    pub fn next_deadline(&self) -> Option<u64> {
        match &self.doing {
            Doing::Looking => self.election.next_deadline(),
            Doing::Leading(l) => Some(l.next_tick()),
            Doing::Learning(l) => Some(l.next_tick(&self.local)),
        }
    }

    /// Our clients' sessions `(id, timeout)` showed activity: a learner reports them to
    /// its leader with its next PING (a leader tracks its own sessions itself).
    pub fn touch(&mut self, sessions: impl IntoIterator<Item = (i64, i32)>) {
        if matches!(self.doing, Doing::Learning(_)) {
            self.local.touches.extend(sessions);
        }
    }

    /// Forwards a client's request to our leader (as a learner in broadcast).
    pub fn forward(
        &mut self,
        data: Bytes,
        auth: Vec<crate::proto::Id>,
        out: &mut Vec<Effect>,
    ) -> Result<(), ProposeError> {
        match &self.doing {
            Doing::Learning(l) if l.role().is_some() => {
                out.push(Effect::Send {
                    to: l.leader(),
                    msg: Msg::Request { data, auth },
                });
                Ok(())
            }
            _ => Err(ProposeError::NotFollowing),
        }
    }

    /// Takes a sync (as the established leader), from a learner or one of our
    /// clients: it is answered (SYNC to the learner, [`Effect::Synced`] for ours) once
    /// everything proposed before it is committed and a quorum has shown, after it
    /// came, that it still follows us.
    pub fn sync(&mut self, reader: Reader, out: &mut Vec<Effect>) -> Result<(), ProposeError> {
        let taken = match &mut self.doing {
            Doing::Leading(l) => l.take_sync(&self.local, reader, out),
            _ => false,
        };
        if taken {
            Ok(())
        } else {
            Err(ProposeError::NotLeading)
        }
    }

    /// Proposes a write (as the established leader): `make` builds the txn for the
    /// zxid it gets (a txn's header holds its own zxid). Returns that zxid.
    pub fn propose(
        &mut self,
        now_ms: u64,
        make: impl FnOnce(Zxid) -> Bytes,
        out: &mut Vec<Effect>,
    ) -> Result<Zxid, ProposeError> {
        let Doing::Leading(l) = &mut self.doing else {
            return Err(ProposeError::NotLeading);
        };
        match l.propose(&mut self.local, make, out) {
            Ok(Some(z)) => Ok(z),
            Ok(None) => Err(ProposeError::NotLeading),
            Err(q) => {
                self.quit(now_ms, q, out);
                Err(ProposeError::NotLeading)
            }
        }
    }
}
