//! The broadcast core: the single place writes are ordered. It validates each write
//! against the current state (as ZooKeeper's PrepRequestProcessor does), assigns it
//! the next zxid, applies it, and sends every shard the committed batch: the tree
//! version after each step, the watch events, and the replies.
//!
//! Every txn is framed into the txn log's next group commit as it is applied; the
//! entries it produced reach the shards only after that durable write returned, so no
//! reply, watch event or tree version ever shows a txn that is not on disk. If the log
//! fails, the writes of the failed batch end in a connection loss (outcome unknown, as
//! after a crash), the core stops ordering writes (later ones get NOTREADONLY), and
//! reads go on from the last durable tree version.

mod core;
pub mod member;
pub mod messages;
mod rebase;
mod snapshots;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};

use crate::config::Config;
use crate::recovery::Recovered;
use crate::server::ServerShared;
use crate::util::Notify;
use messages::{Batch, Entry, ToCore};
use ringkeeper_storage::group::GroupCommit;
use ringkeeper_storage::log::{LogError, LogOptions, LogWriter};
use snapshots::Snapshotter;

pub use self::core::{undo_failed, Core, Framed, Now, BATCH_REQUESTS_MAX};
pub use snapshots::{purge, SnapshotStats, WrittenSnapshot, SNAPSHOT_REQUESTED};

