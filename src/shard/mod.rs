//! A shard: one executor pinned to a core, with its own SO_REUSEPORT listener, owning
//! the connections it accepts and the sessions attached to them. It decodes frames,
//! answers reads from its current tree version, forwards writes to the broadcast core
//! and, when the committed batch comes back, fires watch events, sends replies and
//! releases the reads queued behind them — always in each session's request order.

pub mod admin;
pub mod conn;
pub mod fourlw;
pub mod reads;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};

use crate::broadcast::messages::{Batch, CoreOp, Effect, Granted, ToCore};
use crate::metrics::latency::{ShardLatencies, PUBLISH_EVERY};
use crate::proto::codes::perms;
use crate::proto::codes::{keeper_state, xid};
use crate::proto::{
    four_letter_word, put_event_frame, put_reply_frame, ConnectRequest, ConnectResponse,
    DecodeError, ErrorCode, OpCode, ReplyHeader, Request, Response, WatcherEvent,
};
use crate::server::{ConnInfo, ServerMode, ServerShared, ShardStats};
use crate::session::watches::WatchTable;
use crate::tree::{acl, DataTree};
use conn::{Conn, Pending};

/// Requests one connection may have queued before the shard stops reading from it.
pub const SESSION_OUTSTANDING_MAX: usize = 1000;
/// Reply bytes one connection may have unsent (a client that does not read its
/// replies) before the shard stops reading its requests.
pub const UNSENT_REPLY_MAX_BYTES: usize = 1 << 20;
/// How often a connection held back by the global outstanding limit looks again (the
/// requests that free room may be answered on another shard).
const THROTTLE_RECHECK: Duration = Duration::from_millis(1);
/// A connection's read buffer starts small (most sessions are idle or send small
/// requests; 100k sessions x 64 KiB would be 6 GiB) and doubles, up to this, while
/// reads keep filling it.
const READ_BUF_MAX_BYTES: usize = 64 * 1024;
const READ_BUF_MIN_BYTES: usize = 4 * 1024;

/// The core's answer to a handshake: the session granted (None: expired or a wrong
/// password), or why it refused to make one.
type HandshakeAnswer = Result<Option<Granted>, String>;

pub struct Shard {
    index: usize,
    shared: Arc<ServerShared>,
    tree: RefCell<Arc<DataTree>>,
    watches: Arc<Mutex<WatchTable>>,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    sessions: RefCell<HashMap<i64, Rc<Conn>>>,
    /// Handshakes waiting on the core, by connection.
    handshakes: RefCell<HashMap<u64, oneshot::Sender<HandshakeAnswer>>>,
    to_core: ConnectedSender<ToCore>,
    next_conn: Cell<u64>,
    /// Connections with a [`Pending::CatchUp`] in their queue.
    catching_up: RefCell<Vec<Rc<Conn>>>,
    /// Request latency recorded since the last publish (this executor only).
    latency: RefCell<ShardLatencies>,
    /// When a slow request was last warned of, and how many since went unsaid.
    slow_warned: Cell<(Option<Instant>, u64)>,
}

impl Shard {
    fn stats(&self) -> &ShardStats {
        &self.shared.shard_stats[self.index]
    }

    fn tree(&self) -> Arc<DataTree> {
        self.tree.borrow().clone()
    }

    /// The zxid of the tree version this shard serves.
    fn tree_zxid(&self) -> i64 {
        self.tree.borrow().last_zxid()
    }

    /// Moves the latency this shard recorded into its published slot.
    fn publish_latency(&self) {
        let mut slot = self.shared.latencies[self.index]
            .lock()
            .expect("latency slot poisoned");
        self.latency.borrow_mut().publish(&mut slot, Instant::now());
    }
}

/// Runs shard `index` until the process ends.
pub async fn run(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<ServerShared>,
    to_core: SharedSender<ToCore>,
    from_core: SharedReceiver<Arc<Batch>>,
    extra: ExtraListeners,
    ready: std::sync::mpsc::Sender<()>,
) {
    // SAFETY: the descriptor is a bound, listening TCP socket that this call takes
    // over (into_raw_fd gives up the std listener's ownership).
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let shard = Rc::new(Shard {
        index,
        watches: shared.watch_tables[index].clone(),
        tree: RefCell::new(shared.initial_tree.clone()),
        shared,
        conns: RefCell::default(),
        sessions: RefCell::default(),
        handshakes: RefCell::default(),
        to_core: to_core.connect().await,
        next_conn: Cell::new(0),
        catching_up: RefCell::default(),
        latency: RefCell::default(),
        slow_warned: Cell::new((None, 0)),
    });
    let from_core = from_core.connect().await;
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = from_core.recv().await {
                apply_batch(&shard, &batch);
            }
        })
        .detach();
    }
    {
        let shard = shard.clone();
        let period =
            Duration::from_millis((shard.shared.cfg.tick_time_ms as u64 / 4).clamp(10, 500));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(period).await;
                let touched: Vec<i64> = shard
                    .sessions
                    .borrow()
                    .iter()
                    .filter(|(_, c)| c.touched.replace(false))
                    .map(|(s, _)| *s)
                    .collect();
                if !touched.is_empty() && shard.to_core.send(ToCore::Touch(touched)).await.is_err()
                {
                    return;
                }
            }
        })
        .detach();
    }
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(PUBLISH_EVERY).await;
                shard.publish_latency();
            }
        })
        .detach();
    }
    admin::spawn(&shard, extra.endpoints);
    if let Some(secure) = extra.secure {
        // SAFETY: as for the client listener above.
        let secure = unsafe { TcpListener::from_raw_fd(secure.into_raw_fd()) };
        glommio::spawn_local(accept_loop(shard.clone(), secure, true)).detach();
    }
    let _ = ready.send(());
    accept_loop(shard, listener, false).await;
}

