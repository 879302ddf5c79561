//! `populate`: creates the key space <prefix>/k<i>, split over the sessions. A key that
//! exists already (NODEEXISTS) is reused as it is, so populating twice is harmless.

use bytes::Bytes;
use ringkeeper::proto::{ErrorCode, ReplyHeader, Request};

use super::create;
use crate::engine::{Ctx, Workload};
use crate::keys::key;

pub struct Populate {
    prefix: String,
    value: Bytes,
    keys: u64,
    stride: u64,
    /// Per session: the next key index it creates.
    next: Vec<u64>,
    pub failed: u64,
    pub existed: u64,
}

impl Populate {
    pub fn new(
        prefix: String,
        keys: u64,
        value_size: usize,
        sessions: usize,
        globals: &[usize],
    ) -> Populate {
        Populate {
            prefix,
            value: Bytes::from(vec![b'v'; value_size]),
            keys,
            stride: sessions as u64,
            next: globals.iter().map(|&g| g as u64).collect(),
            failed: 0,
            existed: 0,
        }
    }
}

impl Workload for Populate {
    fn next(&mut self, s: usize, _ctx: &mut Ctx) -> Option<(&'static str, Request)> {
        let i = self.next[s];
        if i >= self.keys {
            return None;
        }
        self.next[s] += self.stride;
        Some((
            "create",
            create(key(&self.prefix, i), self.value.clone(), 0),
        ))
    }

    fn on_reply(
        &mut self,
        _s: usize,
        _op: &'static str,
        h: &ReplyHeader,
        _body: &[u8],
        _ctx: &mut Ctx,
    ) {
        if h.err == ErrorCode::NodeExists.code() {
            self.existed += 1;
        } else if h.err != 0 {
            self.failed += 1;
        }
    }

    fn finished(&self) -> bool {
        self.next.iter().all(|&i| i >= self.keys)
    }

    fn extra(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("failed".into(), self.failed.into());
        m.insert("existed".into(), self.existed.into());
        m
    }
}
