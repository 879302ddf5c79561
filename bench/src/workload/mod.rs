//! The workloads the engine drives: the generic op mix, the key-space populate, and the
//! named scenarios whose sessions follow a recipe (service discovery, locks, watch
//! fan-out, session storm).

pub mod discovery;
pub mod fanout;
pub mod locks;
pub mod mix;
pub mod populate;

use bytes::Bytes;
use ringkeeper::proto::{CreateKind, CreateRequest, Reader, Request};
use ringkeeper::tree::acl::open_acl_unsafe;

use crate::engine::{Ctx, Workload};

/// Create flags of ZooKeeper's CreateMode.
pub const EPHEMERAL: i32 = 1;
pub const SEQUENTIAL: i32 = 2;

pub fn create(path: String, data: Bytes, flags: i32) -> Request {
    Request::Create(CreateRequest {
        kind: CreateKind::Create,
        path,
        data: Some(data),
        acl: open_acl_unsafe(),
        flags,
        ttl_ms: -1,
    })
}

/// The path in a create reply's body.
pub fn created_path(body: &[u8]) -> Option<String> {
    Reader::new(body).string().ok()
}

/// The names in a getChildren reply's body.
pub fn children(body: &[u8]) -> Vec<String> {
    Reader::new(body).strings().unwrap_or_default()
}

/// Sessions that only connect and close: the session storm.
pub struct Idle;

impl Workload for Idle {
    fn next(&mut self, _s: usize, _ctx: &mut Ctx) -> Option<(&'static str, Request)> {
        None
    }
}
