//! ringkeeper-bench: a load generator for any server speaking ZooKeeper's protocol
//! (ringkeeper or Apache ZooKeeper), on the project's own codec. `populate` creates the
//! key space; `run` measures an op mix, closed loop or open loop; the scenario commands
//! (`discovery`, `locks`, `fanout`, `storm`) follow the recipes real users run.

mod cli;
mod client;
mod conn;
mod engine;
mod floor;
mod keys;
mod stats;
mod workload;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use ringkeeper::proto::ErrorCode;
use serde_json::{json, Map, Value};

use cli::Flags;
use engine::{Config, Outcome};
use keys::{KeyDist, KEY_PREFIX, SCRATCH};
use workload::{discovery, fanout, locks, mix, populate, Idle};

const USAGE: &str = "\
usage:
  ringkeeper-bench populate --addr H:P --keys N --value-size B [--sessions 8 --depth 64]
                       [--prefix /bench]
  ringkeeper-bench run --addr H:P[,H:P...] --sessions N --depth K --mix get=90,set=10
                       --keys N --value-size B --duration S --warmup S [--rate R] [--json]
                       [--dist uniform|zipf[:S]] [--ops N] [--multi-size 2] [--threads T]
                       [--prefix /bench]
  ringkeeper-bench discovery --addr H:P --sessions N [--services 100 --instances 10
                       --registrars 4 --churn 50] --duration S --warmup S [--json]
  ringkeeper-bench locks --addr H:P --sessions N [--locks 10 --hold-ms 0] --duration S [--json]
  ringkeeper-bench fanout --addr H:P --sessions N --duration S [--json]
  ringkeeper-bench fanout-floor --sessions N --duration S [--json]
                       (fanout's floor on this machine: no server, one thread sends
                       the event frame to N-1 loopback sockets)
  ringkeeper-bench storm --addr H:P --sessions N [--connect-concurrency 256] [--json]
ops in --mix: get, exists, children, set, create, ephemeral, sequential, delete, multi
every command also takes --threads T, --timeout MS (session timeout), --seed N, --quiet";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if cmd == "--help" || cmd == "help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let res = Flags::parse(&argv[1..]).and_then(|f| match cmd.as_str() {
        "populate" => cmd_populate(&f),
        "run" => cmd_run(&f),
        "discovery" => cmd_discovery(&f),
        "locks" => cmd_locks(&f),
        "fanout" => cmd_fanout(&f),
        "fanout-floor" => cmd_fanout_floor(&f),
        "storm" => cmd_storm(&f),
        _ => Err(format!("unknown command {cmd:?}")),
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringkeeper-bench: {e}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn addrs(f: &Flags) -> Result<Vec<SocketAddr>, String> {
    let spec = f.str("--addr").unwrap_or_else(|| "127.0.0.1:2181".into());
    let mut out = Vec::new();
    for a in spec.split(',') {
        let resolved = a
            .to_socket_addrs()
            .map_err(|e| format!("--addr {a}: {e}"))?
            .next()
            .ok_or_else(|| format!("--addr {a}: no address"))?;
        out.push(resolved);
    }
    Ok(out)
}

fn secs(f: &Flags, name: &str, default: f64) -> Result<Duration, String> {
    let v: f64 = f.get(name, default)?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{name}: {v} is out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// The engine settings every command shares.
fn config(f: &Flags, sessions: usize, depth: usize) -> Result<Config, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Config {
        addrs: addrs(f)?,
        sessions: f.get("--sessions", sessions)?,
        threads: f.get("--threads", cores)?,
        depth: f.get("--depth", depth)?.max(1),
        rate: f.opt("--rate")?,
        warmup: secs(f, "--warmup", 2.0)?,
        duration: Some(secs(f, "--duration", 10.0)?),
        max_ops: f.opt("--ops")?,
        session_timeout_ms: f.get("--timeout", 30_000)?,
        connect_concurrency: f.get("--connect-concurrency", 256)?,
        record_sessions: false,
        progress: !f.switch("--quiet"),
    })
}

/// The key space's parent: an absolute path of one or more components.
fn prefix(f: &Flags) -> Result<String, String> {
    let p = f.str("--prefix").unwrap_or_else(|| KEY_PREFIX.into());
    if !p.starts_with('/') || p.ends_with('/') || p.contains("//") || p.contains('\0') {
        return Err(format!("--prefix: {p:?} is not a znode path"));
    }
    Ok(p)
}

fn seed(f: &Flags) -> Result<u64, String> {
    f.get("--seed", 1u64)
}

/// A run id that keeps names made by this run apart from earlier runs'.
fn run_id() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u32) ^ std::process::id().rotate_left(16)
}

/// `/a/b/c` → `/a`, `/a/b`, `/a/b/c`.
fn with_ancestors(path: &str) -> Vec<String> {
    path.match_indices('/')
        .skip(1)
        .map(|(i, _)| path[..i].to_string())
        .chain(std::iter::once(path.to_string()))
        .collect()
}