/// A shard's listeners besides its share of the client port.
pub struct ExtraListeners {
    /// Its share of secureClientPort.
    pub secure: Option<std::net::TcpListener>,
    /// The operator endpoints it serves.
    pub endpoints: Vec<admin::Endpoint>,
}

/// Accepts connections until the process ends; `secure`: TLS first.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, secure: bool) {
    let mut last_accept_warning: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let shard = shard.clone();
                if secure {
                    glommio::spawn_local(async move { serve_tls(shard, stream).await }).detach();
                } else {
                    glommio::spawn_local(async move { serve(shard, stream).await }).detach();
                }
            }
            Err(e) => {
                // Out of descriptors (EMFILE) repeats until a connection closes: say
                // so once a second, not on every retry.
                let now = std::time::Instant::now();
                if last_accept_warning
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                {
                    last_accept_warning = Some(now);
                    tracing::warn!("accept failed: {e} (clients wait in the listen queue)");
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Hands the core's answer to connection `conn_id`'s waiting handshake (if it still
/// waits).
fn answer_handshake(shard: &Shard, conn_id: u64, answer: HandshakeAnswer) {
    if let Some(tx) = shard.handshakes.borrow_mut().remove(&conn_id) {
        let _ = tx.send(answer);
    }
}

/// Applies a committed batch on this shard, entry by entry: switch to the tree version
/// after the entry, fire its watch events, then deliver its effect.
fn apply_batch(shard: &Shard, batch: &Batch) {
    let mut fired = Vec::new();
    // Connections given a watch event, and those given a write's reply.
    let mut notified: Vec<Rc<Conn>> = Vec::new();
    let mut replied: Vec<Rc<Conn>> = Vec::new();
    // Connections whose write was answered before the shard's tree shows it: their
    // queued reads wait for the next cut.
    let mut drain_at_cut: Vec<Rc<Conn>> = Vec::new();
    for entry in &batch.entries {
        if let Some(tree) = &entry.tree {
            *shard.tree.borrow_mut() = tree.clone();
        }
        if !entry.triggers.is_empty() {
            let mut watches = shard.watches.lock().expect("watch table poisoned");
            let sessions = shard.sessions.borrow();
            for t in &entry.triggers {
                watches.fire(&t.path, t.event, &mut fired);
                // One event, the same bytes for every watcher: encoded once.
                let mut frame = Vec::new();
                for s in &fired {
                    if let Some(c) = sessions.get(s) {
                        // The watch is used up either way; the event only goes to a
                        // session that may read the node.
                        if !acl::allows(&t.acl, perms::READ, &c.auth.borrow()) {
                            tracing::debug!(
                                "Not sending {:?} on {} to 0x{s:x}: no READ permission",
                                t.event,
                                t.path
                            );
                            continue;
                        }
                        if frame.is_empty() {
                            put_event_frame(
                                &mut frame,
                                -1,
                                &WatcherEvent {
                                    event_type: t.event as i32,
                                    state: keeper_state::SYNC_CONNECTED,
                                    path: t.path.to_string(),
                                },
                            );
                        }
                        c.out.borrow_mut().extend_from_slice(&frame);
                        count_sent(shard, c, 1);
                        notified.push(c.clone());
                    }
                }
            }
        }
        // After the entry's watch events, so a waiting read never shows a change before
        // its session's event about it.
        let cut = entry.tree.is_some();
        if cut && !shard.catching_up.borrow().is_empty() {
            release_caught_up(shard);
        }
        match &entry.effect {
            Effect::None => {}
            Effect::Reply {
                session_id,
                conn_id,
                xid: reply_xid,
                zxid,
                err,
                body,
            } => {
                // Only the connection that sent the request gets the reply: a session
                // that reconnected meanwhile must not see replies it did not ask for.
                let c = shard.conns.borrow().get(conn_id).cloned();
                if let Some(c) = c.filter(|c| c.session_id.get() == *session_id) {
                    deliver_write_reply(shard, &c, *reply_xid, *zxid, *err, body);
                    if cut {
                        drain_ready(shard, &c);
                    } else {
                        drain_at_cut.push(c.clone());
                    }
                    replied.push(c);
                }
            }
            Effect::Connected {
                shard: s,
                conn_id,
                granted,
            } => {
                if *s == shard.index {
                    answer_handshake(shard, *conn_id, Ok(granted.clone()));
                }
            }
            Effect::Refused {
                shard: s,
                conn_id,
                why,
            } => {
                if *s == shard.index {
                    answer_handshake(shard, *conn_id, Err(why.clone()));
                }
            }
            Effect::Attached {
                session_id,
                conn_id,
            } => {
                let old = shard.sessions.borrow().get(session_id).cloned();
                if let Some(old) = old {
                    if old.id != *conn_id {
                        tracing::info!(
                            "closing connection {} of session 0x{session_id:x}: the client reconnected",
                            old.id
                        );
                        shard.sessions.borrow_mut().remove(session_id);
                        old.close();
                    }
                }
            }
            Effect::Disconnect {
                session_id,
                conn_id,
            } => {
                let c = shard.conns.borrow().get(conn_id).cloned();
                if let Some(c) = c.filter(|c| c.session_id.get() == *session_id) {
                    tracing::warn!(
                        "closing connection {conn_id} of session 0x{session_id:x}: its write's outcome is unknown (the txn log failed)"
                    );
                    let mut sessions = shard.sessions.borrow_mut();
                    if sessions.get(session_id).is_some_and(|s| s.id == *conn_id) {
                        sessions.remove(session_id);
                    }
                    drop(sessions);
                    c.close();
                }
            }
            Effect::DropClients => {
                let conns: Vec<Rc<Conn>> = shard.conns.borrow().values().cloned().collect();
                if !conns.is_empty() {
                    tracing::info!(
                        "closing {} client connection(s): this member lost its leader",
                        conns.len()
                    );
                }
                shard.sessions.borrow_mut().clear();
                for c in conns {
                    c.close();
                }
            }
            Effect::SessionClosed { session_id } => {
                let c = shard.sessions.borrow_mut().remove(session_id);
                if let Some(c) = c {
                    c.close();
                }
                shard
                    .watches
                    .lock()
                    .expect("watch table poisoned")
                    .remove_session(*session_id);
            }
        }
        if cut {
            for c in drain_at_cut.drain(..) {
                drain_ready(shard, &c);
            }
        }
    }
    debug_assert!(drain_at_cut.is_empty(), "every batch ends with a cut");
    for c in drain_at_cut {
        drain_ready(shard, &c);
    }
    // Connections with a reply first: the writer's own latency does not wait for
    // the watch events of everyone else (each connection's bytes stay in order).
    for c in replied.into_iter().chain(notified) {
        if !c.out.borrow().is_empty() {
            c.send_now();
        }
    }
}

/// Serves the requests that waited for this shard to reach the tree version it has
/// just switched to (at the first cut at or after the version it waited for).
fn release_caught_up(shard: &Shard) {
    let waiting = std::mem::take(&mut *shard.catching_up.borrow_mut());
    for c in waiting {
        drain_ready(shard, &c);
        c.flush_soon();
        let still = c
            .queue
            .borrow()
            .iter()
            .any(|p| matches!(p, Pending::CatchUp { .. }));
        if still && !c.closing.get() {
            shard.catching_up.borrow_mut().push(c);
        }
    }
}

/// Sends a write's reply; the reads queued behind it are answered (`drain_ready`) once
/// the shard's tree shows the write.
fn deliver_write_reply(
    shard: &Shard,
    c: &Conn,
    reply_xid: i32,
    zxid: i64,
    err: i32,
    body: &Response,
) {
    let front = c.queue.borrow_mut().pop_front();
    match front {
        Some(Pending::Write {
            xid: x,
            op,
            received,
        }) => {
            debug_assert_eq!(x, reply_xid, "replies must come back in request order");
            record_latency(shard, c, op, received);
        }
        _ => tracing::error!(
            "session 0x{:x}: reply for xid {reply_xid} does not match the head of its queue",
            c.session_id.get()
        ),
    }
    shard.stats().outstanding.fetch_sub(1, Relaxed);
    c.info.last_zxid.store(zxid, Relaxed);
    put_reply_frame(
        &mut c.out.borrow_mut(),
        ReplyHeader {
            xid: reply_xid,
            zxid,
            err,
        },
        body,
    );
    count_sent(shard, c, 1);
}

fn record_latency(shard: &Shard, c: &Conn, op: i32, received: Instant) {
    let now = Instant::now();
    let us = now.saturating_duration_since(received).as_micros() as u64;
    shard.stats().record_latency(us);
    // Pings are the client's liveness, not work: they stay out of the per-op figures.
    if op != OpCode::Ping as i32 {
        shard.latency.borrow_mut().record(op, us);
    }
    let slow_ms = shard.shared.cfg.slow_request_threshold_ms;
    if slow_ms > 0 && us / 1000 > slow_ms {
        warn_slow(shard, c, op, us, now);
    }
    let info = &c.info;
    info.last_response_ms
        .store(shard.shared.monotonic_ms_at(now), Relaxed);
    info.last_latency_us.store(us, Relaxed);
    info.lat_sum_us.fetch_add(us, Relaxed);
    info.lat_count.fetch_add(1, Relaxed);
    info.lat_min_us.fetch_min(us, Relaxed);
    info.lat_max_us.fetch_max(us, Relaxed);
}

/// Counts a request slower than slowRequestThresholdMs and says so, at most once a
/// second per shard (a stalled disk makes every request slow: one line, with the
/// count since the last).
fn warn_slow(shard: &Shard, c: &Conn, op: i32, us: u64, now: Instant) {
    shard.stats().slow_requests.fetch_add(1, Relaxed);
    let (last, quiet) = shard.slow_warned.get();
    if last.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
        shard.slow_warned.set((last, quiet + 1));
        return;
    }
    shard.slow_warned.set((Some(now), 0));
    let more = if quiet > 0 {
        format!(" ({quiet} more slow requests on this shard since the last warning)")
    } else {
        String::new()
    };
    tracing::warn!(
        "slow request: {} from session 0x{:x} ({}) took {} ms, over slowRequestThresholdMs={}{more}",
        crate::metrics::latency::OP_NAMES[crate::metrics::latency::op_class(op)],
        c.session_id.get(),
        c.info.peer,
        us / 1000,
        shard.shared.cfg.slow_request_threshold_ms
    );
}

/// Counts `frames` packets sent on `c` (replies, watch events, the handshake's answer).
fn count_sent(shard: &Shard, c: &Conn, frames: u64) {
    shard.stats().packets_sent.fetch_add(frames, Relaxed);
    c.info.sent.fetch_add(frames, Relaxed);
}

/// Counts one packet received on `c` (a request, the handshake, a four-letter word).
fn count_received(shard: &Shard, c: &Conn) {
    shard.stats().packets_received.fetch_add(1, Relaxed);
    c.info.received.fetch_add(1, Relaxed);
}

/// Answers queued reads (and ready replies) up to the next pending write. A client
/// that does not read its replies is held at the same bound here as in its read loop:
/// past `UNSENT_REPLY_MAX_BYTES` unsent, the rest stays queued until the writer has
/// sent enough (up to `SESSION_OUTSTANDING_MAX` large replies would pile up otherwise).
fn drain_ready(shard: &Shard, c: &Conn) {
    loop {
        if c.unsent_bytes() > UNSENT_REPLY_MAX_BYTES {
            c.reads_held.set(true);
            break;
        }
        let next = {
            let mut q = c.queue.borrow_mut();
            match q.front() {
                Some(Pending::Write { .. }) | None => None,
                Some(Pending::CatchUp { zxid }) if shard.tree_zxid() < *zxid => None,
                Some(_) => q.pop_front(),
            }
        };
        match next {
            None => break,
            Some(Pending::Read {
                xid: x,
                op,
                req,
                received,
            }) => {
                answer_read(shard, c, x, &req);
                record_latency(shard, c, op, received);
            }
            Some(Pending::Ready { frame, close_after }) => {
                c.out.borrow_mut().extend_from_slice(&frame);
                count_sent(shard, c, 1);
                if close_after {
                    c.close();
                }
            }
            Some(Pending::CatchUp { .. }) => {}
            Some(Pending::Write { .. }) => unreachable!("stopped above"),
        }
    }
    c.info.queued.store(c.queue.borrow().len() as i64, Relaxed);
    c.queue_shrunk.notify();
}

fn answer_read(shard: &Shard, c: &Conn, req_xid: i32, req: &Request) {
    // Borrowed, not cloned: a read touches no count shared with the other shards (the
    // tree version is one Arc for all of them). Nothing here awaits, so the batch
    // task cannot be replacing it meanwhile.
    let tree = shard.tree.borrow();
    let auth = c.auth.borrow();
    let mut ctx = reads::ReadContext {
        tree: &tree,
        session_id: c.session_id.get(),
        auth: &auth,
        watches: reads::LazyWatches::new(&shard.watches),
    };
    let frames = reads::execute(&mut ctx, req_xid, req, &mut c.out.borrow_mut());
    c.info.last_zxid.store(tree.last_zxid(), Relaxed);
    count_sent(shard, c, frames);
}

/// Reads whole frames from a socket, keeping any partial frame for the next call.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limit: usize,
}

enum Frame {
    Data(Vec<u8>),
    Eof,
    TooLarge(i64),
}

impl FrameReader {
    fn new(limit: usize) -> FrameReader {
        FrameReader {
            buf: vec![0; READ_BUF_MIN_BYTES],
            start: 0,
            end: 0,
            limit,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Makes at least `n` bytes available; false on EOF.
    async fn fill(
        &mut self,
        rd: &mut (impl AsyncReadExt + Unpin),
        n: usize,
    ) -> std::io::Result<bool> {
        while self.end - self.start < n {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            } else if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let room = self.buf.len() - self.end;
            let got = rd.read(&mut self.buf[self.end..]).await?;
            if got == 0 {
                return Ok(false);
            }
            self.end += got;
            // A read that filled the buffer: more is coming, read more at a time.
            if got == room && self.buf.len() < READ_BUF_MAX_BYTES {
                let grown = (self.buf.len() * 2).min(READ_BUF_MAX_BYTES);
                self.buf.resize(grown, 0);
            }
        }
        Ok(true)
    }

    /// After a large frame, gives the memory back once the buffer is drained.
    fn shrink_if_idle(&mut self) {
        if self.start == self.end && self.buf.len() > READ_BUF_MAX_BYTES {
            self.buf = vec![0; READ_BUF_MIN_BYTES];
            self.start = 0;
            self.end = 0;
        }
    }

    async fn next(&mut self, rd: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Frame> {
        if !self.fill(rd, 4).await? {
            return Ok(Frame::Eof);
        }
        let b = self.buffered();
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if len < 0 || len as usize > self.limit {
            return Ok(Frame::TooLarge(len as i64));
        }
        let len = len as usize;
        if !self.fill(rd, 4 + len).await? {
            return Ok(Frame::Eof);
        }
        let frame = self.buf[self.start + 4..self.start + 4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        self.shrink_if_idle();
        Ok(Frame::Data(frame))
    }
}

async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let _ = stream.set_nodelay(true);
    let socket = std::os::fd::AsRawFd::as_raw_fd(&stream);
    serve_conn(shard, stream, peer, Vec::new(), Some(socket)).await
}

/// A connection on secureClientPort: the TLS handshake (within
/// nio.sessionlessCnxnTimeout), then the client's certificate as its x509 id.
async fn serve_tls(shard: Rc<Shard>, stream: TcpStream) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = shard.shared.tls.clone() else {
        return;
    };
    let timeout = Duration::from_millis(shard.shared.cfg.sessionless_conn_timeout_ms);
    let handshake = async { Some(acceptor.accept(stream).await) };
    let overdue = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    let tls = match futures_lite::future::or(handshake, overdue).await {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => {
            tracing::warn!("TLS handshake with {peer} failed: {e}");
            return;
        }
        None => {
            tracing::warn!(
                "TLS handshake with {peer} not done within {} ms",
                timeout.as_millis()
            );
            return;
        }
    };
    let mut ids = Vec::new();
    let dn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| crate::tls::subject_dn(c));
    if let Some(dn) = dn {
        if shard.shared.cfg.ssl.x509_super_user.as_deref() == Some(dn.as_str()) {
            ids.push(crate::proto::Id::new("super", ""));
        }
        tracing::debug!("TLS client {peer} authenticated as x509:{dn}");
        ids.push(crate::proto::Id::new("x509", &dn));
    }
    serve_conn(shard, tls, peer, ids, None).await
}

/// Serves one client connection until it closes; `ids`: identities it holds beside
/// its IP (its certificate's); `socket`: the plain TCP socket under `stream`, which
/// bursts may write to directly (`Conn::send_now`).
async fn serve_conn<S>(
    shard: Rc<Shard>,
    stream: S,
    peer: SocketAddr,
    ids: Vec<crate::proto::Id>,
    socket: Option<std::os::fd::RawFd>,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let id = ((shard.index as u64) << 48) | shard.next_conn.replace(shard.next_conn.get() + 1);
    let info = Arc::new(ConnInfo::new(id, peer));
    if !shard.shared.admit(info.clone()) {
        return;
    }
    let c = Rc::new(Conn::new(id, info.clone()));
    c.socket.set(socket);
    if !ids.is_empty() {
        let mut auth = c.auth.borrow().as_ref().clone();
        auth.extend(ids);
        *c.auth.borrow_mut() = Arc::new(auth);
    }
    shard.conns.borrow_mut().insert(id, c.clone());
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let reader = {
        let shard = shard.clone();
        let c = c.clone();
        async move {
            if let Err(e) = read_loop(&shard, &c, &mut rd).await {
                tracing::debug!("connection {peer}: {e}");
            }
            c.close();
            // The writer sends what is queued, then ends the connection.
            std::future::pending().await
        }
    };
    let writer = {
        let c = c.clone();
        let shard = shard.clone();
        async move {
            loop {
                // Reads held back for a client that did not read (see `drain_ready`),
                // once what it was sent has gone out.
                if c.reads_held.get() && c.unsent_bytes() <= UNSENT_REPLY_MAX_BYTES {
                    c.reads_held.set(false);
                    drain_ready(&shard, &c);
                }
                let data = std::mem::take(&mut *c.out.borrow_mut());
                if data.is_empty() {
                    if c.closing.get() {
                        break;
                    }
                    c.wake_writer.wait().await;
                    continue;
                }
                c.writing_bytes.set(data.len());
                let written = wr.write_all(&data).await;
                c.writing_bytes.set(0);
                c.out_drained.notify();
                if written.is_err() {
                    break;
                }
                // Reuse the allocation if nothing was queued meanwhile.
                let mut out = c.out.borrow_mut();
                if out.is_empty() {
                    let mut data = data;
                    data.clear();
                    *out = data;
                }
            }
            wr
        }
    };
    let mut wr = futures_lite::future::or(reader, writer).await;
    // No direct send from here on: the socket closes below and its number may be
    // given to another connection while this one is still referenced.
    c.socket.set(None);
    // The connection is gone; its session lives on until it expires or the client
    // reconnects, but its watches go with the connection, as in ZooKeeper. It leaves
    // the registry before its socket closes: a client that saw the close and then asks
    // `cons` or `srvr` does not find it there.
    shard.conns.borrow_mut().remove(&id);
    let sid = c.session_id.get();
    let owned = shard
        .sessions
        .borrow()
        .get(&sid)
        .is_some_and(|x| x.id == id);
    if owned {
        shard.sessions.borrow_mut().remove(&sid);
        shard
            .watches
            .lock()
            .expect("watch table poisoned")
            .remove_session(sid);
    }
    shard.handshakes.borrow_mut().remove(&id);
    let pending = c
        .queue
        .borrow()
        .iter()
        .filter(|p| matches!(p, Pending::Write { .. }))
        .count();
    shard.stats().outstanding.fetch_sub(pending as i64, Relaxed);
    shard.shared.release(&info);
    let _ = wr.close().await;
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("Packet len {0} is out of range")]
    TooLarge(i64),
    #[error("malformed {what}: {err}")]
    Malformed {
        what: &'static str,
        err: DecodeError,
    },
    #[error("{0}")]
    Refused(String),
    #[error("the broadcast core has stopped")]
    CoreGone,
    #[error("no handshake within {0:?}")]
    HandshakeOverdue(Duration),
}

