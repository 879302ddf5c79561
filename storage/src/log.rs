//! The txn log writer: appends framed records to the current segment with one durable
//! write per call (O_DSYNC, so the write and its sync are one request to the device),
//! through io_uring (glommio), with O_DIRECT where the file system allows it.
//!
//! Group commit is the caller's loop: while a write is in flight the broadcast core
//! keeps framing records into its next buffer, and the next write takes all of them at
//! once. Direct I/O writes whole blocks: the writer keeps the bytes of the last, partly
//! filled block in memory and rewrites that block together with the new records, padded
//! with zeros (the preallocated space is zeros too, which is how a reader finds the end).
//!
//! A second write may start while one is in flight ([`LogWriter::start_append`] with
//! `behind` set). It must not rewrite the block the first one is still writing, so it
//! starts at the next block boundary, after zero padding, and opens with an
//! *overlapping* batch marker that gives the padding's length (see `record`): a reader
//! then knows both that the gap is padding and that this write may have reached the
//! disk before the one ahead of it.
//!
//! glommio probes, on the first direct-I/O file it opens on a device, whether that device
//! supports polled I/O by reading the file's first block; for an empty or unwritten block
//! the kernel answers without touching the device, glommio wrongly records "pollable" for
//! the whole device, and every later direct read or write there fails with EOPNOTSUPP.
//! Segments are therefore opened for direct I/O only after their header block has been
//! written and synced through the page cache ([`crate::segment::create_segment`]), so the
//! probe reads real data (tested in `tests/dma_first_open.rs`).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use glommio::io::{BufferedFile, DmaFile, OpenOptions};
use thiserror::Error;

use crate::fsutil::is_tmpfs;
use crate::record::{
    encode_batch_marker, encode_overlapping_batch_marker, BATCH_MARKER_BYTES, LOG_BLOCK_BYTES,
    OVERLAPPING_BATCH_MARKER_BYTES,
};
use crate::segment::create_segment;

/// Block size direct writes are aligned to (a multiple of any logical block size here).
const BLOCK: u64 = LOG_BLOCK_BYTES as u64;

/// A write started by [`LogWriter::start_append`]: resolves once it is durable (or
/// failed). It owns what it needs, so the writer can start another meanwhile.
pub type PendingWrite = Pin<Box<dyn Future<Output = Result<(), LogError>>>>;

#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Bytes to preallocate for each segment (preAllocSize).
    pub prealloc_bytes: u64,
    /// Each write durable before it returns (forceSync). Off only for tests and
    /// throwaway data.
    pub force_sync: bool,
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("cannot start a new log segment in {dir}: {source}")]
    Roll { dir: PathBuf, source: io::Error },
    #[error("writing {path} at offset {offset}: {source}")]
    Write {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
}

impl LogError {
    /// The OS error behind it (ENOSPC, EIO, ...).
    pub fn os_error(&self) -> &io::Error {
        match self {
            LogError::Roll { source, .. } | LogError::Write { source, .. } => source,
        }
    }

    /// Whether the log may take writes again once the disk has room: the next segment
    /// could not be made for want of space (ENOSPC, EDQUOT), so nothing of the batch
    /// was written and the current segment is as it was. Any other failure (a write
    /// or a sync that failed, an I/O error) leaves the file's state unknown: never
    /// retried.
    pub fn resumable_with_space(&self) -> bool {
        matches!(self, LogError::Roll { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// Whether `dir` has room for a segment of `bytes` again: makes a temp file of that
/// size (preallocated and synced, as a segment is), then removes it. Runs on the
/// executor's blocking pool.
pub async fn probe_space(dir: &Path, bytes: u64) -> io::Result<()> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            let tmp = dir.join(format!("log.space-probe{}", crate::segment::TMP_SUFFIX));
            let r = (|| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)?;
                crate::fsutil::preallocate(&f, bytes)?;
                f.sync_all()
            })();
            let _ = std::fs::remove_file(&tmp);
            r
        })
        .await
}

#[derive(Clone)]
enum SegmentFile {
    Direct(Rc<DmaFile>),
    Buffered(Rc<BufferedFile>),
}

/// How many writes and syncs the log has done: the batching factor is records / syncs.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogCounters {
    pub appends: u64,
    pub records: u64,
    pub syncs: u64,
    pub bytes: u64,
}

pub struct LogWriter {
    dir: PathBuf,
    opts: LogOptions,
    path: PathBuf,
    file: SegmentFile,
    /// File offset where the next record goes.
    end: u64,
    /// The bytes of the block holding `end`, from its start up to `end`.
    tail: Vec<u8>,
    /// Preallocated size of the current segment.
    capacity: u64,
    counters: LogCounters,
}

