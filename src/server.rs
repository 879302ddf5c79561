//! Server start-up and the state every executor can see: configuration, counters,
//! the connection registry (for `cons`), watch tables (for `wch*`) and the session
//! list (for `dump`). Everything here is either immutable or behind atomics/mutexes
//! touched off the request path.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crossbeam::utils::CachePadded;
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use ringkeeper_storage::dirlock::DirLock;
use thiserror::Error;

use crate::broadcast;
use crate::broadcast::SnapshotStats;
use crate::config::Config;
use crate::listen;
use crate::metrics::latency::PublishedLatencies;
use crate::session::watches::WatchTable;
use crate::shard;

/// Capacity of each cross-core channel (messages), shard -> core and core -> shard.
pub const CHANNEL_CAPACITY: usize = 4096;
/// io_uring registered buffer memory of a shard (sockets only).
const EXECUTOR_IO_MEMORY_BYTES: usize = 1 << 20;
/// The broadcast core's: direct-I/O buffers of the txn log come from it.
const CORE_IO_MEMORY_BYTES: usize = 4 << 20;

/// Request counters of one shard (written by that shard only).
#[derive(Default)]
pub struct ShardStats {
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
    pub latency_min_us: AtomicU64,
    pub latency_max_us: AtomicU64,
    pub outstanding: AtomicI64,
    /// Requests answered later than slowRequestThresholdMs.
    pub slow_requests: AtomicU64,
}

impl ShardStats {
    pub fn record_latency(&self, us: u64) {
        self.latency_sum_us.fetch_add(us, Relaxed);
        let n = self.latency_count.fetch_add(1, Relaxed);
        if n == 0 || us < self.latency_min_us.load(Relaxed) {
            self.latency_min_us.store(us, Relaxed);
        }
        if us > self.latency_max_us.load(Relaxed) {
            self.latency_max_us.store(us, Relaxed);
        }
    }

    pub fn reset(&self) {
        for a in [
            &self.packets_received,
            &self.packets_sent,
            &self.latency_sum_us,
            &self.latency_count,
            &self.latency_min_us,
            &self.latency_max_us,
        ] {
            a.store(0, Relaxed);
        }
    }
}

/// The shards' request counters added up (`srvr`, `mntr`).
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestTotals {
    pub received: u64,
    pub sent: u64,
    pub lat_min_us: u64,
    pub lat_max_us: u64,
    pub lat_sum_us: u64,
    pub lat_count: u64,
    pub outstanding: i64,
}

impl RequestTotals {
    pub fn avg_latency_ms(&self) -> f64 {
        if self.lat_count == 0 {
            0.0
        } else {
            self.lat_sum_us as f64 / self.lat_count as f64 / 1000.0
        }
    }
}

/// What `cons` shows about one connection (ZooKeeper's ServerCnxn stats).
pub struct ConnInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub established: SystemTime,
    pub session_id: AtomicI64,
    pub timeout_ms: AtomicI32,
    /// Packets in and out, as ZooKeeper counts them: the handshake and every request
    /// (pings too) in; its answer, every reply and every watch event out.
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// The xid of the last request that was not a special one (ping, auth,
    /// setWatches); -1 before the first.
    pub last_cxid: AtomicI32,
    pub last_zxid: AtomicI64,
    pub last_op: AtomicI32,
    pub queued: AtomicI64,
    /// When the last reply went out, in ms of the monotonic clock (as ZooKeeper's
    /// `lresp`, which is System.nanoTime() in ms).
    pub last_response_ms: AtomicU64,
    pub last_latency_us: AtomicU64,
    pub lat_sum_us: AtomicU64,
    pub lat_count: AtomicU64,
    pub lat_min_us: AtomicU64,
    pub lat_max_us: AtomicU64,
}

