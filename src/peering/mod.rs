//! The network between ensemble members, at the edge beside the shards' sockets: the
//! election port and the quorum port as Apache ZooKeeper runs them, and the driver
//! that runs a member's Zab state machine ([`Peer`]) over them against its log and
//! tree (a [`Replica`]).
//!
//! - `link`: one connection (bounded queue, writer, reader cutting items).
//! - `election_net`: votes, with ZooKeeper's rule of one connection per pair.
//! - `quorum_net`: learner connections and their QuorumPackets.
//!
//! Everything here runs on one glommio executor; the protocol itself (`crate::zab`)
//! knows nothing of it.

mod election_net;
mod link;
mod quorum_net;
pub mod snap_image;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::TcpListener;

use crate::config::ServerId;
use crate::util::Notify;
use crate::zab::election::Ballot;
use crate::zab::history::{Txn, Zxid};
use crate::zab::messages::{Effect, Msg, Reader, Role};
use crate::zab::packets::{from_packet_keeping_txn, to_packet, Outgoing, PacketError};
use crate::zab::peer::{Peer, PeerConfig, Recovered};
use crate::zab::wire::{Direction, LEADER_PROTOCOL_VERSION};
use crate::zkformat::txn::ZkTxn;
use election_net::ElectionNet;
use quorum_net::{QuorumNet, Received};
use snap_image::{SnapFiles, SnapImage, RINGKEEPER_PROTOCOL_VERSION};

/// What the nets hand the driver.
pub enum Event {
    Vote {
        from: ServerId,
        ballot: Ballot,
    },
    /// `from_leader`: it came on a connection this member opened to its leader.
    Packet {
        from: ServerId,
        conn: u64,
        from_leader: bool,
        received: Received,
    },
    Closed {
        peer: ServerId,
        conn: u64,
        from_leader: bool,
    },
}

#[derive(Default)]
pub struct Inbox {
    queue: RefCell<VecDeque<Event>>,
    notify: Notify,
}

impl Inbox {
    pub fn push(&self, e: Event) {
        self.queue.borrow_mut().push_back(e);
        self.notify.notify();
    }

    fn drain(&self) -> Vec<Event> {
        self.queue.borrow_mut().drain(..).collect()
    }
}

/// A member's log and tree, as the driver uses them. The futures need not be Send:
/// a member runs on one executor.
#[allow(async_fn_in_trait)]
pub trait Replica {
    /// Durable before returning.
    fn persist_epochs(&mut self, accepted: i64, current: i64) -> std::io::Result<()>;
    /// Returns once the replica is done with the loss of a lead (its log cut back to
    /// what was proposed, its tree reloaded from disk): the driver waits for it before
    /// it logs or applies anything a new leader sends, which that cleanup would
    /// otherwise undo.
    async fn settle(&mut self) {}
    /// Appends to the log; durable later (see `persisted`).
    fn append(&mut self, txn: &Txn);
    /// As `append`, with `txn.data` already decoded (the driver decodes a leader's
    /// PROPOSAL to check it).
    fn append_decoded(&mut self, txn: &Txn, decoded: ZkTxn) {
        let _ = decoded;
        self.append(txn)
    }
    /// How far the log is on disk.
    fn persisted(&self) -> Zxid;
    /// Durable before returning. The driver waits for it (and does nothing else
    /// meanwhile): a log writer may first have to finish the write it has in flight.
    async fn truncate(&mut self, to: Zxid) -> std::io::Result<()>;
    /// The state a leader sent after SNAP (its tree, or a ringkeeper leader's files)
    /// replaces ours; durable before returning.
    async fn install_snapshot(
        &mut self,
        leader: ServerId,
        zxid: Zxid,
        image: Option<SnapImage>,
    ) -> std::io::Result<()>;
    /// Our tree as of `zxid` in ZooKeeper's serialization with its signature, to
    /// follow a SNAP we send; None if this replica cannot make one.
    fn snapshot_image(&self, zxid: Zxid) -> Option<Vec<u8>>;
    /// For a ringkeeper learner: our state as of `zxid` as files (our snapshot at or
    /// below it and our log after that up to it); None sends the tree instead.
    fn snapshot_files(&self, zxid: Zxid) -> Option<SnapFiles> {
        let _ = zxid;
        None
    }
    fn apply(&mut self, txn: &Txn);
    /// The txns `apply` took since the last call are all there are for now: what they
    /// produced goes on (the driver calls this before it waits, and before a
    /// truncation or a snapshot install).
    fn applied(&mut self) {}
    /// A learner forwarded a client's request (REQUEST's data and the session's
    /// identities) for this leader to order.
    fn forwarded(&mut self, from: ServerId, data: Bytes, auth: Vec<crate::proto::Id>) {
        let _ = auth;
        tracing::warn!(
            "a request forwarded by member {from} ({} bytes) is not served by this replica",
            data.len()
        );
    }
    /// A learner reported activity of these sessions (id, timeout).
    fn touched(&mut self, sessions: Vec<(i64, i32)>) {
        let _ = sessions;
    }
    /// The oldest sync of our clients is answered (the leader's SYNC for the one we
    /// forwarded arrived, or as leader, our read round confirmed it).
    fn synced(&mut self) {}
    /// As leader: a learner's client reconnects with `session_id`; whether the
    /// session is alive (it is then touched, as a reconnect is activity). A replica
    /// without sessions knows none.
    fn revalidate(&mut self, session_id: i64, timeout_ms: i32) -> bool {
        let _ = (session_id, timeout_ms);
        false
    }
    /// What `mntr` reports of our learners changed (None: we do not lead).
    fn leader_figures(&mut self, figures: Option<crate::zab::LeaderFigures>) {
        let _ = figures;
    }
    /// This member's role changed (after every effect before it has run).
    fn role_changed(&mut self, role: Role) {
        let _ = role;
    }
}

