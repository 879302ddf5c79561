//! Txn log segment files: `log.<base zxid, 16 hex digits>` in the log directory, each a
//! [`SegmentHeader`] followed by records, preallocated and zero-filled so that appends
//! neither grow the file (a sync then has no size to journal) nor run out of space.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::fsutil::{fsync_dir, preallocate};
use crate::record::{SegmentHeader, SEGMENT_HEADER_BYTES};

pub const SEGMENT_PREFIX: &str = "log.";

pub fn segment_name(base_zxid: i64) -> String {
    format!("{SEGMENT_PREFIX}{base_zxid:016x}")
}

/// The base zxid a segment file name carries, if it is one.
pub fn parse_segment_name(name: &str) -> Option<i64> {
    let hex = name.strip_prefix(SEGMENT_PREFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|z| z as i64)
}

/// The segments in `dir`, oldest first: (base zxid, path).
pub fn list_segments(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(z) = e.file_name().to_str().and_then(parse_segment_name) {
            v.push((z, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Creates, preallocates and fsyncs a new segment for records from `base_zxid` on, and
/// makes its directory entry durable. The header is written through the page cache and
/// synced before anyone opens the file for direct I/O (see `log::open_direct`).
pub fn create_segment(dir: &Path, base_zxid: i64, prealloc_bytes: u64) -> io::Result<PathBuf> {
    let path = dir.join(segment_name(base_zxid));
    let mut f: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let result = (|| {
        preallocate(&f, prealloc_bytes.max(SEGMENT_HEADER_BYTES as u64))?;
        f.write_all(&SegmentHeader { base_zxid }.encode())?;
        f.sync_all()?;
        fsync_dir(dir)
    })();
    if let Err(e) = result {
        // Leave no half-made segment behind (a full disk must not leave clutter that
        // recovery would then have to judge).
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_zxid() {
        assert_eq!(segment_name(0x1_0000_0002), "log.0000000100000002");
        assert_eq!(
            parse_segment_name("log.0000000100000002"),
            Some(0x1_0000_0002)
        );
        assert_eq!(parse_segment_name("log.12"), None);
        assert_eq!(parse_segment_name("snapshot.0000000100000002"), None);
    }
}