/// Creates `paths` (parents first) with a blocking session; existing ones are kept.
fn ensure_paths(addr: SocketAddr, paths: &[String]) -> Result<(), String> {
    let mut c = client::Conn::connect(&addr.to_string(), 30_000)
        .map_err(|e| format!("setup connection to {addr}: {e}"))?;
    for p in paths {
        c.send(&workload::create(p.clone(), Bytes::new(), 0))
            .and_then(|_| c.flush())
            .map_err(|e| format!("setup: {e}"))?;
        let r = c.recv().map_err(|e| format!("setup: {e}"))?;
        if r.err != 0 && r.err != ErrorCode::NodeExists.code() {
            return Err(format!("setup: create {p}: {}", stats::error_name(r.err)));
        }
    }
    c.close();
    Ok(())
}

/// Reads --json and refuses flags the command did not read, before anything runs.
fn flags_done(f: &Flags) -> Result<bool, String> {
    let json = f.switch("--json");
    f.finish()?;
    Ok(json)
}

/// Prints the table, then (with --json) the JSON object as the last line.
fn report(
    json: bool,
    command: &str,
    cfg: &Config,
    out: Outcome,
    mut extra: Map<String, Value>,
) -> Result<(), String> {
    extra.insert("command".into(), json!(command));
    extra.insert("sessions".into(), json!(cfg.sessions));
    extra.insert("depth".into(), json!(cfg.depth));
    extra.insert("threads".into(), json!(cfg.threads));
    extra.insert("rate".into(), json!(cfg.rate));
    extra.insert("sessions_ready".into(), json!(out.sessions_ready));
    extra.insert("sessions_failed".into(), json!(out.sessions_failed));
    extra.insert("sessions_lost".into(), json!(out.sessions_lost));
    extra.insert(
        "connect_s".into(),
        json!((out.connect_time.as_secs_f64() * 1000.0).round() / 1000.0),
    );
    for (k, v) in out.extra {
        extra.insert(k, v);
    }
    let window = out.window.as_secs_f64();
    println!(
        "{command}: {} sessions ready ({} failed, {} lost), depth {}, {} threads",
        out.sessions_ready, out.sessions_failed, out.sessions_lost, cfg.depth, cfg.threads
    );
    stats::print_table(&out.stats, window);
    if json {
        println!("{}", stats::report_json(&out.stats, window, extra));
    }
    Ok(())
}

fn cmd_populate(f: &Flags) -> Result<(), String> {
    let keys: u64 = f.get("--keys", 1000)?;
    let value_size: usize = f.get("--value-size", 100)?;
    let prefix = prefix(f)?;
    let mut cfg = config(f, 8, 64)?;
    cfg.warmup = Duration::ZERO;
    cfg.duration = None;
    cfg.sessions = cfg.sessions.min(keys.max(1) as usize);
    let json = flags_done(f)?;
    let mut parents = with_ancestors(&prefix);
    parents.push(SCRATCH.to_string());
    ensure_paths(cfg.addrs[0], &parents)?;
    let sessions = cfg.sessions;
    let out = engine::run(&cfg, |_, globals| {
        populate::Populate::new(prefix.clone(), keys, value_size, sessions, globals)
    })?;
    let failed = out.extra.get("failed").and_then(Value::as_u64).unwrap_or(0);
    let mut extra = Map::new();
    extra.insert("keys".into(), json!(keys));
    extra.insert("value_size".into(), json!(value_size));
    eprintln!(
        "populated {keys} keys of {value_size} bytes under {prefix} in {:.1} s",
        out.window.as_secs_f64()
    );
    report(json, "populate", &cfg, out, extra)?;
    if failed > 0 {
        return Err(format!("{failed} creates failed"));
    }
    Ok(())
}

fn cmd_run(f: &Flags) -> Result<(), String> {
    let cfg = config(f, 16, 16)?;
    let prefix = prefix(f)?;
    let keys: u64 = f.get("--keys", 1000)?;
    let value_size: usize = f.get("--value-size", 100)?;
    let mix_spec = f.str("--mix").unwrap_or_else(|| "get=100".into());
    let mix = mix::parse_mix(&mix_spec)?;
    let dist = KeyDist::parse(&f.str("--dist").unwrap_or_else(|| "uniform".into()), keys)?;
    let multi_size: usize = f.get("--multi-size", 2)?;
    let seed = seed(f)?;
    let json = flags_done(f)?;
    if mix.iter().any(|&(o, w)| o.creates() && w > 0) {
        ensure_paths(cfg.addrs[0], &[SCRATCH.to_string()])?;
    }
    let id = run_id();
    let out = engine::run(&cfg, |w, globals| {
        mix::Mix::new(
            prefix.clone(),
            mix.clone(),
            dist.clone(),
            value_size,
            multi_size,
            seed.wrapping_mul(1_000_003).wrapping_add(w as u64),
            id,
            globals,
        )
    })?;
    let mut extra = Map::new();
    extra.insert("mix".into(), json!(mix_spec));
    extra.insert("prefix".into(), json!(prefix));
    extra.insert("run_id".into(), json!(format!("{id:08x}")));
    extra.insert("keys".into(), json!(keys));
    extra.insert("value_size".into(), json!(value_size));
    extra.insert("dist".into(), json!(dist.describe()));
    report(json, "run", &cfg, out, extra)
}