/// Where each member listens, and the configuration text votes carry.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub peer: PeerConfig,
    pub election: BTreeMap<ServerId, SocketAddr>,
    pub quorum: BTreeMap<ServerId, SocketAddr>,
}

impl MemberConfig {
    /// How many of the ensemble's members (this one included) are on this machine:
    /// those whose quorum address is a loopback address or one of this machine's own
    /// (one a socket can be bound to; nothing is sent).
    pub fn members_on_this_machine(&self) -> usize {
        self.quorum
            .values()
            .filter(|a| a.ip().is_loopback() || std::net::UdpSocket::bind((a.ip(), 0)).is_ok())
            .count()
    }

    /// Member `my_id` of the ensemble `cfg`'s server lines describe (each member's
    /// first address; host names are resolved now, as ZooKeeper does at start).
    pub fn from_config(
        cfg: &crate::config::Config,
        my_id: ServerId,
    ) -> Result<MemberConfig, String> {
        use crate::config::quorum::LearnerType;
        use std::net::ToSocketAddrs;
        let mut election = BTreeMap::new();
        let mut quorum = BTreeMap::new();
        let mut voters = std::collections::BTreeSet::new();
        let mut observers = std::collections::BTreeSet::new();
        for s in &cfg.servers {
            let a = s
                .addresses
                .first()
                .ok_or_else(|| format!("server.{} has no address", s.id))?;
            let resolve = |port: u16| -> Result<SocketAddr, String> {
                (a.host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| format!("server.{}: cannot resolve {}: {e}", s.id, a.host))?
                    .next()
                    .ok_or_else(|| format!("server.{}: {} has no address", s.id, a.host))
            };
            quorum.insert(s.id, resolve(a.quorum_port)?);
            election.insert(s.id, resolve(a.election_port)?);
            let observer = s.learner_type == LearnerType::Observer
                || (s.id == my_id && cfg.peer_type == LearnerType::Observer);
            if observer {
                observers.insert(s.id);
            } else {
                voters.insert(s.id);
            }
        }
        if !quorum.contains_key(&my_id) {
            return Err(format!("my id {my_id} is not among the server.N lines"));
        }
        Ok(MemberConfig {
            peer: PeerConfig {
                my_id,
                voters,
                observers,
                tick_ms: u64::from(cfg.tick_time_ms),
                init_limit: u64::from(cfg.init_limit),
                sync_limit: u64::from(cfg.sync_limit),
                retain: 500,
                cumulative: true,
            },
            election,
            quorum,
        })
    }

