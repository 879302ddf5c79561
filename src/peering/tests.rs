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
}

struct MemReplica {
    /// The zxid of the snapshot the log follows.
    base: Zxid,
    log: Vec<Txn>,
    shared: Arc<Mutex<Shared>>,
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
    fn truncate(&mut self, to: Zxid) -> std::io::Result<()> {
        self.log.retain(|t| t.zxid <= to);
        Ok(())
    }
    fn install_snapshot(
        &mut self,
        _: ServerId,
        zxid: Zxid,
        tree: Option<ZkTree>,
    ) -> std::io::Result<()> {
        // A leader's tree (ZooKeeper's serialization) replaces whatever was here.
        let tree = tree.ok_or_else(|| std::io::Error::other("SNAP without its tree"))?;
        self.shared
            .lock()
            .unwrap()
            .snapshots
            .push((zxid, tree.nodes.len()));
        self.log.clear();
        self.base = zxid;
        Ok(())
    }
    fn snapshot_image(&self, _: Zxid) -> Option<Vec<u8>> {
        None
    }
    fn apply(&mut self, txn: &Txn) {
        self.shared.lock().unwrap().applied.push(txn.clone());
    }
}

struct Running {
    shared: Arc<Mutex<Shared>>,
    /// Writes to propose, and a flag to stop the member.
    ctl: Arc<Mutex<(Vec<Bytes>, bool)>>,
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

fn config(ids: &[ServerId], me: ServerId, e: &[u16], q: &[u16]) -> MemberConfig {
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    MemberConfig {
        peer: PeerConfig {
            my_id: me,
            voters: ids.iter().copied().collect(),
            observers: Default::default(),
            tick_ms: 100,
            init_limit: 10,
            sync_limit: 5,
            retain: 1_000_000,
        },
        election: ids.iter().zip(e).map(|(i, p)| (*i, addr(*p))).collect(),
        quorum: ids.iter().zip(q).map(|(i, p)| (*i, addr(*p))).collect(),
    }
}

fn start(cfg: MemberConfig) -> Running {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let ctl = Arc::new(Mutex::new((Vec::new(), false)));
    let (s, c) = (shared.clone(), ctl.clone());
    let thread = LocalExecutorBuilder::default()
        .name(&format!("member-{}", cfg.peer.my_id))
        .spawn(move || async move {
            let replica = Rc::new(RefCell::new(MemReplica {
                base: 0,
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
                        h.propose(w);
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
    fn propose(&self, data: Bytes) {
        self.ctl.lock().unwrap().0.push(data);
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

/// A write as ZooKeeper serializes a txn (a setData of /t to `tag`), as a PROPOSAL
/// must carry.
fn write(tag: &str) -> Bytes {
    use crate::zkformat::txn::{TxnHeader, TxnRecord, ZkTxn};
    let txn = ZkTxn {
        header: TxnHeader {
            client_id: 0,
            cxid: 0,
            zxid: 0,
            time: 0,
            txn_type: 5,
        },
        record: Some(TxnRecord::SetData {
            path: "/t".into(),
            data: Some(tag.as_bytes().to_vec()),
            version: 0,
        }),
        digest: None,
    };
    Bytes::from(txn.to_bytes())
}

fn tag(t: &Txn) -> String {
    use crate::zkformat::txn::{TxnRecord, ZkTxn};
    match ZkTxn::decode(&t.data).unwrap().record {
        Some(TxnRecord::SetData { data: Some(d), .. }) => String::from_utf8(d).unwrap(),
        other => panic!("not a write of this test: {other:?}"),
    }
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
            Role::Following { leader, .. } => leader == l,
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
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

/// An Apache ZooKeeper 3.8 member (Debian's package), started as its operators do
/// (log4j at INFO), killed when dropped.
struct ZkMember {
    child: std::process::Child,
    client_port: u16,
    dir: std::path::PathBuf,
}

impl ZkMember {
    fn start(id: ServerId, client_port: u16, servers: &str, tag: &str) -> ZkMember {
        let jar = std::path::Path::new("/usr/share/java/zookeeper.jar");
        assert!(
            jar.exists(),
            "{} is missing: apt-get install zookeeper (tests/run-all.sh does)",
            jar.display()
        );
        let dir = std::env::temp_dir().join(format!("rk-mixed-{tag}-{}-{id}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/myid"), format!("{id}\n")).unwrap();
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={client_port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\n{servers}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("log4j.properties"),
            format!(
                "log4j.rootLogger=INFO, FILE\nlog4j.appender.FILE=org.apache.log4j.FileAppender\nlog4j.appender.FILE.File={}\nlog4j.appender.FILE.layout=org.apache.log4j.PatternLayout\nlog4j.appender.FILE.layout.ConversionPattern=%d - %-5p [%t:%C{{1}}@%L] - %m%n\n",
                dir.join("zookeeper.log").display()
            ),
        )
        .unwrap();
        let cp = [
            dir.display().to_string(),
            jar.display().to_string(),
            "/usr/share/java/slf4j-log4j12.jar".into(),
            "/usr/share/java/log4j-1.2.jar".into(),
        ]
        .join(":");
        let child = std::process::Command::new("java")
            .args([
                "-Xms128m",
                "-Xmx256m",
                &format!(
                    "-Dlog4j.configuration=file:{}/log4j.properties",
                    dir.display()
                ),
                "-cp",
                &cp,
            ])
            .args([
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                &dir.join("zoo.cfg").display().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("java");
        ZkMember {
            child,
            client_port,
            dir,
        }
    }

    fn mode(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.client_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"srvr").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: ").map(str::to_string))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("zookeeper.log")).unwrap_or_default()
    }
}

impl Drop for ZkMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request on a fresh session to a ZooKeeper client port: the reply's error code.
fn zk_create(port: u16, path: &str, timeout: Duration) -> std::io::Result<i32> {
    use crate::proto::records::{ConnectRequest, CreateKind, CreateRequest, Request};
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    let frame = |body: Vec<u8>| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend(body);
        f
    };
    let read_frame = |s: &mut std::net::TcpStream| -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut b)?;
        Ok(b)
    };
    let mut body = Vec::new();
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms: 4_000,
        session_id: 0,
        passwd: vec![0; 16],
        read_only: Some(false),
    }
    .encode(&mut body);
    s.write_all(&frame(body))?;
    read_frame(&mut s)?;
    let mut body = Vec::new();
    Request::Create(CreateRequest {
        path: path.into(),
        data: Some(Bytes::from_static(b"from a mixed ensemble")),
        acl: crate::tree::acl::open_acl_unsafe(),
        flags: 0,
        kind: CreateKind::Create,
        ttl_ms: 0,
    })
    .encode(1, &mut body);
    s.write_all(&frame(body))?;
    let reply = read_frame(&mut s)?;
    Ok(i32::from_be_bytes([
        reply[12], reply[13], reply[14], reply[15],
    ]))
}

/// A ringkeeper member (id 1) in an ensemble with two Apache ZooKeeper 3.8 members:
/// it votes in their election, follows their leader through discovery and sync, and
/// its ACKs count. With the other ZooKeeper member killed, the ZooKeeper leader can
/// only commit a write with the ringkeeper member's ACK, and does; the ringkeeper
/// member applies the txn ZooKeeper made.
#[test]
fn a_ringkeeper_member_votes_and_acks_in_a_zookeeper_ensemble() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let ids = [1, 2, 3];
    let (e, q, c) = (ports(3), ports(3), ports(3));
    let servers: String = ids
        .iter()
        .map(|&i| {
            format!(
                "server.{i}=127.0.0.1:{}:{}\n",
                q[i as usize - 1],
                e[i as usize - 1]
            )
        })
        .collect();
    let mut cfg = config(&ids, 1, &e, &q);
    cfg.peer.tick_ms = 500;
    let ours = start(cfg);
    let zk2 = ZkMember::start(2, c[1], &servers, "a");
    let zk3 = ZkMember::start(3, c[2], &servers, "a");
    // Everyone starts at zxid 0: the highest id, ZooKeeper's member 3, leads.
    wait_for(
        "member 3 leading, member 2 and ringkeeper following it",
        60,
        || {
            zk3.mode().as_deref() == Some("leader")
                && zk2.mode().as_deref() == Some("follower")
                && matches!(ours.role(), Role::Following { leader: 3, .. })
        },
    );
    drop(zk2);
    // Member 3 and ringkeeper are the quorum now.
    let mut err = None;
    wait_for("a write committed with ringkeeper's ACK", 30, || {
        err = zk_create(c[2], "/mixed", Duration::from_secs(5)).ok();
        err.is_some()
    });
    assert_eq!(
        err,
        Some(0),
        "create /mixed failed; leader log:\n{}",
        zk3.log()
    );
    wait_for("ringkeeper applies ZooKeeper's create", 10, || {
        ours.applied().iter().any(|t| {
            use crate::zkformat::txn::{TxnRecord, ZkTxn};
            matches!(ZkTxn::decode(&t.data).map(|z| z.record), Ok(Some(TxnRecord::Create { ref path, .. })) if path == "/mixed")
        })
    });
    assert!(matches!(ours.role(), Role::Following { leader: 3, .. }));
    // And the write needed that ACK: without the ringkeeper member, nothing commits.
    let mut ours = ours;
    ours.stop();
    assert_ne!(
        zk_create(c[2], "/alone", Duration::from_secs(3)).ok(),
        Some(0),
        "member 3 committed alone"
    );
}
