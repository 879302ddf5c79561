//! A follower's or observer's side of Zab after election: discovery (FOLLOWERINFO,
//! LEADERINFO, ACKEPOCH), synchronization (DIFF / TRUNC / SNAP, the leader's txns,
//! NEWLEADER, UPTODATE) and broadcast (PROPOSAL logged then ACKed, COMMIT applied;
//! INFORM for observers).

use super::election::ServerId;
use super::history::{epoch_of, make_zxid, Zxid};
use super::messages::{Effect, Msg, Role};
use super::peer::{Local, Quit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// FOLLOWERINFO sent; waiting for LEADERINFO.
    Discovery,
    /// ACKEPOCH sent; taking the leader's log.
    Syncing,
    /// NEWLEADER received; its ACK waits for the log to be on disk up to `logged`.
    /// UPTODATE then commits, up to `commit`, the leader's history of earlier epochs
    /// and what the sync's DIFF, TRUNC or SNAP named as committed.
    NewLeader {
        logged: Zxid,
        commit: Zxid,
    },
    /// NEWLEADER acked; waiting for UPTODATE.
    Synced {
        commit: Zxid,
    },
    Broadcast,
}

#[derive(Debug)]
pub(crate) struct Learner {
    leader: ServerId,
    observer: bool,
    stage: Stage,
    /// The epoch the leader proposed (0 before LEADERINFO).
    epoch: i64,
    started_ms: u64,
    heard_ms: u64,
    /// Proposals of this epoch logged but not yet acked, in order.
    unacked: Vec<Zxid>,
    /// The zxid the sync's DIFF, TRUNC or SNAP carried: the leader had committed
    /// its log up to there, and our log up to there is the same once it is applied.
    /// Txns of this epoch we logged before a reconnect and already hold get no
    /// COMMIT in the sync (ZooKeeper's learners replay their whole log into the
    /// tree when they rejoin); without this they would wait for the next commit.
    sync_committed: Zxid,
    /// The leader and we ACK cumulatively (LEADERINFO said so): one ACK for
    /// everything a write of our log made durable.
    cumulative: bool,
}

impl Learner {
    pub fn start(
        now_ms: u64,
        leader: ServerId,
        observer: bool,
        local: &Local,
        out: &mut Vec<Effect>,
    ) -> Learner {
        out.push(Effect::Connect { leader });
        out.push(Effect::Send {
            to: leader,
            msg: Msg::LearnerInfo {
                accepted_epoch: local.accepted_epoch,
                observer,
                cumulative: local.cfg.cumulative,
            },
        });
        Learner {
            leader,
            observer,
            stage: Stage::Discovery,
            epoch: 0,
            started_ms: now_ms,
            heard_ms: now_ms,
            unacked: Vec::new(),
            sync_committed: 0,
            cumulative: false,
        }
    }

    pub fn leader(&self) -> ServerId {
        self.leader
    }

    pub fn role(&self) -> Option<Role> {
        (self.stage == Stage::Broadcast).then_some(if self.observer {
            Role::Observing {
                leader: self.leader,
                epoch: self.epoch,
            }
        } else {
            Role::Following {
                leader: self.leader,
                epoch: self.epoch,
            }
        })
    }

    /// How long the leader may be silent: initLimit until we are synced (it may be
    /// waiting for a quorum of learners, or sending a snapshot), syncLimit after, as
    /// ZooKeeper's learners time out their socket reads.
    fn silence_ms(&self, local: &Local) -> u64 {
        if self.stage == Stage::Broadcast {
            local.cfg.sync_ms()
        } else {
            local.cfg.init_ms()
        }
    }

    /// When `tick` must run: when the leader would have been silent too long.
    pub fn next_tick(&self, local: &Local) -> u64 {
        let silent = self.heard_ms + self.silence_ms(local);
        if self.stage == Stage::Broadcast {
            silent
        } else {
            silent.min(self.started_ms + local.cfg.init_ms())
        }
    }

