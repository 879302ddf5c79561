//! The ringkeeper server binary.

use std::path::PathBuf;
use std::process::ExitCode;

use ringkeeper::config::Config;

/// mimalloc instead of glibc's malloc: on a 3-member ensemble's write load glibc's
/// malloc and free took a quarter of the leader's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: ringkeeper [--config zoo.cfg] [--client-port N] [--client-port-address IP]
                  [--data-dir DIR] [--shards N] [--recover-from-older-snapshot]
                  [--set key=value ...]

With no arguments: standalone on 127.0.0.1:2181, data under ./data.
--config reads a ZooKeeper zoo.cfg; flags override the file; --set takes any
zoo.cfg key or ZooKeeper system property (with or without the zookeeper. prefix).
--recover-from-older-snapshot: if the newest snapshot cannot be read, start from
the newest one that can (and replay the log from there) instead of refusing.";

fn parse_args() -> Result<Config, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config_path: Option<PathBuf> = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let mut value = || -> Result<String, String> {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag {
            "-h" | "--help" => return Err(USAGE.to_string()),
            "-V" | "--version" => {
                println!("ringkeeper {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--config" => config_path = Some(PathBuf::from(value()?)),
            "--client-port" => overrides.push(("clientPort".into(), value()?)),
            "--client-port-address" => overrides.push(("clientPortAddress".into(), value()?)),
            "--data-dir" => overrides.push(("dataDir".into(), value()?)),
            "--shards" => overrides.push(("shards".into(), value()?)),
            "--recover-from-older-snapshot" => {
                overrides.push(("recovery.fallbackToOlderSnapshot".into(), "true".into()))
            }
            "--set" => {
                let kv = value()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--set expects key=value, got {kv:?}"))?;
                overrides.push((k.trim().into(), v.trim().into()));
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    let mut cfg = match &config_path {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    for (n, (k, v)) in overrides.iter().enumerate() {
        cfg.set(k, v, "command line", n + 1)
            .map_err(|e| e.to_string())?;
    }
    cfg.check().map_err(|e| e.to_string())?;
    Ok(cfg)
}

extern "C" fn on_sigusr1(_: libc::c_int) {
    ringkeeper::broadcast::SNAPSHOT_REQUESTED.store(true, std::sync::atomic::Ordering::Release);
}

/// SIGUSR1 asks for a snapshot now (e.g. before a planned restart, so that it replays
/// no log).
fn install_snapshot_signal() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t);
    }
}

/// Logs to stderr at the configured levels (RUST_LOG wins), as text or JSON lines.
fn init_logging(cfg: &Config) {
    let from_env =
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| match ringkeeper::config::log_filter(&v) {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("ringkeeper: RUST_LOG ignored: {e}");
                    None
                }
            });
    let filter = from_env.unwrap_or_else(|| {
        ringkeeper::config::log_filter(&cfg.log_level)
            .expect("logLevel was checked when it was read")
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log_json {
        fmt.json().with_current_span(false).init();
    } else {
        fmt.init();
    }
}

fn main() -> ExitCode {
    let mut cfg = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("ringkeeper: {msg}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg);
    for k in &cfg.unknown_keys {
        tracing::warn!("unknown configuration key {k:?} ignored");
    }
    let mut member = None;
    let mut sharing = 1;
    if cfg.is_ensemble() {
        // Read as ZooKeeper does, so a wrong myid is named before anything else.
        let myid = match ringkeeper::config::quorum::read_myid(&cfg.data_dir) {
            Ok(id) => id,
            Err(e) => {
                eprintln!("ringkeeper: {e}");
                return ExitCode::from(2);
            }
        };
        if !cfg.servers.iter().any(|s| s.id == myid) {
            eprintln!(
                "ringkeeper: my id {myid} (from {}/myid) is not among the server.N lines of {}",
                cfg.data_dir.display(),
                cfg.source
            );
            return ExitCode::from(2);
        }
        member = match ringkeeper::peering::MemberConfig::from_config(&cfg, myid) {
            Ok(m) => {
                let cores = ringkeeper::server::allowed_cpus().len().max(1);
                let local = m.members_on_this_machine();
                cfg.share_cpus(local, cores);
                sharing = local;
                Some(m)
            }
            Err(e) => {
                eprintln!("ringkeeper: {}: {e}", cfg.source);
                return ExitCode::from(2);
            }
        };
    }
    install_snapshot_signal();
    let memlock = ringkeeper::server::raise_memlock_limit();
    tracing::debug!("RLIMIT_MEMLOCK is {memlock} bytes");
    let nofile = ringkeeper::server::raise_open_files_limit();
    tracing::debug!("RLIMIT_NOFILE is {nofile}");
    let mut layout = if cfg.core_on_shard {
        format!(
            "{} shard(s), the broadcast core on shard 0's executor",
            cfg.shards
        )
    } else {
        format!("{} shard(s) + 1 broadcast core", cfg.shards)
    };
    if sharing > 1 {
        layout += &format!(", unpinned: {sharing} members share this machine's CPUs");
    }
    let source = cfg.source.clone();
    let dirs = format!(
        "snapshots in {}, txn log in {}",
        cfg.snapshot_dir().display(),
        cfg.log_dir().display()
    );
    let role = match &member {
        Some(m) => format!(
            "member {} of an ensemble of {}",
            m.peer.my_id,
            m.quorum.len()
        ),
        None => "standalone".to_string(),
    };
    let result = ringkeeper::server::run_as(cfg, member, move |addr| {
        tracing::info!(
            "ringkeeper {} serving ZooKeeper clients on {addr} ({role}, {layout}, config: {source}; {dirs})",
            env!("CARGO_PKG_VERSION")
        );
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringkeeper: {e}");
            ExitCode::from(1)
        }
    }
}