/// Reads the clocks for a core (the drivers' side).
pub struct Clock {
    started: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            started: Instant::now(),
        }
    }

    pub fn now(&self) -> Now {
        Now {
            mono_ms: self.started.elapsed().as_millis() as u64,
            wall_ms: wall_ms(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Most bytes of framed records waiting for the log before the core stops taking
/// requests (back-pressure when the disk is slower than the clients).
pub(crate) const QUEUED_LOG_BYTES_MAX: usize = 64 << 20;

/// Bytes preallocated for each log segment (preAllocSize, in KiB, at least 4).
pub(crate) fn segment_bytes(cfg: &Config) -> u64 {
    cfg.pre_alloc_size_kb.max(4) * 1024
}

pub(crate) async fn open_log(cfg: &Config, recovered: &Recovered) -> std::io::Result<LogWriter> {
    let opts = LogOptions {
        prealloc_bytes: segment_bytes(cfg),
        force_sync: cfg.force_sync,
    };
    if !cfg.force_sync {
        tracing::warn!("forceSync=no: txns are acknowledged before they reach the disk");
    }
    let dir = cfg.log_dir();
    match &recovered.log_end.segment {
        Some((path, end)) => LogWriter::resume(&dir, path, *end, opts).await,
        None => LogWriter::create(&dir, recovered.log_end.last_zxid + 1, opts).await,
    }
}

/// Where a core says whether it started (its txn log open, a member's epochs read):
/// start-up waits for it before any shard serves, and fails with its message.
pub type StartReport = std::sync::mpsc::Sender<Result<(), String>>;

/// Runs the core on the current executor until every shard has gone.
pub async fn run(
    cfg: Arc<Config>,
    recovered: Recovered,
    inbound: Vec<SharedReceiver<ToCore>>,
    outbound: Vec<SharedSender<Arc<Batch>>>,
    shared: Arc<ServerShared>,
    started: StartReport,
) {
    let log = match open_log(&cfg, &recovered).await {
        Ok(l) => l,
        Err(e) => {
            let _ = started.send(Err(format!(
                "cannot open the txn log in {}: {e}",
                cfg.log_dir().display()
            )));
            return;
        }
    };
    let _ = started.send(Ok(()));
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
    let senders = Rc::new(senders);
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

    let group =
        GroupCommit::<Entry>::with_stats(recovered.log_end.last_zxid, shared.log_stats.clone());
    let clock = Clock::new();
    let core = Rc::new(std::cell::RefCell::new(Core::new(
        cfg.clone(),
        recovered.tree.clone(),
        &recovered.sessions,
        clock.now(),
        rand::random(),
    )));
    let durable_tree = Rc::new(std::cell::RefCell::new(Arc::new(recovered.tree.clone())));
    let stopped = Rc::new(std::cell::Cell::new(false));
    {
        let shared = shared.clone();
        let stopped = stopped.clone();
        let durable_tree = durable_tree.clone();
        let release = move |entries: Vec<Entry>, err: Option<Rc<LogError>>| {
            let senders = senders.clone();
            let shared = shared.clone();
            let durable_tree = durable_tree.clone();
            let stopped = stopped.clone();
            async move {
                let entries = match err {
                    None => {
                        if let Some(t) = entries.iter().rev().find_map(|e| e.tree.clone()) {
                            *durable_tree.borrow_mut() = t;
                        }
                        entries
                    }
                    Some(_) => undo_failed(entries, &durable_tree.borrow()),
                };
                if entries.is_empty() {
                    return true;
                }
                shared.set_last_zxid(durable_tree.borrow().last_zxid());
                let batch = Arc::new(Batch { entries });
                for tx in senders.iter() {
                    if tx.send(batch.clone()).await.is_err() {
                        stopped.set(true);
                        return false;
                    }
                }
                true
            }
        };
        // The batch's last entry gets the tree version when the writer takes the batch:
        // one version per durable write, however many times the core pushed meanwhile
        // (the core is suspended then, so its tree is the one after that entry).
        let core = core.clone();
        let seal = move |entries: &mut Vec<Entry>| core.borrow_mut().finish_batch(entries);
        glommio::spawn_local(group.clone().run_sealed(log, seal, release)).detach();
    }

    let snapshotter = Snapshotter::new(
        cfg.clone(),
        group.durable_zxid(),
        group.failed_flag(),
        shared.snapshot_stats.clone(),
    );
    let mut since_snapshot: u64 = recovered.log_end.replayed;
    let mut last_tick = Instant::now();
    // Set by the space probe once a disk that was full has room for a segment again.
    let disk_has_room = Rc::new(std::cell::Cell::new(false));
    let mut probing = false;
    loop {
        notify.wait().await;
        if stopped.get() {
            return;
        }
        if !core.borrow().read_only {
            if let Some(e) = group.failed() {
                tracing::debug!("core read-only after: {e}");
                core.borrow_mut()
                    .set_read_only(&durable_tree.borrow().clone());
                if e.resumable_with_space() && !probing {
                    probing = true;
                    disk_has_room.set(false);
                    glommio::spawn_local(probe_until_room(
                        cfg.log_dir(),
                        segment_bytes(&cfg),
                        disk_has_room.clone(),
                        notify.clone(),
                    ))
                    .detach();
                }
            }
        }
        if disk_has_room.get() && group.idle() {
            disk_has_room.set(false);
            probing = false;
            match resume_after_full_disk(&cfg, &group, &snapshotter).await {
                Ok(r) => {
                    let mut c = core.borrow_mut();
                    *c = Core::new(
                        cfg.clone(),
                        r.tree,
                        &r.sessions,
                        clock.now(),
                        rand::random(),
                    );
                    drop(c);
                    since_snapshot = r.log_end.replayed;
                    group.resume();
                    tracing::warn!(
                        "the txn log has room again: taking writes from zxid {:#x} on",
                        group
                            .durable_zxid()
                            .load(std::sync::atomic::Ordering::Acquire)
                            + 1
                    );
                }
                Err(e) => tracing::error!(
                    "the disk has room again, but the server cannot take writes: {e}; \
                     restart it (reads continue)"
                ),
            }
        }
        while group.queued_bytes() > QUEUED_LOG_BYTES_MAX && group.failed().is_none() {
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        // No await from here to the end of the iteration: the writer's seal borrows
        // the core only while this task is suspended.
        let mut core = core.borrow_mut();
        core.set_now(clock.now());
        if !core.read_only {
            if let Some(t) = snapshotter.rebase.finish(core.tree()) {
                core.replace_tree(t);
            }
        }
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
        }
        if !queue.borrow().is_empty() {
            notify.notify();
        }
        if let Some(t) = core.take_cut_for_queued() {
            group.update_last(|e| {
                if e.tree.is_none() {
                    e.tree = Some(t);
                }
            });
        }
        let framed = core.take_framed();
        snapshotter.rebase.record(&framed.bytes);
        since_snapshot += framed.count;
        if !entries.is_empty() || framed.count > 0 {
            group.push(&framed.bytes, framed.first_zxid, framed.count, entries);
        }
        let asked = SNAPSHOT_REQUESTED.swap(false, std::sync::atomic::Ordering::AcqRel);
        // A snapshot due (or asked for) while the last one is still being written is
        // taken as soon as that one ends, so the log a restart replays stays near
        // snapCount.
        if (asked || since_snapshot >= cfg.snap_count.max(1)) && !core.read_only {
            if snapshotter.start(core.tree().clone(), core.session_records()) {
                since_snapshot = 0;
            } else if asked {
                SNAPSHOT_REQUESTED.store(true, std::sync::atomic::Ordering::Release);
            }
        }
    }
}

/// Every second, checks whether the log directory has room for a segment again; once
/// it has, says so through `room` and returns.
async fn probe_until_room(
    dir: std::path::PathBuf,
    bytes: u64,
    room: Rc<std::cell::Cell<bool>>,
    notify: Rc<Notify>,
) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        match ringkeeper_storage::log::probe_space(&dir, bytes).await {
            Ok(()) => {
                room.set(true);
                notify.notify();
                return;
            }
            Err(e) => tracing::debug!("the txn log's disk still has no room: {e}"),
        }
    }
}

/// Brings back the state a restart would: what the disk holds. The txns ordered after
/// the last durable one were never written (the roll that found the disk full came
/// before their write), so the log is as it was; recovery reads it back, sessions and
/// all (expiries and closes in the failed batches never happened), and checks it ends
/// at the durable zxid. Any snapshot being written is abandoned first: it may hold
/// those txns, whose zxids the next ones will take.
async fn resume_after_full_disk(
    cfg: &Arc<Config>,
    group: &Rc<GroupCommit<Entry>>,
    snapshotter: &Snapshotter,
) -> Result<Recovered, String> {
    snapshotter.abandon().await;
    let c = cfg.clone();
    let r = glommio::executor()
        .spawn_blocking(move || crate::recovery::read_only(&c))
        .await
        .map_err(|e| format!("reading the data back failed: {e}"))?;
    let durable = group
        .durable_zxid()
        .load(std::sync::atomic::Ordering::Acquire);
    if r.tree.last_zxid() != durable {
        return Err(format!(
            "the data on disk ends at zxid {:#x}, not at the last durable zxid {durable:#x}",
            r.tree.last_zxid()
        ));
    }
    Ok(r)
}
