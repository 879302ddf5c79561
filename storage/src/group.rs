//! Group commit: the broadcast core queues framed records together with what it owes
//! the world once they are durable (replies, watch events, new tree versions); one task
//! drains the queue, writes everything queued with one durable write (O_DSYNC: data and
//! sync in one request), and only then releases it. While a write is in flight the next
//! batch accumulates, so under load one sync covers many txns; a lone writer pays about
//! one sync.
//!
//! Items without a record (a refused request, a sync) ride the same queue so they stay
//! in order behind the writes queued before them.
//!
//! After a failed write (or sync) the log is never written again (a retried fsync
//! can report success for pages the kernel already dropped): every later batch is
//! released with the error, and the owner stops accepting writes. The one exception
//! is a segment roll that found the disk full: nothing was written, so once the owner
//! has made its state the durable one again and the disk has room, it may
//! [`GroupCommit::resume`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::log::{LogCounters, LogError, LogWriter};
use crate::notify::Notify;
use crate::record::encode_record;

/// What the log has done, readable from any thread (for mntr and benchmarks): the
/// batching factor is `txns / fsyncs`.
#[derive(Debug, Default)]
pub struct LogStats {
    pub writes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub txns: AtomicU64,
    pub bytes: AtomicU64,
    /// Sum of the time each durable write took, in microseconds.
    pub write_us: AtomicU64,
    /// The quickest and slowest durable write, in microseconds (0 before the first).
    pub write_us_min: AtomicU64,
    pub write_us_max: AtomicU64,
    /// A durable write slower than this many milliseconds is logged as a warning
    /// (ZooKeeper's fsync.warningthresholdms); 0: never.
    pub sync_warning_ms: AtomicU64,
    /// Durable writes that took longer than `sync_warning_ms`.
    pub slow_syncs: AtomicU64,
}

impl LogStats {
    /// Stats that warn of durable writes slower than `ms` milliseconds.
    pub fn warning_after_ms(ms: u64) -> LogStats {
        let s = LogStats::default();
        s.sync_warning_ms.store(ms, Ordering::Relaxed);
        s
    }
}

struct Pending<T> {
    records: Vec<u8>,
    first_zxid: Option<i64>,
    count: u64,
    items: Vec<T>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            records: Vec::new(),
            first_zxid: None,
            count: 0,
            items: Vec::new(),
        }
    }
}

/// The queue between the core and the log task (both on one executor).
pub struct GroupCommit<T> {
    pending: RefCell<Pending<T>>,
    notify: Notify,
    failed: RefCell<Option<Rc<LogError>>>,
    durable_zxid: Arc<AtomicI64>,
    failed_flag: Arc<AtomicBool>,
    in_flight: Cell<bool>,
    /// A taken batch is being released (its items are with the owner's callback).
    releasing: Cell<bool>,
    closing: Cell<bool>,
    stats: Arc<LogStats>,
}

impl<T> GroupCommit<T> {
    /// `durable_zxid` starts at the last zxid already on disk.
    pub fn new(durable_zxid: i64) -> Rc<GroupCommit<T>> {
        Self::with_stats(durable_zxid, Arc::default())
    }

    /// As [`GroupCommit::new`], counting into `stats`.
    pub fn with_stats(durable_zxid: i64, stats: Arc<LogStats>) -> Rc<GroupCommit<T>> {
        Rc::new(GroupCommit {
            pending: RefCell::default(),
            notify: Notify::default(),
            failed: RefCell::default(),
            durable_zxid: Arc::new(AtomicI64::new(durable_zxid)),
            failed_flag: Arc::default(),
            in_flight: Cell::new(false),
            releasing: Cell::new(false),
            closing: Cell::new(false),
            stats,
        })
    }

    /// Queues a txn record; `item` is released once it is durable.
    pub fn push_record(&self, zxid: i64, payload: &[u8], item: T) {
        let mut p = self.pending.borrow_mut();
        encode_record(&mut p.records, zxid, payload);
        p.first_zxid.get_or_insert(zxid);
        p.count += 1;
        p.items.push(item);
        drop(p);
        self.notify.notify();
    }

    /// Queues records already framed with [`encode_record`] (`count` of them, zxids from
    /// `first_zxid` on) and the items to release once they are durable. Items without
    /// records are released after everything queued before them.
    pub fn push(&self, framed: &[u8], first_zxid: Option<i64>, count: u64, items: Vec<T>) {
        let mut p = self.pending.borrow_mut();
        if let Some(z) = first_zxid {
            p.records.extend_from_slice(framed);
            p.first_zxid.get_or_insert(z);
            p.count += count;
        }
        p.items.extend(items);
        drop(p);
        self.notify.notify();
    }

    /// Makes `run` return (dropping its writer) once everything queued is written
    /// and released.
    pub fn close(&self) {
        self.closing.set(true);
        self.notify.notify();
    }

