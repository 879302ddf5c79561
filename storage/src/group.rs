//! Group commit: the broadcast core queues framed records together with what it owes
//! the world once they are durable (replies, watch events, new tree versions); one task
//! drains the queue, writes everything queued with one durable write (O_DSYNC: data and
//! sync in one request), and only then releases it. While a write is in flight the next
//! batch accumulates, so under load one sync covers many txns; a lone writer pays about
//! one sync.
//!
//! Up to [`WRITES_IN_FLIGHT_MAX`] writes are in flight: when a batch is queued while
//! one write is out, a second starts at once instead of waiting for the first to
//! return and be released, so the device works while the executor releases the batch
//! before. Batches are released strictly in the order they were queued, each only once
//! it and every batch before it are durable.
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
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::log::{LogCounters, LogError, LogWriter, PendingWrite};
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

/// Most durable writes the log task has in flight at once (the log format allows two:
/// see `record`).
pub const WRITES_IN_FLIGHT_MAX: usize = 2;

/// A batch taken from the queue, its write started (or none: no records, or the log
/// has failed), not yet released.
struct Flight<T> {
    items: Vec<T>,
    write: Option<PendingWrite>,
    first_zxid: i64,
    count: u64,
    bytes: usize,
    started: std::time::Instant,
}

/// The queue between the core and the log task (both on one executor).
pub struct GroupCommit<T> {
    pending: RefCell<Pending<T>>,
    notify: Notify,
    failed: RefCell<Option<Rc<LogError>>>,
    durable_zxid: Arc<AtomicI64>,
    failed_flag: Arc<AtomicBool>,
    /// Writes in flight.
    in_flight: Cell<usize>,
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
            in_flight: Cell::new(0),
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

    /// How many writes are in flight right now (at most [`WRITES_IN_FLIGHT_MAX`]).
    pub fn writes_in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Whether a write is in flight right now.
    pub fn writing(&self) -> bool {
        self.in_flight.get() > 0
    }

    /// The error that stopped the log, if any.
    pub fn failed(&self) -> Option<Rc<LogError>> {
        self.failed.borrow().clone()
    }

    /// Nothing queued, written or being released.
    pub fn idle(&self) -> bool {
        self.pending.borrow().items.is_empty() && self.in_flight.get() == 0 && !self.releasing.get()
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
        let mut flights: VecDeque<Flight<T>> = VecDeque::new();
        loop {
            if flights.len() < WRITES_IN_FLIGHT_MAX
                && self.start_next(&mut log, &mut seal, &mut flights).await
            {
                continue;
            }
            let room = flights.len() < WRITES_IN_FLIGHT_MAX;
            let Some(head) = flights.front_mut() else {
                if self.closing.get() {
                    return log.counters();
                }
                self.notify.wait().await;
                continue;
            };
            if let Some(write) = head.write.as_mut() {
                // With room for a second write, a batch queued meanwhile starts it.
                let r = if room && !self.closing.get() {
                    let queued = async {
                        self.notify.wait().await;
                        None
                    };
                    match futures_lite::future::or(async { Some(write.await) }, queued).await {
                        Some(r) => r,
                        None => continue,
                    }
                } else {
                    write.await
                };
                self.in_flight.set(self.in_flight.get() - 1);
                let head = flights.front_mut().expect("the head");
                head.write = None;
                let (first, count, bytes, started) =
                    (head.first_zxid, head.count, head.bytes, head.started);
                self.written(&mut log, r, first, count, bytes, started);
            }
            let head = flights.pop_front().expect("the head");
            self.releasing.set(true);
            let go_on = release(head.items, self.failed()).await;
            self.releasing.set(false);
            if !go_on {
                // Writes still in flight are awaited, so nothing is left writing.
                for f in flights {
                    if let Some(w) = f.write {
                        let _ = w.await;
                    }
                }
                return log.counters();
            }
        }
    }

    /// Takes the queued batch, if any, and starts its write: behind the one in flight
    /// if there is one, unless the batch needs a new segment (then it waits for the
    /// log to be idle). Returns whether a batch was taken.
    async fn start_next<S: FnMut(&mut Vec<T>)>(
        &self,
        log: &mut LogWriter,
        seal: &mut S,
        flights: &mut VecDeque<Flight<T>>,
    ) -> bool {
        let behind = self.in_flight.get() > 0;
        {
            let p = self.pending.borrow();
            if p.items.is_empty() {
                return false;
            }
            if behind && p.first_zxid.is_some() && !log.fits(p.records.len(), true) {
                return false;
            }
        }
        let mut batch = std::mem::take(&mut *self.pending.borrow_mut());
        seal(&mut batch.items);
        let mut flight = Flight {
            items: batch.items,
            write: None,
            first_zxid: batch.first_zxid.unwrap_or(0),
            count: batch.count,
            bytes: batch.records.len(),
            started: std::time::Instant::now(),
        };
        if let (Some(first), None) = (batch.first_zxid, self.failed()) {
            let mut ready = true;
            if !behind && !log.fits(batch.records.len(), false) {
                let need = (crate::record::BATCH_MARKER_BYTES + batch.records.len()) as u64;
                if let Err(e) = log.roll(first, need).await {
                    self.fail(e);
                    ready = false;
                }
            }
            if ready {
                flight.started = std::time::Instant::now();
                let mut write = log.start_append(&batch.records, first, behind);
                // Polled once now, so the write is on its way to the device (glommio
                // queues the request when the future first runs) rather than when
                // the loop next awaits it, which for the second write in flight is
                // only once the first has been released.
                if let Some(r) = futures_lite::future::poll_once(&mut write).await {
                    write = Box::pin(std::future::ready(r));
                }
                flight.write = Some(write);
                self.in_flight.set(self.in_flight.get() + 1);
            }
        }
        flights.push_back(flight);
        true
    }

    /// Accounts for a write that returned: the durable zxid moves on, or the log fails.
    /// A write that returns after an earlier one failed changes nothing.
    fn written(
        &self,
        log: &mut LogWriter,
        r: Result<(), LogError>,
        first: i64,
        count: u64,
        bytes: usize,
        started: std::time::Instant,
    ) {
        if self.failed().is_some() {
            return;
        }
        if let Err(e) = r {
            self.fail(e);
            return;
        }
        log.note_records(count);
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
                bytes
            );
        }
        let last = first + count as i64 - 1;
        self.durable_zxid.store(last, Ordering::Release);
    }

    fn fail(&self, e: LogError) {
        if e.resumable_with_space() {
            tracing::error!(
                "txn log failed: {e}; refusing writes until the disk has room \
                 again (reads continue; no write was acknowledged that is not on disk)."
            );
        } else {
            tracing::error!(
                "txn log failed: {e}; refusing writes from now on (reads continue). \
                 Fix the disk and restart the server; no write was acknowledged that is not on disk."
            );
        }
        *self.failed.borrow_mut() = Some(Rc::new(e));
        self.failed_flag.store(true, Ordering::Release);
    }
}
