//! The server's figures, gathered once per scrape and shown three ways: `mntr` (the
//! four-letter word, `zk_` keys), the AdminServer's `monitor` (JSON, the same keys
//! without the prefix) and the Prometheus endpoint (ZooKeeper's metric names). One list
//! feeds all three, so they cannot disagree.

use std::sync::atomic::Ordering::Relaxed;

use super::latency::{self, OpLatency};
use crate::server::{ServerMode, ServerShared};
use crate::session::watches::WatchSide;
use crate::tree::DataTree;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    /// Shown by `mntr` and `monitor`, not exported to Prometheus.
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One figure: its key in `mntr`/`monitor`, and its Prometheus family and labels.
#[derive(Debug, Clone)]
pub struct Figure {
    pub key: String,
    pub family: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub kind: Kind,
    pub help: &'static str,
    pub value: Value,
}

/// A latency figure in ZooKeeper's shape: avg/min/max/cnt/sum in ms (`mntr`), and a
/// summary with quantiles (Prometheus).
pub struct Summary {
    pub name: &'static str,
    pub help: &'static str,
    /// Since start-up: count, sum, min, max.
    pub total: OpLatency,
    /// The recent window: quantiles. None: a ZooKeeper AvgMinMax figure (no quantiles).
    pub recent: Option<OpLatency>,
}

/// Time figures that are not per request (the txn log's writes, snapshots): count,
/// sum, min and max in µs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    pub count: u64,
    pub sum_us: u64,
    pub min_us: u64,
    pub max_us: u64,
}

pub struct Report {
    pub figures: Vec<Figure>,
    pub summaries: Vec<Summary>,
    pub timings: Vec<(&'static str, &'static str, Timing)>,
    /// Request latency per operation type, merged over the shards.
    pub per_op: latency::Merged,
}

/// What a scrape reads besides [`ServerShared`]: the tree the scraping shard serves
/// from, and the session count (the broadcast core's table).
pub struct Inputs<'a> {
    pub shared: &'a ServerShared,
    pub tree: &'a DataTree,
    pub global_sessions: usize,
}

struct Builder {
    figures: Vec<Figure>,
}

impl Builder {
    fn push(&mut self, key: &'static str, kind: Kind, help: &'static str, value: Value) {
        self.figures.push(Figure {
            key: key.to_string(),
            family: key,
            labels: Vec::new(),
            kind,
            help,
            value,
        });
    }

    fn gauge(&mut self, key: &'static str, help: &'static str, v: i64) {
        self.push(key, Kind::Gauge, help, Value::Int(v));
    }

    fn counter(&mut self, key: &'static str, help: &'static str, v: u64) {
        self.push(key, Kind::Counter, help, Value::Int(v as i64));
    }
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64)
}

fn max_fds() -> i64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0 {
        l.rlim_cur as i64
    } else {
        -1
    }
}

