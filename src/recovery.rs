//! Start-up recovery: the newest valid snapshot, then every logged txn after it, in
//! zxid order, rebuilding the tree and the session table. Runs before any executor
//! starts; anything it cannot vouch for stops start-up with the file and offset.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;

use ringkeeper_storage::recover::{replay_log_as, LogEnd};
use ringkeeper_storage::snapshot::{list_snapshots, SnapSession, Snapshot};
use thiserror::Error;

use crate::config::Config;
use crate::tree::{DataTree, Txn};

#[derive(Debug, Error)]
pub enum RecoveryError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0}\n(the newest snapshot is unreadable; to start from the previous one and replay \
         the log from there, run with --recover-from-older-snapshot)"
    )]
    Snapshot(ringkeeper_storage::snapshot::SnapshotError),
    #[error("txn log: {0}")]
    Log(#[from] ringkeeper_storage::recover::RecoveryError),
}

/// What recovery rebuilt.
pub struct Recovered {
    pub tree: DataTree,
    /// Sessions alive at the last logged txn: (id, timeout ms, password).
    pub sessions: Vec<SnapSession>,
    /// Where the log continues.
    pub log_end: LogEnd,
    /// The snapshot started from, if any, and its zxid.
    pub snapshot: Option<(PathBuf, i64)>,
    /// An ensemble member's last replayed txns, for DIFFs after a restart.
    pub recent: RecentTxns,
}

/// Txns a member keeps for DIFFs across a restart (ZooKeeper's commitLogCount).
pub const RECENT_TXNS_KEPT: usize = 500;

/// The last txns replayed from the log, as ZooKeeper serializes them (TxnHeader and
/// record, the header's clientId and cxid as logged), in zxid order.
#[derive(Debug, Default)]
pub struct RecentTxns {
    /// The zxid just before the first of `txns` (the snapshot's, if they are all
    /// that was replayed).
    pub floor: i64,
    pub txns: Vec<(i64, Bytes)>,
}

/// A replayed record kept for [`RecentTxns`]: its zxid, its payload and, for a
/// closeSession, the ephemerals it deleted (ZooKeeper's record lists them).
struct Kept {
    zxid: i64,
    payload: Vec<u8>,
    ephemerals: Vec<String>,
}

impl RecentTxns {
    fn from_kept(floor: i64, kept: VecDeque<Kept>) -> RecentTxns {
        let txns = kept
            .into_iter()
            .map(|k| {
                let logged = Txn::decode_logged(&k.payload).expect("decoded once already");
                let ctx = crate::zkformat::convert::TxnContext {
                    session_id: logged.origin.session_id,
                    cxid: logged.origin.cxid,
                    zxid: k.zxid,
                    time_ms: logged.time_ms,
                };
                let z = crate::zkformat::convert::to_zookeeper(&logged.txn, ctx, &k.ephemerals);
                (k.zxid, Bytes::from(z.to_bytes()))
            })
            .collect();
        RecentTxns { floor, txns }
    }
}