impl ConnInfo {
    pub fn new(id: u64, peer: SocketAddr) -> ConnInfo {
        ConnInfo {
            id,
            peer,
            established: SystemTime::now(),
            session_id: AtomicI64::new(0),
            timeout_ms: AtomicI32::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            last_cxid: AtomicI32::new(-1),
            last_zxid: AtomicI64::new(-1),
            last_op: AtomicI32::new(-1),
            queued: AtomicI64::new(0),
            last_response_ms: AtomicU64::new(0),
            last_latency_us: AtomicU64::new(0),
            lat_sum_us: AtomicU64::new(0),
            lat_count: AtomicU64::new(0),
            lat_min_us: AtomicU64::new(u64::MAX),
            lat_max_us: AtomicU64::new(0),
        }
    }

    /// `crst`: back to the figures of a new connection (ZooKeeper's resetStats).
    pub fn reset_stats(&self) {
        self.received.store(0, Relaxed);
        self.sent.store(0, Relaxed);
        self.last_cxid.store(-1, Relaxed);
        self.last_zxid.store(-1, Relaxed);
        self.last_op.store(-1, Relaxed);
        self.last_response_ms.store(0, Relaxed);
        self.last_latency_us.store(0, Relaxed);
        self.lat_sum_us.store(0, Relaxed);
        self.lat_count.store(0, Relaxed);
        self.lat_min_us.store(u64::MAX, Relaxed);
        self.lat_max_us.store(0, Relaxed);
    }
}

pub struct ServerShared {
    pub cfg: Arc<Config>,
    pub started: Instant,
    /// The monotonic clock's reading at `started`, in ms.
    started_monotonic_ms: u64,
    /// Each shard's counters, a cache line each (each shard writes only its own).
    pub shard_stats: Vec<CachePadded<ShardStats>>,
    /// Each shard's published request latencies (see [`crate::metrics::latency`]).
    pub latencies: Vec<CachePadded<Mutex<PublishedLatencies>>>,
    /// Snapshots written and the time they took.
    pub snapshot_stats: Arc<SnapshotStats>,
    /// Connections refused because their IP held maxClientCnxns.
    pub connections_rejected: AtomicU64,
    /// Times a connection's reading was held back because the server had its limit
    /// of requests in flight (ZooKeeper's request_throttle_wait_count).
    pub throttle_waits: AtomicU64,
    /// TLS on secureClientPort, if configured.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    /// Failed authentications (addauth, the AdminServer).
    pub auth_failed: AtomicU64,
    /// This member's id (`myid`); 0 standalone.
    my_id: AtomicI64,
    started_wall: SystemTime,
    /// When the AdminServer last ran a rate-limited command.
    admin_last_limited: Mutex<Option<Instant>>,
    pub watch_tables: Vec<Arc<Mutex<WatchTable>>>,
    pub conns: Mutex<BTreeMap<u64, Arc<ConnInfo>>>,
    conns_per_ip: Mutex<HashMap<IpAddr, u32>>,
    last_zxid: AtomicI64,
    /// The tree recovery rebuilt: what shards serve until the first commit.
    pub initial_tree: Arc<crate::tree::DataTree>,
    /// What the txn log has done (writes, fsyncs, txns).
    pub log_stats: Arc<ringkeeper_storage::group::LogStats>,
    /// What this server is in its ensemble (see [`ServerMode`]).
    mode: std::sync::atomic::AtomicU8,
    /// As leader, its learners as `mntr` reports them.
    leader_figures: Mutex<Option<crate::zab::LeaderFigures>>,
}

/// What a server is, as `srvr` and `mntr` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerMode {
    Standalone = 0,
    /// An ensemble member without a leader: it serves no clients.
    Looking = 1,
    Leader = 2,
    Follower = 3,
    Observer = 4,
    /// A member without a quorum in ZooKeeper's read-only mode: it serves reads to
    /// read-only clients only.
    ReadOnly = 5,
}

impl ServerMode {
    pub fn name(self) -> &'static str {
        match self {
            ServerMode::Standalone => "standalone",
            ServerMode::Looking => "looking",
            ServerMode::Leader => "leader",
            ServerMode::Follower => "follower",
            ServerMode::Observer => "observer",
            ServerMode::ReadOnly => "read-only",
        }
    }

    /// Whether clients are served (a looking member has no leader to order writes).
    pub fn serving(self) -> bool {
        self != ServerMode::Looking
    }
}

