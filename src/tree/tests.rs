use super::*;
use crate::proto::CreateKind;
use proptest::prelude::*;
use ringkeeper_storage::snapshot::{SnapSession, Snapshot};

fn who(auth: &[Id]) -> Requester<'_> {
    Requester {
        session_id: 0x42,
        auth,
        extended_types: true,
        enforce_quota: true,
    }
}

fn create(path: &str, flags: i32) -> WriteOp {
    WriteOp::Create(CreateRequest {
        kind: CreateKind::Create2,
        path: path.into(),
        data: Some(Bytes::from_static(b"d")),
        acl: acl::open_acl_unsafe(),
        flags,
        ttl_ms: -1,
    })
}

/// Prepares and applies one op at the next zxid.
fn run(t: &mut DataTree, op: &WriteOp) -> Result<Applied, ErrorCode> {
    let txn = t.prepare(op, &who(&[]))?;
    let zxid = t.last_zxid() + 1;
    Ok(t.apply(&txn, zxid, 1000, &mut Vec::new()))
}

#[test]
fn fresh_tree_has_zookeeper_system_nodes() {
    let t = DataTree::new();
    let root = t.node("/").unwrap();
    assert_eq!(root.children().collect::<Vec<_>>(), ["zookeeper"]);
    assert!(t.node(CONFIG_PATH).is_some());
    assert!(t.node(QUOTA_PATH).is_some());
    assert_eq!(t.node_count(), 4);
}

#[test]
fn sequential_names_use_parent_cversion() {
    let mut t = DataTree::new();
    run(&mut t, &create("/p", 0)).unwrap();
    run(&mut t, &create("/p/x", 0)).unwrap();
    run(
        &mut t,
        &WriteOp::Delete {
            path: "/p/x".into(),
            version: -1,
        },
    )
    .unwrap();
    // one create and one delete so far: the counter of creates names the next one
    assert_eq!(
        t.node("/p").unwrap().stat().cversion,
        2,
        "clients see both changes"
    );
    match run(&mut t, &create("/p/s-", 2)).unwrap() {
        Applied::Created { path, .. } => assert_eq!(path, "/p/s-0000000001"),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.node("/p").unwrap().stat().cversion, 3);
}

#[test]
fn create_updates_parent_cversion_and_pzxid() {
    let mut t = DataTree::new();
    run(&mut t, &create("/a", 0)).unwrap();
    let root = t.node("/").unwrap().stat();
    assert_eq!(root.cversion, 0, "one create: 2 * 1 - 2 children");
    assert_eq!(root.pzxid, 1);
    assert_eq!(root.num_children, 2);
    let a = t.node("/a").unwrap().stat();
    assert_eq!(
        (a.czxid, a.mzxid, a.pzxid, a.version, a.data_length),
        (1, 1, 1, 0, 1)
    );
}

#[test]
fn errors_follow_zookeeper_codes() {
    let mut t = DataTree::new();
    assert_eq!(run(&mut t, &create("/a/b", 0)), Err(ErrorCode::NoNode));
    run(&mut t, &create("/a", 0)).unwrap();
    assert_eq!(run(&mut t, &create("/a", 0)), Err(ErrorCode::NodeExists));
    assert_eq!(run(&mut t, &create("/a/", 0)), Err(ErrorCode::BadArguments));
    assert_eq!(run(&mut t, &create("/e", 1)).map(|_| ()), Ok(()));
    assert_eq!(
        run(&mut t, &create("/e/c", 0)),
        Err(ErrorCode::NoChildrenForEphemerals)
    );
    run(&mut t, &create("/a/b", 0)).unwrap();
    assert_eq!(
        run(
            &mut t,
            &WriteOp::Delete {
                path: "/a".into(),
                version: -1
            }
        ),
        Err(ErrorCode::NotEmpty)
    );
    assert_eq!(
        run(
            &mut t,
            &WriteOp::SetData {
                path: "/a".into(),
                data: Some(Bytes::new()),
                version: 3
            }
        ),
        Err(ErrorCode::BadVersion)
    );
    assert_eq!(
        run(
            &mut t,
            &WriteOp::Delete {
                path: "/zookeeper".into(),
                version: -1
            }
        ),
        Err(ErrorCode::BadArguments)
    );
    assert_eq!(run(&mut t, &create("/x", 9)), Err(ErrorCode::BadArguments));
}

