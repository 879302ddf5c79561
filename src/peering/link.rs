//! One TCP connection to another member, as both nets use it: a bounded outgoing
//! queue drained by a writer, a reader that cuts what arrives into items, and a close
//! that ends both.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::config::ServerId;
use crate::proto::jute::DecodeError;
use crate::util::Notify;
use crate::zab::wire::WireError;

/// Bytes a link may have queued before its peer is deemed too slow and dropped (it
/// reconnects and catches up). A bulk item (a SNAP's tree) does not count.
pub const LINK_QUEUE_BYTES_MAX: usize = 64 << 20;

/// Most bytes the writer gathers from the queue into one write; a larger item (a
/// SNAP's tree) is written on its own, as it is.
const WRITE_BATCH_BYTES: usize = 256 << 10;

pub struct Link {
    pub id: u64,
    pub peer: Cell<ServerId>,
    /// What is to be written, in order.
    out: RefCell<VecDeque<Queued>>,
    out_bytes: Cell<usize>,
    /// Of `out_bytes`, those of bulk items.
    bulk_bytes: Cell<usize>,
    wake: Notify,
    closed: Cell<bool>,
    closed_wake: Notify,
}

/// A piece of the outgoing queue: packets encoded one after another into one buffer
/// (up to `WRITE_BATCH_BYTES`, one write), or a bulk item as it was handed over.
enum Queued {
    Packets(Vec<u8>),
    Bulk(Bytes),
}

