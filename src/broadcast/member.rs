//! The broadcast core of an ensemble member: the same [`Core`] as standalone, the
//! same group-committed log, and the member's Zab ([`crate::peering::run_member`]) on
//! the same executor, joined by a [`Replica`] over the real storage.
//!
//! - As **leader**, the core orders every write (its clients' and those learners
//!   forward). Each txn is framed for our log and proposed; the entries it produced
//!   (replies, watch events, tree versions) wait, once our own write returned, until
//!   Zab commits their txns (a quorum has them on disk), and only then reach the shards.
//! - As **follower** or **observer**, the core forwards writes, new sessions and syncs
//!   to the leader; PROPOSALs are appended to our log through the same group commit
//!   (their ACK goes once it is on disk); COMMITs are applied to the tree, and the
//!   shards get the watch events and the replies to our clients' requests from them.
//! - **Looking**, the member serves no clients: their connections are closed and new
//!   handshakes refused, so they find a member with a leader.
//!
//! Leaving the leader's role, a TRUNC and a SNAP all reload the tree from disk (the
//! log may hold txns this member proposed or logged that never committed; the new
//! leader's sync then brings the member in line), as ZooKeeper's members do.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};

use super::core::{Core, Ordering};
use super::messages::{Batch, Effect, Entry, ToCore};
use super::snapshots::{Snapshotter, SNAPSHOT_REQUESTED};
use super::{open_log, undo_failed, Clock, BATCH_REQUESTS_MAX, QUEUED_LOG_BYTES_MAX};
use crate::config::Config;
use crate::peering::snap_image::{SnapFiles, SnapImage};
use crate::peering::{MemberConfig, MemberHandle, Replica};
use crate::recovery::Recovered;
use crate::server::{ServerMode, ServerShared};
use crate::tree::DataTree;
use crate::util::Notify;
use crate::zab::history::{History, Txn as ZabTxn, Zxid};
use crate::zab::messages::Role;
use ringkeeper_storage::epochs::{self, Epochs};
use ringkeeper_storage::group::GroupCommit;
use ringkeeper_storage::log::LogError;

/// Committed txns a leader keeps in memory for DIFFs (ZooKeeper keeps 500).
const DIFF_TXNS_RETAINED: usize = crate::recovery::RECENT_TXNS_KEPT;

/// What the group commit carries: the core's entries, or a learner's append (its
/// record is all there is to it).
enum Item {
    Entry(Entry),
    Append,
}

/// Work for the core loop, in arrival order.
enum Work {
    Shard(ToCore),
    Forwarded {
        from: i64,
        data: Bytes,
        auth: Vec<crate::proto::Id>,
    },
    Touched(Vec<(i64, i32)>),
    Synced,
    Role(Role),
}

/// A proposal this member cannot log. Zab counts it appended, so once later records
/// reach the disk it would be ACKed unlogged (and its commit could not be applied
/// either): the member stops rather than ACK what it does not hold.
fn unloggable(zxid: Zxid, why: &str) -> ! {
    tracing::error!("proposal {zxid:#x} cannot be logged: {why}; this member stops");
    std::process::exit(1);
}

/// A proposal as this member logged it: ringkeeper's txn, its time and origin, and
/// the payload of its log record.
pub(crate) struct DecodedTxn {
    pub zxid: Zxid,
    /// The proposal's bytes, to check that a commit is of this very txn.
    pub data: Bytes,
    pub txn: crate::tree::Txn,
    pub time_ms: i64,
    pub origin: crate::tree::Origin,
    pub payload: Vec<u8>,
}

