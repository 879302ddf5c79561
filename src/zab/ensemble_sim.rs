//! A deterministic simulator of whole ensembles running [`Peer`]: election,
//! discovery, synchronization and broadcast together, with client writes.
//!
//! One seed draws the scenario: 3 or 5 voters (sometimes an observer), vote loss,
//! duplication and delay; quorum connections that break (TCP: a connection delivers in
//! order or dies); one-way and two-way partitions; crashes that lose what the log had
//! not yet synced, and restarts from what it had; pauses (SIGSTOP: a member handles
//! nothing, not even its timers, and then finds everything that came meanwhile
//! waiting, its clients' requests included). After the fault phase everything
//! heals and the ensemble must settle: one leader, everyone synced with it, every
//! committed write on every member.
//!
//! Checked after every effect:
//! - at most one leader per epoch (establishing it, and proposing in it);
//! - every member applies the same sequence of txns (committed prefixes agree);
//! - a member applies a txn only once a quorum of voters has it on disk at the same
//!   position (nothing uncommitted is applied, so no acknowledged write can be lost);
//! - after healing, every member holds every acknowledged write;
//! - a read after sync sees every write acknowledged before the sync was asked for,
//!   at a leader (its read round) and at a learner (it forwards the sync, the
//!   leader's SYNC answers it), deposed leaders and their followers included;
//! - an expired session writes nothing after its expiry, and no write comes from a
//!   session never created.
//!
//! Sessions: clients at a home member create a session, write through it and keep it
//! alive; a learner forwards their requests (REQUEST) and reports their activity in
//! its PINGs (Zab's touches), and the leader expires a session it has not heard of
//! within the timeout (a txn). What the leader checks before ordering (the session is
//! open in its view: what it applied, and what it ordered itself since) stands in
//! for the core's session table, which this simulator does not run.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::Bytes;

use super::election::{Ballot, ServerId};
use super::history::{epoch_of, History, Txn, Zxid};
use super::messages::{Effect, Msg, Reader, Role};
use super::peer::{Peer, PeerConfig, Recovered};
use super::sim::{Lossy, SimRng, Violation, VoteLinks};

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub voters: Vec<ServerId>,
    pub observers: Vec<ServerId>,
    pub vote_loss: f64,
    pub vote_duplication: f64,
    pub delay_ms_max: u64,
    /// Chance that a quorum packet breaks its connection.
    pub conn_break: f64,
    pub crash_per_s: f64,
    pub partition_per_s: f64,
    pub fault_ms: u64,
    pub write_every_ms: u64,
    pub flush_ms_max: u64,
    pub retain: usize,
    /// How often a client at a random member asks for a sync and then reads.
    pub read_every_ms: u64,
    pub pause_per_s: f64,
    /// Members that ACK and COMMIT cumulatively with each other (ringkeeper's
    /// protocol version 2); the others do as ZooKeeper's members.
    pub cumulative: Vec<ServerId>,
}

impl Scenario {
    pub fn from_seed(seed: u64) -> Scenario {
        let mut r = SimRng::new(seed ^ 0xE45E_4B1E);
        let n = if r.chance(0.5) { 3 } else { 5 };
        let mut s = Scenario {
            seed,
            voters: (1..=n).collect(),
            observers: if r.chance(0.3) { vec![n + 1] } else { vec![] },
            vote_loss: r.range(0, 30) as f64 / 100.0,
            vote_duplication: r.range(0, 10) as f64 / 100.0,
            delay_ms_max: r.range(2, 150),
            conn_break: r.range(0, 20) as f64 / 1000.0,
            crash_per_s: r.range(0, 60) as f64 / 100.0,
            partition_per_s: r.range(0, 60) as f64 / 100.0,
            fault_ms: r.range(3_000, 12_000),
            write_every_ms: r.range(5, 80),
            flush_ms_max: r.range(1, 30),
            retain: r.range(0, 40) as usize,
            read_every_ms: r.range(3, 60),
            pause_per_s: r.range(0, 60) as f64 / 100.0,
            cumulative: Vec::new(),
        };
        let members: Vec<ServerId> = s.voters.iter().chain(&s.observers).copied().collect();
        s.cumulative = members.into_iter().filter(|_| r.chance(0.6)).collect();
        s
    }
}

const TICK_MS: u64 = 100;
const INIT_LIMIT: u64 = 10;
const SYNC_LIMIT: u64 = 5;
const SETTLE_MS_MAX: u64 = 60_000;

/// What a member has on disk.
#[derive(Debug, Clone, Default)]
struct Disk {
    accepted_epoch: i64,
    current_epoch: i64,
    /// The log from the beginning (a snapshot install replaces it with the image).
    log: Vec<Txn>,
    /// Appended, not yet synced.
    pending: Vec<Txn>,
    /// How many of `log` were applied when it was last synced: what a restart
    /// applies (the log's commit mark, written with each batch).
    applied_mark: usize,
}

struct Node {
    peer: Option<Peer>,
    disk: Disk,
    /// Applied txns, in order: the member's tree.
    tree: Vec<Txn>,
    flush_at: Option<u64>,
    /// A learner's current quorum connection.
    conn: Option<u64>,
    /// Txns this member proposed as leader, for the "acknowledged" set.
    proposed: BTreeSet<Zxid>,
    /// Its clients' syncs waiting for an answer, oldest first: how much of the
    /// committed sequence had been acknowledged when each was asked for.
    syncs: std::collections::VecDeque<usize>,
    /// Stopped (SIGSTOP) until then: what comes for it waits in `held`, in the
    /// order it came.
    paused_until: Option<u64>,
    held: Vec<Event>,
    /// As leader: sessions in its view (true: open, false: expired), and when each
    /// open one was last heard of, with its timeout.
    sessions: BTreeMap<u64, bool>,
    heard: BTreeMap<u64, (u64, u64)>,
    /// Sessions whose expiry its tree holds (what its clients hear).
    gone: BTreeSet<u64>,
}

