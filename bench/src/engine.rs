//! The load engine: worker threads, each an event loop (mio/epoll) over its share of the
//! sessions, driving a `Workload`. Closed loop: every session keeps `depth` requests in
//! flight. Open loop (`rate`): requests are due at fixed intended times; a due request
//! waits for a free slot, and its latency counts from the intended time, so a stalled
//! server cannot hide its stall by slowing the client down (coordinated omission).
//!
//! Phases: connect every session (handshake), warm up, measure, stop sending and drain,
//! close the sessions. Only requests sent while measuring are counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use ringkeeper::proto::{ErrorCode, Reader, ReplyHeader, Request, WatcherEvent};

use crate::conn::{Conn, Frame, State};
use crate::stats::Stats;

/// Loopback sources used per destination before the next 127.0.0.x is taken: below the
/// ~28k ephemeral ports one source address has.
const SESSIONS_PER_SOURCE: usize = 20_000;
const TIMER: Token = Token(usize::MAX);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct Config {
    pub addrs: Vec<SocketAddr>,
    pub sessions: usize,
    pub threads: usize,
    pub depth: usize,
    pub rate: Option<f64>,
    pub warmup: Duration,
    /// How long to measure; None = until `max_ops` or until the workload is finished.
    pub duration: Option<Duration>,
    pub max_ops: Option<u64>,
    pub session_timeout_ms: i32,
    /// Handshakes in progress at once, over all workers.
    pub connect_concurrency: usize,
    /// Record each session's connect-to-handshake time as "connect" and its close as
    /// "close" (the session storm).
    pub record_sessions: bool,
    pub progress: bool,
}

/// What a workload sees while handling a call: the time, whether requests now count,
/// the stats (for derived events), and ways to wake a waiting session.
pub struct Ctx<'a> {
    pub now: Instant,
    pub measuring: bool,
    pub stats: &'a mut Stats,
    wakes: &'a mut Vec<usize>,
    timers: &'a mut BinaryHeap<Reverse<(Instant, usize)>>,
}

impl<'a> Ctx<'a> {
    fn new(
        now: Instant,
        measuring: bool,
        stats: &'a mut Stats,
        wakes: &'a mut Vec<usize>,
        timers: &'a mut BinaryHeap<Reverse<(Instant, usize)>>,
    ) -> Ctx<'a> {
        Ctx {
            now,
            measuring,
            stats,
            wakes,
            timers,
        }
    }

    /// Session `s` (local index) has something to send again.
    pub fn wake(&mut self, s: usize) {
        self.wakes.push(s);
    }

    pub fn wake_at(&mut self, s: usize, at: Instant) {
        self.timers.push(Reverse((at, s)));
    }

    /// Records a derived event (not a request) when measuring.
    pub fn record(&mut self, name: &'static str, latency: Duration, err: i32) {
        let measuring = self.measuring;
        self.record_if(measuring, name, latency, err);
    }

    /// Records a derived event that belongs to something the workload decided to count
    /// (say, a round that started while measuring), whatever the phase is now.
    pub fn record_if(&mut self, counted: bool, name: &'static str, latency: Duration, err: i32) {
        if counted {
            self.stats
                .record(name, false, latency.as_micros() as u64, err);
        }
    }
}

