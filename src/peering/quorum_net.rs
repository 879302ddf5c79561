//! The quorum port: learners connect to their leader's, and every packet between them
//! is a QuorumPacket as Apache ZooKeeper writes it (no length prefix), the data tree
//! following a SNAP (see [`super::snap_image`]). A connection's first packet must be
//! FOLLOWERINFO or OBSERVERINFO naming a member of the ensemble; anything that does
//! not decode ends the connection with a log line.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::net::{TcpListener, TcpStream};

use super::link::{incomplete, read_first, spawn_accept_loop, Link};
use super::snap_image::{SnapDecoder, SnapImage};
use super::{Event, Inbox};
use crate::config::ServerId;
use crate::proto::jute::Reader;
use crate::zab::packets::learner_info;
use crate::zab::wire::ringkeeper_version;
use crate::zab::wire::{packet_type, QuorumPacket, WireError};

/// How long a learner may take to send FOLLOWERINFO.
const INFO_WAIT: Duration = Duration::from_secs(10);
const CONNECT_TRIES: u32 = 25;
const CONNECT_RETRY: Duration = Duration::from_millis(200);

/// A packet, with the state that follows it when it is a SNAP.
pub struct Received {
    pub packet: QuorumPacket,
    pub image: Option<SnapImage>,
}

