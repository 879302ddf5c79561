//! Snapshots in the background and retention: a snapshot of an immutable tree version
//! is written on a thread of its own once the log holds its zxid, then the working
//! tree is rebased onto it (see `rebase`); old snapshots and logs are purged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rebase::Rebase;
use crate::config::Config;
use crate::tree::DataTree;
use ringkeeper_storage::snapshot::SnapSession;

/// Set by SIGUSR1: take a snapshot now.
pub static SNAPSHOT_REQUESTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Snapshots written since start-up and the time they took (`snapshottime`), and
/// the newest one (`last_snapshot`, the AdminServer's `snapshot`).
#[derive(Default)]
pub struct SnapshotStats {
    pub count: std::sync::atomic::AtomicU64,
    pub sum_us: std::sync::atomic::AtomicU64,
    pub min_us: std::sync::atomic::AtomicU64,
    pub max_us: std::sync::atomic::AtomicU64,
    pub last: std::sync::Mutex<Option<WrittenSnapshot>>,
}

/// One snapshot written by this server.
#[derive(Debug, Clone)]
pub struct WrittenSnapshot {
    pub zxid: i64,
    pub path: std::path::PathBuf,
    pub bytes: u64,
    /// When it was published, in seconds since the epoch.
    pub unix_s: u64,
    pub took_ms: u64,
}