/// A workload decides what each session sends and reacts to replies and watch events.
/// Sessions are named by their local index in the worker; `global` ids come with the
/// constructor.
pub trait Workload: Send {
    /// The next request for session `s`, or None: the session waits until woken.
    fn next(&mut self, s: usize, ctx: &mut Ctx) -> Option<(&'static str, Request)>;
    fn on_reply(
        &mut self,
        _s: usize,
        _op: &'static str,
        _header: &ReplyHeader,
        _body: &[u8],
        _ctx: &mut Ctx,
    ) {
    }
    fn on_event(&mut self, _s: usize, _event: &WatcherEvent, _ctx: &mut Ctx) {}
    /// Session `s` failed to connect or lost its connection: it sends nothing more.
    fn on_lost(&mut self, _s: usize, _ctx: &mut Ctx) {}
    /// True once there is nothing left to send (a populate); ends the run when every
    /// worker's workload is finished.
    fn finished(&self) -> bool {
        false
    }
    /// Figures of the workload's own, merged into the report.
    fn extra(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Phase {
    Connecting = 0,
    Warmup = 1,
    Measuring = 2,
    Stopping = 3,
}

struct Shared {
    phase: AtomicU8,
    connected_workers: AtomicUsize,
    finished_workers: AtomicUsize,
    counted_sent: AtomicU64,
    counted_done: AtomicU64,
    sessions_ready: AtomicUsize,
    stop_at: Mutex<Option<Instant>>,
}

impl Shared {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Connecting,
            1 => Phase::Warmup,
            2 => Phase::Measuring,
            _ => Phase::Stopping,
        }
    }

    fn stop(&self) {
        let mut at = self.stop_at.lock().expect("poisoned");
        if at.is_none() {
            *at = Some(Instant::now());
        }
        self.phase.store(Phase::Stopping as u8, Ordering::Release);
    }
}

pub struct Outcome {
    pub stats: Stats,
    /// The measured window (or, for a session storm, connect start to the last handshake).
    pub window: Duration,
    pub sessions_ready: usize,
    pub sessions_failed: usize,
    pub sessions_lost: usize,
    pub connect_time: Duration,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

struct Inflight {
    xid: i32,
    op: &'static str,
    intended: Instant,
    counted: bool,
}

struct Session {
    global: usize,
    conn: Option<Conn>,
    inflight: VecDeque<Inflight>,
    slots_queued: usize,
    started: Instant,
    last_send: Instant,
    dirty: bool,
}

struct WorkerResult {
    stats: Stats,
    extra: serde_json::Map<String, serde_json::Value>,
    failed: usize,
    lost: usize,
    first_start: Option<Instant>,
    last_ready: Option<Instant>,
}

/// Runs `cfg` with one workload per worker, made by `make(worker, global ids)`.
pub fn run<W, F>(cfg: &Config, make: F) -> Result<Outcome, String>
where
    W: Workload + 'static,
    F: Fn(usize, &[usize]) -> W,
{
    if cfg.sessions == 0 {
        return Err("--sessions must be at least 1".into());
    }
    let nofile = ringkeeper::server::raise_open_files_limit();
    if cfg.sessions as u64 + 64 > nofile {
        return Err(format!(
            "{} sessions need as many descriptors, but RLIMIT_NOFILE is {nofile} and could not be raised (ulimit -n)",
            cfg.sessions
        ));
    }
    let threads = cfg.threads.clamp(1, cfg.sessions);
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(Phase::Connecting as u8),
        connected_workers: AtomicUsize::new(0),
        finished_workers: AtomicUsize::new(0),
        counted_sent: AtomicU64::new(0),
        counted_done: AtomicU64::new(0),
        sessions_ready: AtomicUsize::new(0),
        stop_at: Mutex::new(None),
    });
    let mut handles = Vec::new();
    for w in 0..threads {
        let globals: Vec<usize> = (w..cfg.sessions).step_by(threads).collect();
        let workload = make(w, &globals);
        let cfg = Config {
            connect_concurrency: (cfg.connect_concurrency / threads).max(1),
            rate: cfg.rate.map(|r| r / threads as f64),
            ..cfg.clone()
        };
        let shared = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-{w}"))
                .spawn(move || worker(cfg, globals, workload, shared))
                .map_err(|e| format!("cannot start a worker thread: {e}"))?,
        );
    }

    let connect_start = Instant::now();
    let wait_all = |what: &AtomicUsize| {
        while what.load(Ordering::Acquire) < threads {
            if handles.iter().any(|h| h.is_finished()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_all(&shared.connected_workers);
    let connect_time = connect_start.elapsed();
    if cfg.progress {
        eprintln!(
            "  {} sessions connected in {:.2} s",
            shared.sessions_ready.load(Ordering::Relaxed),
            connect_time.as_secs_f64()
        );
    }
    shared.phase.store(Phase::Warmup as u8, Ordering::Release);
    sleep_unless_finished(cfg.warmup, &shared, threads);
    let measure_start = Instant::now();
    shared
        .phase
        .store(Phase::Measuring as u8, Ordering::Release);
    let mut last_progress = measure_start;
    let mut last_done = 0;
    loop {
        if shared.phase() == Phase::Stopping
            || shared.finished_workers.load(Ordering::Acquire) >= threads
            || handles.iter().all(|h| h.is_finished())
            || cfg.duration.is_some_and(|d| measure_start.elapsed() >= d)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        if cfg.progress && last_progress.elapsed() >= Duration::from_secs(5) {
            let done = shared.counted_done.load(Ordering::Relaxed);
            let dt = last_progress.elapsed().as_secs_f64();
            let total = cfg
                .duration
                .map(|d| format!(" of {:.0} s", d.as_secs_f64()))
                .unwrap_or_default();
            eprintln!(
                "  ... {:.0} s{total}: {} ops, {:.0} ops/s now",
                measure_start.elapsed().as_secs_f64(),
                done,
                (done - last_done) as f64 / dt
            );
            last_progress = Instant::now();
            last_done = done;
        }
    }
    shared.stop();
    let stop_at = shared
        .stop_at
        .lock()
        .expect("poisoned")
        .expect("set by stop");
    let window = stop_at.saturating_duration_since(measure_start);

    let mut stats = Stats::default();
    let mut extra = serde_json::Map::new();
    let (mut failed, mut lost) = (0, 0);
    let mut first_start: Option<Instant> = None;
    let mut last_ready: Option<Instant> = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a worker thread panicked".to_string())??;
        stats.merge(r.stats);
        merge_extra(&mut extra, r.extra);
        failed += r.failed;
        lost += r.lost;
        first_start = min_opt(first_start, r.first_start);
        last_ready = last_ready.max(r.last_ready);
    }
    let ready = shared.sessions_ready.load(Ordering::Relaxed);
    if ready == 0 {
        return Err(format!(
            "no session could connect to {:?} ({failed} failed)",
            cfg.addrs
        ));
    }
    let window = if cfg.record_sessions {
        match (first_start, last_ready) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        }
    } else {
        window
    };
    Ok(Outcome {
        stats,
        window,
        sessions_ready: ready,
        sessions_failed: failed,
        sessions_lost: lost,
        connect_time,
        extra,
    })
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Numbers add up across workers; anything else keeps the first worker's value.
fn merge_extra(
    into: &mut serde_json::Map<String, serde_json::Value>,
    from: serde_json::Map<String, serde_json::Value>,
) {
    for (k, v) in from {
        match (into.get_mut(&k), &v) {
            (Some(serde_json::Value::Number(a)), serde_json::Value::Number(b)) => {
                let sum = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
                *a = serde_json::Number::from_f64(sum).unwrap_or_else(|| 0.into());
                if sum.fract() == 0.0 {
                    *a = (sum as u64).into();
                }
            }
            (None, _) => {
                into.insert(k, v);
            }
            _ => {}
        }
    }
}

fn sleep_unless_finished(d: Duration, shared: &Shared, threads: usize) {
    let until = Instant::now() + d;
    while Instant::now() < until && shared.finished_workers.load(Ordering::Acquire) < threads {
        std::thread::sleep(Duration::from_millis(2).min(until - Instant::now()));
    }
}

/// A timerfd armed for the next due time: epoll wakes within microseconds of it, where
/// epoll_wait's own timeout has millisecond granularity.
struct Timer {
    fd: OwnedFd,
}

impl Timer {
    fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create returns a new descriptor or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Timer {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec.
        unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into buf from our own non-blocking fd.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

fn source_for(global: usize, dest: SocketAddr, sessions: usize) -> Option<IpAddr> {
    match dest.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && sessions > SESSIONS_PER_SOURCE => {
            let n = 1 + (global / SESSIONS_PER_SOURCE) % 254;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n as u8)))
        }
        _ => None,
    }
}

