//! The election port, with Apache ZooKeeper's connection rules (QuorumCnxManager):
//!
//! - the side that opens a connection first sends its opening (protocol version,
//!   server id, election address);
//! - between two members one connection is kept, the one the higher id opened: a
//!   member receiving a connection from a lower id closes it (and opens its own), and
//!   keeps one from a higher id, replacing any older one;
//! - each message is a length-prefixed notification; of the notifications not yet sent
//!   to a member only the newest is kept, and the last one sent is sent again on a new
//!   connection.
//!
//! ringkeeper keeps a connection open to every member with a lower id; to a member
//! with a higher id that has not connected (ZooKeeper connects when it has something
//! to say) it opens one when it has a vote to send, which that member closes and
//! answers with its own.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use super::link::{incomplete, read_first, spawn_accept_loop, Link};
use super::{Event, Inbox};
use crate::config::ServerId;
use crate::proto::jute::Reader;
use crate::zab::election::Ballot;
use crate::zab::wire::{
    put_election_message, ElectionOpening, Notification, WireError, ELECTION_PROTOCOL_V1,
};

/// How long a connection may take to send its opening.
const OPENING_WAIT: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

pub struct ElectionNet {
    me: ServerId,
    my_addr: SocketAddr,
    peers: BTreeMap<ServerId, SocketAddr>,
    /// The ensemble's configuration, as notifications carry it.
    config: Vec<u8>,
    inbox: Rc<Inbox>,
    links: RefCell<BTreeMap<ServerId, Rc<Link>>>,
    /// The last notification sent (or queued) to each member.
    last: RefCell<BTreeMap<ServerId, Vec<u8>>>,
    poking: RefCell<BTreeMap<ServerId, bool>>,
    next_link: Cell<u64>,
}

