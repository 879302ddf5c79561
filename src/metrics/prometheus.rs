//! The Prometheus text exposition format (version 0.0.4) of a [`Report`], under
//! ZooKeeper's metric names: a dashboard or alert written for ZooKeeper's
//! PrometheusMetricsProvider reads ringkeeper's endpoint unchanged.
//!
//! - Gauges and counters by their ZooKeeper names (`znode_count`, `packets_received`).
//! - `readlatency` and `updatelatency` as summaries in ms with quantiles 0.5, 0.9 and
//!   0.99 over the recent window, and `fsynctime`, `snapshottime` as summaries with
//!   count and sum (ZooKeeper's AvgMinMax figures).
//! - ringkeeper's own: `rk_request_duration_seconds`, a histogram per operation type
//!   (buckets add up across servers, quantiles do not), and per-shard figures labelled
//!   `shard`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::figures::{Figure, Kind, Report, Value};

/// The upper bounds of `rk_request_duration_seconds`'s buckets, in µs.
const BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &[(&str, String)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A float as Prometheus reads it (integers without a fraction, NaN spelled out).
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    // Families in first-seen order, each with its samples.
    let mut order: Vec<&'static str> = Vec::new();
    let mut families: BTreeMap<&'static str, Vec<&Figure>> = BTreeMap::new();
    for f in &r.figures {
        if matches!(f.value, Value::Text(_)) {
            continue;
        }
        families
            .entry(f.family)
            .or_insert_with(|| {
                order.push(f.family);
                Vec::new()
            })
            .push(f);
    }
    for fam in order {
        let figs = &families[fam];
        let kind = match figs[0].kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(s, "# HELP {fam} {}", figs[0].help);
        let _ = writeln!(s, "# TYPE {fam} {kind}");
        for f in figs {
            let v = match f.value {
                Value::Int(n) => n as f64,
                Value::Float(x) => x,
                Value::Text(_) => continue,
            };
            let _ = writeln!(s, "{fam}{} {}", labels(&f.labels), num(v));
        }
    }
    for sm in &r.summaries {
        let _ = writeln!(s, "# HELP {} {}", sm.name, sm.help);
        let _ = writeln!(s, "# TYPE {} summary", sm.name);
        if let Some(recent) = &sm.recent {
            for q in [0.5, 0.9, 0.99] {
                let v = if recent.count() == 0 {
                    f64::NAN
                } else {
                    recent.quantile_us(q) as f64 / 1000.0
                };
                let _ = writeln!(s, "{}{{quantile=\"{q}\"}} {}", sm.name, num(v));
            }
        }
        let _ = writeln!(s, "{}_count {}", sm.name, sm.total.count());
        let _ = writeln!(
            s,
            "{}_sum {}",
            sm.name,
            num(sm.total.sum_us as f64 / 1000.0)
        );
    }
    for (name, help, t) in &r.timings {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} summary");
        let _ = writeln!(s, "{name}_count {}", t.count);
        let _ = writeln!(s, "{name}_sum {}", num(t.sum_us as f64 / 1000.0));
    }
    let fam = "rk_request_duration_seconds";
    let _ = writeln!(
        s,
        "# HELP {fam} request latency per operation type, from receipt to reply"
    );
    let _ = writeln!(s, "# TYPE {fam} histogram");
    for (op, l) in r.per_op.total.ops() {
        for le in BUCKETS_US {
            let n = l.histogram.count_between(0, le);
            let _ = writeln!(
                s,
                "{fam}_bucket{{op=\"{op}\",le=\"{}\"}} {n}",
                num(le as f64 / 1e6)
            );
        }
        let _ = writeln!(s, "{fam}_bucket{{op=\"{op}\",le=\"+Inf\"}} {}", l.count());
        let _ = writeln!(s, "{fam}_count{{op=\"{op}\"}} {}", l.count());
        let _ = writeln!(s, "{fam}_sum{{op=\"{op}\"}} {}", num(l.sum_us as f64 / 1e6));
    }
    s
}