impl SnapshotStats {
    fn record(&self, s: WrittenSnapshot, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = took.as_micros() as u64;
        if self.count.fetch_add(1, Relaxed) == 0 {
            self.min_us.store(us, Relaxed);
        } else {
            self.min_us.fetch_min(us, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
        *self.last.lock().expect("snapshot stats poisoned") = Some(s);
    }

    pub fn timing(&self) -> crate::metrics::figures::Timing {
        use std::sync::atomic::Ordering::Relaxed;
        crate::metrics::figures::Timing {
            count: self.count.load(Relaxed),
            sum_us: self.sum_us.load(Relaxed),
            min_us: self.min_us.load(Relaxed),
            max_us: self.max_us.load(Relaxed),
        }
    }

    /// The snapshot recovery started from, as the last one until one is written.
    pub fn started_from(&self, path: &std::path::Path, zxid: i64) {
        let meta = std::fs::metadata(path).ok();
        let unix_s = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        *self.last.lock().expect("snapshot stats poisoned") = Some(WrittenSnapshot {
            zxid,
            path: path.to_path_buf(),
            bytes: meta.map_or(0, |m| m.len()),
            unix_s,
            took_ms: 0,
        });
    }

    pub fn last(&self) -> Option<WrittenSnapshot> {
        self.last.lock().expect("snapshot stats poisoned").clone()
    }
}

/// Writes a snapshot of `tree` on its own thread, published once the log holds its
/// zxid; then rebuilds the tree on it (see `rebase`) and purges by retention if that
/// is due.
pub struct Snapshotter {
    pub running: Arc<std::sync::atomic::AtomicBool>,
    pub rebase: Arc<Rebase>,
    /// How far the log writer has made the txns durable, and whether it failed: a
    /// snapshot is published only once the log holds its zxid.
    durable: Arc<std::sync::atomic::AtomicI64>,
    failed: Arc<std::sync::atomic::AtomicBool>,
    /// Set to give up on the snapshot being written (its log writer has stopped).
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    pub last_purge: Arc<std::sync::Mutex<Instant>>,
    pub cfg: Arc<Config>,
    pub stats: Arc<SnapshotStats>,
}

impl Snapshotter {
    /// Snapshots published once the log writer whose progress `durable` and `failed`
    /// show holds their zxid.
    pub fn new(
        cfg: Arc<Config>,
        durable: Arc<std::sync::atomic::AtomicI64>,
        failed: Arc<std::sync::atomic::AtomicBool>,
        stats: Arc<SnapshotStats>,
    ) -> Self {
        Snapshotter {
            stats,
            running: Arc::default(),
            rebase: Arc::default(),
            durable,
            failed,
            abandoned: Arc::default(),
            last_purge: Arc::new(std::sync::Mutex::new(Instant::now())),
            cfg,
        }
    }

    /// From now on, snapshots wait for this log writer.
    pub fn follow_log(
        &mut self,
        durable: Arc<std::sync::atomic::AtomicI64>,
        failed: Arc<std::sync::atomic::AtomicBool>,
    ) {
        self.durable = durable;
        self.failed = failed;
    }

    /// Gives up on the snapshot being written, if it is not published yet; the future
    /// ends once the snapshot thread has, with any rebuilt tree dropped: after that no
    /// snapshot file appears and no rebase is under way. For a member whose tree and
    /// log are about to be replaced.
    pub fn abandon(&self) -> impl std::future::Future<Output = ()> {
        use std::sync::atomic::Ordering::{Acquire, Release};
        let (abandoned, running, rebase) = (
            self.abandoned.clone(),
            self.running.clone(),
            self.rebase.clone(),
        );
        abandoned.store(true, Release);
        async move {
            while running.load(Acquire) {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            abandoned.store(false, Release);
            rebase.abandon();
        }
    }

    /// Starts a snapshot of `tree` unless one is still being written; false if one is.
    pub fn start(&self, tree: DataTree, sessions: Vec<SnapSession>) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        if self.running.swap(true, AcqRel) {
            return false;
        }
        self.rebase.begin();
        let rebase = self.rebase.clone();
        let running = self.running.clone();
        let durable = self.durable.clone();
        let failed = self.failed.clone();
        let abandoned = self.abandoned.clone();
        let last_purge = self.last_purge.clone();
        let cfg = self.cfg.clone();
        let stats = self.stats.clone();
        let spawned = std::thread::Builder::new()
            .name("rk-snapshot".into())
            .spawn(move || {
                let t0 = Instant::now();
                let zxid = tree.last_zxid();
                let dir = cfg.snapshot_dir();
                let r = tree.write_snapshot(&sessions, &dir, || loop {
                    if durable.load(Acquire) >= zxid {
                        return true;
                    }
                    if failed.load(Acquire) || abandoned.load(Acquire) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                });
                match &r {
                    Ok(Some(p)) => {
                        let took = t0.elapsed();
                        tracing::info!(
                            "snapshot {} written: {} znodes, {} sessions, in {} ms",
                            p.display(),
                            tree.node_count(),
                            sessions.len(),
                            took.as_millis()
                        );
                        stats.record(
                            WrittenSnapshot {
                                zxid,
                                path: p.clone(),
                                bytes: std::fs::metadata(p).map_or(0, |m| m.len()),
                                unix_s: std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map_or(0, |d| d.as_secs()),
                                took_ms: took.as_millis() as u64,
                            },
                            took,
                        );
                    }
                    Ok(None) => tracing::warn!(
                        "snapshot at zxid {zxid:#x} abandoned: the txn log failed or stopped before holding it"
                    ),
                    Err(e) => tracing::error!(
                        "snapshot at zxid {zxid:#x} failed: {e} (the txn log still holds every txn)"
                    ),
                }
                drop(tree);
                match r {
                    Ok(Some(p)) => rebase.rebuild(&p),
                    _ => rebase.cancel(),
                }
                let hours = cfg.autopurge_purge_interval_hours as u64;
                let mut last = last_purge.lock().expect("last_purge poisoned");
                if hours > 0 && last.elapsed() >= Duration::from_secs(hours * 3600) {
                    *last = Instant::now();
                    purge(&cfg);
                }
                running.store(false, std::sync::atomic::Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the snapshot thread: {e}");
            self.rebase.cancel();
            self.running
                .store(false, std::sync::atomic::Ordering::Release);
        }
        true
    }
}

/// Deletes snapshots beyond autopurge.snapRetainCount and the log they no longer need.
pub fn purge(cfg: &Config) {
    let retain = cfg.autopurge_snap_retain_count as usize;
    match ringkeeper_storage::purge::purge(&cfg.snapshot_dir(), &cfg.log_dir(), retain) {
        Ok(removed) if !removed.is_empty() => tracing::info!(
            "autopurge removed {} old snapshot(s) and log segment(s), keeping {retain} snapshots",
            removed.len()
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("autopurge failed: {e}"),
    }
}
