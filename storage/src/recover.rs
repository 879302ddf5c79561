//! Recovery of the txn log: the records after a snapshot's zxid, in order, from the
//! segments in the log directory.
//!
//! A torn record at the very end of the newest segment is a crash during a write that
//! was never acknowledged: it is zeroed out (one log line). Anything else that does not
//! check out (a damaged record in an older write, a torn record in an older segment, a
//! zxid gap, a bad segment header) stops recovery with an error naming the file and the
//! offset. Nothing is skipped silently.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use thiserror::Error;

use crate::record::{scan, scan_each, End, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::segment::list_segments;

#[derive(Debug, Error)]
pub enum RecoveryError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: bad segment header: {reason}")]
    Header { path: PathBuf, reason: String },
    #[error("{path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path} at offset {offset}: txn {zxid:#x} cannot be applied: {reason}")]
    Apply {
        path: PathBuf,
        offset: u64,
        zxid: i64,
        reason: String,
    },
}

/// Where the log ends after recovery: the writer continues here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEnd {
    /// The newest segment and the offset after its last valid record (None: no
    /// segment yet).
    pub segment: Option<(PathBuf, u64)>,
    /// The last zxid in the log, or the snapshot's if the log holds nothing newer.
    pub last_zxid: i64,
    /// Records replayed (those after the snapshot).
    pub replayed: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Maps a segment and says how much of it can hold data: a preallocated segment is
/// mostly unwritten space, which reads as zeros but costs a page fault per page to
/// check through a map. If everything after the first hole is a hole too, the scan can
/// stop there; if the file system cannot tell (no SEEK_HOLE), the whole file counts.
fn map(path: &Path) -> Result<(Mmap, usize), RecoveryError> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).map_err(io_err(path))?;
    // SAFETY: the segment is not written by anyone while recovery runs (the server has
    // not started its log writer yet).
    let m = unsafe { Mmap::map(&f) }.map_err(io_err(path))?;
    let fd = f.as_raw_fd();
    // SAFETY: lseek on an fd we own; it only reports offsets.
    let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
    let written = if hole < 0 || hole as usize >= m.len() {
        m.len()
    } else {
        // SAFETY: as above.
        let more = unsafe { libc::lseek(fd, hole, libc::SEEK_DATA) };
        if more < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
            hole as usize
        } else {
            m.len()
        }
    };
    let floor = SEGMENT_HEADER_BYTES.min(m.len());
    Ok((m, written.max(floor)))
}

/// Whether txn `next` may come right after txn `last` in a log: the next counter of
/// the same epoch, or the first txn (counter 1) of a later epoch (zxid = epoch << 32 |
/// counter; a new leader's first proposal starts its epoch at counter 1).
pub fn follows(last: i64, next: i64) -> bool {
    const COUNTER_BITS: u32 = 32;
    let epoch = |z: i64| z >> COUNTER_BITS;
    let counter = |z: i64| z & 0xffff_ffff;
    next == last + 1 || (epoch(next) > epoch(last) && counter(next) == 1)
}

/// Replays the records after `after_zxid`, in zxid order, through `apply(zxid, payload)`.
/// `apply` returning an error stops recovery with that error, naming the record.
pub fn replay_log(
    dir: &Path,
    after_zxid: i64,
    apply: impl FnMut(i64, &[u8]) -> Result<(), String>,
) -> Result<LogEnd, RecoveryError> {
    replay_log_as(dir, after_zxid, true, apply)
}

