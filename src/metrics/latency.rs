//! Request latency per operation type, in HDR histograms.
//!
//! Each shard records into histograms of its own ([`ShardLatencies`], owned by the
//! shard's executor: no lock, no atomic on the request path) and publishes what it
//! recorded every [`PUBLISH_EVERY`] into its slot of [`PublishedLatencies`], which the scrape
//! (`mntr`, `/metrics`, the AdminServer) merges over all shards. A published figure is
//! at most that old (100 ms).
//!
//! Two views come out of a merge: everything since start-up (or `srst`), and the
//! recent window, which is what quantiles are taken over: the current and the last
//! full [`WINDOW`] (ZooKeeper's Prometheus summaries rotate every 60 s as well).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How often a shard moves what it recorded into its published slot.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// The length of one quantile window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Latencies above this (µs) are recorded as this.
const HIGHEST_US: u64 = 60_000_000;
/// Two significant digits: a quantile is within 1% of the value recorded.
const SIGNIFICANT_DIGITS: u8 = 2;

/// The operation types latency is kept for, by the names ZooKeeper's OpCode gives them.
pub const OP_NAMES: [&str; 19] = [
    "create",
    "delete",
    "exists",
    "getData",
    "setData",
    "getACL",
    "setACL",
    "getChildren",
    "getChildren2",
    "sync",
    "check",
    "multi",
    "multiRead",
    "getEphemerals",
    "getAllChildrenNumber",
    "watches",
    "whoAmI",
    "closeSession",
    "other",
];

/// The index in [`OP_NAMES`] of opcode `op`.
pub fn op_class(op: i32) -> usize {
    match op {
        1 | 15 | 19 | 21 => 0,
        2 | 20 => 1,
        3 => 2,
        4 => 3,
        5 => 4,
        6 => 5,
        7 => 6,
        8 => 7,
        12 => 8,
        9 => 9,
        13 => 10,
        14 => 11,
        22 => 12,
        103 => 13,
        104 => 14,
        17 | 18 | 101 | 105 | 106 => 15,
        107 => 16,
        -11 => 17,
        _ => 18,
    }
}

/// Whether ZooKeeper counts the op as an update (its `updatelatency`) rather than a
/// read (`readlatency`): what goes through the log.
pub fn is_update(class: usize) -> bool {
    matches!(
        OP_NAMES[class],
        "create" | "delete" | "setData" | "setACL" | "check" | "multi" | "sync" | "closeSession"
    )
}

/// One operation type's figures: a histogram of µs and the exact sum beside it.
#[derive(Clone)]
pub struct OpLatency {
    pub histogram: Histogram<u32>,
    pub sum_us: u64,
}

impl OpLatency {
    fn new() -> OpLatency {
        OpLatency {
            histogram: Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS)
                .expect("valid histogram bounds"),
            sum_us: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at quantile `q` (0..=1), in µs.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.histogram.value_at_quantile(q)
    }

    pub fn add(&mut self, other: &OpLatency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum_us += other.sum_us;
    }
}

/// Figures for each operation type; a type nobody asked for has no histogram.
#[derive(Clone, Default)]
pub struct OpSet {
    by_class: Vec<Option<Box<OpLatency>>>,
}

impl OpSet {
    pub fn record(&mut self, class: usize, us: u64) {
        if self.by_class.len() <= class {
            self.by_class.resize(OP_NAMES.len(), None);
        }
        let op = self.by_class[class].get_or_insert_with(|| Box::new(OpLatency::new()));
        op.histogram.saturating_record(us.clamp(1, HIGHEST_US));
        op.sum_us += us;
    }

    pub fn add(&mut self, other: &OpSet) {
        if self.by_class.len() < other.by_class.len() {
            self.by_class.resize(other.by_class.len(), None);
        }
        for (mine, theirs) in self.by_class.iter_mut().zip(&other.by_class) {
            if let Some(theirs) = theirs {
                match mine {
                    Some(m) => m.add(theirs),
                    None => *mine = Some(theirs.clone()),
                }
            }
        }
    }

    /// Empties every histogram, keeping their memory.
    pub fn clear(&mut self) {
        for op in self.by_class.iter_mut().flatten() {
            op.histogram.reset();
            op.sum_us = 0;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_class.iter().flatten().all(|op| op.count() == 0)
    }

    /// The figures of each operation type that has any, with its name.
    pub fn ops(&self) -> impl Iterator<Item = (&'static str, &OpLatency)> {
        self.by_class.iter().enumerate().filter_map(|(i, op)| {
            op.as_deref()
                .filter(|o| o.count() > 0)
                .map(|o| (OP_NAMES[i], o))
        })
    }

    /// The operation types `which` selects, merged into one.
    pub fn merged(&self, which: impl Fn(usize) -> bool) -> OpLatency {
        let mut all = OpLatency::new();
        for (i, op) in self.by_class.iter().enumerate() {
            if let Some(op) = op.as_deref().filter(|_| which(i)) {
                all.add(op);
            }
        }
        all
    }
}

/// What a shard has recorded since it last published (the shard's executor only).
#[derive(Default)]
pub struct ShardLatencies {
    recorded: OpSet,
}

impl ShardLatencies {
    /// Records one request of opcode `op` answered after `us` µs.
    pub fn record(&mut self, op: i32, us: u64) {
        self.recorded.record(op_class(op), us);
    }