/// Everything the core loop, the replica and the log's release share (one executor).
struct State {
    cfg: Arc<Config>,
    /// The clocks the core is given the time from.
    clock: Clock,
    shared: Arc<ServerShared>,
    core: RefCell<Core>,
    group: RefCell<Rc<GroupCommit<Item>>>,
    writer: RefCell<Option<glommio::Task<ringkeeper_storage::log::LogCounters>>>,
    /// A leader's batches, durable here, waiting for their txns to commit: (the last
    /// zxid the batch needs, its entries).
    held: RefCell<VecDeque<(Zxid, Vec<Entry>)>>,
    committed: Cell<Zxid>,
    /// The highest zxid the core framed itself as leader (Zab's append of it is ours
    /// already).
    own_upto: Cell<Zxid>,
    epochs: Cell<Epochs>,
    /// Batches for the shards, in order.
    outbox: RefCell<VecDeque<Vec<Entry>>>,
    /// What the committed txns applied since the replica's last `applied` produced,
    /// for the shards.
    applying: RefCell<Vec<Entry>>,
    /// The proposals logged as learner and not yet committed, decoded once when they
    /// were logged, so that their commit does not decode them again (in zxid order;
    /// bounded by the proposals in flight, emptied whenever the log is cut or replaced).
    decoded: RefCell<VecDeque<DecodedTxn>>,
    outbox_notify: Notify,
    /// The tree version the shards were last sent.
    published: RefCell<Arc<DataTree>>,
    work: RefCell<VecDeque<Work>>,
    notify: Notify,
    handle: Rc<MemberHandle>,
    /// As leader: the last zxid Zab has in its history (logged before our term, or
    /// proposed by us and taken). A txn our core framed beyond it was never proposed.
    accepted_upto: Cell<Zxid>,
    /// We stopped leading and have not reloaded since.
    left_leading: Cell<bool>,
    /// One reload at a time (a TRUNC can arrive while the loss of the lead is handled).
    reloading: glommio::sync::Semaphore,
    /// A reload is under way: no snapshot may start (the tree and the log are being
    /// replaced).
    in_reload: Cell<bool>,
    /// Signalled when a reload ends, for the driver waiting in `settle`.
    reloaded: Notify,
    /// Snapshots of the core's tree in the background, and the rebase onto them, as
    /// standalone; fed the log records of every txn the tree takes.
    snapshotter: RefCell<Snapshotter>,
    /// Txns the tree took since the last snapshot started.
    since_snapshot: Cell<u64>,
    /// The core was given the time in this driver round (see `core_for_apply`).
    clock_set_this_round: Cell<bool>,
    /// Counts role changes: a read-only start scheduled under one is void under the
    /// next.
    role_changes: Cell<u64>,
}

impl State {
    fn wake(&self) {
        self.notify.notify();
    }

