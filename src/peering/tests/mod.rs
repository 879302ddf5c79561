//! Members on real loopback sockets, each on an executor of its own, with a replica
//! that keeps its log in memory (on "disk" as soon as written).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::LocalExecutorBuilder;

use super::*;
use crate::zab::history::History;

#[derive(Default)]
struct Shared {
    applied: Vec<Txn>,
    role: Option<Role>,
    epochs: (i64, i64),
    /// Snapshots taken from a leader: (zxid, znodes).
    snapshots: Vec<(Zxid, usize)>,
    /// Snapshots made for learners.
    snapshots_sent: usize,
    /// The replica's tree: every node's Stat.
    stats: BTreeMap<String, crate::proto::Stat>,
}

/// A log in memory, and ringkeeper's tree of what was applied (ZooKeeper txns,
/// converted), which a SNAP to a learner sends in ZooKeeper's layout. A SNAP taken
/// from a leader with more than the system nodes leaves no tree (this replica does
/// not read ZooKeeper's trees in).
struct MemReplica {
    /// The zxid of the snapshot the log follows.
    base: Zxid,
    log: Vec<Txn>,
    tree: Option<crate::tree::DataTree>,
    /// Directories made for snapshots taken from a leader (removed on drop).
    base_dirs: u32,
    made: Vec<std::path::PathBuf>,
    shared: Arc<Mutex<Shared>>,
}