fn ensure_dir(path: PathBuf) -> Result<PathBuf, RecoveryError> {
    std::fs::create_dir_all(&path).map_err(|source| RecoveryError::Dir {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Loads the newest snapshot that reads back (only the newest unless `fallback`).
fn load_snapshot(
    cfg: &Config,
) -> Result<Option<(PathBuf, DataTree, Vec<SnapSession>)>, RecoveryError> {
    let dir = cfg.snapshot_dir();
    let snaps = list_snapshots(&dir).map_err(|source| RecoveryError::Dir {
        path: dir.clone(),
        source,
    })?;
    let mut failures = Vec::new();
    for (_, path) in &snaps {
        let loaded = Snapshot::open(path).and_then(DataTree::from_snapshot);
        match loaded {
            Ok((tree, sessions)) => return Ok(Some((path.clone(), tree, sessions))),
            Err(e) if !cfg.fallback_to_older_snapshot => {
                return Err(RecoveryError::Snapshot(e));
            }
            Err(e) => {
                tracing::error!("{e}; falling back to the previous snapshot");
                failures.push(e.to_string());
            }
        }
    }
    if !failures.is_empty() {
        // Every snapshot is bad: the log alone can still rebuild the tree if it goes
        // back to the first txn; replay says "zxid gap" and stops if it does not.
        tracing::error!(
            "no snapshot can be read ({}); rebuilding from the txn log alone",
            failures.join("; ")
        );
    }
    Ok(None)
}

/// What a half-made file is renamed to before it is removed: still a temp name (a crash
/// before the removal leaves it for the next start), unique to this run.
fn discard_name(name: &str) -> String {
    use ringkeeper_storage::segment::TMP_SUFFIX;
    let stem = name.strip_suffix(TMP_SUFFIX).unwrap_or(name);
    format!("{stem}.discard-{}{TMP_SUFFIX}", std::process::id())
}

/// Sets aside the snapshots and log segments a crash left half-made (never renamed into
/// place) and removes them on a background thread. Removing a large file that reached
/// the disk takes ext4 about 0.7 s per GB, and a server killed while it wrote a big
/// snapshot leaves one; start-up should not wait for that. Each file is renamed first,
/// so a temp file this run makes under the same name is never touched.
fn discard_unfinished(dirs: &[PathBuf]) {
    use ringkeeper_storage::segment::{SEGMENT_PREFIX, TMP_SUFFIX};
    use ringkeeper_storage::snapshot::SNAPSHOT_PREFIX;
    let mut doomed = Vec::new();
    let mut seen = Vec::new();
    for dir in dirs {
        // dataDir and dataLogDir are often one directory, perhaps by two names.
        let same = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        if seen.contains(&same) {
            continue;
        }
        seen.push(same);
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(SNAPSHOT_PREFIX) || name.starts_with(SEGMENT_PREFIX);
            if !ours || !name.ends_with(TMP_SUFFIX) {
                continue;
            }
            if name.contains(".discard-") {
                doomed.push(e.path());
                continue;
            }
            let to = dir.join(discard_name(&name));
            match std::fs::rename(e.path(), &to) {
                Ok(()) => doomed.push(to),
                Err(err) => tracing::warn!("cannot set aside {}: {err}", e.path().display()),
            }
        }
    }
    if doomed.is_empty() {
        return;
    }
    let remove = move || {
        for p in doomed {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!("removed unfinished {}", p.display()),
                Err(err) => tracing::warn!("cannot remove {}: {err}", p.display()),
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("rk-discard".into())
        .spawn(remove)
    {
        tracing::warn!("cannot start a thread to remove unfinished files ({e}); they stay until the next start");
    }
}

pub fn recover(cfg: &Config) -> Result<Recovered, RecoveryError> {
    recover_as(cfg, true)
}

/// What a server would recover from `cfg`'s directories, read without changing them:
/// no directory is made, unfinished files stay, a torn last write is not cut off (a
/// tool reading a data directory: `ringkeeper-export`).
pub fn read_only(cfg: &Config) -> Result<Recovered, RecoveryError> {
    recover_as(cfg, false)
}

fn recover_as(cfg: &Config, repair: bool) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    let (snap_dir, log_dir) = if repair {
        (ensure_dir(cfg.snapshot_dir())?, ensure_dir(cfg.log_dir())?)
    } else {
        (cfg.snapshot_dir(), cfg.log_dir())
    };
    if repair {
        discard_unfinished(&[snap_dir, log_dir.clone()]);
    }
    let (snapshot, mut tree, mut sessions) = match load_snapshot(cfg)? {
        Some((path, tree, sessions)) => {
            let z = tree.last_zxid();
            (Some((path, z)), tree, sessions)
        }
        None => (None, DataTree::new(), Vec::new()),
    };
    let loaded = started.elapsed();
    let after = tree.last_zxid();
    // Replay fires no watches: the triggers are made and dropped.
    let mut triggers = Vec::new();
    let keep = if cfg.is_ensemble() {
        RECENT_TXNS_KEPT
    } else {
        0
    };
    let mut kept: VecDeque<Kept> = VecDeque::with_capacity(keep);
    let mut kept_floor = after;
    let log_end = replay_log_as(&log_dir, after, repair, |zxid, payload| {
        let mut ephemerals = Vec::new();
        if keep > 0 {
            if kept.len() == keep {
                kept_floor = kept.pop_front().map_or(kept_floor, |k| k.zxid);
            }
            if let Some(session_id) = Txn::logged_close_session(payload) {
                ephemerals = tree.ephemerals_of(session_id);
            }
        }
        let txn = tree.apply_logged(zxid, payload, &mut triggers)?.txn;
        triggers.clear();
        if keep > 0 {
            kept.push_back(Kept {
                zxid,
                payload: payload.to_vec(),
                ephemerals,
            });
        }
        match txn {
            Txn::CreateSession {
                session_id,
                timeout_ms,
                passwd,
            } => sessions.push(SnapSession {
                id: session_id,
                timeout_ms,
                passwd,
            }),
            Txn::CloseSession { session_id } => sessions.retain(|s| s.id != session_id),
            _ => {}
        }
        Ok(())
    })?;
    if let Some((path, z)) = &snapshot {
        tracing::info!(
            "recovered {} znodes from {} (zxid {z:#x}) in {} ms, then {} logged txns up to zxid {:#x}, in {} ms in all",
            tree.node_count(),
            path.display(),
            loaded.as_millis(),
            log_end.replayed,
            log_end.last_zxid,
            started.elapsed().as_millis()
        );
    } else if log_end.replayed > 0 {
        tracing::info!(
            "recovered {} znodes from {} logged txns (no snapshot) in {} ms",
            tree.node_count(),
            log_end.replayed,
            started.elapsed().as_millis()
        );
    }
    Ok(Recovered {
        tree,
        sessions,
        log_end,
        snapshot,
        recent: RecentTxns::from_kept(kept_floor, kept),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::STORAGE_SUBDIR;
    use ringkeeper_storage::record::segment_from_fuzz_input;

    /// Recovers a data directory whose only log segment holds `input` as the
    /// `recover_log` fuzz target builds it (first byte odd: checksums resealed).
    fn recover_fuzz_input(input: &[u8]) -> Result<Recovered, RecoveryError> {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "rk-recover-regression-{}-{run}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(STORAGE_SUBDIR)).unwrap();
        let seg = segment_from_fuzz_input(input);
        std::fs::write(dir.join(STORAGE_SUBDIR).join("log.0000000000000001"), seg).unwrap();
        let mut cfg = Config::default();
        cfg.data_dir = dir.clone();
        let r = recover(&cfg);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    thread_local! {
        static PANICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Every input that once crashed the `recover_log` fuzz target: recovery ends with
    /// an error naming what does not fit (before: a panic inside the tree's apply,
    /// caught by an unwind guard, and an abort where panics abort).
    #[test]
    fn fuzz_found_logs_are_refused_without_a_panic() {
        // A panic on this thread, even one caught on the way, is a failure: where
        // panics abort (the fuzzer's build, panic = "abort") it ends the server.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            previous(info);
        }));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz/regressions/recover_log");
        let mut n = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let r = recover_fuzz_input(&std::fs::read(&f).unwrap());
            assert!(
                !PANICKED.with(|p| p.get()),
                "{}: recovery panicked",
                f.display()
            );
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{} recovered", f.display()));
            assert!(
                e.to_string().contains("does not fit"),
                "{}: {e}",
                f.display()
            );
            n += 1;
        }
        assert!(n > 0, "no regression inputs in {}", dir.display());
    }
}