impl Link {
    pub fn new(id: u64, peer: ServerId) -> Rc<Link> {
        Rc::new(Link {
            id,
            peer: Cell::new(peer),
            out: RefCell::default(),
            out_bytes: Cell::new(0),
            bulk_bytes: Cell::new(0),
            wake: Notify::default(),
            closed: Cell::new(false),
            closed_wake: Notify::default(),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Queues `bytes`; a peer that lets too much pile up is dropped.
    pub fn send(&self, bytes: Vec<u8>) {
        self.send_encoded(|b| b.extend_from_slice(&bytes));
    }

    /// Queues what `encode` appends, written straight into the queue's last buffer
    /// (a leader under load sends a PROPOSAL and a COMMIT per txn to each follower:
    /// no allocation or copy of its own for each).
    pub fn send_encoded(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.closed.get() {
            return;
        }
        let mut out = self.out.borrow_mut();
        let open = matches!(out.back(), Some(Queued::Packets(b)) if b.len() < WRITE_BATCH_BYTES);
        if !open {
            out.push_back(Queued::Packets(Vec::with_capacity(4096)));
        }
        let Some(Queued::Packets(buf)) = out.back_mut() else {
            unreachable!("a packet buffer was just made the last item")
        };
        let before = buf.len();
        encode(buf);
        let added = buf.len() - before;
        drop(out);
        self.queued(added);
    }

    /// Queues a bulk item (a SNAP and the tree or files after it): however large, it
    /// does not count against the queue's bound; what is queued with it still does.
    pub fn send_bulk(&self, bytes: Bytes) {
        if self.closed.get() {
            return;
        }
        self.bulk_bytes.set(self.bulk_bytes.get() + bytes.len());
        let len = bytes.len();
        self.out.borrow_mut().push_back(Queued::Bulk(bytes));
        self.queued(len);
    }

    fn queued(&self, len: usize) {
        self.out_bytes.set(self.out_bytes.get() + len);
        if self.out_bytes.get() - self.bulk_bytes.get() > LINK_QUEUE_BYTES_MAX {
            tracing::warn!(
                "member {}: more than {LINK_QUEUE_BYTES_MAX} bytes queued, dropping its connection",
                self.peer.get()
            );
            self.close();
        }
        self.wake.notify();
    }

    /// Replaces whatever is queued and unsent with `bytes` (election notifications:
    /// only the newest one matters, as ZooKeeper's one-slot send queue keeps it).
    pub fn replace(&self, bytes: Vec<u8>) {
        let mut out = self.out.borrow_mut();
        out.clear();
        self.out_bytes.set(bytes.len());
        self.bulk_bytes.set(0);
        out.push_back(Queued::Packets(bytes));
        drop(out);
        self.wake.notify();
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.closed_wake.notify();
        self.wake.notify();
    }

    async fn write_loop(&self, wr: &mut (impl AsyncWriteExt + Unpin)) {
        loop {
            // Packets queued meanwhile were encoded into one buffer: one write for all
            // of them (a system call per packet would cost more than the packets).
            let next = self.out.borrow_mut().pop_front();
            if let Some(item) = next {
                let bytes: &[u8] = match &item {
                    Queued::Packets(b) => b,
                    Queued::Bulk(b) => {
                        self.bulk_bytes
                            .set(self.bulk_bytes.get().saturating_sub(b.len()));
                        b
                    }
                };
                self.out_bytes
                    .set(self.out_bytes.get().saturating_sub(bytes.len()));
                if bytes.is_empty() {
                    continue;
                }
                if wr.write_all(bytes).await.is_err() {
                    return;
                }
                tracing::trace!(
                    "link {} to {}: wrote {} bytes",
                    self.id,
                    self.peer.get(),
                    bytes.len()
                );
                continue;
            }
            if self.closed.get() {
                return;
            }
            self.wake.wait().await;
            if self.closed.get() && self.out.borrow().is_empty() {
                return;
            }
        }
    }

    async fn closed_wait(&self) {
        while !self.closed.get() {
            self.closed_wake.wait().await;
        }
    }

    /// Runs the link on `stream` until either side ends it: `cut` takes items off the
    /// front of what arrived (None: not a whole item yet), `deliver` gets each one.
    /// Returns why it ended, for the log.
    pub async fn run<T>(
        &self,
        stream: TcpStream,
        mut read: Vec<u8>,
        mut cut: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, WireError>,
        mut deliver: impl FnMut(T),
    ) -> String {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = futures_lite::io::split(stream);
        let reader = async {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                // Items are cut from an offset and what is left moves to the front
                // once per read: a drain per item would move the rest of a read full
                // of PROPOSALs and COMMITs once for each of them.
                let mut start = 0;
                loop {
                    match cut(&read[start..]) {
                        Ok(Some((item, used))) => {
                            start += used;
                            deliver(item);
                        }
                        Ok(None) => break,
                        Err(e) => return format!("garbage from the peer: {e}"),
                    }
                }
                read.drain(..start);
                match rd.read(&mut buf).await {
                    Ok(0) => return "closed by the peer".to_string(),
                    Ok(n) => {
                        tracing::trace!(
                            "link {} from {}: read {n} bytes",
                            self.id,
                            self.peer.get()
                        );
                        read.extend_from_slice(&buf[..n])
                    }
                    Err(e) => return format!("read failed: {e}"),
                }
            }
        };
        let writer = async {
            self.write_loop(&mut wr).await;
            "write failed or closed here".to_string()
        };
        let closed = async {
            self.closed_wait().await;
            "closed here".to_string()
        };
        let why = futures_lite::future::or(futures_lite::future::or(reader, writer), closed).await;
        self.close();
        why
    }
}

/// Whether a decode error means "not all of it has arrived yet".
pub fn incomplete(e: &WireError) -> bool {
    matches!(e, WireError::Decode(DecodeError::Truncated { .. }))
}

/// Reads until `cut` finds a whole first item (with a deadline), returning it and
/// what arrived after it.
pub async fn read_first<T>(
    stream: &mut TcpStream,
    deadline: std::time::Duration,
    mut cut: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, WireError>,
) -> Result<(T, Vec<u8>), String> {
    let mut read = Vec::new();
    let mut buf = vec![0u8; 4096];
    let attempt = async {
        loop {
            match cut(&read) {
                Ok(Some((item, used))) => {
                    read.drain(..used);
                    return Ok((item, std::mem::take(&mut read)));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("garbage from the peer: {e}")),
            }
            match stream.read(&mut buf).await {
                Ok(0) => return Err("closed before its first message".to_string()),
                Ok(n) => read.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    };
    let timeout = async {
        glommio::timer::sleep(deadline).await;
        Err(format!("nothing whole within {deadline:?}"))
    };
    futures_lite::future::or(attempt, timeout).await
}

/// Accepts connections on `listener` for as long as the executor runs, each served by
/// a task of its own.
pub fn spawn_accept_loop<F, Fut>(listener: TcpListener, what: &'static str, serve: F)
where
    F: Fn(TcpStream) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    glommio::spawn_local(serve(stream)).detach();
                }
                Err(e) => {
                    tracing::warn!("{what} port: accept failed: {e}");
                    glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
    .detach();
}