/// Opens a segment for writing: direct I/O unless the file system lacks it, in which
/// case buffered writes (one warning per process). With `dsync` every write
/// returns only once it is durable (O_DSYNC: on a direct write the kernel issues the
/// data with FUA or follows it with a cache flush), which saves a second round trip to
/// the device per batch compared with write + fdatasync.
async fn open_segment(path: &Path, dsync: bool) -> io::Result<SegmentFile> {
    let flags = if dsync { libc::O_DSYNC } else { 0 };
    if !is_tmpfs(path) {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .dma_open(path)
            .await
        {
            Ok(f) => return Ok(SegmentFile::Direct(Rc::new(f))),
            Err(e) => {
                let e: io::Error = e.into();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "{} does not support O_DIRECT: the txn log uses buffered O_DSYNC writes (still durable)",
            path.parent().unwrap_or(path).display()
        )
    });
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .buffered_open(path)
        .await?;
    Ok(SegmentFile::Buffered(Rc::new(f)))
}

impl LogWriter {
    /// Starts a new segment in `dir` for records from `first_zxid` on. The file is
    /// made (fallocate, fsync, rename, fsync of the directory) on the executor's
    /// blocking pool: the executor may serve clients.
    pub async fn create(dir: &Path, first_zxid: i64, opts: LogOptions) -> io::Result<LogWriter> {
        let (d, bytes) = (dir.to_path_buf(), opts.prealloc_bytes);
        let path = glommio::executor()
            .spawn_blocking(move || create_segment(&d, first_zxid, bytes))
            .await?;
        Self::resume(dir, &path, crate::record::SEGMENT_HEADER_BYTES as u64, opts).await
    }

