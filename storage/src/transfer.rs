//! The files as one member hands them to another (a leader's SNAP to a ringkeeper
//! learner): a range of the live log read back as framed records, and such records
//! written as a new log of the receiving member; the snapshot file itself travels as
//! it is (see [`install_snapshot_file`]).
//!
//! Reading runs while the log writer appends: segments are read with plain reads (no
//! map of a file being written) and only records up to a zxid the caller knows are
//! written are taken; nothing here modifies the log it reads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::fsutil::fsync_dir;
use crate::record::{
    encode_batch_marker, encode_record, padding_end, scan, End, SegmentHeader, BATCH_MARKER_ZXID,
    LOG_BLOCK_BYTES, OVERLAPPING_BATCH_MARKER_BYTES, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX,
    SEGMENT_HEADER_BYTES,
};
use crate::recover::follows;
use crate::segment::{create_segment, list_segments, TMP_SUFFIX};
use crate::snapshot::{snapshot_name, Snapshot};

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;

/// The records after `after` up to and including `upto`, framed as the log frames
/// them (no batch markers), read from the log in `dir`. An error if the log does not
/// hold every one of them in order (a gap, damage, or a log that ends before `upto`).
pub fn read_log_range(dir: &Path, after: i64, upto: i64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if upto <= after {
        return Ok(out);
    }
    let segments = list_segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut last = after;
    for (i, (_, path)) in segments.iter().enumerate() {
        if segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= after + 1)
        {
            continue; // all of it at or before `after`
        }
        let reached = read_segment(path, &mut last, upto, &mut out)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if reached {
            return Ok(out);
        }
    }
    Err(format!(
        "the log in {} holds txns up to {last:#x} only, not {upto:#x}",
        dir.display()
    ))
}

/// Appends the records of `path` after `*last` (up to `upto`) to `out`; true once
/// `upto` is taken.
fn read_segment(path: &Path, last: &mut i64, upto: i64, out: &mut Vec<u8>) -> io::Result<bool> {
    let f = File::open(path)?;
    let size = f.metadata()?.len() as usize;
    let mut buf = vec![0u8; SEGMENT_HEADER_BYTES.min(size)];
    f.read_exact_at(&mut buf, 0)?;
    SegmentHeader::decode(&buf).map_err(|e| io::Error::other(format!("bad header: {e}")))?;
    let mut at = SEGMENT_HEADER_BYTES;
    // Reads until `buf` holds `need` bytes from `at` (false: the file ends first).
    let fill = |buf: &mut Vec<u8>, need: usize| -> io::Result<bool> {
        while buf.len() < need {
            let from = buf.len();
            if from >= size {
                return Ok(false);
            }
            let n = READ_CHUNK.max(need - from).min(size - from);
            buf.resize(from + n, 0);
            f.read_exact_at(&mut buf[from..], from as u64)?;
        }
        Ok(true)
    };
    loop {
        if !fill(&mut buf, at + RECORD_HEADER_BYTES)? {
            return Ok(false);
        }
        let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            // Padding before a write that was started while the one before was in
            // flight (see `record`), or the end of the written part.
            let marker_end = at.next_multiple_of(LOG_BLOCK_BYTES) + OVERLAPPING_BATCH_MARKER_BYTES;
            if !fill(&mut buf, marker_end)? {
                return Ok(false);
            }
            let body = &buf[SEGMENT_HEADER_BYTES..];
            match padding_end(body, at - SEGMENT_HEADER_BYTES) {
                Some(next) => {
                    at = SEGMENT_HEADER_BYTES + next;
                    continue;
                }
                None => return Ok(false),
            }
        }
        if len > RECORD_PAYLOAD_BYTES_MAX || !fill(&mut buf, at + RECORD_HEADER_BYTES + len)? {
            return Err(io::Error::other(format!("no whole record at offset {at}")));
        }
        let s = scan(&buf[at..at + RECORD_HEADER_BYTES + len]);
        let Some(r) = s.records.first().filter(|_| s.end == End::Clean) else {
            if s.end == End::Clean {
                at += RECORD_HEADER_BYTES + len; // a batch marker
                continue;
            }
            return Err(io::Error::other(format!("damaged record at offset {at}")));
        };
        debug_assert_ne!(r.zxid, BATCH_MARKER_ZXID);
        let payload = &buf[at + r.payload.start..at + r.payload.end];
        at += RECORD_HEADER_BYTES + len;
        if r.zxid <= *last {
            continue;
        }
        if !follows(*last, r.zxid) {
            return Err(io::Error::other(format!(
                "txn {:#x} does not follow {:#x}",
                r.zxid, *last
            )));
        }
        encode_record(out, r.zxid, payload);
        *last = r.zxid;
        if r.zxid == upto {
            return Ok(true);
        }
        if r.zxid > upto {
            return Err(io::Error::other(format!("no txn {upto:#x} in the log")));
        }
    }
}

/// What [`check_records`] found: the first and last zxid and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    pub first: i64,
    pub last: i64,
    pub count: usize,
}

