//! Four-letter words on the client port, in the shapes ZooKeeper prints them so that
//! existing scripts and monitoring keep parsing them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;

use super::Shard;
use crate::broadcast::messages::{SessionSummary, ToCore};
use crate::config::dir_size;
use crate::metrics::figures::java_double;
use crate::server::ServerMode;
use crate::session::watches::WatchSide;

/// The version string clients and scripts see.
pub fn version() -> String {
    format!(
        "3.8.0-ringkeeper-{}, built on ringkeeper",
        env!("CARGO_PKG_VERSION")
    )
}

pub(super) fn op_name(op: i32) -> &'static str {
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
    let t = shard.shared.request_totals();
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
        java_double(t.avg_latency_ms()),
        t.lat_max_us / 1000,
        t.received,
        t.sent,
        shard.shared.connection_count(),
        t.outstanding,
        shard.tree_zxid(),
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
    let mut s = String::from("Environment:\n");
    for (k, v) in environment(shards) {
        let _ = writeln!(s, "{k}={v}");
    }
    s
}

/// The entries `envi` and the AdminServer's `environment` show, in order.
pub(super) fn environment(shards: usize) -> Vec<(&'static str, String)> {
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
    vec![
        ("zookeeper.version", version()),
        ("host.name", host.trim().to_string()),
        ("java.version", "n/a (ringkeeper is native)".into()),
        ("os.name", os_name),
        ("os.arch", arch.to_string()),
        ("os.version", os_version),
        ("user.name", user),
        ("user.home", home),
        ("user.dir", cwd),
        ("ringkeeper.shards", shards.to_string()),
    ]
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
pub(super) async fn sessions(shard: &Shard) -> Vec<SessionSummary> {
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
        // conf and dirs read directory sizes: on the blocking pool, not this executor.
        "conf" => {
            let cfg = cfg.clone();
            glommio::executor()
                .spawn_blocking(move || cfg.conf_lines().join("\n") + "\n")
                .await
        }
        "cons" => cons(shard),
        "crst" => {
            for c in shard.shared.conns.lock().expect("conns poisoned").values() {
                c.reset_stats();
            }
            "Connection stats reset.\n".into()
        }
        "srst" => {
            shard.shared.reset_request_stats();
            "Server stats reset.\n".into()
        }
        "envi" => envi(cfg.shards),
        "mntr" => super::admin::report(shard).await.mntr(),
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
        "dirs" => {
            let cfg = cfg.clone();
            glommio::executor()
                .spawn_blocking(move || {
                    format!(
                        "datadir_size: {}\nlogdir_size: {}\n",
                        dir_size(&cfg.snapshot_dir()),
                        dir_size(&cfg.log_dir())
                    )
                })
                .await
        }
        other => format!("{other} is not supported by ringkeeper.\n"),
    }
}