/// What a new connection opens with.
enum Opening {
    FourLetterWord(&'static str),
    /// The ConnectRequest's frame.
    Handshake(Vec<u8>),
    Closed,
}

async fn read_opening(
    frames: &mut FrameReader,
    rd: &mut (impl AsyncReadExt + Unpin),
    peer: SocketAddr,
) -> Result<Opening, ConnError> {
    if !frames.fill(rd, 4).await? {
        return Ok(Opening::Closed);
    }
    let first: [u8; 4] = frames.buffered()[..4].try_into().expect("4 bytes");
    if let Some(word) = four_letter_word(first) {
        return Ok(Opening::FourLetterWord(word));
    }
    match frames.next(rd).await? {
        Frame::Data(f) => Ok(Opening::Handshake(f)),
        Frame::Eof => Ok(Opening::Closed),
        Frame::TooLarge(n) => {
            tracing::warn!("Closing connection to {peer}: Packet len {n} is out of range!");
            Err(ConnError::TooLarge(n))
        }
    }
}

async fn read_loop(
    shard: &Rc<Shard>,
    c: &Rc<Conn>,
    rd: &mut (impl AsyncReadExt + Unpin),
) -> Result<(), ConnError> {
    let limit = shard.shared.cfg.frame_bytes_limit();
    let mut frames = FrameReader::new(limit);
    let peer = c.info.peer;
    // A connection that sends neither a handshake nor a four-letter word in time is
    // closed, as ZooKeeper closes its session-less connections.
    let timeout = Duration::from_millis(shard.shared.cfg.sessionless_conn_timeout_ms);
    let overdue = async {
        glommio::timer::sleep(timeout).await;
        Err(ConnError::HandshakeOverdue(timeout))
    };
    let opening = futures_lite::future::or(read_opening(&mut frames, rd, peer), overdue).await?;
    let frame = match opening {
        Opening::Closed => return Ok(()),
        Opening::FourLetterWord(word) => {
            count_received(shard, c);
            let text = if shard.shared.cfg.four_letter_word_enabled(word) {
                fourlw::answer(shard, word).await
            } else {
                format!("{word} is not executed because it is not in the whitelist.\n")
            };
            c.out.borrow_mut().extend_from_slice(text.as_bytes());
            // Counted once answered, as ZooKeeper does: the next word's figures
            // include this answer, this word's own do not.
            count_sent(shard, c, 1);
            return Ok(());
        }
        Opening::Handshake(frame) => frame,
    };
    count_received(shard, c);
    let req = ConnectRequest::decode(&frame).map_err(|err| ConnError::Malformed {
        what: "ConnectRequest",
        err,
    })?;
    // What this server has made durable, which may be ahead of this shard's tree
    // version for a moment (its reads then wait for the shard to catch up).
    let last_zxid = shard.tree_zxid().max(shard.shared.last_zxid());
    if req.last_zxid_seen > last_zxid {
        let msg = format!(
            "Refusing session request for client {peer} as it has seen zxid 0x{:x} our last zxid is 0x{last_zxid:x} client must try another server",
            req.last_zxid_seen,
        );
        tracing::info!("{msg}");
        return Err(ConnError::Refused(msg));
    }
    let mode = shard.shared.mode();
    if !mode.serving() {
        // As ZooKeeper's "ZooKeeperServer not running": the client tries another member.
        return Err(ConnError::Refused(format!(
            "Refusing session request for client {peer}: this member has no leader (looking)"
        )));
    }
    if mode == ServerMode::ReadOnly {
        // As ZooKeeper's read-only server: only clients that accept read-only mode,
        // and only with a new session (a session of the ensemble cannot be renewed
        // without its leader); the others try another member.
        if req.read_only != Some(true) {
            return Err(ConnError::Refused(format!(
                "Refusing session request for client {peer}: not a read-only client, and this member is in read-only mode"
            )));
        }
        if req.session_id != 0 {
            return Err(ConnError::Refused(format!(
                "Refusing global session reconnection in RO mode {peer} (session 0x{:x})",
                req.session_id
            )));
        }
    }
    c.sent_read_only.set(req.read_only.is_some());
    let (tx, rx) = oneshot::channel();
    shard.handshakes.borrow_mut().insert(c.id, tx);
    shard
        .to_core
        .send(ToCore::Connect {
            shard: shard.index,
            conn_id: c.id,
            session_id: req.session_id,
            passwd: req.passwd.clone(),
            timeout_ms: req.timeout_ms,
        })
        .await
        .map_err(|_| ConnError::CoreGone)?;
    let granted = rx.await.map_err(|_| ConnError::CoreGone)?.map_err(|why| {
        let msg = format!("Refusing session request for client {peer}: {why}");
        tracing::warn!("{msg}");
        ConnError::Refused(msg)
    })?;
    let resp = ConnectResponse {
        protocol_version: 0,
        timeout_ms: granted.as_ref().map_or(0, |g| g.timeout_ms),
        session_id: granted.as_ref().map_or(0, |g| g.session_id),
        passwd: granted.as_ref().map_or(vec![0; 16], |g| g.passwd.to_vec()),
        read_only: req.read_only.map(|_| mode == ServerMode::ReadOnly),
    };
    {
        let mut out = c.out.borrow_mut();
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        resp.encode(&mut *out);
        let len = (out.len() - start - 4) as i32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    count_sent(shard, c, 1);
    c.flush_soon();
    let Some(g) = granted else {
        tracing::info!(
            "Invalid session 0x{:x} for client {peer}, probably expired",
            req.session_id
        );
        return Ok(());
    };
    c.session_id.set(g.session_id);
    c.info.session_id.store(g.session_id, Relaxed);
    c.info.timeout_ms.store(g.timeout_ms, Relaxed);
    if let Some(old) = shard.sessions.borrow_mut().insert(g.session_id, c.clone()) {
        if old.id != c.id {
            old.close();
        }
    }
    loop {
        // Back-pressure, as ZooKeeper stops reading from a connection: this session's
        // own queue, its replies the client has not read, and the requests the whole
        // server has in flight (globalOutstandingLimit, request_throttle_max_requests).
        while c.queue.borrow().len() >= SESSION_OUTSTANDING_MAX {
            c.queue_shrunk.wait().await;
        }
        while c.unsent_bytes() > UNSENT_REPLY_MAX_BYTES && !c.closing.get() {
            c.out_drained.wait().await;
        }
        if shard.shared.over_outstanding_limit() {
            shard.shared.throttle_waits.fetch_add(1, Relaxed);
            while shard.shared.over_outstanding_limit() && !c.closing.get() {
                glommio::timer::sleep(THROTTLE_RECHECK).await;
            }
        }
        let frame = match frames.next(rd).await? {
            Frame::Data(f) => f,
            Frame::Eof => return Ok(()),
            Frame::TooLarge(n) => {
                tracing::warn!("Closing connection to {peer}: Packet len {n} is out of range!");
                return Err(ConnError::TooLarge(n));
            }
        };
        if c.closing.get() {
            return Ok(());
        }
        count_received(shard, c);
        // As in ZooKeeper, a packet keeps the session alive only if it is a request
        // proper: auth and SASL packets are answered on the side and touch nothing.
        let op = frame
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if op != Some(OpCode::Auth as i32) && op != Some(OpCode::Sasl as i32) {
            c.touched.set(true);
        }
        let (header, req) = match Request::decode(&frame) {
            Ok(r) => r,
            Err(DecodeError::UnknownOpCode(op)) if frame.len() >= 8 => {
                // ZooKeeper answers an unknown opcode with UNIMPLEMENTED and keeps going.
                let x = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                tracing::warn!("Received packet at server of unknown type {op} from {peer}");
                let mut f = Vec::new();
                put_reply_frame(
                    &mut f,
                    ReplyHeader {
                        xid: x,
                        zxid: shard.tree_zxid(),
                        err: ErrorCode::Unimplemented.code(),
                    },
                    &Response::Empty,
                );
                enqueue_ready(shard, c, f, false);
                continue;
            }
            Err(err) => {
                tracing::warn!("Closing connection to {peer}: malformed request: {err}");
                return Err(ConnError::Malformed {
                    what: "request",
                    err,
                });
            }
        };
        // Special xids (ping, auth, setWatches) are negative: `cons` shows the last
        // real request's, as ZooKeeper does.
        if header.xid >= 0 {
            c.info.last_cxid.store(header.xid, Relaxed);
        }
        c.info.last_op.store(header.op, Relaxed);
        dispatch(shard, c, header.xid, header.op, req).await?;
    }
}

/// A precomputed reply that must still wait for earlier requests.
fn enqueue_ready(shard: &Shard, c: &Conn, frame: Vec<u8>, close_after: bool) {
    if c.queue.borrow().is_empty() {
        c.out.borrow_mut().extend_from_slice(&frame);
        count_sent(shard, c, 1);
        if close_after {
            c.close();
        }
        c.flush_soon();
    } else {
        c.queue
            .borrow_mut()
            .push_back(Pending::Ready { frame, close_after });
    }
}

async fn dispatch(
    shard: &Rc<Shard>,
    c: &Rc<Conn>,
    req_xid: i32,
    op: i32,
    req: Request,
) -> Result<(), ConnError> {
    let received = Instant::now();
    let core_op = match req {
        Request::Auth { scheme, auth, .. } => {
            let res = reads::authenticate(&scheme, &auth, shard.shared.cfg.super_digest.as_deref());
            let err = match res {
                Ok(ids) => {
                    let mut a = c.auth.borrow().as_ref().clone();
                    for id in ids {
                        if !a.contains(&id) {
                            a.push(id);
                        }
                    }
                    *c.auth.borrow_mut() = Arc::new(a);
                    0
                }
                Err(code) => {
                    shard.shared.auth_failed.fetch_add(1, Relaxed);
                    tracing::warn!(
                        "Authentication with scheme {scheme:?} failed for session 0x{:x}",
                        c.session_id.get()
                    );
                    code.code()
                }
            };
            let mut f = Vec::new();
            put_reply_frame(
                &mut f,
                ReplyHeader {
                    xid: xid::AUTH,
                    zxid: 0,
                    err,
                },
                &Response::Empty,
            );
            enqueue_ready(shard, c, f, err != 0);
            return Ok(());
        }
        Request::Unsupported(OpCode::Sasl) => {
            // No SASL login is configured. ZooKeeper then has no SASL server for the
            // connection: it logs an error and answers OK with no token, keeping the
            // connection, and the client's SASL mechanism decides what that means.
            tracing::warn!(
                "Client {} asked for SASL authentication, which is not configured: answered with no token",
                c.info.peer
            );
            let mut f = Vec::new();
            put_reply_frame(
                &mut f,
                ReplyHeader {
                    xid: req_xid,
                    zxid: 0,
                    err: 0,
                },
                &Response::Sasl(None),
            );
            enqueue_ready(shard, c, f, false);
            return Ok(());
        }
        Request::Create(_)
        | Request::Delete { .. }
        | Request::SetData { .. }
        | Request::Check { .. }
        | Request::SetAcl { .. }
        | Request::Multi(_)
        | Request::Sync { .. }
        | Request::CloseSession => CoreOp::from_request(req).expect("an ordered op"),
        read => {
            let published = shard.shared.last_zxid();
            let behind = shard.tree_zxid() < published;
            if c.queue.borrow().is_empty() && !behind {
                answer_read(shard, c, req_xid, &read);
                record_latency(shard, c, op, received);
                c.flush_soon();
            } else {
                if behind {
                    let mut q = c.queue.borrow_mut();
                    let already = q.iter().any(|p| matches!(p, Pending::CatchUp { .. }));
                    q.push_back(Pending::CatchUp { zxid: published });
                    drop(q);
                    if !already {
                        shard.catching_up.borrow_mut().push(c.clone());
                    }
                }
                c.queue.borrow_mut().push_back(Pending::Read {
                    xid: req_xid,
                    op,
                    req: read,
                    received,
                });
            }
            return Ok(());
        }
    };
    debug_assert!(OpCode::from_i32(op).is_some());
    // Reads queued ahead of this write must not see it: ask for a cut before it.
    let cut_before = c
        .queue
        .borrow()
        .iter()
        .any(|p| !matches!(p, Pending::Write { .. }));
    c.queue.borrow_mut().push_back(Pending::Write {
        xid: req_xid,
        op,
        received,
    });
    c.info.queued.store(c.queue.borrow().len() as i64, Relaxed);
    shard.stats().outstanding.fetch_add(1, Relaxed);
    let auth = c.auth.borrow().clone();
    shard
        .to_core
        .send(ToCore::Request {
            session_id: c.session_id.get(),
            conn_id: c.id,
            xid: req_xid,
            op: core_op,
            auth,
            cut_before,
        })
        .await
        .map_err(|_| ConnError::CoreGone)
}
