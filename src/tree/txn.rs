//! Transactions: the deterministic state changes the broadcast core orders, logs and
//! applies. A txn carries everything needed to replay it (the outcome of every check
//! was decided when it was prepared).

use std::sync::Arc;

use bytes::Bytes;

use crate::proto::{Acl, EventType, Stat};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    Create {
        path: String,
        data: Option<Bytes>,
        acl: Vec<Acl>,
        ephemeral_owner: i64,
        parent_cversion: i32,
    },
    Delete {
        path: String,
    },
    SetData {
        path: String,
        data: Option<Bytes>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        aversion: i32,
    },
    Check {
        path: String,
    },
    Multi(Vec<Txn>),
    /// A multi that failed: the per-op error codes.
    MultiError(Vec<i32>),
    CreateSession {
        session_id: i64,
        timeout_ms: i32,
    },
    CloseSession {
        session_id: i64,
    },
    /// A rejected write; it still consumes a zxid, as in ZooKeeper.
    Error(i32),
}

/// What applying a txn produced, for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    Created { path: String, stat: Stat },
    Stat(Stat),
    Multi(Vec<Applied>),
}

/// A watch trigger: an event on a path, fired to the sessions watching it that may
/// READ the node under `acl` (the changed node's ACL, or the parent's for
/// NodeChildrenChanged), as ZooKeeper does since CVE-2024-23944.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub path: Arc<str>,
    pub event: EventType,
    pub acl: Arc<Vec<Acl>>,
}

impl Trigger {
    pub fn new(path: &str, event: EventType, acl: Arc<Vec<Acl>>) -> Trigger {
        Trigger {
            path: Arc::from(path),
            event,
            acl,
        }
    }
}
