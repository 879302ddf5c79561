//! One client connection's state on its shard: the outgoing buffer, the queue that
//! keeps replies in request order, and its session's auth identities.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::proto::{Id, Request};
use crate::server::ConnInfo;
use crate::util::Notify;

/// A request waiting for its turn to be answered.
pub enum Pending {
    /// A write (or sync/closeSession) the broadcast core has not answered yet.
    Write {
        xid: i32,
        op: i32,
        received: Instant,
    },
    /// A read that arrived behind a pending write; executed once the write is answered.
    Read {
        xid: i32,
        op: i32,
        req: Request,
        received: Instant,
    },
    /// A reply computed on arrival (auth) that still has to wait its turn.
    Ready { frame: Vec<u8>, close_after: bool },
    /// The requests behind it wait until this shard has applied `zxid`: a read must
    /// see every write any client had been told was done when the read arrived, and
    /// this shard may not have received that batch yet.
    CatchUp { zxid: i64 },
}

pub struct Conn {
    pub id: u64,
    pub info: Arc<ConnInfo>,
    pub session_id: Cell<i64>,
    pub out: RefCell<Vec<u8>>,
    pub wake_writer: Notify,
    pub closing: Cell<bool>,
    pub queue: RefCell<VecDeque<Pending>>,
    /// Signalled when the queue shrinks, for a reader waiting on back-pressure.
    pub queue_shrunk: Notify,
    /// Bytes the writer has taken from `out` and not yet written to the socket.
    pub writing_bytes: Cell<usize>,
    /// Signalled after each socket write, for a reader waiting on a full `out`.
    pub out_drained: Notify,
    pub auth: RefCell<Arc<Vec<Id>>>,
    pub touched: Cell<bool>,
    /// The client sent the readOnly byte in its ConnectRequest.
    pub sent_read_only: Cell<bool>,
}

impl Conn {
    pub fn new(id: u64, info: Arc<ConnInfo>) -> Conn {
        let ip = info.peer.ip().to_string();
        Conn {
            id,
            info,
            session_id: Cell::new(0),
            out: RefCell::new(Vec::with_capacity(4096)),
            wake_writer: Notify::default(),
            closing: Cell::new(false),
            queue: RefCell::new(VecDeque::new()),
            queue_shrunk: Notify::default(),
            writing_bytes: Cell::new(0),
            out_drained: Notify::default(),
            auth: RefCell::new(Arc::new(vec![Id::new("ip", &ip)])),
            touched: Cell::new(false),
            sent_read_only: Cell::new(false),
        }
    }

    /// Asks the writer to flush what is buffered and then close the connection.
    pub fn close(&self) {
        self.closing.set(true);
        self.wake_writer.notify();
    }

    pub fn flush_soon(&self) {
        self.wake_writer.notify();
    }

    /// Reply bytes not yet on the socket: buffered, or being written.
    pub fn unsent_bytes(&self) -> usize {
        self.out.borrow().len() + self.writing_bytes.get()
    }
}
