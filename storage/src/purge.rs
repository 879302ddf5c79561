//! Retention (autopurge): keep the newest `retain` snapshots and the log segments
//! needed to recover from the oldest of them; delete the rest.

use std::io;
use std::path::{Path, PathBuf};

use crate::segment::list_segments;
use crate::snapshot::list_snapshots;

/// Deletes old snapshots and segments; returns what it removed.
pub fn purge(snap_dir: &Path, log_dir: &Path, retain: usize) -> io::Result<Vec<PathBuf>> {
    let retain = retain.max(1);
    let snaps = list_snapshots(snap_dir)?;
    let mut removed = Vec::new();
    if snaps.len() <= retain {
        return Ok(removed);
    }
    let oldest_kept = snaps[retain - 1].0;
    for (_, p) in &snaps[retain..] {
        std::fs::remove_file(p)?;
        removed.push(p.clone());
    }
    // A segment is needed if it may hold a record after `oldest_kept`: every segment
    // from the last one starting at or before `oldest_kept + 1` on.
    let segs = list_segments(log_dir)?;
    let first_needed = segs
        .iter()
        .rposition(|(base, _)| *base <= oldest_kept + 1)
        .unwrap_or(0);
    for (_, p) in &segs[..first_needed] {
        std::fs::remove_file(p)?;
        removed.push(p.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_snapshots_and_the_log_they_need() {
        let d = std::env::temp_dir().join(format!("rk-purge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for z in [10, 20, 30, 40] {
            std::fs::write(d.join(crate::snapshot::snapshot_name(z)), b"").unwrap();
        }
        for z in [1, 15, 25, 35] {
            std::fs::write(d.join(crate::segment::segment_name(z)), b"").unwrap();
        }
        let mut removed: Vec<String> = purge(&d, &d, 3)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        // Snapshot 20 is the oldest kept; records 21.. live in segment 15 onwards.
        assert_eq!(
            removed,
            vec!["log.0000000000000001", "snapshot.000000000000000a"]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
