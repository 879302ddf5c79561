//! Four-letter words on the client port, in the shapes ZooKeeper prints them so that
//! existing scripts and monitoring keep parsing them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;

use super::Shard;
use crate::broadcast::messages::{SessionSummary, ToCore};
use crate::config::dir_size;
use crate::server::ServerMode;
use crate::session::watches::WatchSide;

/// The version string clients and scripts see.
pub fn version() -> String {
    format!(
        "3.8.0-ringkeeper-{}, built on ringkeeper",
        env!("CARGO_PKG_VERSION")
    )
}

fn op_name(op: i32) -> &'static str {
    match op {
        1 | 15 | 19 | 21 => "CREA",
        2 => "DELE",
        3 => "EXIS",
        4 => "GETD",
        5 => "SETD",
        6 => "GETA",
        7 => "SETA",
        8 | 12 => "GETC",
        9 => "SYNC",
        11 => "PING",
        13 => "CHEC",
        14 => "MULT",
        22 => "MLTR",
        17 => "CHKW",
        18 => "REMW",
        100 => "AUTH",
        101 | 105 => "SETW",
        103 => "GETE",
        104 => "GETACN",
        106 => "ADDW",
        107 => "WHOAMI",
        -11 => "CLOS",
        _ => "NA",
    }
}

/// A double printed the way Java's Double.toString prints small values ("0.0", "0.1374").
fn java_double(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

struct Totals {
    received: u64,
    sent: u64,
    lat_min_us: u64,
    lat_avg_ms: f64,
    lat_max_us: u64,
    outstanding: i64,
}

fn totals(shard: &Shard) -> Totals {
    let mut t = Totals {
        received: 0,
        sent: 0,
        lat_min_us: u64::MAX,
        lat_avg_ms: 0.0,
        lat_max_us: 0,
        outstanding: 0,
    };
    let mut sum = 0u64;
    let mut count = 0u64;
    for s in &shard.shared.shard_stats {
        t.received += s.packets_received.load(Relaxed);
        t.sent += s.packets_sent.load(Relaxed);
        let n = s.latency_count.load(Relaxed);
        if n > 0 {
            t.lat_min_us = t.lat_min_us.min(s.latency_min_us.load(Relaxed));
        }
        t.lat_max_us = t.lat_max_us.max(s.latency_max_us.load(Relaxed));
        sum += s.latency_sum_us.load(Relaxed);
        count += n;
        t.outstanding += s.outstanding.load(Relaxed);
    }
    if t.lat_min_us == u64::MAX {
        t.lat_min_us = 0;
    }
    if count > 0 {
        t.lat_avg_ms = sum as f64 / count as f64 / 1000.0;
    }
    t
}

fn brief_cons(shard: &Shard, out: &mut String) {
    for c in shard.shared.conns.lock().expect("conns poisoned").values() {
        let _ = writeln!(
            out,
            " /{}[{}](queued={},recved={},sent={})",
            c.peer,
            if c.session_id.load(Relaxed) != 0 {
                1
            } else {
                0
            },
            c.queued.load(Relaxed),
            c.received.load(Relaxed),
            c.sent.load(Relaxed)
        );
    }
}

fn srvr(shard: &Shard, with_clients: bool) -> String {
    let t = totals(shard);
    let mut s = format!("Zookeeper version: {}\n", version());
    if with_clients {
        s.push_str("Clients:\n");
        brief_cons(shard, &mut s);
        s.push('\n');
    }
    let _ = write!(
        s,
        "Latency min/avg/max: {}/{}/{}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: {}\nZxid: 0x{:x}\nMode: {}\nNode count: {}\n",
        t.lat_min_us / 1000,
        java_double(t.lat_avg_ms),
        t.lat_max_us / 1000,
        t.received,
        t.sent,
        shard.shared.connection_count(),
        t.outstanding,
        shard.tree().last_zxid(),
        shard.shared.mode().name(),
        shard.tree().reported_node_count()
    );
    s
}

fn cons(shard: &Shard) -> String {
    let mut s = String::new();
    for c in shard.shared.conns.lock().expect("conns poisoned").values() {
        let session_id = c.session_id.load(Relaxed);
        let _ = write!(
            s,
            " /{}[{}](queued={},recved={},sent={}",
            c.peer,
            if session_id != 0 { 1 } else { 0 },
            c.queued.load(Relaxed),
            c.received.load(Relaxed),
            c.sent.load(Relaxed)
        );
        // ZooKeeper shows the rest only for a connection with a session.
        if session_id != 0 {
            let est = c
                .established
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let _ = write!(
                s,
                ",sid=0x{session_id:x},lop={},est={est},to={}",
                op_name(c.last_op.load(Relaxed)),
                c.timeout_ms.load(Relaxed),
            );
            let last_cxid = c.last_cxid.load(Relaxed);
            if last_cxid >= 0 {
                let _ = write!(s, ",lcxid=0x{last_cxid:x}");
            }
            let n = c.lat_count.load(Relaxed);
            let min_us = c.lat_min_us.load(Relaxed);
            let _ = write!(
                s,
                ",lzxid=0x{:x},lresp={},llat={},minlat={},avglat={},maxlat={}",
                c.last_zxid.load(Relaxed),
                c.last_response_ms.load(Relaxed),
                c.last_latency_us.load(Relaxed) / 1000,
                if min_us == u64::MAX { 0 } else { min_us / 1000 },
                c.lat_sum_us.load(Relaxed).checked_div(n).unwrap_or(0) / 1000,
                c.lat_max_us.load(Relaxed) / 1000
            );
        }
        s.push_str(")\n");
    }
    s.push('\n');
    s
}

fn watch_tables(
    shard: &Shard,
) -> Vec<std::sync::MutexGuard<'_, crate::session::watches::WatchTable>> {
    shard
        .shared
        .watch_tables
        .iter()
        .map(|w| w.lock().expect("watch table poisoned"))
        .collect()
}