#[test]
fn acl_denies_without_auth_and_super_bypasses() {
    let mut t = DataTree::new();
    let digest_id = Id::new("digest", &acl::digest("u:p"));
    let op = WriteOp::Create(CreateRequest {
        kind: CreateKind::Create,
        path: "/locked".into(),
        data: Some(Bytes::new()),
        acl: vec![Acl {
            perms: perms::ALL,
            id: digest_id.clone(),
        }],
        flags: 0,
        ttl_ms: -1,
    });
    run(&mut t, &op).unwrap();
    let set = WriteOp::SetData {
        path: "/locked".into(),
        data: Some(Bytes::new()),
        version: -1,
    };
    assert_eq!(t.prepare(&set, &who(&[])), Err(ErrorCode::NoAuth));
    assert!(t.prepare(&set, &who(&[digest_id])).is_ok());
    assert!(t.prepare(&set, &who(&[Id::new("super", "")])).is_ok());
}

#[test]
fn multi_is_all_or_nothing() {
    let mut t = DataTree::new();
    let before = t.node_count();
    let ops = vec![
        create("/m1", 0),
        create("/m2", 0),
        WriteOp::Check {
            path: "/nope".into(),
            version: -1,
        },
        create("/m3", 0),
    ];
    let err = t
        .prepare_apply_multi(&ops, &who(&[]), 1, 0, &mut Vec::new())
        .unwrap_err();
    assert_eq!(err, vec![0, 0, -101, -2]);
    assert_eq!(t.node_count(), before);
    let ok = t.prepare_apply_multi(&ops[..2], &who(&[]), 2, 0, &mut Vec::new());
    assert!(ok.is_ok());
    assert_eq!(t.node_count(), before + 2);
}

#[test]
fn an_empty_multi_consumes_its_zxid() {
    let mut t = DataTree::new();
    assert!(t
        .prepare_apply_multi(&[], &who(&[]), 1, 0, &mut Vec::new())
        .is_ok());
    assert_eq!(t.last_zxid(), 1);
}

#[test]
fn close_session_removes_its_ephemerals() {
    let mut t = DataTree::new();
    run(&mut t, &create("/e1", 1)).unwrap();
    run(&mut t, &create("/e2", 3)).unwrap();
    assert_eq!(t.ephemerals_of(0x42).len(), 2);
    let mut trig = Vec::new();
    t.apply(&Txn::CloseSession { session_id: 0x42 }, 10, 0, &mut trig);
    assert!(t.ephemerals_of(0x42).is_empty());
    assert!(t.node("/e1").is_none());
    assert!(trig
        .iter()
        .any(|x| x.event == EventType::NodeDeleted && &*x.path == "/e1"));
}

#[test]
fn containers_become_candidates_once_emptied() {
    let mut t = DataTree::new();
    let c = WriteOp::Create(CreateRequest {
        kind: CreateKind::Container,
        path: "/c".into(),
        data: Some(Bytes::new()),
        acl: acl::open_acl_unsafe(),
        flags: 4,
        ttl_ms: -1,
    });
    run(&mut t, &c).unwrap();
    assert!(
        t.cleanup_candidates(0).is_empty(),
        "never-used containers stay"
    );
    run(&mut t, &create("/c/x", 0)).unwrap();
    run(
        &mut t,
        &WriteOp::Delete {
            path: "/c/x".into(),
            version: -1,
        },
    )
    .unwrap();
    assert_eq!(t.cleanup_candidates(0), vec!["/c".to_string()]);
}

