//! Rebasing the core's tree onto each snapshot it writes.
//!
//! Every node created or changed since the tree's snapshot lives in the in-memory
//! overlay: after a bulk load that is the whole tree, in the heap (~450 bytes a znode),
//! and each later snapshot has to walk it node by node. Once a snapshot is written, the
//! snapshot thread opens it as a new base and replays on top the txns the core applied
//! since the snapshot's zxid (the core hands over their log records as it frames them),
//! until it has nearly caught up. The core then applies the last few and takes the
//! rebuilt tree in place of its own: the same tree, with the overlay holding only what
//! changed since the snapshot. The heap then stays near its idle size, node data is
//! the snapshot's page cache, and the next snapshot copies the base in file order.
//!
//! The rebuilt tree is taken only if it reached exactly the core's zxid through
//! consecutive txns and holds as many nodes and bytes as the core's tree; otherwise
//! it is dropped with a warning and the core keeps its own.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use ringkeeper_storage::record::scan;
use ringkeeper_storage::snapshot::Snapshot;

use crate::tree::DataTree;

/// Stop catching up on the snapshot thread once a round finds fewer records than
/// this: the core applies the rest itself, which stalls it for about a millisecond.
const CATCH_UP_RECORDS: usize = 512;

/// Rounds of catching up before giving up: replaying is cheaper than ordering, so the
/// rounds shrink quickly unless writes outpace the replay (then no rebase this time).
const CATCH_UP_ROUNDS: usize = 64;

#[derive(Default)]
pub struct Rebase {
    /// The log records of the txns the core applied since the zxid of the snapshot
    /// being written (or rebuilt on); None when no rebase is under way.
    records: Mutex<Option<Vec<u8>>>,
    /// The tree rebuilt on the new snapshot, up to some zxid, for the core to finish.
    ready: Mutex<Option<DataTree>>,
}

impl Rebase {
    /// The core: a snapshot of its tree as it is now has started. Any rebuilt tree
    /// not yet taken is dropped, with the records it would have needed.
    pub fn begin(&self) {
        *self.ready.lock().expect("rebase lock") = None;
        *self.records.lock().expect("rebase lock") = Some(Vec::new());
    }

    /// The snapshot thread: no rebase this time (the snapshot was not written).
    pub fn cancel(&self) {
        *self.records.lock().expect("rebase lock") = None;
    }

    /// The core: whatever is under way is dropped (its tree is being replaced).
    pub fn abandon(&self) {
        *self.ready.lock().expect("rebase lock") = None;
        self.cancel();
    }

    /// The core: log records (framed, in zxid order) of txns it has just applied.
    pub fn record(&self, framed: &[u8]) {
        if framed.is_empty() {
            return;
        }
        if let Some(v) = self.records.lock().expect("rebase lock").as_mut() {
            v.extend_from_slice(framed);
        }
    }

    /// Takes what the core has recorded so far, None if the rebase was cancelled.
    fn drain(&self) -> Option<Vec<u8>> {
        self.records
            .lock()
            .expect("rebase lock")
            .as_mut()
            .map(std::mem::take)
    }

    /// The snapshot thread, once the snapshot at `path` is published: opens it as the
    /// base of a new tree and replays the core's txns since until nearly caught up.
    pub fn rebuild(&self, path: &Path) {
        let started = Instant::now();
        let mut tree = match Snapshot::open(path).and_then(DataTree::from_snapshot) {
            Ok((tree, _)) => tree,
            Err(e) => {
                tracing::warn!("not rebasing onto {}: {e}", path.display());
                self.cancel();
                return;
            }
        };
        let mut rounds = 0;
        loop {
            let Some(chunk) = self.drain() else {
                return;
            };
            rounds += 1;
            match apply_records(&mut tree, &chunk) {
                Ok(n) if n < CATCH_UP_RECORDS => break,
                Ok(_) if rounds < CATCH_UP_ROUNDS => {}
                Ok(n) => {
                    tracing::warn!(
                        "not rebasing onto {}: still {n} txns behind after {rounds} rounds",
                        path.display()
                    );
                    self.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!("not rebasing onto {}: {e}", path.display());
                    self.cancel();
                    return;
                }
            }
        }
        tracing::debug!(
            "tree rebuilt on {} up to zxid {:#x} in {} ms",
            path.display(),
            tree.last_zxid(),
            started.elapsed().as_millis()
        );
        *self.ready.lock().expect("rebase lock") = Some(tree);
    }

    /// The core, before it steps anything: the rebuilt tree brought up to `current`,
    /// if one is ready and it matches `current` exactly.
    pub fn finish(&self, current: &DataTree) -> Option<DataTree> {
        let mut tree = self.ready.lock().expect("rebase lock").take()?;
        let rest = self
            .records
            .lock()
            .expect("rebase lock")
            .take()
            .unwrap_or_default();
        if let Err(e) = apply_records(&mut tree, &rest) {
            tracing::warn!("not rebasing the tree: {e}");
            return None;
        }
        let (ours, theirs) = (
            (
                current.last_zxid(),
                current.node_count(),
                current.approximate_data_size(),
            ),
            (
                tree.last_zxid(),
                tree.node_count(),
                tree.approximate_data_size(),
            ),
        );
        if ours != theirs {
            tracing::warn!(
                "not rebasing the tree: rebuilt (zxid, nodes, bytes) {theirs:?}, the core's {ours:?}"
            );
            return None;
        }
        tracing::info!(
            "tree rebased at zxid {:#x}: {} znodes in the snapshot, {} changed since",
            tree.last_zxid(),
            tree.base_node_count(),
            tree.overlay_len()
        );
        Some(tree)
    }
}

/// Applies framed log records to `tree`, each the txn right after the tree's last;
/// returns how many.
fn apply_records(tree: &mut DataTree, framed: &[u8]) -> Result<usize, String> {
    let scanned = scan(framed);
    if scanned.valid_len != framed.len() {
        return Err(format!(
            "a recorded txn does not decode at byte {} of {}",
            scanned.valid_len,
            framed.len()
        ));
    }
    let mut triggers = Vec::new();
    for r in &scanned.records {
        if !ringkeeper_storage::recover::follows(tree.last_zxid(), r.zxid) {
            return Err(format!(
                "txn {:#x} follows zxid {:#x}",
                r.zxid,
                tree.last_zxid()
            ));
        }
        tree.apply_logged(r.zxid, &framed[r.payload.clone()], &mut triggers)
            .map_err(|e| format!("txn {:#x}: {e}", r.zxid))?;
        triggers.clear();
    }
    Ok(scanned.records.len())
}
