//! What a run measured: per operation kind, an hdrhistogram of latencies, a count and
//! errors by ZooKeeper code; merged across workers and reported as a table and as JSON.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use ringkeeper::proto::ErrorCode;
use serde_json::{json, Map, Value};

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds are valid")
}

pub struct OpStats {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: BTreeMap<i32, u64>,
    /// A protocol request (counted in the run's totals), or a derived event such as
    /// a lock acquisition or a notification's arrival (reported on its own line).
    pub request: bool,
}

impl OpStats {
    fn new(request: bool) -> OpStats {
        OpStats {
            hist: new_histogram(),
            ops: 0,
            errors: BTreeMap::new(),
            request,
        }
    }
}

#[derive(Default)]
pub struct Stats {
    pub by_op: BTreeMap<&'static str, OpStats>,
}

impl Stats {
    /// Records one completed operation: its latency and its result code (0 = ok).
    pub fn record(&mut self, op: &'static str, request: bool, latency_us: u64, err: i32) {
        let s = self
            .by_op
            .entry(op)
            .or_insert_with(|| OpStats::new(request));
        s.ops += 1;
        s.hist.saturating_record(latency_us.max(1));
        if err != 0 {
            *s.errors.entry(err).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: Stats) {
        for (op, o) in other.by_op {
            let s = self
                .by_op
                .entry(op)
                .or_insert_with(|| OpStats::new(o.request));
            s.ops += o.ops;
            s.hist
                .add(&o.hist)
                .expect("histograms with the same bounds merge");
            for (code, n) in o.errors {
                *s.errors.entry(code).or_default() += n;
            }
        }
    }

    /// All protocol requests together.
    pub fn requests(&self) -> OpStats {
        let mut all = OpStats::new(true);
        for s in self.by_op.values().filter(|s| s.request) {
            all.ops += s.ops;
            all.hist
                .add(&s.hist)
                .expect("histograms with the same bounds merge");
            for (code, n) in &s.errors {
                *all.errors.entry(*code).or_default() += n;
            }
        }
        all
    }
}

pub fn error_name(code: i32) -> String {
    match ErrorCode::from_i32(code) {
        Some(c) => c.name().to_string(),
        None => format!("code {code}"),
    }
}

fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

fn errors_json(errors: &BTreeMap<i32, u64>) -> Value {
    Value::Object(
        errors
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

/// The latency distribution as (percentile, µs) points, dense towards the tail, for a
/// CDF plot.
fn cdf_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!([]);
    }
    let mut pts = Vec::new();
    for p in [
        0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 97.5,
        99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
    ] {
        pts.push(json!([p, h.value_at_percentile(p)]));
    }
    Value::Array(pts)
}

fn op_json(s: &OpStats, window_s: f64) -> Value {
    json!({
        "ops": s.ops,
        "ops_per_s": rate(s.ops, window_s),
        "errors": errors_json(&s.errors),
        "latency_us": latency_json(&s.hist),
    })
}

fn rate(n: u64, window_s: f64) -> f64 {
    if window_s > 0.0 {
        (n as f64 / window_s * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// The run's JSON object: totals over protocol requests at the top level (`ops`,
/// `ops_per_s`, `errors` by code, `latency_us`), each kind under `by_op`, and `extra`
/// (the scenario's own figures and the run's parameters) merged in.
pub fn report_json(stats: &Stats, window_s: f64, extra: Map<String, Value>) -> Value {
    let all = stats.requests();
    let mut obj = match op_json(&all, window_s) {
        Value::Object(m) => m,
        _ => unreachable!("op_json builds an object"),
    };
    obj.insert(
        "window_s".into(),
        json!((window_s * 1000.0).round() / 1000.0),
    );
    obj.insert("latency_cdf".into(), cdf_json(&all.hist));
    obj.insert(
        "by_op".into(),
        Value::Object(
            stats
                .by_op
                .iter()
                .map(|(k, s)| (k.to_string(), op_json(s, window_s)))
                .collect(),
        ),
    );
    obj.extend(extra);
    Value::Object(obj)
}

/// The human table: one line per operation kind, then the total.
pub fn print_table(stats: &Stats, window_s: f64) {
    println!(
        "{:<12} {:>10} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9}  errors",
        "op", "count", "per s", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us"
    );
    let line = |name: &str, s: &OpStats| {
        let errs: Vec<String> = s
            .errors
            .iter()
            .map(|(c, n)| format!("{}={n}", error_name(*c)))
            .collect();
        println!(
            "{:<12} {:>10} {:>11.0} {:>8} {:>8} {:>8} {:>9} {:>9}  {}",
            name,
            s.ops,
            rate(s.ops, window_s),
            s.hist.value_at_quantile(0.5),
            s.hist.value_at_quantile(0.9),
            s.hist.value_at_quantile(0.99),
            s.hist.value_at_quantile(0.999),
            s.hist.max(),
            if errs.is_empty() {
                "-".to_string()
            } else {
                errs.join(" ")
            }
        );
    };
    for (name, s) in &stats.by_op {
        line(name, s);
    }
    let all = stats.requests();
    if stats.by_op.values().filter(|s| s.request).count() > 1 {
        line("all requests", &all);
    }
    println!("window {window_s:.2} s");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_cover_requests_only_and_merge_adds_up() {
        let mut a = Stats::default();
        a.record("get", true, 100, 0);
        a.record("get", true, 300, -101);
        a.record("acquire", false, 5000, 0);
        let mut b = Stats::default();
        b.record("set", true, 200, 0);
        b.record("get", true, 100, -101);
        a.merge(b);
        let all = a.requests();
        assert_eq!(all.ops, 4);
        assert_eq!(all.errors.get(&-101), Some(&2));
        assert_eq!(all.hist.max(), 300);
        let j = report_json(&a, 2.0, Map::new());
        assert_eq!(j["ops"], 4);
        assert_eq!(j["ops_per_s"], 2.0);
        assert_eq!(j["errors"]["-101"], 2);
        assert_eq!(j["by_op"]["acquire"]["ops"], 1);
        assert_eq!(j["by_op"]["get"]["ops"], 3);
    }
}