impl ServerShared {
    pub fn new(cfg: Arc<Config>, initial_tree: Arc<crate::tree::DataTree>) -> ServerShared {
        ServerShared {
            last_zxid: AtomicI64::new(initial_tree.last_zxid()),
            initial_tree,
            log_stats: Arc::new(ringkeeper_storage::group::LogStats::warning_after_ms(
                cfg.fsync_warning_threshold_ms,
            )),
            shard_stats: (0..cfg.shards).map(|_| CachePadded::default()).collect(),
            latencies: (0..cfg.shards)
                .map(|_| CachePadded::new(Mutex::new(PublishedLatencies::new(Instant::now()))))
                .collect(),
            snapshot_stats: Arc::default(),
            connections_rejected: AtomicU64::new(0),
            throttle_waits: AtomicU64::new(0),
            auth_failed: AtomicU64::new(0),
            tls: None,
            my_id: AtomicI64::new(0),
            started_wall: SystemTime::now(),
            admin_last_limited: Mutex::new(None),
            watch_tables: (0..cfg.shards).map(|_| Arc::default()).collect(),
            cfg,
            started: Instant::now(),
            started_monotonic_ms: monotonic_ms(),
            conns: Mutex::default(),
            conns_per_ip: Mutex::default(),
            mode: std::sync::atomic::AtomicU8::new(ServerMode::Standalone as u8),
            leader_figures: Mutex::new(None),
        }
    }

    pub fn mode(&self) -> ServerMode {
        match self.mode.load(std::sync::atomic::Ordering::Acquire) {
            1 => ServerMode::Looking,
            2 => ServerMode::Leader,
            3 => ServerMode::Follower,
            4 => ServerMode::Observer,
            5 => ServerMode::ReadOnly,
            _ => ServerMode::Standalone,
        }
    }

    pub fn set_mode(&self, m: ServerMode) {
        self.mode
            .store(m as u8, std::sync::atomic::Ordering::Release);
    }

    pub fn leader_figures(&self) -> Option<crate::zab::LeaderFigures> {
        *self.leader_figures.lock().expect("leader_figures poisoned")
    }

    pub fn set_leader_figures(&self, f: Option<crate::zab::LeaderFigures>) {
        *self.leader_figures.lock().expect("leader_figures poisoned") = f;
    }

    /// Registers a new connection unless its IP already holds maxClientCnxns.
    pub fn admit(&self, info: Arc<ConnInfo>) -> bool {
        let ip = info.peer.ip();
        let mut per_ip = self.conns_per_ip.lock().expect("conns_per_ip poisoned");
        let n = per_ip.entry(ip).or_default();
        let limit = self.cfg.max_client_cnxns;
        if limit != 0 && *n >= limit {
            tracing::warn!("Too many connections from /{ip} - max is {limit}");
            self.connections_rejected.fetch_add(1, Relaxed);
            return false;
        }
        *n += 1;
        drop(per_ip);
        self.conns
            .lock()
            .expect("conns poisoned")
            .insert(info.id, info);
        true
    }

