//! Snapshots: a whole tree version at one zxid, with the session table, in a format
//! that is memory-mapped and read in place.
//!
//! ```text
//! header (64 bytes): magic "RKSNAPSH" | version u32 | 0 u32 | zxid i64 | nodes u64
//!                    | sessions u64 | acl lists u64 | body length u64 | body crc32c u32
//!                    | header crc32c u32 (over the 60 bytes before it)
//! body: acl lists   (len u32 | bytes)                      -- ACL lists, opaque here
//!       sessions    (id i64 | timeout ms i32 | password 16 bytes)
//!       nodes       (path len u32 | path | data len i32, -1 = null | data
//!                    | acl list index u32 | czxid mzxid ctime mtime i64
//!                    | version cversion aversion i32 | ephemeral owner i64 | pzxid i64)
//! ```
//!
//! Nodes are in depth-first pre-order (a parent before its children, siblings by name).
//! All integers big-endian. Node data is not copied on load: the reader hands out
//! byte ranges of the map, which the server turns into `Bytes` sharing the map.
//! A snapshot is written to `snapshot.<zxid>.tmp`, fsynced, renamed to
//! `snapshot.<zxid, 16 hex digits>` and the directory fsynced.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use thiserror::Error;

use crate::fsutil::{fsync_dir, list_zxid_files, parse_zxid_name, zxid_name};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RKSNAPSH";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
pub const SNAPSHOT_PREFIX: &str = "snapshot.";
pub const PASSWD_BYTES: usize = 16;
const SESSION_BYTES: usize = 8 + 4 + PASSWD_BYTES;
const NODE_FIXED_BYTES: usize = 4 + 8 * 4 + 4 * 3 + 8 + 8;

pub fn snapshot_name(zxid: i64) -> String {
    zxid_name(SNAPSHOT_PREFIX, zxid)
}

pub fn parse_snapshot_name(name: &str) -> Option<i64> {
    parse_zxid_name(SNAPSHOT_PREFIX, name)
}

/// The snapshots in `dir`, newest first: (zxid, path). Temp files are not listed.
pub fn list_snapshots(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
    let mut v = list_zxid_files(dir, SNAPSHOT_PREFIX)?;
    v.reverse();
    Ok(v)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapStat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub pzxid: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapSession {
    pub id: i64,
    pub timeout_ms: i32,
    pub passwd: [u8; PASSWD_BYTES],
}

/// One node as read from a map: `path` and `data` index into [`Snapshot::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapNode {
    pub path: Range<usize>,
    pub data: Option<Range<usize>>,
    pub acl: u32,
    pub stat: SnapStat,
}

/// Streams a snapshot to its temp file; [`SnapshotWriter::finish`] makes it durable
/// and visible. Sections must come in order: ACL lists, sessions, nodes.
pub struct SnapshotWriter {
    dir: PathBuf,
    zxid: i64,
    tmp: PathBuf,
    out: BufWriter<File>,
    crc: u32,
    len: u64,
    counts: [u64; 3],
}

impl SnapshotWriter {
    pub fn create(dir: &Path, zxid: i64) -> io::Result<SnapshotWriter> {
        let tmp = dir.join(format!(
            "{}{}",
            snapshot_name(zxid),
            crate::segment::TMP_SUFFIX
        ));
        let mut f = File::create(&tmp)?;
        f.write_all(&[0u8; HEADER_BYTES])?;
        Ok(SnapshotWriter {
            dir: dir.to_path_buf(),
            zxid,
            tmp,
            out: BufWriter::with_capacity(1 << 20, f),
            crc: 0,
            len: 0,
            counts: [0; 3],
        })
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.len += b.len() as u64;
        self.out.write_all(b)
    }

    pub fn acl_list(&mut self, encoded: &[u8]) -> io::Result<()> {
        assert!(
            self.counts[1] == 0 && self.counts[2] == 0,
            "ACL lists come first"
        );
        self.counts[0] += 1;
        self.put(&(encoded.len() as u32).to_be_bytes())?;
        self.put(encoded)
    }

    pub fn session(&mut self, s: &SnapSession) -> io::Result<()> {
        assert!(self.counts[2] == 0, "sessions come before nodes");
        self.counts[1] += 1;
        let mut b = [0u8; SESSION_BYTES];
        b[..8].copy_from_slice(&s.id.to_be_bytes());
        b[8..12].copy_from_slice(&s.timeout_ms.to_be_bytes());
        b[12..].copy_from_slice(&s.passwd);
        self.put(&b)
    }

    pub fn node(
        &mut self,
        path: &str,
        data: Option<&[u8]>,
        acl: u32,
        st: &SnapStat,
    ) -> io::Result<()> {
        self.counts[2] += 1;
        self.put(&(path.len() as u32).to_be_bytes())?;
        self.put(path.as_bytes())?;
        match data {
            None => self.put(&(-1i32).to_be_bytes())?,
            Some(d) => {
                self.put(&(d.len() as i32).to_be_bytes())?;
                self.put(d)?;
            }
        }
        let mut b = [0u8; NODE_FIXED_BYTES];
        let mut w = &mut b[..];
        w.write_all(&acl.to_be_bytes())?;
        for v in [st.czxid, st.mzxid, st.ctime, st.mtime] {
            w.write_all(&v.to_be_bytes())?;
        }
        for v in [st.version, st.cversion, st.aversion] {
            w.write_all(&v.to_be_bytes())?;
        }
        w.write_all(&st.ephemeral_owner.to_be_bytes())?;
        w.write_all(&st.pzxid.to_be_bytes())?;
        self.put(&b)
    }