#[test]
fn ttl_nodes_expire_after_ttl_without_children() {
    let mut t = DataTree::new();
    let c = WriteOp::Create(CreateRequest {
        kind: CreateKind::Ttl,
        path: "/t".into(),
        data: Some(Bytes::new()),
        acl: acl::open_acl_unsafe(),
        flags: 5,
        ttl_ms: 500,
    });
    run(&mut t, &c).unwrap(); // mtime 1000
    assert!(t.cleanup_candidates(1400).is_empty());
    assert_eq!(t.cleanup_candidates(1600), vec!["/t".to_string()]);
    let no_ext = Requester {
        session_id: 1,
        auth: &[],
        extended_types: false,
        enforce_quota: false,
    };
    assert_eq!(t.prepare(&c, &no_ext), Err(ErrorCode::Unimplemented));
}

#[test]
fn clients_see_ephemeral_owner_zero_for_containers_and_ttl_nodes() {
    let mut t = DataTree::new();
    let kinds = [
        ("/c", CreateKind::Container, 4, -1),
        ("/t", CreateKind::Ttl, 5, 60_000),
        ("/e", CreateKind::Create2, 1, -1),
    ];
    for (path, kind, flags, ttl_ms) in kinds {
        let op = WriteOp::Create(CreateRequest {
            kind,
            path: path.into(),
            data: Some(Bytes::new()),
            acl: acl::open_acl_unsafe(),
            flags,
            ttl_ms,
        });
        let Ok(Applied::Created { stat, .. }) = run(&mut t, &op) else {
            panic!("{path} was not created");
        };
        let want = if path == "/e" { 0x42 } else { 0 };
        assert_eq!(stat.ephemeral_owner, want, "create2 stat of {path}");
    }
    let set = |p: &str| WriteOp::SetData {
        path: p.into(),
        data: Some(Bytes::from_static(b"x")),
        version: -1,
    };
    assert!(matches!(run(&mut t, &set("/c")), Ok(Applied::Stat(st)) if st.ephemeral_owner == 0));
    // The kind is still stored (it decides expiry) and still read from the snapshot.
    let (base, _) = through_snapshot(&t, &[]);
    for tree in [&t, &base] {
        for (path, want) in [("/c", 0), ("/t", 0), ("/e", 0x42)] {
            let n = tree.node(path).unwrap();
            assert_eq!(n.stat().ephemeral_owner, want, "{path}");
            assert_ne!(n.stored_stat().ephemeral_owner, 0, "{path} keeps its kind");
        }
    }
}

proptest! {
    /// Replaying the txns of a random op sequence on a fresh tree gives the same tree.
    #[test]
    fn replay_is_deterministic(ops in prop::collection::vec((0..4u8, 0..6u8, 0..4u8), 1..60)) {
        let mut t = DataTree::new();
        let mut log = Vec::new();
        for (kind, a, b) in ops {
            let p = if b == 0 { format!("/n{a}") } else { format!("/n{a}/c{b}") };
            let op = match kind {
                0 => create(&p, (b % 4) as i32),
                1 => WriteOp::Delete { path: p, version: -1 },
                2 => WriteOp::SetData { path: p, data: Some(Bytes::from(vec![a; b as usize])), version: -1 },
                _ => WriteOp::Check { path: p, version: 0 },
            };
            let zxid = t.last_zxid() + 1;
            let txn = t.prepare(&op, &who(&[])).unwrap_or_else(|e| Txn::Error(e.code()));
            t.apply(&txn, zxid, zxid * 10, &mut Vec::new());
            log.push((zxid, txn));
        }
        let mut r = DataTree::new();
        for (zxid, txn) in &log {
            r.apply(txn, *zxid, zxid * 10, &mut Vec::new());
        }
        assert_same_tree(&t, &r);
    }
}

