//! Watch fan-out: every session but the first sets a data watch on one znode (exists +
//! watch); once all are set, the first session changes the znode once. "notify" is each
//! notification's arrival after that setData was sent, "last_notify" the time to the
//! last one — a round. Rounds repeat for the run's duration; a round counts if its
//! setData was sent while measuring, with all its notifications, and is reported only
//! once complete. Runs on one worker thread so that one clock and one count see the
//! whole round.

use std::time::Instant;

use bytes::Bytes;
use ringkeeper::proto::{EventType, ReplyHeader, Request, WatcherEvent};

use crate::engine::{Ctx, Workload};

pub const NODE: &str = "/bench-fanout";

pub struct FanOut {
    value: Bytes,
    watchers: usize,
    /// Per session: a watch is to be set; the watch is set; notified this round; gone.
    to_register: Vec<bool>,
    registered_now: Vec<bool>,
    notified_now: Vec<bool>,
    lost: Vec<bool>,
    registered: usize,
    notified: usize,
    fired_at: Option<Instant>,
    fire_pending: bool,
    /// Whether the round in progress counts, and its notifications' latencies so far.
    round_counted: bool,
    round_latencies: Vec<std::time::Duration>,
    rounds: u64,
}

impl FanOut {
    pub fn new(sessions: usize, value_size: usize) -> FanOut {
        FanOut {
            value: Bytes::from(vec![b'f'; value_size]),
            watchers: sessions.saturating_sub(1),
            to_register: (0..sessions).map(|s| s > 0).collect(),
            registered_now: vec![false; sessions],
            notified_now: vec![false; sessions],
            lost: vec![false; sessions],
            registered: 0,
            notified: 0,
            fired_at: None,
            fire_pending: false,
            round_counted: false,
            round_latencies: Vec::new(),
            rounds: 0,
        }
    }
}

impl FanOut {
    fn maybe_fire(&mut self, ctx: &mut Ctx) {
        if self.watchers > 0 && self.registered == self.watchers && self.fired_at.is_none() {
            self.fire_pending = true;
            ctx.wake(0);
        }
    }

    /// Once every watcher has its notification: the round's time, and the next round.
    fn maybe_finish_round(&mut self, ctx: &mut Ctx) {
        let Some(t0) = self.fired_at else {
            return;
        };
        if self.notified < self.watchers {
            return;
        }
        let counted = self.round_counted;
        for l in self.round_latencies.drain(..) {
            ctx.record_if(counted, "notify", l, 0);
        }
        ctx.record_if(counted, "last_notify", ctx.now.duration_since(t0), 0);
        self.rounds += u64::from(counted);
        self.registered = 0;
        self.notified = 0;
        self.fired_at = None;
        for w in 1..self.to_register.len() {
            self.registered_now[w] = false;
            self.notified_now[w] = false;
            if !self.lost[w] {
                self.to_register[w] = true;
                ctx.wake(w);
            }
        }
    }
}

impl Workload for FanOut {
    fn next(&mut self, s: usize, ctx: &mut Ctx) -> Option<(&'static str, Request)> {
        if s == 0 {
            if !self.fire_pending {
                return None;
            }
            self.fire_pending = false;
            self.fired_at = Some(ctx.now);
            self.round_counted = ctx.measuring;
            self.round_latencies.clear();
            return Some((
                "set",
                Request::SetData {
                    path: NODE.into(),
                    data: Some(self.value.clone()),
                    version: -1,
                },
            ));
        }
        if !std::mem::take(&mut self.to_register[s]) {
            return None;
        }
        Some((
            "exists",
            Request::Exists {
                path: NODE.into(),
                watch: true,
            },
        ))
    }

    fn on_reply(
        &mut self,
        s: usize,
        op: &'static str,
        _h: &ReplyHeader,
        _body: &[u8],
        ctx: &mut Ctx,
    ) {
        if s > 0 && op == "exists" {
            self.registered += 1;
            self.registered_now[s] = true;
            self.maybe_fire(ctx);
        }
    }

    fn on_lost(&mut self, s: usize, ctx: &mut Ctx) {
        if s == 0 || self.lost[s] {
            return;
        }
        self.lost[s] = true;
        self.to_register[s] = false;
        self.watchers -= 1;
        self.registered -= usize::from(std::mem::take(&mut self.registered_now[s]));
        self.notified -= usize::from(std::mem::take(&mut self.notified_now[s]));
        if self.fired_at.is_some() {
            self.maybe_finish_round(ctx);
        } else {
            self.maybe_fire(ctx);
        }
    }

    fn on_event(&mut self, s: usize, ev: &WatcherEvent, ctx: &mut Ctx) {
        let Some(t0) = self.fired_at else {
            return;
        };
        if ev.event_type != EventType::NodeDataChanged as i32 || ev.path != NODE {
            return;
        }
        if std::mem::replace(&mut self.notified_now[s], true) {
            return;
        }
        self.notified += 1;
        self.round_latencies.push(ctx.now.duration_since(t0));
        self.maybe_finish_round(ctx);
    }

    fn extra(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("rounds".into(), self.rounds.into());
        m.insert("watchers".into(), (self.watchers as u64).into());
        m
    }
}