    pub fn release(&self, info: &ConnInfo) {
        self.conns.lock().expect("conns poisoned").remove(&info.id);
        let mut per_ip = self.conns_per_ip.lock().expect("conns_per_ip poisoned");
        if let Some(n) = per_ip.get_mut(&info.peer.ip()) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&info.peer.ip());
            }
        }
    }

    pub fn my_id(&self) -> i64 {
        self.my_id.load(Relaxed)
    }

    pub fn set_my_id(&self, id: i64) {
        self.my_id.store(id, Relaxed);
    }

    /// When the server started, in seconds since the epoch.
    pub fn started_unix_s(&self) -> u64 {
        self.started_wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Whether a rate-limited AdminServer command may run now (at most once per
    /// `interval_ms`); if so, the interval starts again.
    pub fn admin_rate_limit_allows(&self, interval_ms: u64) -> bool {
        let mut last = self.admin_last_limited.lock().expect("rate limit poisoned");
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t).as_millis() < interval_ms as u128) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The request counters of all shards added up.
    pub fn request_totals(&self) -> RequestTotals {
        let mut t = RequestTotals::default();
        let mut min = u64::MAX;
        for s in &self.shard_stats {
            t.received += s.packets_received.load(Relaxed);
            t.sent += s.packets_sent.load(Relaxed);
            let n = s.latency_count.load(Relaxed);
            if n > 0 {
                min = min.min(s.latency_min_us.load(Relaxed));
            }
            t.lat_max_us = t.lat_max_us.max(s.latency_max_us.load(Relaxed));
            t.lat_sum_us += s.latency_sum_us.load(Relaxed);
            t.lat_count += n;
            t.outstanding += s.outstanding.load(Relaxed);
        }
        t.lat_min_us = if min == u64::MAX { 0 } else { min };
        t
    }

    /// Whether the requests in flight (writes at the broadcast core) have reached
    /// the server's limit: globalOutstandingLimit, or request_throttle_max_requests
    /// if that is set and lower.
    pub fn over_outstanding_limit(&self) -> bool {
        let limit = self.cfg.outstanding_limit();
        limit > 0
            && self
                .shard_stats
                .iter()
                .map(|s| s.outstanding.load(Relaxed))
                .sum::<i64>()
                >= limit as i64
    }

    /// `srst`: every shard's counters and latencies back to zero.
    pub fn reset_request_stats(&self) {
        for s in &self.shard_stats {
            s.reset();
        }
        for l in &self.latencies {
            l.lock()
                .expect("latency slot poisoned")
                .reset(Instant::now());
        }
    }

    pub fn connection_count(&self) -> usize {
        self.conns.lock().expect("conns poisoned").len()
    }

    /// `at` on the monotonic clock, in ms (what ZooKeeper's Time.currentElapsedTime
    /// would have read then).
    pub fn monotonic_ms_at(&self, at: Instant) -> u64 {
        self.started_monotonic_ms + at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// The last durable zxid, set before the batch that carries it reaches any shard.
    pub fn set_last_zxid(&self, z: i64) {
        self.last_zxid
            .store(z, std::sync::atomic::Ordering::Release);
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// CLOCK_MONOTONIC in ms (the clock Instant reads).
fn monotonic_ms() -> u64 {
    // SAFETY: clock_gettime fills a local struct.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    }
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error(
        "cannot start executor {name}: {source}. io_uring needs locked memory: raise the \
         memlock limit (ulimit -l unlimited, or LimitMEMLOCK=infinity under systemd)"
    )]
    Executor {
        name: String,
        source: glommio::GlommioError<()>,
    },
    #[error("{0}")]
    Listen(#[from] listen::ListenError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}, set by {keys}: {source}")]
    OperatorPort {
        addr: SocketAddr,
        keys: &'static str,
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{key} {} is in use: {source}. Two servers on one data directory would corrupt \
         it: stop the other server, or give this one a {key} of its own",
        dir.display()
    )]
    Locked {
        key: &'static str,
        dir: std::path::PathBuf,
        source: ringkeeper_storage::dirlock::DirLockError,
    },
    #[error("{key}: {source}")]
    LockFile {
        key: &'static str,
        source: ringkeeper_storage::dirlock::DirLockError,
    },
    #[error("executor {0} stopped unexpectedly")]
    Died(String),
    #[error(
        "the executors did not start within {waited_s} s: {what}; {ready} of {shards} \
         shard(s) connected to it (a bug: please report it with this log)"
    )]
    Stalled {
        waited_s: u64,
        ready: usize,
        shards: usize,
        what: &'static str,
    },
    /// The broadcast core could not start: its txn log, or a member's epochs.
    #[error("{0}")]
    Core(String),
    #[error("recovery failed: {0}")]
    Recovery(#[from] crate::recovery::RecoveryError),
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a zeroed local cpu_set_t for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Raises RLIMIT_MEMLOCK as far as allowed; io_uring rings and registered buffers
/// count against it. Returns the limit in force afterwards, in bytes.
pub fn raise_memlock_limit() -> u64 {
    raise_rlimit(libc::RLIMIT_MEMLOCK, libc::RLIM_INFINITY)
}

/// Raises RLIMIT_NOFILE as far as allowed (up to fs.nr_open): every client connection
/// is a descriptor, and the default soft limit would refuse clients long before memory
/// runs out. Returns the limit in force afterwards.
pub fn raise_open_files_limit() -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    raise_rlimit(libc::RLIMIT_NOFILE, nr_open)
}

/// Sets `resource` to `want` (soft and hard); without the privilege to raise the hard
/// limit, lifts the soft limit to the hard one. Returns the soft limit in force.
fn raise_rlimit(resource: libc::__rlimit_resource_t, want: libc::rlim_t) -> u64 {
    // SAFETY: plain getrlimit/setrlimit on local structs.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(resource, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let up = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(resource, &up) == 0 {
            return up.rlim_cur;
        }
        let up = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(resource, &up) == 0 {
            return up.rlim_cur;
        }
        lim.rlim_cur
    }
}