struct Worker<W: Workload> {
    cfg: Config,
    shared: Arc<Shared>,
    workload: W,
    sessions: Vec<Session>,
    poll: Poll,
    timer: Timer,
    stats: Stats,
    slots: VecDeque<usize>,
    wakes: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    backlog: VecDeque<Instant>,
    next_intended: Option<Instant>,
    interval: Option<Duration>,
    dirty: Vec<usize>,
    failed: usize,
    lost: usize,
    connecting: usize,
    to_connect: usize,
    first_start: Option<Instant>,
    last_ready: Option<Instant>,
    closing: usize,
}

fn worker<W: Workload>(
    cfg: Config,
    globals: Vec<usize>,
    workload: W,
    shared: Arc<Shared>,
) -> Result<WorkerResult, String> {
    let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let timer = Timer::new().map_err(|e| format!("timerfd: {e}"))?;
    poll.registry()
        .register(
            &mut SourceFd(&timer.fd.as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )
        .map_err(|e| format!("epoll: {e}"))?;
    let now = Instant::now();
    let interval = cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut w = Worker {
        sessions: globals
            .iter()
            .map(|&g| Session {
                global: g,
                conn: None,
                inflight: VecDeque::new(),
                slots_queued: 0,
                started: now,
                last_send: now,
                dirty: false,
            })
            .collect(),
        cfg,
        shared,
        workload,
        poll,
        timer,
        stats: Stats::default(),
        slots: VecDeque::new(),
        wakes: Vec::new(),
        timers: BinaryHeap::new(),
        backlog: VecDeque::new(),
        next_intended: None,
        interval,
        dirty: Vec::new(),
        failed: 0,
        lost: 0,
        connecting: 0,
        to_connect: 0,
        first_start: None,
        last_ready: None,
        closing: 0,
    };
    w.run();
    Ok(WorkerResult {
        extra: w.workload.extra(),
        stats: w.stats,
        failed: w.failed,
        lost: w.lost,
        first_start: w.first_start,
        last_ready: w.last_ready,
    })
}

impl<W: Workload> Worker<W> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut reported_connected = false;
        let mut reported_finished = false;
        let mut last_ping_scan = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        let mut close_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.start_connects(now);
            let phase = self.shared.phase();
            if !reported_connected && self.connecting == 0 && self.to_connect == self.sessions.len()
            {
                reported_connected = true;
                self.shared.connected_workers.fetch_add(1, Ordering::AcqRel);
            }
            if matches!(phase, Phase::Warmup | Phase::Measuring) {
                if self.interval.is_some() && self.next_intended.is_none() {
                    self.next_intended = Some(now);
                }
                self.dispatch(now, phase == Phase::Measuring);
                if !reported_finished && self.workload.finished() && self.inflight() == 0 {
                    reported_finished = true;
                    self.shared.finished_workers.fetch_add(1, Ordering::AcqRel);
                }
            }
            if phase == Phase::Stopping {
                let drain = *drain_deadline.get_or_insert(now + DRAIN_TIMEOUT);
                if close_deadline.is_none() && (self.inflight() == 0 || now >= drain) {
                    close_deadline = Some(now + CLOSE_TIMEOUT);
                    self.close_all(now);
                }
                if close_deadline.is_some_and(|d| self.closing == 0 || now >= d) {
                    return;
                }
            }
            self.flush_dirty();
            if now.duration_since(last_ping_scan) >= Duration::from_millis(500) {
                last_ping_scan = now;
                self.ping_idle(now);
            }
            self.arm_timer(now, phase);
            let wait = if phase == Phase::Connecting && reported_connected {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(50)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("ringkeeper-bench: epoll: {e}");
                    return;
                }
            }
            let now = Instant::now();
            let measuring = self.shared.phase() == Phase::Measuring;
            for ev in events.iter() {
                if ev.token() == TIMER {
                    self.timer.clear();
                    continue;
                }
                let s = ev.token().0;
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(s, now, measuring);
                }
                if ev.is_writable() {
                    self.mark_dirty(s);
                }
            }
            self.fire_timers(now);
        }
    }

    fn inflight(&self) -> usize {
        self.sessions.iter().map(|s| s.inflight.len()).sum()
    }

    fn start_connects(&mut self, now: Instant) {
        while self.to_connect < self.sessions.len()
            && self.connecting < self.cfg.connect_concurrency
        {
            let s = self.to_connect;
            self.to_connect += 1;
            let g = self.sessions[s].global;
            let addr = self.cfg.addrs[g % self.cfg.addrs.len()];
            let bind = source_for(g, addr, self.cfg.sessions);
            self.first_start.get_or_insert(now);
            self.sessions[s].started = now;
            match Conn::start(addr, bind, self.cfg.session_timeout_ms) {
                Ok(mut c) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut c.sock,
                        Token(s),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.connect_failed(s, &e.to_string());
                        continue;
                    }
                    self.sessions[s].conn = Some(c);
                    self.connecting += 1;
                    self.mark_dirty(s);
                }
                Err(e) => self.connect_failed(s, &e.to_string()),
            }
        }
    }

    fn connect_failed(&mut self, s: usize, why: &str) {
        if self.failed == 0 {
            eprintln!(
                "ringkeeper-bench: session {} could not connect: {why}",
                self.sessions[s].global
            );
        }
        self.failed += 1;
        if self.cfg.record_sessions {
            self.stats.record(
                "connect",
                true,
                self.sessions[s].started.elapsed().as_micros() as u64,
                ErrorCode::ConnectionLoss.code(),
            );
        }
    }

    fn mark_dirty(&mut self, s: usize) {
        if !self.sessions[s].dirty {
            self.sessions[s].dirty = true;
            self.dirty.push(s);
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(s) = self.dirty.pop() {
            self.sessions[s].dirty = false;
            let res = match self.sessions[s].conn.as_mut() {
                Some(c) => c.flush(),
                None => Ok(()),
            };
            if let Err(e) = res {
                self.kill(s, &e.to_string());
            }
        }
    }

    /// Sends what the free slots allow: in a closed loop at once, in an open loop one
    /// request per due intended time.
    fn dispatch(&mut self, now: Instant, measuring: bool) {
        for s in std::mem::take(&mut self.wakes) {
            self.offer_slot(s);
        }
        if let (Some(iv), Some(next)) = (self.interval, self.next_intended.as_mut()) {
            while *next <= now {
                self.backlog.push_back(*next);
                *next += iv;
            }
        }
        while let Some(s) = self.slots.pop_front() {
            self.sessions[s].slots_queued -= 1;
            let intended = if self.interval.is_some() {
                match self.backlog.front() {
                    Some(t) => *t,
                    None => {
                        self.sessions[s].slots_queued += 1;
                        self.slots.push_front(s);
                        break;
                    }
                }
            } else {
                now
            };
            if self.sessions[s].conn.as_ref().map(|c| c.state) != Some(State::Ready) {
                continue;
            }
            let counted = measuring;
            let mut ctx = Ctx::new(
                now,
                measuring,
                &mut self.stats,
                &mut self.wakes,
                &mut self.timers,
            );
            let Some((op, req)) = self.workload.next(s, &mut ctx) else {
                continue;
            };
            if counted {
                if let Some(max) = self.cfg.max_ops {
                    if self.shared.counted_sent.fetch_add(1, Ordering::AcqRel) >= max {
                        self.shared.stop();
                        return;
                    }
                }
            }
            if self.interval.is_some() {
                self.backlog.pop_front();
            }
            let sess = &mut self.sessions[s];
            let conn = sess.conn.as_mut().expect("checked ready");
            let xid = conn.queue(&req);
            sess.last_send = now;
            sess.inflight.push_back(Inflight {
                xid,
                op,
                intended,
                counted,
            });
            self.mark_dirty(s);
            // A workload may have woken sessions (or this one again) while choosing.
            for w in std::mem::take(&mut self.wakes) {
                self.offer_slot(w);
            }
            self.offer_slot(s);
        }
    }

    /// Queues a free slot of session `s` if it has room for one more request.
    fn offer_slot(&mut self, s: usize) {
        let sess = &mut self.sessions[s];
        let ready = sess.conn.as_ref().is_some_and(|c| c.state == State::Ready);
        if ready && sess.inflight.len() + sess.slots_queued < self.cfg.depth {
            sess.slots_queued += 1;
            self.slots.push_back(s);
        }
    }

    fn on_readable(&mut self, s: usize, now: Instant, measuring: bool) {
        let Some(conn) = self.sessions[s].conn.as_mut() else {
            return;
        };
        let was_handshaking = conn.state == State::Handshaking;
        let open = match conn.fill() {
            Ok(open) => open,
            Err(e) => {
                self.kill(s, &e.to_string());
                return;
            }
        };
        loop {
            let sess = &mut self.sessions[s];
            let Some(conn) = sess.conn.as_mut() else {
                return;
            };
            let frame = match conn.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    let msg = e.to_string();
                    self.kill(s, &msg);
                    return;
                }
            };
            let mut ctx = Ctx::new(
                now,
                measuring,
                &mut self.stats,
                &mut self.wakes,
                &mut self.timers,
            );
            match frame {
                Frame::Pong => {}
                Frame::Notification(body) => {
                    if let Ok(ev) = WatcherEvent::decode(&mut Reader::new(body)) {
                        self.workload.on_event(s, &ev, &mut ctx);
                    }
                }
                Frame::Reply { header, body } => {
                    let Some(req) = sess.inflight.pop_front() else {
                        let msg = format!("a reply (xid {}) to no request", header.xid);
                        self.kill(s, &msg);
                        return;
                    };
                    if req.xid != header.xid {
                        let msg = format!("reply xid {} for request xid {}", header.xid, req.xid);
                        self.kill(s, &msg);
                        return;
                    }
                    let latency = now.saturating_duration_since(req.intended);
                    if req.op == CLOSE {
                        if self.cfg.record_sessions {
                            self.stats
                                .record(CLOSE, false, latency.as_micros() as u64, header.err);
                        }
                        // The session is closed: no need to wait for the server to
                        // close the connection too.
                        self.kill(s, "closed");
                        return;
                    }
                    if req.counted {
                        ctx.stats
                            .record(req.op, true, latency.as_micros() as u64, header.err);
                        self.shared.counted_done.fetch_add(1, Ordering::Relaxed);
                    }
                    self.workload.on_reply(s, req.op, &header, body, &mut ctx);
                    self.wakes.push(s);
                }
            }
        }
        let conn = self.sessions[s].conn.as_ref().expect("alive");
        if was_handshaking && conn.state == State::Ready {
            self.connecting -= 1;
            self.last_ready = Some(now);
            self.shared.sessions_ready.fetch_add(1, Ordering::Relaxed);
            if self.cfg.record_sessions {
                let us = now.duration_since(self.sessions[s].started).as_micros() as u64;
                self.stats.record("connect", true, us, 0);
            }
            self.wakes.extend(std::iter::repeat_n(s, self.cfg.depth));
        }
        if !open {
            self.kill(s, "the server closed the connection");
        }
    }

    /// Ends session `s`'s connection: its requests in flight count as connection losses.
    fn kill(&mut self, s: usize, why: &str) {
        let Some(mut conn) = self.sessions[s].conn.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.sock);
        match conn.state {
            State::Handshaking => {
                self.connecting -= 1;
                self.connect_failed(s, why);
            }
            State::Closing => {
                self.closing -= 1;
            }
            State::Ready => {
                if self.lost == 0 && self.shared.phase() != Phase::Stopping {
                    eprintln!(
                        "ringkeeper-bench: session {} lost: {why}",
                        self.sessions[s].global
                    );
                }
                self.lost += 1;
            }
        }
        let now = Instant::now();
        if self.shared.phase() != Phase::Stopping {
            let mut ctx = Ctx::new(
                now,
                false,
                &mut self.stats,
                &mut self.wakes,
                &mut self.timers,
            );
            self.workload.on_lost(s, &mut ctx);
        }
        for req in self.sessions[s].inflight.drain(..) {
            if req.counted && req.op != CLOSE {
                let us = now.saturating_duration_since(req.intended).as_micros() as u64;
                self.stats
                    .record(req.op, true, us, ErrorCode::ConnectionLoss.code());
            }
        }
    }

    fn close_all(&mut self, now: Instant) {
        for s in 0..self.sessions.len() {
            let sess = &mut self.sessions[s];
            let Some(conn) = sess.conn.as_mut() else {
                continue;
            };
            if conn.state != State::Ready {
                continue;
            }
            let xid = conn.queue(&Request::CloseSession);
            sess.inflight.push_back(Inflight {
                xid,
                op: CLOSE,
                intended: now,
                counted: false,
            });
            self.closing += 1;
            self.mark_dirty(s);
        }
    }

    fn ping_idle(&mut self, now: Instant) {
        let idle = Duration::from_millis(self.cfg.session_timeout_ms as u64 / 3);
        for s in 0..self.sessions.len() {
            let sess = &mut self.sessions[s];
            if let Some(conn) = sess.conn.as_mut() {
                if conn.state == State::Ready && now.duration_since(sess.last_send) >= idle {
                    conn.queue_ping();
                    sess.last_send = now;
                    self.mark_dirty(s);
                } else if conn.state == State::Handshaking
                    && now.duration_since(sess.started) >= CONNECT_TIMEOUT
                {
                    self.kill(s, "no handshake reply within 30 s");
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, s))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.wakes.push(s);
        }
    }

    fn arm_timer(&mut self, now: Instant, phase: Phase) {
        let mut next: Option<Instant> = self.timers.peek().map(|Reverse((at, _))| *at);
        if matches!(phase, Phase::Warmup | Phase::Measuring) && self.backlog.is_empty() {
            if let Some(t) = self.next_intended {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        if let Some(t) = next {
            self.timer.arm(t.saturating_duration_since(now));
        }
    }
}

/// The op name of a session's closing request.
pub const CLOSE: &str = "close";
