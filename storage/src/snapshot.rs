//! Snapshots: a whole tree version at one zxid, with the session table, in a format
//! that is memory-mapped and read in place — a restart looks nodes up in the map
//! instead of rebuilding an index, so it costs the same however large the tree is.
//!
//! ```text
//! header (128 bytes): magic "RKSNAPSH" | version u32 (2) | 0 u32 | zxid i64 | nodes u64
//!     | sessions u64 | acl lists u64 | specials u64 | acl bytes u64 | heap bytes u64
//!     | data size u64 | crc32c of sessions, table, children, heap, specials, acls
//!     (6 x u32) | 20 zero bytes | header crc32c u32 (over the 124 bytes before it)
//! sessions: id i64 | timeout ms i32 | password 16 bytes
//! table:    one 96-byte record per node, sorted by path (bytewise): path offset u64
//!           | path len u32 | data len i32 (-1 = null) | data offset u64
//!           | acl list index u32 | first child u32 | child count u32
//!           | czxid mzxid ctime mtime i64 | version cversion aversion i32
//!           | ephemeral owner i64 | pzxid i64
//! children: (nodes - 1) u32 table indices; each node's children are the run
//!           [first child, first child + child count), sorted by name
//! heap:     paths and data, which the table's offsets point into
//! specials: indices (u32, ascending) of the nodes whose ephemeral owner is not 0
//! acls:     the ACL lists nodes name by index (len u32 | bytes, opaque here)
//! ```
//!
//! Looking a path up is one binary search of the table; listing a node's children is
//! reading its run. The table is in path order because that is the order a tree's
//! nodes are iterated in, so a snapshot is written in one pass without looking any
//! node up. The specials let the ephemeral, container and TTL indices be rebuilt
//! without reading every node. All integers big-endian. `data size` is the sum of
//! every path's and data's length (mntr's approximate data size).
//!
//! Opening checks the header, every section's checksum and the table's structure:
//! offsets inside the heap, paths in order, child runs tiling the children section,
//! every child its parent's path plus one name, names in order along a run. So the
//! accessors never read out of bounds, a lookup finds every node, and walks down the
//! tree (by run or by name) end.
//! A snapshot is written to `snapshot.<zxid>.tmp`, fsynced, renamed to
//! `snapshot.<zxid, 16 hex digits>` and the directory fsynced.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use thiserror::Error;

use crate::fsutil::{fsync_dir, list_zxid_files, parse_zxid_name, zxid_name};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RKSNAPSH";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
const HEADER_BYTES: usize = 128;
/// The header bytes its checksum covers.
const HEADER_CRC_AT: usize = 124;
pub const SNAPSHOT_PREFIX: &str = "snapshot.";
pub const PASSWD_BYTES: usize = 16;
const SESSION_BYTES: usize = 8 + 4 + PASSWD_BYTES;
pub const NODE_RECORD_BYTES: usize = 96;
/// Node indices are u32 in the table.
pub const SNAPSHOT_NODES_MAX: u64 = u32::MAX as u64;
const WRITE_BUFFER_BYTES: usize = 1 << 20;

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

/// One node to write, in path order (see the module doc).
#[derive(Debug, Clone)]
pub struct NodeRecord<'a> {
    pub path: &'a str,
    pub data: Option<&'a [u8]>,
    pub acl: u32,
    pub child_count: u32,
    pub stat: SnapStat,
}

/// One node as read from a map: `path` and `data` index into [`Snapshot::map`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapNode {
    pub path: Range<usize>,
    pub data: Option<Range<usize>>,
    pub acl: u32,
    pub child_count: u32,
    pub stat: SnapStat,
}

/// A section written at its own offset of the file, buffered, with its checksum.
struct SectionWriter {
    file: File,
    at: u64,
    buf: Vec<u8>,
    crc: u32,
    len: u64,
    /// Where this section's data is known to be on disk up to (see `flush`).
    settled: u64,
}

/// How far a snapshot's writeback may trail its writes (see `SectionWriter::flush`).
const WRITEBACK_LAG_BYTES: u64 = 8 << 20;

