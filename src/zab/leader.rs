//! The leader's side of Zab after election: discovery (a quorum's FOLLOWERINFO fixes
//! the new epoch, a quorum's ACKEPOCH confirms no one is ahead of us), synchronization
//! of each learner (DIFF / TRUNC / SNAP, then NEWLEADER; a quorum's ACK establishes
//! the epoch and commits our history; UPTODATE), then broadcast (PROPOSAL, a quorum's
//! ACK, COMMIT in zxid order; INFORM to observers).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::election::ServerId;
use super::history::{make_zxid, SyncPlan, Txn, Zxid};
use super::messages::{Effect, Msg, Reader, Role};
use super::peer::{Local, Quit};

/// The last counter a zxid can carry; then a new epoch must start.
const COUNTER_MAX: i64 = 0xffff_fffe;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Waiting for a quorum's FOLLOWERINFO to fix the epoch.
    Discovery,
    /// LEADERINFO sent; waiting for a quorum's ACKEPOCH.
    EpochAcks,
    /// Learners synced; waiting for a quorum's ACK of NEWLEADER.
    NewLeaderAcks,
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// FOLLOWERINFO received.
    Info,
    /// ACKEPOCH received: the learner's last logged zxid.
    EpochAcked { last_zxid: Zxid },
    /// Sync and NEWLEADER sent; it gets every proposal from now on.
    Syncing,
    /// NEWLEADER acked.
    Synced,
    /// UPTODATE sent.
    UpToDate,
}

/// A leader's learners as ZooKeeper's `mntr` counts them: connected (followers and
/// observers), synced followers and observers (NEWLEADER acked), syncs waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderFigures {
    pub learners: u32,
    pub synced_followers: u32,
    pub synced_observers: u32,
    pub pending_syncs: u32,
}

#[derive(Debug)]
struct Link {
    conn: u64,
    observer: bool,
    stage: Stage,
    heard_ms: u64,
    /// The ping rounds sent on this connection and not yet answered, oldest first.
    /// A learner answers each PING with one PING, in order, so its next PING answers
    /// the front one.
    pings: VecDeque<u64>,
    /// The latest ping round it answered.
    answered: u64,
    /// It and we ACK and COMMIT cumulatively: it gets one COMMIT for all that one
    /// quorum commits, not one per txn.
    cumulative: bool,
}

impl Link {
    fn forwarding(&self) -> bool {
        self.stage >= Stage::Syncing
    }
}

#[derive(Debug)]
pub(crate) struct Leader {
    me: ServerId,
    started_ms: u64,
    phase: Phase,
    /// The epoch we lead (0 until a quorum's FOLLOWERINFO fixes it).
    epoch: i64,
    links: BTreeMap<ServerId, Link>,
    /// Voters' acceptedEpoch from FOLLOWERINFO, ours included.
    infos: BTreeMap<ServerId, i64>,
    epoch_acks: BTreeSet<ServerId>,
    newleader_acks: BTreeSet<ServerId>,
    /// Our history when the epoch's sync began: NEWLEADER's quorum commits it.
    history_end: Zxid,
    /// The highest proposal of this epoch each voter has acked (not us: our own ack
    /// is our log on disk). A learner's log is a prefix of ours once synced, and it
    /// reaches its disk in order, so an ACK of a zxid stands for every proposal up to
    /// it (ZooKeeper's learners ACK each proposal, in order; ringkeeper's may ACK only
    /// the last of what one write made durable).
    acked: BTreeMap<ServerId, Zxid>,
    /// The counter of this epoch's next proposal: the ones before it, down to the
    /// last committed, are outstanding.
    next_counter: i64,
    ping_at_ms: u64,
    /// The last ping round sent to every learner (ticks send one; so do syncs).
    round: u64,
    /// A round sent for syncs that a quorum has not answered yet: syncs arriving
    /// meanwhile wait for the next one, sent once this one is answered.
    sync_round: Option<u64>,
    /// Syncs waiting, oldest first (see [`Leader::take_sync`]).
    syncs: VecDeque<PendingSync>,
}

