//! Mixed ensembles: ringkeeper members with Apache ZooKeeper 3.8 members (Debian's
//! package `zookeeper`, which tests/run-all.sh installs), on loopback.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

/// An Apache ZooKeeper 3.8 member (Debian's package), started as its operators do
/// (log4j at INFO), killed when dropped.
struct ZkMember {
    child: std::process::Child,
    client_port: u16,
    dir: std::path::PathBuf,
}

impl ZkMember {
    fn start(id: ServerId, client_port: u16, servers: &str, tag: &str) -> ZkMember {
        // Local sessions: a client of a follower reads without its leader's help.
        let servers = format!("localSessionsEnabled=true\n{servers}");
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

/// Three members on loopback ports: ringkeeper's member `ours` and the `server.N`
/// lines the ZooKeeper members' zoo.cfg takes (tickTime 500 ms on every member).
struct Ensemble {
    servers: String,
    cfg: MemberConfig,
    client: Vec<u16>,
}

impl Ensemble {
    fn new(ours: ServerId) -> Ensemble {
        let ids = [1, 2, 3];
        let (e, q, client) = (ports(3), ports(3), ports(3));
        let servers = ids
            .iter()
            .map(|&i| {
                format!(
                    "server.{i}=127.0.0.1:{}:{}\n",
                    q[i as usize - 1],
                    e[i as usize - 1]
                )
            })
            .collect();
        let mut cfg = config(&ids, ours, &e, &q);
        cfg.peer.tick_ms = 500;
        Ensemble {
            servers,
            cfg,
            client,
        }
    }
}

/// One request on a fresh session to a ZooKeeper client port: the reply's error code
/// and body.
fn zk_call(
    port: u16,
    req: crate::proto::records::Request,
    timeout: Duration,
) -> std::io::Result<(i32, Vec<u8>)> {
    use crate::proto::records::ConnectRequest;
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
    req.encode(1, &mut body);
    s.write_all(&frame(body))?;
    let reply = read_frame(&mut s)?;
    let err = i32::from_be_bytes([reply[12], reply[13], reply[14], reply[15]]);
    Ok((err, reply[16..].to_vec()))
}

fn zk_create(port: u16, path: &str, timeout: Duration) -> std::io::Result<i32> {
    use crate::proto::records::{CreateKind, CreateRequest, Request};
    let req = Request::Create(CreateRequest {
        path: path.into(),
        data: Some(Bytes::from_static(b"from a mixed ensemble")),
        acl: crate::tree::acl::open_acl_unsafe(),
        flags: 0,
        kind: CreateKind::Create,
        ttl_ms: 0,
    });
    zk_call(port, req, timeout).map(|(err, _)| err)
}

fn zk_exists(port: u16, path: &str) -> std::io::Result<i32> {
    zk_stat(port, path).map(|(err, _)| err)
}

/// exists: the error code and, for a node that is there, its Stat.
fn zk_stat(port: u16, path: &str) -> std::io::Result<(i32, Option<crate::proto::Stat>)> {
    let req = crate::proto::records::Request::Exists {
        path: path.into(),
        watch: false,
    };
    let (err, body) = zk_call(port, req, Duration::from_secs(5))?;
    if err != 0 {
        return Ok((err, None));
    }
    let stat = crate::proto::Stat::decode(&mut crate::proto::jute::Reader::new(&body))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok((0, Some(stat)))
}

fn zk_set(port: u16, path: &str, data: &'static [u8]) -> std::io::Result<i32> {
    let req = crate::proto::records::Request::SetData {
        path: path.into(),
        data: Some(Bytes::from_static(data)),
        version: -1,
    };
    zk_call(port, req, Duration::from_secs(5)).map(|(err, _)| err)
}

/// ringkeeper's tree after applying, converted, the ZooKeeper txns a member applied
/// (from an empty tree: the member must have taken no SNAP with nodes in it).
fn tree_of(applied: &[Txn]) -> crate::tree::DataTree {
    let mut tree = crate::tree::DataTree::new();
    for t in applied {
        let z = crate::zkformat::txn::ZkTxn::decode(&t.data).unwrap();
        let (txn, time) = crate::zkformat::convert::from_zookeeper(z.clone()).unwrap();
        tree.apply(&txn, t.zxid, time, &mut Vec::new());
    }
    tree
}

/// A ringkeeper member (id 1) in an ensemble with two Apache ZooKeeper 3.8 members:
/// it votes in their election, follows their leader through discovery and sync, and
/// its ACKs count. With the other ZooKeeper member killed, the ZooKeeper leader can
/// only commit a write with the ringkeeper member's ACK, and does; the ringkeeper
/// member applies the txn ZooKeeper made.
#[test]
fn a_ringkeeper_member_votes_and_acks_in_a_zookeeper_ensemble() {
    log_to_test_output();
    let Ensemble {
        servers,
        cfg,
        client: c,
    } = Ensemble::new(1);
    let ours = start(cfg);
    let zk2 = ZkMember::start(2, c[1], &servers, "a");
    let zk3 = ZkMember::start(3, c[2], &servers, "a");
    // Everyone starts at zxid 0; which ZooKeeper member leads depends on who hears whom
    // first (member 2 with ringkeeper is a quorum before member 3 is up).
    let end = Instant::now() + Duration::from_secs(60);
    let (leader_id, lead, other) = loop {
        let (m2, m3) = (zk2.mode(), zk3.mode());
        let settled =
            |l: ServerId| matches!(ours.role(), Role::Following { leader, .. } if leader == l);
        if m3.as_deref() == Some("leader") && m2.as_deref() == Some("follower") && settled(3) {
            break (3, zk3, zk2);
        }
        if m2.as_deref() == Some("leader") && m3.as_deref() == Some("follower") && settled(2) {
            break (2, zk2, zk3);
        }
        assert!(
            Instant::now() < end,
            "not settled: zk2 {m2:?}, zk3 {m3:?}, ringkeeper {:?}\nzk3:\n{}",
            ours.role(),
            zk3.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let lp = lead.client_port;
    drop(other);
    // The ZooKeeper leader and ringkeeper are the quorum now.
    let mut err = None;
    wait_for("a write committed with ringkeeper's ACK", 30, || {
        err = zk_create(lp, "/mixed", Duration::from_secs(5)).ok();
        err.is_some()
    });
    assert_eq!(
        err,
        Some(0),
        "create /mixed failed; leader log:\n{}",
        lead.log()
    );
    wait_for("ringkeeper applies ZooKeeper's create", 10, || {
        ours.applied().iter().any(|t| {
            use crate::zkformat::txn::{TxnRecord, ZkTxn};
            matches!(ZkTxn::decode(&t.data).map(|z| z.record), Ok(Some(TxnRecord::Create { ref path, .. })) if path == "/mixed")
        })
    });
    assert!(matches!(ours.role(), Role::Following { leader, .. } if leader == leader_id));
    // The txns ZooKeeper made, converted and applied to ringkeeper's tree, give the
    // nodes ZooKeeper's own tree has, to the last Stat field.
    assert_eq!(zk_set(lp, "/mixed", b"changed").unwrap(), 0);
    assert_eq!(
        zk_create(lp, "/mixed/child", Duration::from_secs(5)).unwrap(),
        0
    );
    let zk_stats: Vec<_> = ["/mixed", "/mixed/child"]
        .iter()
        .map(|p| zk_stat(lp, p).unwrap().1.unwrap())
        .collect();
    wait_for("ringkeeper applies the setData and the child", 10, || {
        let tree = tree_of(&ours.applied());
        ["/mixed", "/mixed/child"]
            .iter()
            .all(|p| tree.node(p).is_some())
            && tree.node("/mixed").unwrap().stat().version == 1
    });
    assert!(
        ours.shared
            .lock()
            .unwrap()
            .snapshots
            .iter()
            .all(|(_, nodes)| *nodes <= 4),
        "a SNAP with more than the system nodes: the replay below would miss them"
    );
    let tree = tree_of(&ours.applied());
    for (p, zk) in ["/mixed", "/mixed/child"].iter().zip(&zk_stats) {
        assert_eq!(tree.node(p).unwrap().stat(), *zk, "{p}");
    }
    // And the write needed that ACK: without the ringkeeper member, nothing commits.
    let mut ours = ours;
    ours.stop();
    assert_ne!(
        zk_create(lp, "/alone", Duration::from_secs(3)).ok(),
        Some(0),
        "member 3 committed alone"
    );
}

/// Two Apache ZooKeeper 3.8 members follow a ringkeeper leader (id 3): the first
/// takes its epoch through discovery and sync, ACKs its proposals (ZooKeeper txns)
/// and applies them; the second, joining late, is sent ringkeeper's tree by SNAP in
/// ZooKeeper's layout. Both serve the writes to their own clients, with the Stat
/// ringkeeper's tree has.
#[test]
fn zookeeper_members_follow_a_ringkeeper_leader() {
    log_to_test_output();
    let Ensemble {
        servers,
        mut cfg,
        client: c,
    } = Ensemble::new(3);
    // Nothing committed is kept for DIFFs: a member that joins late gets a SNAP.
    cfg.peer.retain = 0;
    // ZooKeeper's member 1 alone has no quorum; with ours it has, and ours (the highest
    // id, every history empty) leads.
    let zk1 = ZkMember::start(1, c[0], &servers, "b");
    let ours = start(cfg);
    let end = Instant::now() + Duration::from_secs(60);
    while !(matches!(ours.role(), Role::Leading { .. })
        && zk1.mode().as_deref() == Some("follower"))
    {
        assert!(
            Instant::now() < end,
            "ringkeeper not leading ZooKeeper's member 1: {:?}\n{}",
            ours.role(),
            zk1.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for k in 0..20 {
        ours.propose(Write::Create(format!("/rk{k}")));
    }
    wait_for("20 creates committed", 20, || ours.applied().len() == 20);
    // Member 2 joins now, with none of it: ringkeeper's tree, in ZooKeeper's layout.
    let zk2 = ZkMember::start(2, c[1], &servers, "b");
    let end = Instant::now() + Duration::from_secs(60);
    while zk2.mode().as_deref() != Some("follower") {
        assert!(
            Instant::now() < end,
            "ZooKeeper's member 2 not following: {:?}\n{}",
            ours.role(),
            zk2.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ours.shared.lock().unwrap().snapshots_sent > 0,
        "member 2 was not sent a SNAP"
    );
    for zk in [&zk1, &zk2] {
        wait_for("ZooKeeper serving ringkeeper's creates", 20, || {
            (0..20).all(|k| zk_exists(zk.client_port, &format!("/rk{k}")).ok() == Some(0))
        });
        assert_eq!(
            zk_exists(zk.client_port, "/rk20").ok(),
            Some(-101),
            "NONODE for what was never written"
        );
    }
    // The two trees agree with ringkeeper's to the last Stat field.
    let tree = tree_of(&ours.applied());
    for k in [0, 19] {
        let p = format!("/rk{k}");
        let ours_stat = tree.node(&p).unwrap().stat();
        for zk in [&zk1, &zk2] {
            assert_eq!(
                zk_stat(zk.client_port, &p).unwrap().1.unwrap(),
                ours_stat,
                "{p}"
            );
        }
    }
}

/// A ringkeeper member joins a ZooKeeper ensemble that already holds data: it takes
/// the leader's tree (by SNAP, read into ringkeeper's snapshot format, or by DIFF from
/// the leader's log, as ZooKeeper chooses) and holds every node with ZooKeeper's Stat.
#[test]
fn a_ringkeeper_member_joining_late_takes_zookeepers_tree() {
    log_to_test_output();
    let Ensemble {
        servers,
        cfg,
        client: c,
    } = Ensemble::new(1);
    let zk2 = ZkMember::start(2, c[1], &servers, "c");
    let zk3 = ZkMember::start(3, c[2], &servers, "c");
    let end = Instant::now() + Duration::from_secs(60);
    while !(zk3.mode().as_deref() == Some("leader") && zk2.mode().as_deref() == Some("follower")) {
        assert!(
            Instant::now() < end,
            "ZooKeeper not serving: {:?} {:?}\n{}",
            zk2.mode(),
            zk3.mode(),
            zk3.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let paths: Vec<String> = (0..10).map(|k| format!("/early{k}")).collect();
    for p in &paths {
        assert_eq!(zk_create(c[2], p, Duration::from_secs(5)).unwrap(), 0);
    }
    assert_eq!(zk_set(c[2], "/early3", b"changed").unwrap(), 0);
    let ours = start(cfg);
    wait_for("ringkeeper following ZooKeeper's leader", 60, || {
        matches!(ours.role(), Role::Following { leader: 3, .. })
    });
    let stats = || ours.shared.lock().unwrap().stats.clone();
    wait_for("ringkeeper holding the early nodes", 10, || {
        paths.iter().all(|p| stats().contains_key(p))
    });
    for p in &paths {
        assert_eq!(stats()[p], zk_stat(c[2], p).unwrap().1.unwrap(), "{p}");
    }
    eprintln!(
        "synced by {} SNAP(s)",
        ours.shared.lock().unwrap().snapshots.len()
    );
}