impl SectionWriter {
    fn new(file: &File, at: u64) -> io::Result<SectionWriter> {
        Ok(SectionWriter {
            file: file.try_clone()?,
            at,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            crc: 0,
            len: 0,
            settled: at,
        })
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.len += b.len() as u64;
        self.buf.extend_from_slice(b);
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffer out; the checksum is taken here, over the whole buffer (per
    /// `put` it cost ~10% of writing a snapshot: a hundred bytes at a time is the
    /// slow path of crc32c).
    ///
    /// Each buffer's writeback starts as soon as it is written, and the writer waits for
    /// what it wrote `WRITEBACK_LAG_BYTES` before: the snapshot reaches the disk as it
    /// is made. Left to the final fsync (or to the kernel's own writeback), hundreds of
    /// megabytes would land on the disk at once, and the txn log's synchronous writes
    /// would queue behind them (a 90/10 load with a snapshot every 5,000 txns had a
    /// p99 of ~110 ms that way, ~11 ms without snapshots). Durability is still the
    /// fsync in `finish`; this only paces the disk.
    fn flush(&mut self) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.file.write_all_at(&self.buf, self.at)?;
        self.writeback(self.at, self.buf.len() as u64, libc::SYNC_FILE_RANGE_WRITE)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        if self.at - self.settled > WRITEBACK_LAG_BYTES {
            let upto = self.at - WRITEBACK_LAG_BYTES;
            self.writeback(
                self.settled,
                upto - self.settled,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )?;
            self.settled = upto;
        }
        Ok(())
    }

    /// `sync_file_range` over `len` bytes from `at`. Its error must not be dropped:
    /// waiting on writeback consumes a write error for this open file, so the fsync
    /// that publishes the snapshot would not see it again.
    fn writeback(&self, at: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range on an fd we own, over a range of the file.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                at as libc::off64_t,
                len as libc::off64_t,
                flags,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, reason)
}

/// Where a parent's children go in the children section, and how many are placed.
struct Run {
    next: u32,
    end: u32,
}

/// Streams a snapshot to its temp file; [`SnapshotWriter::finish`] makes it durable
/// and visible. The sessions are given up front, the nodes one by one in path order
/// (each after its parent, which announced its child count), and each ACL list once,
/// before the first node that names it.
pub struct SnapshotWriter {
    dir: PathBuf,
    zxid: i64,
    tmp: PathBuf,
    file: File,
    node_count: u64,
    session_count: u64,
    sessions_crc: u32,
    table: SectionWriter,
    heap: SectionWriter,
    children_at: u64,
    children: Vec<u32>,
    /// Runs of the parents written so far, and their index by path.
    runs: Vec<Run>,
    run_of: HashMap<String, u32>,
    /// The parent of the last node written and its run (siblings come in a row).
    last_parent: Option<(String, u32)>,
    /// Slots of the children section handed out to runs so far.
    runs_end: u32,
    last_path: String,
    specials: Vec<u32>,
    acls: Vec<u8>,
    acl_count: u32,
    written: u64,
    data_size: u64,
}

impl SnapshotWriter {
    /// Starts `snapshot.<zxid>.tmp` in `dir` for exactly `node_count` nodes.
    pub fn create(
        dir: &Path,
        zxid: i64,
        sessions: &[SnapSession],
        node_count: u64,
    ) -> io::Result<SnapshotWriter> {
        if node_count == 0 || node_count > SNAPSHOT_NODES_MAX {
            return Err(invalid(format!(
                "a snapshot holds 1 to {SNAPSHOT_NODES_MAX} nodes, not {node_count}"
            )));
        }
        let tmp = dir.join(format!(
            "{}{}",
            snapshot_name(zxid),
            crate::segment::TMP_SUFFIX
        ));
        let file = File::create(&tmp)?;
        let mut enc = Vec::with_capacity(sessions.len() * SESSION_BYTES);
        for s in sessions {
            enc.extend_from_slice(&s.id.to_be_bytes());
            enc.extend_from_slice(&s.timeout_ms.to_be_bytes());
            enc.extend_from_slice(&s.passwd);
        }
        file.write_all_at(&enc, HEADER_BYTES as u64)?;
        let table_at = (HEADER_BYTES + enc.len()) as u64;
        let children_at = table_at + node_count * NODE_RECORD_BYTES as u64;
        let heap_at = children_at + (node_count - 1) * 4;
        Ok(SnapshotWriter {
            dir: dir.to_path_buf(),
            zxid,
            tmp,
            table: SectionWriter::new(&file, table_at)?,
            heap: SectionWriter::new(&file, heap_at)?,
            file,
            node_count,
            session_count: sessions.len() as u64,
            sessions_crc: crc32c::crc32c(&enc),
            children_at,
            children: vec![0; (node_count - 1) as usize],
            runs: Vec::new(),
            run_of: HashMap::new(),
            last_parent: None,
            runs_end: 0,
            last_path: String::new(),
            specials: Vec::new(),
            acls: Vec::new(),
            acl_count: 0,
            written: 0,
            data_size: 0,
        })
    }

    /// Adds an encoded ACL list; nodes name it by the index returned.
    pub fn acl_list(&mut self, encoded: &[u8]) -> u32 {
        self.acls
            .extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        self.acls.extend_from_slice(encoded);
        self.acl_count += 1;
        self.acl_count - 1
    }