/// A sync, answered once everything proposed before it is committed (`after`) and a
/// quorum of voters has answered a ping round sent after it came (`round`).
#[derive(Debug)]
struct PendingSync {
    after: Zxid,
    round: u64,
    from: SyncFrom,
}

#[derive(Debug)]
enum SyncFrom {
    /// A learner's, answered on the connection it came on.
    Learner { id: ServerId, conn: u64 },
    /// One of our clients'.
    Local,
}

impl Leader {
    pub fn start(now_ms: u64, local: &mut Local, out: &mut Vec<Effect>) -> Leader {
        let me = local.cfg.my_id;
        let mut l = Leader {
            me,
            started_ms: now_ms,
            phase: Phase::Discovery,
            epoch: 0,
            links: BTreeMap::new(),
            infos: BTreeMap::from([(me, local.accepted_epoch)]),
            epoch_acks: BTreeSet::new(),
            newleader_acks: BTreeSet::new(),
            history_end: local.history.last_logged(),
            acked: BTreeMap::new(),
            next_counter: 1,
            ping_at_ms: now_ms,
            round: 0,
            sync_round: None,
            syncs: VecDeque::new(),
        };
        l.maybe_fix_epoch(local, out);
        l
    }

    pub fn role(&self) -> Option<Role> {
        (self.phase == Phase::Broadcast).then_some(Role::Leading { epoch: self.epoch })
    }

    /// What `mntr` reports of a leader's learners.
    pub fn figures(&self) -> LeaderFigures {
        let synced = |observer: bool| {
            self.links
                .values()
                .filter(|l| l.observer == observer && l.stage >= Stage::Synced)
                .count() as u32
        };
        LeaderFigures {
            learners: self.links.len() as u32,
            synced_followers: synced(false),
            synced_observers: synced(true),
            pending_syncs: self
                .syncs
                .iter()
                .filter(|s| matches!(s.from, SyncFrom::Learner { .. }))
                .count() as u32,
        }
    }

    pub fn connected(&self) -> Vec<ServerId> {
        self.links.keys().copied().collect()
    }

    pub fn next_tick(&self) -> u64 {
        self.ping_at_ms
    }

    fn send(to: ServerId, msg: Msg, out: &mut Vec<Effect>) {
        out.push(Effect::Send { to, msg });
    }

    fn maybe_fix_epoch(&mut self, local: &mut Local, out: &mut Vec<Effect>) {
        if self.phase != Phase::Discovery || !local.cfg.is_quorum(self.infos.keys()) {
            return;
        }
        self.epoch = self.infos.values().max().copied().unwrap_or(0) + 1;
        local.accepted_epoch = self.epoch;
        local.persist_epochs(out);
        self.phase = Phase::EpochAcks;
        for (&to, link) in &self.links {
            if link.stage == Stage::Info {
                Self::send(
                    to,
                    Msg::LeaderInfo {
                        new_epoch: self.epoch,
                        cumulative: link.cumulative,
                    },
                    out,
                );
            }
        }
        // Our own ACKEPOCH: no one can be ahead of us in our own summary.
        self.epoch_acks.insert(self.me);
        self.maybe_start_sync(local, out);
    }