/// `envi`: the keys of ZooKeeper's that mean something for a native server, with
/// Java's spelling of the values (os.name "Linux", os.arch "amd64").
fn envi(shards: usize) -> String {
    // SAFETY: uname fills a local struct with NUL-terminated strings.
    let (os_name, os_version) = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) == 0 {
            let field = |f: &[libc::c_char]| {
                std::ffi::CStr::from_ptr(f.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            };
            (field(&u.sysname), field(&u.release))
        } else {
            (std::env::consts::OS.to_string(), String::new())
        }
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "i386",
        other => other,
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (user, home) = current_user();
    format!(
        "Environment:\nzookeeper.version={}\nhost.name={}\njava.version=n/a (ringkeeper is native)\nos.name={os_name}\nos.arch={arch}\nos.version={os_version}\nuser.name={}\nuser.home={}\nuser.dir={cwd}\nringkeeper.shards={shards}\n",
        version(),
        host.trim(),
        user,
        home,
    )
}

/// The effective user's name and home directory, from the password database as Java
/// reads user.name and user.home (empty if it has no entry).
fn current_user() -> (String, String) {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes the entry's strings into buf (of the length given)
    // and sets `found` to point at `pw` on success.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() {
            return (String::new(), String::new());
        }
        let text =
            |p: *const libc::c_char| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        (text(pw.pw_name), text(pw.pw_dir))
    }
}

/// `wchc` (each session, then the paths it watches) or `wchp` (each path, then the
/// sessions watching it) over ZooKeeper's data watches, ending with the blank line
/// ZooKeeper's end with.
fn watch_list(shard: &Shard, by_path: bool) -> String {
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for w in watch_tables(shard) {
        for (sid, p) in w.zookeeper_view(WatchSide::Data) {
            let (sid, p) = (format!("0x{sid:x}"), p.to_string());
            let (key, item) = if by_path { (p, sid) } else { (sid, p) };
            groups.entry(key).or_default().insert(item);
        }
    }
    let mut s = String::new();
    for (key, items) in groups {
        let _ = writeln!(s, "{key}");
        for item in items {
            let _ = writeln!(s, "\t{item}");
        }
    }
    s.push('\n');
    s
}

/// The broadcast core's session table (empty if the core has stopped).
async fn sessions(shard: &Shard) -> Vec<SessionSummary> {
    let (tx, rx) = futures_channel::oneshot::channel();
    if shard.to_core.send(ToCore::Sessions(tx)).await.is_err() {
        return Vec::new();
    }
    rx.await.unwrap_or_default()
}