/// Checks framed records (as [`read_log_range`] returns them) for a log that starts
/// after `after`: each checks out and follows the one before.
pub fn check_records(records: &[u8], after: i64) -> Result<Option<RecordSpan>, String> {
    let s = scan(records);
    if s.end != End::Clean || s.valid_len != records.len() {
        return Err(format!(
            "damaged record at offset {} of {} bytes of log",
            s.valid_len,
            records.len()
        ));
    }
    let mut last = after;
    for r in &s.records {
        if !follows(last, r.zxid) {
            return Err(format!("txn {:#x} does not follow {last:#x}", r.zxid));
        }
        last = r.zxid;
    }
    Ok(s.records.first().map(|f| RecordSpan {
        first: f.zxid,
        last,
        count: s.records.len(),
    }))
}

/// Writes `records` (checked by [`check_records`]) as the first segment of a new log
/// in `dir`, durably: one batch marker, then the records. The caller MUST NOT have a
/// writer open on the log, and `dir` must hold no segment.
pub fn write_log(dir: &Path, records: &[u8], first: i64, prealloc_bytes: u64) -> io::Result<()> {
    let path = create_segment(dir, first, prealloc_bytes)?;
    let mut body = Vec::with_capacity(records.len() + 64);
    encode_batch_marker(&mut body, records.len() as u64, first);
    body.extend_from_slice(records);
    let f = OpenOptions::new().write(true).open(&path)?;
    f.write_all_at(&body, SEGMENT_HEADER_BYTES as u64)?;
    f.sync_all()
}

/// A snapshot file received from another member, durable under a temp name (which
/// start-up removes) and checked, until [`StagedSnapshot::commit`] renames it into
/// place. Dropped uncommitted, it is removed.
pub struct StagedSnapshot {
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    committed: bool,
}

impl StagedSnapshot {
    /// Renames the file into place, durably; returns its path.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        fsync_dir(&self.dir)?;
        Ok(self.path.clone())
    }
}

impl Drop for StagedSnapshot {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes`, a snapshot file of zxid `zxid` as another member wrote it, to a
/// temp name in `dir`, durably, and checks it as a snapshot (header, every checksum,
/// the table's structure). On error nothing is left behind.
pub fn stage_snapshot_file(dir: &Path, zxid: i64, bytes: &[u8]) -> Result<StagedSnapshot, String> {
    let name = snapshot_name(zxid);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(&name);
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all_at(bytes, 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let snap = Snapshot::open(&tmp).map_err(|e| e.to_string())?;
        if snap.zxid != zxid {
            return Err(format!(
                "the snapshot received as {zxid:#x} is of {:#x}",
                snap.zxid
            ));
        }
        Ok(())
    })();
    let staged = StagedSnapshot {
        tmp,
        path,
        dir: dir.to_path_buf(),
        committed: false,
    };
    result.map(|()| staged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(e: i64, c: i64) -> i64 {
        e << 32 | c
    }

    /// A log in `dir` of segments (each a list of zxids, one write per segment).
    fn log(dir: &Path, segments: &[&[i64]]) {
        for zxids in segments {
            let mut recs = Vec::new();
            for &x in *zxids {
                encode_record(&mut recs, x, format!("txn {x:#x}").as_bytes());
            }
            write_log(dir, &recs, zxids[0], 1 << 16).unwrap();
        }
    }

    fn zxids(records: &[u8]) -> Vec<i64> {
        scan(records).records.iter().map(|r| r.zxid).collect()
    }

    #[test]
    fn a_range_of_the_log_reads_back_across_segments_and_an_epoch_jump() {
        let d = crate::fsutil::test_dir("transfer-range");
        log(
            &d,
            &[&[z(1, 1), z(1, 2), z(1, 3)], &[z(1, 4), z(2, 1), z(2, 2)]],
        );
        let got = read_log_range(&d, z(1, 2), z(2, 1)).unwrap();
        assert_eq!(zxids(&got), vec![z(1, 3), z(1, 4), z(2, 1)]);
        let span = check_records(&got, z(1, 2)).unwrap().unwrap();
        assert_eq!((span.first, span.last, span.count), (z(1, 3), z(2, 1), 3));
        assert!(read_log_range(&d, z(1, 2), z(1, 2)).unwrap().is_empty());
        // Past the end, or from a point the log does not continue.
        assert!(read_log_range(&d, 0, z(2, 3)).is_err());
        assert!(read_log_range(&d, 0, z(2, 2)).is_ok());
        assert!(
            check_records(&got, z(1, 1)).is_err(),
            "1:3 does not follow 1:1"
        );
    }

    #[test]
    fn damaged_records_are_refused_both_ways() {
        let d = crate::fsutil::test_dir("transfer-damage");
        log(&d, &[&[z(1, 1), z(1, 2), z(1, 3)]]);
        let mut got = read_log_range(&d, 0, z(1, 3)).unwrap();
        let n = got.len();
        got[n - 2] ^= 0x40;
        assert!(check_records(&got, 0).is_err());
        // Flip a byte of the second record on disk: the range through it is refused.
        let (_, path) = &list_segments(&d).unwrap()[0];
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let second = SEGMENT_HEADER_BYTES + 32 + (n / 3) + RECORD_HEADER_BYTES + 2;
        let mut b = [0u8];
        f.read_exact_at(&mut b, second as u64).unwrap();
        f.write_all_at(&[b[0] ^ 1], second as u64).unwrap();
        let e = read_log_range(&d, 0, z(1, 3)).unwrap_err();
        assert!(e.contains("damaged record"), "{e}");
    }
}