impl Drop for MemReplica {
    fn drop(&mut self) {
        for d in &self.made {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl MemReplica {
    /// Every node's Stat, for the test thread to compare.
    fn publish_stats(&self) {
        let Some(tree) = &self.tree else { return };
        let mut stats = BTreeMap::new();
        let _ = tree.for_each_node(|p, n| -> Result<(), ()> {
            stats.insert(p.to_string(), n.stat());
            Ok(())
        });
        self.shared.lock().unwrap().stats = stats;
    }
}

impl Replica for MemReplica {
    fn persist_epochs(&mut self, accepted: i64, current: i64) -> std::io::Result<()> {
        self.shared.lock().unwrap().epochs = (accepted, current);
        Ok(())
    }
    fn append(&mut self, txn: &Txn) {
        self.log.push(txn.clone());
    }
    fn persisted(&self) -> Zxid {
        self.log.last().map_or(self.base, |t| t.zxid)
    }
    async fn truncate(&mut self, to: Zxid) -> std::io::Result<()> {
        self.log.retain(|t| t.zxid <= to);
        Ok(())
    }
    async fn install_snapshot(
        &mut self,
        _: ServerId,
        zxid: Zxid,
        image: Option<SnapImage>,
    ) -> std::io::Result<()> {
        // A leader's tree (ZooKeeper's serialization) replaces whatever was here; these
        // replicas make no files, so their leaders send the tree.
        let Some(SnapImage::Tree(tree)) = image else {
            return Err(std::io::Error::other("SNAP without its tree"));
        };
        self.shared
            .lock()
            .unwrap()
            .snapshots
            .push((zxid, tree.nodes.len()));
        self.log.clear();
        self.base = zxid;
        // Read in as ringkeeper's snapshot, in a directory of this replica's own.
        let dir = std::env::temp_dir().join(format!(
            "rk-memreplica-{}-{zxid:x}-{}",
            std::process::id(),
            self.base_dirs
        ));
        self.base_dirs += 1;
        std::fs::create_dir_all(&dir)?;
        self.made.push(dir.clone());
        let (t, _) = crate::zkformat::convert::snapshot_from_zookeeper_tree(&tree, zxid, &dir)?;
        self.tree = Some(t);
        self.publish_stats();
        Ok(())
    }
    fn snapshot_image(&self, zxid: Zxid) -> Option<Vec<u8>> {
        let tree = self.tree.as_ref().filter(|t| t.last_zxid() == zxid)?;
        self.shared.lock().unwrap().snapshots_sent += 1;
        let mut b = Vec::new();
        crate::zkformat::convert::to_zookeeper_tree(tree, &[]).encode(&mut b);
        use crate::proto::jute::JuteWrite;
        b.put_string(crate::zkformat::snapshot::SNAP_SIGNATURE);
        Some(b)
    }
    fn apply(&mut self, txn: &Txn) {
        if let Some(tree) = self.tree.as_mut() {
            let z = crate::zkformat::txn::ZkTxn::decode(&txn.data).expect("a ZooKeeper txn");
            let (t, time) =
                crate::zkformat::convert::from_zookeeper(z.clone()).expect("convertible");
            tree.apply(&t, txn.zxid, time, &mut Vec::new());
        }
        self.shared.lock().unwrap().applied.push(txn.clone());
        self.publish_stats();
    }
}

struct Running {
    shared: Arc<Mutex<Shared>>,
    /// Writes to propose (ZooKeeper txns, made for their zxid), and a flag to stop
    /// the member.
    ctl: Arc<Mutex<(Vec<Write>, bool)>>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

/// Free loopback ports below the kernel's ephemeral range (a port from bind(0) comes
/// from that range, where an outgoing connection could take it before a member binds
/// it), distinct within this process.
fn ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let lo: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let floor = if lo > 12000 { 10000 } else { 1024 };
    let mut out = Vec::new();
    while out.len() < n {
        let k = NEXT.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 7919;
        let port = floor + (k % u64::from(lo - floor)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    out
}

/// Member `me` of `ids` (voters, but for `observers`) on the given ports.
fn config(ids: &[ServerId], me: ServerId, e: &[u16], q: &[u16]) -> MemberConfig {
    config_with_observers(ids, &[], me, e, q)
}

fn config_with_observers(
    ids: &[ServerId],
    observers: &[ServerId],
    me: ServerId,
    e: &[u16],
    q: &[u16],
) -> MemberConfig {
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    MemberConfig {
        peer: PeerConfig {
            my_id: me,
            voters: ids
                .iter()
                .filter(|i| !observers.contains(i))
                .copied()
                .collect(),
            observers: observers.iter().copied().collect(),
            tick_ms: 100,
            init_limit: 10,
            sync_limit: 5,
            retain: 1_000_000,
            cumulative: true,
        },
        election: ids.iter().zip(e).map(|(i, p)| (*i, addr(*p))).collect(),
        quorum: ids.iter().zip(q).map(|(i, p)| (*i, addr(*p))).collect(),
    }
}

fn start(cfg: MemberConfig) -> Running {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let ctl = Arc::new(Mutex::new((Vec::<Write>::new(), false)));
    let (s, c) = (shared.clone(), ctl.clone());
    let thread = LocalExecutorBuilder::default()
        .name(&format!("member-{}", cfg.peer.my_id))
        .spawn(move || async move {
            let replica = Rc::new(RefCell::new(MemReplica {
                base: 0,
                tree: Some(crate::tree::DataTree::new()),
                base_dirs: 0,
                made: Vec::new(),
                log: Vec::new(),
                shared: s.clone(),
            }));
            let handle = MemberHandle::new();
            let recovered = Recovered {
                accepted_epoch: 0,
                current_epoch: 0,
                history: History::recovered(0, Vec::new(), 0, cfg.peer.retain),
            };
            let h = handle.clone();
            // Relays proposals and the stop flag from the test thread.
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    let (writes, stop) = {
                        let mut g = c.lock().unwrap();
                        (std::mem::take(&mut g.0), g.1)
                    };
                    for w in writes {
                        h.propose(Box::new(move |zxid| w.txn(zxid)));
                    }
                    s.lock().unwrap().role = Some(h.role());
                    if stop {
                        h.stop();
                        return;
                    }
                }
            })
            .detach();
            run_member(cfg, recovered, replica, handle).await.unwrap();
        })
        .unwrap();
    Running {
        shared,
        ctl,
        thread: Some(thread),
    }
}

impl Running {
    fn role(&self) -> Role {
        self.shared.lock().unwrap().role.unwrap_or(Role::Looking)
    }
    fn applied(&self) -> Vec<Txn> {
        self.shared.lock().unwrap().applied.clone()
    }
    fn propose(&self, w: Write) {
        self.ctl.lock().unwrap().0.push(w);
    }
    fn stop(&mut self) {
        self.ctl.lock().unwrap().1 = true;
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A write of this test: the create of a path.
#[derive(Clone)]
enum Write {
    Create(String),
}

/// A write tagged `tag`: the create of /`tag`.
fn write(tag: &str) -> Write {
    Write::Create(format!("/{tag}"))
}

impl Write {
    /// As ZooKeeper serializes the txn at `zxid` (what a PROPOSAL carries).
    fn txn(&self, zxid: Zxid) -> Bytes {
        use crate::zkformat::txn::{TxnHeader, TxnRecord, ZkTxn};
        let (txn_type, record) = match self {
            Write::Create(path) => (
                1,
                TxnRecord::Create {
                    path: path.clone(),
                    data: Some(b"from ringkeeper".to_vec()),
                    acl: Some(crate::tree::acl::open_acl_unsafe()),
                    ephemeral: false,
                    // -1: the parent's cversion goes up by one (ZooKeeper's rule).
                    parent_cversion: Some(-1),
                },
            ),
        };
        let txn = ZkTxn {
            header: TxnHeader {
                client_id: 0,
                cxid: 0,
                zxid,
                time: 1_700_000_000_000,
                txn_type,
            },
            record: Some(record),
            digest: None,
        };
        Bytes::from(txn.to_bytes())
    }
}

fn tag(t: &Txn) -> String {
    use crate::zkformat::txn::{TxnRecord, ZkTxn};
    match ZkTxn::decode(&t.data).unwrap().record {
        Some(TxnRecord::Create { path, .. }) => path[1..].to_string(),
        other => panic!("not a write of this test: {other:?}"),
    }
}

/// Logs (RUST_LOG) go to the test's output.
fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn leader_of(members: &BTreeMap<ServerId, Running>) -> Option<ServerId> {
    let leaders: Vec<ServerId> = members
        .iter()
        .filter(|(_, m)| matches!(m.role(), Role::Leading { .. }))
        .map(|(id, _)| *id)
        .collect();
    let [l] = leaders[..] else { return None };
    members
        .values()
        .all(|m| match m.role() {
            Role::Leading { .. } => true,
            Role::Following { leader, .. } | Role::Observing { leader, .. } => leader == l,
            _ => false,
        })
        .then_some(l)
}

/// Three members elect, establish an epoch and commit writes in order everywhere;
/// the leader is stopped, the two left elect a new leader in a new epoch, keep every
/// committed write and commit more; a client that speaks garbage to both ports is
/// dropped without disturbing them.
#[test]
fn three_members_on_loopback_replicate_and_survive_their_leader() {
    log_to_test_output();
    let ids = [1, 2, 3];
    let (e, q) = (ports(3), ports(3));
    let mut members: BTreeMap<ServerId, Running> = ids
        .iter()
        .map(|&i| (i, start(config(&ids, i, &e, &q))))
        .collect();
    wait_for("a leader everyone follows", 20, || {
        leader_of(&members).is_some()
    });
    let first = leader_of(&members).unwrap();
    for k in 0..200 {
        members[&first].propose(write(&format!("a{k}")));
    }
    wait_for("200 writes applied everywhere", 20, || {
        members.values().all(|m| m.applied().len() == 200)
    });
    let seq = members[&first].applied();
    assert!(
        members.values().all(|m| m.applied() == seq),
        "members applied different sequences"
    );
    let tags: Vec<String> = seq.iter().map(tag).collect();
    assert_eq!(tags, (0..200).map(|k| format!("a{k}")).collect::<Vec<_>>());

    // Garbage on both ports of a follower: dropped; the ensemble goes on.
    let follower = *ids.iter().find(|i| **i != first).unwrap();
    for port in [e[follower as usize - 1], q[follower as usize - 1]] {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(&[0xff; 64]);
    }

    members.get_mut(&first).unwrap().stop();
    members.remove(&first);
    wait_for("a new leader of the two left", 30, || {
        leader_of(&members).is_some()
    });
    let second = leader_of(&members).unwrap();
    assert_ne!(second, first);
    let Role::Leading { epoch } = members[&second].role() else {
        unreachable!()
    };
    assert!(epoch >= 2, "a new epoch: {epoch}");
    for k in 0..100 {
        members[&second].propose(write(&format!("b{k}")));
    }
    wait_for("100 more writes on both", 20, || {
        members.values().all(|m| m.applied().len() == 300)
    });
    for m in members.values() {
        let applied = m.applied();
        assert_eq!(
            &applied[..200],
            &seq[..],
            "a committed write was lost or changed"
        );
        assert_eq!(tag(&applied[299]), "b99");
        assert!(applied[200..]
            .iter()
            .all(|t| crate::zab::history::epoch_of(t.zxid) == epoch));
    }
}

/// An observer (member 4) of three voters: it takes the leader's epoch, gets every
/// committed write by INFORM, in order, and does not count for the quorum: with two
/// voters stopped, nothing commits although the observer is there.
#[test]
fn an_observer_gets_every_commit_and_counts_for_nothing() {
    let ids = [1, 2, 3, 4];
    let (e, q) = (ports(4), ports(4));
    let mut members: BTreeMap<ServerId, Running> = ids
        .iter()
        .map(|&i| (i, start(config_with_observers(&ids, &[4], i, &e, &q))))
        .collect();
    wait_for("a leader followed and observed by all", 20, || {
        leader_of(&members).is_some()
    });
    assert!(matches!(members[&4].role(), Role::Observing { .. }));
    let leader = leader_of(&members).unwrap();
    for k in 0..100 {
        members[&leader].propose(write(&format!("o{k}")));
    }
    wait_for("100 writes on all four", 20, || {
        members.values().all(|m| m.applied().len() == 100)
    });
    assert_eq!(members[&4].applied(), members[&leader].applied());
    // Stop the two voters that do not lead: the leader and the observer are no quorum.
    for id in [1, 2, 3].into_iter().filter(|i| *i != leader) {
        members.get_mut(&id).unwrap().stop();
    }
    members[&leader].propose(write("after"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        members.values().all(|m| m.applied().len() == 100),
        "a write committed without a quorum of voters"
    );
}

mod mixed;

#[test]
fn members_on_this_machine_are_those_with_a_local_address() {
    let mut cfg = config(&[1, 2, 3], 1, &[3888, 3889, 3890], &[2888, 2889, 2890]);
    assert_eq!(cfg.members_on_this_machine(), 3);
    // 192.0.2.0/24 is for documentation (RFC 5737): never this machine's address,
    // so binding to it fails and nothing is sent.
    cfg.quorum
        .insert(3, SocketAddr::from(([192, 0, 2, 7], 2888)));
    cfg.quorum
        .insert(2, SocketAddr::from(([127, 0, 0, 2], 2888)));
    assert_eq!(cfg.members_on_this_machine(), 2);
}
