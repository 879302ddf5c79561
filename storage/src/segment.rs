//! Txn log segment files: `log.<base zxid, 16 hex digits>` in the log directory, each a
//! [`SegmentHeader`] followed by records, preallocated and zero-filled so that appends
//! neither grow the file (a sync then has no size to journal) nor run out of space.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::fsutil::{fsync_dir, list_zxid_files, parse_zxid_name, preallocate, zxid_name};
use crate::record::{SegmentHeader, SEGMENT_HEADER_BYTES};

pub const SEGMENT_PREFIX: &str = "log.";
/// Suffix of a segment or snapshot still being made; never read, removed at start-up.
pub const TMP_SUFFIX: &str = ".tmp";

pub fn segment_name(base_zxid: i64) -> String {
    zxid_name(SEGMENT_PREFIX, base_zxid)
}

/// The base zxid a segment file name carries, if it is one.
pub fn parse_segment_name(name: &str) -> Option<i64> {
    parse_zxid_name(SEGMENT_PREFIX, name)
}

/// The segments in `dir`, oldest first: (base zxid, path).
pub fn list_segments(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
    list_zxid_files(dir, SEGMENT_PREFIX)
}

/// Creates, preallocates and fsyncs a new segment for records from `base_zxid` on, and
/// makes its directory entry durable. It is made under a temp name and renamed into
/// place once complete, so a crash never leaves a segment without its header. The
/// header is written through the page cache and synced before anyone opens the file
/// for direct I/O (see `log::open_segment`).
pub fn create_segment(dir: &Path, base_zxid: i64, prealloc_bytes: u64) -> io::Result<PathBuf> {
    let path = dir.join(segment_name(base_zxid));
    if path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", path.display()),
        ));
    }
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", segment_name(base_zxid)));
    let result = (|| {
        let mut f: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        preallocate(&f, prealloc_bytes.max(SEGMENT_HEADER_BYTES as u64))?;
        f.write_all(&SegmentHeader { base_zxid }.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        fsync_dir(dir)
    })();
    if let Err(e) = result {
        // Leave no half-made segment behind (a full disk must not leave clutter that
        // recovery would then have to judge).
        let _ = std::fs::remove_file(&tmp);
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