/// A double as Java's Double.toString prints small values ("0.0", "0.1374").
pub fn java_double(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

impl Report {
    pub fn gather(i: Inputs<'_>) -> Report {
        let shared = i.shared;
        let cfg = &shared.cfg;
        let mut b = Builder {
            figures: Vec::new(),
        };
        let t = shared.request_totals();
        b.push(
            "version",
            Kind::Gauge,
            "the server's version",
            Value::Text(crate::shard::fourlw::version()),
        );
        let mode = shared.mode();
        b.push(
            "server_state",
            Kind::Gauge,
            "leader, follower, observer, standalone, looking or read-only",
            Value::Text(mode.name().into()),
        );
        b.push(
            "avg_latency",
            Kind::Gauge,
            "mean request latency in ms",
            Value::Float(t.avg_latency_ms()),
        );
        b.gauge(
            "max_latency",
            "largest request latency in ms",
            (t.lat_max_us / 1000) as i64,
        );
        b.gauge(
            "min_latency",
            "smallest request latency in ms",
            (t.lat_min_us / 1000) as i64,
        );
        b.counter("packets_received", "packets received", t.received);
        b.counter("packets_sent", "packets sent", t.sent);
        b.gauge(
            "num_alive_connections",
            "client connections",
            shared.connection_count() as i64,
        );
        b.gauge(
            "outstanding_requests",
            "requests waiting for the broadcast core",
            t.outstanding,
        );
        b.gauge("znode_count", "znodes", i.tree.reported_node_count() as i64);
        let watches: usize = shared
            .watch_tables
            .iter()
            .map(|w| {
                let w = w.lock().expect("watch table poisoned");
                w.zookeeper_view(WatchSide::Data).count()
                    + w.zookeeper_view(WatchSide::Child).count()
            })
            .sum();
        b.gauge("watch_count", "watches", watches as i64);
        let ephemerals: usize = i.tree.all_ephemerals().iter().map(|(_, p)| p.len()).sum();
        b.gauge("ephemerals_count", "ephemeral znodes", ephemerals as i64);
        b.gauge(
            "approximate_data_size",
            "bytes of znode data and paths",
            i.tree.approximate_data_size() as i64,
        );
        b.gauge(
            "open_file_descriptor_count",
            "open file descriptors",
            open_fds(),
        );
        b.gauge(
            "max_file_descriptor_count",
            "file descriptor limit",
            max_fds(),
        );
        b.gauge(
            "uptime",
            "ms since start-up",
            shared.started.elapsed().as_millis() as i64,
        );
        b.gauge("global_sessions", "sessions", i.global_sessions as i64);
        b.counter(
            "connection_rejected",
            "connections refused (maxClientCnxns)",
            shared.connections_rejected.load(Relaxed),
        );
        b.counter(
            "request_throttle_wait_count",
            "times a connection was held back by the limit of requests in flight",
            shared.throttle_waits.load(Relaxed),
        );
        b.counter(
            "fsync_threshold_exceed_count",
            "txn log writes slower than fsync.warningthresholdms",
            shared.log_stats.slow_syncs.load(Relaxed),
        );
        if cfg.is_ensemble() {
            let voters = cfg
                .servers
                .iter()
                .filter(|s| s.learner_type == crate::config::quorum::LearnerType::Participant)
                .count();
            b.gauge("quorum_size", "voting members", voters as i64);
        }
        if let (ServerMode::Leader, Some(f)) = (mode, shared.leader_figures()) {
            // ZooKeeper 3.6+ names them so; followers is what 3.5 called the learners,
            // kept for the dashboards that read it.
            b.gauge("learners", "connected learners", f.learners.into());
            b.gauge("followers", "connected learners", f.learners.into());
            b.gauge(
                "synced_followers",
                "followers in sync",
                f.synced_followers.into(),
            );
            b.gauge(
                "synced_non_voting_followers",
                "non-voting followers in sync",
                0,
            );
            b.gauge(
                "synced_observers",
                "observers in sync",
                f.synced_observers.into(),
            );
            b.gauge(
                "pending_syncs",
                "learners being synchronized",
                f.pending_syncs.into(),
            );
            b.gauge("last_proposal_size", "bytes of the last proposal", -1);
        }
        // ringkeeper's own: connections per shard, so the spread is visible.
        let mut per_shard = vec![0i64; cfg.shards];
        for id in shared.conns.lock().expect("conns poisoned").keys() {
            if let Some(n) = per_shard.get_mut((id >> 48) as usize) {
                *n += 1;
            }
        }
        for (s, n) in per_shard.iter().enumerate() {
            b.figures.push(Figure {
                key: format!("rk_shard_{s}_connections"),
                family: "rk_shard_connections",
                labels: vec![("shard", s.to_string())],
                kind: Kind::Gauge,
                help: "client connections per shard",
                value: Value::Int(*n),
            });
        }
        for (s, st) in shared.shard_stats.iter().enumerate() {
            b.figures.push(Figure {
                key: format!("rk_shard_{s}_packets_received"),
                family: "rk_shard_packets_received",
                labels: vec![("shard", s.to_string())],
                kind: Kind::Counter,
                help: "packets received per shard",
                value: Value::Int(st.packets_received.load(Relaxed) as i64),
            });
        }
        b.counter(
            "rk_slow_requests",
            "requests answered later than slowRequestThresholdMs",
            shared
                .shard_stats
                .iter()
                .map(|s| s.slow_requests.load(Relaxed))
                .sum(),
        );
        // The txn log: txns / fsyncs is the group-commit batching factor.
        let log = &shared.log_stats;
        for (key, help, v) in [
            ("rk_log_writes", "txn log writes", &log.writes),
            ("rk_log_fsyncs", "txn log syncs", &log.fsyncs),
            ("rk_log_txns", "txns written", &log.txns),
            ("rk_log_bytes", "bytes written to the txn log", &log.bytes),
            (
                "rk_log_write_us_sum",
                "µs spent in txn log writes",
                &log.write_us,
            ),
        ] {
            b.counter(key, help, v.load(Relaxed));
        }
        let per_op = {
            let slots: Vec<_> = shared
                .latencies
                .iter()
                .map(|s| s.lock().expect("latency slot poisoned"))
                .collect();
            latency::merge(slots.iter().map(|s| &**s))
        };
        let summaries = vec![
            Summary {
                name: "readlatency",
                help: "read request latency in ms",
                total: per_op.total.merged(|c| !latency::is_update(c)),
                recent: Some(per_op.recent.merged(|c| !latency::is_update(c))),
            },
            Summary {
                name: "updatelatency",
                help: "write request latency in ms",
                total: per_op.total.merged(latency::is_update),
                recent: Some(per_op.recent.merged(latency::is_update)),
            },
        ];
        let timings = vec![
            (
                "fsynctime",
                "txn log write and sync time in ms",
                Timing {
                    count: log.writes.load(Relaxed),
                    sum_us: log.write_us.load(Relaxed),
                    min_us: log.write_us_min.load(Relaxed),
                    max_us: log.write_us_max.load(Relaxed),
                },
            ),
            (
                "snapshottime",
                "snapshot write time in ms",
                shared.snapshot_stats.timing(),
            ),
        ];
        Report {
            figures: b.figures,
            summaries,
            timings,
            per_op,
        }
    }

    /// `mntr`'s lines: `zk_<key>\t<value>` (ringkeeper's own keys as they are).
    pub fn mntr(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for (k, v) in self.flat() {
            let prefix = if k.starts_with("rk_") { "" } else { "zk_" };
            let _ = writeln!(s, "{prefix}{k}\t{}", show(&v));
        }
        s
    }

    /// Every figure as one key and value, the way ZooKeeper's `mntr` and `monitor`
    /// flatten them: summaries as avg_/min_/max_/cnt_/sum_ and p50_/p95_/p99_/p999_ in ms.
    pub fn flat(&self) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = self
            .figures
            .iter()
            .map(|f| (f.key.clone(), f.value.clone()))
            .collect();
        for (name, _, t) in &self.timings {
            push_avg_min_max(&mut out, name, t.count, t.sum_us, t.min_us, t.max_us);
        }
        for s in &self.summaries {
            let n = s.total.count();
            let (min, max) = if n == 0 {
                (0, 0)
            } else {
                (s.total.histogram.min(), s.total.histogram.max())
            };
            push_avg_min_max(&mut out, s.name, n, s.total.sum_us, min, max);
            if let Some(r) = &s.recent {
                for (label, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999)] {
                    out.push((
                        format!("{label}_{}", s.name),
                        Value::Int((r.quantile_us(q) / 1000) as i64),
                    ));
                }
            }
        }
        // Per operation type, in µs (ZooKeeper's ms hide everything under one).
        for (op, l) in self.per_op.total.ops() {
            out.push((format!("rk_{op}_count"), Value::Int(l.count() as i64)));
            out.push((
                format!("rk_{op}_latency_us_sum"),
                Value::Int(l.sum_us as i64),
            ));
        }
        for (op, l) in self.per_op.recent.ops() {
            for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
                out.push((
                    format!("rk_{op}_latency_us_{label}"),
                    Value::Int(l.quantile_us(q) as i64),
                ));
            }
            out.push((
                format!("rk_{op}_latency_us_max"),
                Value::Int(l.histogram.max() as i64),
            ));
        }
        out
    }
}

fn push_avg_min_max(
    out: &mut Vec<(String, Value)>,
    name: &str,
    n: u64,
    sum_us: u64,
    min_us: u64,
    max_us: u64,
) {
    let avg_ms = if n == 0 {
        0.0
    } else {
        sum_us as f64 / n as f64 / 1000.0
    };
    out.push((format!("avg_{name}"), Value::Float(avg_ms)));
    out.push((format!("min_{name}"), Value::Int((min_us / 1000) as i64)));
    out.push((format!("max_{name}"), Value::Int((max_us / 1000) as i64)));
    out.push((format!("cnt_{name}"), Value::Int(n as i64)));
    out.push((format!("sum_{name}"), Value::Int((sum_us / 1000) as i64)));
}

pub fn show(v: &Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        Value::Float(f) => java_double(*f),
        Value::Text(t) => t.clone(),
    }
}