proptest! {
    /// A clone of the tree (a version the shards read) keeps what it held while the
    /// tree it was cloned from takes more writes: each write copies what it changes,
    /// a setData's node included.
    #[test]
    fn versions_keep_what_they_held(
        ops in prop::collection::vec((0..4u8, 0..6u8, 0..4u8), 1..80),
        cuts in prop::collection::vec(0..80usize, 1..6),
    ) {
        let mut t = DataTree::new();
        let mut log = Vec::new();
        let mut versions = Vec::new();
        for (i, (kind, a, b)) in ops.into_iter().enumerate() {
            if cuts.contains(&i) {
                versions.push((t.clone(), log.len()));
            }
            let p = if b == 0 { format!("/n{a}") } else { format!("/n{a}/c{b}") };
            let op = match kind {
                0 => create(&p, 0),
                1 => WriteOp::Delete { path: p, version: -1 },
                2 => WriteOp::SetData { path: p, data: Some(Bytes::from(vec![a ^ b; (i % 7) + 1])), version: -1 },
                _ => WriteOp::SetData { path: p, data: None, version: -1 },
            };
            let zxid = t.last_zxid() + 1;
            let txn = t.prepare(&op, &who(&[])).unwrap_or_else(|e| Txn::Error(e.code()));
            t.apply(&txn, zxid, zxid * 10, &mut Vec::new());
            log.push((zxid, txn));
        }
        for (version, len) in &versions {
            let mut r = DataTree::new();
            for (zxid, txn) in &log[..*len] {
                r.apply(txn, *zxid, zxid * 10, &mut Vec::new());
            }
            assert_same_tree(version, &r);
        }
    }
}

/// One random op (nested nodes, ephemerals, sequentials, containers, null and binary
/// data, a non-default ACL), prepared and applied at the next zxid; failures log an
/// error txn as the core does.
fn random_step(t: &mut DataTree, (kind, a, b): (u8, u8, u8)) {
    let p = match b {
        0 => format!("/n{a}"),
        3 => format!("/n{a}/c1/d{}", a % 3),
        _ => format!("/n{a}/c{b}"),
    };
    let txn = match kind {
        0 => t.prepare(&create(&p, [0, 1, 2, 3, 4][(a % 5) as usize]), &who(&[])),
        1 => t.prepare(
            &WriteOp::Delete {
                path: p,
                version: -1,
            },
            &who(&[]),
        ),
        2 => t.prepare(
            &WriteOp::SetData {
                path: p,
                data: (a % 3 != 0).then(|| Bytes::from(vec![a; b as usize * 7])),
                version: -1,
            },
            &who(&[]),
        ),
        _ => t.prepare_set_acl(&p, &acl::read_acl_unsafe(), -1, &who(&[])),
    }
    .unwrap_or_else(|e| Txn::Error(e.code()));
    let zxid = t.last_zxid() + 1;
    t.apply(&txn, zxid, zxid * 10, &mut Vec::new());
}

/// Every node reachable from the root, breadth-first: (path, stat, data, ACL,
/// children). Walking the merged view from the root is what reads and snapshots do.
/// A node as `walk` sees it: path, stat, data, ACL, children.
type Walked = (String, Stat, Option<Bytes>, Vec<Acl>, Vec<String>);

fn walk(t: &DataTree) -> Vec<Walked> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from(["/".to_string()]);
    while let Some(p) = queue.pop_front() {
        let n = t
            .node(&p)
            .unwrap_or_else(|| panic!("{p} is listed but missing"));
        let children: Vec<String> = n.children().map(str::to_string).collect();
        let mut sorted = children.clone();
        sorted.sort();
        assert_eq!(children, sorted, "children of {p} out of order");
        assert_eq!(children.len(), n.child_count(), "{p}");
        for c in &children {
            queue.push_back(path::join(&p, c));
        }
        out.push((p, n.stat(), n.data(), n.acl().to_vec(), children));
    }
    assert_eq!(out.len(), t.node_count(), "node count against the walk");
    let size: u64 = out
        .iter()
        .map(|(p, _, d, _, _)| (p.len() + d.as_ref().map_or(0, |d| d.len())) as u64)
        .sum();
    assert_eq!(size, t.approximate_data_size());
    out
}

