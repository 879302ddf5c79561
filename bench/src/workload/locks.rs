//! Lock / leader-election churn, ZooKeeper's recipe without herd effect: create an
//! ephemeral-sequential node under the lock, list the children; the lowest holds the
//! lock, everyone else watches only its predecessor (exists + watch) and lists again
//! when it goes. The holder keeps the lock `hold` long, deletes its node, and queues
//! again. "acquire" is the time from the create to holding the lock. An exists that
//! finds the predecessor already gone is answered NONODE and counted as such (it is
//! the recipe's normal race; the contender lists again).

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkeeper::proto::{ErrorCode, EventType, ReplyHeader, Request, WatcherEvent};

use super::{children, create, created_path, EPHEMERAL, SEQUENTIAL};
use crate::engine::{Ctx, Workload};

pub const ROOT: &str = "/bench-locks";

pub fn lock_path(j: usize) -> String {
    format!("{ROOT}/lock-{j:04}")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Create,
    List,
    WatchPredecessor,
    Release,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// `Step` is to be sent when the engine asks.
    Send(Step),
    /// A request is in flight.
    Sent,
    /// Waiting for the predecessor's deletion event.
    Waiting,
    /// Holding the lock until the given time (a timer wakes the session).
    Holding(Instant),
}

struct Contender {
    lock: String,
    node: Option<String>,
    predecessor: Option<String>,
    state: State,
    queued_at: Instant,
}

pub struct Locks {
    hold: Duration,
    contenders: Vec<Contender>,
    acquired: u64,
}

impl Locks {
    pub fn new(locks: usize, hold: Duration, globals: &[usize]) -> Locks {
        let now = Instant::now();
        Locks {
            hold,
            acquired: 0,
            contenders: globals
                .iter()
                .map(|&g| Contender {
                    lock: lock_path(g % locks.max(1)),
                    node: None,
                    predecessor: None,
                    state: State::Send(Step::Create),
                    queued_at: now,
                })
                .collect(),
        }
    }
}

impl Workload for Locks {
    fn next(&mut self, s: usize, ctx: &mut Ctx) -> Option<(&'static str, Request)> {
        let c = &mut self.contenders[s];
        let step = match c.state {
            State::Send(step) => step,
            State::Holding(until) if ctx.now >= until => Step::Release,
            _ => return None,
        };
        c.state = State::Sent;
        Some(match step {
            Step::Create => {
                c.queued_at = ctx.now;
                (
                    "create",
                    create(
                        format!("{}/n-", c.lock),
                        Bytes::new(),
                        EPHEMERAL | SEQUENTIAL,
                    ),
                )
            }
            Step::List => (
                "children",
                Request::GetChildren {
                    path: c.lock.clone(),
                    watch: false,
                },
            ),
            Step::WatchPredecessor => (
                "exists",
                Request::Exists {
                    path: c.predecessor.clone().expect("set before watching"),
                    watch: true,
                },
            ),
            Step::Release => (
                "delete",
                Request::Delete {
                    path: c.node.take().expect("held"),
                    version: -1,
                },
            ),
        })
    }

    fn on_reply(
        &mut self,
        s: usize,
        op: &'static str,
        h: &ReplyHeader,
        body: &[u8],
        ctx: &mut Ctx,
    ) {
        let c = &mut self.contenders[s];
        c.state = match op {
            "create" if h.err == 0 => {
                c.node = created_path(body);
                State::Send(Step::List)
            }
            "create" => State::Send(Step::Create),
            "children" => {
                let mut names = children(body);
                names.sort();
                let mine = c
                    .node
                    .as_deref()
                    .and_then(|p| p.rsplit('/').next())
                    .unwrap_or_default()
                    .to_string();
                match names.iter().position(|n| *n == mine) {
                    // Our node is gone (should not happen while the session lives).
                    None => State::Send(Step::Create),
                    Some(0) => {
                        self.acquired += u64::from(ctx.measuring);
                        ctx.record("acquire", ctx.now.duration_since(c.queued_at), 0);
                        if self.hold.is_zero() {
                            State::Send(Step::Release)
                        } else {
                            ctx.wake_at(s, ctx.now + self.hold);
                            State::Holding(ctx.now + self.hold)
                        }
                    }
                    Some(i) => {
                        c.predecessor = Some(format!("{}/{}", c.lock, names[i - 1]));
                        State::Send(Step::WatchPredecessor)
                    }
                }
            }
            // The predecessor went before the watch was set: look again.
            "exists" if h.err == ErrorCode::NoNode.code() => State::Send(Step::List),
            "exists" => State::Waiting,
            _ => State::Send(Step::Create),
        };
    }

    fn on_event(&mut self, s: usize, ev: &WatcherEvent, ctx: &mut Ctx) {
        let c = &mut self.contenders[s];
        if c.state == State::Waiting
            && ev.event_type == EventType::NodeDeleted as i32
            && c.predecessor.as_deref() == Some(ev.path.as_str())
        {
            c.state = State::Send(Step::List);
            ctx.wake(s);
        }
    }

    fn extra(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("acquisitions".into(), self.acquired.into());
        m
    }
}