    /// Writes the header, fsyncs, and — once `durable()` says the log holds every txn
    /// up to this snapshot's zxid — renames the file into place and fsyncs the
    /// directory. If `durable()` returns false (the log failed) the temp file is removed.
    pub fn finish(self, durable: impl FnOnce() -> bool) -> io::Result<Option<PathBuf>> {
        let tmp = self.tmp.clone();
        let r = self.finish_inner(durable);
        if !matches!(r, Ok(Some(_))) {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }

    fn finish_inner(mut self, durable: impl FnOnce() -> bool) -> io::Result<Option<PathBuf>> {
        self.out.flush()?;
        let mut f = self.out.into_inner().map_err(|e| e.into_error())?;
        let mut h = [0u8; HEADER_BYTES];
        h[..8].copy_from_slice(&SNAPSHOT_MAGIC);
        h[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        h[16..24].copy_from_slice(&self.zxid.to_be_bytes());
        h[24..32].copy_from_slice(&self.counts[2].to_be_bytes());
        h[32..40].copy_from_slice(&self.counts[1].to_be_bytes());
        h[40..48].copy_from_slice(&self.counts[0].to_be_bytes());
        h[48..56].copy_from_slice(&self.len.to_be_bytes());
        h[56..60].copy_from_slice(&self.crc.to_be_bytes());
        let hcrc = crc32c::crc32c(&h[..60]);
        h[60..64].copy_from_slice(&hcrc.to_be_bytes());
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&h)?;
        f.sync_all()?;
        drop(f);
        if !durable() {
            return Ok(None);
        }
        let path = self.dir.join(snapshot_name(self.zxid));
        std::fs::rename(&self.tmp, &path)?;
        fsync_dir(&self.dir)?;
        Ok(Some(path))
    }
}

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} at offset {offset}: {reason}")]
    Bad {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// A validated, memory-mapped snapshot.
pub struct Snapshot {
    path: PathBuf,
    map: Arc<Mmap>,
    pub zxid: i64,
    node_count: u64,
    session_count: u64,
    acl_count: u64,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    be_u32(b, at) as i32
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Snapshot {
    /// Maps `path` and checks its header and body checksum.
    pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
        let bad = |offset: u64, reason: String| SnapshotError::Bad {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        let f = File::open(path).map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: snapshots are immutable once renamed into place; nothing writes them.
        let map = unsafe { Mmap::map(&f) }.map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let b = &map[..];
        if b.len() < HEADER_BYTES {
            return Err(bad(
                0,
                format!("shorter than the {HEADER_BYTES}-byte header"),
            ));
        }
        if b[..8] != SNAPSHOT_MAGIC {
            return Err(bad(0, "not a ringkeeper snapshot (bad magic)".into()));
        }
        if be_u32(b, 60) != crc32c::crc32c(&b[..60]) {
            return Err(bad(0, "header checksum mismatch".into()));
        }
        let version = be_u32(b, 8);
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(bad(
                8,
                format!("format version {version} is not supported (expected {SNAPSHOT_FORMAT_VERSION})"),
            ));
        }
        let body_len = be_i64(b, 48) as u64;
        if (b.len() - HEADER_BYTES) as u64 != body_len {
            return Err(bad(
                HEADER_BYTES as u64,
                format!(
                    "body is {} bytes, header says {body_len} (truncated or extended file)",
                    b.len() - HEADER_BYTES
                ),
            ));
        }
        if crc32c::crc32c(&b[HEADER_BYTES..]) != be_u32(b, 56) {
            return Err(bad(HEADER_BYTES as u64, "body checksum mismatch".into()));
        }
        if advise_willneed(&map).is_err() {
            tracing::debug!("madvise(WILLNEED) on {} failed", path.display());
        }
        Ok(Snapshot {
            path: path.to_path_buf(),
            zxid: be_i64(b, 16),
            node_count: be_i64(b, 24) as u64,
            session_count: be_i64(b, 32) as u64,
            acl_count: be_i64(b, 40) as u64,
            map: Arc::new(map),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole mapped file; node ranges index into it.
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    pub fn node_count(&self) -> u64 {
        self.node_count
    }

    fn bad(&self, offset: usize, reason: &str) -> SnapshotError {
        SnapshotError::Bad {
            path: self.path.clone(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }

    /// Walks the body. The checksum already passed, so a structural error here means a
    /// writer bug or a crafted file; it is still reported, never trusted.
    pub fn read(
        &self,
        mut acl_list: impl FnMut(&[u8]) -> Result<(), String>,
        mut session: impl FnMut(SnapSession),
        mut node: impl FnMut(SnapNode) -> Result<(), String>,
    ) -> Result<(), SnapshotError> {
        let b = &self.map[..];
        let mut at = HEADER_BYTES;
        let need = |at: usize, n: usize| -> Result<(), SnapshotError> {
            if at.checked_add(n).is_some_and(|e| e <= b.len()) {
                Ok(())
            } else {
                Err(self.bad(at, "record runs past the end of the file"))
            }
        };
        for _ in 0..self.acl_count {
            need(at, 4)?;
            let n = be_u32(b, at) as usize;
            need(at + 4, n)?;
            acl_list(&b[at + 4..at + 4 + n]).map_err(|r| self.bad(at, &r))?;
            at += 4 + n;
        }
        for _ in 0..self.session_count {
            need(at, SESSION_BYTES)?;
            let mut passwd = [0u8; PASSWD_BYTES];
            passwd.copy_from_slice(&b[at + 12..at + SESSION_BYTES]);
            session(SnapSession {
                id: be_i64(b, at),
                timeout_ms: be_i32(b, at + 8),
                passwd,
            });
            at += SESSION_BYTES;
        }
        for _ in 0..self.node_count {
            let start = at;
            need(at, 4)?;
            let plen = be_u32(b, at) as usize;
            need(at + 4, plen + 4)?;
            let path = at + 4..at + 4 + plen;
            at += 4 + plen;
            let dlen = be_i32(b, at);
            at += 4;
            let data = if dlen < 0 {
                None
            } else {
                need(at, dlen as usize)?;
                let r = at..at + dlen as usize;
                at += dlen as usize;
                Some(r)
            };
            need(at, NODE_FIXED_BYTES)?;
            let f = at;
            let stat = SnapStat {
                czxid: be_i64(b, f + 4),
                mzxid: be_i64(b, f + 12),
                ctime: be_i64(b, f + 20),
                mtime: be_i64(b, f + 28),
                version: be_i32(b, f + 36),
                cversion: be_i32(b, f + 40),
                aversion: be_i32(b, f + 44),
                ephemeral_owner: be_i64(b, f + 48),
                pzxid: be_i64(b, f + 56),
            };
            let acl = be_u32(b, f);
            at += NODE_FIXED_BYTES;
            node(SnapNode {
                path,
                data,
                acl,
                stat,
            })
            .map_err(|r| self.bad(start, &r))?;
        }
        if at != b.len() {
            return Err(self.bad(at, "bytes after the last node"));
        }
        Ok(())
    }
}

fn advise_willneed(map: &Mmap) -> io::Result<()> {
    map.advise(memmap2::Advice::WillNeed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_sample(dir: &Path) -> PathBuf {
        let mut w = SnapshotWriter::create(dir, 42).unwrap();
        w.acl_list(b"acl-0").unwrap();
        w.session(&SnapSession {
            id: 7,
            timeout_ms: 3000,
            passwd: [1; 16],
        })
        .unwrap();
        let st = SnapStat {
            czxid: 3,
            version: 2,
            ..Default::default()
        };
        w.node("/", Some(b""), 0, &SnapStat::default()).unwrap();
        w.node("/a", Some(b"hello"), 0, &st).unwrap();
        w.node("/b", None, 0, &st).unwrap();
        w.finish(|| true).unwrap().unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rk-snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trips_in_place() {
        let d = temp_dir("rt");
        let p = write_sample(&d);
        assert_eq!(p.file_name().unwrap(), "snapshot.000000000000002a");
        let s = Snapshot::open(&p).unwrap();
        assert_eq!((s.zxid, s.node_count()), (42, 3));
        let (mut acls, mut sessions, mut nodes) = (vec![], vec![], vec![]);
        s.read(
            |a| {
                acls.push(a.to_vec());
                Ok(())
            },
            |x| sessions.push(x),
            |n| {
                nodes.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(acls, vec![b"acl-0".to_vec()]);
        assert_eq!(sessions[0].timeout_ms, 3000);
        let m = &s.map()[..];
        assert_eq!(&m[nodes[1].path.clone()], b"/a");
        assert_eq!(&m[nodes[1].data.clone().unwrap()], b"hello");
        assert_eq!(nodes[2].data, None);
        assert_eq!(nodes[1].stat.version, 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damage_is_reported_with_file_and_offset() {
        let d = temp_dir("bad");
        let p = write_sample(&d);
        let good = std::fs::read(&p).unwrap();
        for (what, bytes) in [
            ("truncated", good[..good.len() - 3].to_vec()),
            ("flipped", {
                let mut b = good.clone();
                b[HEADER_BYTES + 10] ^= 4;
                b
            }),
            ("header", {
                let mut b = good.clone();
                b[20] ^= 1;
                b
            }),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let e = Snapshot::open(&p).err().expect(what).to_string();
            assert!(e.contains("snapshot.000000000000002a"), "{what}: {e}");
            assert!(e.contains("offset"), "{what}: {e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_snapshot_whose_txns_never_became_durable_is_not_published() {
        let d = temp_dir("nd");
        let w = SnapshotWriter::create(&d, 9).unwrap();
        assert_eq!(w.finish(|| false).unwrap(), None);
        assert!(std::fs::read_dir(&d).unwrap().next().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