    fn maybe_start_sync(&mut self, local: &mut Local, out: &mut Vec<Effect>) {
        if self.phase != Phase::EpochAcks || !local.cfg.is_quorum(self.epoch_acks.iter()) {
            return;
        }
        local.current_epoch = self.epoch;
        local.persist_epochs(out);
        self.phase = Phase::NewLeaderAcks;
        self.history_end = local.history.last_logged();
        let ready: Vec<ServerId> = self
            .links
            .iter()
            .filter(|(_, l)| matches!(l.stage, Stage::EpochAcked { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.sync(local, id, out);
        }
        self.maybe_establish(local, out);
    }

    /// Brings learner `id` to our log, then sends NEWLEADER.
    fn sync(&mut self, local: &Local, id: ServerId, out: &mut Vec<Effect>) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let Stage::EpochAcked { last_zxid } = link.stage else {
            return;
        };
        let h = &local.history;
        // Before the epoch is established our whole history goes (NEWLEADER's quorum
        // commits it); after, what is committed goes, NEWLEADER, then the proposals
        // in flight, which a follower acks one by one (an observer waits for INFORMs).
        let upto = if self.phase == Phase::Broadcast {
            h.applied()
        } else {
            h.last_logged()
        };
        let (head, cut, txns) = match h.sync_plan(last_zxid, upto) {
            SyncPlan::Diff { txns } => (Msg::Diff { zxid: upto }, None, txns),
            SyncPlan::Trunc { to, txns } => (Msg::Trunc { zxid: to }, Some(to), txns),
            SyncPlan::Snap { zxid, txns } => (Msg::Snap { zxid }, Some(zxid), txns),
        };
        // What the learner cuts from its log is no longer on its disk: its ACKs of
        // those proposals no longer count (it ACKs them again once it has them back).
        if let Some(cut) = cut {
            if let Some(acked) = self.acked.get_mut(&id) {
                *acked = (*acked).min(cut);
            }
            if cut < self.history_end {
                self.newleader_acks.remove(&id);
            }
        }
        Self::send(id, head, out);
        for txn in txns {
            let zxid = txn.zxid;
            Self::send(id, Msg::Proposal(txn), out);
            if zxid <= h.applied() {
                Self::send(id, Msg::Commit { zxid }, out);
            }
        }
        Self::send(
            id,
            Msg::NewLeader {
                zxid: make_zxid(self.epoch, 0),
            },
            out,
        );
        if self.phase == Phase::Broadcast && !link.observer {
            for txn in h.range(h.applied(), h.last_logged()) {
                Self::send(id, Msg::Proposal(txn), out);
            }
        }
        link.stage = Stage::Syncing;
    }

    fn maybe_establish(&mut self, local: &mut Local, out: &mut Vec<Effect>) {
        if self.phase != Phase::NewLeaderAcks {
            return;
        }
        let ours = (local.persisted >= self.history_end).then_some(&self.me);
        if !local.cfg.is_quorum(self.newleader_acks.iter().chain(ours)) {
            return;
        }
        self.phase = Phase::Broadcast;
        match local.history.commit(self.history_end) {
            Ok(txns) => out.extend(txns.into_iter().map(Effect::Apply)),
            Err(e) => unreachable!("our own history is logged: {e}"),
        }
        for (&to, link) in self.links.iter_mut() {
            if link.stage == Stage::Synced {
                Self::send(to, Msg::UpToDate, out);
                link.stage = Stage::UpToDate;
            }
        }
    }

    pub fn on_message(
        &mut self,
        now_ms: u64,
        local: &mut Local,
        from: ServerId,
        conn: u64,
        msg: Msg,
        out: &mut Vec<Effect>,
    ) -> Result<(), Quit> {
        if let Msg::LearnerInfo {
            accepted_epoch,
            observer,
            cumulative,
        } = msg
        {
            let observer = observer || !local.cfg.is_voter(from);
            let cumulative = cumulative && local.cfg.cumulative;
            self.links.insert(
                from,
                Link {
                    conn,
                    observer,
                    stage: Stage::Info,
                    heard_ms: now_ms,
                    pings: VecDeque::new(),
                    answered: 0,
                    cumulative,
                },
            );
            if self.phase == Phase::Discovery {
                if !observer {
                    self.infos.insert(from, accepted_epoch);
                    self.maybe_fix_epoch(local, out);
                }
            } else if accepted_epoch > self.epoch {
                return Err(Quit(format!(
                    "learner {from} accepted epoch {accepted_epoch}, beyond ours ({})",
                    self.epoch
                )));
            } else {
                Self::send(
                    from,
                    Msg::LeaderInfo {
                        new_epoch: self.epoch,
                        cumulative,
                    },
                    out,
                );
            }
            return Ok(());
        }
        let last_proposed = self.last_proposed();
        let Some(link) = self.links.get_mut(&from).filter(|l| l.conn == conn) else {
            return Ok(()); // a connection we no longer hold
        };
        link.heard_ms = now_ms;
        let voter = !link.observer;
        match msg {
            Msg::Ping { touches } => {
                if let Some(round) = link.pings.pop_front() {
                    link.answered = round;
                }
                if !touches.is_empty() {
                    out.push(Effect::Touched(touches));
                }
                self.answer_syncs(local, out);
            }
            Msg::AckEpoch {
                current_epoch,
                last_zxid,
            } if link.stage == Stage::Info && self.phase > Phase::Discovery => {
                // -1: the learner had accepted this epoch before (from whichever
                // leader). It may join, but only learners that accepted the epoch from
                // us make its quorum: two leaders of one epoch would need a member
                // that accepted it from both.
                let fresh = current_epoch != -1;
                let ours = (local.current_epoch, local.history.last_logged());
                if fresh && (current_epoch, last_zxid) > ours {
                    return Err(Quit(format!(
                        "learner {from} is ahead of us: epoch {current_epoch}, zxid {last_zxid:#x} against {}, {:#x}",
                        ours.0, ours.1
                    )));
                }
                link.stage = Stage::EpochAcked { last_zxid };
                if voter && fresh {
                    self.epoch_acks.insert(from);
                }
                if self.phase >= Phase::NewLeaderAcks {
                    self.sync(local, from, out);
                } else {
                    self.maybe_start_sync(local, out);
                }
            }
            Msg::Ack { zxid }
                if zxid == make_zxid(self.epoch, 0) && link.stage == Stage::Syncing =>
            {
                link.stage = Stage::Synced;
                if self.phase == Phase::Broadcast {
                    Self::send(from, Msg::UpToDate, out);
                    link.stage = Stage::UpToDate;
                } else {
                    if voter {
                        self.newleader_acks.insert(from);
                    }
                    self.maybe_establish(local, out);
                }
            }
            Msg::Ack { zxid } => {
                // Only ACKs of this epoch's proposals count (none from before, none of
                // a zxid not proposed yet).
                let proposed = zxid > make_zxid(self.epoch, 0) && zxid <= last_proposed;
                if voter && link.forwarding() && proposed {
                    let acked = self.acked.entry(from).or_insert(0);
                    if zxid > *acked {
                        *acked = zxid;
                        self.commit_ready(local, out);
                    }
                }
            }
            Msg::Revalidate {
                session_id,
                timeout_ms,
            } => out.push(Effect::Revalidate {
                from,
                session_id,
                timeout_ms,
            }),
            Msg::Request { data, auth } => {
                // A client's request a learner forwards: the driver turns it into a
                // txn (as ZooKeeper's PrepRequestProcessor does) and proposes that.
                out.push(Effect::Forwarded { from, data, auth });
            }
            other => {
                out.push(Effect::Warn(format!(
                    "learner {from} sent {other:?} in {:?}; closing its connection",
                    link.stage
                )));
                out.push(Effect::Disconnect { peer: from });
                self.links.remove(&from);
            }
        }
        Ok(())
    }

    pub fn on_disconnected(&mut self, peer: ServerId, conn: u64) {
        if self.links.get(&peer).is_some_and(|l| l.conn == conn) {
            self.links.remove(&peer);
        }
    }

    /// Commits, in zxid order, every proposal a quorum has on disk.
    fn commit_ready(&mut self, local: &mut Local, out: &mut Vec<Effect>) {
        self.commit_quorum_acked(local, out);
        self.answer_syncs(local, out);
    }

    /// The last proposal of this epoch (its zxid with counter 0 if none yet).
    fn last_proposed(&self) -> Zxid {
        make_zxid(self.epoch, self.next_counter - 1)
    }

    /// The highest outstanding proposal a quorum has on disk, if any: every one up to
    /// it commits.
    fn quorum_acked(&self, local: &Local) -> Option<Zxid> {
        let committed = local.history.applied();
        let last = self.last_proposed();
        if self.phase != Phase::Broadcast || last <= committed {
            return None;
        }
        let on_disk = |id: &ServerId| -> Zxid {
            if *id == self.me {
                local.persisted
            } else {
                self.acked.get(id).copied().unwrap_or(0)
            }
        };
        // The largest zxid that a quorum's disks all reach: try each member's, the
        // highest first.
        let mut reach: Vec<Zxid> = self
            .acked
            .values()
            .copied()
            .chain([local.persisted])
            .filter(|z| *z > committed)
            .collect();
        reach.sort_unstable_by(|a, b| b.cmp(a));
        reach.dedup();
        let ids: Vec<ServerId> = self.acked.keys().copied().chain([self.me]).collect();
        reach
            .into_iter()
            .find(|&z| {
                local
                    .cfg
                    .is_quorum(ids.iter().filter(|id| on_disk(id) >= z))
            })
            .map(|z| z.min(last))
    }

    fn commit_quorum_acked(&mut self, local: &mut Local, out: &mut Vec<Effect>) {
        let Some(upto) = self.quorum_acked(local) else {
            return;
        };
        let txns = match local.history.commit(upto) {
            Ok(t) => t,
            Err(e) => unreachable!("an outstanding proposal is logged: {e}"),
        };
        for (&to, link) in &self.links {
            if link.forwarding() && link.cumulative && !link.observer {
                Self::send(to, Msg::Commit { zxid: upto }, out);
            }
        }
        for txn in txns {
            for (&to, link) in &self.links {
                if !link.forwarding() || link.cumulative && !link.observer {
                    continue;
                }
                let msg = if link.observer {
                    Msg::Inform(txn.clone())
                } else {
                    Msg::Commit { zxid: txn.zxid }
                };
                Self::send(to, msg, out);
            }
            out.push(Effect::Apply(txn));
        }
    }

    /// A sync, from a learner (for one of its clients) or from one of ours. It is
    /// answered once everything proposed before it is committed, and once a quorum of
    /// voters has answered a PING sent after it came: they still follow us then, so
    /// no other leader can have committed anything we have not (a leader cut off or
    /// hung past syncLimit may not know yet that it was replaced, and would otherwise
    /// answer a read after sync from a stale tree). False if it cannot be answered
    /// here (a learner we do not hold, or a sync of our clients from another epoch).
    pub fn take_sync(&mut self, local: &Local, reader: Reader, out: &mut Vec<Effect>) -> bool {
        let from = match reader {
            Reader::Learner(id) => match self.links.get(&id) {
                Some(link) => SyncFrom::Learner {
                    id,
                    conn: link.conn,
                },
                None => return false,
            },
            Reader::Local { epoch } if epoch == self.epoch => SyncFrom::Local,
            Reader::Local { .. } => return false,
        };
        if self.phase != Phase::Broadcast {
            return false;
        }
        self.syncs.push_back(PendingSync {
            after: local.history.last_logged(),
            round: self.round + 1,
            from,
        });
        if self.sync_round.is_none() {
            self.ping_round(out);
            self.sync_round = Some(self.round);
        }
        // An ensemble of one has its quorum here.
        self.answer_syncs(local, out);
        true
    }

    /// Sends every learner in broadcast (UPTODATE sent) a PING of a new round.
    /// Learners that are still syncing get none: ZooKeeper's ignore a PING until
    /// UPTODATE, so counting one sent before it would pair their answers with the
    /// wrong rounds.
    fn ping_round(&mut self, out: &mut Vec<Effect>) {
        self.round += 1;
        for (&to, link) in self.links.iter_mut() {
            if link.stage != Stage::UpToDate {
                continue;
            }
            link.pings.push_back(self.round);
            Self::send(
                to,
                Msg::Ping {
                    touches: Vec::new(),
                },
                out,
            );
        }
    }

    /// The latest ping round a quorum of voters (us included) has answered.
    fn confirmed_round(&self, local: &Local) -> u64 {
        let mut rounds: Vec<u64> = self
            .links
            .iter()
            .filter(|(id, l)| !l.observer && l.stage == Stage::UpToDate && local.cfg.is_voter(**id))
            .map(|(_, l)| l.answered)
            .collect();
        rounds.push(u64::MAX);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let need = local.cfg.voters.len() / 2 + 1;
        rounds.get(need - 1).copied().unwrap_or(0)
    }

    /// Answers the syncs that are due, oldest first, and sends the next sync round
    /// when syncs wait for one.
    fn answer_syncs(&mut self, local: &Local, out: &mut Vec<Effect>) {
        if self.syncs.is_empty() && self.sync_round.is_none() {
            return;
        }
        let confirmed = self.confirmed_round(local);
        let applied = local.history.applied();
        while let Some(s) = self.syncs.front() {
            if s.after > applied || s.round > confirmed {
                break;
            }
            match self.syncs.pop_front().map(|s| s.from) {
                Some(SyncFrom::Learner { id, conn })
                    if self.links.get(&id).is_some_and(|l| l.conn == conn) =>
                {
                    Self::send(id, Msg::Sync, out)
                }
                Some(SyncFrom::Local) => out.push(Effect::Synced),
                // Its learner's connection closed: the learner forgot it.
                _ => {}
            }
        }
        if self.sync_round.is_some_and(|r| r <= confirmed) {
            self.sync_round = None;
        }
        if self.sync_round.is_none() && self.syncs.back().is_some_and(|s| s.round > self.round) {
            self.ping_round(out);
            self.sync_round = Some(self.round);
        }
    }

    pub fn on_persisted(
        &mut self,
        _now_ms: u64,
        local: &mut Local,
        out: &mut Vec<Effect>,
    ) -> Result<(), Quit> {
        match self.phase {
            Phase::NewLeaderAcks => self.maybe_establish(local, out),
            Phase::Broadcast => self.commit_ready(local, out),
            _ => {}
        }
        Ok(())
    }

    /// Proposes `data`; None until the epoch is established.
    /// Proposes the txn `make` builds for the zxid it is given (a txn's header holds
    /// its own zxid); None until the epoch is established.
    pub fn propose(
        &mut self,
        local: &mut Local,
        make: impl FnOnce(Zxid) -> Bytes,
        out: &mut Vec<Effect>,
    ) -> Result<Option<Zxid>, Quit> {
        if self.phase != Phase::Broadcast {
            return Ok(None);
        }
        if self.next_counter > COUNTER_MAX {
            // ZooKeeper does the same: a new epoch through a new election.
            return Err(Quit(format!(
                "the zxid counter of epoch {} is spent: a new epoch must start",
                self.epoch
            )));
        }
        let zxid = make_zxid(self.epoch, self.next_counter);
        self.next_counter += 1;
        let txn = Txn {
            zxid,
            data: make(zxid),
        };
        if let Err(e) = local.history.append(txn.clone()) {
            unreachable!("our own proposal follows our log: {e}");
        }
        out.push(Effect::Append(txn.clone()));
        for (&to, link) in &self.links {
            if link.forwarding() && !link.observer {
                Self::send(to, Msg::Proposal(txn.clone()), out);
            }
        }
        self.commit_ready(local, out);
        Ok(Some(zxid))
    }

    pub fn tick(
        &mut self,
        now_ms: u64,
        local: &mut Local,
        out: &mut Vec<Effect>,
    ) -> Result<(), Quit> {
        // Learners unheard for syncLimit (initLimit until UPTODATE: they get no PING
        // before it) are let go; they will look again and come back.
        let (sync_ms, init_ms) = (local.cfg.sync_ms(), local.cfg.init_ms());
        let silent: Vec<ServerId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                let allowed = if l.stage == Stage::UpToDate {
                    sync_ms
                } else {
                    init_ms
                };
                now_ms >= l.heard_ms + allowed
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in silent {
            self.links.remove(&peer);
            out.push(Effect::Disconnect { peer });
        }
        if self.phase != Phase::Broadcast {
            if now_ms >= self.started_ms + local.cfg.init_ms() {
                return Err(Quit(format!(
                    "no quorum synced with us within initLimit (epoch {})",
                    self.epoch
                )));
            }
        } else {
            let synced = self
                .links
                .iter()
                .filter(|(_, l)| l.stage >= Stage::Synced)
                .map(|(id, _)| id);
            if !local.cfg.is_quorum(synced.chain([&self.me])) {
                return Err(Quit(format!(
                    "lost the quorum of synced followers (epoch {})",
                    self.epoch
                )));
            }
        }
        if now_ms >= self.ping_at_ms {
            self.ping_round(out);
            self.ping_at_ms = now_ms + local.cfg.tick_ms / 2;
        }
        Ok(())
    }
}
