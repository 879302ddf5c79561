//! The broadcast core: the single place writes are ordered. It validates each write
//! against the current state (as ZooKeeper's PrepRequestProcessor does), assigns it
//! the next zxid, applies it, and sends every shard the committed batch: the tree
//! version after each step, the watch events, and the replies.
//!
//! Standalone and in memory for now: a batch is committed as soon as it is applied.

pub mod messages;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};

use crate::config::Config;
use crate::proto::{ErrorCode, MultiResult, Response};
use crate::server::ServerShared;
use crate::session::table::{Session, SessionTable, PASSWD_BYTES};
use crate::tree::{Applied, DataTree, Requester, Trigger, Txn};
use crate::util::Notify;
use messages::{Batch, CoreOp, Effect, Entry, Granted, ToCore};

/// Most requests folded into one batch.
pub const BATCH_REQUESTS_MAX: usize = 1024;

pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The core's state: the working tree, the session table, the zxid counter.
pub struct Core {
    cfg: Arc<Config>,
    tree: DataTree,
    sessions: SessionTable,
    started: Instant,
    last_cleanup_ms: u64,
}

impl Core {
    pub fn new(cfg: Arc<Config>) -> Core {
        Core {
            cfg,
            tree: DataTree::new(),
            sessions: SessionTable::new(0, wall_ms()),
            started: Instant::now(),
            last_cleanup_ms: 0,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    fn entry(&self, triggers: Vec<Trigger>, effect: Effect) -> Entry {
        Entry {
            tree: Arc::new(self.tree.clone()),
            triggers,
            effect,
        }
    }

    fn next_zxid(&self) -> i64 {
        self.tree.last_zxid() + 1
    }

    /// Orders one message; appends the resulting entries to `out`.
    pub fn step(&mut self, msg: ToCore, out: &mut Vec<Entry>) {
        match msg {
            ToCore::Touch(ids) => {
                let now = self.now_ms();
                for id in ids {
                    self.sessions.touch(id, now);
                }
            }
            ToCore::Connect {
                shard,
                conn_id,
                session_id,
                passwd,
                timeout_ms,
            } => self.connect(shard, conn_id, session_id, &passwd, timeout_ms, out),
            ToCore::Request {
                session_id,
                conn_id,
                xid,
                op,
                auth,
            } => self.request(session_id, conn_id, xid, op, &auth, out),
        }
    }

    fn connect(
        &mut self,
        shard: usize,
        conn_id: u64,
        session_id: i64,
        passwd: &[u8],
        timeout_ms: i32,
        out: &mut Vec<Entry>,
    ) {
        let timeout_ms = self.cfg.negotiate_timeout_ms(timeout_ms);
        let now = self.now_ms();
        if session_id == 0 {
            let id = self.sessions.next_session_id();
            let mut pw = [0u8; PASSWD_BYTES];
            rand::Rng::fill(&mut rand::thread_rng(), &mut pw[..]);
            self.sessions.insert(
                id,
                Session {
                    timeout_ms,
                    passwd: pw,
                    deadline_ms: now + timeout_ms as u64,
                    attached: Some((shard, conn_id)),
                },
            );
            let zxid = self.next_zxid();
            let txn = Txn::CreateSession {
                session_id: id,
                timeout_ms,
            };
            self.tree.apply(&txn, zxid, wall_ms(), &mut Vec::new());
            out.push(self.entry(
                Vec::new(),
                Effect::Connected {
                    shard,
                    conn_id,
                    granted: Some(Granted {
                        session_id: id,
                        timeout_ms,
                        passwd: pw,
                    }),
                },
            ));
            return;
        }
        let valid = self
            .sessions
            .get(session_id)
            .is_some_and(|s| s.passwd[..] == *passwd);
        if !valid {
            out.push(self.entry(
                Vec::new(),
                Effect::Connected {
                    shard,
                    conn_id,
                    granted: None,
                },
            ));
            return;
        }
        let s = self.sessions.get_mut(session_id).expect("checked above");
        // A reconnecting client keeps its session's original timeout unless it asks
        // for another one, which is renegotiated as on a new session.
        s.timeout_ms = timeout_ms;
        s.attached = Some((shard, conn_id));
        let granted = Granted {
            session_id,
            timeout_ms: s.timeout_ms,
            passwd: s.passwd,
        };
        self.sessions.touch(session_id, now);
        out.push(self.entry(
            Vec::new(),
            Effect::Connected {
                shard,
                conn_id,
                granted: Some(granted),
            },
        ));
        out.push(self.entry(
            Vec::new(),
            Effect::Attached {
                session_id,
                conn_id,
            },
        ));
    }

    fn reply(
        &self,
        (session_id, conn_id): (i64, u64),
        xid: i32,
        zxid: i64,
        err: i32,
        body: Response,
    ) -> Effect {
        Effect::Reply {
            session_id,
            conn_id,
            xid,
            zxid,
            err,
            body,
        }
    }

    fn request(
        &mut self,
        session_id: i64,
        conn_id: u64,
        xid: i32,
        op: CoreOp,
        auth: &[crate::proto::Id],
        out: &mut Vec<Entry>,
    ) {
        if self.sessions.get(session_id).is_none() {
            let zxid = self.tree.last_zxid();
            let e = self.reply(
                (session_id, conn_id),
                xid,
                zxid,
                ErrorCode::SessionExpired.code(),
                Response::Empty,
            );
            out.push(self.entry(Vec::new(), e));
            return;
        }
        let who = Requester {
            session_id,
            auth,
            extended_types: self.cfg.extended_types_enabled,
        };
        let zxid = self.next_zxid();
        let time = wall_ms();
        let mut triggers = Vec::new();
        let (err, body) = match op {
            CoreOp::Sync { path } => {
                let e = self.reply(
                    (session_id, conn_id),
                    xid,
                    self.tree.last_zxid(),
                    0,
                    Response::Path(path),
                );
                out.push(self.entry(Vec::new(), e));
                return;
            }
            CoreOp::CloseSession => {
                self.tree
                    .apply(&Txn::CloseSession { session_id }, zxid, time, &mut triggers);
                self.sessions.remove(session_id);
                let e = self.reply((session_id, conn_id), xid, zxid, 0, Response::Empty);
                out.push(self.entry(triggers, e));
                out.push(self.entry(Vec::new(), Effect::SessionClosed { session_id }));
                return;
            }
            CoreOp::Multi(ops) => {
                match self
                    .tree
                    .prepare_apply_multi(&ops, &who, zxid, time, &mut triggers)
                {
                    Ok((_txn, applied)) => {
                        let results = applied
                            .into_iter()
                            .zip(ops.iter())
                            .map(|(a, op)| multi_result(a, op))
                            .collect();
                        (0, Response::Multi(results))
                    }
                    Err(codes) => {
                        self.tree
                            .apply(&Txn::MultiError(codes.clone()), zxid, time, &mut triggers);
                        let results = codes.into_iter().map(MultiResult::Error).collect();
                        (0, Response::Multi(results))
                    }
                }
            }
            CoreOp::SetAcl { path, acl, version } => {
                match self.tree.prepare_set_acl(&path, &acl, version, &who) {
                    Ok(txn) => match self.tree.apply(&txn, zxid, time, &mut triggers) {
                        Applied::Stat(s) => (0, Response::Stat(s)),
                        other => unreachable!("setACL applied as {other:?}"),
                    },
                    Err(code) => self.fail(code, zxid, time),
                }
            }
            CoreOp::Write(w) => match self.tree.prepare(&w, &who) {
                Ok(txn) => {
                    let applied = self.tree.apply(&txn, zxid, time, &mut triggers);
                    (0, single_response(applied, &w))
                }
                Err(code) => self.fail(code, zxid, time),
            },
        };
        let e = self.reply((session_id, conn_id), xid, zxid, err, body);
        out.push(self.entry(triggers, e));
    }

    /// A rejected write: logged as an error txn that consumes its zxid.
    fn fail(&mut self, code: ErrorCode, zxid: i64, time: i64) -> (i32, Response) {
        self.tree
            .apply(&Txn::Error(code.code()), zxid, time, &mut Vec::new());
        (code.code(), Response::Empty)
    }

    /// Expires sessions past their deadline and removes empty containers and expired
    /// TTL nodes (at most `znode.container.maxPerMinute` per minute).
    pub fn tick(&mut self, out: &mut Vec<Entry>) {
        let now = self.now_ms();
        for session_id in self.sessions.expired(now) {
            tracing::info!("Expiring session 0x{session_id:x}, timeout exceeded");
            self.sessions.remove(session_id);
            let mut triggers = Vec::new();
            let zxid = self.next_zxid();
            self.tree.apply(
                &Txn::CloseSession { session_id },
                zxid,
                wall_ms(),
                &mut triggers,
            );
            out.push(self.entry(triggers, Effect::SessionClosed { session_id }));
        }
        let interval = self.cfg.container_check_interval_ms;
        if now.saturating_sub(self.last_cleanup_ms) >= interval {
            self.last_cleanup_ms = now;
            let per_run = ((self.cfg.container_max_per_minute as u64 * interval) / 60_000).max(1);
            for path in self
                .tree
                .cleanup_candidates(wall_ms())
                .into_iter()
                .take(per_run as usize)
            {
                if let Ok(txn) = self.tree.prepare_delete_container(&path) {
                    let mut triggers = Vec::new();
                    let zxid = self.next_zxid();
                    self.tree.apply(&txn, zxid, wall_ms(), &mut triggers);
                    out.push(self.entry(triggers, Effect::None));
                }
            }
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn session_summaries(&self) -> Vec<(i64, i32)> {
        let mut v: Vec<(i64, i32)> = self
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.timeout_ms))
            .collect();
        v.sort();
        v
    }
}

fn single_response(applied: Applied, op: &crate::proto::WriteOp) -> Response {
    use crate::proto::{CreateKind, WriteOp};
    match (applied, op) {
        (Applied::Created { path, stat }, WriteOp::Create(c)) => match c.kind {
            CreateKind::Create => Response::Create { path },
            _ => Response::Create2 { path, stat },
        },
        (Applied::Stat(s), _) => Response::Stat(s),
        // check (op 13) answers like setData with a stat in ZooKeeper's
        // FinalRequestProcessor, but the stat it sends is empty.
        (Applied::Done, WriteOp::Check { .. }) => Response::Stat(Default::default()),
        _ => Response::Empty,
    }
}

fn multi_result(applied: Applied, op: &crate::proto::WriteOp) -> MultiResult {
    use crate::proto::{CreateKind, WriteOp};
    match (applied, op) {
        (Applied::Created { path, stat }, WriteOp::Create(c)) => MultiResult::Create {
            path,
            stat: (c.kind != CreateKind::Create).then_some(stat),
        },
        (Applied::Stat(s), _) => MultiResult::SetData(s),
        (_, WriteOp::Check { .. }) => MultiResult::Check,
        _ => MultiResult::Delete,
    }
}

/// Runs the core on the current executor until every shard has gone.
pub async fn run(
    cfg: Arc<Config>,
    inbound: Vec<SharedReceiver<ToCore>>,
    outbound: Vec<SharedSender<Arc<Batch>>>,
    shared: Arc<ServerShared>,
) {
    let queue: Rc<std::cell::RefCell<VecDeque<ToCore>>> = Rc::default();
    let notify = Rc::new(Notify::default());
    for rx in inbound {
        let queue = queue.clone();
        let notify = notify.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(msg) = rx.recv().await {
                queue.borrow_mut().push_back(msg);
                notify.notify();
            }
        })
        .detach();
    }
    let mut senders: Vec<ConnectedSender<Arc<Batch>>> = Vec::new();
    for tx in outbound {
        senders.push(tx.connect().await);
    }
    let tick_ms = (cfg.tick_time_ms as u64 / 4).clamp(10, 500);
    {
        let notify = notify.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(tick_ms)).await;
                notify.notify();
            }
        })
        .detach();
    }
    let mut core = Core::new(cfg);
    let mut last_tick = Instant::now();
    loop {
        notify.wait().await;
        let mut entries = Vec::new();
        loop {
            let msgs: Vec<ToCore> = {
                let mut q = queue.borrow_mut();
                let n = q.len().min(BATCH_REQUESTS_MAX);
                q.drain(..n).collect()
            };
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                core.step(m, &mut entries);
            }
            if entries.len() >= BATCH_REQUESTS_MAX {
                break;
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(tick_ms) {
            last_tick = Instant::now();
            core.tick(&mut entries);
            shared.publish_sessions(core.session_summaries());
        }
        if !queue.borrow().is_empty() {
            notify.notify();
        }
        if entries.is_empty() {
            continue;
        }
        shared.set_last_zxid(core.tree().last_zxid());
        let batch = Arc::new(Batch { entries });
        for tx in &senders {
            if tx.send(batch.clone()).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{CreateKind, CreateRequest, WriteOp};
    use bytes::Bytes;

    fn connect(core: &mut Core) -> i64 {
        let mut out = Vec::new();
        core.step(
            ToCore::Connect {
                shard: 0,
                conn_id: 1,
                session_id: 0,
                passwd: vec![],
                timeout_ms: 30000,
            },
            &mut out,
        );
        match &out[0].effect {
            Effect::Connected {
                granted: Some(g), ..
            } => g.session_id,
            e => panic!("{e:?}"),
        }
    }

    /// One request from session `s` on connection 1; returns what it produced.
    fn request(core: &mut Core, s: i64, xid: i32, op: CoreOp) -> Vec<Entry> {
        let mut out = Vec::new();
        core.step(
            ToCore::Request {
                session_id: s,
                conn_id: 1,
                xid,
                op,
                auth: Arc::new(vec![]),
            },
            &mut out,
        );
        out
    }

    #[test]
    fn failed_writes_consume_a_zxid_like_zookeeper() {
        let mut core = Core::new(Arc::new(Config::default()));
        let s = connect(&mut core);
        assert_eq!(core.tree().last_zxid(), 1, "createSession is txn 1");
        let out = request(
            &mut core,
            s,
            1,
            CoreOp::Write(WriteOp::Delete {
                path: "/missing".into(),
                version: -1,
            }),
        );
        match &out[0].effect {
            Effect::Reply { err, zxid, .. } => {
                assert_eq!(*err, ErrorCode::NoNode.code());
                assert_eq!(*zxid, 2);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn close_session_deletes_ephemerals_and_fires_watches() {
        let mut core = Core::new(Arc::new(Config::default()));
        let s = connect(&mut core);
        request(
            &mut core,
            s,
            1,
            CoreOp::Write(WriteOp::Create(CreateRequest {
                kind: CreateKind::Create,
                path: "/eph".into(),
                data: Some(Bytes::new()),
                acl: crate::tree::acl::open_acl_unsafe(),
                flags: 1,
                ttl_ms: -1,
            })),
        );
        let out = request(&mut core, s, 2, CoreOp::CloseSession);
        assert!(out[0].tree.node("/eph").is_none());
        assert!(out[0].triggers.iter().any(|t| &*t.path == "/eph"));
        assert!(matches!(out[1].effect, Effect::SessionClosed { .. }));
        assert_eq!(core.session_count(), 0);
    }

    #[test]
    fn reconnect_with_wrong_password_is_refused() {
        let mut core = Core::new(Arc::new(Config::default()));
        let s = connect(&mut core);
        let mut out = Vec::new();
        core.step(
            ToCore::Connect {
                shard: 0,
                conn_id: 2,
                session_id: s,
                passwd: vec![9; 16],
                timeout_ms: 30000,
            },
            &mut out,
        );
        assert!(matches!(
            out[0].effect,
            Effect::Connected { granted: None, .. }
        ));
    }
}
