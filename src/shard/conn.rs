//! One client connection's state on its shard: the outgoing buffer, the queue that
//! keeps replies in request order, and its session's auth identities.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::RawFd;
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
    /// Queued reads wait for the client to read what it was sent: the writer answers
    /// them (`drain_ready`) once the unsent bytes are below the bound again.
    pub reads_held: Cell<bool>,
    pub auth: RefCell<Arc<Vec<Id>>>,
    pub touched: Cell<bool>,
    /// The client sent the readOnly byte in its ConnectRequest.
    pub sent_read_only: Cell<bool>,
    /// The plain TCP socket, while it is open, for `send_now` (None over TLS, and
    /// from the moment the connection starts to close: the number may be reused).
    pub socket: Cell<Option<RawFd>>,
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
            reads_held: Cell::new(false),
            auth: RefCell::new(Arc::new(vec![Id::new("ip", &ip)])),
            touched: Cell::new(false),
            sent_read_only: Cell::new(false),
            socket: Cell::new(None),
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

    /// Sends what is buffered at once, without a trip through the writer task, when
    /// the writer is idle and the socket has room; what does not fit (or any error)
    /// is left to the writer. For bursts that touch many connections in one go (a
    /// watch fan-out): one send per connection and no task wake-up.
    pub fn send_now(&self) {
        let Some(fd) = self.socket.get() else {
            return self.flush_soon();
        };
        if self.writing_bytes.get() > 0 {
            // The writer holds earlier bytes: these must follow them.
            return self.flush_soon();
        }
        let mut out = self.out.borrow_mut();
        let mut sent = 0;
        while sent < out.len() {
            let rest = &out[sent..];
            // SAFETY: `fd` is this connection's open socket (cleared before it closes)
            // and `rest` is valid for `rest.len()` bytes.
            let n = unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n > 0 {
                sent += n as usize;
            } else if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            } else {
                break;
            }
        }
        out.drain(..sent);
        let rest = !out.is_empty();
        drop(out);
        if sent > 0 {
            self.out_drained.notify();
        }
        if rest || self.reads_held.get() {
            // The writer sends the rest, and answers the reads held back meanwhile.
            self.flush_soon();
        }
    }

    /// Reply bytes not yet on the socket: buffered, or being written.
    pub fn unsent_bytes(&self) -> usize {
        self.out.borrow().len() + self.writing_bytes.get()
    }
}