/// The sessions whose expiry `tree` holds.
fn expired_in(tree: &[Txn]) -> BTreeSet<u64> {
    tree.iter()
        .filter_map(|t| match SessionOp::parse(&t.data) {
            SessionOp::Expire(s) => Some(s),
            _ => None,
        })
        .collect()
}

struct Conn {
    learner: ServerId,
    leader: ServerId,
    alive: bool,
    /// Last delivery time each way (learner to leader, leader to learner): FIFO.
    last_at: [u64; 2],
}

enum Event {
    Vote {
        from: ServerId,
        to: ServerId,
        ballot: Ballot,
    },
    Packet {
        conn: u64,
        from: ServerId,
        to: ServerId,
        msg: Msg,
        /// The tree that follows a SNAP.
        image: Option<Vec<Txn>>,
    },
    Closed {
        conn: u64,
        to: ServerId,
        peer: ServerId,
    },
    /// A client's sync reaches member `to`; `needed` as in `Node::syncs`.
    ClientSync { to: ServerId, needed: usize },
}

impl Event {
    fn to(&self) -> ServerId {
        match self {
            Event::Vote { to, .. }
            | Event::Packet { to, .. }
            | Event::Closed { to, .. }
            | Event::ClientSync { to, .. } => *to,
        }
    }
}

struct Timed {
    at_ms: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.at_ms, self.seq) == (o.at_ms, o.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at_ms, o.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// A planted bug, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// Followers ACK a proposal as soon as it arrives, before it is on their disk.
    AckBeforeDisk,
    /// A leader answers its own clients' syncs at once, without a read round.
    SyncAtOnce,
    /// A leader orders writes without checking that their session is open.
    UncheckedSessions,
}

/// The request a learner forwards for a client's sync (the driver's would be a
/// client frame).
const SYNC_REQUEST: &[u8] = b"sync";

/// How long a session lives unheard: ZooKeeper's least (2 ticks) to 20 ticks.
const SESSION_MS: std::ops::Range<u64> = 2 * TICK_MS..20 * TICK_MS;
/// How often a client shows its session alive to its home member.
const TOUCH_EVERY_MS: u64 = 100;
const CLIENTS: usize = 4;

/// What a txn (or a forwarded request) of the simulated clients does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionOp {
    Create(u64),
    Expire(u64),
    Write(u64),
    /// A write with no session (the leaders' own load), or a sync.
    Other,
}

impl SessionOp {
    fn parse(data: &[u8]) -> SessionOp {
        let text = std::str::from_utf8(data).unwrap_or("");
        let id = |rest: &str| rest.split(':').next().and_then(|n| n.parse().ok());
        match text.split_once(':') {
            Some(("c", rest)) => id(rest).map_or(SessionOp::Other, SessionOp::Create),
            Some(("x", rest)) => id(rest).map_or(SessionOp::Other, SessionOp::Expire),
            Some(("s", rest)) => id(rest).map_or(SessionOp::Other, SessionOp::Write),
            _ => SessionOp::Other,
        }
    }
}

/// A client with (at most) one session, at its home member.
#[derive(Debug, Clone)]
struct Client {
    home: ServerId,
    session: Option<u64>,
    timeout_ms: u64,
}

pub struct EnsembleSim {
    pub scenario: Scenario,
    rng: SimRng,
    now_ms: u64,
    nodes: BTreeMap<ServerId, Node>,
    events: BinaryHeap<Timed>,
    seq: u64,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    votes: VoteLinks,
    blocked: BTreeSet<(ServerId, ServerId)>,
    faults: bool,
    /// The one sequence every member's tree must be a prefix of.
    committed: Vec<Txn>,
    /// Writes their leader applied (answered to the client).
    acknowledged: BTreeSet<Zxid>,
    /// The committed sequence up to the last acknowledged write in it: a sync asked
    /// for now must be answered with at least this much applied.
    acked_upto: usize,
    /// Who established or proposed in each epoch.
    leader_of_epoch: BTreeMap<i64, ServerId>,
    clients: Vec<Client>,
    next_session: u64,
    /// Each session's timeout (a createSession txn carries it; here the clients
    /// keep it).
    timeouts: BTreeMap<u64, u64>,
    /// Sessions created and expired in the committed sequence.
    created: BTreeSet<u64>,
    expired: BTreeSet<u64>,
    writes: u64,
    /// What happened, by kind, for the test's report (that faults reached each path).
    pub stats: BTreeMap<&'static str, u64>,
    pub plant: Option<Plant>,
    trace: bool,
}

impl EnsembleSim {
    pub fn new(seed: u64) -> EnsembleSim {
        Self::with_scenario(Scenario::from_seed(seed))
    }

    /// `seed`'s scenario without faults: members boot within the first second and
    /// the network only delays.
    pub fn quiet(seed: u64) -> EnsembleSim {
        let mut s = Scenario::from_seed(seed);
        s.vote_loss = 0.0;
        s.vote_duplication = 0.0;
        s.conn_break = 0.0;
        s.crash_per_s = 0.0;
        s.partition_per_s = 0.0;
        s.fault_ms = 1_000;
        Self::with_scenario(s)
    }

