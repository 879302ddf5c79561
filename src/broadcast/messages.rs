//! What shards and the broadcast core say to each other over cross-core channels.

use std::sync::Arc;

use crate::proto::{Acl, Id, Response, WriteOp};
use crate::session::table::PASSWD_BYTES;
use crate::tree::{DataTree, Trigger};

/// A write, or a request that must be ordered with writes.
#[derive(Debug, Clone)]
pub enum CoreOp {
    Write(WriteOp),
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    Multi(Vec<WriteOp>),
    Sync {
        path: String,
    },
    CloseSession,
}

impl CoreOp {
    /// The request a client sent for this op (what a learner forwards to its leader).
    pub fn to_request(&self) -> crate::proto::Request {
        use crate::proto::Request;
        match self.clone() {
            CoreOp::Write(WriteOp::Create(c)) => Request::Create(c),
            CoreOp::Write(WriteOp::Delete { path, version }) => Request::Delete { path, version },
            CoreOp::Write(WriteOp::SetData {
                path,
                data,
                version,
            }) => Request::SetData {
                path,
                data,
                version,
            },
            CoreOp::Write(WriteOp::Check { path, version }) => Request::Check { path, version },
            CoreOp::SetAcl { path, acl, version } => Request::SetAcl { path, acl, version },
            CoreOp::Multi(ops) => Request::Multi(ops),
            CoreOp::Sync { path } => Request::Sync { path },
            CoreOp::CloseSession => Request::CloseSession,
        }
    }

    /// The op a request is, if it must be ordered with writes.
    pub fn from_request(r: crate::proto::Request) -> Option<CoreOp> {
        use crate::proto::Request;
        Some(match r {
            Request::Create(cr) => CoreOp::Write(WriteOp::Create(cr)),
            Request::Delete { path, version } => CoreOp::Write(WriteOp::Delete { path, version }),
            Request::SetData {
                path,
                data,
                version,
            } => CoreOp::Write(WriteOp::SetData {
                path,
                data,
                version,
            }),
            Request::Check { path, version } => CoreOp::Write(WriteOp::Check { path, version }),
            Request::SetAcl { path, acl, version } => CoreOp::SetAcl { path, acl, version },
            Request::Multi(ops) => CoreOp::Multi(ops),
            Request::Sync { path } => CoreOp::Sync { path },
            Request::CloseSession => CoreOp::CloseSession,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub enum ToCore {
    /// A handshake: `session_id == 0` asks for a new session.
    Connect {
        shard: usize,
        conn_id: u64,
        session_id: i64,
        passwd: Vec<u8>,
        timeout_ms: i32,
    },
    Request {
        session_id: i64,
        /// The connection that sent it: the reply goes back to that connection only,
        /// never to a later connection of the same session.
        conn_id: u64,
        xid: i32,
        op: CoreOp,
        auth: Arc<Vec<Id>>,
        /// The session has reads queued ahead of this request (behind an earlier
        /// write, or waiting for its shard to catch up): they must be answered from a
        /// tree without this request, so its entry must follow a cut.
        cut_before: bool,
    },
    /// Sessions that showed activity since the last report.
    Touch(Vec<i64>),
    /// The session table as it is now, for the four-letter words (`dump`, `mntr`):
    /// every session whose handshake was answered before this was sent is in it.
    Sessions(futures_channel::oneshot::Sender<Vec<SessionSummary>>),
}

/// One live session, as the four-letter words show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub session_id: i64,
    pub timeout_ms: i32,
    /// When it expires unless it shows activity first (ms since the Unix epoch).
    pub expires_at_wall_ms: i64,
}

/// A granted session, as sent back in the ConnectResponse.
#[derive(Debug, Clone)]
pub struct Granted {
    pub session_id: i64,
    pub timeout_ms: i32,
    pub passwd: [u8; PASSWD_BYTES],
}

#[derive(Debug, Clone)]
pub enum Effect {
    None,
    /// The reply to a session's request.
    Reply {
        session_id: i64,
        conn_id: u64,
        xid: i32,
        zxid: i64,
        err: i32,
        body: Response,
    },
    /// The outcome of a handshake (None: session expired or password wrong).
    Connected {
        shard: usize,
        conn_id: u64,
        granted: Option<Granted>,
    },
    /// The handshake is refused and the connection closes (the client tries again, or
    /// another server): a new session that could not be made durable, because the txn
    /// log cannot take writes or the batch holding its createSession failed.
    Refused {
        shard: usize,
        conn_id: u64,
        why: String,
    },
    /// A session is now attached to this connection; any other connection of it closes.
    Attached {
        session_id: i64,
        conn_id: u64,
    },
    /// Close this connection; the session lives on and may reconnect. Sent instead of
    /// the reply to a write whose outcome is unknown (its log write failed: it may or
    /// may not be on disk), which the client sees as a connection loss, as it would
    /// if the server had crashed.
    Disconnect {
        session_id: i64,
        conn_id: u64,
    },
    /// Close every client connection (sessions live on): an ensemble member lost its
    /// leader, and its clients must find a member that has one.
    DropClients,
    /// The session is gone (closed or expired): its connection closes.
    SessionClosed {
        session_id: i64,
    },
}

/// One ordered step: the watch events it fires, its effect and, at a cut, the tree
/// right after it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The tree after this entry, on the entries where a shard may answer reads (a
    /// cut); None: the next cut's tree covers this entry. Every batch ends with a cut,
    /// and a request that has reads of its session queued ahead of it comes right
    /// after one, so a read is never answered from a tree showing a write its session
    /// sent after it. One tree version per cut rather than per txn: each version
    /// shares the persistent tree, and the next txn after a version has to copy what it
    /// touches (a session pipelining writes would otherwise cost a version per write).
    pub tree: Option<Arc<DataTree>>,
    pub triggers: Vec<Trigger>,
    pub effect: Effect,
    /// Whether the step is a logged txn (its effect may only be released once the
    /// txn is durable).
    pub logged: bool,
}

/// A committed batch, sent to every shard in the same order.
#[derive(Debug)]
pub struct Batch {
    pub entries: Vec<Entry>,
}