    fn send(&self, msg: Msg, out: &mut Vec<Effect>) {
        out.push(Effect::Send {
            to: self.leader,
            msg,
        });
    }

    pub fn tick(&mut self, now_ms: u64, local: &Local, _out: &mut Vec<Effect>) -> Result<(), Quit> {
        if self.stage != Stage::Broadcast && now_ms >= self.started_ms + local.cfg.init_ms() {
            return Err(Quit(format!(
                "leader {} did not sync us within initLimit",
                self.leader
            )));
        }
        if now_ms >= self.heard_ms + self.silence_ms(local) {
            let limit = if self.stage == Stage::Broadcast {
                "syncLimit"
            } else {
                "initLimit"
            };
            return Err(Quit(format!(
                "nothing from leader {} within {limit}",
                self.leader
            )));
        }
        Ok(())
    }

    pub fn on_message(
        &mut self,
        now_ms: u64,
        local: &mut Local,
        msg: Msg,
        out: &mut Vec<Effect>,
    ) -> Result<(), Quit> {
        self.heard_ms = now_ms;
        let bad = |what: String| Err(Quit(what));
        match (self.stage, msg) {
            (_, Msg::Ping { .. }) => {
                let touches = std::mem::take(&mut local.touches).into_iter().collect();
                self.send(Msg::Ping { touches }, out)
            }
            (Stage::Broadcast, Msg::Sync) => out.push(Effect::Synced),
            // We check reconnecting sessions against our own replicated table and
            // send no REVALIDATE; an answer is harmless.
            (_, Msg::Revalidated { .. }) => {}
            (
                Stage::Discovery,
                Msg::LeaderInfo {
                    new_epoch,
                    cumulative,
                },
            ) => {
                self.cumulative = cumulative && local.cfg.cumulative;
                // An epoch above ours is accepted (and persisted) and our currentEpoch
                // goes with the ACKEPOCH; an equal one, accepted before from any
                // leader, is answered with -1, as ZooKeeper does: the leader lets us
                // join, but does not count us toward its epoch's quorum.
                if new_epoch < local.accepted_epoch {
                    return bad(format!(
                        "leader {} proposed epoch {new_epoch}, below our accepted epoch {}",
                        self.leader, local.accepted_epoch
                    ));
                }
                let current_epoch = if new_epoch > local.accepted_epoch {
                    local.accepted_epoch = new_epoch;
                    local.persist_epochs(out);
                    local.current_epoch
                } else {
                    -1
                };
                self.epoch = new_epoch;
                self.stage = Stage::Syncing;
                self.send(
                    Msg::AckEpoch {
                        current_epoch,
                        last_zxid: local.history.last_logged(),
                    },
                    out,
                );
            }
            (Stage::Syncing, Msg::Diff { zxid }) => self.sync_committed = zxid,
            (Stage::Syncing, Msg::Trunc { zxid }) => {
                self.sync_committed = zxid;
                if let Err(e) = local.history.truncate(zxid) {
                    return bad(format!("TRUNC from leader {}: {e}", self.leader));
                }
                local.persisted = local.persisted.min(zxid);
                out.push(Effect::Truncate { to: zxid });
            }
            (Stage::Syncing, Msg::Snap { zxid }) => {
                self.sync_committed = zxid;
                local.history.install_snapshot(zxid);
                local.persisted = zxid;
                out.push(Effect::InstallSnapshot {
                    leader: self.leader,
                    zxid,
                });
            }
            (
                Stage::Syncing | Stage::NewLeader { .. } | Stage::Synced { .. } | Stage::Broadcast,
                Msg::Proposal(txn),
            ) => {
                if self.observer && self.stage == Stage::Broadcast {
                    return bad(format!(
                        "PROPOSAL to an observer from leader {}",
                        self.leader
                    ));
                }
                let zxid = txn.zxid;
                if let Err(e) = local.history.append(txn.clone()) {
                    return bad(format!("PROPOSAL from leader {}: {e}", self.leader));
                }
                out.push(Effect::Append(txn));
                // This epoch's proposals are acked one by one once on disk; the
                // history before NEWLEADER is acked as a whole by NEWLEADER's ACK.
                if epoch_of(zxid) == self.epoch && !self.observer {
                    self.unacked.push(zxid);
                }
            }
            (
                Stage::Syncing | Stage::NewLeader { .. } | Stage::Synced { .. } | Stage::Broadcast,
                Msg::Commit { zxid },
            ) => {
                self.apply(local, zxid, out)?;
            }
            // INFORMs follow NEWLEADER when an observer joins an established epoch.
            (
                Stage::NewLeader { .. } | Stage::Synced { .. } | Stage::Broadcast,
                Msg::Inform(txn),
            ) if self.observer => {
                let zxid = txn.zxid;
                if let Err(e) = local.history.append(txn.clone()) {
                    return bad(format!("INFORM from leader {}: {e}", self.leader));
                }
                out.push(Effect::Append(txn));
                self.apply(local, zxid, out)?;
            }
            (Stage::Syncing, Msg::NewLeader { zxid }) => {
                if epoch_of(zxid) != self.epoch {
                    return bad(format!(
                        "NEWLEADER for epoch {} from leader {} of epoch {}",
                        epoch_of(zxid),
                        self.leader,
                        self.epoch
                    ));
                }
                // Proposals of this epoch before NEWLEADER (a ZooKeeper leader sends
                // those in flight there; ringkeeper's send them after) are committed
                // by their own COMMITs, not by UPTODATE.
                let logged = local.history.last_logged();
                let earlier = local.history.last_before(make_zxid(self.epoch, 0));
                self.stage = Stage::NewLeader {
                    logged,
                    commit: earlier.max(self.sync_committed.min(logged)),
                };
            }
            (Stage::Synced { commit }, Msg::UpToDate) => {
                self.apply(local, commit, out)?;
                self.stage = Stage::Broadcast;
                // As ZooKeeper's learners do (its leaders take it and move on).
                self.send(
                    Msg::Ack {
                        zxid: make_zxid(self.epoch, 0),
                    },
                    out,
                );
            }
            (stage, msg) => {
                return bad(format!(
                    "unexpected {msg:?} from leader {} in {stage:?}",
                    self.leader
                ))
            }
        }
        self.on_persisted(local, out)
    }