    pub fn with_scenario(scenario: Scenario) -> EnsembleSim {
        let seed = scenario.seed;
        let ids: Vec<ServerId> = scenario
            .voters
            .iter()
            .chain(&scenario.observers)
            .copied()
            .collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                (
                    id,
                    Node {
                        peer: None,
                        disk: Disk::default(),
                        tree: Vec::new(),
                        flush_at: None,
                        conn: None,
                        proposed: BTreeSet::new(),
                        syncs: Default::default(),
                        paused_until: None,
                        held: Vec::new(),
                        sessions: BTreeMap::new(),
                        heard: BTreeMap::new(),
                        gone: BTreeSet::new(),
                    },
                )
            })
            .collect();
        EnsembleSim {
            rng: SimRng::new(seed ^ 0x5EED_F2AB),
            scenario,
            now_ms: 0,
            nodes,
            events: BinaryHeap::new(),
            seq: 0,
            conns: BTreeMap::new(),
            next_conn: 1,
            votes: VoteLinks::default(),
            blocked: BTreeSet::new(),
            faults: true,
            committed: Vec::new(),
            acknowledged: BTreeSet::new(),
            acked_upto: 0,
            leader_of_epoch: BTreeMap::new(),
            clients: Vec::new(),
            next_session: 1,
            timeouts: BTreeMap::new(),
            created: BTreeSet::new(),
            expired: BTreeSet::new(),
            writes: 0,
            stats: BTreeMap::new(),
            plant: None,
            trace: std::env::var_os("RK_SIM_TRACE").is_some(),
        }
    }

    fn fail(&self, what: String) -> Violation {
        Violation {
            seed: self.scenario.seed,
            at_ms: self.now_ms,
            what,
        }
    }

    fn config(&self, id: ServerId) -> PeerConfig {
        PeerConfig {
            my_id: id,
            voters: self.scenario.voters.iter().copied().collect(),
            observers: self.scenario.observers.iter().copied().collect(),
            tick_ms: TICK_MS,
            init_limit: INIT_LIMIT,
            sync_limit: SYNC_LIMIT,
            retain: self.scenario.retain,
            cumulative: self.scenario.cumulative.contains(&id),
        }
    }

    fn push(&mut self, at_ms: u64, event: Event) {
        self.seq += 1;
        self.events.push(Timed {
            at_ms,
            seq: self.seq,
            event,
        });
    }

    fn delay(&mut self) -> u64 {
        if self.faults {
            self.rng.range(1, self.scenario.delay_ms_max)
        } else {
            self.rng.range(1, 5)
        }
    }

    fn up(&self, id: ServerId) -> bool {
        self.nodes[&id].peer.is_some()
    }

    fn cut(&self, a: ServerId, b: ServerId) -> bool {
        self.blocked.contains(&(a, b)) || self.blocked.contains(&(b, a))
    }

    /// Starts (or restarts) a member from its disk.
    fn boot(&mut self, id: ServerId) -> Result<(), Violation> {
        let cfg = self.config(id);
        let node = self.nodes.get_mut(&id).expect("node");
        let d = &node.disk;
        let applied = d.applied_mark.min(d.log.len());
        node.tree = d.log[..applied].to_vec();
        node.gone = expired_in(&node.tree);
        let applied_zxid = node.tree.last().map_or(0, |t| t.zxid);
        let history = History::recovered(0, d.log.clone(), applied_zxid, cfg.retain);
        let mut peer = Peer::new(
            cfg,
            Recovered {
                accepted_epoch: d.accepted_epoch,
                current_epoch: d.current_epoch,
                history,
            },
        );
        let tree = node.tree.clone();
        let mut out = Vec::new();
        peer.start(self.now_ms, &mut out);
        node.peer = Some(peer);
        node.conn = None;
        self.check_tree_prefix(id, &tree)?;
        self.handle(id, out)
    }

    fn crash(&mut self, id: ServerId) {
        *self.stats.entry("crash").or_default() += 1;
        if self.trace {
            eprintln!("{} {id} crashes", self.now_ms);
        }
        let node = self.nodes.get_mut(&id).expect("node");
        node.peer = None;
        node.disk.pending.clear();
        node.flush_at = None;
        node.conn = None;
        node.syncs.clear();
        node.paused_until = None;
        for ev in std::mem::take(&mut node.held) {
            // Lost with the process (a vote still counts in flight until delivered).
            if let Event::Vote { from, to, .. } = ev {
                self.votes.delivered(from, to);
            }
        }
        let mine: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.alive && (c.learner == id || c.leader == id))
            .map(|(k, _)| *k)
            .collect();
        for c in mine {
            self.kill_conn(c);
        }
    }

    /// Breaks a connection: each end that is up hears of it.
    fn kill_conn(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.alive {
            return;
        }
        c.alive = false;
        let (a, b) = (c.learner, c.leader);
        for (to, peer) in [(a, b), (b, a)] {
            let at = self.now_ms + self.delay();
            self.push(at, Event::Closed { conn: id, to, peer });
        }
    }

    fn handle(&mut self, id: ServerId, out: Vec<Effect>) -> Result<(), Violation> {
        for e in out {
            self.effect(id, e)?;
        }
        Ok(())
    }

    fn effect(&mut self, id: ServerId, e: Effect) -> Result<(), Violation> {
        let now = self.now_ms;
        match e {
            Effect::Vote { to, ballot } => self.send_vote(id, to, ballot),
            Effect::Connect { leader } => {
                if let Some(old) = self.nodes[&id].conn {
                    self.kill_conn(old);
                }
                let c = self.next_conn;
                self.next_conn += 1;
                self.conns.insert(
                    c,
                    Conn {
                        learner: id,
                        leader,
                        alive: true,
                        last_at: [now; 2],
                    },
                );
                self.nodes.get_mut(&id).expect("node").conn = Some(c);
                if !self.up(leader) || self.cut(id, leader) {
                    self.kill_conn(c);
                }
            }
            Effect::Disconnect { peer } => {
                let found: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        c.alive
                            && ((c.learner == id && c.leader == peer)
                                || (c.leader == id && c.learner == peer))
                    })
                    .map(|(k, _)| *k)
                    .collect();
                for c in found {
                    self.kill_conn(c);
                }
            }
            Effect::Send { to, msg } => self.send_packet(id, to, msg)?,
            Effect::PersistEpochs { accepted, current } => {
                let d = &self.nodes[&id].disk;
                if accepted < d.accepted_epoch || current < d.current_epoch {
                    return Err(self.fail(format!(
                        "member {id} moved its epochs back: ({}, {}) to ({accepted}, {current})",
                        d.accepted_epoch, d.current_epoch
                    )));
                }
                let d = &mut self.nodes.get_mut(&id).expect("node").disk;
                d.accepted_epoch = accepted;
                d.current_epoch = current;
            }
            Effect::Append(txn) => {
                let flush = self.rng.range(0, self.scenario.flush_ms_max + 1);
                let node = self.nodes.get_mut(&id).expect("node");
                node.disk.pending.push(txn);
                node.flush_at.get_or_insert(now + flush);
            }
            Effect::Truncate { to } => {
                let node = self.nodes.get_mut(&id).expect("node");
                node.disk.log.retain(|t| t.zxid <= to);
                node.disk.pending.retain(|t| t.zxid <= to);
                if node.tree.len() > node.disk.log.len() + node.disk.pending.len() {
                    return Err(
                        self.fail(format!("member {id} truncated applied txns (to {to:#x})"))
                    );
                }
            }
            Effect::InstallSnapshot { zxid, .. } => {
                // The image was installed as the SNAP was delivered (deliver()).
                let last = self.nodes[&id].tree.last().map_or(0, |t| t.zxid);
                if last != zxid {
                    return Err(self.fail(format!(
                        "member {id} installs a snapshot at {zxid:#x} but took a tree up to {last:#x}"
                    )));
                }
            }
            Effect::Apply(txn) => self.apply(id, txn)?,
            Effect::Role(role) => {
                if self.trace {
                    eprintln!("{now} {id} is {role:?}");
                }
                match role {
                    Role::Leading { epoch } => {
                        self.claim_epoch(id, epoch)?;
                        // The view of what it applied; every open session gets a full
                        // timeout from now (the core's `lead` does the same).
                        let node = self.nodes.get_mut(&id).expect("node");
                        node.sessions.clear();
                        for t in &node.tree {
                            match SessionOp::parse(&t.data) {
                                SessionOp::Create(s) => {
                                    node.sessions.entry(s).or_insert(true);
                                }
                                SessionOp::Expire(s) => {
                                    node.sessions.insert(s, false);
                                }
                                _ => {}
                            }
                        }
                        let timeouts = &self.timeouts;
                        node.heard = node
                            .sessions
                            .iter()
                            .filter(|(_, open)| **open)
                            .map(|(s, _)| (*s, (now, timeouts[s])))
                            .collect();
                    }
                    // Its driver drops the clients whose syncs waited (as the core
                    // forgets them).
                    Role::Looking => self.nodes.get_mut(&id).expect("node").syncs.clear(),
                    _ => {}
                }
            }
            Effect::Forwarded { from, data, .. } if data == SYNC_REQUEST => {
                *self.stats.entry("sync forwarded").or_default() += 1;
                self.with_peer(id, |p, out| {
                    let _ = p.sync(Reader::Learner(from), out);
                })?;
            }
            Effect::Synced => {
                let Some(needed) = self.nodes.get_mut(&id).expect("node").syncs.pop_front() else {
                    return Err(self.fail(format!("member {id} answered a sync no one asked for")));
                };
                self.check_read(id, needed)?;
            }
            Effect::Forwarded { data, .. } => {
                *self.stats.entry("request forwarded").or_default() += 1;
                self.order(id, SessionOp::parse(&data))?;
            }
            Effect::Revalidate { .. } => {
                return Err(self.fail(format!(
                    "member {id} got a REVALIDATE, which no one sends here"
                )))
            }
            Effect::Touched(sessions) => {
                let node = self.nodes.get_mut(&id).expect("node");
                for (s, timeout) in sessions {
                    let s = s as u64;
                    if node.sessions.get(&s) == Some(&true) {
                        node.heard.insert(s, (now, timeout as u64));
                    }
                }
            }
            Effect::Warn(w) => {
                if self.trace {
                    eprintln!("{now} {id}: {w}");
                }
            }
        }
        Ok(())
    }

    fn claim_epoch(&mut self, id: ServerId, epoch: i64) -> Result<(), Violation> {
        match self.leader_of_epoch.get(&epoch) {
            Some(&other) if other != id => {
                Err(self.fail(format!("two leaders in epoch {epoch}: {other} and {id}")))
            }
            _ => {
                self.leader_of_epoch.insert(epoch, id);
                Ok(())
            }
        }
    }

    fn send_vote(&mut self, from: ServerId, to: ServerId, ballot: Ballot) {
        let faults = self.faults.then_some(Lossy {
            loss: self.scenario.vote_loss,
            duplication: self.scenario.vote_duplication,
        });
        for _ in 0..self.votes.copies(&mut self.rng, faults, from, to) {
            let at = self.now_ms + self.delay();
            self.push(at, Event::Vote { from, to, ballot });
        }
    }

    fn send_packet(&mut self, from: ServerId, to: ServerId, msg: Msg) -> Result<(), Violation> {
        // A leader proposing in its own epoch claims it (older txns go out in syncs).
        if let Msg::Proposal(t) = &msg {
            let role = self.nodes[&from].peer.as_ref().map(|p| p.role());
            if let Some(Role::Leading { epoch }) = role {
                if epoch_of(t.zxid) == epoch {
                    self.claim_epoch(from, epoch)?;
                }
            }
        }
        // The learner's own connection, or the leader's newest one with `to`.
        let own = self.nodes[&from].conn;
        let conn = if own
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.alive && c.leader == to)
        {
            own
        } else {
            self.conns
                .iter()
                .rev()
                .find(|(_, c)| c.leader == from && c.learner == to)
                .map(|(k, _)| *k)
        };
        let Some(conn) = conn.filter(|c| self.conns[c].alive) else {
            return Ok(());
        };
        if self.faults && self.rng.chance(self.scenario.conn_break) {
            self.kill_conn(conn);
            return Ok(());
        }
        let kind = match msg {
            Msg::Diff { .. } => Some("DIFF"),
            Msg::Trunc { .. } => Some("TRUNC"),
            Msg::Snap { .. } => Some("SNAP"),
            Msg::NewLeader { .. } => Some("NEWLEADER"),
            _ => None,
        };
        if let Some(k) = kind {
            *self.stats.entry(k).or_default() += 1;
        }
        let image = matches!(msg, Msg::Snap { .. }).then(|| self.nodes[&from].tree.clone());
        let dir = usize::from(self.conns[&conn].leader == from);
        let at = (self.now_ms + self.delay()).max(self.conns[&conn].last_at[dir]);
        self.conns.get_mut(&conn).expect("conn").last_at[dir] = at;
        if self.plant == Some(Plant::AckBeforeDisk) {
            if let Msg::Proposal(t) = &msg {
                if dir == 1 && self.scenario.voters.contains(&to) {
                    let ack = Msg::Ack { zxid: t.zxid };
                    self.push(
                        at + 1,
                        Event::Packet {
                            conn,
                            from: to,
                            to: from,
                            msg: ack,
                            image: None,
                        },
                    );
                }
            }
        }
        self.push(
            at,
            Event::Packet {
                conn,
                from,
                to,
                msg,
                image,
            },
        );
        Ok(())
    }

    fn check_tree_prefix(&mut self, id: ServerId, tree: &[Txn]) -> Result<(), Violation> {
        for (i, t) in tree.iter().enumerate() {
            match self.committed.get(i) {
                Some(c) if c != t => {
                    return Err(self.fail(format!(
                        "member {id}'s tree has {:#x} at position {i}, others {:#x}",
                        t.zxid, c.zxid
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(self.fail(format!(
                        "member {id}'s tree holds {:#x} at position {i}, which no one applied",
                        t.zxid
                    )))
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, id: ServerId, txn: Txn) -> Result<(), Violation> {
        let pos = self.nodes[&id].tree.len();
        // Committed: a quorum of voters has this txn on disk at this position.
        let holders = self
            .scenario
            .voters
            .iter()
            .filter(|v| self.nodes[v].disk.log.get(pos) == Some(&txn))
            .count();
        if 2 * holders <= self.scenario.voters.len() {
            return Err(self.fail(format!(
                "member {id} applies {:#x} at position {pos}, on disk at only {holders} voters",
                txn.zxid
            )));
        }
        match self.committed.get(pos) {
            Some(c) if *c != txn => {
                return Err(self.fail(format!(
                    "member {id} applies {:#x} at position {pos} where {:#x} was applied",
                    txn.zxid, c.zxid
                )))
            }
            Some(_) => {}
            None => {
                self.check_session_order(&txn)?;
                self.committed.push(txn.clone());
            }
        }
        let node = self.nodes.get_mut(&id).expect("node");
        if node.proposed.remove(&txn.zxid) {
            self.acknowledged.insert(txn.zxid);
            self.acked_upto = self.acked_upto.max(pos + 1);
        }
        if let SessionOp::Expire(s) = SessionOp::parse(&txn.data) {
            node.gone.insert(s);
        }
        node.tree.push(txn);
        Ok(())
    }

    /// The committed sequence's next txn: a write only from a session created before
    /// it and not expired.
    fn check_session_order(&mut self, txn: &Txn) -> Result<(), Violation> {
        match SessionOp::parse(&txn.data) {
            SessionOp::Create(s) => {
                self.created.insert(s);
            }
            SessionOp::Expire(s) => {
                *self.stats.entry("session expired").or_default() += 1;
                self.expired.insert(s);
            }
            SessionOp::Write(s) if self.expired.contains(&s) => {
                return Err(self.fail(format!(
                    "session {s} wrote after its expiry ({:#x})",
                    txn.zxid
                )))
            }
            SessionOp::Write(s) if !self.created.contains(&s) => {
                return Err(self.fail(format!(
                    "a write from session {s}, never created ({:#x})",
                    txn.zxid
                )))
            }
            SessionOp::Write(_) => *self.stats.entry("session write").or_default() += 1,
            SessionOp::Other => {}
        }
        Ok(())
    }

    /// Leader `id` orders a client's request, as its core would: a session is
    /// created once, and written through only while open in its view.
    fn order(&mut self, id: ServerId, op: SessionOp) -> Result<(), Violation> {
        let plant = self.plant;
        let now = self.now_ms;
        let node = self.nodes.get_mut(&id).expect("node");
        let data = match op {
            SessionOp::Create(s) if !node.sessions.contains_key(&s) => {
                node.sessions.insert(s, true);
                node.heard.insert(s, (now, self.timeouts[&s]));
                format!("c:{s}")
            }
            SessionOp::Write(s)
                if node.sessions.get(&s) == Some(&true)
                    || plant == Some(Plant::UncheckedSessions) =>
            {
                self.writes += 1;
                format!("s:{s}:{}", self.writes)
            }
            SessionOp::Expire(s) => {
                node.sessions.insert(s, false);
                node.heard.remove(&s);
                format!("x:{s}")
            }
            // A sync, a second create, or a write of a session not open here: the
            // client gets an error (a sync is the other path).
            _ => return Ok(()),
        };
        let mut out = Vec::new();
        let p = node.peer.as_mut().expect("up");
        if let Ok(z) = p.propose(now, |_| Bytes::from(data), &mut out) {
            node.proposed.insert(z);
        }
        self.handle(id, out)
    }

    /// Leaders expire the sessions they have not heard of within the timeout.
    fn expire_sessions(&mut self, id: ServerId) -> Result<(), Violation> {
        let now = self.now_ms;
        let node = &self.nodes[&id];
        if !node
            .peer
            .as_ref()
            .is_some_and(|p| matches!(p.role(), Role::Leading { .. }))
        {
            return Ok(());
        }
        let due: Vec<u64> = node
            .heard
            .iter()
            .filter(|(_, (at, timeout))| now >= at + timeout)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            self.order(id, SessionOp::Expire(s))?;
        }
        Ok(())
    }

    /// The clients: each shows its session alive to its home member, and now and
    /// then creates a session (when it has none) or writes through it.
    fn clients_step(&mut self, ids: &[ServerId]) -> Result<(), Violation> {
        if self.clients.is_empty() {
            self.clients = (0..CLIENTS)
                .map(|_| Client {
                    home: ids[self.rng.range(0, ids.len() as u64) as usize],
                    session: None,
                    timeout_ms: self.rng.range(SESSION_MS.start, SESSION_MS.end),
                })
                .collect();
        }
        let now = self.now_ms;
        for k in 0..self.clients.len() {
            let Client {
                home,
                session,
                timeout_ms,
            } = self.clients[k].clone();
            let node = &self.nodes[&home];
            // A client hears of its session's expiry from its member (SESSIONEXPIRED)
            // once that member's tree holds it, and starts over.
            if session.is_some_and(|s| node.gone.contains(&s)) {
                self.clients[k].session = None;
                continue;
            }
            let role = node.peer.as_ref().map(|p| p.role());
            let serving =
                node.paused_until.is_none() && role.is_some_and(|r| !matches!(r, Role::Looking));
            if !serving {
                // Its member is down, hung or electing: now and then the client moves
                // to another with its session (a member whose tree lags may not know
                // yet that it expired).
                if self.rng.chance(0.002) {
                    self.clients[k].home = ids[self.rng.range(0, ids.len() as u64) as usize];
                }
                continue;
            }
            let Some(role) = role else { continue };
            if let (Some(s), true) = (session, now.is_multiple_of(TOUCH_EVERY_MS)) {
                match role {
                    Role::Leading { .. } => {
                        let node = self.nodes.get_mut(&home).expect("node");
                        if let Some(h) = node.heard.get_mut(&s) {
                            h.0 = now;
                        }
                    }
                    Role::Following { .. } | Role::Observing { .. } => {
                        let p = self.nodes.get_mut(&home).and_then(|n| n.peer.as_mut());
                        p.expect("up").touch([(s as i64, timeout_ms as i32)]);
                    }
                    Role::Looking => {}
                }
            }
            if !self.rng.chance(0.02) {
                continue;
            }
            let op = match session {
                Some(s) => SessionOp::Write(s),
                None => {
                    let s = self.next_session;
                    self.next_session += 1;
                    self.clients[k].session = Some(s);
                    self.timeouts.insert(s, timeout_ms);
                    SessionOp::Create(s)
                }
            };
            match role {
                Role::Leading { .. } => self.order(home, op)?,
                Role::Following { .. } | Role::Observing { .. } => {
                    let data = match op {
                        SessionOp::Create(s) => format!("c:{s}"),
                        SessionOp::Write(s) => format!("s:{s}"),
                        _ => unreachable!("clients create and write"),
                    };
                    let mut out = Vec::new();
                    let p = self.nodes.get_mut(&home).and_then(|n| n.peer.as_mut());
                    let _ = p
                        .expect("up")
                        .forward(Bytes::from(data), Vec::new(), &mut out);
                    self.handle(home, out)?;
                }
                Role::Looking => {}
            }
        }
        Ok(())
    }

    /// A read after sync at `id`: its tree must hold every write acknowledged before
    /// the sync was asked for (the first `needed` of the committed sequence).
    fn check_read(&mut self, id: ServerId, needed: usize) -> Result<(), Violation> {
        *self.stats.entry("sync answered").or_default() += 1;
        let has = self.nodes[&id].tree.len();
        if has < needed {
            return Err(self.fail(format!(
                "member {id} read after sync with {has} txns applied; {needed} were acknowledged before the sync (a stale read)"
            )));
        }
        Ok(())
    }

    /// A client at a random member asks for a sync, to read after it.
    fn client_sync(&mut self, ids: &[ServerId]) -> Result<(), Violation> {
        let to = ids[self.rng.range(0, ids.len() as u64) as usize];
        let needed = self.acked_upto;
        let at = self.now_ms + 1;
        self.push(at, Event::ClientSync { to, needed });
        Ok(())
    }

    fn client_sync_at(&mut self, id: ServerId, needed: usize) -> Result<(), Violation> {
        let Some(role) = self.nodes[&id].peer.as_ref().map(|p| p.role()) else {
            return Ok(());
        };
        let mut out = Vec::new();
        let p = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.peer.as_mut())
            .expect("up");
        let asked = match role {
            Role::Leading { .. } if self.plant == Some(Plant::SyncAtOnce) => {
                return self.check_read(id, needed);
            }
            Role::Leading { epoch } => p.sync(Reader::Local { epoch }, &mut out).is_ok(),
            Role::Following { .. } | Role::Observing { .. } => p
                .forward(Bytes::from_static(SYNC_REQUEST), Vec::new(), &mut out)
                .is_ok(),
            Role::Looking => false,
        };
        if asked {
            self.nodes
                .get_mut(&id)
                .expect("node")
                .syncs
                .push_back(needed);
        }
        self.handle(id, out)
    }

    fn deliver(&mut self, ev: Event) -> Result<(), Violation> {
        let now = self.now_ms;
        let node = self.nodes.get_mut(&ev.to()).expect("node");
        if node.paused_until.is_some() {
            node.held.push(ev);
            return Ok(());
        }
        match ev {
            Event::ClientSync { to, needed } => self.client_sync_at(to, needed),
            Event::Vote { from, to, ballot } => {
                self.votes.delivered(from, to);
                if self.cut_one_way(from, to) {
                    return Ok(());
                }
                self.with_peer(to, |p, out| p.on_vote(now, from, ballot, out))
            }
            Event::Packet {
                conn,
                from,
                to,
                msg,
                image,
            } => {
                if !self.conns[&conn].alive {
                    return Ok(());
                }
                if self.cut_one_way(from, to) {
                    self.kill_conn(conn);
                    return Ok(());
                }
                if let (Msg::Snap { zxid }, Some(image)) = (&msg, image) {
                    let zxid = *zxid;
                    if image.last().map_or(0, |t| t.zxid) != zxid {
                        return Err(self.fail(format!(
                            "SNAP at {zxid:#x} carries a tree that ends elsewhere"
                        )));
                    }
                    self.check_tree_prefix(to, &image)?;
                    let node = self.nodes.get_mut(&to).expect("node");
                    node.tree = image.clone();
                    node.gone = expired_in(&node.tree);
                    node.disk.log = image;
                    node.disk.pending.clear();
                    node.disk.applied_mark = node.disk.log.len();
                }
                if self.trace && std::env::var_os("RK_SIM_TRACE_PACKETS").is_some() {
                    eprintln!("{now} {from}->{to} c{conn} {msg:?}");
                }
                self.with_peer(to, |p, out| p.on_message(now, from, conn, msg, out))
            }
            Event::Closed { conn, to, peer } => {
                // A learner hears only of its current connection; a leader of any.
                let node = &self.nodes[&to];
                let learner_side = self.conns[&conn].learner == to;
                if learner_side && node.conn != Some(conn) {
                    return Ok(());
                }
                self.with_peer(to, |p, out| p.on_disconnected(now, peer, conn, out))
            }
        }
    }

    /// Runs `f` on member `id`'s Peer if it is up, then its effects.
    fn with_peer(
        &mut self,
        id: ServerId,
        f: impl FnOnce(&mut Peer, &mut Vec<Effect>),
    ) -> Result<(), Violation> {
        let mut out = Vec::new();
        let Some(p) = self.nodes.get_mut(&id).and_then(|n| n.peer.as_mut()) else {
            return Ok(());
        };
        f(p, &mut out);
        self.handle(id, out)
    }

    fn cut_one_way(&self, from: ServerId, to: ServerId) -> bool {
        self.blocked.contains(&(from, to))
    }

    fn flush(&mut self, id: ServerId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("node");
        node.flush_at = None;
        let pending = std::mem::take(&mut node.disk.pending);
        node.disk.log.extend(pending);
        node.disk.applied_mark = node.tree.len().min(node.disk.log.len());
        let last = node.disk.log.last().map_or(0, |t| t.zxid);
        let mut out = Vec::new();
        if let Some(p) = node.peer.as_mut() {
            p.persisted(self.now_ms, last, &mut out);
        }
        self.handle(id, out)
    }

    fn client_write(&mut self) -> Result<(), Violation> {
        let leaders: Vec<ServerId> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.paused_until.is_none()
                    && n.peer
                        .as_ref()
                        .is_some_and(|p| matches!(p.role(), Role::Leading { .. }))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in leaders {
            self.writes += 1;
            let data = Bytes::from(format!("w{}", self.writes));
            let mut out = Vec::new();
            let node = self.nodes.get_mut(&id).expect("node");
            let p = node.peer.as_mut().expect("up");
            if let Ok(z) = p.propose(self.now_ms, |_| data, &mut out) {
                node.proposed.insert(z);
            }
            self.handle(id, out)?;
        }
        Ok(())
    }

    fn inject_faults(&mut self, ids: &[ServerId]) -> Result<(), Violation> {
        if self.rng.chance(self.scenario.crash_per_s / 1000.0) {
            let id = ids[self.rng.range(0, ids.len() as u64) as usize];
            if self.up(id) {
                self.crash(id);
            } else {
                self.boot(id)?;
            }
        }
        if self.rng.chance(self.scenario.pause_per_s / 1000.0) {
            let id = ids[self.rng.range(0, ids.len() as u64) as usize];
            let ms = self.rng.range(100, 3 * SYNC_LIMIT * TICK_MS);
            let node = self.nodes.get_mut(&id).expect("node");
            if node.peer.is_some() && node.paused_until.is_none() {
                *self.stats.entry("pause").or_default() += 1;
                node.paused_until = Some(self.now_ms + ms);
                if self.trace {
                    eprintln!("{} {id} pauses for {ms} ms", self.now_ms);
                }
            }
        }
        if self.rng.chance(self.scenario.partition_per_s / 1000.0) {
            self.blocked.clear();
            for _ in 0..self.rng.range(0, ids.len() as u64 + 1) {
                let a = ids[self.rng.range(0, ids.len() as u64) as usize];
                let b = ids[self.rng.range(0, ids.len() as u64) as usize];
                if a != b {
                    self.blocked.insert((a, b));
                }
            }
        }
        Ok(())
    }

    /// One simulated ms.
    fn step(&mut self, ids: &[ServerId]) -> Result<(), Violation> {
        self.now_ms += 1;
        let now = self.now_ms;
        for &id in ids {
            let node = self.nodes.get_mut(&id).expect("node");
            if node.paused_until.is_some_and(|until| until <= now) {
                // SIGCONT: first what waited, in order, then its timers (below).
                node.paused_until = None;
                for ev in std::mem::take(&mut node.held) {
                    self.deliver(ev)?;
                }
            }
        }
        while self.events.peek().is_some_and(|t| t.at_ms <= now) {
            let t = self.events.pop().expect("peeked");
            self.deliver(t.event)?;
        }
        for &id in ids {
            if self.nodes[&id].paused_until.is_some() {
                continue;
            }
            if self.nodes[&id].flush_at.is_some_and(|at| at <= now) {
                self.flush(id)?;
            }
            let node = self.nodes.get_mut(&id).expect("node");
            if let Some(p) = node.peer.as_mut() {
                if p.next_deadline().is_some_and(|d| d <= now) {
                    let mut out = Vec::new();
                    p.tick(now, &mut out);
                    self.handle(id, out)?;
                }
            }
        }
        if now.is_multiple_of(self.scenario.write_every_ms) {
            self.client_write()?;
        }
        if now.is_multiple_of(self.scenario.read_every_ms) {
            self.client_sync(ids)?;
        }
        self.clients_step(ids)?;
        for &id in ids {
            if self.nodes[&id].paused_until.is_none() {
                self.expire_sessions(id)?;
            }
        }
        if self.faults {
            self.inject_faults(ids)?;
        }
        Ok(())
    }

    /// One leader, everyone synced with it, every tree the whole committed sequence.
    fn settled(&self) -> bool {
        let mut leader = None;
        for (id, n) in &self.nodes {
            match n.peer.as_ref().map(|p| p.role()) {
                Some(Role::Leading { .. }) if leader.is_none() => leader = Some(*id),
                Some(Role::Following { .. } | Role::Observing { .. }) => {}
                _ => return false,
            }
        }
        let Some(leader) = leader else {
            return false;
        };
        self.nodes.values().all(|n| {
            n.tree.len() == self.committed.len()
                && match n.peer.as_ref().map(|p| p.role()) {
                    Some(Role::Following { leader: l, .. } | Role::Observing { leader: l, .. }) => {
                        l == leader
                    }
                    _ => true,
                }
        })
    }

    /// The fault phase, then healing; returns how long settling took.
    pub fn run(&mut self) -> Result<u64, Violation> {
        let ids: Vec<ServerId> = self.nodes.keys().copied().collect();
        let mut boots: Vec<(u64, ServerId)> = ids
            .iter()
            .map(|&id| (self.rng.range(0, 1_000), id))
            .collect();
        boots.sort();
        while self.now_ms < self.scenario.fault_ms {
            while boots.first().is_some_and(|(at, _)| *at <= self.now_ms) {
                let (_, id) = boots.remove(0);
                if !self.up(id) {
                    self.boot(id)?;
                }
            }
            self.step(&ids)?;
        }
        self.faults = false;
        self.blocked.clear();
        for &id in &ids {
            if !self.up(id) {
                self.boot(id)?;
            }
        }
        let healed = self.now_ms;
        let acked_at_heal = self.acknowledged.len();
        while self.now_ms < healed + SETTLE_MS_MAX {
            self.step(&ids)?;
            // Settled once a write made after healing is acknowledged and every
            // member holds everything committed.
            if self.acknowledged.len() > acked_at_heal && self.settled() {
                let missing: Vec<&Zxid> = self
                    .acknowledged
                    .iter()
                    .filter(|z| !self.committed.iter().any(|t| t.zxid == **z))
                    .collect();
                if !missing.is_empty() {
                    return Err(self.fail(format!("acknowledged writes lost: {missing:x?}")));
                }
                return Ok(self.now_ms - healed);
            }
        }
        Err(self.fail(format!(
            "not settled {SETTLE_MS_MAX} ms after healing: {:?}; committed {}",
            self.nodes
                .iter()
                .map(|(id, n)| (*id, n.peer.as_ref().map(|p| p.role()), n.tree.len()))
                .collect::<Vec<_>>(),
            self.committed.len()
        )))
    }

    pub fn acknowledged(&self) -> usize {
        self.acknowledged.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::zab::sim::env_u64;

    fn seeds() -> u64 {
        env_u64("RK_ZAB_SIM_SEEDS", 5_000)
    }

    #[test]
    fn zab_keeps_every_acknowledged_write_under_faults() {
        let start = env_u64("RK_ZAB_SIM_SEED_START", 0);
        let (mut worst, mut acked) = (0, 0);
        let mut stats: BTreeMap<&str, u64> = BTreeMap::new();
        for seed in start..start + seeds() {
            let mut sim = EnsembleSim::new(seed);
            match sim.run() {
                Ok(settle_ms) => {
                    worst = worst.max(settle_ms);
                    acked += sim.acknowledged();
                    for (k, v) in &sim.stats {
                        *stats.entry(k).or_default() += v;
                    }
                }
                Err(v) => panic!(
                    "seed {} at {} ms: {} (replay: RK_ZAB_SIM_SEED_START={} RK_ZAB_SIM_SEEDS=1 RK_SIM_TRACE=1 cargo test --release zab_keeps)",
                    v.seed, v.at_ms, v.what, v.seed
                ),
            }
        }
        eprintln!(
            "{acked} acknowledged writes; worst settle time after healing: {worst} ms; {stats:?}"
        );
        // The faults reach every way of syncing a learner.
        for k in [
            "DIFF",
            "TRUNC",
            "SNAP",
            "crash",
            "pause",
            "sync forwarded",
            "sync answered",
            "request forwarded",
            "session write",
            "session expired",
        ] {
            assert!(
                stats.get(k).is_some_and(|n| *n > 0),
                "no {k} in {} seeds",
                seeds()
            );
        }
        assert!(acked > 0);
    }

    #[test]
    fn without_faults_an_ensemble_mostly_settles_within_init_limit_of_its_last_boot() {
        // Learners that decide on a leader before it decides itself send their
        // FOLLOWERINFO early; the leader takes it once it leads instead of leaving
        // them to time out (initLimit) and elect again. Without that, a third of these
        // seeds took longer than initLimit. What remains slow are elections whose
        // leader went back to looking while learners still followed it: they wait out
        // initLimit, as ZooKeeper's learners do when the leader's port refuses them.
        let seeds = seeds() / 5;
        let mut slow = Vec::new();
        for seed in 0..seeds {
            let mut sim = EnsembleSim::quiet(seed);
            let settle_ms = sim.run().map_err(|v| v.what).unwrap();
            if settle_ms >= INIT_LIMIT * TICK_MS {
                slow.push((seed, settle_ms));
            }
        }
        assert!(
            slow.len() as u64 * 10 <= seeds,
            "{} of {seeds} seeds settled later than initLimit: {slow:?}",
            slow.len()
        );
    }

    #[test]
    fn a_zab_seed_replays_exactly() {
        for seed in [5, 23] {
            let mut a = EnsembleSim::new(seed);
            let mut b = EnsembleSim::new(seed);
            let ra = a.run().map_err(|v| v.what);
            let rb = b.run().map_err(|v| v.what);
            assert_eq!(ra, rb);
            assert_eq!(a.committed, b.committed);
        }
    }

    /// Whether one of the first `seeds` seeds, run with `plant`, fails with a
    /// violation that says `what`.
    fn caught(plant: Plant, seeds: u64, what: &str) -> bool {
        (0..seeds).any(|seed| {
            let mut sim = EnsembleSim::new(seed);
            sim.plant = Some(plant);
            sim.run().is_err_and(|v| v.what.contains(what))
        })
    }

    #[test]
    fn the_checker_catches_a_leader_that_answers_syncs_at_once() {
        // A deposed leader (hung or cut off, not yet past syncLimit) still takes
        // itself for the leader: answering a sync at once reads its stale tree.
        assert!(
            caught(Plant::SyncAtOnce, 200, "stale read"),
            "a stale read after sync went unnoticed"
        );
    }

    #[test]
    fn the_checker_catches_writes_of_expired_sessions() {
        assert!(
            caught(Plant::UncheckedSessions, 200, "after its expiry"),
            "a write after its session's expiry went unnoticed"
        );
    }

    #[test]
    fn the_checker_catches_acks_before_the_disk() {
        assert!(
            caught(Plant::AckBeforeDisk, 50, "on disk at only"),
            "acks sent before the disk went unnoticed"
        );
    }
}