    /// Continues the segment at `path`, whose valid records end at `end` (as recovery
    /// found it; the rest of the file must be zeros).
    pub async fn resume(
        dir: &Path,
        path: &Path,
        end: u64,
        opts: LogOptions,
    ) -> io::Result<LogWriter> {
        let p = path.to_path_buf();
        let (capacity, tail) = glommio::executor()
            .spawn_blocking(move || -> io::Result<(u64, Vec<u8>)> {
                use std::os::unix::fs::FileExt;
                let capacity = std::fs::metadata(&p)?.len();
                let block_start = end - end % BLOCK;
                let mut tail = vec![0u8; (end - block_start) as usize];
                std::fs::File::open(&p)?.read_exact_at(&mut tail, block_start)?;
                Ok((capacity, tail))
            })
            .await?;
        let file = open_segment(path, opts.force_sync).await?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            opts,
            path: path.to_path_buf(),
            file,
            end,
            tail,
            capacity,
            counters: LogCounters::default(),
        })
    }

    pub fn counters(&self) -> LogCounters {
        self.counters
    }

    pub fn segment_path(&self) -> &Path {
        &self.path
    }

    /// The offset in the current segment where the next write's bytes go (before
    /// any padding it needs).
    pub fn position(&self) -> u64 {
        self.end
    }

    /// Writes `records` (framed with [`crate::record::encode_record`], zxids from
    /// `first_zxid` on), behind a batch marker, with one write that, under forceSync
    /// (O_DSYNC), returns once they are durable; starts the next segment first if
    /// they do not fit. No other write may be in flight. After an error the writer
    /// must not be used again: the state of the file is unknown and a retried sync
    /// could report success for pages the kernel has already dropped.
    pub async fn append(&mut self, records: &[u8], first_zxid: i64) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        if !self.fits(records.len(), false) {
            self.roll(first_zxid, (BATCH_MARKER_BYTES + records.len()) as u64)
                .await?;
        }
        self.start_append(records, first_zxid, false).await
    }

    /// Whether a write of `records_len` bytes of records fits in the current segment
    /// (`behind`: started while another write is in flight, as in `start_append`).
    pub fn fits(&self, records_len: usize, behind: bool) -> bool {
        let (at, marker) = if behind {
            (
                self.end.next_multiple_of(BLOCK),
                OVERLAPPING_BATCH_MARKER_BYTES,
            )
        } else {
            (self.end, BATCH_MARKER_BYTES)
        };
        at + (marker + records_len) as u64 <= self.capacity
    }

    /// Starts the write [`LogWriter::append`] does, without a segment roll: the
    /// caller checked [`LogWriter::fits`]. With `behind`, another write (started
    /// before, not yet complete) is in flight: this one leaves the block that write
    /// ends in alone and starts at the next block boundary. At most one other write
    /// may be in flight, and the caller must treat them in the order started (this
    /// one is durable, as far as anyone may rely on, only once the other is too).
    /// The writer's position moves on at once; after an error it must not be used
    /// again.
    pub fn start_append(&mut self, records: &[u8], first_zxid: i64, behind: bool) -> PendingWrite {
        if records.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        debug_assert!(self.fits(records.len(), behind));
        // The bytes this write puts on disk: the start of the block it begins in (the
        // last write's tail, unless that block is the one in flight), the marker, the
        // records.
        let (start, gap, head) = if behind {
            let start = self.end.next_multiple_of(BLOCK);
            (start, start - self.end, Vec::new())
        } else {
            (self.end, 0, std::mem::take(&mut self.tail))
        };
        let mut marker = Vec::with_capacity(OVERLAPPING_BATCH_MARKER_BYTES);
        if behind {
            encode_overlapping_batch_marker(&mut marker, records.len() as u64, first_zxid, gap);
        } else {
            encode_batch_marker(&mut marker, records.len() as u64, first_zxid);
        }
        let block_start = start - head.len() as u64;
        let written = marker.len() + records.len();
        let new_end = start + written as u64;
        let used = head.len() + written;
        let path = self.path.clone();
        // A write's outcome: an I/O error, or fewer bytes than asked (a short write).
        let check = move |offset: u64, want: usize, done: io::Result<usize>| {
            let source = match done {
                Ok(n) if n == want => return Ok(()),
                Ok(n) => io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {n} of {want} bytes"),
                ),
                Err(e) => e,
            };
            Err(LogError::Write {
                path: path.clone(),
                offset,
                source,
            })
        };
        let fut: PendingWrite = match self.file.clone() {
            SegmentFile::Direct(f) => {
                let len = used.div_ceil(BLOCK as usize) * BLOCK as usize;
                let mut buf = f.alloc_dma_buffer(len);
                let b = buf.as_bytes_mut();
                b[..head.len()].copy_from_slice(&head);
                b[head.len()..head.len() + marker.len()].copy_from_slice(&marker);
                b[head.len() + marker.len()..used].copy_from_slice(records);
                b[used..].fill(0);
                // The new tail: the bytes of the block that now holds the end.
                self.tail = b[(new_end - new_end % BLOCK - block_start) as usize..used].to_vec();
                Box::pin(async move {
                    let done = f.write_at(buf, block_start).await.map_err(io::Error::from);
                    check(block_start, len, done)
                })
            }
            SegmentFile::Buffered(f) => {
                let mut data = marker;
                data.extend_from_slice(records);
                let mut joined = head;
                joined.extend_from_slice(&data);
                self.tail = joined[(new_end - new_end % BLOCK - block_start) as usize..].to_vec();
                Box::pin(async move {
                    let want = data.len();
                    let done = f.write_at(data, start).await.map_err(io::Error::from);
                    check(start, want, done)
                })
            }
        };
        if self.opts.force_sync {
            // The segment is open with O_DSYNC: the write returns only once its data
            // (and the metadata needed to read it back) is on disk.
            self.counters.syncs += 1;
        }
        self.end = new_end;
        self.counters.appends += 1;
        self.counters.bytes += written as u64;
        fut
    }

    /// Counts records for the batching factor (the caller knows how many it framed).
    pub fn note_records(&mut self, n: u64) {
        self.counters.records += n;
    }

    /// Closes the full segment and starts the next one at `first_zxid`, large enough
    /// for `need` bytes. No write may be in flight.
    pub async fn roll(&mut self, first_zxid: i64, need: u64) -> Result<(), LogError> {
        let opts = LogOptions {
            prealloc_bytes: self
                .opts
                .prealloc_bytes
                .max(need + crate::record::SEGMENT_HEADER_BYTES as u64),
            ..self.opts.clone()
        };
        let next = LogWriter::create(&self.dir, first_zxid, opts)
            .await
            .map_err(|source| LogError::Roll {
                dir: self.dir.clone(),
                source,
            })?;
        let counters = self.counters;
        let old = std::mem::replace(self, next);
        self.opts = old.opts.clone();
        self.counters = counters;
        // The writes in flight hold the file too; with none, this is the last owner.
        match old.file {
            SegmentFile::Direct(f) => {
                if let Ok(f) = Rc::try_unwrap(f) {
                    let _ = f.close().await;
                }
            }
            SegmentFile::Buffered(f) => {
                if let Ok(f) = Rc::try_unwrap(f) {
                    let _ = f.close().await;
                }
            }
        }
        tracing::info!("txn log rolled over to {}", self.path.display());
        Ok(())
    }
}
