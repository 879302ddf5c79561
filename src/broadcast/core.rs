//! The ordering core, sans IO: it validates each write against the current state (as
//! ZooKeeper's PrepRequestProcessor does), assigns it the next zxid, applies it to the
//! working tree and frames it for the log, and says what each step means for the
//! shards (an [`Entry`]: the reply, the watch events, the tree version at a cut).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::messages::{CoreOp, Effect, Entry, Granted, SessionSummary, ToCore};
use crate::config::Config;
use crate::proto::{ErrorCode, MultiResult, Response};
use crate::session::table::{Session, SessionTable, PASSWD_BYTES};
use crate::tree::{Applied, DataTree, Requester, Trigger, Txn};
use crate::zab::messages::Reader;
use ringkeeper_storage::record::encode_record;
use ringkeeper_storage::snapshot::SnapSession;

/// Most requests folded into one batch.
pub const BATCH_REQUESTS_MAX: usize = 1024;

/// The time, as the driver read it for the core: the core reads no clock itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// A monotonic clock's ms (session deadlines).
    pub mono_ms: u64,
    /// The wall clock's ms since the epoch (txn times, TTLs, session ids).
    pub wall_ms: i64,
}

/// Txn records framed for the log but not yet handed to it.
#[derive(Default)]
pub struct Framed {
    pub bytes: Vec<u8>,
    pub first_zxid: Option<i64>,
    pub count: u64,
}

/// The core's state: the working tree, the session table, the zxid counter.
pub struct Core {
    cfg: Arc<Config>,
    tree: DataTree,
    sessions: SessionTable,
    /// The time the driver last gave (see [`Core::set_now`]).
    now: Now,
    /// Draws for standalone session passwords, seeded by the driver.
    rng: rand::rngs::StdRng,
    last_cleanup_ms: u64,
    framed: Framed,
    /// Log records of the committed txns a learner applied (for a rebase: see
    /// `take_applied_records`).
    applied_records: Vec<u8>,
    scratch: Vec<u8>,
    /// The log failed: no more txns; writes are refused, reads go on.
    pub(super) read_only: bool,
    /// A member without a quorum in read-only mode: the sessions it grants live here
    /// only (these ids), writes and syncs are refused.
    quorumless: Option<std::collections::HashSet<i64>>,
    /// See `cut`.
    cut_for_queued: Option<Arc<DataTree>>,
    /// Where this core's orders come from and go (see [`Ordering`]).
    ordering: Ordering,
    /// A leader's first zxid of its epoch: its txns count from here.
    zxid_floor: i64,
    /// The session and cxid of the request being ordered (a txn header holds them).
    ctx: (i64, i32),
    /// As a leader: each txn framed, as ZooKeeper serializes it, to propose.
    proposals: Vec<(i64, Bytes)>,
    /// As a learner: what to send the leader, and what its answers are for.
    learner: LearnerState,
    /// Our clients' syncs waiting for Zab's answer, oldest first: (session,
    /// connection, xid, path). A learner's wait for the leader's SYNC; a leader's for
    /// its read round (see [`Reader`]).
    syncs: VecDeque<(i64, u64, i32, String)>,
    /// As a leader: the syncs (learners' and our clients') to hand to Zab.
    syncs_due: Vec<Reader>,
}

/// Where a core's writes are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// Here, alone: a txn is done once it is on our disk.
    Standalone,
    /// Here, as an ensemble's leader: each txn is proposed, and done once a quorum has
    /// it on disk.
    Leader,
    /// At our leader: requests are forwarded to it, and answered when its commits
    /// reach us (also while looking for a leader, when nothing is forwarded).
    Learner,
}

/// A request a learner forwarded, answered when its txn commits here.
#[derive(Debug)]
struct Forwarded {
    conn_id: u64,
    op: CoreOp,
    /// The session had reads queued ahead of it: they must not see its txn.
    cut_before: bool,
}

/// Requests a learner forwarded and waits on.
#[derive(Debug, Default)]
struct LearnerState {
    /// REQUEST payloads to send (session, cxid, type, request record) with the
    /// session's identities.
    forwards: Vec<(Bytes, Vec<crate::proto::Id>)>,
    /// Sessions seen alive since the last report, with their timeouts.
    touches: Vec<(i64, i32)>,
    /// (session, cxid) -> the reply to make when the txn commits.
    replies: HashMap<(i64, i32), Forwarded>,
    /// New sessions asked for: session -> (shard, connection).
    connects: HashMap<i64, (usize, u64)>,
}

/// Bytes of the header a learner puts before a forwarded request record: session
/// (8), cxid (4), type (4).
const FORWARD_HEADER_BYTES: usize = 16;

impl Core {
    /// A core continuing from a recovered tree and session table, at time `now`;
    /// `seed` seeds its random draws (session passwords). Recovered sessions get a
    /// full timeout from now to reconnect, as ZooKeeper gives them.
    pub fn new(
        cfg: Arc<Config>,
        tree: DataTree,
        sessions: &[SnapSession],
        now: Now,
        seed: [u8; 32],
    ) -> Core {
        let mut table = SessionTable::new(0, now.wall_ms);
        for s in sessions {
            table.insert(
                s.id,
                Session {
                    timeout_ms: s.timeout_ms,
                    passwd: s.passwd,
                    deadline_ms: now.mono_ms + s.timeout_ms.max(0) as u64,
                    attached: None,
                },
            );
        }
        Core {
            cfg,
            tree,
            sessions: table,
            now,
            rng: rand::SeedableRng::from_seed(seed),
            last_cleanup_ms: 0,
            framed: Framed::default(),
            applied_records: Vec::new(),
            scratch: Vec::new(),
            read_only: false,
            quorumless: None,
            cut_for_queued: None,
            ordering: Ordering::Standalone,
            zxid_floor: 0,
            ctx: (0, 0),
            proposals: Vec::new(),
            learner: LearnerState::default(),
            syncs: VecDeque::new(),
            syncs_due: Vec::new(),
        }
    }

    /// A core of ensemble member `my_id`: session ids carry the id in their top byte
    /// and passwords are derived from the id as ZooKeeper's are, so that any member
    /// can check a reconnecting client's. It starts as a learner (not leading).
    pub fn member(
        cfg: Arc<Config>,
        my_id: i64,
        tree: DataTree,
        sessions: &[SnapSession],
        now: Now,
    ) -> Core {
        // No random draws: a member's passwords are derived from the session id.
        let mut core = Core::new(cfg, tree, sessions, now, [0; 32]);
        let mut table = SessionTable::new(my_id as u8, now.wall_ms);
        for (id, s) in core.sessions.iter() {
            table.insert(*id, s.clone());
        }
        core.sessions = table;
        core.ordering = Ordering::Learner;
        core
    }

    pub fn ordering(&self) -> Ordering {
        self.ordering
    }

    /// Starts ordering as the leader of `epoch`: txns count from its first zxid.
    pub fn lead(&mut self, epoch: i64) {
        self.ordering = Ordering::Leader;
        self.zxid_floor = crate::zab::history::make_zxid(epoch, 1);
        // Every live session gets a full timeout from now: their members reported
        // touches to the old leader, not to us.
        let now = self.now_ms();
        let ids: Vec<i64> = self.sessions.iter().map(|(id, _)| *id).collect();
        for id in ids {
            self.sessions.touch(id, now);
        }
    }

    /// Stops ordering here: requests are forwarded from now on. Requests waiting on
    /// a leader are forgotten (their connections are closed by the caller).
    pub fn learn(&mut self) {
        self.ordering = Ordering::Learner;
        self.learner = LearnerState::default();
        self.syncs.clear();
        self.syncs_due.clear();
        self.proposals.clear();
    }

