//! Server start-up and the state every executor can see: configuration, counters,
//! the connection registry (for `cons`), watch tables (for `wch*`) and the session
//! list (for `dump`). Everything here is either immutable or behind atomics/mutexes
//! touched off the request path.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use thiserror::Error;

use crate::broadcast;
use crate::config::Config;
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

/// What `cons` shows about one connection.
pub struct ConnInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub established: SystemTime,
    pub session_id: AtomicI64,
    pub timeout_ms: AtomicI32,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub last_cxid: AtomicI32,
    pub last_zxid: AtomicI64,
    pub last_op: AtomicI32,
    pub queued: AtomicI64,
    pub lat_sum_us: AtomicU64,
    pub lat_count: AtomicU64,
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
            lat_sum_us: AtomicU64::new(0),
            lat_count: AtomicU64::new(0),
            lat_max_us: AtomicU64::new(0),
        }
    }
}

pub struct ServerShared {
    pub cfg: Arc<Config>,
    pub started: Instant,
    pub shard_stats: Vec<ShardStats>,
    pub watch_tables: Vec<Arc<Mutex<WatchTable>>>,
    pub conns: Mutex<BTreeMap<u64, Arc<ConnInfo>>>,
    conns_per_ip: Mutex<HashMap<IpAddr, u32>>,
    sessions: Mutex<Vec<(i64, i32)>>,
    last_zxid: AtomicI64,
    /// The tree recovery rebuilt: what shards serve until the first commit.
    pub initial_tree: Arc<crate::tree::DataTree>,
    /// What the txn log has done (writes, fsyncs, txns).
    pub log_stats: Arc<ringkeeper_storage::group::LogStats>,
}

impl ServerShared {
    pub fn new(cfg: Arc<Config>, initial_tree: Arc<crate::tree::DataTree>) -> ServerShared {
        ServerShared {
            last_zxid: AtomicI64::new(initial_tree.last_zxid()),
            initial_tree,
            log_stats: Arc::default(),
            shard_stats: (0..cfg.shards).map(|_| ShardStats::default()).collect(),
            watch_tables: (0..cfg.shards).map(|_| Arc::default()).collect(),
            cfg,
            started: Instant::now(),
            conns: Mutex::default(),
            conns_per_ip: Mutex::default(),
            sessions: Mutex::default(),
        }
    }

    /// Registers a new connection unless its IP already holds maxClientCnxns.
    pub fn admit(&self, info: Arc<ConnInfo>) -> bool {
        let ip = info.peer.ip();
        let mut per_ip = self.conns_per_ip.lock().expect("conns_per_ip poisoned");
        let n = per_ip.entry(ip).or_default();
        let limit = self.cfg.max_client_cnxns;
        if limit != 0 && *n >= limit {
            tracing::warn!("Too many connections from /{ip} - max is {limit}");
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

    pub fn connection_count(&self) -> usize {
        self.conns.lock().expect("conns poisoned").len()
    }

    pub fn publish_sessions(&self, s: Vec<(i64, i32)>) {
        *self.sessions.lock().expect("sessions poisoned") = s;
    }

    pub fn sessions(&self) -> Vec<(i64, i32)> {
        self.sessions.lock().expect("sessions poisoned").clone()
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
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("executor {0} stopped unexpectedly")]
    Died(String),
    #[error("recovery failed: {0}")]
    Recovery(#[from] crate::recovery::RecoveryError),
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

/// Binds the client address the way the shards will (SO_REUSEADDR so a restart is not
/// blocked by the previous run's TIME_WAIT connections, SO_REUSEPORT so every shard can
/// listen on it), to report a port in use before anything starts.
fn probe_listen(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())?;
    sk.listen(1)?;
    Ok(sk)
}

/// Starts the broadcast core and the shards, binds the client port, and blocks until
/// the server stops. `ready` is called with the bound address once clients can connect.
pub fn run(cfg: Config, ready: impl FnOnce(SocketAddr) + Send + 'static) -> Result<(), StartError> {
    let cfg = Arc::new(cfg);
    let addr = SocketAddr::new(cfg.client_port_address, cfg.client_port);
    // Bind once here so a port in use is reported before recovery reads anything;
    // each shard binds its own SO_REUSEPORT listener on the same address.
    let probe = probe_listen(addr).map_err(|source| StartError::Listen { addr, source })?;
    let bound = probe
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?
        .as_socket()
        .unwrap_or(addr);
    drop(probe);
    let recovered = crate::recovery::recover(&cfg)?;
    if cfg.autopurge_purge_interval_hours > 0 {
        broadcast::purge(&cfg);
    }
    let shared = Arc::new(ServerShared::new(
        cfg.clone(),
        Arc::new(recovered.tree.clone()),
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cfg.shards < cores;
    let placement = |cpu: usize| {
        if pin {
            Placement::Fixed(cpu)
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
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
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
        let h = LocalExecutorBuilder::new(placement(0))
            .name(&name)
            .io_memory(CORE_IO_MEMORY_BYTES)
            .spin_before_park(spin)
            .spawn(move || async move {
                glommio::spawn_local(broadcast::run(
                    core_cfg,
                    recovered,
                    to_core_rx,
                    to_shard_tx,
                    core_shared,
                ))
                .detach();
                shard::run(0, bound, shared, tx, rx, ready_tx).await
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
                    broadcast::run(core_cfg, recovered, to_core_rx, to_shard_tx, core_shared)
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
        let h = LocalExecutorBuilder::new(placement(i % cores))
            .name(&name)
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spin_before_park(spin)
            .spawn(move || shard::run(i, bound, shared, tx, rx, ready_tx))
            .map_err(|source| StartError::Executor { name, source })?;
        shards.push(h);
    }
    drop(ready_tx);
    for _ in 0..cfg.shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(StartError::Listen {
                    addr: bound,
                    source,
                })
            }
            Err(_) => return Err(StartError::Died("shard".into())),
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