    /// The ensemble as ZooKeeper's QuorumVerifier prints it (what notifications and
    /// NEWLEADER carry).
    pub fn config_text(&self) -> Vec<u8> {
        let mut s = String::new();
        for (id, q) in &self.quorum {
            let e = self.election[id];
            let kind = if self.peer.observers.contains(id) {
                "observer"
            } else {
                "participant"
            };
            s.push_str(&format!(
                "server.{id}={}:{}:{}:{kind}\n",
                q.ip(),
                q.port(),
                e.port()
            ));
        }
        s.push_str("version=0");
        s.into_bytes()
    }
}

/// Builds a txn's bytes for the zxid it is proposed at.
pub type MakeTxn = Box<dyn FnOnce(Zxid) -> Bytes>;

/// What the embedding side asks of its member, run in the order asked.
enum Ask {
    Propose(MakeTxn),
    /// Answer a sync, from a learner or one of our clients (as the leader).
    Sync(Reader),
    /// Our clients' sessions (id, timeout) showed activity (as a learner).
    Touch(Vec<(i64, i32)>),
    /// A client's request for our leader (as a learner).
    Forward(Bytes, Vec<crate::proto::Id>),
}

/// The embedding side's handle on a running member.
#[derive(Default)]
pub struct MemberHandle {
    inbox: Rc<Inbox>,
    role: Cell<Option<Role>>,
    asks: RefCell<VecDeque<Ask>>,
    stop: Cell<bool>,
}

impl MemberHandle {
    pub fn new() -> Rc<MemberHandle> {
        Rc::new(MemberHandle::default())
    }

    pub fn role(&self) -> Role {
        self.role.get().unwrap_or(Role::Looking)
    }

    /// Proposes a write, if this member is the established leader when the driver
    /// takes it (else it is dropped with a log line).
    pub fn propose(&self, make: MakeTxn) {
        self.ask(Ask::Propose(make));
    }

    /// Answers a sync (as the leader), from a learner or one of our clients, once
    /// every proposal asked for before it has been committed and a quorum has shown
    /// that we still lead.
    pub fn sync(&self, reader: Reader) {
        self.ask(Ask::Sync(reader));
    }

    /// Forwards a client's request (REQUEST's data) to our leader; dropped with a log
    /// line when there is none.
    pub fn forward(&self, data: Bytes, auth: Vec<crate::proto::Id>) {
        self.ask(Ask::Forward(data, auth));
    }

    /// Reports our clients' sessions (id, timeout) as alive to our leader.
    pub fn touch(&self, sessions: Vec<(i64, i32)>) {
        self.ask(Ask::Touch(sessions));
    }

    fn ask(&self, a: Ask) {
        self.asks.borrow_mut().push_back(a);
        self.inbox.notify.notify();
    }

    /// Ends the driver (its connections close).
    pub fn stop(&self) {
        self.stop.set(true);
        self.inbox.notify.notify();
    }

    /// Wakes the driver (the replica's log reached the disk further).
    pub fn wake(&self) {
        self.inbox.notify.notify();
    }
}

/// DIFF, TRUNC or SNAP: how a leader brings a learner in line (logged on both sides).
fn sync_kind(msg: &Msg) -> Option<&'static str> {
    match msg {
        Msg::Diff { .. } => Some("DIFF"),
        Msg::Trunc { .. } => Some("TRUNC"),
        Msg::Snap { .. } => Some("SNAP"),
        _ => None,
    }
}

/// Decoded proposals the driver keeps for their append at most (far more than one
/// read of the leader's connection brings).
const DECODED_KEPT_MAX: usize = 65_536;

struct Driver<R: Replica> {
    me: ServerId,
    replica: Rc<RefCell<R>>,
    election: Rc<ElectionNet>,
    quorum: Rc<QuorumNet>,
    handle: Rc<MemberHandle>,
    config_text: Vec<u8>,
    /// Our connection to our leader (what comes on older ones is stale).
    leader_conn: Option<u64>,
    /// What followed the leader's SNAP, until the install it is for.
    pending_image: Option<SnapImage>,
    /// PROPOSALs and INFORMs as decoded on arrival, oldest first, until their append:
    /// (zxid, the address of the data they were decoded from, the txn).
    decoded: VecDeque<(Zxid, usize, ZkTxn)>,
    last_proposed: Zxid,
}