/// Cuts one packet (and, after a SNAP from the leader, what follows it). What follows
/// a SNAP and has not all arrived is decoded as far as it has, and the next call goes
/// on from there. A leader whose LEADERINFO carried ringkeeper's protocol version
/// sends it in ringkeeper's envelope.
fn cut(from_leader: bool) -> impl FnMut(&[u8]) -> Result<Option<(Received, usize)>, WireError> {
    let mut snap: Option<SnapDecoder> = None;
    let mut ringkeeper_leader = false;
    move |b| {
        let mut r = Reader::new(b);
        let packet = match QuorumPacket::decode(&mut r) {
            Ok(p) => p,
            Err(e) if incomplete(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut image = None;
        if from_leader && packet.packet_type == packet_type::LEADERINFO {
            let version = packet.data.as_deref().and_then(|d| d.get(..4));
            ringkeeper_leader = version
                .and_then(|v| v.try_into().ok())
                .and_then(|v| ringkeeper_version(i32::from_be_bytes(v)))
                .is_some();
        }
        if from_leader && packet.packet_type == packet_type::SNAP {
            let decoder = snap.get_or_insert_with(|| SnapDecoder::new(ringkeeper_leader));
            match decoder.feed(&mut r) {
                Ok(i) => image = Some(i),
                Err(e) if incomplete(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
            snap = None;
        }
        Ok(Some((Received { packet, image }, r.position())))
    }
}

pub struct QuorumNet {
    me: ServerId,
    addrs: BTreeMap<ServerId, SocketAddr>,
    inbox: Rc<Inbox>,
    /// Learners connected to us, by id.
    learners: RefCell<BTreeMap<ServerId, Rc<Link>>>,
    /// Learners whose LearnerInfo carried ringkeeper's protocol version.
    ringkeeper_learners: RefCell<BTreeSet<ServerId>>,
    /// Our connection to our leader.
    leader: RefCell<Option<Rc<Link>>>,
    next_link: Cell<u64>,
}

impl QuorumNet {
    pub fn new(
        me: ServerId,
        addrs: BTreeMap<ServerId, SocketAddr>,
        inbox: Rc<Inbox>,
    ) -> Rc<QuorumNet> {
        Rc::new(QuorumNet {
            me,
            addrs,
            inbox,
            learners: RefCell::default(),
            ringkeeper_learners: RefCell::default(),
            leader: RefCell::default(),
            next_link: Cell::new(1),
        })
    }

    fn new_link(&self, peer: ServerId) -> Rc<Link> {
        let id = self.next_link.get();
        self.next_link.set(id + 1);
        Link::new(id, peer)
    }

    pub fn start(self: &Rc<Self>, listener: TcpListener) {
        let net = self.clone();
        spawn_accept_loop(listener, "quorum", move |stream| {
            net.clone().accepted(stream)
        });
    }

    async fn accepted(self: Rc<Self>, mut stream: TcpStream) {
        let from = stream.peer_addr().map_or("?".into(), |a| a.to_string());
        let (first, rest) = match read_first(&mut stream, INFO_WAIT, cut(false)).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("learner connection from {from} dropped: {e}");
                return;
            }
        };
        let peer = match learner_info(&first.packet) {
            Ok(info) if self.addrs.contains_key(&info.server_id) && info.server_id != self.me => {
                let mut rk = self.ringkeeper_learners.borrow_mut();
                if info.protocol_version.and_then(ringkeeper_version).is_some() {
                    rk.insert(info.server_id);
                } else {
                    rk.remove(&info.server_id);
                }
                info.server_id
            }
            Ok(info) => {
                tracing::warn!("learner connection from {from} dropped: server id {} is not another member of this ensemble", info.server_id);
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "learner connection from {from} dropped: its first packet is {} ({e}), not FOLLOWERINFO or OBSERVERINFO",
                    first.packet.type_name()
                );
                return;
            }
        };
        let link = self.new_link(peer);
        if let Some(old) = self.learners.borrow_mut().insert(peer, link.clone()) {
            old.close();
        }
        self.inbox.push(Event::Packet {
            from: peer,
            conn: link.id,
            from_leader: false,
            received: first,
        });
        let id = link.id;
        self.serve(link, stream, rest, false).await;
        let mut learners = self.learners.borrow_mut();
        if learners.get(&peer).is_some_and(|l| l.id == id) {
            learners.remove(&peer);
        }
    }

    async fn serve(&self, link: Rc<Link>, stream: TcpStream, rest: Vec<u8>, from_leader: bool) {
        let peer = link.peer.get();
        let inbox = self.inbox.clone();
        let conn = link.id;
        let why = link
            .run(stream, rest, cut(from_leader), |received| {
                inbox.push(Event::Packet {
                    from: peer,
                    conn,
                    from_leader,
                    received,
                })
            })
            .await;
        tracing::info!("quorum connection with {peer} ended: {why}");
        self.inbox.push(Event::Closed {
            peer,
            conn,
            from_leader,
        });
    }

    /// Connects to `leader` as its learner (closing any connection to a leader).
    /// Returns the connection's id; what it sends first is queued by the caller.
    pub fn connect(self: &Rc<Self>, leader: ServerId) -> u64 {
        if let Some(old) = self.leader.borrow_mut().take() {
            old.close();
        }
        let link = self.new_link(leader);
        *self.leader.borrow_mut() = Some(link.clone());
        let net = self.clone();
        let addr = self.addrs.get(&leader).copied();
        glommio::spawn_local(async move {
            let mut stream = None;
            if let Some(addr) = addr {
                for _ in 0..CONNECT_TRIES {
                    if link.is_closed() {
                        break;
                    }
                    match TcpStream::connect_timeout(addr, INFO_WAIT).await {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => {
                            tracing::info!("cannot connect to leader {leader} at {addr}: {e}");
                            glommio::timer::sleep(CONNECT_RETRY).await;
                        }
                    }
                }
            }
            match stream {
                Some(s) if !link.is_closed() => net.serve(link, s, Vec::new(), true).await,
                _ => {
                    link.close();
                    net.inbox.push(Event::Closed {
                        peer: leader,
                        conn: link.id,
                        from_leader: true,
                    });
                }
            }
        })
        .detach();
        self.leader.borrow().as_ref().map_or(0, |l| l.id)
    }

    /// Queues `packet` for `to`: our leader, or a learner of ours.
    pub fn send_packet(&self, to: ServerId, packet: &QuorumPacket) {
        self.with_link(to, |l| l.send_encoded(|b| packet.encode(b)));
    }

    /// Whether learner `id`'s LearnerInfo said it is a ringkeeper member.
    pub fn is_ringkeeper_learner(&self, id: ServerId) -> bool {
        self.ringkeeper_learners.borrow().contains(&id)
    }

    /// Sends a SNAP and what follows it: bulk items, outside the link's queue bound.
    pub fn send_snapshot(&self, to: ServerId, parts: Vec<Bytes>) {
        self.with_link(to, |l| {
            for p in parts {
                l.send_bulk(p);
            }
        });
    }

    /// Runs `send` on the link to `to`: our leader, or a learner of ours.
    fn with_link(&self, to: ServerId, send: impl FnOnce(&Link)) {
        if let Some(l) = self
            .leader
            .borrow()
            .as_ref()
            .filter(|l| l.peer.get() == to && !l.is_closed())
        {
            send(l);
            return;
        }
        if let Some(l) = self.learners.borrow().get(&to) {
            send(l);
        }
    }

    /// Whether `peer` is the leader we are connected (or connecting) to.
    pub fn leader_is(&self, peer: ServerId) -> bool {
        self.leader
            .borrow()
            .as_ref()
            .is_some_and(|l| l.peer.get() == peer && !l.is_closed())
    }

    pub fn disconnect(&self, peer: ServerId) {
        let mut leader = self.leader.borrow_mut();
        if leader.as_ref().is_some_and(|l| l.peer.get() == peer) {
            if let Some(l) = leader.take() {
                l.close();
            }
        }
        if let Some(l) = self.learners.borrow_mut().remove(&peer) {
            l.close();
        }
    }
}