    /// Appends the next node: its path after the last one's, its parent written
    /// before it with room left for one more child.
    pub fn node(&mut self, n: &NodeRecord) -> io::Result<()> {
        let index = self.written;
        if index >= self.node_count {
            return Err(invalid(format!(
                "more than the {} nodes the snapshot was created for",
                self.node_count
            )));
        }
        if n.acl >= self.acl_count {
            return Err(invalid(format!("{} names an ACL list not added", n.path)));
        }
        if index == 0 {
            if n.path != "/" {
                return Err(invalid(format!("the first node is {}, not /", n.path)));
            }
        } else {
            if n.path.as_bytes() <= self.last_path.as_bytes() {
                return Err(invalid(format!(
                    "{} comes after {}: nodes must be in path order",
                    n.path, self.last_path
                )));
            }
            let cut = n.path.rfind('/').unwrap_or(0);
            let parent = if cut == 0 { "/" } else { &n.path[..cut] };
            let k = match &self.last_parent {
                Some((p, k)) if p == parent => Some(*k),
                _ => self.run_of.get(parent).copied(),
            };
            if let Some(k) = k {
                if self.last_parent.as_ref().is_none_or(|(p, _)| p != parent) {
                    self.last_parent = Some((parent.to_string(), k));
                }
            }
            let run = k
                .map(|k| &mut self.runs[k as usize])
                .filter(|r| r.next < r.end)
                .ok_or_else(|| {
                    invalid(format!(
                        "{}: its parent was not written before it, or announced fewer children",
                        n.path
                    ))
                })?;
            self.children[run.next as usize] = index as u32;
            run.next += 1;
        }
        let first_child = self.runs_end;
        if n.child_count > 0 {
            let end = u64::from(first_child) + u64::from(n.child_count);
            if end > self.node_count - 1 {
                return Err(invalid(format!(
                    "{} announces more children than there are nodes",
                    n.path
                )));
            }
            self.runs_end = end as u32;
            self.run_of
                .insert(n.path.to_string(), self.runs.len() as u32);
            self.runs.push(Run {
                next: first_child,
                end: self.runs_end,
            });
        }
        let data_len = match n.data {
            None => -1,
            Some(d) => i32::try_from(d.len())
                .map_err(|_| invalid(format!("{}: node data over 2 GiB", n.path)))?,
        };
        let path_at = self.heap.len;
        self.heap.put(n.path.as_bytes())?;
        let data_at = self.heap.len;
        if let Some(d) = n.data {
            self.heap.put(d)?;
        }
        self.data_size += (n.path.len() + n.data.map_or(0, <[u8]>::len)) as u64;
        let st = &n.stat;
        let mut b = [0u8; NODE_RECORD_BYTES];
        let mut w = &mut b[..];
        w.write_all(&path_at.to_be_bytes())?;
        w.write_all(&(n.path.len() as u32).to_be_bytes())?;
        w.write_all(&data_len.to_be_bytes())?;
        w.write_all(&data_at.to_be_bytes())?;
        w.write_all(&n.acl.to_be_bytes())?;
        w.write_all(&first_child.to_be_bytes())?;
        w.write_all(&n.child_count.to_be_bytes())?;
        for v in [st.czxid, st.mzxid, st.ctime, st.mtime] {
            w.write_all(&v.to_be_bytes())?;
        }
        for v in [st.version, st.cversion, st.aversion] {
            w.write_all(&v.to_be_bytes())?;
        }
        w.write_all(&st.ephemeral_owner.to_be_bytes())?;
        w.write_all(&st.pzxid.to_be_bytes())?;
        debug_assert!(w.is_empty());
        self.table.put(&b)?;
        if st.ephemeral_owner != 0 {
            self.specials.push(index as u32);
        }
        self.last_path.clear();
        self.last_path.push_str(n.path);
        self.written += 1;
        Ok(())
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
        if self.written != self.node_count {
            return Err(invalid(format!(
                "snapshot writer got {} of the {} nodes it was created for",
                self.written, self.node_count
            )));
        }
        let short = |k: &u32| self.runs[*k as usize].next < self.runs[*k as usize].end;
        if let Some((p, _)) = self.run_of.iter().find(|(_, k)| short(k)) {
            return Err(invalid(format!(
                "{p} announced more children than followed"
            )));
        }
        self.table.flush()?;
        self.heap.flush()?;
        let children: Vec<u8> = self.children.iter().flat_map(|i| i.to_be_bytes()).collect();
        self.file.write_all_at(&children, self.children_at)?;
        let specials: Vec<u8> = self.specials.iter().flat_map(|i| i.to_be_bytes()).collect();
        self.file.write_all_at(&specials, self.heap.at)?;
        self.file
            .write_all_at(&self.acls, self.heap.at + specials.len() as u64)?;
        let mut h = [0u8; HEADER_BYTES];
        h[..8].copy_from_slice(&SNAPSHOT_MAGIC);
        h[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        h[16..24].copy_from_slice(&self.zxid.to_be_bytes());
        let words = [
            self.node_count,
            self.session_count,
            u64::from(self.acl_count),
            self.specials.len() as u64,
            self.acls.len() as u64,
            self.heap.len,
            self.data_size,
        ];
        for (i, v) in words.iter().enumerate() {
            h[24 + 8 * i..32 + 8 * i].copy_from_slice(&v.to_be_bytes());
        }
        let crcs = [
            self.sessions_crc,
            self.table.crc,
            crc32c::crc32c(&children),
            self.heap.crc,
            crc32c::crc32c(&specials),
            crc32c::crc32c(&self.acls),
        ];
        for (i, c) in crcs.iter().enumerate() {
            h[80 + 4 * i..84 + 4 * i].copy_from_slice(&c.to_be_bytes());
        }
        let hcrc = crc32c::crc32c(&h[..HEADER_CRC_AT]);
        h[HEADER_CRC_AT..].copy_from_slice(&hcrc.to_be_bytes());
        self.file.write_all_at(&h, 0)?;
        self.file.sync_all()?;
        drop(self.file);
        drop(self.table);
        drop(self.heap);
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

/// What a snapshot's header says: its counts and where each section starts and ends
/// (sessions, table, children, heap, specials, ACL lists).
#[derive(Clone, Copy)]
struct Layout {
    zxid: i64,
    nodes: u64,
    acls: u64,
    data_size: u64,
    starts: [usize; 6],
    ends: [usize; 6],
}

/// A validated, memory-mapped snapshot.
pub struct Snapshot {
    path: PathBuf,
    map: Arc<Mmap>,
    pub zxid: i64,
    node_count: u32,
    data_size: u64,
    acl_lists: Vec<Range<usize>>,
    sessions: Vec<SnapSession>,
    table_at: usize,
    children_at: usize,
    heap_at: usize,
    specials: Range<usize>,
}

/// What [`Snapshot::check_part`] found in its part: the checksums of its table rows,
/// child entries and heap bytes; where the next record's child run must start, or
/// the first bad record; the first bad child entry.
struct PartCheck {
    crcs: [u32; 3],
    records: Result<u64, SnapshotError>,
    runs: Result<(), SnapshotError>,
}

/// The record checks, continued chunk by chunk: offsets inside the heap, a known ACL
/// list, child runs tiling the children section in table order, paths UTF-8 and
/// increasing. (That every child comes after its parent, so a walk down the tree
/// ends, is [`RunCheck`]'s, entry by entry.)
struct RecordCheck<'a> {
    snap: &'a Snapshot,
    next_run: u64,
    prev_path: &'a [u8],
    result: Result<(), SnapshotError>,
}

impl<'a> RecordCheck<'a> {
    /// Continuing from the record before `first` as a pass over the whole table
    /// would (where that record is bad, the part before reports it).
    fn new(snap: &'a Snapshot, first: u32) -> Self {
        let (next_run, prev_path) = match first.checked_sub(1) {
            None => (0, &[][..]),
            Some(p) => {
                let r = snap.record(p);
                (
                    u64::from(be_u32(r, 28)) + u64::from(be_u32(r, 32)),
                    snap.checked_path(p).unwrap_or_default(),
                )
            }
        };
        RecordCheck {
            snap,
            next_run,
            prev_path,
            result: Ok(()),
        }
    }

    fn check(&mut self, records: Range<u32>) {
        if self.result.is_ok() {
            self.result = records.into_iter().try_for_each(|i| self.record(i));
        }
    }

    fn record(&mut self, i: u32) -> Result<(), SnapshotError> {
        let s = self.snap;
        let b = &s.map[..];
        let n = s.node_count;
        let heap_len = (s.specials.start - s.heap_at) as u64;
        let r = s.table_at + i as usize * NODE_RECORD_BYTES;
        let bad = |what: &str| s.bad(r, &format!("node record {i}: {what}"));
        let (path_at, path_len) = (be_u64(b, r), u64::from(be_u32(b, r + 8)));
        let (data_len, data_at) = (be_i32(b, r + 12), be_u64(b, r + 16));
        if path_at.checked_add(path_len).is_none_or(|e| e > heap_len) || path_len == 0 {
            return Err(bad("path outside the heap"));
        }
        if data_len < -1
            || data_at
                .checked_add(data_len.max(0) as u64)
                .is_none_or(|e| e > heap_len)
        {
            return Err(bad("data outside the heap"));
        }
        if be_u32(b, r + 24) as usize >= s.acl_lists.len() {
            return Err(bad("unknown ACL list"));
        }
        let (first, count) = (u64::from(be_u32(b, r + 28)), u64::from(be_u32(b, r + 32)));
        // A leaf's run is the empty one where the next run starts.
        if first != self.next_run {
            return Err(bad("child run out of place"));
        }
        if count > 0 {
            self.next_run += count;
            if self.next_run > u64::from(n - 1) {
                return Err(bad("child run past the children section"));
            }
        }
        let at = s.heap_at + path_at as usize;
        let path = &s.map[at..at + path_len as usize];
        if !path.is_ascii() && std::str::from_utf8(path).is_err() {
            return Err(bad("path is not UTF-8"));
        }
        if i > 0 && path <= self.prev_path {
            return Err(bad("paths out of order"));
        }
        self.prev_path = path;
        Ok(())
    }
}

/// The child-entry checks, continued chunk by chunk: every child is its parent's path,
/// '/' and a name, the names increasing along a run. With the record checks, the runs
/// are then the tree the paths describe (each node in one run), and walking down by
/// name or by run finds the same nodes and ends. Siblings share their path up to the
/// name and the table is in path order, so names increase along a run exactly when
/// the indices do.
struct RunCheck<'a> {
    snap: &'a Snapshot,
    /// The node whose run holds the next entry, and where that run ends.
    owner: u32,
    owner_end: u64,
    /// The child before the next entry in the same run.
    prev: Option<u32>,
    result: Result<(), SnapshotError>,
}

impl<'a> RunCheck<'a> {
    fn new(snap: &'a Snapshot, entry: u32) -> Self {
        // Run ends grow with the node index (where the records are sound): the owner
        // of an entry is the first node whose run ends after it.
        let (mut lo, mut hi) = (0, snap.node_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if snap.run_end(mid) > u64::from(entry) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let mut check = RunCheck {
            snap,
            owner: lo,
            owner_end: 0,
            prev: None,
            result: Ok(()),
        };
        if lo < snap.node_count {
            check.owner_end = snap.run_end(lo);
            let first = u64::from(be_u32(snap.record(lo), 28));
            if u64::from(entry) > first {
                check.prev = Some(snap.entry(entry - 1));
            }
        }
        check
    }

    fn check(&mut self, entries: Range<u32>) {
        if self.result.is_ok() {
            self.result = entries.into_iter().try_for_each(|k| self.entry(k));
        }
    }

    fn entry(&mut self, k: u32) -> Result<(), SnapshotError> {
        let s = self.snap;
        let n = s.node_count;
        while self.owner < n && self.owner_end <= u64::from(k) {
            self.owner += 1;
            self.prev = None;
            if self.owner < n {
                self.owner_end = s.run_end(self.owner);
            }
        }
        let (i, c) = (self.owner, s.entry(k));
        let bad = |at: usize| {
            s.bad(
                at,
                &format!("node record {c}: not the next child of node {i}"),
            )
        };
        if i >= n || c >= n || c <= i || self.prev.is_some_and(|q| q >= c) {
            return Err(bad(s.children_at + 4 * k as usize));
        }
        self.prev = Some(c);
        let (Some(parent), Some(p)) = (s.checked_path(i), s.checked_path(c)) else {
            return Ok(()); // a bad record: the record checks report it
        };
        // The root's children are "/" and a name; anyone else's, its path, "/" and a name.
        let prefix = if i == 0 { 0 } else { parent.len() };
        let name = p.get(prefix + 1..).unwrap_or_default();
        if p.get(..prefix) != parent.get(..prefix)
            || p.get(prefix) != Some(&b'/')
            || name.is_empty()
            || name.contains(&b'/')
        {
            return Err(bad(s.table_at + c as usize * NODE_RECORD_BYTES));
        }
        Ok(())
    }
}

/// `a` on a second thread while `b` runs on this one (both here when no thread can be
/// started): the checks at open are what opening costs.
fn in_parallel<A: Send, B>(a: impl Fn() -> A + Sync, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("rk-snap-check".into())
            .spawn_scoped(scope, &a);
        let from_b = b();
        let from_a = match helper {
            Ok(h) => h.join().expect("the check thread does not panic"),
            Err(_) => a(),
        };
        (from_a, from_b)
    })
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    be_u32(b, at) as i32
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    be_u64(b, at) as i64
}

impl Snapshot {
    /// Maps `path` and checks its header, its checksums and its table's structure.
    pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
        let io_err = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(io_err)?;
        // SAFETY: snapshots are immutable once renamed into place; nothing writes them.
        let map = unsafe { Mmap::map(&f) }.map_err(io_err)?;
        if map.advise(memmap2::Advice::WillNeed).is_err() {
            tracing::debug!("madvise(WILLNEED) on {} failed", path.display());
        }
        Snapshot::validate(path.to_path_buf(), Arc::new(map))
    }