    /// Changes the last item still queued (not yet taken by the writer), if any.
    pub fn update_last(&self, f: impl FnOnce(&mut T)) {
        if let Some(last) = self.pending.borrow_mut().items.last_mut() {
            f(last);
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.pending.borrow().records.len()
    }

    /// Whether a write is in flight right now.
    pub fn writing(&self) -> bool {
        self.in_flight.get()
    }

    /// The error that stopped the log, if any.
    pub fn failed(&self) -> Option<Rc<LogError>> {
        self.failed.borrow().clone()
    }

    /// Nothing queued, written or being released.
    pub fn idle(&self) -> bool {
        self.pending.borrow().items.is_empty() && !self.in_flight.get() && !self.releasing.get()
    }

    /// Takes writes again after a failure that [`LogError::resumable_with_space`]
    /// allows (the writer is as it was before the failed batch). The owner must have
    /// gone back to the durable state first: the next records queued continue from
    /// the durable zxid, and every batch queued before is released already (`idle`).
    pub fn resume(&self) {
        debug_assert!(self.idle());
        debug_assert!(self.failed().is_some_and(|e| e.resumable_with_space()));
        *self.failed.borrow_mut() = None;
        self.failed_flag.store(false, Ordering::Release);
        self.notify.notify();
    }

    /// Set once the log has failed, readable from any thread.
    pub fn failed_flag(&self) -> Arc<AtomicBool> {
        self.failed_flag.clone()
    }

    /// The last zxid known to be on disk, readable from any thread.
    pub fn durable_zxid(&self) -> Arc<AtomicI64> {
        self.durable_zxid.clone()
    }

    /// Drains the queue forever: one durable write per batch, then
    /// `release(items, error)` in queue order. Returns when `release` returns false.
    pub async fn run<F, Fut>(self: Rc<Self>, log: LogWriter, release: F) -> LogCounters
    where
        F: FnMut(Vec<T>, Option<Rc<LogError>>) -> Fut,
        Fut: Future<Output = bool>,
    {
        self.run_sealed(log, |_| {}, release).await
    }

    /// `run`, with `seal(items)` called on each batch as it is taken from the queue,
    /// before its write: the producer's last chance to finish the batch's items (the
    /// server gives the last one the tree version once per batch, not per push).
    pub async fn run_sealed<S, F, Fut>(
        self: Rc<Self>,
        mut log: LogWriter,
        mut seal: S,
        mut release: F,
    ) -> LogCounters
    where
        S: FnMut(&mut Vec<T>),
        F: FnMut(Vec<T>, Option<Rc<LogError>>) -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            let mut batch = std::mem::take(&mut *self.pending.borrow_mut());
            if batch.items.is_empty() {
                if self.closing.get() {
                    return log.counters();
                }
                self.notify.wait().await;
                continue;
            }
            seal(&mut batch.items);
            if let (Some(first), None) = (batch.first_zxid, self.failed()) {
                self.in_flight.set(true);
                let started = std::time::Instant::now();
                let r = log.append(&batch.records, first).await;
                self.in_flight.set(false);
                match r {
                    Ok(()) => {
                        log.note_records(batch.count);
                        let c = log.counters();
                        let st = &self.stats;
                        st.writes.store(c.appends, Ordering::Relaxed);
                        st.fsyncs.store(c.syncs, Ordering::Relaxed);
                        st.txns.store(c.records, Ordering::Relaxed);
                        st.bytes.store(c.bytes, Ordering::Relaxed);
                        let took = started.elapsed();
                        let us = took.as_micros() as u64;
                        st.write_us.fetch_add(us, Ordering::Relaxed);
                        // One writer: a load and a store are enough; 0 means none yet.
                        let min = st.write_us_min.load(Ordering::Relaxed);
                        if min == 0 || us < min {
                            st.write_us_min.store(us.max(1), Ordering::Relaxed);
                        }
                        st.write_us_max.fetch_max(us, Ordering::Relaxed);
                        let warn_ms = st.sync_warning_ms.load(Ordering::Relaxed);
                        if warn_ms > 0 && took.as_millis() as u64 > warn_ms {
                            st.slow_syncs.fetch_add(1, Ordering::Relaxed);
                            // ZooKeeper's words, so that operators' alerts on them fire.
                            tracing::warn!(
                                "fsync-ing the write ahead log took {}ms which will adversely \
                                 effect operation latency (a write of {} bytes). See the \
                                 ZooKeeper troubleshooting guide",
                                took.as_millis(),
                                batch.records.len()
                            );
                        }
                        let last = first + batch.count as i64 - 1;
                        self.durable_zxid.store(last, Ordering::Release);
                    }
                    Err(e) if e.resumable_with_space() => {
                        tracing::error!(
                            "txn log failed: {e}; refusing writes until the disk has room \
                             again (reads continue; no write was acknowledged that is not on disk)."
                        );
                        *self.failed.borrow_mut() = Some(Rc::new(e));
                        self.failed_flag.store(true, Ordering::Release);
                    }
                    Err(e) => {
                        tracing::error!(
                            "txn log failed: {e}; refusing writes from now on (reads continue). \
                             Fix the disk and restart the server; no write was acknowledged that is not on disk."
                        );
                        *self.failed.borrow_mut() = Some(Rc::new(e));
                        self.failed_flag.store(true, Ordering::Release);
                    }
                }
            }
            self.releasing.set(true);
            let go_on = release(batch.items, self.failed()).await;
            self.releasing.set(false);
            if !go_on {
                return log.counters();
            }
        }
    }
}