impl<R: Replica> Driver<R> {
    // The replica is borrowed across the awaits of a truncation or a snapshot install:
    // only this driver borrows it, and it does nothing else until they return.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn run_effects(&mut self, out: &mut Vec<Effect>) -> std::io::Result<()> {
        let effects: Vec<Effect> = std::mem::take(out);
        for e in effects {
            match e {
                Effect::Vote { to, ballot } => self.election.send(to, ballot),
                Effect::Connect { leader } => {
                    let conn = self.quorum.connect(leader);
                    self.leader_conn = Some(conn);
                }
                Effect::Disconnect { peer } => self.quorum.disconnect(peer),
                Effect::Send { to, msg } => self.send(to, &msg),
                Effect::PersistEpochs { accepted, current } => self
                    .replica
                    .borrow_mut()
                    .persist_epochs(accepted, current)?,
                Effect::Append(txn) => {
                    self.replica.borrow_mut().settle().await;
                    match self.take_decoded(&txn) {
                        Some(z) => self.replica.borrow_mut().append_decoded(&txn, z),
                        None => self.replica.borrow_mut().append(&txn),
                    }
                }
                Effect::Truncate { to } => {
                    self.replica.borrow_mut().settle().await;
                    self.replica.borrow_mut().applied();
                    self.replica.borrow_mut().truncate(to).await?
                }
                Effect::InstallSnapshot { leader, zxid } => {
                    self.replica.borrow_mut().settle().await;
                    self.replica.borrow_mut().applied();
                    let image = self.pending_image.take();
                    self.replica
                        .borrow_mut()
                        .install_snapshot(leader, zxid, image)
                        .await?
                }
                Effect::Apply(txn) => {
                    self.replica.borrow_mut().settle().await;
                    self.replica.borrow_mut().apply(&txn)
                }
                Effect::Forwarded { from, data, auth } => {
                    self.replica.borrow_mut().forwarded(from, data, auth)
                }
                Effect::Touched(sessions) => self.replica.borrow_mut().touched(sessions),
                Effect::Revalidate {
                    from,
                    session_id,
                    timeout_ms,
                } => {
                    let valid = self.replica.borrow_mut().revalidate(session_id, timeout_ms);
                    self.send(from, &Msg::Revalidated { session_id, valid });
                }
                Effect::Synced => self.replica.borrow_mut().synced(),
                Effect::Role(role) => {
                    tracing::info!("member {}: {role:?}", self.me);
                    self.handle.role.set(Some(role));
                    self.replica.borrow_mut().role_changed(role);
                }
                Effect::Warn(w) => tracing::warn!("member {}: {w}", self.me),
            }
        }
        Ok(())
    }

    /// The txn decoded from the very bytes `txn` carries, if it was.
    fn take_decoded(&mut self, txn: &Txn) -> Option<ZkTxn> {
        while self.decoded.front().is_some_and(|d| d.0 < txn.zxid) {
            self.decoded.pop_front();
        }
        let same = |d: &(Zxid, usize, ZkTxn)| d.0 == txn.zxid && d.1 == txn.data.as_ptr() as usize;
        if self.decoded.front().is_some_and(same) {
            return self.decoded.pop_front().map(|d| d.2);
        }
        None
    }

    fn send(&mut self, to: ServerId, msg: &Msg) {
        if let Msg::Proposal(t) = msg {
            self.last_proposed = self.last_proposed.max(t.zxid);
        }
        let to_leader = self.leader_conn.is_some() && self.quorum.leader_is(to);
        // A learner always says it is a ringkeeper member; a leader says so to one
        // that did (ZooKeeper's members see ZooKeeper's version).
        let ringkeeper_learner = self.quorum.is_ringkeeper_learner(to);
        let protocol_version = match msg {
            Msg::LearnerInfo { .. } => RINGKEEPER_PROTOCOL_VERSION,
            _ if ringkeeper_learner => RINGKEEPER_PROTOCOL_VERSION,
            _ => LEADER_PROTOCOL_VERSION,
        };
        let out = Outgoing {
            my_id: self.me,
            config: Some(&self.config_text),
            last_proposed: self.last_proposed,
            to_leader,
            protocol_version,
        };
        tracing::trace!("member {}: to {to}: {msg:?}", self.me);
        let packet = to_packet(msg, &out);
        let Msg::Snap { zxid } = msg else {
            if let Some(how) = sync_kind(msg) {
                tracing::info!("member {}: syncing learner {to} by {how}", self.me);
            }
            // Encoded straight into the link's queue.
            self.quorum.send_packet(to, &packet);
            return;
        };
        let mut bytes = Vec::new();
        packet.encode(&mut bytes);
        let files = ringkeeper_learner
            .then(|| self.replica.borrow().snapshot_files(*zxid))
            .flatten();
        if let Some(files) = files {
            tracing::info!(
                "member {}: syncing learner {to} by SNAP: snapshot file {:#x} ({} bytes) and {} bytes of log",
                self.me,
                files.snapshot_zxid,
                files.snapshot.len(),
                files.log.len()
            );
            let mut parts = vec![Bytes::from(bytes)];
            parts.extend(snap_image::files_parts(files));
            self.quorum.send_snapshot(to, parts);
            return;
        }
        let Some(image) = self.replica.borrow().snapshot_image(*zxid) else {
            tracing::warn!(
                "member {}: learner {to} needs a SNAP, which this replica cannot send: dropping it",
                self.me
            );
            self.quorum.disconnect(to);
            return;
        };
        tracing::info!(
            "member {}: syncing learner {to} by SNAP: the tree ({} bytes)",
            self.me,
            image.len()
        );
        if ringkeeper_learner {
            bytes.extend_from_slice(&snap_image::tree_envelope());
        }
        bytes.extend_from_slice(&image);
        self.quorum.send_snapshot(to, vec![Bytes::from(bytes)]);
    }

    fn event(&mut self, peer: &mut Peer, now: u64, e: Event, out: &mut Vec<Effect>) {
        match e {
            Event::Vote { from, ballot } => peer.on_vote(now, from, ballot, out),
            Event::Packet {
                from,
                conn,
                from_leader,
                received,
            } => {
                if from_leader && self.leader_conn != Some(conn) {
                    return; // from a leader connection we have since closed
                }
                let direction = if from_leader {
                    Direction::FromLeader
                } else {
                    Direction::ToLeader
                };
                match from_packet_keeping_txn(&received.packet, direction) {
                    Ok((msg, decoded)) => {
                        if let (Some(z), Msg::Proposal(t) | Msg::Inform(t)) = (decoded, &msg) {
                            // Bounded: what the peer did not append is let go.
                            if self.decoded.len() >= DECODED_KEPT_MAX {
                                self.decoded.pop_front();
                            }
                            self.decoded
                                .push_back((t.zxid, t.data.as_ptr() as usize, z));
                        }
                        tracing::trace!("member {}: from {from} on {conn}: {msg:?}", self.me);
                        if let Some(how) = sync_kind(&msg) {
                            tracing::info!(
                                "member {}: leader {from} syncs us by {how} ({:#x})",
                                self.me,
                                received.packet.zxid
                            );
                        }
                        if received.image.is_some() {
                            self.pending_image = received.image;
                        }
                        peer.on_message(now, from, conn, msg, out);
                    }
                    Err(PacketError::Unsupported(what)) => {
                        tracing::debug!("member {}: {what} from {from} not handled yet", self.me)
                    }
                    Err(e) => {
                        tracing::warn!(
                            "member {}: dropping the connection with {from}: {e}",
                            self.me
                        );
                        self.quorum.disconnect(from);
                    }
                }
            }
            Event::Closed {
                peer: p,
                conn,
                from_leader,
            } => {
                if from_leader && self.leader_conn != Some(conn) {
                    return;
                }
                peer.on_disconnected(now, p, conn, out);
            }
        }
    }
}