    fn apply(&mut self, local: &mut Local, zxid: Zxid, out: &mut Vec<Effect>) -> Result<(), Quit> {
        match local.history.commit(zxid) {
            Ok(txns) => {
                out.extend(txns.into_iter().map(Effect::Apply));
                Ok(())
            }
            Err(e) => Err(Quit(format!("COMMIT from leader {}: {e}", self.leader))),
        }
    }

    /// The log reached the disk further: ACK what is now there.
    pub fn on_persisted(&mut self, local: &mut Local, out: &mut Vec<Effect>) -> Result<(), Quit> {
        if let Stage::NewLeader { logged, commit } = self.stage {
            if local.persisted >= logged {
                // The leader's history is on our disk: now we are in its epoch.
                local.current_epoch = self.epoch;
                local.persist_epochs(out);
                self.send(
                    Msg::Ack {
                        zxid: make_zxid(self.epoch, 0),
                    },
                    out,
                );
                self.stage = Stage::Synced { commit };
            }
        }
        if matches!(self.stage, Stage::Synced { .. } | Stage::Broadcast) {
            let n = self.unacked.partition_point(|z| *z <= local.persisted);
            // Cumulatively, one ACK stands for all of them: the last one's.
            let skip = if self.cumulative {
                n.saturating_sub(1)
            } else {
                0
            };
            for zxid in self.unacked.drain(..n).skip(skip) {
                out.push(Effect::Send {
                    to: self.leader,
                    msg: Msg::Ack { zxid },
                });
            }
        }
        Ok(())
    }
}