    /// The core, with the time set to now.
    fn core_now(&self) -> std::cell::RefMut<'_, Core> {
        let mut core = self.core.borrow_mut();
        core.set_now(self.clock.now());
        core
    }

    /// The core for applying a commit: the time is read once per driver round (the
    /// round's commits go to the shards together in `applied`, which starts the
    /// next), not once per txn; a commit takes its times from its txn, the core's
    /// clock only for a new session's deadline.
    fn core_for_apply(&self) -> std::cell::RefMut<'_, Core> {
        if !self.clock_set_this_round.replace(true) {
            return self.core_now();
        }
        self.core.borrow_mut()
    }

    fn send_to_shards(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        self.outbox.borrow_mut().push_back(entries);
        self.outbox_notify.notify();
    }

    /// Whether the oldest held batch has all its txns committed.
    fn held_due(&self) -> bool {
        let committed = self.committed.get();
        matches!(self.held.borrow().front(), Some((upto, _)) if *upto <= committed)
    }

    /// Releases the held batches whose txns have all committed.
    fn release_committed(&self) {
        loop {
            if !self.held_due() {
                return;
            }
            let (_, entries) = self.held.borrow_mut().pop_front().expect("checked");
            self.send_to_shards(entries);
        }
    }

    /// Starts a log writer (and its group commit) continuing from `recovered`.
    async fn start_log(self: &Rc<Self>, recovered: &Recovered) -> std::io::Result<()> {
        let log = open_log(&self.cfg, recovered).await?;
        let group = GroupCommit::<Item>::with_stats(
            recovered.log_end.last_zxid,
            self.shared.log_stats.clone(),
        );
        let me = self.clone();
        let seal = move |items: &mut Vec<Item>| {
            // The batch's last entry carries the tree as it is when the write starts
            // (the core is suspended then: the tree after that entry).
            if let Some(Item::Entry(e)) = items.last_mut() {
                if e.tree.is_none() {
                    e.tree = Some(Arc::new(me.core.borrow().tree().clone()));
                }
            }
        };
        let me = self.clone();
        let release = move |items: Vec<Item>, err: Option<Rc<LogError>>| {
            let me = me.clone();
            async move {
                let entries: Vec<Entry> = items
                    .into_iter()
                    .filter_map(|i| match i {
                        Item::Entry(e) => Some(e),
                        Item::Append => None,
                    })
                    .collect();
                if err.is_some() {
                    let undone = undo_failed(entries, &me.published.borrow());
                    me.send_to_shards(undone);
                } else if !entries.is_empty() {
                    let upto = me
                        .group
                        .borrow()
                        .durable_zxid()
                        .load(std::sync::atomic::Ordering::Acquire);
                    me.held.borrow_mut().push_back((upto, entries));
                    me.release_committed();
                }
                // The log reached the disk further: Zab ACKs what it holds.
                me.handle.wake();
                true
            }
        };
        let task = glommio::spawn_local(group.clone().run_sealed(log, seal, release));
        self.snapshotter
            .borrow_mut()
            .follow_log(group.durable_zxid(), group.failed_flag());
        *self.writer.borrow_mut() = Some(task);
        *self.group.borrow_mut() = group;
        Ok(())
    }

    /// Waits until the log writer has written and released everything queued, then
    /// stops it.
    async fn stop_log(&self) {
        self.group.borrow().close();
        let task = self.writer.borrow_mut().take();
        if let Some(t) = task {
            t.await;
        }
    }

    /// Stops the log, runs `change` on the files, and rebuilds the tree, the sessions
    /// and the log writer from disk. What the shards were shown stays until the next
    /// batch; requests in flight here end in a connection loss.
    async fn reload(
        self: &Rc<Self>,
        what: &str,
        change: impl FnOnce(&Config) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<()> {
        let _one = self
            .reloading
            .acquire_permit(1)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.in_reload.set(true);
        // The log is cut or replaced: what was decoded for it may never commit.
        self.decoded.borrow_mut().clear();
        let r = self.reload_files(what, change).await;
        self.in_reload.set(false);
        self.reloaded.notify();
        r
    }

    /// `reload`'s work, once it is the only one under way. The file work (truncating,
    /// installing, reading the tree back) runs on the executor's blocking pool: on a
    /// small machine this executor also serves shard 0's clients.
    async fn reload_files(
        self: &Rc<Self>,
        what: &str,
        change: impl FnOnce(&Config) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<()> {
        let abandoned = self.snapshotter.borrow().abandon();
        abandoned.await;
        self.stop_log().await;
        let undone = {
            let held: Vec<Entry> = self
                .held
                .borrow_mut()
                .drain(..)
                .flat_map(|(_, e)| e)
                .collect();
            undo_failed(held, &self.published.borrow())
        };
        self.send_to_shards(undone);
        let left_leading = self.left_leading.replace(false);
        let upto = self.accepted_upto.get();
        let cfg = self.cfg.clone();
        let recovered = glommio::executor()
            .spawn_blocking(move || {
                if left_leading {
                    // What our core framed past Zab's history was never proposed: no
                    // member has it, and it must not stay in our log.
                    let n = ringkeeper_storage::recover::truncate_log_after(&cfg.log_dir(), upto)
                        .map_err(std::io::Error::other)?;
                    if n > 0 {
                        tracing::info!(
                            "{n} txn(s) framed after {upto:#x} were never proposed: removed"
                        );
                    }
                    remove_snapshots_after(&cfg, upto)?;
                }
                change(&cfg)?;
                crate::recovery::recover(&cfg).map_err(std::io::Error::other)
            })
            .await?;
        tracing::info!(
            "{what}: the tree is reloaded from disk at zxid {:#x}",
            recovered.tree.last_zxid()
        );
        self.core_now()
            .reset(recovered.tree.clone(), &recovered.sessions);
        self.own_upto.set(0);
        self.since_snapshot.set(recovered.log_end.replayed);
        self.start_log(&recovered).await
    }

    /// Starts a snapshot of the core's tree if one is due (snapCount txns since the
    /// last, or SIGUSR1) and none is being written.
    fn snapshot_if_due(&self) {
        use std::sync::atomic::Ordering::{AcqRel, Release};
        if self.in_reload.get() || self.core.borrow().read_only {
            return;
        }
        let asked = SNAPSHOT_REQUESTED.swap(false, AcqRel);
        if !asked && self.since_snapshot.get() < self.cfg.snap_count.max(1) {
            return;
        }
        let core = self.core.borrow();
        if self
            .snapshotter
            .borrow()
            .start(core.tree().clone(), core.session_records())
        {
            self.since_snapshot.set(0);
        } else if asked {
            SNAPSHOT_REQUESTED.store(true, Release);
        }
    }

    /// The tree rebuilt on the last snapshot, in place of the core's, once it is ready.
    fn finish_rebase(&self) {
        let mut core = self.core.borrow_mut();
        if core.read_only {
            return;
        }
        if let Some(t) = self.snapshotter.borrow().rebase.finish(core.tree()) {
            core.replace_tree(t);
        }
    }
}

/// The member's side of [`Replica`]: our log, our tree.
struct StorageReplica(Rc<State>);

impl Replica for StorageReplica {
    fn persist_epochs(&mut self, accepted: i64, current: i64) -> std::io::Result<()> {
        let s = &self.0;
        let new = Epochs { accepted, current };
        epochs::store(&s.cfg.snapshot_dir(), s.epochs.get(), new).map_err(std::io::Error::other)?;
        s.epochs.set(new);
        Ok(())
    }

    async fn settle(&mut self) {
        // From the moment the lead is lost (role_changed) to the end of the reload
        // that follows: its truncation would remove, and its reset of the tree would
        // forget, what a new leader's sync had been given meanwhile.
        let s = self.0.clone();
        while s.left_leading.get() || s.in_reload.get() {
            s.reloaded.wait().await;
        }
    }

    fn append(&mut self, txn: &ZabTxn) {
        if txn.zxid <= self.0.own_upto.get() {
            return; // framed by our core as it ordered it
        }
        match crate::zkformat::txn::ZkTxn::decode(&txn.data) {
            Ok(z) => self.append_decoded(txn, z),
            Err(e) => unloggable(txn.zxid, &format!("it does not decode ({e})")),
        }
    }

    fn append_decoded(&mut self, txn: &ZabTxn, z: crate::zkformat::txn::ZkTxn) {
        let s = &self.0;
        if txn.zxid <= s.own_upto.get() {
            return; // framed by our core as it ordered it
        }
        let origin = crate::tree::Origin {
            session_id: z.header.client_id,
            cxid: z.header.cxid,
        };
        let (t, time) = match crate::zkformat::convert::from_zookeeper(z) {
            Ok(t) => t,
            Err(e) => unloggable(txn.zxid, &e.to_string()),
        };
        // About the proposal's size: ZooKeeper's header and ours differ by a few bytes.
        let mut payload = Vec::with_capacity(txn.data.len() + 32);
        t.encode_logged(time, origin, &mut payload);
        s.group
            .borrow()
            .push_record(txn.zxid, &payload, Item::Append);
        let mut decoded = s.decoded.borrow_mut();
        if decoded.back().is_some_and(|d| d.zxid >= txn.zxid) {
            decoded.clear(); // not in order: something was cut meanwhile
        }
        decoded.push_back(DecodedTxn {
            zxid: txn.zxid,
            data: txn.data.clone(),
            txn: t,
            time_ms: time,
            origin,
            payload,
        });
    }

    fn persisted(&self) -> Zxid {
        self.0
            .group
            .borrow()
            .durable_zxid()
            .load(std::sync::atomic::Ordering::Acquire)
    }

    async fn truncate(&mut self, to: Zxid) -> std::io::Result<()> {
        let s = self.0.clone();
        s.reload(&format!("TRUNC to {to:#x}"), move |cfg| {
            let dropped = ringkeeper_storage::recover::truncate_log_after(&cfg.log_dir(), to)
                .map_err(std::io::Error::other)?;
            remove_snapshots_after(cfg, to)?;
            tracing::info!("TRUNC: {dropped} logged txn(s) after {to:#x} removed");
            Ok(())
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        leader: i64,
        zxid: Zxid,
        image: Option<SnapImage>,
    ) -> std::io::Result<()> {
        let image = image.ok_or_else(|| std::io::Error::other("SNAP without what follows it"))?;
        let s = self.0.clone();
        match image {
            SnapImage::Tree(tree) => {
                s.reload(
                    &format!("SNAP (tree) from {leader} at {zxid:#x}"),
                    move |cfg| {
                        ringkeeper_storage::recover::remove_log(&cfg.log_dir())
                            .map_err(std::io::Error::other)?;
                        remove_snapshots_after(cfg, -1)?;
                        crate::zkformat::convert::snapshot_from_zookeeper_tree(
                            &tree,
                            zxid,
                            &cfg.snapshot_dir(),
                        )?;
                        Ok(())
                    },
                )
                .await?
            }
            SnapImage::Files(files) => {
                let what = format!(
                    "SNAP (snapshot file {:#x}, {} bytes, and {} bytes of log) from {leader} at {zxid:#x}",
                    files.snapshot_zxid,
                    files.snapshot.len(),
                    files.log.len()
                );
                s.reload(&what, move |cfg| install_files(cfg, zxid, &files))
                    .await?;
                let at = s.core.borrow().tree().last_zxid();
                if at != zxid {
                    return Err(std::io::Error::other(format!(
                        "the files of a SNAP at {zxid:#x} hold the tree at {at:#x}"
                    )));
                }
            }
        }
        // The shards switch to the new tree at once.
        let tree = Arc::new(s.core.borrow().tree().clone());
        s.send_to_shards(vec![Entry {
            tree: Some(tree),
            triggers: Vec::new(),
            effect: Effect::None,
            logged: false,
        }]);
        Ok(())
    }

    fn snapshot_image(&self, zxid: Zxid) -> Option<Vec<u8>> {
        let s = &self.0;
        let core = s.core.borrow();
        let tree = if core.tree().last_zxid() == zxid {
            core.tree().clone()
        } else {
            let p = s.published.borrow();
            if p.last_zxid() != zxid {
                tracing::warn!(
                    "a SNAP at {zxid:#x} was asked for; our trees are at {:#x} and {:#x}",
                    core.tree().last_zxid(),
                    p.last_zxid()
                );
                return None;
            }
            (**p).clone()
        };
        let sessions: Vec<(i64, i32)> = core
            .session_records()
            .iter()
            .map(|r| (r.id, r.timeout_ms))
            .collect();
        let mut b = Vec::new();
        crate::zkformat::convert::to_zookeeper_tree(&tree, &sessions).encode(&mut b);
        use crate::proto::jute::JuteWrite;
        b.put_string(crate::zkformat::snapshot::SNAP_SIGNATURE);
        Some(b)
    }

    fn snapshot_files(&self, zxid: Zxid) -> Option<SnapFiles> {
        let cfg = &self.0.cfg;
        let found = (|| {
            let snapshots = ringkeeper_storage::snapshot::list_snapshots(&cfg.snapshot_dir())
                .map_err(|e| e.to_string())?;
            let newest = snapshots.into_iter().find(|(z, _)| *z <= zxid); // newest first
            let (snapshot_zxid, snapshot) = match newest {
                Some((z, path)) => {
                    let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                    // SAFETY: a snapshot is immutable once renamed into place; a purge
                    // that removes it leaves the mapping valid.
                    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| e.to_string())?;
                    (z, Bytes::from_owner(map))
                }
                None => (0, Bytes::new()),
            };
            let log =
                ringkeeper_storage::transfer::read_log_range(&cfg.log_dir(), snapshot_zxid, zxid)?;
            Ok::<_, String>(SnapFiles {
                snapshot_zxid,
                snapshot,
                log: Bytes::from(log),
            })
        })();
        match found {
            Ok(files) => Some(files),
            Err(e) => {
                tracing::info!("a SNAP at {zxid:#x} goes as the tree, not files: {e}");
                None
            }
        }
    }

    fn apply(&mut self, txn: &ZabTxn) {
        let s = &self.0;
        s.committed.set(txn.zxid);
        let mut core = s.core_for_apply();
        let before = core.tree().last_zxid();
        let decoded = {
            let mut q = s.decoded.borrow_mut();
            while q.front().is_some_and(|d| d.zxid < txn.zxid) {
                q.pop_front();
            }
            q.front()
                .is_some_and(|d| d.zxid == txn.zxid && d.data == txn.data)
                .then(|| q.pop_front())
                .flatten()
        };
        let mut applying = s.applying.borrow_mut();
        let r = match decoded {
            Some(d) => core.apply_committed_decoded(&d, &mut applying),
            None => core.apply_committed(txn.zxid, &txn.data, &mut applying),
        };
        drop(applying);
        if let Err(e) = r {
            // A committed txn we cannot apply would leave our tree behind the
            // ensemble's: stop serving rather than answer from it.
            tracing::error!("{e}; this member stops");
            std::process::exit(1);
        }
        if core.tree().last_zxid() > before {
            s.since_snapshot.set(s.since_snapshot.get() + 1);
        }
        drop(core);
        // What this round applied goes to the shards at its end (`applied`), as one
        // batch; a held batch that is due now must come after it.
        if s.held_due() {
            self.applied();
            self.0.release_committed();
        }
    }

    fn applied(&mut self) {
        let s = &self.0;
        s.clock_set_this_round.set(false);
        let records = s.core.borrow_mut().take_applied_records();
        if !records.is_empty() {
            s.snapshotter.borrow().rebase.record(&records);
        }
        let mut entries = std::mem::take(&mut *s.applying.borrow_mut());
        if !entries.is_empty() {
            // One tree version for everything applied since the last call: a version
            // per txn would make each txn copy the tree's paths the last one shared.
            s.core.borrow_mut().finish_batch(&mut entries);
            s.send_to_shards(entries);
        }
    }

    fn forwarded(&mut self, from: i64, data: Bytes, auth: Vec<crate::proto::Id>) {
        self.0
            .work
            .borrow_mut()
            .push_back(Work::Forwarded { from, data, auth });
        self.0.wake();
    }

    fn touched(&mut self, sessions: Vec<(i64, i32)>) {
        self.0.work.borrow_mut().push_back(Work::Touched(sessions));
        self.0.wake();
    }

    fn synced(&mut self) {
        self.0.work.borrow_mut().push_back(Work::Synced);
        self.0.wake();
    }

    fn revalidate(&mut self, session_id: i64, _timeout_ms: i32) -> bool {
        self.0.core_now().revalidate(session_id)
    }

    fn leader_figures(&mut self, figures: Option<crate::zab::LeaderFigures>) {
        self.0.shared.set_leader_figures(figures);
    }

    fn role_changed(&mut self, role: Role) {
        let s = &self.0;
        // At once, not when the core loop gets to it: from here on nothing our core
        // orders may be proposed, so it must stop ordering as leader now.
        let leading = matches!(role, Role::Leading { .. });
        let mut core = s.core_now();
        if core.ordering() == Ordering::Leader && !leading {
            s.left_leading.set(true);
        }
        if matches!(role, Role::Looking) || (core.ordering() == Ordering::Leader && !leading) {
            // What waited on a leader is forgotten: the clients are dropped.
            core.learn();
        }
        if !matches!(role, Role::Looking) {
            // Out of read-only mode at once: no session may be granted locally now.
            core.set_quorumless(false);
        }
        if let Role::Leading { epoch } = role {
            s.accepted_upto.set(core.tree().last_zxid());
            core.lead(epoch);
        }
        drop(core);
        s.work.borrow_mut().push_back(Work::Role(role));
        s.wake();
    }
}

/// Makes a ringkeeper leader's files for a SNAP at `zxid` ours: each is checked (the
/// snapshot's checksums and structure, each log record's checksum and order, and that
/// they end at `zxid`) before anything of ours is removed; then the snapshot goes in
/// place and the records become our log.
fn install_files(cfg: &Config, zxid: Zxid, files: &SnapFiles) -> std::io::Result<()> {
    use ringkeeper_storage::transfer;
    let bad = |e: String| std::io::Error::other(format!("SNAP from the leader: {e}"));
    let span = transfer::check_records(&files.log, files.snapshot_zxid).map_err(bad)?;
    let ends_at = span.map_or(files.snapshot_zxid, |s| s.last);
    if ends_at != zxid {
        return Err(bad(format!("its files end at {ends_at:#x}")));
    }
    // Checked under a temp name first, renamed into place only once ours are gone.
    let t0 = Instant::now();
    let staged = if files.snapshot.is_empty() {
        None
    } else {
        let dir = cfg.snapshot_dir();
        Some(
            transfer::stage_snapshot_file(&dir, files.snapshot_zxid, &files.snapshot)
                .map_err(bad)?,
        )
    };
    let staged_ms = t0.elapsed().as_millis();
    ringkeeper_storage::recover::remove_log(&cfg.log_dir()).map_err(std::io::Error::other)?;
    remove_snapshots_after(cfg, -1)?;
    if let Some(staged) = staged {
        staged.commit()?;
    }
    if let Some(span) = span {
        let prealloc = super::segment_bytes(cfg);
        transfer::write_log(&cfg.log_dir(), &files.log, span.first, prealloc)?;
    }
    tracing::info!(
        "SNAP files in place in {} ms (the snapshot written, synced and checked in {staged_ms} ms)",
        t0.elapsed().as_millis()
    );
    Ok(())
}

/// Removes our snapshots of zxids above `zxid` (a TRUNC below them, or a SNAP that
/// replaces them all), durably.
fn remove_snapshots_after(cfg: &Config, zxid: Zxid) -> std::io::Result<()> {
    let dir = cfg.snapshot_dir();
    for (z, path) in ringkeeper_storage::snapshot::list_snapshots(&dir)? {
        if z > zxid {
            std::fs::remove_file(&path)?;
            tracing::info!("removed snapshot {} (past {zxid:#x})", path.display());
        }
    }
    ringkeeper_storage::fsutil::fsync_dir(&dir)
}

/// What Zab starts from: the epochs on disk, the log's end and its last txns (a
/// learner within them gets a DIFF; one behind them, our tree).
fn zab_recovered(
    cfg: &Config,
    recovered: &Recovered,
) -> Result<(crate::zab::peer::Recovered, Epochs), String> {
    let last = recovered.log_end.last_zxid;
    let e = epochs::load(&cfg.snapshot_dir(), crate::zab::history::epoch_of(last))
        .map_err(|e| e.to_string())?;
    Ok((
        crate::zab::peer::Recovered {
            accepted_epoch: e.accepted,
            current_epoch: e.current,
            history: History::recovered(
                recovered.recent.floor,
                recovered
                    .recent
                    .txns
                    .iter()
                    .map(|(zxid, data)| ZabTxn {
                        zxid: *zxid,
                        data: data.clone(),
                    })
                    .collect(),
                last,
                DIFF_TXNS_RETAINED,
            ),
        },
        e,
    ))
}

/// Runs member `member.peer.my_id`'s core until every shard has gone.
pub async fn run(
    cfg: Arc<Config>,
    member: MemberConfig,
    recovered: Recovered,
    inbound: Vec<SharedReceiver<ToCore>>,
    outbound: Vec<SharedSender<Arc<Batch>>>,
    shared: Arc<ServerShared>,
    started: super::StartReport,
) {
    let (zab, epochs) = match zab_recovered(&cfg, &recovered) {
        Ok(z) => z,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let my_id = member.peer.my_id;
    shared.set_mode(ServerMode::Looking);
    let handle = MemberHandle::new();
    let clock = Clock::new();
    let start = clock.now();
    let state = Rc::new(State {
        clock,
        cfg: cfg.clone(),
        shared: shared.clone(),
        core: RefCell::new(Core::member(
            cfg.clone(),
            my_id,
            recovered.tree.clone(),
            &recovered.sessions,
            start,
        )),
        group: RefCell::new(GroupCommit::new(recovered.log_end.last_zxid)),
        writer: RefCell::new(None),
        held: RefCell::default(),
        committed: Cell::new(0),
        own_upto: Cell::new(0),
        epochs: Cell::new(epochs),
        outbox: RefCell::default(),
        applying: RefCell::default(),
        decoded: RefCell::default(),
        outbox_notify: Notify::default(),
        published: RefCell::new(Arc::new(recovered.tree.clone())),
        work: RefCell::default(),
        notify: Notify::default(),
        handle: handle.clone(),
        accepted_upto: Cell::new(0),
        left_leading: Cell::new(false),
        reloading: glommio::sync::Semaphore::new(1),
        in_reload: Cell::new(false),
        reloaded: Notify::default(),
        snapshotter: RefCell::new(Snapshotter::new(
            cfg.clone(),
            Arc::default(),
            Arc::default(),
            shared.snapshot_stats.clone(),
        )),
        since_snapshot: Cell::new(recovered.log_end.replayed),
        clock_set_this_round: Cell::new(false),
        role_changes: Cell::new(0),
    });
    if let Err(e) = state.start_log(&recovered).await {
        let _ = started.send(Err(format!(
            "cannot open the txn log in {}: {e}",
            cfg.log_dir().display()
        )));
        return;
    }
    let _ = started.send(Ok(()));
    for rx in inbound {
        let state = state.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(msg) = rx.recv().await {
                state.work.borrow_mut().push_back(Work::Shard(msg));
                state.wake();
            }
        })
        .detach();
    }
    let mut senders: Vec<ConnectedSender<Arc<Batch>>> = Vec::new();
    for tx in outbound {
        senders.push(tx.connect().await);
    }
    let stopped = Rc::new(Cell::new(false));
    {
        // The shards get batches in the order they were made.
        let state = state.clone();
        let stopped = stopped.clone();
        glommio::spawn_local(async move {
            loop {
                let next = state.outbox.borrow_mut().pop_front();
                let Some(entries) = next else {
                    state.outbox_notify.wait().await;
                    continue;
                };
                if let Some(t) = entries.iter().rev().find_map(|e| e.tree.clone()) {
                    state.shared.set_last_zxid(t.last_zxid());
                    *state.published.borrow_mut() = t;
                }
                let batch = Arc::new(Batch { entries });
                for tx in &senders {
                    if tx.send(batch.clone()).await.is_err() {
                        stopped.set(true);
                        state.wake();
                        return;
                    }
                }
            }
        })
        .detach();
    }
    {
        let replica = Rc::new(RefCell::new(StorageReplica(state.clone())));
        let handle = handle.clone();
        glommio::spawn_local(async move {
            if let Err(e) = crate::peering::run_member(member, zab, replica, handle).await {
                tracing::error!("member {my_id} stopped: {e}");
                eprintln!("ringkeeper: member {my_id} stopped: {e}");
                std::process::exit(1);
            }
        })
        .detach();
    }
    let tick_ms = (cfg.tick_time_ms as u64 / 4).clamp(10, 500);
    {
        let state = state.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(tick_ms)).await;
                state.wake();
            }
        })
        .detach();
    }
    let mut last_tick = Instant::now();
    loop {
        state.notify.wait().await;
        if stopped.get() {
            handle.stop();
            return;
        }
        while state.group.borrow().queued_bytes() > QUEUED_LOG_BYTES_MAX
            && state.group.borrow().failed().is_none()
        {
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        state.finish_rebase();
        let mut entries = Vec::new();
        let mut steps = 0;
        loop {
            let next = state.work.borrow_mut().pop_front();
            let Some(w) = next else { break };
            if let Work::Role(role) = w {
                // Entries ordered before the change go out under the old role.
                flush(&state, &mut entries);
                change_role(&state, role).await;
                continue;
            }
            let mut core = state.core_now();
            match w {
                Work::Shard(m) => core.step(m, &mut entries),
                Work::Forwarded { from, data, auth } => {
                    if core.ordering() == Ordering::Leader {
                        core.forwarded(from, &data, auth, &mut entries)
                    }
                }
                Work::Touched(sessions) => core.touched(&sessions),
                Work::Synced => core.synced(&mut entries),
                Work::Role(_) => unreachable!("handled above"),
            }
            drop(core);
            steps += 1;
            if steps >= BATCH_REQUESTS_MAX {
                state.wake();
                break;
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(tick_ms) {
            last_tick = Instant::now();
            state.core_now().tick(&mut entries);
        }
        flush(&state, &mut entries);
        state.snapshot_if_due();
    }
}

/// Hands on what the core produced: as leader, the framed txns to the log (with the
/// entries, released on commit) and to Zab as proposals; as learner, the requests to
/// forward and the entries straight to the shards.
fn flush(state: &Rc<State>, entries: &mut Vec<Entry>) {
    let mut core = state.core.borrow_mut();
    if let Some(t) = core.take_cut_for_queued() {
        state.group.borrow().update_last(|i| {
            if let Item::Entry(e) = i {
                if e.tree.is_none() {
                    e.tree = Some(t);
                }
            }
        });
    }
    let framed = core.take_framed();
    let proposals = core.take_proposals();
    let syncs = core.take_syncs_due();
    let forwards = core.take_forwards();
    let touches = core.take_touches();
    let leading = core.ordering() == Ordering::Leader;
    if !leading && !entries.is_empty() && framed.count == 0 {
        core.finish_batch(entries);
    }
    drop(core);
    let proposals = if leading { proposals } else { Vec::new() };
    if let Some(&(last, _)) = proposals.last() {
        state.own_upto.set(last);
    }
    for (zxid, bytes) in proposals {
        let st = state.clone();
        state.handle.propose(Box::new(move |got| {
            if got != zxid {
                // Our core and Zab count zxids in step; if they ever do not, the
                // proposal would carry a header for another zxid.
                tracing::error!("proposal for {zxid:#x} was given {got:#x}: this member stops");
                std::process::exit(1);
            }
            st.accepted_upto.set(zxid);
            bytes
        }));
    }
    for to in syncs {
        state.handle.sync(to);
    }
    for (data, auth) in forwards {
        state.handle.forward(data, auth);
    }
    if !touches.is_empty() {
        state.handle.touch(touches);
    }
    let entries = std::mem::take(entries);
    if !leading && framed.count > 0 {
        // Ordered as leader just before the lead was lost: never proposed. Their
        // clients see a connection loss (outcome unknown).
        let undone = undo_failed(entries, &state.published.borrow());
        state.send_to_shards(undone);
        return;
    }
    if leading {
        state.snapshotter.borrow().rebase.record(&framed.bytes);
        state
            .since_snapshot
            .set(state.since_snapshot.get() + framed.count);
        if !entries.is_empty() || framed.count > 0 {
            let items = entries.into_iter().map(Item::Entry).collect();
            state
                .group
                .borrow()
                .push(&framed.bytes, framed.first_zxid, framed.count, items);
        }
    } else {
        state.send_to_shards(entries);
    }
}

async fn change_role(state: &Rc<State>, role: Role) {
    let was_leading = state.left_leading.get();
    if state.shared.mode() == ServerMode::ReadOnly {
        if matches!(role, Role::Looking) {
            return; // still without a quorum: read-only mode goes on
        }
        // A quorum again: the read-only sessions end, their clients find a member
        // that serves writes (as ZooKeeper shuts its read-only server down).
        state.core_now().set_quorumless(false);
        state.send_to_shards(vec![Entry {
            tree: None,
            triggers: Vec::new(),
            effect: Effect::DropClients,
            logged: false,
        }]);
        tracing::info!("leaving read-only mode");
    }
    state.role_changes.set(state.role_changes.get() + 1);
    match role {
        Role::Leading { epoch } => {
            state.shared.set_mode(ServerMode::Leader);
            tracing::info!("leading epoch {epoch}: serving clients");
        }
        Role::Following { leader, epoch } | Role::Observing { leader, epoch } => {
            if was_leading {
                leave_leading(state).await;
            }
            let mode = if matches!(role, Role::Observing { .. }) {
                ServerMode::Observer
            } else {
                ServerMode::Follower
            };
            state.shared.set_mode(mode);
            tracing::info!("{} {leader} in epoch {epoch}: serving clients", mode.name());
        }
        Role::Looking => {
            let serving = state.shared.mode().serving();
            state.shared.set_mode(ServerMode::Looking);
            if was_leading {
                leave_leading(state).await;
            }
            if serving {
                state.send_to_shards(vec![Entry {
                    tree: None,
                    triggers: Vec::new(),
                    effect: Effect::DropClients,
                    logged: false,
                }]);
            }
            if state.cfg.read_only_mode_enabled {
                schedule_read_only(state);
            }
        }
    }
}

/// Read-only mode: a member still looking after max(2 s, tickTime), as ZooKeeper
/// waits before it starts its read-only server, serves reads to read-only clients.
fn schedule_read_only(state: &Rc<State>) {
    let state = state.clone();
    let due = state.role_changes.get();
    let wait = Duration::from_millis(u64::from(state.cfg.tick_time_ms).max(2_000));
    glommio::spawn_local(async move {
        glommio::timer::sleep(wait).await;
        if state.role_changes.get() != due || state.shared.mode() != ServerMode::Looking {
            return;
        }
        state.core_now().set_quorumless(true);
        state.shared.set_mode(ServerMode::ReadOnly);
        tracing::info!("no quorum: read-only mode, serving reads to read-only clients");
    })
    .detach();
}

/// What a leader proposed and did not see committed may never be: its writers get a
/// connection loss, and the tree is reloaded from disk.
async fn leave_leading(state: &Rc<State>) {
    if let Err(e) = state.reload("no longer leading", |_| Ok(())).await {
        tracing::error!("cannot reload the tree after leading: {e}; this member stops");
        eprintln!("ringkeeper: cannot reload the tree after leading: {e}");
        std::process::exit(1);
    }
}