    /// Moves what was recorded into `to`.
    pub fn publish(&mut self, to: &mut PublishedLatencies, now: Instant) {
        if self.recorded.is_empty() {
            to.rotate(now);
            return;
        }
        to.absorb(&self.recorded, now);
        self.recorded.clear();
    }
}

/// One shard's published figures.
pub struct PublishedLatencies {
    /// Since start-up or `srst`.
    pub total: OpSet,
    /// The window being filled, since `window_start`, and the one before it.
    current: OpSet,
    previous: OpSet,
    window_start: Instant,
}

impl PublishedLatencies {
    pub fn new(now: Instant) -> PublishedLatencies {
        PublishedLatencies {
            total: OpSet::default(),
            current: OpSet::default(),
            previous: OpSet::default(),
            window_start: now,
        }
    }

    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.window_start);
        if age >= WINDOW {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            if age >= 2 * WINDOW {
                // Nothing was published for a whole window: the last one is empty too.
                self.previous.clear();
            }
            self.window_start = now;
        }
    }

    fn absorb(&mut self, recorded: &OpSet, now: Instant) {
        self.rotate(now);
        self.total.add(recorded);
        self.current.add(recorded);
    }

    /// The recent window: the current one and the last full one.
    pub fn recent(&self) -> OpSet {
        let mut r = self.previous.clone();
        r.add(&self.current);
        r
    }

    /// `srst`: back to nothing recorded.
    pub fn reset(&mut self, now: Instant) {
        self.total.clear();
        self.current.clear();
        self.previous.clear();
        self.window_start = now;
    }
}

/// Every shard's published figures merged: since start-up, and the recent window.
pub struct Merged {
    pub total: OpSet,
    pub recent: OpSet,
}

pub fn merge<'a>(shards: impl IntoIterator<Item = &'a PublishedLatencies>) -> Merged {
    let mut m = Merged {
        total: OpSet::default(),
        recent: OpSet::default(),
    };
    for s in shards {
        m.total.add(&s.total);
        m.recent.add(&s.recent());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_histograms_precision() {
        let mut s = ShardLatencies::default();
        for us in 1..=10_000u64 {
            s.record(4, us);
        }
        let t0 = Instant::now();
        let mut p = PublishedLatencies::new(t0);
        s.publish(&mut p, t0);
        let m = merge([&p]);
        let (name, get) = m.total.ops().next().expect("getData recorded");
        assert_eq!(name, "getData");
        assert_eq!(get.count(), 10_000);
        assert_eq!(get.sum_us, 10_000 * 10_001 / 2);
        for (q, want) in [(0.5, 5_000.0), (0.99, 9_900.0), (0.999, 9_990.0)] {
            let got = get.quantile_us(q) as f64;
            assert!((got - want).abs() <= want * 0.01, "q{q}: {got} vs {want}");
        }
    }

    #[test]
    fn shards_merge_and_reads_and_updates_split() {
        let t0 = Instant::now();
        let (mut a, mut b) = (ShardLatencies::default(), ShardLatencies::default());
        let (mut pa, mut pb) = (PublishedLatencies::new(t0), PublishedLatencies::new(t0));
        a.record(4, 100);
        a.record(5, 2_000);
        b.record(4, 300);
        b.record(1, 4_000);
        a.publish(&mut pa, t0);
        b.publish(&mut pb, t0);
        let m = merge([&pa, &pb]);
        let reads = m.total.merged(|c| !is_update(c));
        let updates = m.total.merged(is_update);
        assert_eq!((reads.count(), reads.sum_us), (2, 400));
        assert_eq!((updates.count(), updates.sum_us), (2, 6_000));
        // What was published is gone from the shard's own histograms.
        assert!(a.recorded.is_empty());
    }

    #[test]
    fn the_recent_window_forgets_what_is_two_windows_old() {
        let t0 = Instant::now();
        let mut s = ShardLatencies::default();
        let mut p = PublishedLatencies::new(t0);
        s.record(4, 10);
        s.publish(&mut p, t0);
        s.record(4, 20);
        s.publish(&mut p, t0 + WINDOW);
        // Both windows are recent.
        assert_eq!(p.recent().merged(|_| true).count(), 2);
        // A window later the first has rotated out; nothing new came.
        s.publish(&mut p, t0 + 2 * WINDOW);
        assert_eq!(p.recent().merged(|_| true).count(), 1);
        s.publish(&mut p, t0 + 5 * WINDOW);
        assert_eq!(p.recent().merged(|_| true).count(), 0);
        assert_eq!(p.total.merged(|_| true).count(), 2);
    }

    #[test]
    fn every_opcode_has_a_class_and_pings_are_other() {
        for op in -11..=110 {
            assert!(op_class(op) < OP_NAMES.len());
        }
        assert_eq!(OP_NAMES[op_class(11)], "other");
        assert_eq!(OP_NAMES[op_class(15)], "create");
        assert!(is_update(op_class(14)) && !is_update(op_class(22)));
    }
}