    fn validate(path: PathBuf, map: Arc<Mmap>) -> Result<Snapshot, SnapshotError> {
        let bad = |offset: usize, reason: String| SnapshotError::Bad {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        let b = &map[..];
        if b.len() < HEADER_BYTES {
            return Err(bad(
                0,
                format!("shorter than the {HEADER_BYTES}-byte header (truncated file)"),
            ));
        }
        if b[..8] != SNAPSHOT_MAGIC {
            return Err(bad(0, "not a ringkeeper snapshot (bad magic)".into()));
        }
        let version = be_u32(b, 8);
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(bad(
                8,
                format!(
                    "format version {version} is not supported (this build reads {SNAPSHOT_FORMAT_VERSION})"
                ),
            ));
        }
        if be_u32(b, HEADER_CRC_AT) != crc32c::crc32c(&b[..HEADER_CRC_AT]) {
            return Err(bad(0, "header checksum mismatch".into()));
        }
        let zxid = be_i64(b, 16);
        let [nodes, _, acls, specials, acl_len, _, data_size] =
            std::array::from_fn(|i| be_u64(b, 24 + 8 * i));
        let crcs: [u32; 6] = std::array::from_fn(|i| be_u32(b, 80 + 4 * i));
        if nodes == 0 || nodes > SNAPSHOT_NODES_MAX || specials > nodes || acls > acl_len {
            return Err(bad(
                24,
                format!("{nodes} nodes, {specials} specials, {acls} ACL lists in {acl_len} bytes"),
            ));
        }
        // Section offsets, checked against the file's length before any is read.
        let ends = section_ends(b);
        let described = ends.map(|e| e[5]);
        if described != Some(b.len() as u64) {
            return Err(bad(
                HEADER_BYTES,
                format!(
                    "file is {} bytes, its header describes {} (truncated or extended file)",
                    b.len(),
                    described.map_or("more than 2^64".to_string(), |e| e.to_string())
                ),
            ));
        }
        let ends = ends.expect("checked").map(|e| e as usize);
        let starts = [HEADER_BYTES, ends[0], ends[1], ends[2], ends[3], ends[4]];
        let names = [
            "sessions",
            "node table",
            "children",
            "heap",
            "specials",
            "ACL lists",
        ];
        // The small sections first: reading them is part of checking the rest.
        for k in [0, 4, 5] {
            if crc32c::crc32c(&b[starts[k]..ends[k]]) != crcs[k] {
                return Err(bad(starts[k], format!("{} checksum mismatch", names[k])));
            }
        }
        let layout = Layout {
            zxid,
            nodes,
            acls,
            data_size,
            starts,
            ends,
        };
        let snap = Snapshot::read_sections(&path, &map, &layout)?;
        // The table, the child entries and the heap are nearly all of a snapshot and
        // all that opening costs. One pass, its two halves on two threads, checks and
        // checksums each piece while it is in cache (three passes, one per check, made
        // opening a 5M-node snapshot memory-bound at about three times the file's size).
        let n = snap.node_count;
        let m = n / 2;
        let heap_len = ends[3] - starts[3];
        let heap_split = if m < n {
            (be_u64(snap.record(m), 0) as usize).min(heap_len)
        } else {
            heap_len
        };
        let (lower, upper) = in_parallel(
            || snap.check_part(0..m, 0..heap_split),
            || snap.check_part(m..n, heap_split..heap_len),
        );
        let combined = [
            (
                lower.crcs[0],
                upper.crcs[0],
                (n - m) as usize * NODE_RECORD_BYTES,
            ),
            (
                lower.crcs[1],
                upper.crcs[1],
                4 * (n - 1 - m.saturating_sub(1)) as usize,
            ),
            (lower.crcs[2], upper.crcs[2], heap_len - heap_split),
        ];
        for (k, (l, u, upper_len)) in (1..4).zip(combined) {
            if crc32c::crc32c_combine(l, u, upper_len) != crcs[k] {
                return Err(bad(starts[k], format!("{} checksum mismatch", names[k])));
            }
        }
        // Then the first bad record, as a single pass would find it.
        lower.records?;
        if upper.records? != u64::from(n - 1) {
            return Err(snap.bad(
                snap.children_at,
                "child runs do not cover the children section",
            ));
        }
        if snap.path_bytes(0) != b"/" {
            return Err(snap.bad(snap.table_at, "the first node is not the root"));
        }
        let mut last = None;
        for (k, i) in snap.specials().enumerate() {
            if i >= n || last.is_some_and(|l| l >= i) {
                return Err(snap.bad(
                    snap.specials.start + 4 * k,
                    "special node indices out of order",
                ));
            }
            last = Some(i);
        }
        lower.runs?;
        upper.runs?;
        Ok(snap)
    }