/// A wall-clock time (ms since the epoch) as Java's Date.toString prints it in the
/// local time zone: "Mon Nov 30 03:35:19 UTC 2026".
fn java_date(wall_ms: i64) -> String {
    let secs = (wall_ms / 1000) as libc::time_t;
    let mut buf = [0u8; 64];
    // SAFETY: localtime_r fills a local struct; strftime writes at most buf.len()
    // bytes into buf and returns how many (0 on failure).
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return wall_ms.to_string();
        }
        libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%a %b %d %H:%M:%S %Z %Y".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// ZooKeeper's ExpiryQueue dump: "Sets (K)/(N):", then each set of elements that expire
/// at one time, earliest first.
fn expiry_sets(out: &mut String, elems: Vec<(i64, String)>) {
    let mut sets: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let n = elems.len();
    for (at, e) in elems {
        sets.entry(at).or_default().push(e);
    }
    let _ = writeln!(out, "Sets ({})/({n}):", sets.len());
    for (at, elems) in sets {
        let _ = writeln!(out, "{} expire at {}:", elems.len(), java_date(at));
        for e in elems {
            let _ = writeln!(out, "\t{e}");
        }
    }
}

/// `dump`, as a standalone ZooKeeper prints it. Sessions expire on their own
/// deadlines here rather than in tickTime buckets, so a set is the sessions that
/// expire at the same millisecond. A connection expires with its session; one
/// without a session is closed once its handshake is overdue.
fn dump(shard: &Shard, sessions: Vec<SessionSummary>) -> String {
    let mut s = String::from("SessionTracker dump:\nSession ");
    let expiry: HashMap<i64, i64> = sessions
        .iter()
        .map(|x| (x.session_id, x.expires_at_wall_ms))
        .collect();
    expiry_sets(
        &mut s,
        sessions
            .iter()
            .map(|x| (x.expires_at_wall_ms, format!("0x{:x}", x.session_id)))
            .collect(),
    );
    let eph = shard.tree().all_ephemerals();
    let _ = writeln!(
        s,
        "ephemeral nodes dump:\nSessions with Ephemerals ({}):",
        eph.len()
    );
    for (sid, paths) in eph {
        let _ = writeln!(s, "0x{sid:x}:");
        for p in paths {
            let _ = writeln!(s, "\t{p}");
        }
    }
    s.push_str("Connections dump:\nConnections ");
    let conns = shard
        .shared
        .conns
        .lock()
        .expect("conns poisoned")
        .values()
        .map(|c| {
            let sid = c.session_id.load(Relaxed);
            let at = expiry.get(&sid).copied().unwrap_or_else(|| {
                let est = c
                    .established
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                est + shard.shared.cfg.sessionless_conn_timeout_ms as i64
            });
            (at, format!("ip: /{} sessionId: 0x{sid:x}", c.peer))
        })
        .collect();
    expiry_sets(&mut s, conns);
    s
}