    /// Replaces the tree and sessions (after the member's storage was reloaded).
    /// Each session gets a full timeout from now.
    pub fn reset(&mut self, tree: DataTree, sessions: &[SnapSession]) {
        self.applied_records.clear();
        let now = self.now_ms();
        self.sessions.clear();
        for s in sessions {
            self.sessions.insert(
                s.id,
                Session {
                    timeout_ms: s.timeout_ms,
                    passwd: s.passwd,
                    deadline_ms: now + s.timeout_ms.max(0) as u64,
                    attached: None,
                },
            );
        }
        self.tree = tree;
        self.framed = Framed::default();
        self.cut_for_queued = None;
    }

    /// As a leader: the txns framed since the last call, as ZooKeeper serializes
    /// them (zxid, bytes), to propose in this order.
    pub fn take_proposals(&mut self) -> Vec<(i64, Bytes)> {
        std::mem::take(&mut self.proposals)
    }

    /// As a leader: the syncs (learners' and our clients') ordered since the last
    /// call, for Zab to answer.
    pub fn take_syncs_due(&mut self) -> Vec<Reader> {
        std::mem::take(&mut self.syncs_due)
    }

    /// As a learner: requests to forward to the leader since the last call.
    pub fn take_forwards(&mut self) -> Vec<(Bytes, Vec<crate::proto::Id>)> {
        std::mem::take(&mut self.learner.forwards)
    }

    /// As a learner: sessions (id, timeout) seen alive since the last call.
    pub fn take_touches(&mut self) -> Vec<(i64, i32)> {
        std::mem::take(&mut self.learner.touches)
    }

    /// A fresh, empty core at a fixed time, with fixed draws (tests).
    pub fn empty(cfg: Arc<Config>) -> Core {
        let now = Now {
            mono_ms: 0,
            wall_ms: 1_700_000_000_000,
        };
        Core::new(cfg, DataTree::new(), &[], now, [7; 32])
    }

    /// The time is now `now` (the driver's clocks; a monotonic reading never goes
    /// back, nor does a wall reading as the core sees it).
    pub fn set_now(&mut self, now: Now) {
        self.now = Now {
            mono_ms: now.mono_ms.max(self.now.mono_ms),
            wall_ms: now.wall_ms.max(self.now.wall_ms),
        };
    }

    /// Stops ordering txns (the log failed) and goes back to `durable`, the tree of
    /// the last txn on disk: from now on every reply (a refusal, a sync, a session
    /// expired) carries a zxid that survives a restart, so a client that saw it is
    /// not refused by the restarted server as being ahead of it.
    pub fn set_read_only(&mut self, durable: &DataTree) {
        self.read_only = true;
        self.tree = durable.clone();
        self.cut_for_queued = None;
    }

    /// A member enters (or leaves) ZooKeeper's read-only mode: while in it, new
    /// sessions are this member's alone, writes and syncs get NOTREADONLY. Leaving,
    /// those sessions are forgotten (their clients are dropped by the driver and find
    /// a member with a quorum).
    pub fn set_quorumless(&mut self, on: bool) {
        if let Some(local) = self.quorumless.take() {
            for id in local {
                self.sessions.remove(id);
            }
        }
        if on {
            self.quorumless = Some(Default::default());
        }
    }

    /// The records framed since the last call.
    pub fn take_framed(&mut self) -> Framed {
        std::mem::take(&mut self.framed)
    }

