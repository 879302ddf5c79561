//! `ringkeeper-export`: a ringkeeper data directory written out as an Apache ZooKeeper
//! data directory that ZooKeeper 3.8 starts from and serves identically: the tree,
//! every Stat field, the ACLs, the sessions with their timeouts (ZooKeeper derives a
//! session's password from its id, as ringkeeper does for sessions it takes from
//! ZooKeeper's members) and the epochs.
//!
//! What ringkeeper would recover (its newest snapshot and the log after it) is read
//! without changing anything, under the directory's lock, so no server may be
//! running on it. The output is one snapshot, `version-2/snapshot.<zxid>`, at the
//! last logged zxid, and `acceptedEpoch` / `currentEpoch` beside it; it is written
//! under temp names, synced and renamed, and an output directory that already holds a
//! `version-2` with files is refused.

use std::path::{Path, PathBuf};

use ringkeeper::config::Config;
use ringkeeper::zkformat::convert::to_zookeeper_tree;
use ringkeeper::zkformat::files::write_snapshot;

/// What was exported.
#[derive(Debug)]
pub struct Exported {
    pub snapshot: PathBuf,
    pub zxid: i64,
    pub nodes: usize,
    pub sessions: usize,
}

fn epoch_file(dir: &Path, name: &str) -> Result<Option<i64>, String> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{}: not a number: {:?}", dir.join(name).display(), s.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", dir.join(name).display())),
    }
}

fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

/// Exports `rk_data` (a ringkeeper dataDir; its log in `rk_data_log`, if given) to
/// `zk_data` (a ZooKeeper dataDir).
pub fn export(
    rk_data: &Path,
    rk_data_log: Option<&Path>,
    zk_data: &Path,
) -> Result<Exported, String> {
    let mut cfg = Config::default();
    cfg.data_dir = rk_data.to_path_buf();
    cfg.data_log_dir = rk_data_log.map(Path::to_path_buf);
    let snap_dir = cfg.snapshot_dir();
    if !snap_dir.is_dir() {
        return Err(format!(
            "{} holds no ringkeeper data ({} is missing)",
            rk_data.display(),
            snap_dir.display()
        ));
    }
    let _lock = ringkeeper_storage::dirlock::DirLock::acquire(&snap_dir)
        .map_err(|e| format!("{e} (stop the server before exporting)"))?;
    let recovered = ringkeeper::recovery::read_only(&cfg).map_err(|e| e.to_string())?;
    let zxid = recovered.log_end.last_zxid;
    let epoch = zxid >> 32;
    let current = epoch_file(&snap_dir, "currentEpoch")?.unwrap_or(epoch);
    let accepted = epoch_file(&snap_dir, "acceptedEpoch")?.unwrap_or(current);
    let sessions: Vec<(i64, i32)> = recovered
        .sessions
        .iter()
        .map(|s| (s.id, s.timeout_ms))
        .collect();
    let tree = to_zookeeper_tree(&recovered.tree, &sessions);
    let out = zk_data.join("version-2");
    if out.is_dir()
        && std::fs::read_dir(&out)
            .map_err(|e| format!("{}: {e}", out.display()))?
            .next()
            .is_some()
    {
        return Err(format!(
            "{} already holds files: export writes only into an empty ZooKeeper data directory",
            out.display()
        ));
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let snapshot = write_durably(&out, &format!("snapshot.{zxid:x}"), &write_snapshot(&tree))?;
    write_durably(&out, "acceptedEpoch", accepted.to_string().as_bytes())?;
    write_durably(&out, "currentEpoch", current.to_string().as_bytes())?;
    ringkeeper_storage::fsutil::fsync_dir(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Exported {
        snapshot,
        zxid,
        nodes: tree.nodes.len(),
        sessions: sessions.len(),
    })
}