    /// Parses the sessions and ACL lists, once their checksums held.
    fn read_sections(
        path: &Path,
        map: &Arc<Mmap>,
        layout: &Layout,
    ) -> Result<Snapshot, SnapshotError> {
        let Layout {
            zxid,
            nodes,
            acls,
            data_size,
            starts,
            ends,
        } = *layout;
        let b = &map[..];
        let bad = |offset: usize, reason: String| SnapshotError::Bad {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        let session_list = b[starts[0]..ends[0]]
            .chunks_exact(SESSION_BYTES)
            .map(|s| SnapSession {
                id: be_i64(s, 0),
                timeout_ms: be_i32(s, 8),
                passwd: s[12..].try_into().expect("16 bytes"),
            })
            .collect();
        // The ACL lists fill their section exactly.
        let mut at = starts[5];
        let mut acl_lists = Vec::with_capacity(acls as usize);
        for _ in 0..acls {
            let n = (at + 4 <= b.len())
                .then(|| be_u32(b, at) as usize)
                .filter(|n| at + 4 + n <= b.len())
                .ok_or_else(|| bad(at, "ACL list runs past the end of the file".into()))?;
            acl_lists.push(at + 4..at + 4 + n);
            at += 4 + n;
        }
        if at != b.len() {
            return Err(bad(at, "bytes after the last ACL list".into()));
        }
        let snap = Snapshot {
            path: path.to_path_buf(),
            zxid,
            node_count: nodes as u32,
            data_size,
            acl_lists,
            sessions: session_list,
            table_at: starts[1],
            children_at: starts[2],
            heap_at: starts[3],
            specials: starts[4]..ends[4],
            map: map.clone(),
        };
        Ok(snap)
    }

    /// Checks and checksums records `records` of the table, the child entries beside
    /// them (entry k with record k + 1; they line up exactly when the tree is one path
    /// deep, and the pass is right whatever the shape) and the heap bytes `heap`, a
    /// chunk at a time. The two parts run at once, so neither may rely on what the
    /// other checks: every read here is bounds-checked, and a record whose fields are
    /// bad is skipped by the child checks (the record checks report it, and their
    /// errors come first).
    fn check_part(&self, records: Range<u32>, heap: Range<usize>) -> PartCheck {
        const CHUNK: u32 = 1024;
        let b = &self.map[..];
        let n = self.node_count;
        let entries = records.start.saturating_sub(1)..records.end.saturating_sub(1);
        let mut table = RecordCheck::new(self, records.start);
        let mut runs = RunCheck::new(self, entries.start);
        let mut crcs = [0u32; 3];
        let mut heap_at = heap.start;
        let mut at = records.start;
        while at < records.end {
            let end = (at + CHUNK).min(records.end);
            let rows = self.table_at + at as usize * NODE_RECORD_BYTES
                ..self.table_at + end as usize * NODE_RECORD_BYTES;
            // The heap up to where the next record's path starts (where the writer put
            // this chunk's paths and data), checksummed first: the checks below then
            // find the paths in cache.
            let next = if end < n {
                be_u64(self.record(end), 0) as usize
            } else {
                heap.end
            };
            let to = next.clamp(heap_at, heap.end);
            let base = self.heap_at;
            crcs[2] = crc32c::crc32c_append(crcs[2], &b[base + heap_at..base + to]);
            crcs[0] = crc32c::crc32c_append(crcs[0], &b[rows]);
            table.check(at..end);
            let (ka, kb) = (at.saturating_sub(1).max(entries.start), end - 1);
            let (ka, kb) = (ka.min(entries.end), kb.min(entries.end));
            let cells = self.children_at + 4 * ka as usize..self.children_at + 4 * kb as usize;
            crcs[1] = crc32c::crc32c_append(crcs[1], &b[cells]);
            runs.check(ka..kb);
            heap_at = to;
            at = end;
        }
        let base = self.heap_at;
        crcs[2] = crc32c::crc32c_append(crcs[2], &b[base + heap_at..base + heap.end]);
        PartCheck {
            crcs,
            records: table.result.map(|()| table.next_run),
            runs: runs.result,
        }
    }

    /// Node `i`'s path, if its record keeps it inside the heap.
    fn checked_path(&self, i: u32) -> Option<&[u8]> {
        let r = self.record(i);
        let (at, len) = (be_u64(r, 0), u64::from(be_u32(r, 8)));
        let end = at.checked_add(len)?;
        (end <= (self.specials.start - self.heap_at) as u64)
            .then(|| &self.map[self.heap_at + at as usize..self.heap_at + end as usize])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole mapped file; node ranges index into it.
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    pub fn node_count(&self) -> u32 {
        self.node_count
    }

    /// The sum of every node's path and data length.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    pub fn sessions(&self) -> &[SnapSession] {
        &self.sessions
    }

    /// The encoded ACL lists, which nodes name by index.
    pub fn acl_lists(&self) -> impl Iterator<Item = &[u8]> {
        self.acl_lists.iter().map(|r| &self.map[r.clone()])
    }

    /// Indices of the nodes whose ephemeral owner is not 0, ascending.
    pub fn specials(&self) -> impl Iterator<Item = u32> + '_ {
        self.map[self.specials.clone()]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
    }