/// The answer to a (whitelisted) four-letter word.
pub async fn answer(shard: &Shard, word: &str) -> String {
    let cfg = &shard.shared.cfg;
    match word {
        "ruok" => "imok".into(),
        // As ZooKeeper answers: "null" while no server runs (a member without a
        // leader), "ro" in read-only mode, "rw" when it serves writes.
        "isro" => match shard.shared.mode() {
            ServerMode::Looking => "null".into(),
            ServerMode::ReadOnly => "ro".into(),
            _ => "rw".into(),
        },
        "srvr" => srvr(shard, false),
        "stat" => srvr(shard, true),
        "conf" => cfg.conf_lines().join("\n") + "\n",
        "cons" => cons(shard),
        "crst" => {
            for c in shard.shared.conns.lock().expect("conns poisoned").values() {
                c.reset_stats();
            }
            "Connection stats reset.\n".into()
        }
        "srst" => {
            for s in &shard.shared.shard_stats {
                s.reset();
            }
            "Server stats reset.\n".into()
        }
        "envi" => envi(cfg.shards),
        "mntr" => {
            let global_sessions = sessions(shard).await.len();
            let t = totals(shard);
            let tree = shard.tree();
            // ZooKeeper's figure: its data and child watch managers' sizes added up.
            let tables = watch_tables(shard);
            let watches: usize = tables
                .iter()
                .map(|w| {
                    w.zookeeper_view(WatchSide::Data).count()
                        + w.zookeeper_view(WatchSide::Child).count()
                })
                .sum();
            drop(tables);
            let ephemerals: usize = tree.all_ephemerals().iter().map(|(_, p)| p.len()).sum();
            let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
            let mut s = String::new();
            let mut kv = |k: &str, v: String| {
                let _ = writeln!(s, "{k}\t{v}");
            };
            kv("zk_version", version());
            kv("zk_server_state", shard.shared.mode().name().into());
            kv("zk_avg_latency", java_double(t.lat_avg_ms));
            kv("zk_max_latency", (t.lat_max_us / 1000).to_string());
            kv("zk_min_latency", (t.lat_min_us / 1000).to_string());
            kv("zk_packets_received", t.received.to_string());
            kv("zk_packets_sent", t.sent.to_string());
            kv(
                "zk_num_alive_connections",
                shard.shared.connection_count().to_string(),
            );
            kv("zk_outstanding_requests", t.outstanding.to_string());
            kv("zk_znode_count", tree.reported_node_count().to_string());
            kv("zk_watch_count", watches.to_string());
            kv("zk_ephemerals_count", ephemerals.to_string());
            kv(
                "zk_approximate_data_size",
                tree.approximate_data_size().to_string(),
            );
            kv("zk_open_file_descriptor_count", fds.to_string());
            kv(
                "zk_uptime",
                shard.shared.started.elapsed().as_millis().to_string(),
            );
            kv("zk_global_sessions", global_sessions.to_string());
            if let (ServerMode::Leader, Some(f)) =
                (shard.shared.mode(), shard.shared.leader_figures())
            {
                // ZooKeeper 3.6+ names them so; zk_followers is what 3.5 called the
                // learners, kept for the dashboards that read it.
                kv("zk_learners", f.learners.to_string());
                kv("zk_followers", f.learners.to_string());
                kv("zk_synced_followers", f.synced_followers.to_string());
                kv("zk_synced_non_voting_followers", "0".into());
                kv("zk_synced_observers", f.synced_observers.to_string());
                kv("zk_pending_syncs", f.pending_syncs.to_string());
            }
            kv("zk_last_proposal_size", "-1".into());
            // ringkeeper's own: connections per shard, so the spread is visible.
            let mut per_shard = vec![0usize; cfg.shards];
            for id in shard.shared.conns.lock().expect("conns poisoned").keys() {
                if let Some(n) = per_shard.get_mut((id >> 48) as usize) {
                    *n += 1;
                }
            }
            for (i, n) in per_shard.iter().enumerate() {
                kv(&format!("rk_shard_{i}_connections"), n.to_string());
            }
            // The txn log: txns / fsyncs is the group-commit batching factor.
            let log = &shard.shared.log_stats;
            for (k, v) in [
                ("rk_log_writes", &log.writes),
                ("rk_log_fsyncs", &log.fsyncs),
                ("rk_log_txns", &log.txns),
                ("rk_log_bytes", &log.bytes),
                ("rk_log_write_us_sum", &log.write_us),
                ("zk_fsync_threshold_exceed_count", &log.slow_syncs),
            ] {
                kv(k, v.load(Relaxed).to_string());
            }
            s
        }
        // The watch words show ZooKeeper's data watch manager, as ZooKeeper's do:
        // getData/exists watches and persistent ones, not getChildren watches.
        "wchs" => {
            let mut sessions = BTreeSet::new();
            let mut paths = BTreeSet::new();
            let mut total = 0;
            for w in watch_tables(shard) {
                for (sid, p) in w.zookeeper_view(WatchSide::Data) {
                    sessions.insert(sid);
                    paths.insert(p.to_string());
                    total += 1;
                }
            }
            format!(
                "{} connections watching {} paths\nTotal watches:{total}\n",
                sessions.len(),
                paths.len()
            )
        }
        "wchc" => watch_list(shard, false),
        "wchp" => watch_list(shard, true),
        "dump" => {
            let sessions = sessions(shard).await;
            dump(shard, sessions)
        }
        "dirs" => format!(
            "datadir_size: {}\nlogdir_size: {}\n",
            dir_size(&cfg.snapshot_dir()),
            dir_size(&cfg.log_dir())
        ),
        other => format!("{other} is not supported by ringkeeper.\n"),
    }
}