    /// As learner: the log records of the committed txns applied since the last call,
    /// in zxid order (what a leader's `take_framed` gives for the txns it orders).
    pub fn take_applied_records(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.applied_records)
    }

    /// The session table as a snapshot stores it.
    pub fn session_records(&self) -> Vec<SnapSession> {
        let mut v: Vec<SnapSession> = self
            .sessions
            .iter()
            .map(|(id, s)| SnapSession {
                id: *id,
                timeout_ms: s.timeout_ms,
                passwd: s.passwd,
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Applies a txn to the working tree and frames it for the log.
    fn commit(&mut self, txn: &Txn, zxid: i64, time: i64, triggers: &mut Vec<Trigger>) -> Applied {
        // A closeSession's ZooKeeper form lists the ephemerals it deletes.
        let ephemerals = match txn {
            Txn::CloseSession { session_id } if self.ordering == Ordering::Leader => {
                self.tree.ephemerals_of(*session_id)
            }
            _ => Vec::new(),
        };
        let applied = self.tree.apply(txn, zxid, time, triggers);
        self.frame_with(txn, zxid, time, &ephemerals);
        applied
    }

    /// Frames an already applied txn for the log.
    fn frame(&mut self, txn: &Txn, zxid: i64, time: i64) {
        self.frame_with(txn, zxid, time, &[]);
    }

    fn frame_with(&mut self, txn: &Txn, zxid: i64, time: i64, ephemerals: &[String]) {
        if self.ordering == Ordering::Leader {
            let ctx = crate::zkformat::convert::TxnContext {
                session_id: self.ctx.0,
                cxid: self.ctx.1,
                zxid,
                time_ms: time,
            };
            let z = crate::zkformat::convert::to_zookeeper(txn, ctx, ephemerals);
            self.proposals.push((zxid, Bytes::from(z.to_bytes())));
        }
        let origin = crate::tree::Origin {
            session_id: self.ctx.0,
            cxid: self.ctx.1,
        };
        self.scratch.clear();
        txn.encode_logged(time, origin, &mut self.scratch);
        encode_record(&mut self.framed.bytes, zxid, &self.scratch);
        self.framed.first_zxid.get_or_insert(zxid);
        self.framed.count += 1;
    }

    fn now_ms(&self) -> u64 {
        self.now.mono_ms
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    /// Takes `tree`, the same state as the working tree, in its place (see `rebase`).
    pub(super) fn replace_tree(&mut self, tree: DataTree) {
        debug_assert_eq!(tree.last_zxid(), self.tree.last_zxid());
        self.tree = tree;
    }

    /// Makes the last entry a cut: it carries the tree as it is now. With nothing in
    /// `out`, the last entry is the one pushed before, which may still wait in the log
    /// queue unsealed: the version is kept for `take_cut_for_queued`.
    fn cut(&mut self, out: &mut [Entry]) {
        match out.last_mut() {
            Some(last) => {
                if last.tree.is_none() {
                    last.tree = Some(Arc::new(self.tree.clone()));
                }
            }
            None => {
                if self.cut_for_queued.is_none() {
                    self.cut_for_queued = Some(Arc::new(self.tree.clone()));
                }
            }
        }
    }

    /// The version the last queued entry must carry (if it is still queued), when a
    /// cut was asked for before anything else was stepped since that push.
    pub fn take_cut_for_queued(&mut self) -> Option<Arc<DataTree>> {
        self.cut_for_queued.take()
    }

    /// Ends a batch: its last entry is a cut. Call before handing `out` on.
    pub fn finish_batch(&mut self, out: &mut [Entry]) {
        self.cut(out);
    }

    /// An entry that carries no txn.
    fn entry(&self, triggers: Vec<Trigger>, effect: Effect) -> Entry {
        Entry {
            tree: None,
            triggers,
            effect,
            logged: false,
        }
    }

    /// An entry for the txn just committed.
    fn logged_entry(&self, triggers: Vec<Trigger>, effect: Effect) -> Entry {
        Entry {
            logged: true,
            ..self.entry(triggers, effect)
        }
    }

    fn next_zxid(&self) -> i64 {
        (self.tree.last_zxid() + 1).max(self.zxid_floor)
    }

    /// Orders one message; appends the resulting entries to `out`.
    pub fn step(&mut self, msg: ToCore, out: &mut Vec<Entry>) {
        // A reconnect may move a session with pending work; a request with reads of its
        // session queued ahead of it must not be visible to them.
        if matches!(
            msg,
            ToCore::Connect { .. }
                | ToCore::Request {
                    cut_before: true,
                    ..
                }
        ) {
            self.cut(out);
        }
        self.step_inner(msg, out);
    }

    fn step_inner(&mut self, msg: ToCore, out: &mut Vec<Entry>) {
        match msg {
            ToCore::Touch(ids) => {
                let now = self.now_ms();
                for id in ids {
                    self.sessions.touch(id, now);
                    if self.ordering == Ordering::Learner {
                        if let Some(s) = self.sessions.get(id) {
                            self.learner.touches.push((id, s.timeout_ms));
                        }
                    }
                }
            }
            ToCore::Sessions(reply) => {
                // The asker may have gone (its connection closed): nothing to do then.
                let _ = reply.send(self.session_summaries());
            }
            ToCore::Connect {
                shard,
                conn_id,
                session_id,
                passwd,
                timeout_ms,
            } => self.connect(shard, conn_id, session_id, &passwd, timeout_ms, out),
            ToCore::Request {
                session_id,
                conn_id,
                xid,
                op,
                auth,
                cut_before,
            } => self.request(session_id, conn_id, xid, op, &auth, cut_before, out),
        }
    }

    fn connect(
        &mut self,
        shard: usize,
        conn_id: u64,
        session_id: i64,
        passwd: &[u8],
        timeout_ms: i32,
        out: &mut Vec<Entry>,
    ) {
        let timeout_ms = self.cfg.negotiate_timeout_ms(timeout_ms);
        let now = self.now_ms();
        if let Some(local) = self.quorumless.as_mut() {
            if session_id == 0 {
                // No txn without a leader: the session is this member's own, as a
                // read-only ZooKeeper server's local sessions are.
                let id = self.sessions.next_session_id();
                local.insert(id);
                let pw = crate::zkformat::convert::zookeeper_password(id);
                let effect = self.open_session(id, pw, timeout_ms, (shard, conn_id));
                out.push(self.entry(Vec::new(), effect));
                return;
            }
        }
        if session_id == 0 && self.ordering == Ordering::Learner {
            // The leader makes the session a txn; the client is answered when that
            // commits here (see `apply_committed`).
            let id = self.sessions.next_session_id();
            self.learner.connects.insert(id, (shard, conn_id));
            let mut data = Vec::with_capacity(FORWARD_HEADER_BYTES + 4);
            data.extend_from_slice(&id.to_be_bytes());
            data.extend_from_slice(&0i32.to_be_bytes());
            data.extend_from_slice(&crate::zkformat::txn::txn_type::CREATE_SESSION.to_be_bytes());
            data.extend_from_slice(&timeout_ms.to_be_bytes());
            self.learner.forwards.push((Bytes::from(data), Vec::new()));
            return;
        }
        if session_id == 0 {
            let id = self.sessions.next_session_id();
            let mut pw = [0u8; PASSWD_BYTES];
            if self.ordering == Ordering::Leader {
                pw = crate::zkformat::convert::zookeeper_password(id);
            } else {
                rand::Rng::fill(&mut self.rng, &mut pw[..]);
            }
            if self.read_only {
                // The log takes no writes: a session granted now would not survive a
                // restart, and its client would find it gone. None is granted.
                out.push(
                    self.entry(
                        Vec::new(),
                        Effect::Refused {
                            shard,
                            conn_id,
                            why:
                                "the txn log cannot take writes: no new session can be made durable"
                                    .into(),
                        },
                    ),
                );
                return;
            }
            self.ctx = (id, 0);
            let effect = self.open_session(id, pw, timeout_ms, (shard, conn_id));
            let zxid = self.next_zxid();
            let txn = Txn::CreateSession {
                session_id: id,
                timeout_ms,
                passwd: pw,
            };
            self.commit(&txn, zxid, self.now.wall_ms, &mut Vec::new());
            out.push(self.logged_entry(Vec::new(), effect));
            return;
        }
        let valid = self
            .sessions
            .get(session_id)
            .is_some_and(|s| s.passwd[..] == *passwd);
        if !valid {
            out.push(self.entry(
                Vec::new(),
                Effect::Connected {
                    shard,
                    conn_id,
                    granted: None,
                },
            ));
            return;
        }
        let s = self.sessions.get_mut(session_id).expect("checked above");
        // A reconnecting client keeps its session's original timeout unless it asks
        // for another one, which is renegotiated as on a new session.
        s.timeout_ms = timeout_ms;
        s.attached = Some((shard, conn_id));
        let granted = Granted {
            session_id,
            timeout_ms: s.timeout_ms,
            passwd: s.passwd,
        };
        self.sessions.touch(session_id, now);
        out.push(self.entry(
            Vec::new(),
            Effect::Connected {
                shard,
                conn_id,
                granted: Some(granted),
            },
        ));
        out.push(self.entry(
            Vec::new(),
            Effect::Attached {
                session_id,
                conn_id,
            },
        ));
    }

    /// Enters a new session attached to connection (shard, conn_id); the handshake's
    /// answer granting it.
    fn open_session(
        &mut self,
        id: i64,
        passwd: [u8; PASSWD_BYTES],
        timeout_ms: i32,
        (shard, conn_id): (usize, u64),
    ) -> Effect {
        let now = self.now_ms();
        self.sessions.insert(
            id,
            Session {
                timeout_ms,
                passwd,
                deadline_ms: now + timeout_ms as u64,
                attached: Some((shard, conn_id)),
            },
        );
        Effect::Connected {
            shard,
            conn_id,
            granted: Some(Granted {
                session_id: id,
                timeout_ms,
                passwd,
            }),
        }
    }

    /// As a learner: sends the request to the leader and remembers who to answer
    /// when its txn (or, for a sync, the leader's SYNC) comes back.
    fn forward(
        &mut self,
        session_id: i64,
        conn_id: u64,
        xid: i32,
        op: CoreOp,
        auth: &[crate::proto::Id],
        cut_before: bool,
    ) {
        // The session, then the request's frame (xid, type, record).
        let mut data = Vec::with_capacity(128);
        data.extend_from_slice(&session_id.to_be_bytes());
        op.to_request().encode(xid, &mut data);
        match op {
            CoreOp::Sync { path } => self.syncs.push_back((session_id, conn_id, xid, path)),
            op => {
                self.learner.replies.insert(
                    (session_id, xid),
                    Forwarded {
                        conn_id,
                        op,
                        cut_before,
                    },
                );
            }
        }
        self.learner
            .forwards
            .push((Bytes::from(data), auth.to_vec()));
    }

    /// Answers our oldest waiting sync. As a learner, the leader's SYNC came: every
    /// commit the leader ordered before it has been applied here. As a leader, its
    /// read round is done: what our own clients' writes before it produced is queued
    /// ahead of this reply.
    pub fn synced(&mut self, out: &mut Vec<Entry>) {
        if let Some((session_id, conn_id, xid, path)) = self.syncs.pop_front() {
            let zxid = self.tree.last_zxid();
            let e = self.reply((session_id, conn_id), xid, zxid, 0, Response::Path(path));
            out.push(self.entry(Vec::new(), e));
        }
    }

    /// As a leader: learners report these sessions (id, timeout) alive.
    /// As a leader: a learner's client reconnects with `session_id`. Valid when the
    /// session is alive here (the one table every txn passes through); the reconnect
    /// counts as activity.
    pub fn revalidate(&mut self, session_id: i64) -> bool {
        let now = self.now_ms();
        self.ordering == Ordering::Leader && self.sessions.touch(session_id, now)
    }

    pub fn touched(&mut self, sessions: &[(i64, i32)]) {
        let now = self.now_ms();
        for (id, _) in sessions {
            self.sessions.touch(*id, now);
        }
    }

    /// As a leader: orders a request learner `from` forwarded (REQUEST's data: session,
    /// cxid, type, request record). Its reply is the learner's to make, from the txn;
    /// here it goes nowhere. A request that does not decode is dropped with a log line
    /// (its client times out, as behind a leader that lost it).
    pub fn forwarded(
        &mut self,
        from: i64,
        data: &[u8],
        auth: Vec<crate::proto::Id>,
        out: &mut Vec<Entry>,
    ) {
        if data.len() < FORWARD_HEADER_BYTES {
            tracing::warn!(
                "member {from} forwarded a request of {} bytes: dropped",
                data.len()
            );
            return;
        }
        let session_id = i64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
        let cxid = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
        let op = i32::from_be_bytes(data[12..16].try_into().expect("4 bytes"));
        let body = &data[FORWARD_HEADER_BYTES..];
        if op == crate::zkformat::txn::txn_type::CREATE_SESSION {
            let Some(timeout_ms) = body
                .get(..4)
                .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
            else {
                tracing::warn!(
                    "member {from} forwarded a createSession without its timeout: dropped"
                );
                return;
            };
            if self.read_only {
                return;
            }
            // A session we know already is created again (ZooKeeper's leader orders
            // every createSession it is forwarded): the learner waits for the txn.
            let timeout_ms = self.cfg.negotiate_timeout_ms(timeout_ms);
            let passwd = crate::zkformat::convert::zookeeper_password(session_id);
            let now = self.now_ms();
            self.sessions.insert(
                session_id,
                Session {
                    timeout_ms,
                    passwd,
                    deadline_ms: now + timeout_ms as u64,
                    attached: None,
                },
            );
            self.ctx = (session_id, 0);
            let zxid = self.next_zxid();
            let txn = Txn::CreateSession {
                session_id,
                timeout_ms,
                passwd,
            };
            self.commit(&txn, zxid, self.now.wall_ms, &mut Vec::new());
            out.push(self.logged_entry(Vec::new(), Effect::None));
            return;
        }
        let request = match crate::proto::Request::decode(&data[8..]) {
            Ok((_, r)) => r,
            Err(e) => {
                tracing::warn!(
                    "member {from} forwarded a request that does not decode ({e}): dropped"
                );
                return;
            }
        };
        let Some(op) = CoreOp::from_request(request) else {
            tracing::warn!(
                "member {from} forwarded a request of type {op}, which is not a write: dropped"
            );
            return;
        };
        if let CoreOp::Sync { .. } = op {
            self.syncs_due.push(Reader::Learner(from));
            return;
        }
        let auth = Arc::new(auth);
        self.step(
            ToCore::Request {
                session_id,
                conn_id: REMOTE_CONN,
                xid: cxid,
                op,
                auth,
                cut_before: false,
            },
            out,
        );
    }

    /// Applies a txn committed by the ensemble that this core did not order itself
    /// (as a learner, or a leader's history from before its epoch), and answers the
    /// requests of ours it was for. A txn at or below the tree's last zxid is already
    /// in it (a leader's own).
    pub fn apply_committed(
        &mut self,
        zxid: i64,
        data: &[u8],
        out: &mut Vec<Entry>,
    ) -> Result<(), String> {
        if zxid <= self.tree.last_zxid() {
            return Ok(());
        }
        let z = crate::zkformat::txn::ZkTxn::decode(data)
            .map_err(|e| format!("committed txn {zxid:#x} does not decode: {e}"))?;
        let origin = crate::tree::Origin {
            session_id: z.header.client_id,
            cxid: z.header.cxid,
        };
        let (txn, time) = crate::zkformat::convert::from_zookeeper(z)
            .map_err(|e| format!("committed txn {zxid:#x}: {e}"))?;
        self.scratch.clear();
        txn.encode_logged(time, origin, &mut self.scratch);
        let payload = std::mem::take(&mut self.scratch);
        self.apply_txn(zxid, &txn, time, origin, &payload, out);
        self.scratch = payload;
        Ok(())
    }

    /// As `apply_committed`, for a txn decoded when it was logged.
    pub(crate) fn apply_committed_decoded(
        &mut self,
        d: &super::member::DecodedTxn,
        out: &mut Vec<Entry>,
    ) -> Result<(), String> {
        if d.zxid > self.tree.last_zxid() {
            self.apply_txn(d.zxid, &d.txn, d.time_ms, d.origin, &d.payload, out);
        }
        Ok(())
    }

    /// Applies a committed txn whose log record payload is `payload`.
    fn apply_txn(
        &mut self,
        zxid: i64,
        txn: &Txn,
        time: i64,
        origin: crate::tree::Origin,
        payload: &[u8],
        out: &mut Vec<Entry>,
    ) {
        let (client, cxid) = (origin.session_id, origin.cxid);
        let ours = self.learner.replies.get(&(client, cxid));
        if ours.is_some_and(|f| f.cut_before) {
            // Reads of the session queued ahead of this request must see the tree as
            // it is before it: the entries so far end at a version of their own (the
            // replica may hand several commits to the shards as one batch).
            if let Some(last) = out.last_mut() {
                if last.tree.is_none() {
                    last.tree = Some(Arc::new(self.tree.clone()));
                }
            }
        }
        let mut triggers = Vec::new();
        let applied = self.tree.apply(txn, zxid, time, &mut triggers);
        encode_record(&mut self.applied_records, zxid, payload);
        let now = self.now_ms();
        match txn {
            Txn::CreateSession {
                session_id,
                timeout_ms,
                passwd,
            } => {
                let attached = self.learner.connects.remove(session_id);
                self.sessions.insert(
                    *session_id,
                    Session {
                        timeout_ms: *timeout_ms,
                        passwd: *passwd,
                        deadline_ms: now + *timeout_ms as u64,
                        attached,
                    },
                );
                if let Some((shard, conn_id)) = attached {
                    let effect = Effect::Connected {
                        shard,
                        conn_id,
                        granted: Some(Granted {
                            session_id: *session_id,
                            timeout_ms: *timeout_ms,
                            passwd: *passwd,
                        }),
                    };
                    out.push(self.entry(triggers, effect));
                    return;
                }
            }
            Txn::CloseSession { session_id } => {
                self.sessions.remove(*session_id);
                if let Some(f) = self.learner.replies.remove(&(client, cxid)) {
                    let e = self.reply((client, f.conn_id), cxid, zxid, 0, Response::Empty);
                    out.push(self.entry(std::mem::take(&mut triggers), e));
                }
                out.push(self.entry(
                    triggers,
                    Effect::SessionClosed {
                        session_id: *session_id,
                    },
                ));
                return;
            }
            _ => {}
        }
        let effect = match self.learner.replies.remove(&(client, cxid)) {
            Some(f) => {
                let (err, body) = reply_for(txn, applied, &f.op);
                self.reply((client, f.conn_id), cxid, zxid, err, body)
            }
            None => Effect::None,
        };
        out.push(self.entry(triggers, effect));
    }

    fn reply(
        &self,
        (session_id, conn_id): (i64, u64),
        xid: i32,
        zxid: i64,
        err: i32,
        body: Response,
    ) -> Effect {
        Effect::Reply {
            session_id,
            conn_id,
            xid,
            zxid,
            err,
            body,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        session_id: i64,
        conn_id: u64,
        xid: i32,
        op: CoreOp,
        auth: &[crate::proto::Id],
        cut_before: bool,
        out: &mut Vec<Entry>,
    ) {
        if self.sessions.get(session_id).is_none() {
            if conn_id == REMOTE_CONN && self.ordering == Ordering::Leader {
                self.order_for_gone_session(session_id, xid, &op, out);
                return;
            }
            let zxid = self.tree.last_zxid();
            let e = self.reply(
                (session_id, conn_id),
                xid,
                zxid,
                ErrorCode::SessionExpired.code(),
                Response::Empty,
            );
            out.push(self.entry(Vec::new(), e));
            return;
        }
        if self.read_only || self.quorumless.is_some() {
            self.refuse(session_id, conn_id, xid, op, out);
            return;
        }
        if self.ordering == Ordering::Learner {
            self.forward(session_id, conn_id, xid, op, auth, cut_before);
            return;
        }
        self.ctx = (session_id, xid);
        let who = Requester {
            session_id,
            auth,
            extended_types: self.cfg.extended_types_enabled,
            enforce_quota: self.cfg.enforce_quota,
        };
        let zxid = self.next_zxid();
        let time = self.now.wall_ms;
        let mut triggers = Vec::new();
        let (err, body) = match op {
            CoreOp::Sync { path } if self.ordering == Ordering::Leader => {
                // Answered once Zab's read round shows that we still lead (`synced`).
                self.syncs.push_back((session_id, conn_id, xid, path));
                let epoch = crate::zab::history::epoch_of(self.zxid_floor);
                self.syncs_due.push(Reader::Local { epoch });
                return;
            }
            CoreOp::Sync { path } => {
                let e = self.reply(
                    (session_id, conn_id),
                    xid,
                    self.tree.last_zxid(),
                    0,
                    Response::Path(path),
                );
                out.push(self.entry(Vec::new(), e));
                return;
            }
            CoreOp::CloseSession => {
                self.commit(&Txn::CloseSession { session_id }, zxid, time, &mut triggers);
                self.sessions.remove(session_id);
                let e = self.reply((session_id, conn_id), xid, zxid, 0, Response::Empty);
                out.push(self.logged_entry(triggers, e));
                out.push(self.logged_entry(Vec::new(), Effect::SessionClosed { session_id }));
                return;
            }
            CoreOp::Multi(ops) => {
                match self
                    .tree
                    .prepare_apply_multi(&ops, &who, zxid, time, &mut triggers)
                {
                    Ok((txn, applied)) => {
                        self.frame(&txn, zxid, time);
                        let results = applied
                            .into_iter()
                            .zip(ops.iter())
                            .map(|(a, op)| multi_result(a, op))
                            .collect();
                        (0, Response::Multi(results))
                    }
                    Err(codes) => {
                        self.commit(&Txn::MultiError(codes.clone()), zxid, time, &mut triggers);
                        let results = codes.into_iter().map(MultiResult::Error).collect();
                        (0, Response::Multi(results))
                    }
                }
            }
            CoreOp::SetAcl { path, acl, version } => {
                match self.tree.prepare_set_acl(&path, &acl, version, &who) {
                    Ok(txn) => match self.commit(&txn, zxid, time, &mut triggers) {
                        Applied::Stat(s) => (0, Response::Stat(s)),
                        other => unreachable!("setACL applied as {other:?}"),
                    },
                    Err(code) => self.fail(code, zxid, time),
                }
            }
            CoreOp::Write(w) => match self.tree.prepare(&w, &who) {
                Ok(txn) => {
                    let applied = self.commit(&txn, zxid, time, &mut triggers);
                    (0, single_response(applied, &w))
                }
                Err(code) => self.fail(code, zxid, time),
            },
        };
        let e = self.reply((session_id, conn_id), xid, zxid, err, body);
        out.push(self.logged_entry(triggers, e));
    }

    /// A learner's request from a session that is gone (expired, or closed through
    /// another member) still gets a txn, as ZooKeeper's leader gives it one: a
    /// learner answers what it forwarded only when a commit with its session and cxid
    /// comes (ZooKeeper's CommitProcessor holds every later local write behind it).
    /// A closeSession is ordered as a closeSession (a no-op now), anything else as an
    /// error txn, SESSIONEXPIRED.
    fn order_for_gone_session(
        &mut self,
        session_id: i64,
        xid: i32,
        op: &CoreOp,
        out: &mut Vec<Entry>,
    ) {
        self.ctx = (session_id, xid);
        let zxid = self.next_zxid();
        let txn = match op {
            CoreOp::CloseSession => Txn::CloseSession { session_id },
            _ => Txn::Error(ErrorCode::SessionExpired.code()),
        };
        let mut triggers = Vec::new();
        self.commit(&txn, zxid, self.now.wall_ms, &mut triggers);
        out.push(self.logged_entry(triggers, Effect::None));
    }

    /// A request while the log is down: syncs and closes are answered (a close only
    /// in memory), every write is refused with NOTREADONLY. In read-only mode a sync
    /// is refused too, as ZooKeeper's read-only server refuses it (it cannot reach a
    /// leader).
    fn refuse(
        &mut self,
        session_id: i64,
        conn_id: u64,
        xid: i32,
        op: CoreOp,
        out: &mut Vec<Entry>,
    ) {
        let zxid = self.tree.last_zxid();
        let (err, body) = match op {
            CoreOp::Sync { path } if self.quorumless.is_none() => (0, Response::Path(path)),
            CoreOp::CloseSession => {
                self.sessions.remove(session_id);
                if let Some(local) = self.quorumless.as_mut() {
                    local.remove(&session_id);
                }
                let e = self.reply((session_id, conn_id), xid, zxid, 0, Response::Empty);
                out.push(self.entry(Vec::new(), e));
                out.push(self.entry(Vec::new(), Effect::SessionClosed { session_id }));
                return;
            }
            _ => (ErrorCode::NotReadOnly.code(), Response::Empty),
        };
        let e = self.reply((session_id, conn_id), xid, zxid, err, body);
        out.push(self.entry(Vec::new(), e));
    }

    /// A rejected write: logged as an error txn that consumes its zxid.
    fn fail(&mut self, code: ErrorCode, zxid: i64, time: i64) -> (i32, Response) {
        self.commit(&Txn::Error(code.code()), zxid, time, &mut Vec::new());
        (code.code(), Response::Empty)
    }

    /// Expires sessions past their deadline and removes empty containers and expired
    /// TTL nodes (at most `znode.container.maxPerMinute` per minute).
    pub fn tick(&mut self, out: &mut Vec<Entry>) {
        // Expiries and container deletions concern sessions that may have entries in
        // this batch: start from a cut.
        self.cut(out);
        if let Some(local) = self.quorumless.as_mut() {
            // Read-only mode's sessions are ours to expire, in memory only.
            let now = self.now.mono_ms;
            let expired: Vec<i64> = self
                .sessions
                .expired(now)
                .into_iter()
                .filter(|id| local.remove(id))
                .collect();
            for session_id in expired {
                tracing::info!("Expiring read-only session 0x{session_id:x}, timeout exceeded");
                self.sessions.remove(session_id);
                out.push(self.entry(Vec::new(), Effect::SessionClosed { session_id }));
            }
            return;
        }
        if self.read_only || self.ordering == Ordering::Learner {
            // Expiring a session or deleting a node would be a txn: the leader's.
            return;
        }
        let now = self.now_ms();
        for session_id in self.sessions.expired(now) {
            tracing::info!("Expiring session 0x{session_id:x}, timeout exceeded");
            self.sessions.remove(session_id);
            let mut triggers = Vec::new();
            let zxid = self.next_zxid();
            self.ctx = (session_id, 0);
            self.commit(
                &Txn::CloseSession { session_id },
                zxid,
                self.now.wall_ms,
                &mut triggers,
            );
            out.push(self.logged_entry(triggers, Effect::SessionClosed { session_id }));
        }
        let interval = self.cfg.container_check_interval_ms;
        if now.saturating_sub(self.last_cleanup_ms) >= interval {
            self.last_cleanup_ms = now;
            let per_run = ((self.cfg.container_max_per_minute as u64 * interval) / 60_000).max(1);
            for path in self
                .tree
                .cleanup_candidates(self.now.wall_ms)
                .into_iter()
                .take(per_run as usize)
            {
                if let Ok(txn) = self.tree.prepare_delete_container(&path) {
                    let mut triggers = Vec::new();
                    let zxid = self.next_zxid();
                    self.ctx = (0, 0);
                    self.commit(&txn, zxid, self.now.wall_ms, &mut triggers);
                    out.push(self.logged_entry(triggers, Effect::None));
                }
            }
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The live sessions, by id.
    pub fn session_summaries(&self) -> Vec<SessionSummary> {
        let now = self.now_ms();
        let wall_now = self.now.wall_ms;
        let mut v: Vec<SessionSummary> = self
            .sessions
            .iter()
            .map(|(id, s)| SessionSummary {
                session_id: *id,
                timeout_ms: s.timeout_ms,
                expires_at_wall_ms: wall_now + s.deadline_ms.saturating_sub(now) as i64,
            })
            .collect();
        v.sort_by_key(|s| s.session_id);
        v
    }
}

/// The connection id a leader's core gives requests learners forwarded: no shard has
/// it, so their replies go nowhere (the learner answers from the committed txn).
pub const REMOTE_CONN: u64 = u64::MAX;

/// A learner's reply to its client, from the committed txn the request became.
fn reply_for(txn: &Txn, applied: Applied, op: &CoreOp) -> (i32, Response) {
    match (txn, applied, op) {
        (Txn::Error(code), _, _) => (*code, Response::Empty),
        (Txn::MultiError(codes), _, _) => (
            0,
            Response::Multi(codes.iter().map(|c| MultiResult::Error(*c)).collect()),
        ),
        (_, Applied::Multi(results), CoreOp::Multi(ops)) => (
            0,
            Response::Multi(
                results
                    .into_iter()
                    .zip(ops.iter())
                    .map(|(a, op)| multi_result(a, op))
                    .collect(),
            ),
        ),
        (_, Applied::Stat(s), CoreOp::SetAcl { .. }) => (0, Response::Stat(s)),
        (_, applied, CoreOp::Write(w)) => (0, single_response(applied, w)),
        _ => (0, Response::Empty),
    }
}

fn single_response(applied: Applied, op: &crate::proto::WriteOp) -> Response {
    use crate::proto::{CreateKind, WriteOp};
    match (applied, op) {
        (Applied::Created { path, stat }, WriteOp::Create(c)) => match c.kind {
            CreateKind::Create => Response::Create { path },
            _ => Response::Create2 { path, stat },
        },
        (Applied::Stat(s), _) => Response::Stat(s),
        // check (op 13) answers like setData with a stat in ZooKeeper's
        // FinalRequestProcessor, but the stat it sends is empty.
        (Applied::Done, WriteOp::Check { .. }) => Response::Stat(Default::default()),
        _ => Response::Empty,
    }
}

fn multi_result(applied: Applied, op: &crate::proto::WriteOp) -> MultiResult {
    use crate::proto::{CreateKind, WriteOp};
    match (applied, op) {
        (Applied::Created { path, stat }, WriteOp::Create(c)) => MultiResult::Create {
            path,
            stat: (c.kind != CreateKind::Create).then_some(stat),
        },
        (Applied::Stat(s), _) => MultiResult::SetData(s),
        (_, WriteOp::Check { .. }) => MultiResult::Check,
        _ => MultiResult::Delete,
    }
}

/// What a batch becomes when its write failed: none of its txns may be shown as done,
/// yet each may or may not have reached the disk. The connections that sent its writes
/// are closed (the client sees a connection loss: outcome unknown, as after a crash),
/// no watch fires, and the tree stays the last durable version.
pub fn undo_failed(entries: Vec<Entry>, durable: &Arc<DataTree>) -> Vec<Entry> {
    let durable_zxid = durable.last_zxid();
    entries
        .into_iter()
        .filter_map(|e| {
            if !e.logged {
                // A reply without a txn of its own (a sync, a refusal) carries the
                // core's zxid, which may be one of the failed txns': the client must
                // see only zxids that are on disk.
                let mut effect = e.effect;
                if let Effect::Reply { zxid, .. } = &mut effect {
                    *zxid = (*zxid).min(durable_zxid);
                }
                return Some(Entry {
                    tree: Some(durable.clone()),
                    effect,
                    ..e
                });
            }
            let effect = match e.effect {
                Effect::Reply {
                    session_id,
                    conn_id,
                    ..
                } => Effect::Disconnect {
                    session_id,
                    conn_id,
                },
                Effect::None => return None,
                // A new session whose createSession did not reach the disk.
                Effect::Connected {
                    shard,
                    conn_id,
                    granted: Some(_),
                } => Effect::Refused {
                    shard,
                    conn_id,
                    why: "its createSession did not reach the txn log".into(),
                },
                other => other,
            };
            Some(Entry {
                tree: Some(durable.clone()),
                triggers: Vec::new(),
                effect,
                logged: false,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{CreateKind, CreateRequest, WriteOp};
    use bytes::Bytes;

    /// A new session asked for on shard 0's connection `conn_id`.
    fn new_session(conn_id: u64) -> ToCore {
        ToCore::Connect {
            shard: 0,
            conn_id,
            session_id: 0,
            passwd: vec![],
            timeout_ms: 30000,
        }
    }

    fn connect(core: &mut Core) -> i64 {
        let mut out = Vec::new();
        core.step(new_session(1), &mut out);
        match &out[0].effect {
            Effect::Connected {
                granted: Some(g), ..
            } => g.session_id,
            e => panic!("{e:?}"),
        }
    }

    fn granted(out: &[Entry]) -> Granted {
        match &out[0].effect {
            Effect::Connected {
                granted: Some(g), ..
            } => g.clone(),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn the_core_reads_no_clock_and_draws_only_from_its_seed() {
        let cfg = Arc::new(Config::default());
        let connect_to = |core: &mut Core| {
            let mut out = Vec::new();
            let connect = ToCore::Connect {
                shard: 0,
                conn_id: 1,
                session_id: 0,
                passwd: vec![],
                timeout_ms: 4_000,
            };
            core.step(connect, &mut out);
            granted(&out)
        };
        // The same time and seed: the same session id and password.
        let (mut a, mut b) = (Core::empty(cfg.clone()), Core::empty(cfg.clone()));
        let (ga, gb) = (connect_to(&mut a), connect_to(&mut b));
        assert_eq!((ga.session_id, ga.passwd), (gb.session_id, gb.passwd));
        // Another seed: another password.
        let mut c = Core::new(cfg, DataTree::new(), &[], a.now, [8; 32]);
        assert_ne!(connect_to(&mut c).passwd, ga.passwd);
        // However long the test takes, the session expires when the given time says.
        let expired = |core: &mut Core, mono_ms: u64| {
            core.set_now(Now {
                mono_ms,
                wall_ms: 1_700_000_000_000 + mono_ms as i64,
            });
            let mut out = Vec::new();
            core.tick(&mut out);
            out.iter()
                .any(|e| matches!(e.effect, Effect::SessionClosed { session_id } if session_id == ga.session_id))
        };
        assert!(!expired(&mut a, 3_999));
        assert!(expired(&mut a, 60_000));
    }

    /// A create of `path` with empty data, open ACL and `flags`.
    fn create(path: &str, flags: i32) -> CoreOp {
        CoreOp::Write(WriteOp::Create(CreateRequest {
            kind: CreateKind::Create,
            path: path.into(),
            data: Some(Bytes::new()),
            acl: crate::tree::acl::open_acl_unsafe(),
            flags,
            ttl_ms: -1,
        }))
    }

    /// One request from session `s` on connection 1; returns what it produced.
    fn request(core: &mut Core, s: i64, xid: i32, op: CoreOp) -> Vec<Entry> {
        let mut out = Vec::new();
        core.step(
            ToCore::Request {
                session_id: s,
                conn_id: 1,
                xid,
                op,
                auth: Arc::new(vec![]),
                cut_before: false,
            },
            &mut out,
        );
        core.finish_batch(&mut out);
        out
    }

    #[test]
    fn read_only_mode_grants_local_sessions_and_refuses_writes_and_syncs() {
        let cfg = Arc::new(Config::default());
        let mut core = Core::member(cfg, 2, DataTree::new(), &[], Now::default());
        core.set_quorumless(true);
        let s = connect(&mut core);
        assert_eq!(s >> 56, 2, "a member's session id carries its id");
        assert_eq!(
            core.take_framed().count,
            0,
            "no txn for a read-only session"
        );
        assert!(core.take_forwards().is_empty(), "nothing goes to a leader");
        let refused = |out: &[Entry]| matches!(out[0].effect, Effect::Reply { err, .. } if err == ErrorCode::NotReadOnly.code());
        assert!(refused(&request(&mut core, s, 1, create("/a", 0))));
        let sync = CoreOp::Sync { path: "/".into() };
        assert!(refused(&request(&mut core, s, 2, sync)));
        assert_eq!(core.take_framed().count, 0);
        // With a quorum again, the session is gone.
        core.set_quorumless(false);
        let out = request(&mut core, s, 3, create("/a", 0));
        assert!(
            matches!(out[0].effect, Effect::Reply { err, .. } if err == ErrorCode::SessionExpired.code())
        );
    }

    #[test]
    fn a_leaders_syncs_wait_for_zabs_read_round() {
        let cfg = Arc::new(Config::default());
        let mut core = Core::member(cfg, 3, DataTree::new(), &[], Now::default());
        core.lead(2);
        let s = connect(&mut core);
        let _ = core.take_proposals();
        // Our client's sync: nothing is answered until Zab says the round is done.
        assert!(request(&mut core, s, 1, CoreOp::Sync { path: "/a".into() }).is_empty());
        // A learner's forwarded sync goes to Zab too, in order.
        let mut frame = 0x0100_0000_0000_0007_i64.to_be_bytes().to_vec();
        CoreOp::Sync { path: "/".into() }
            .to_request()
            .encode(9, &mut frame);
        let mut out = Vec::new();
        core.forwarded(1, &frame, vec![], &mut out);
        assert!(out.is_empty());
        assert_eq!(
            core.take_syncs_due(),
            vec![Reader::Local { epoch: 2 }, Reader::Learner(1)]
        );
        core.synced(&mut out);
        assert!(
            matches!(&out[0].effect, Effect::Reply { err: 0, session_id, xid: 1, .. } if *session_id == s),
            "{:?}",
            out[0].effect
        );
        // Losing the lead forgets the waiting syncs (their clients are dropped).
        let _ = request(&mut core, s, 2, CoreOp::Sync { path: "/".into() });
        core.learn();
        let mut out = Vec::new();
        core.synced(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_learners_requests_from_a_session_that_is_gone_still_get_txns() {
        use crate::zkformat::txn::{txn_type, TxnRecord, ZkTxn};
        let cfg = Arc::new(Config::default());
        let mut core = Core::member(cfg, 3, DataTree::new(), &[], Now::default());
        core.lead(1);
        let gone = 0x0100_0000_0000_0007_i64;
        let forward = |core: &mut Core, cxid: i32, op: i32, body: &[u8]| {
            let mut data = gone.to_be_bytes().to_vec();
            data.extend_from_slice(&cxid.to_be_bytes());
            data.extend_from_slice(&op.to_be_bytes());
            data.extend_from_slice(body);
            let mut out = Vec::new();
            core.forwarded(1, &data, vec![], &mut out);
            let proposals = core.take_proposals();
            assert_eq!(proposals.len(), 1, "one txn for op {op}");
            ZkTxn::decode(&proposals[0].1).unwrap()
        };
        // setData of "/" by the gone session: an error txn, SESSIONEXPIRED.
        let mut set = Vec::new();
        crate::proto::jute::JuteWrite::put_string(&mut set, "/");
        set.extend_from_slice(&(-1i32).to_be_bytes()); // data: null
        set.extend_from_slice(&(-1i32).to_be_bytes()); // version
        let z = forward(
            &mut core,
            4,
            crate::proto::codes::OpCode::SetData as i32,
            &set,
        );
        assert_eq!((z.header.client_id, z.header.cxid), (gone, 4));
        assert_eq!(z.header.txn_type, txn_type::ERROR);
        assert!(
            matches!(z.record, Some(TxnRecord::Error { err }) if err == ErrorCode::SessionExpired.code())
        );
        // Its closeSession: a closeSession, with nothing to delete.
        let z = forward(
            &mut core,
            5,
            crate::proto::codes::OpCode::CloseSession as i32,
            &[],
        );
        assert_eq!((z.header.client_id, z.header.cxid), (gone, 5));
        assert_eq!(z.header.txn_type, txn_type::CLOSE_SESSION);
        // And a createSession of a session the leader knows is ordered again.
        let timeout = 4000i32.to_be_bytes();
        forward(&mut core, 0, txn_type::CREATE_SESSION, &timeout);
        let z = forward(&mut core, 0, txn_type::CREATE_SESSION, &timeout);
        assert_eq!(z.header.txn_type, txn_type::CREATE_SESSION);
    }

    #[test]
    fn a_learner_ends_a_tree_version_where_a_sessions_reads_wait() {
        let cfg = Arc::new(Config::default());
        let mut leader = Core::member(cfg.clone(), 1, DataTree::new(), &[], Now::default());
        leader.lead(1);
        let mut learner = Core::member(cfg, 2, DataTree::new(), &[], Now::default());
        // What the learner forwarded, ordered by the leader, committed back at the
        // learner into one list (as a driver round hands several commits over).
        let round_trip = |leader: &mut Core, learner: &mut Core| {
            let mut applying = Vec::new();
            for (data, auth) in learner.take_forwards() {
                leader.forwarded(2, &data, auth, &mut Vec::new());
            }
            for (zxid, data) in leader.take_proposals() {
                learner.apply_committed(zxid, &data, &mut applying).unwrap();
            }
            applying
        };
        learner.step(new_session(1), &mut Vec::new());
        let s = granted(&round_trip(&mut leader, &mut learner)).session_id;
        // Two creates of one session, the second sent while a read of the session
        // waited on the first (the shard asks for a cut before it), then a third.
        let mut out = Vec::new();
        for (xid, path, cut_before) in [(1, "/a", false), (2, "/b", true), (3, "/c", false)] {
            learner.step(
                ToCore::Request {
                    session_id: s,
                    conn_id: 1,
                    xid,
                    op: create(path, 0),
                    auth: Arc::new(vec![]),
                    cut_before,
                },
                &mut out,
            );
        }
        assert!(
            out.is_empty(),
            "a learner answers writes from their commits"
        );
        let applying = round_trip(&mut leader, &mut learner);
        let xids: Vec<i32> = applying
            .iter()
            .map(|e| match e.effect {
                Effect::Reply { xid, .. } => xid,
                ref e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(xids, [1, 2, 3]);
        // The read waiting between 1 and 2 sees /a and not /b.
        let cut = applying[0].tree.as_ref().expect("a version after xid 1");
        assert!(cut.node("/a").is_some() && cut.node("/b").is_none());
        assert!(
            applying[1].tree.is_none(),
            "no reads waited between 2 and 3"
        );
        assert!(
            applying[2].tree.is_none(),
            "the batch's end is the replica's to cut"
        );
    }

    fn request_into(core: &mut Core, s: i64, op: CoreOp, cut_before: bool, out: &mut Vec<Entry>) {
        core.step(
            ToCore::Request {
                session_id: s,
                conn_id: 1,
                xid: 1,
                op,
                auth: Arc::new(vec![]),
                cut_before,
            },
            out,
        );
    }

    #[test]
    fn a_batch_has_a_tree_version_only_where_reads_wait_and_at_its_end() {
        let mut core = Core::empty(Arc::new(Config::default()));
        let (a, b) = (connect(&mut core), connect(&mut core));
        // (each connect asked for a cut with nothing stepped: for the queued entry)
        assert!(core.take_cut_for_queued().is_some());
        let mut out = Vec::new();
        request_into(&mut core, a, create("/a1", 0), false, &mut out);
        request_into(&mut core, a, create("/a2", 0), false, &mut out);
        request_into(&mut core, b, create("/b1", 0), false, &mut out);
        // a has a read queued behind /a2: it must see /a1, /a2, /b1 and not /a3.
        request_into(&mut core, a, create("/a3", 0), true, &mut out);
        request_into(&mut core, b, create("/b2", 0), false, &mut out);
        core.finish_batch(&mut out);
        let has = |e: &Entry, p: &str| e.tree.as_ref().unwrap().node(p).is_some();
        assert_eq!(
            out.iter().map(|e| e.tree.is_some()).collect::<Vec<_>>(),
            [false, false, true, false, true]
        );
        assert!(has(&out[2], "/a2") && has(&out[2], "/b1") && !has(&out[2], "/a3"));
        assert!(has(&out[4], "/a3") && has(&out[4], "/b2"));
        // A new batch: a single entry is its own cut.
        let mut next = Vec::new();
        request_into(&mut core, a, create("/a4", 0), false, &mut next);
        core.finish_batch(&mut next);
        assert!(next[0].tree.is_some());
        assert!(core.take_cut_for_queued().is_none());
        // A cut asked for first thing in a push belongs to the entry pushed before
        // (still queued for the log): the version without the new request.
        let mut third = Vec::new();
        request_into(&mut core, a, create("/a5", 0), true, &mut third);
        let queued = core
            .take_cut_for_queued()
            .expect("a version for the queued entry");
        assert!(queued.node("/a4").is_some() && queued.node("/a5").is_none());
    }

    #[test]
    fn failed_writes_consume_a_zxid_like_zookeeper() {
        let mut core = Core::empty(Arc::new(Config::default()));
        let s = connect(&mut core);
        assert_eq!(core.tree().last_zxid(), 1, "createSession is txn 1");
        let out = request(
            &mut core,
            s,
            1,
            CoreOp::Write(WriteOp::Delete {
                path: "/missing".into(),
                version: -1,
            }),
        );
        match &out[0].effect {
            Effect::Reply { err, zxid, .. } => {
                assert_eq!(*err, ErrorCode::NoNode.code());
                assert_eq!(*zxid, 2);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn close_session_deletes_ephemerals_and_fires_watches() {
        let mut core = Core::empty(Arc::new(Config::default()));
        let s = connect(&mut core);
        request(&mut core, s, 1, create("/eph", 1));
        let out = request(&mut core, s, 2, CoreOp::CloseSession);
        assert!(out
            .last()
            .unwrap()
            .tree
            .as_ref()
            .unwrap()
            .node("/eph")
            .is_none());
        assert!(out[0].triggers.iter().any(|t| &*t.path == "/eph"));
        assert!(matches!(out[1].effect, Effect::SessionClosed { .. }));
        assert_eq!(core.session_count(), 0);
    }

    #[test]
    fn a_new_session_is_granted_only_once_it_can_be_on_disk() {
        let mut core = Core::empty(Arc::new(Config::default()));
        let durable = Arc::new(core.tree().clone());
        let ask = |core: &mut Core| {
            let mut out = Vec::new();
            core.step(new_session(7), &mut out);
            out
        };
        // Its createSession is in a batch whose log write failed: refused, not granted.
        let out = ask(&mut core);
        assert!(out[0].logged);
        let undone = undo_failed(out, &durable);
        assert!(
            matches!(&undone[0].effect, Effect::Refused { shard: 0, conn_id: 7, why } if why.contains("did not reach")),
            "{:?}",
            undone[0].effect
        );
        // Once the log has failed: refused at once, and no session is made.
        core.set_read_only(&durable);
        let before = core.session_count();
        let out = ask(&mut core);
        assert!(!out[0].logged);
        assert!(matches!(&out[0].effect, Effect::Refused { conn_id: 7, .. }));
        assert_eq!(core.session_count(), before);
    }

    #[test]
    fn a_failed_batch_shows_nothing_of_its_txns() {
        let mut core = Core::empty(Arc::new(Config::default()));
        let s = connect(&mut core);
        let durable = Arc::new(core.tree().clone());
        let mut entries = request(&mut core, s, 1, create("/lost", 0));
        entries.extend(request(&mut core, s, 2, CoreOp::Sync { path: "/".into() }));
        assert!(entries[0].logged && !entries[1].logged);
        assert!(!entries[0].triggers.is_empty());
        let out = undo_failed(entries, &durable);
        assert_eq!(out.len(), 2);
        // The write's outcome is unknown: its connection is closed, nothing fires, and
        // the tree stays the durable one.
        assert!(
            matches!(out[0].effect, Effect::Disconnect { session_id, conn_id: 1 } if session_id == s)
        );
        assert!(out[0].triggers.is_empty());
        let trees: Vec<&Arc<DataTree>> = out.iter().map(|e| e.tree.as_ref().unwrap()).collect();
        assert!(trees.iter().all(|t| t.node("/lost").is_none()));
        assert!(trees.iter().all(|t| t.last_zxid() == durable.last_zxid()));
        // The sync (no txn) is still answered, with a zxid that is on disk (the
        // core's had counted the lost create).
        assert!(
            matches!(out[1].effect, Effect::Reply { err: 0, zxid, .. } if zxid == durable.last_zxid())
        );
        assert!(core.tree().last_zxid() > durable.last_zxid());
        // From then on, writes are refused without a txn, and every reply carries the
        // durable zxid: the core went back to the durable tree.
        core.set_read_only(&durable);
        assert!(core.tree().node("/lost").is_none());
        let synced = request(&mut core, s, 4, CoreOp::Sync { path: "/".into() });
        assert!(
            matches!(synced[0].effect, Effect::Reply { err: 0, zxid, .. } if zxid == durable.last_zxid())
        );
        let refused = request(
            &mut core,
            s,
            3,
            CoreOp::Write(WriteOp::Delete {
                path: "/zookeeper".into(),
                version: -1,
            }),
        );
        assert!(!refused[0].logged);
        assert!(
            matches!(refused[0].effect, Effect::Reply { err, zxid, .. } if err == ErrorCode::NotReadOnly.code() && zxid == durable.last_zxid())
        );
        let gone = request(&mut core, 0x77, 5, CoreOp::Sync { path: "/".into() });
        assert!(
            matches!(gone[0].effect, Effect::Reply { err, zxid, .. } if err == ErrorCode::SessionExpired.code() && zxid == durable.last_zxid())
        );
        assert_eq!(
            core.take_framed().count,
            2,
            "only the create session and the create were framed"
        );
    }

    #[test]
    fn reconnect_with_wrong_password_is_refused() {
        let mut core = Core::empty(Arc::new(Config::default()));
        let s = connect(&mut core);
        let mut out = Vec::new();
        core.step(
            ToCore::Connect {
                shard: 0,
                conn_id: 2,
                session_id: s,
                passwd: vec![9; 16],
                timeout_ms: 30000,
            },
            &mut out,
        );
        assert!(matches!(
            out[0].effect,
            Effect::Connected { granted: None, .. }
        ));
    }
}