fn cut_opening(b: &[u8]) -> Result<Option<(ElectionOpening, usize)>, WireError> {
    let mut r = Reader::new(b);
    match ElectionOpening::decode(&mut r) {
        Ok(o) => Ok(Some((o, r.position()))),
        Err(e) if incomplete(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn cut_notification(b: &[u8]) -> Result<Option<(Notification, usize)>, WireError> {
    if b.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if len <= 0 || len as usize > crate::zab::wire::ELECTION_MESSAGE_BYTES_MAX {
        return Err(WireError::MessageLength(len));
    }
    let end = 4 + len as usize;
    if b.len() < end {
        return Ok(None);
    }
    Ok(Some((Notification::decode(&b[4..end])?, end)))
}

impl ElectionNet {
    pub fn new(
        me: ServerId,
        my_addr: SocketAddr,
        peers: BTreeMap<ServerId, SocketAddr>,
        config: Vec<u8>,
        inbox: Rc<Inbox>,
    ) -> Rc<ElectionNet> {
        Rc::new(ElectionNet {
            me,
            my_addr,
            peers,
            config,
            inbox,
            links: RefCell::default(),
            last: RefCell::default(),
            poking: RefCell::default(),
            next_link: Cell::new(1),
        })
    }

    /// Listens, and keeps connections to the members with lower ids.
    pub fn start(self: &Rc<Self>, listener: TcpListener) {
        let net = self.clone();
        spawn_accept_loop(listener, "election", move |stream| {
            net.clone().accepted(stream)
        });
        for (&id, &addr) in &self.peers {
            if id < self.me {
                let net = self.clone();
                glommio::spawn_local(async move { net.keep_connected(id, addr).await }).detach();
            }
        }
    }

    fn opening(&self) -> Vec<u8> {
        let mut b = Vec::new();
        ElectionOpening::Versioned {
            protocol_version: ELECTION_PROTOCOL_V1,
            server_id: self.me,
            addresses: self.my_addr.to_string(),
        }
        .encode(&mut b);
        b
    }

    fn new_link(&self, peer: ServerId) -> Rc<Link> {
        let id = self.next_link.get();
        self.next_link.set(id + 1);
        Link::new(id, peer)
    }

    async fn accepted(self: Rc<Self>, mut stream: TcpStream) {
        let from = stream.peer_addr().map_or("?".into(), |a| a.to_string());
        let (opening, rest) = match read_first(&mut stream, OPENING_WAIT, cut_opening).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("election connection from {from} dropped: {e}");
                return;
            }
        };
        let peer = opening.server_id();
        if !self.peers.contains_key(&peer) {
            tracing::warn!(
                "election connection from {from} dropped: server id {peer} is not in this ensemble"
            );
            return;
        }
        if peer < self.me {
            // We open the connections to lower ids (and do keep one open).
            return;
        }
        self.run_link(peer, stream, rest).await;
    }

    /// Keeps a connection to a member with a lower id, reconnecting with backoff.
    async fn keep_connected(self: Rc<Self>, peer: ServerId, addr: SocketAddr) {
        let mut wait = RETRY_MIN;
        loop {
            match TcpStream::connect_timeout(addr, OPENING_WAIT).await {
                Ok(stream) => {
                    let link = self.new_link(peer);
                    link.send(self.opening());
                    wait = RETRY_MIN;
                    self.serve(link, stream, Vec::new()).await;
                }
                Err(e) => tracing::debug!("election connection to {peer} at {addr}: {e}"),
            }
            glommio::timer::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    async fn run_link(&self, peer: ServerId, stream: TcpStream, rest: Vec<u8>) {
        let link = self.new_link(peer);
        self.serve(link, stream, rest).await;
    }

    async fn serve(&self, link: Rc<Link>, stream: TcpStream, rest: Vec<u8>) {
        let peer = link.peer.get();
        if let Some(old) = self.links.borrow_mut().insert(peer, link.clone()) {
            old.close();
        }
        if let Some(last) = self.last.borrow().get(&peer) {
            link.send(last.clone());
        }
        let inbox = self.inbox.clone();
        let why =
            link.run(stream, rest, cut_notification, |n: Notification| {
                match Ballot::from_notification(&n) {
                    Some(ballot) => inbox.push(Event::Vote { from: peer, ballot }),
                    None => tracing::warn!(
                        "member {peer} sent a notification with an unknown state {}",
                        n.state
                    ),
                }
            })
            .await;
        tracing::debug!("election connection with {peer} ended: {why}");
        let mut links = self.links.borrow_mut();
        if links.get(&peer).is_some_and(|l| l.id == link.id) {
            links.remove(&peer);
        }
    }

    /// Sends `ballot` to `to` (replacing any notification not yet sent to it).
    pub fn send(self: &Rc<Self>, to: ServerId, ballot: Ballot) {
        let mut b = Vec::new();
        put_election_message(&mut b, &ballot.to_notification(self.config.clone()));
        self.last.borrow_mut().insert(to, b.clone());
        if let Some(link) = self.links.borrow().get(&to).filter(|l| !l.is_closed()) {
            link.replace(b);
            return;
        }
        if to > self.me {
            self.poke(to);
        }
    }

    /// Opens a connection to a higher id so that it connects back (ZooKeeper opens
    /// its connections when it has something to send, which may be never).
    fn poke(self: &Rc<Self>, peer: ServerId) {
        let Some(&addr) = self.peers.get(&peer) else {
            return;
        };
        if self.poking.borrow().get(&peer).copied().unwrap_or(false) {
            return;
        }
        self.poking.borrow_mut().insert(peer, true);
        let net = self.clone();
        glommio::spawn_local(async move {
            if let Ok(mut stream) = TcpStream::connect_timeout(addr, OPENING_WAIT).await {
                use futures_lite::AsyncWriteExt;
                let _ = stream.write_all(&net.opening()).await;
                // It closes this connection and opens its own; wait for that.
                let mut sink = [0u8; 64];
                let _ = futures_lite::future::or(
                    async {
                        use futures_lite::AsyncReadExt;
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    },
                    glommio::timer::sleep(OPENING_WAIT),
                )
                .await;
            }
            glommio::timer::sleep(RETRY_MAX).await;
            net.poking.borrow_mut().insert(peer, false);
        })
        .detach();
    }
}