/// Runs member `cfg.peer.my_id` until its handle is stopped: binds its election and
/// quorum ports, then drives its [`Peer`] with what arrives, the clock, the replica's
/// disk and the handle's proposals.
pub async fn run_member<R: Replica + 'static>(
    cfg: MemberConfig,
    recovered: Recovered,
    replica: Rc<RefCell<R>>,
    handle: Rc<MemberHandle>,
) -> std::io::Result<()> {
    let me = cfg.peer.my_id;
    let bind = |addrs: &BTreeMap<ServerId, SocketAddr>, what: &str| {
        let addr = addrs.get(&me).copied().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no {what} address for member {me}"),
            )
        })?;
        TcpListener::bind(addr)
            .map_err(|e| std::io::Error::other(format!("{what} port {addr}: {e}")))
    };
    let election_listener = bind(&cfg.election, "election")?;
    let quorum_listener = bind(&cfg.quorum, "quorum")?;
    let inbox = handle.inbox.clone();
    let others = |m: &BTreeMap<ServerId, SocketAddr>| {
        m.iter()
            .filter(|(id, _)| **id != me)
            .map(|(k, v)| (*k, *v))
            .collect()
    };
    let election = ElectionNet::new(
        me,
        cfg.election[&me],
        others(&cfg.election),
        cfg.config_text(),
        inbox.clone(),
    );
    election.start(election_listener);
    let quorum = QuorumNet::new(me, cfg.quorum.clone(), inbox.clone());
    quorum.start(quorum_listener);
    let mut d = Driver {
        me,
        replica: replica.clone(),
        election,
        quorum,
        handle: handle.clone(),
        config_text: cfg.config_text(),
        leader_conn: None,
        pending_image: None,
        decoded: VecDeque::new(),
        last_proposed: 0,
    };
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let mut peer = Peer::new(cfg.peer, recovered);
    let mut out = Vec::new();
    peer.start(now(), &mut out);
    d.run_effects(&mut out).await?;
    let mut persisted = replica.borrow().persisted();
    let mut figures = None;
    loop {
        // At least a ms: a task that never waits would starve the connections' tasks.
        let wait = peer
            .next_deadline()
            .map_or(100, |at| at.saturating_sub(now()))
            .clamp(1, 100);
        futures_lite::future::or(
            inbox.notify.wait(),
            glommio::timer::sleep(Duration::from_millis(wait)),
        )
        .await;
        if handle.stop.get() {
            // The executor's end closes every connection and listener.
            return Ok(());
        }
        let t = now();
        for e in inbox.drain() {
            d.event(&mut peer, t, e, &mut out);
            d.run_effects(&mut out).await?;
        }
        let asks: Vec<Ask> = handle.asks.borrow_mut().drain(..).collect();
        for ask in asks {
            match ask {
                Ask::Propose(make) => {
                    if let Err(e) = peer.propose(t, make, &mut out) {
                        tracing::warn!("member {me}: a write was not proposed: {e}");
                    }
                }
                Ask::Sync(reader) => {
                    if let Err(e) = peer.sync(reader, &mut out) {
                        tracing::debug!("member {me}: a sync ({reader:?}) was not answered: {e}");
                    }
                }
                Ask::Touch(sessions) => peer.touch(sessions),
                Ask::Forward(data, auth) => {
                    if let Err(e) = peer.forward(data, auth, &mut out) {
                        tracing::warn!("member {me}: a client's request was not forwarded: {e}");
                    }
                }
            }
            d.run_effects(&mut out).await?;
        }
        let p = replica.borrow().persisted();
        if p > persisted {
            persisted = p;
            peer.persisted(t, p, &mut out);
            d.run_effects(&mut out).await?;
        }
        if peer.next_deadline().is_some_and(|at| at <= t) {
            peer.tick(t, &mut out);
            d.run_effects(&mut out).await?;
        }
        if replica.borrow().persisted() > persisted {
            inbox.notify.notify();
        }
        let now_figures = peer.leader_figures();
        if now_figures != figures {
            figures = now_figures;
            replica.borrow_mut().leader_figures(figures);
        }
        replica.borrow_mut().applied();
    }
}
