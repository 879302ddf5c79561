//! A member's view of its txn log, as Zab needs it: the txns it has logged after the
//! point its tree's snapshot covers, how far of them it has applied (committed), and
//! what a leader sends a learner to make the learner's log equal to its own.
//!
//! zxid = epoch << 32 | counter. Only txn positions and payloads are kept here; the
//! log file, the tree and the snapshot belong to the driver.

use std::collections::VecDeque;

use bytes::Bytes;

pub type Zxid = i64;

/// The zxid of `counter` in `epoch`.
pub const fn make_zxid(epoch: i64, counter: i64) -> Zxid {
    (epoch << 32) | (counter & 0xffff_ffff)
}

pub const fn epoch_of(zxid: Zxid) -> i64 {
    zxid >> 32
}

pub const fn counter_of(zxid: Zxid) -> i64 {
    zxid & 0xffff_ffff
}

/// One logged txn: its zxid and its payload (ZooKeeper's serialized TxnHeader and
/// record, opaque here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub zxid: Zxid,
    pub data: Bytes,
}

/// How a leader brings a learner whose last logged zxid is known to its own log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncPlan {
    /// DIFF: the learner's log is a prefix of ours; send it `txns`.
    Diff { txns: Vec<Txn> },
    /// TRUNC: the learner logged txns we do not have; it cuts its log back to
    /// `to`, then takes `txns`.
    Trunc { to: Zxid, txns: Vec<Txn> },
    /// SNAP: the learner is behind what we retain; it takes our tree as of `zxid`
    /// (our applied point), then `txns`.
    Snap { zxid: Zxid, txns: Vec<Txn> },
}

/// Why the log refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("txn {zxid:#x} does not follow the last logged zxid {last:#x}")]
    OutOfOrder { zxid: Zxid, last: Zxid },
    #[error("truncating to {to:#x} would undo applied txns (applied up to {applied:#x})")]
    TruncateApplied { to: Zxid, applied: Zxid },
    #[error("commit of {zxid:#x} names a txn beyond the last logged zxid {last:#x}")]
    CommitUnlogged { zxid: Zxid, last: Zxid },
}

#[derive(Debug, Clone)]
pub struct History {
    /// The zxid the tree's base covers; nothing at or below it is retained.
    floor: Zxid,
    /// Logged txns after `floor`, in zxid order.
    txns: VecDeque<Txn>,
    /// Applied (committed) up to here; `floor <= applied <= last_logged`.
    applied: Zxid,
    /// Committed txns kept for DIFFs beyond what is unapplied.
    retain: usize,
}

impl History {
    /// A log recovered from disk: the tree covers `floor`, `txns` follow it, and the
    /// txns up to `applied` are known committed (and applied to the tree).
    pub fn recovered(floor: Zxid, txns: Vec<Txn>, applied: Zxid, retain: usize) -> History {
        let mut h = History {
            floor,
            txns: VecDeque::new(),
            applied: floor,
            retain,
        };
        for t in txns {
            if t.zxid > h.last_logged() {
                h.txns.push_back(t);
            }
        }
        h.applied = applied.clamp(floor, h.last_logged());
        h.trim();
        h
    }

    pub fn last_logged(&self) -> Zxid {
        self.txns.back().map_or(self.floor, |t| t.zxid)
    }

    pub fn applied(&self) -> Zxid {
        self.applied
    }

    pub fn floor(&self) -> Zxid {
        self.floor
    }

    /// The first retained txn after `zxid`, by index.
    fn index_after(&self, zxid: Zxid) -> usize {
        self.txns.partition_point(|t| t.zxid <= zxid)
    }

    pub fn contains(&self, zxid: Zxid) -> bool {
        zxid == self.floor || self.txns.binary_search_by_key(&zxid, |t| t.zxid).is_ok()
    }

    /// The last logged zxid below `zxid` (the floor if no retained txn is).
    pub fn last_before(&self, zxid: Zxid) -> Zxid {
        let i = self.txns.partition_point(|t| t.zxid < zxid);
        if i == 0 {
            self.floor
        } else {
            self.txns[i - 1].zxid
        }
    }

    /// The retained txns after `zxid` up to and including `upto`.
    pub fn range(&self, zxid: Zxid, upto: Zxid) -> Vec<Txn> {
        self.txns
            .iter()
            .skip(self.index_after(zxid))
            .take_while(|t| t.zxid <= upto)
            .cloned()
            .collect()
    }

    pub fn append(&mut self, txn: Txn) -> Result<(), HistoryError> {
        let last = self.last_logged();
        if txn.zxid <= last {
            return Err(HistoryError::OutOfOrder {
                zxid: txn.zxid,
                last,
            });
        }
        self.txns.push_back(txn);
        Ok(())
    }

    /// Cuts the log back to `to`: every txn after it goes.
    pub fn truncate(&mut self, to: Zxid) -> Result<(), HistoryError> {
        if to < self.applied {
            return Err(HistoryError::TruncateApplied {
                to,
                applied: self.applied,
            });
        }
        let keep = self.index_after(to);
        self.txns.truncate(keep);
        Ok(())
    }

    /// The tree now comes from a snapshot at `zxid`: the log starts over after it.
    pub fn install_snapshot(&mut self, zxid: Zxid) {
        self.floor = zxid;
        self.applied = zxid;
        self.txns.clear();
    }

    /// Marks everything up to `zxid` committed; returns the txns to apply, in order.
    pub fn commit(&mut self, zxid: Zxid) -> Result<Vec<Txn>, HistoryError> {
        if zxid <= self.applied {
            return Ok(Vec::new());
        }
        let last = self.last_logged();
        if zxid > last {
            return Err(HistoryError::CommitUnlogged { zxid, last });
        }
        let out = self.range(self.applied, zxid);
        self.applied = zxid;
        self.trim();
        Ok(out)
    }