fn assert_same_tree(a: &DataTree, b: &DataTree) {
    assert_eq!(a.last_zxid(), b.last_zxid());
    assert_eq!(walk(a), walk(b));
    assert_eq!(a.all_ephemerals(), b.all_ephemerals());
    assert_eq!(a.containers, b.containers);
    assert_eq!(a.ttls, b.ttls);
}

/// Writes `t` as a snapshot and reads it back in place.
fn through_snapshot(t: &DataTree, sessions: &[SnapSession]) -> (DataTree, Vec<SnapSession>) {
    let dir = std::env::temp_dir().join(format!(
        "rk-tree-snap-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = t.write_snapshot(sessions, &dir, || true).unwrap().unwrap();
    let snap = Snapshot::open(&path).unwrap();
    // The map outlives the file's name, as it does when purge removes an old snapshot.
    std::fs::remove_dir_all(&dir).unwrap();
    DataTree::from_snapshot(snap).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A snapshot read back in place is the same tree and behaves the same afterwards,
    /// through several generations of snapshot, restart and more changes (each one a
    /// base under an overlay, then a snapshot of that layered tree).
    #[test]
    fn snapshots_round_trip(
        generations in prop::collection::vec(prop::collection::vec((0..4u8, 0..6u8, 0..4u8), 0..60), 1..4),
    ) {
        let mut plain = DataTree::new();
        let mut layered = DataTree::new();
        let sessions = [SnapSession { id: 0x42, timeout_ms: 4000, passwd: [7; 16] }];
        for ops in &generations {
            for o in ops {
                random_step(&mut plain, *o);
                random_step(&mut layered, *o);
                assert_same_tree(&plain, &layered);
            }
            let (loaded, s) = through_snapshot(&layered, &sessions);
            prop_assert_eq!(&s[..], &sessions[..]);
            assert_same_tree(&plain, &loaded);
            layered = loaded;
        }
    }
}

/// A base node deleted, re-created, and deleted again stays gone; a child of a base
/// node re-created after its deletion is listed once.
#[test]
fn base_nodes_deleted_and_recreated() {
    let mut t = DataTree::new();
    for p in ["/a", "/a/x", "/a/y", "/b"] {
        run(&mut t, &create(p, 0)).unwrap();
    }
    let (mut t, _) = through_snapshot(&t, &[]);
    let del = |p: &str| WriteOp::Delete {
        path: p.into(),
        version: -1,
    };
    run(&mut t, &del("/a/x")).unwrap();
    assert!(t.node("/a/x").is_none());
    assert_eq!(t.node("/a").unwrap().children().collect::<Vec<_>>(), ["y"]);
    run(&mut t, &create("/a/x", 0)).unwrap();
    assert_eq!(
        t.node("/a").unwrap().children().collect::<Vec<_>>(),
        ["x", "y"]
    );
    run(&mut t, &del("/a/x")).unwrap();
    run(&mut t, &del("/a/y")).unwrap();
    run(&mut t, &del("/a")).unwrap();
    assert!(t.node("/a").is_none() && t.node("/a/y").is_none());
    assert_eq!(run(&mut t, &create("/a/y", 0)), Err(ErrorCode::NoNode));
    run(&mut t, &create("/a", 0)).unwrap();
    assert!(
        t.node("/a/y").is_none(),
        "the old base child must not reappear"
    );
    assert_eq!(t.node("/a").unwrap().child_count(), 0);
    walk(&t);
}

fn create_with(path: &str, data: &[u8]) -> WriteOp {
    WriteOp::Create(CreateRequest {
        kind: CreateKind::Create2,
        path: path.into(),
        data: Some(Bytes::copy_from_slice(data)),
        acl: acl::open_acl_unsafe(),
        flags: 0,
        ttl_ms: -1,
    })
}

fn data_of(t: &DataTree, path: &str) -> String {
    String::from_utf8(t.node(path).unwrap().data().unwrap_or_default().to_vec()).unwrap()
}

/// What zkCli's setquota does: the quota node, the stats node, the limits node.
fn set_quota(t: &mut DataTree, path: &str, limits: &str) {
    run(t, &create_with(&format!("/zookeeper/quota{path}"), b"")).unwrap();
    run(
        t,
        &create_with(
            &format!("/zookeeper/quota{path}/zookeeper_stats"),
            b"count=0,bytes=0",
        ),
    )
    .unwrap();
    run(
        t,
        &create_with(
            &format!("/zookeeper/quota{path}/zookeeper_limits"),
            limits.as_bytes(),
        ),
    )
    .unwrap();
}

#[test]
fn quota_usage_is_counted_from_the_subtree_and_kept_up_to_date() {
    let mut t = DataTree::new();
    run(&mut t, &create_with("/app", b"abcd")).unwrap();
    run(&mut t, &create_with("/app/a", b"12")).unwrap();
    run(&mut t, &create_with("/other", b"zzzzzz")).unwrap();
    set_quota(&mut t, "/app", "count=10,bytes=100");
    let stats = "/zookeeper/quota/app/zookeeper_stats";
    // The server writes the usage into the stats node, whatever the client sent.
    assert_eq!(data_of(&t, stats), "count=2,bytes=6");
    let version = t.node(stats).unwrap().stat().version;
    run(&mut t, &create_with("/app/a/b", b"xyz")).unwrap();
    assert_eq!(data_of(&t, stats), "count=3,bytes=9");
    run(
        &mut t,
        &WriteOp::SetData {
            path: "/app/a".into(),
            data: Some(Bytes::from_static(b"1")),
            version: -1,
        },
    )
    .unwrap();
    assert_eq!(data_of(&t, stats), "count=3,bytes=8");
    run(
        &mut t,
        &WriteOp::Delete {
            path: "/app/a/b".into(),
            version: -1,
        },
    )
    .unwrap();
    assert_eq!(data_of(&t, stats), "count=2,bytes=5");
    // Outside the subtree: nothing counted. The stats node keeps its version.
    run(&mut t, &create_with("/other/x", b"q")).unwrap();
    assert_eq!(data_of(&t, stats), "count=2,bytes=5");
    assert_eq!(t.node(stats).unwrap().stat().version, version);
}

#[test]
fn hard_quotas_fail_writes_with_quota_exceeded() {
    let mut t = DataTree::new();
    run(&mut t, &create_with("/app", b"")).unwrap();
    set_quota(
        &mut t,
        "/app",
        "count=-1,bytes=-1,countHardLimit=3,byteHardLimit=10",
    );
    run(&mut t, &create_with("/app/a", b"12345")).unwrap();
    run(&mut t, &create_with("/app/b", b"")).unwrap();
    // A fourth node, deeper down too.
    assert_eq!(
        run(&mut t, &create_with("/app/c", b"")),
        Err(ErrorCode::QuotaExceeded)
    );
    assert_eq!(
        run(&mut t, &create_with("/app/a/d", b"")),
        Err(ErrorCode::QuotaExceeded)
    );
    // Bytes: 5 used, 6 more is 11.
    let grow = |d: &'static [u8]| WriteOp::SetData {
        path: "/app/b".into(),
        data: Some(Bytes::from_static(d)),
        version: -1,
    };
    assert_eq!(run(&mut t, &grow(b"123456")), Err(ErrorCode::QuotaExceeded));
    run(&mut t, &grow(b"12345")).unwrap();
    // Shrinking is always allowed; a delete makes room.
    run(&mut t, &grow(b"")).unwrap();
    run(
        &mut t,
        &WriteOp::Delete {
            path: "/app/a".into(),
            version: -1,
        },
    )
    .unwrap();
    run(&mut t, &create_with("/app/c", b"")).unwrap();
    // A multi that would pass the limit fails whole.
    let mut triggers = Vec::new();
    let multi = t.prepare_apply_multi(
        &[
            WriteOp::Delete {
                path: "/app/c".into(),
                version: -1,
            },
            create_with("/app/e", b""),
            create_with("/app/f", b""),
        ],
        &who(&[]),
        t.last_zxid() + 1,
        1000,
        &mut triggers,
    );
    assert_eq!(
        multi.err(),
        Some(vec![0, 0, ErrorCode::QuotaExceeded.code()])
    );
    assert!(t.node("/app/e").is_none() && t.node("/app/c").is_some());
    // Without enforceQuota, only the soft limits' warnings: the write goes through.
    let lenient = Requester {
        session_id: 1,
        auth: &[],
        extended_types: false,
        enforce_quota: false,
    };
    let txn = t.prepare(&create_with("/app/g", b""), &lenient).unwrap();
    t.apply(&txn, t.last_zxid() + 1, 1000, &mut Vec::new());
    assert_eq!(
        data_of(&t, "/zookeeper/quota/app/zookeeper_stats"),
        "count=4,bytes=0"
    );
}

#[test]
fn the_quota_flag_follows_the_quota_directory_through_creates_deletes_and_snapshots() {
    // Release builds skip the debug assertion that checks the flag on every quota
    // lookup: this checks it where it changes.
    let mut t = DataTree::new();
    assert!(!t.quotas);
    run(&mut t, &create("/app", 0)).unwrap();
    set_quota(&mut t, "/app", "count=10,bytes=100");
    assert!(t.quotas);
    let (back, _) = through_snapshot(&t, &[]);
    assert!(
        back.quotas,
        "a snapshot with a quota set says so when read back"
    );
    for p in [
        "/zookeeper/quota/app/zookeeper_stats",
        "/zookeeper/quota/app/zookeeper_limits",
    ] {
        run(
            &mut t,
            &WriteOp::Delete {
                path: p.into(),
                version: -1,
            },
        )
        .unwrap();
        assert!(t.quotas, "{p}: the quota directory still has a child");
    }
    run(
        &mut t,
        &WriteOp::Delete {
            path: "/zookeeper/quota/app".into(),
            version: -1,
        },
    )
    .unwrap();
    assert!(!t.quotas);
    assert_eq!(t.quotas, t.quota_dir_has_children());
    let (back, _) = through_snapshot(&t, &[]);
    assert!(!back.quotas);
}

/// A logged create replayed on a tree it does not fit is refused with the reason,
/// whether the node it collides with is in the overlay or in the mapped base.
#[test]
fn replayed_creates_that_do_not_fit_are_refused() {
    let create = |path: &str, owner: i64| Txn::Create {
        path: path.into(),
        data: Some(Bytes::from_static(b"x")),
        acl: vec![Acl {
            perms: perms::ALL,
            id: Id::new("world", "anyone"),
        }],
        ephemeral_owner: owner,
        parent_cversion: -1,
    };
    let logged = |t: &Txn| {
        let mut out = Vec::new();
        t.encode_logged(1, Origin::default(), &mut out);
        out
    };
    let mut t = DataTree::new();
    let mut trig = Vec::new();
    for (i, p) in ["/a", "/a/b", "/e"].iter().enumerate() {
        let owner = if *p == "/e" { 7 } else { 0 };
        t.apply_logged(i as i64 + 1, &logged(&create(p, owner)), &mut trig)
            .unwrap();
    }
    let (based, _) = through_snapshot(&t, &[]);
    for tree in [t, based] {
        for (path, owner, why) in [
            ("/a/b", 0, "/a/b created again"),
            ("/a", 0, "/a created again"),
            ("/x/y", 0, "/x is missing"),
            ("/e/c", 0, "/e/c created under an ephemeral node"),
            ("/", 0, "/ created again"),
            ("/a//c", 0, "path \"/a//c\""),
        ] {
            let mut tree = tree.clone();
            let e = tree
                .apply_logged(10, &logged(&create(path, owner)), &mut trig)
                .unwrap_err();
            assert!(e.contains(why), "{path}: {e}");
        }
        let mut tree = tree.clone();
        tree.apply_logged(10, &logged(&create("/a/c", 0)), &mut trig)
            .unwrap();
        assert!(tree.node("/a/c").is_some());
    }
}