/// Locks dataDir's and dataLogDir's storage directories (once if they are one
/// directory by two names) for the life of the process.
fn lock_storage_dirs(cfg: &Config) -> Result<Vec<DirLock>, StartError> {
    let mut locks: Vec<DirLock> = Vec::new();
    let mut seen = Vec::new();
    for (key, dir) in [
        ("dataDir", cfg.snapshot_dir()),
        ("dataLogDir", cfg.log_dir()),
    ] {
        std::fs::create_dir_all(&dir).map_err(|source| StartError::Dir {
            path: dir.clone(),
            source,
        })?;
        let same = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if seen.contains(&same) {
            continue;
        }
        seen.push(same);
        let lock = DirLock::acquire(&dir).map_err(|source| match source {
            ringkeeper_storage::dirlock::DirLockError::Held { .. } => StartError::Locked {
                key,
                dir: dir.clone(),
                source,
            },
            // Not another server: the lock file itself could not be made (a full or
            // read-only disk), which says nothing about the directory being in use.
            ringkeeper_storage::dirlock::DirLockError::Io { .. } => {
                StartError::LockFile { key, source }
            }
        })?;
        locks.push(lock);
    }
    Ok(locks)
}

/// The broadcast core: standalone, or as an ensemble member.
async fn run_core(
    cfg: Arc<Config>,
    member: Option<crate::peering::MemberConfig>,
    recovered: crate::recovery::Recovered,
    inbound: Vec<shared_channel::SharedReceiver<broadcast::messages::ToCore>>,
    outbound: Vec<shared_channel::SharedSender<Arc<broadcast::messages::Batch>>>,
    shared: Arc<ServerShared>,
    started: broadcast::StartReport,
) {
    match member {
        Some(m) => {
            broadcast::member::run(cfg, m, recovered, inbound, outbound, shared, started).await
        }
        None => broadcast::run(cfg, recovered, inbound, outbound, shared, started).await,
    }
}

/// Binds the AdminServer's and the Prometheus endpoint's ports, if they are on: a
/// port that cannot be bound stops start-up with the key that names it.
fn bind_operator_ports(cfg: &Config) -> Result<Vec<shard::admin::Endpoint>, StartError> {
    let mut out = Vec::new();
    for (on, service, ip, port, keys) in [
        (
            cfg.admin_enable_server,
            shard::admin::Service::Admin,
            cfg.admin_server_address,
            cfg.admin_server_port,
            "admin.serverAddress/admin.serverPort (admin.enableServer=false turns the AdminServer off)",
        ),
        (
            cfg.prometheus_enabled,
            shard::admin::Service::Prometheus,
            cfg.prometheus_host,
            cfg.prometheus_port,
            "metricsProvider.httpHost/metricsProvider.httpPort",
        ),
    ] {
        if !on {
            continue;
        }
        let addr = SocketAddr::new(ip, port);
        let listener = std::net::TcpListener::bind(addr).map_err(|source| StartError::OperatorPort {
            addr,
            keys,
            source,
        })?;
        tracing::info!("{service:?} endpoint on http://{addr}");
        out.push(shard::admin::Endpoint { service, listener });
    }
    Ok(out)
}

/// How long the executors may take to start and connect to one another.
const EXECUTORS_START_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts the broadcast core and the shards, binds the client port, and blocks until
/// the server stops. `ready` is called with the bound address once clients can connect.
pub fn run(cfg: Config, ready: impl FnOnce(SocketAddr) + Send + 'static) -> Result<(), StartError> {
    run_as(cfg, None, ready)
}

