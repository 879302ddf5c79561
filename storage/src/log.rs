//! The txn log writer: appends framed records to the current segment with one durable
//! write per call (O_DSYNC, so the write and its sync are one request to the device),
//! through io_uring (glommio), with O_DIRECT where the file system allows it.
//!
//! Group commit is the caller's loop: while one [`LogWriter::append`] is in flight the
//! broadcast core keeps framing records into its next buffer, and the next call writes
//! all of them at once. Direct I/O writes whole blocks: the writer keeps the bytes of
//! the last, partly filled block in memory and rewrites that block together with the new
//! records, padded with zeros (the preallocated space is zeros too, which is how a reader
//! finds the end).
//!
//! glommio probes, on the first direct-I/O file it opens on a device, whether that device
//! supports polled I/O by reading the file's first block; for an empty or unwritten block
//! the kernel answers without touching the device, glommio wrongly records "pollable" for
//! the whole device, and every later direct read or write there fails with EOPNOTSUPP.
//! Segments are therefore opened for direct I/O only after their header block has been
//! written and synced through the page cache ([`crate::segment::create_segment`]), so the
//! probe reads real data (tested in `tests/dma_first_open.rs`).

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, DmaFile, OpenOptions};
use thiserror::Error;

use crate::fsutil::is_tmpfs;
use crate::record::{encode_batch_marker, BATCH_MARKER_BYTES};
use crate::segment::create_segment;

/// Block size direct writes are aligned to (a multiple of any logical block size here).
const BLOCK: u64 = 4096;

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

enum SegmentFile {
    Direct(DmaFile),
    Buffered(BufferedFile),
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
            Ok(f) => return Ok(SegmentFile::Direct(f)),
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
    Ok(SegmentFile::Buffered(f))
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

    /// Writes `records` (framed with [`crate::record::encode_record`], zxids from
    /// `first_zxid` on), behind a batch marker, with one write that, under forceSync
    /// (O_DSYNC), returns once they are durable. After an error the writer must not be
    /// used again: the state of the file is unknown and a retried sync could report
    /// success for pages the kernel has already dropped.
    pub async fn append(&mut self, records: &[u8], first_zxid: i64) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(BATCH_MARKER_BYTES + records.len());
        encode_batch_marker(&mut batch, records.len() as u64, first_zxid);
        batch.extend_from_slice(records);
        let records = &batch[..];
        if self.end + records.len() as u64 > self.capacity {
            self.roll(first_zxid, records.len() as u64).await?;
        }
        let block_start = self.end - self.tail.len() as u64;
        let used = self.tail.len() + records.len();
        let new_end = self.end + records.len() as u64;
        let write_err = |source| LogError::Write {
            path: self.path.clone(),
            offset: block_start,
            source,
        };
        match &self.file {
            SegmentFile::Direct(f) => {
                let len = used.div_ceil(BLOCK as usize) * BLOCK as usize;
                let mut buf = f.alloc_dma_buffer(len);
                let b = buf.as_bytes_mut();
                b[..self.tail.len()].copy_from_slice(&self.tail);
                b[self.tail.len()..used].copy_from_slice(records);
                b[used..].fill(0);
                let n = f
                    .write_at(buf, block_start)
                    .await
                    .map_err(|e| write_err(e.into()))?;
                if n != len {
                    return Err(write_err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {n} of {len} bytes"),
                    )));
                }
            }
            SegmentFile::Buffered(f) => {
                let n = f
                    .write_at(records.to_vec(), self.end)
                    .await
                    .map_err(|e| write_err(e.into()))?;
                if n != records.len() {
                    return Err(write_err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {n} of {} bytes", records.len()),
                    )));
                }
            }
        }
        if self.opts.force_sync {
            // The segment is open with O_DSYNC: the write above returned only once
            // its data (and the metadata needed to read it back) was on disk.
            self.counters.syncs += 1;
        }
        // The new tail: the bytes of the block that now holds the end.
        let new_block_start = new_end - new_end % BLOCK;
        let keep = (new_end - new_block_start) as usize;
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(records);
        self.tail = joined[joined.len() - keep..].to_vec();
        self.end = new_end;
        self.counters.appends += 1;
        self.counters.bytes += records.len() as u64;
        Ok(())
    }

    /// Counts records for the batching factor (the caller knows how many it framed).
    pub fn note_records(&mut self, n: u64) {
        self.counters.records += n;
    }

    /// Closes the full segment and starts the next one at `first_zxid`, large enough
    /// for `need` bytes.
    async fn roll(&mut self, first_zxid: i64, need: u64) -> Result<(), LogError> {
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
        match old.file {
            SegmentFile::Direct(f) => {
                let _ = f.close().await;
            }
            SegmentFile::Buffered(f) => {
                let _ = f.close().await;
            }
        }
        tracing::info!("txn log rolled over to {}", self.path.display());
        Ok(())
    }
}