/// [`replay_log`], or with `repair` false, for a reader that must not change the log
/// (a tool reading a server's directory), the same reading with a torn last write
/// left as it is.
pub fn replay_log_as(
    dir: &Path,
    after_zxid: i64,
    repair: bool,
    mut apply: impl FnMut(i64, &[u8]) -> Result<(), String>,
) -> Result<LogEnd, RecoveryError> {
    let segments = list_segments(dir).map_err(io_err(dir))?;
    let mut end = LogEnd {
        segment: None,
        last_zxid: after_zxid,
        replayed: 0,
    };
    for (i, (base, path)) in segments.iter().enumerate() {
        let newest = i + 1 == segments.len();
        // A segment all of whose records precede the snapshot needs no reading: the next
        // segment starts at or before the first zxid we want.
        if !newest && segments[i + 1].0 <= after_zxid + 1 {
            continue;
        }
        let (data, written) = map(path)?;
        let header = SegmentHeader::decode(&data).map_err(|e| RecoveryError::Header {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if header.base_zxid != *base {
            return Err(RecoveryError::Header {
                path: path.clone(),
                reason: format!(
                    "header says base zxid {:#x}, file name says {base:#x}",
                    header.base_zxid
                ),
            });
        }
        // Everything past `written` is unwritten space: zeros, the clean end of a
        // preallocated segment.
        let body = &data[SEGMENT_HEADER_BYTES..written.max(SEGMENT_HEADER_BYTES)];
        let at = |o: usize| (SEGMENT_HEADER_BYTES + o) as u64;
        // Each record is applied as it is read: no list of a whole segment's records.
        let s = scan_each(body, |r| {
            if r.zxid <= after_zxid {
                return Ok(());
            }
            if !follows(end.last_zxid, r.zxid) {
                return Err(RecoveryError::Corrupt {
                    path: path.clone(),
                    offset: at(r.payload.start - crate::record::RECORD_HEADER_BYTES),
                    reason: format!(
                        "zxid gap: expected txn {:#x} (or a later epoch's first), found {:#x}",
                        end.last_zxid + 1,
                        r.zxid
                    ),
                });
            }
            apply(r.zxid, &body[r.payload.clone()]).map_err(|reason| RecoveryError::Apply {
                path: path.clone(),
                offset: at(r.payload.start - crate::record::RECORD_HEADER_BYTES),
                zxid: r.zxid,
                reason,
            })?;
            end.last_zxid = r.zxid;
            end.replayed += 1;
            Ok(())
        })?;
        match s.end {
            End::Clean => {}
            End::Torn { offset } if newest && !repair => {
                tracing::info!(
                    "{}: a torn write at offset {} (left as it is)",
                    path.display(),
                    at(offset)
                );
            }
            End::Torn { offset } if newest => {
                let valid = at(offset);
                tracing::warn!(
                    "{}: discarding a torn write at offset {valid} (a crash during a write that was never acknowledged)",
                    path.display()
                );
                let last_nonzero = body.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
                drop(data);
                zero_range(path, valid, at(last_nonzero))?;
            }
            End::Torn { offset } => {
                return Err(RecoveryError::Corrupt {
                    path: path.clone(),
                    offset: at(offset),
                    reason: "damaged record in a segment that is not the newest".into(),
                })
            }
            End::Corrupt { offset, reason } => {
                return Err(RecoveryError::Corrupt {
                    path: path.clone(),
                    offset: at(offset),
                    reason: reason.into(),
                })
            }
        }
        if newest {
            end.segment = Some((path.clone(), at(s.valid_len)));
        }
    }
    Ok(end)
}

/// Overwrites `[from, to)` of `path` with zeros and syncs it.
fn zero_range(path: &Path, from: u64, to: u64) -> Result<(), RecoveryError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(zeros.len());
        f.write_all_at(&zeros[..n], at).map_err(io_err(path))?;
        at += n as u64;
    }
    f.sync_all().map_err(io_err(path))
}

/// Cuts the log in `dir` back to `zxid` (Zab's TRUNC), durably: segments that start
/// after it are removed, and in the one that holds it everything after its record is
/// zeroed, so recovery ends the log exactly there. Returns how many records went.
/// The caller MUST NOT have a writer open on the log.
pub fn truncate_log_after(dir: &Path, zxid: i64) -> Result<u64, RecoveryError> {
    let segments = list_segments(dir).map_err(io_err(dir))?;
    let mut dropped = 0;
    let mut kept = None;
    for (base, path) in segments.iter().rev() {
        if *base > zxid {
            let (data, written) = map(path)?;
            if written > SEGMENT_HEADER_BYTES {
                dropped += scan(&data[SEGMENT_HEADER_BYTES..written]).records.len() as u64;
            }
            drop(data);
            std::fs::remove_file(path).map_err(io_err(path))?;
        } else {
            kept = Some(path.clone());
            break;
        }
    }
    if let Some(path) = kept {
        let (data, written) = map(&path)?;
        let body = &data[SEGMENT_HEADER_BYTES..written.max(SEGMENT_HEADER_BYTES)];
        let s = scan(body);
        let keep_end = s
            .records
            .iter()
            .take_while(|r| r.zxid <= zxid)
            .last()
            .map_or(0, |r| r.payload.end);
        dropped += s.records.iter().filter(|r| r.zxid > zxid).count() as u64;
        let last_nonzero = body.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        drop(data);
        if last_nonzero > keep_end {
            zero_range(
                &path,
                (SEGMENT_HEADER_BYTES + keep_end) as u64,
                (SEGMENT_HEADER_BYTES + last_nonzero) as u64,
            )?;
        }
    }
    crate::fsutil::fsync_dir(dir).map_err(io_err(dir))?;
    Ok(dropped)
}

/// Removes every log segment in `dir`, durably (the log starts over after a snapshot
/// taken from a leader). The caller MUST NOT have a writer open on the log.
pub fn remove_log(dir: &Path) -> Result<usize, RecoveryError> {
    let segments = list_segments(dir).map_err(io_err(dir))?;
    for (_, path) in &segments {
        std::fs::remove_file(path).map_err(io_err(path))?;
    }
    crate::fsutil::fsync_dir(dir).map_err(io_err(dir))?;
    Ok(segments.len())
}

#[cfg(test)]
mod tests {
    use super::follows;

    #[test]
    fn a_log_may_jump_to_a_later_epochs_first_txn_and_nowhere_else() {
        let z = |e: i64, c: i64| e << 32 | c;
        assert!(follows(z(1, 7), z(1, 8)));
        assert!(follows(z(1, 7), z(2, 1)));
        assert!(follows(z(1, 7), z(5, 1)));
        assert!(follows(0, z(1, 1)));
        assert!(!follows(z(1, 7), z(1, 9)), "a gap within an epoch");
        assert!(
            !follows(z(1, 7), z(2, 2)),
            "a later epoch's first txn is counter 1"
        );
        assert!(!follows(z(2, 3), z(1, 4)), "epochs never go back");
        assert!(!follows(z(1, 7), z(1, 7)));
    }
}