/// [`run`], as ensemble member `member` when given one.
pub fn run_as(
    cfg: Config,
    member: Option<crate::peering::MemberConfig>,
    ready: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<(), StartError> {
    let cfg = Arc::new(cfg);
    // Held until the process ends: the kernel drops them however it ends.
    let _dir_locks = lock_storage_dirs(&cfg)?;
    let addr = SocketAddr::new(cfg.client_port_address, cfg.client_port);
    // The port is taken before recovery reads anything, so a port in use is reported
    // at once and no second server can join it while this one recovers.
    let (listeners, bound) = listen::bind_shard_listeners(addr, cfg.shards)?;
    let mut listeners = listeners.into_iter();
    let mut endpoints = bind_operator_ports(&cfg)?;
    // TLS: the key and trust stores are read now, so that a bad one stops start-up.
    let (tls, mut secure_listeners) = match cfg.secure_client_port {
        Some(port) => {
            let config = crate::tls::server_config(&cfg.ssl).map_err(StartError::Tls)?;
            let ip = cfg
                .secure_client_port_address
                .unwrap_or(cfg.client_port_address);
            let (ls, bound) = listen::bind_shard_listeners(SocketAddr::new(ip, port), cfg.shards)?;
            tracing::info!("TLS clients on {bound} (secureClientPort)");
            (
                Some(futures_rustls::TlsAcceptor::from(config)),
                ls.into_iter(),
            )
        }
        None => (None, Vec::new().into_iter()),
    };
    let recovered = crate::recovery::recover(&cfg)?;
    if cfg.autopurge_purge_interval_hours > 0 {
        broadcast::purge(&cfg);
    }
    let mut shared = ServerShared::new(cfg.clone(), Arc::new(recovered.tree.clone()));
    shared.tls = tls;
    let shared = Arc::new(shared);
    if let Some((path, zxid)) = &recovered.snapshot {
        shared.snapshot_stats.started_from(path, *zxid);
    }
    if let Some(m) = &member {
        // No clients until the member has a leader.
        shared.set_mode(ServerMode::Looking);
        shared.set_my_id(m.peer.my_id);
    }
    // The operator endpoints run on the last shard's executor (with the core on
    // shard 0's on small machines, the other one).
    let last_shard = cfg.shards - 1;
    // Each executor on a CPU of its own (the CPUs this process may run on: under
    // taskset they need not start at 0) when at least one CPU is left over. The
    // helper threads (io_uring's workers, which run the O_DSYNC log writes, and the
    // blocking pool) inherit an executor's CPU: with every CPU pinned they compete
    // with a spinning executor, and writes slow down (seen on 2 cores: the discovery
    // bench test's registrars fell to a quarter of their rate). Pinning those helpers
    // elsewhere is still to do. A member sharing the machine with other members pins
    // nothing (`Config::share_cpus`): each would pin its executors to the same CPUs.
    let cpus = allowed_cpus();
    let cores = cpus.len().max(1);
    let executors = cfg.shards + usize::from(!cfg.core_on_shard);
    let pin = cfg.pin_executors && executors < cores && !cpus.is_empty();
    let placement = |i: usize| {
        if pin {
            Placement::Fixed(cpus[i % cpus.len()])
        } else {
            Placement::Unbound
        }
    };

    let mut to_core_rx = Vec::new();
    let mut to_core_tx = Vec::new();
    let mut to_shard_rx = Vec::new();
    let mut to_shard_tx = Vec::new();
    for _ in 0..cfg.shards {
        let (tx, rx) = shared_channel::new_bounded(CHANNEL_CAPACITY);
        to_core_tx.push(tx);
        to_core_rx.push(rx);
        let (tx, rx) = shared_channel::new_bounded(CHANNEL_CAPACITY);
        to_shard_tx.push(tx);
        to_shard_rx.push(rx);
    }

    let core_cfg = cfg.clone();
    let core_shared = shared.clone();
    let spin = std::time::Duration::from_micros(cfg.spin_before_park_us);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let mut shards = Vec::new();
    let mut core = None;
    let mut first_shard = 0;
    if cfg.core_on_shard {
        // Shard 0's executor runs the broadcast core and shard 0 as two tasks.
        let tx = to_core_tx.remove(0);
        let rx = to_shard_rx.remove(0);
        first_shard = 1;
        let shared = shared.clone();
        let ready_tx = ready_tx.clone();
        let name = "rk-shard-0".to_string();
        let listener = listeners.next().expect("one listener per shard");
        let eps = shard::ExtraListeners {
            secure: secure_listeners.next(),
            endpoints: if last_shard == 0 {
                std::mem::take(&mut endpoints)
            } else {
                Vec::new()
            },
        };
        let h = LocalExecutorBuilder::new(placement(0))
            .name(&name)
            .io_memory(CORE_IO_MEMORY_BYTES)
            .spin_before_park(spin)
            .spawn(move || async move {
                glommio::spawn_local(run_core(
                    core_cfg,
                    member,
                    recovered,
                    to_core_rx,
                    to_shard_tx,
                    core_shared,
                    started_tx,
                ))
                .detach();
                shard::run(0, listener, shared, tx, rx, eps, ready_tx).await
            })
            .map_err(|source| StartError::Executor { name, source })?;
        shards.push(h);
    } else {
        core = Some(
            LocalExecutorBuilder::new(placement(cores - 1))
                .name("rk-broadcast")
                .io_memory(CORE_IO_MEMORY_BYTES)
                .spin_before_park(spin)
                .spawn(move || {
                    run_core(
                        core_cfg,
                        member,
                        recovered,
                        to_core_rx,
                        to_shard_tx,
                        core_shared,
                        started_tx,
                    )
                })
                .map_err(|source| StartError::Executor {
                    name: "rk-broadcast".into(),
                    source,
                })?,
        );
    }
    for (i, (tx, rx)) in (first_shard..).zip(to_core_tx.into_iter().zip(to_shard_rx)) {
        let shared = shared.clone();
        let ready_tx = ready_tx.clone();
        let name = format!("rk-shard-{i}");
        let listener = listeners.next().expect("one listener per shard");
        let eps = shard::ExtraListeners {
            secure: secure_listeners.next(),
            endpoints: if i == last_shard {
                std::mem::take(&mut endpoints)
            } else {
                Vec::new()
            },
        };
        let h = LocalExecutorBuilder::new(placement(i % cores))
            .name(&name)
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spin_before_park(spin)
            .spawn(move || shard::run(i, listener, shared, tx, rx, eps, ready_tx))
            .map_err(|source| StartError::Executor { name, source })?;
        shards.push(h);
    }
    drop(ready_tx);
    // The shards connect their channels to the core in milliseconds. One start in CI
    // never got there (one executor spinning, the other parked): fail loudly then,
    // instead of holding the port and a core forever.
    let deadline = std::time::Instant::now() + EXECUTORS_START_WAIT;
    // First the core: a txn log it cannot open (or a member's unreadable epochs)
    // ends start-up here, before any shard serves.
    match started_rx.recv_timeout(EXECUTORS_START_WAIT) {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(StartError::Core(why)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            return Err(StartError::Stalled {
                waited_s: EXECUTORS_START_WAIT.as_secs(),
                ready: 0,
                shards: cfg.shards,
                what: "the broadcast core did not open its txn log",
            })
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            return Err(StartError::Died("running the broadcast core".into()))
        }
    }
    for ready in 0..cfg.shards {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match ready_rx.recv_timeout(left) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(StartError::Stalled {
                    waited_s: EXECUTORS_START_WAIT.as_secs(),
                    ready,
                    shards: cfg.shards,
                    what: "the shards did not connect to the broadcast core",
                })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(StartError::Died("shard".into()))
            }
        }
    }
    ready(bound);
    for (i, h) in shards.into_iter().enumerate() {
        if h.join().is_err() {
            return Err(StartError::Died(format!("rk-shard-{i}")));
        }
    }
    if let Some(core) = core {
        core.join()
            .map_err(|_| StartError::Died("rk-broadcast".into()))?;
    }
    Ok(())
}
