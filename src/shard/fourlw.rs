//! Four-letter words on the client port, in the shapes ZooKeeper prints them so that
//! existing scripts and monitoring keep parsing them.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;

use super::Shard;

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
        "Latency min/avg/max: {}/{}/{}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: {}\nZxid: 0x{:x}\nMode: standalone\nNode count: {}\n",
        t.lat_min_us / 1000,
        java_double(t.lat_avg_ms),
        t.lat_max_us / 1000,
        t.received,
        t.sent,
        shard.shared.connection_count(),
        t.outstanding,
        shard.tree().last_zxid(),
        shard.tree().reported_node_count()
    );
    s
}

fn cons(shard: &Shard) -> String {
    let mut s = String::new();
    for c in shard.shared.conns.lock().expect("conns poisoned").values() {
        let est = c
            .established
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let n = c.lat_count.load(Relaxed);
        let avg = c.lat_sum_us.load(Relaxed).checked_div(n).unwrap_or(0) / 1000;
        let _ = writeln!(
            s,
            " /{}[1](queued={},recved={},sent={},sid=0x{:x},lop={},est={},to={},lcxid=0x{:x},lzxid=0x{:x},lresp={},llat=0,minlat=0,avglat={},maxlat={})",
            c.peer,
            c.queued.load(Relaxed),
            c.received.load(Relaxed),
            c.sent.load(Relaxed),
            c.session_id.load(Relaxed),
            op_name(c.last_op.load(Relaxed)),
            est,
            c.timeout_ms.load(Relaxed),
            c.last_cxid.load(Relaxed),
            c.last_zxid.load(Relaxed),
            est,
            avg,
            c.lat_max_us.load(Relaxed) / 1000
        );
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

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The answer to a (whitelisted) four-letter word.
pub fn answer(shard: &Shard, word: &str) -> String {
    let cfg = &shard.shared.cfg;
    match word {
        "ruok" => "imok".into(),
        "isro" => "rw".into(),
        "srvr" => srvr(shard, false),
        "stat" => srvr(shard, true),
        "conf" => cfg.conf_lines().join("\n") + "\n",
        "cons" => cons(shard),
        "crst" => {
            for c in shard.shared.conns.lock().expect("conns poisoned").values() {
                c.received.store(0, Relaxed);
                c.sent.store(0, Relaxed);
                c.lat_sum_us.store(0, Relaxed);
                c.lat_count.store(0, Relaxed);
                c.lat_max_us.store(0, Relaxed);
            }
            "Connection stats reset.\n".into()
        }
        "srst" => {
            for s in &shard.shared.shard_stats {
                s.reset();
            }
            "Server stats reset.\n".into()
        }
        "envi" => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let cwd = std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!(
                "Environment:\nzookeeper.version={}\nhost.name={}\njava.version=n/a (ringkeeper is native)\nos.name={}\nos.arch={}\nuser.dir={}\nringkeeper.shards={}\n",
                version(),
                host.trim(),
                std::env::consts::OS,
                std::env::consts::ARCH,
                cwd,
                cfg.shards
            )
        }
        "mntr" => {
            let t = totals(shard);
            let tree = shard.tree();
            let tables = watch_tables(shard);
            let watches: usize = tables.iter().map(|w| w.watch_count()).sum();
            drop(tables);
            let ephemerals: usize = tree.all_ephemerals().iter().map(|(_, p)| p.len()).sum();
            let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
            let mut s = String::new();
            let mut kv = |k: &str, v: String| {
                let _ = writeln!(s, "{k}\t{v}");
            };
            kv("zk_version", version());
            kv("zk_server_state", "standalone".into());
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
            kv(
                "zk_global_sessions",
                shard.shared.sessions().len().to_string(),
            );
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
            ] {
                kv(k, v.load(Relaxed).to_string());
            }
            s
        }
        "wchs" => {
            let tables = watch_tables(shard);
            let conns: usize = tables.iter().map(|w| w.session_count()).sum();
            let paths: usize = tables.iter().map(|w| w.watched_path_count()).sum();
            let total: usize = tables.iter().map(|w| w.watch_count()).sum();
            format!("{conns} connections watching {paths} paths\nTotal watches:{total}\n")
        }
        "wchc" => {
            let mut s = String::new();
            for w in watch_tables(shard) {
                for (sid, paths) in w.by_session() {
                    let _ = writeln!(s, "0x{sid:x}");
                    for p in paths {
                        let _ = writeln!(s, "\t{p}");
                    }
                }
            }
            s
        }
        "wchp" => {
            let mut s = String::new();
            for w in watch_tables(shard) {
                for (p, sids) in w.by_path() {
                    let _ = writeln!(s, "{p}");
                    for sid in sids {
                        let _ = writeln!(s, "\t0x{sid:x}");
                    }
                }
            }
            s
        }
        "dump" => {
            let sessions = shard.shared.sessions();
            let mut s = format!(
                "SessionTracker dump:\nGlobal Sessions({}):\n",
                sessions.len()
            );
            for (sid, to) in sessions {
                let _ = writeln!(s, "0x{sid:x}\t{to}ms");
            }
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
            s
        }
        "dirs" => {
            let log_dir = cfg.data_log_dir.as_ref().unwrap_or(&cfg.data_dir);
            format!(
                "datadir_size: {}\nlogdir_size: {}\n",
                dir_bytes(&cfg.data_dir),
                dir_bytes(log_dir)
            )
        }
        other => format!("{other} is not supported by ringkeeper.\n"),
    }
}