    /// Where node `i`'s child run ends (unchecked fields, so computed wide).
    fn run_end(&self, i: u32) -> u64 {
        let r = self.record(i);
        u64::from(be_u32(r, 28)) + u64::from(be_u32(r, 32))
    }

    /// Entry `k` of the children section.
    fn entry(&self, k: u32) -> u32 {
        be_u32(&self.map, self.children_at + 4 * k as usize)
    }

    fn record(&self, i: u32) -> &[u8] {
        let at = self.table_at + i as usize * NODE_RECORD_BYTES;
        &self.map[at..at + NODE_RECORD_BYTES]
    }

    /// Node `i`'s path (UTF-8, checked at open).
    ///
    /// # Panics
    /// If `i` is not below [`Snapshot::node_count`].
    pub fn path_bytes(&self, i: u32) -> &[u8] {
        let r = self.record(i);
        let at = self.heap_at + be_u64(r, 0) as usize;
        &self.map[at..at + be_u32(r, 8) as usize]
    }

    /// The node at `path`: a binary search of the table.
    pub fn find(&self, path: &[u8]) -> Option<u32> {
        let (mut lo, mut hi) = (0, self.node_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.path_bytes(mid).cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Node `i`'s children, sorted by name.
    pub fn child_run(&self, i: u32) -> ChildRun<'_> {
        let r = self.record(i);
        let at = self.children_at + 4 * be_u32(r, 28) as usize;
        ChildRun(&self.map[at..at + 4 * be_u32(r, 32) as usize])
    }

    /// Node `i` whole.
    pub fn node(&self, i: u32) -> SnapNode {
        let r = self.record(i);
        let path_at = self.heap_at + be_u64(r, 0) as usize;
        let data_len = be_i32(r, 12);
        let data_at = self.heap_at + be_u64(r, 16) as usize;
        SnapNode {
            path: path_at..path_at + be_u32(r, 8) as usize,
            data: (data_len >= 0).then(|| data_at..data_at + data_len as usize),
            acl: be_u32(r, 24),
            child_count: be_u32(r, 32),
            stat: SnapStat {
                czxid: be_i64(r, 36),
                mzxid: be_i64(r, 44),
                ctime: be_i64(r, 52),
                mtime: be_i64(r, 60),
                version: be_i32(r, 68),
                cversion: be_i32(r, 72),
                aversion: be_i32(r, 76),
                ephemeral_owner: be_i64(r, 80),
                pzxid: be_i64(r, 88),
            },
        }
    }

    fn bad(&self, offset: usize, reason: &str) -> SnapshotError {
        SnapshotError::Bad {
            path: self.path.clone(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}

/// A node's children: table indices, sorted by name.
#[derive(Clone, Copy)]
pub struct ChildRun<'a>(&'a [u8]);

impl<'a> ChildRun<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, k: usize) -> u32 {
        be_u32(self.0, 4 * k)
    }
}

impl<'a> Iterator for ChildRun<'a> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (first, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*first))
    }
}