fn cmd_discovery(f: &Flags) -> Result<(), String> {
    let mut cfg = config(f, 100, 1)?;
    cfg.depth = 1;
    let p = discovery::Params {
        services: f.get("--services", 100)?,
        instances: f.get("--instances", 10)?,
        registrars: f.get("--registrars", 4)?,
        churn_per_s: f.get("--churn", 50.0)?,
        value_size: f.get("--value-size", 100)?,
        run_id: run_id(),
    };
    let seed = seed(f)?;
    let json = flags_done(f)?;
    if cfg.sessions <= p.registrars {
        return Err("discovery: --sessions must exceed --registrars (the rest are readers)".into());
    }
    let mut paths = vec![discovery::ROOT.to_string()];
    paths.extend((0..p.services).map(discovery::service_path));
    ensure_paths(cfg.addrs[0], &paths)?;
    let mut extra = Map::new();
    extra.insert("services".into(), json!(p.services));
    extra.insert("instances".into(), json!(p.instances));
    extra.insert("registrars".into(), json!(p.registrars));
    extra.insert("churn_per_s".into(), json!(p.churn_per_s));
    let out = engine::run(&cfg, |w, globals| {
        discovery::Discovery::new(p.clone(), seed.wrapping_add(w as u64), globals)
    })?;
    report(json, "discovery", &cfg, out, extra)
}

fn cmd_locks(f: &Flags) -> Result<(), String> {
    let mut cfg = config(f, 100, 1)?;
    cfg.depth = 1;
    let nlocks: usize = f.get("--locks", 10)?;
    let hold = Duration::from_secs_f64(f.get::<f64>("--hold-ms", 0.0)? / 1000.0);
    let json = flags_done(f)?;
    let mut paths = vec![locks::ROOT.to_string()];
    paths.extend((0..nlocks.max(1)).map(locks::lock_path));
    ensure_paths(cfg.addrs[0], &paths)?;
    let out = engine::run(&cfg, |_, globals| locks::Locks::new(nlocks, hold, globals))?;
    let mut extra = Map::new();
    extra.insert("locks".into(), json!(nlocks));
    extra.insert("hold_ms".into(), json!(hold.as_secs_f64() * 1000.0));
    report(json, "locks", &cfg, out, extra)
}

fn cmd_fanout(f: &Flags) -> Result<(), String> {
    let mut cfg = config(f, 1000, 1)?;
    cfg.depth = 1;
    // One worker sees the whole round: one clock for the setData and every notification.
    cfg.threads = 1;
    let value_size: usize = f.get("--value-size", 10)?;
    let json = flags_done(f)?;
    if cfg.sessions < 2 {
        return Err("fanout: --sessions must be at least 2 (one writer, the rest watch)".into());
    }
    ensure_paths(cfg.addrs[0], &[fanout::NODE.to_string()])?;
    let sessions = cfg.sessions;
    let out = engine::run(&cfg, |_, _| fanout::FanOut::new(sessions, value_size))?;
    report(json, "fanout", &cfg, out, Map::new())
}

fn cmd_fanout_floor(f: &Flags) -> Result<(), String> {
    let sessions: usize = f.get("--sessions", 1000)?;
    let warmup = secs(f, "--warmup", 2.0)?;
    let duration = secs(f, "--duration", 10.0)?;
    // Taken as every command takes it; there is no progress line to quiet.
    let _ = f.switch("--quiet");
    let json = flags_done(f)?;
    if sessions < 2 {
        return Err("fanout-floor: --sessions must be at least 2 (as fanout's)".into());
    }
    let out =
        floor::run(sessions - 1, warmup, duration).map_err(|e| format!("fanout-floor: {e}"))?;
    let window = out.window.as_secs_f64();
    let mut extra = Map::new();
    extra.insert("command".into(), json!("fanout-floor"));
    extra.insert("sessions".into(), json!(sessions));
    extra.insert("rounds".into(), json!(out.rounds));
    println!(
        "fanout-floor: {} loopback connections, {} rounds",
        sessions - 1,
        out.rounds
    );
    stats::print_table(&out.stats, window);
    if json {
        println!("{}", stats::report_json(&out.stats, window, extra));
    }
    Ok(())
}

fn cmd_storm(f: &Flags) -> Result<(), String> {
    let mut cfg = config(f, 10_000, 1)?;
    cfg.warmup = Duration::ZERO;
    cfg.duration = Some(Duration::ZERO);
    cfg.record_sessions = true;
    let json = flags_done(f)?;
    let out = engine::run(&cfg, |_, _| Idle)?;
    let mut extra = Map::new();
    extra.insert(
        "sessions_per_s".into(),
        json!(if out.window.is_zero() {
            0.0
        } else {
            (out.sessions_ready as f64 / out.window.as_secs_f64()).round()
        }),
    );
    report(json, "storm", &cfg, out, extra)
}