    /// Forgets the oldest committed txns beyond `retain` (they stay in the tree).
    fn trim(&mut self) {
        let unapplied = self.txns.len() - self.index_after(self.applied);
        while self.txns.len() > self.retain + unapplied {
            let t = self.txns.pop_front().expect("non-empty");
            self.floor = t.zxid;
        }
    }

    /// What a learner whose last logged zxid is `peer_last` must do to hold our log
    /// up to `upto` (our last logged zxid, or our applied point for an observer that
    /// must only see committed txns). ZooKeeper's rule (LearnerHandler.syncFollower):
    /// a learner ahead of us truncates; one inside what we retain gets a diff, after
    /// truncating what it logged that we did not; one behind it gets our tree.
    pub fn sync_plan(&self, peer_last: Zxid, upto: Zxid) -> SyncPlan {
        let upto = upto.min(self.last_logged());
        if peer_last > upto {
            if self.contains(upto) {
                return SyncPlan::Trunc {
                    to: upto,
                    txns: Vec::new(),
                };
            }
            return self.snap(upto);
        }
        if peer_last < self.floor {
            return self.snap(upto);
        }
        if self.contains(peer_last) {
            return SyncPlan::Diff {
                txns: self.range(peer_last, upto),
            };
        }
        // The learner logged a txn we never had: back to the last zxid we share.
        let i = self.index_after(peer_last);
        let to = if i == 0 {
            self.floor
        } else {
            self.txns[i - 1].zxid
        };
        SyncPlan::Trunc {
            to,
            txns: self.range(to, upto),
        }
    }

    fn snap(&self, upto: Zxid) -> SyncPlan {
        SyncPlan::Snap {
            zxid: self.applied,
            txns: self.range(self.applied, upto),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(e: i64, c: i64) -> Txn {
        Txn {
            zxid: make_zxid(e, c),
            data: Bytes::from(format!("{e}:{c}")),
        }
    }

    fn zxids(txns: &[Txn]) -> Vec<Zxid> {
        txns.iter().map(|t| t.zxid).collect()
    }

    #[test]
    fn zxid_parts() {
        let z = make_zxid(7, 42);
        assert_eq!((epoch_of(z), counter_of(z)), (7, 42));
        assert!(make_zxid(2, 0) > make_zxid(1, 0xffff_fffe));
    }

    #[test]
    fn commit_applies_in_order_and_trims_to_the_retained_count() {
        let mut h = History::recovered(0, (1..=5).map(|c| t(1, c)).collect(), 0, 2);
        assert_eq!(h.last_logged(), make_zxid(1, 5));
        assert_eq!(
            zxids(&h.commit(make_zxid(1, 3)).unwrap()),
            zxids(&[t(1, 1), t(1, 2), t(1, 3)])
        );
        // Two committed txns are kept besides the two unapplied ones.
        assert_eq!(h.floor(), make_zxid(1, 1));
        assert!(h.commit(make_zxid(1, 2)).unwrap().is_empty());
        assert!(matches!(
            h.commit(make_zxid(1, 9)),
            Err(HistoryError::CommitUnlogged { .. })
        ));
        assert!(matches!(
            h.append(t(1, 5)),
            Err(HistoryError::OutOfOrder { .. })
        ));
        assert!(matches!(
            h.truncate(make_zxid(1, 2)),
            Err(HistoryError::TruncateApplied { .. })
        ));
        h.truncate(make_zxid(1, 4)).unwrap();
        assert_eq!(h.last_logged(), make_zxid(1, 4));
    }

    #[test]
    fn sync_plans_follow_zookeepers_rules() {
        // Ours: 1:1..1:4 committed, 3:1 not yet.
        let mut txns: Vec<Txn> = (1..=4).map(|c| t(1, c)).collect();
        txns.push(t(3, 1));
        let h = History::recovered(0, txns, make_zxid(1, 4), 100);
        let last = h.last_logged();
        assert_eq!(h.last_before(make_zxid(3, 0)), make_zxid(1, 4));
        assert_eq!(h.last_before(make_zxid(1, 1)), 0);
        // Equal: an empty diff.
        assert_eq!(h.sync_plan(last, last), SyncPlan::Diff { txns: vec![] });
        // A prefix: the rest.
        assert_eq!(
            h.sync_plan(make_zxid(1, 2), last),
            SyncPlan::Diff {
                txns: vec![t(1, 3), t(1, 4), t(3, 1)]
            }
        );
        // Ahead of us: truncate to our last.
        assert_eq!(
            h.sync_plan(make_zxid(3, 5), last),
            SyncPlan::Trunc {
                to: last,
                txns: vec![]
            }
        );
        // A txn we never had (epoch 2): back to the last shared zxid, then the rest.
        assert_eq!(
            h.sync_plan(make_zxid(2, 1), last),
            SyncPlan::Trunc {
                to: make_zxid(1, 4),
                txns: vec![t(3, 1)]
            }
        );
        // An observer gets only what is committed.
        assert_eq!(
            h.sync_plan(make_zxid(1, 3), h.applied()),
            SyncPlan::Diff {
                txns: vec![t(1, 4)]
            }
        );
        // Behind what we retain: our tree, then the unapplied rest.
        let trimmed = History::recovered(
            make_zxid(1, 2),
            (3..=4).map(|c| t(1, c)).collect(),
            make_zxid(1, 3),
            0,
        );
        assert_eq!(trimmed.floor(), make_zxid(1, 3));
        assert_eq!(
            trimmed.sync_plan(make_zxid(1, 1), trimmed.last_logged()),
            SyncPlan::Snap {
                zxid: make_zxid(1, 3),
                txns: vec![t(1, 4)]
            }
        );
    }
}