/// Where each section ends (sessions, table, children, heap, specials, ACL lists), as
/// the header at the start of `b` (at least `HEADER_BYTES` long) describes them; None
/// if that overflows.
fn section_ends(b: &[u8]) -> Option<[u64; 6]> {
    let w = |i: usize| be_u64(b, 24 + 8 * i);
    let (nodes, sessions, specials, acl_len, heap_len) = (w(0), w(1), w(3), w(4), w(5));
    let lens = [
        sessions.checked_mul(SESSION_BYTES as u64)?,
        nodes.checked_mul(NODE_RECORD_BYTES as u64)?,
        nodes.checked_sub(1)?.checked_mul(4)?,
        heap_len,
        specials.checked_mul(4)?,
        acl_len,
    ];
    let mut ends = [0u64; 6];
    let mut at = HEADER_BYTES as u64;
    for (k, len) in lens.into_iter().enumerate() {
        at = at.checked_add(len)?;
        ends[k] = at;
    }
    Some(ends)
}

/// Recomputes every checksum of a snapshot image, so that damage made on purpose
/// reaches the structural checks (fuzzing and tests only; a server never writes a
/// snapshot this way). False, untouched, if the header does not describe the image.
#[doc(hidden)]
pub fn reseal(b: &mut [u8]) -> bool {
    if b.len() < HEADER_BYTES {
        return false;
    }
    let Some(ends) = section_ends(b).filter(|e| e[5] == b.len() as u64) else {
        return false;
    };
    let mut at = HEADER_BYTES;
    for (k, end) in ends.iter().enumerate() {
        let crc = crc32c::crc32c(&b[at..*end as usize]);
        b[80 + 4 * k..84 + 4 * k].copy_from_slice(&crc.to_be_bytes());
        at = *end as usize;
    }
    let crc = crc32c::crc32c(&b[..HEADER_CRC_AT]);
    b[HEADER_CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(path: &'a str, data: Option<&'a [u8]>, child_count: u32) -> NodeRecord<'a> {
        NodeRecord {
            path,
            data,
            acl: 0,
            child_count,
            stat: SnapStat {
                czxid: path.len() as i64,
                version: 2,
                ephemeral_owner: if path == "/b" { 0x55 } else { 0 },
                ..Default::default()
            },
        }
    }

    /// "/" with children "/a" and "/b", and "/a" with child "/a/x".
    fn write_sample(dir: &Path) -> PathBuf {
        let sessions = [SnapSession {
            id: 7,
            timeout_ms: 3000,
            passwd: [1; 16],
        }];
        let mut w = SnapshotWriter::create(dir, 42, &sessions, 4).unwrap();
        assert_eq!(w.acl_list(b"acl-0"), 0);
        for n in [
            rec("/", Some(b""), 2),
            rec("/a", Some(b"hello"), 1),
            rec("/a/x", Some(b"x"), 0),
            rec("/b", None, 0),
        ] {
            w.node(&n).unwrap();
        }
        w.finish(|| true).unwrap().unwrap()
    }

    /// A writer with no sessions and one ACL list, for `nodes` nodes.
    fn writer(dir: &Path, zxid: i64, nodes: u64) -> SnapshotWriter {
        let mut w = SnapshotWriter::create(dir, zxid, &[], nodes).unwrap();
        w.acl_list(b"a");
        w
    }

    fn temp_dir(name: &str) -> PathBuf {
        crate::fsutil::test_dir(&format!("snap-{name}"))
    }

    #[test]
    fn round_trips_in_place() {
        let d = temp_dir("rt");
        let p = write_sample(&d);
        assert_eq!(p.file_name().unwrap(), "snapshot.000000000000002a");
        let s = Snapshot::open(&p).unwrap();
        assert_eq!((s.zxid, s.node_count()), (42, 4));
        assert_eq!(s.acl_lists().collect::<Vec<_>>(), vec![&b"acl-0"[..]]);
        assert_eq!(s.sessions()[0].timeout_ms, 3000);
        assert_eq!(s.specials().collect::<Vec<_>>(), vec![3]);
        assert_eq!(s.data_size(), 1 + 2 + 5 + 4 + 1 + 2);
        let m = &s.map()[..];
        let a = s.node(1);
        assert_eq!(&m[a.path.clone()], b"/a");
        assert_eq!(&m[a.data.clone().unwrap()], b"hello");
        assert_eq!((a.child_count, a.stat.version, a.stat.czxid), (1, 2, 2));
        assert_eq!(s.node(3).data, None);
        assert_eq!(s.child_run(0).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(s.child_run(1).collect::<Vec<_>>(), [2]);
        assert_eq!(s.path_bytes(2), b"/a/x");
        for (p, i) in [
            ("/", Some(0)),
            ("/a/x", Some(2)),
            ("/b", Some(3)),
            ("/c", None),
            ("/a/", None),
        ] {
            assert_eq!(s.find(p.as_bytes()), i, "{p}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damage_is_reported_with_file_and_offset() {
        let d = temp_dir("bad");
        let p = write_sample(&d);
        let good = std::fs::read(&p).unwrap();
        // Sections: 128 header, 28 sessions, 4 x 96 table, 3 x 4 children, heap,
        // 4 specials, 9 ACL lists.
        let children = HEADER_BYTES + 28 + 4 * 96;
        let last = good.len() - 1;
        for (what, bytes, says) in [
            ("truncated", good[..good.len() - 3].to_vec(), "truncated"),
            (
                "extended",
                [&good[..], b"zz"].concat(),
                "truncated or extended",
            ),
            (
                "sessions",
                flip(&good, HEADER_BYTES + 2),
                "sessions checksum",
            ),
            (
                "table",
                flip(&good, HEADER_BYTES + 40),
                "node table checksum",
            ),
            ("children", flip(&good, children + 3), "children checksum"),
            ("heap", flip(&good, children + 12), "heap checksum"),
            ("specials", flip(&good, last - 10), "specials checksum"),
            ("acls", flip(&good, last), "ACL lists checksum"),
            ("header", flip(&good, 20), "header checksum"),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let e = Snapshot::open(&p).err().expect(what).to_string();
            assert!(e.contains("snapshot.000000000000002a"), "{what}: {e}");
            assert!(e.contains("offset") && e.contains(says), "{what}: {e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Damage past the checksums (a writer bug, a crafted file) is refused at open
        /// or leaves a snapshot every accessor reads without panicking, and every walk
        /// down the tree ends.
        #[test]
        fn a_damaged_table_never_panics_a_reader(
            flips in proptest::collection::vec((0usize..1000, 0u8..8), 1..6),
        ) {
            let d = temp_dir(&format!("fz-{:?}", std::thread::current().id()));
            let p = write_sample(&d);
            // The table and the children section: 4 x 96 + 3 x 4 bytes after sessions.
            let start = HEADER_BYTES + SESSION_BYTES;
            damage_and_open(&p, start..start + 4 * NODE_RECORD_BYTES + 12, &flips);
            std::fs::remove_dir_all(&d).unwrap();
        }

        /// Trees of a few thousand nodes, of any shape, span several chunks of the
        /// check at open and both of its parts: written, they open and read back; with
        /// bits flipped in the table or the child entries (checksums made to match),
        /// they are refused or read safely.
        #[test]
        fn larger_trees_open_and_damaged_ones_are_refused_or_safe(
            parents in proptest::collection::vec(0usize..1_000_000, 1..3000),
            flips in proptest::collection::vec((0usize..usize::MAX, 0u8..8), 0..4),
        ) {
            let d = temp_dir(&format!("big-{:?}", std::thread::current().id()));
            // Node k + 1 hangs under a node made before it, so shapes run from a chain
            // to a star.
            let mut paths = vec!["/".to_string()];
            for (k, p) in parents.iter().enumerate() {
                let parent = &paths[p % paths.len()];
                let sep = if parent == "/" { "" } else { "/" };
                paths.push(format!("{parent}{sep}n{k}"));
            }
            let mut children = std::collections::BTreeMap::<&str, u32>::new();
            for p in &paths[1..] {
                let parent = &p[..p.rfind('/').unwrap().max(1)];
                *children.entry(parent).or_default() += 1;
            }
            let mut sorted: Vec<&str> = paths.iter().map(String::as_str).collect();
            sorted.sort();
            let mut w = writer(&d, 9, sorted.len() as u64);
            for p in &sorted {
                let data = p.as_bytes();
                w.node(&rec(p, Some(data), children.get(p).copied().unwrap_or(0))).unwrap();
            }
            let file = w.finish(|| true).unwrap().unwrap();
            let s = Snapshot::open(&file).unwrap();
            assert_readable(&s);
            assert_eq!(s.node_count() as usize, sorted.len());
            for (i, p) in sorted.iter().enumerate() {
                assert_eq!(s.path_bytes(i as u32), p.as_bytes());
                assert_eq!(s.child_run(i as u32).len() as u32, children.get(p).copied().unwrap_or(0));
            }
            drop(s);
            if !flips.is_empty() {
                let len = sorted.len() * NODE_RECORD_BYTES + 4 * (sorted.len() - 1);
                damage_and_open(&file, HEADER_BYTES..HEADER_BYTES + len, &flips);
            }
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    /// Flips bits of `p` inside `range` (each `(at, bit)` at `at` modulo its length),
    /// makes the checksums match again, and asserts the file is refused at open or
    /// read safely.
    fn damage_and_open(p: &Path, range: Range<usize>, flips: &[(usize, u8)]) {
        let mut b = std::fs::read(p).unwrap();
        for (at, bit) in flips {
            b[range.start + at % range.len()] ^= 1 << bit;
        }
        assert!(reseal(&mut b));
        std::fs::write(p, &b).unwrap();
        if let Ok(s) = Snapshot::open(p) {
            assert_readable(&s);
        }
    }

    /// Every accessor reads without panicking, a lookup finds every node, and every
    /// walk down the tree ends.
    fn assert_readable(s: &Snapshot) {
        for i in 0..s.node_count() {
            let n = s.node(i);
            let _ = (&s.map()[n.path.clone()], n.data.map(|r| s.map()[r].len()));
            assert_eq!(s.find(s.path_bytes(i)), Some(i), "lookup misses a node");
            let mut stack = vec![i];
            let mut steps = 0;
            while let Some(x) = stack.pop() {
                steps += 1;
                assert!(steps <= s.node_count(), "a walk that does not end");
                stack.extend(s.child_run(x));
            }
        }
        let _ = s.specials().count();
    }

    fn flip(b: &[u8], at: usize) -> Vec<u8> {
        let mut v = b.to_vec();
        v[at] ^= 4;
        v
    }

    /// The writer refuses what would make a table that cannot be read in place.
    #[test]
    fn the_writer_refuses_nodes_out_of_order_or_without_their_parent() {
        let d = temp_dir("order");
        for (nodes, says) in [
            (vec![rec("/a", None, 0)], "not /"),
            (
                vec![rec("/", None, 2), rec("/b", None, 0), rec("/a", None, 0)],
                "path order",
            ),
            (vec![rec("/", None, 1), rec("/a/x", None, 0)], "parent"),
            (
                vec![rec("/", None, 1), rec("/a", None, 0), rec("/b", None, 0)],
                "fewer children",
            ),
            (
                vec![rec("/", None, 9)],
                "more children than there are nodes",
            ),
        ] {
            let mut w = writer(&d, 1, 3);
            let e = nodes
                .iter()
                .try_for_each(|n| w.node(n))
                .expect_err(says)
                .to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
        let mut w = writer(&d, 2, 3);
        for n in [rec("/", None, 2), rec("/a", None, 0), rec("/b", None, 0)] {
            w.node(&n).unwrap();
        }
        assert!(w.finish(|| true).unwrap().is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_writer_given_fewer_nodes_than_announced_publishes_nothing() {
        let d = temp_dir("few");
        let mut w = writer(&d, 3, 2);
        w.node(&rec("/", None, 1)).unwrap();
        assert!(w.finish(|| true).is_err());
        assert!(std::fs::read_dir(&d).unwrap().next().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_snapshot_whose_txns_never_became_durable_is_not_published() {
        let d = temp_dir("nd");
        let mut w = writer(&d, 9, 1);
        w.node(&rec("/", None, 0)).unwrap();
        assert_eq!(w.finish(|| false).unwrap(), None);
        assert!(std::fs::read_dir(&d).unwrap().next().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
