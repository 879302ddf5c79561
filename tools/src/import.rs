//! `ringkeeper-import`: an Apache ZooKeeper data directory (`version-2/` with its
//! snapshots and txn logs, as 3.4 to 3.9 write them) read as ZooKeeper itself loads
//! it, and written as a ringkeeper data directory with the same tree, Stats, ACLs,
//! sessions and zxids.
//!
//! As ZooKeeper's `FileTxnSnapLog.restore`: the newest snapshot, then every logged txn
//! after its zxid (the tail a server killed with -9 leaves), applied with ZooKeeper's
//! own DataTree semantics ([`ZkData`]). Those semantics matter: ZooKeeper's snapshots
//! are fuzzy (written while txns go on), so a txn replayed over one may find its work
//! done already, and ZooKeeper then ignores NODEEXISTS and NONODE and adjusts parent
//! cversions as it does. The result is written as one ringkeeper snapshot at the last
//! zxid, with ZooKeeper's epochs; nothing is written until every input has been read
//! and checked, and a damaged input is refused with its file and offset.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ringkeeper::config::Config;
use ringkeeper::proto::codes::{CONTAINER_EPHEMERAL_OWNER, EXTENDED_OWNER_MASK, TTL_MAX_MS};
use ringkeeper::proto::Acl;
use ringkeeper::zkformat::files::{self, Compression, LogEnd};
use ringkeeper::zkformat::snapshot::{StatPersisted, ZkNode, ZkTree};
use ringkeeper::zkformat::txn::{txn_type, TxnHeader, TxnRecord};

/// A node as ZooKeeper's DataTree holds it.
#[derive(Debug, Clone)]
struct Node {
    data: Option<Vec<u8>>,
    acl: Option<Vec<Acl>>,
    stat: StatPersisted,
    children: BTreeSet<String>,
}

/// ZooKeeper's DataTree and session table, for replaying its txns exactly as it does.
/// Paths as ZooKeeper keys them: the root is "".
#[derive(Debug, Default)]
pub struct ZkData {
    nodes: HashMap<String, Node>,
    sessions: BTreeMap<i64, i32>,
    ephemerals: HashMap<i64, BTreeSet<String>>,
}

fn split(path: &str) -> (&str, &str) {
    let i = path.rfind('/').unwrap_or(0);
    (&path[..i], &path[i + 1..])
}

/// Why a txn did nothing (ZooKeeper records the error and goes on).
#[derive(Debug, PartialEq, Eq)]
enum Skip {
    NoNode,
    NodeExists,
}

impl ZkData {
    /// ZooKeeper's tree as a snapshot holds it.
    pub fn from_tree(t: &ZkTree) -> Result<ZkData, String> {
        let acls: HashMap<i64, &Option<Vec<Acl>>> = t.acls.iter().map(|(k, a)| (*k, a)).collect();
        let open = Some(ringkeeper::tree::acl::open_acl_unsafe());
        let mut d = ZkData::default();
        for n in &t.nodes {
            let acl = if n.acl_ref == -1 {
                open.clone()
            } else {
                (*acls.get(&n.acl_ref).ok_or_else(|| {
                    format!(
                        "node {:?} names ACL {} that the snapshot lacks",
                        n.path, n.acl_ref
                    )
                })?)
                .clone()
            };
            if !n.path.is_empty() {
                let (parent, child) = split(&n.path);
                let p = d
                    .nodes
                    .get_mut(parent)
                    .ok_or_else(|| format!("node {:?} comes before its parent", n.path))?;
                p.children.insert(child.to_string());
            }
            d.track(&n.path, n.stat.ephemeral_owner);
            d.nodes.insert(
                n.path.clone(),
                Node {
                    data: n.data.clone(),
                    acl,
                    stat: n.stat,
                    children: BTreeSet::new(),
                },
            );
        }
        d.sessions = t.sessions.iter().copied().collect();
        Ok(d)
    }

    fn track(&mut self, path: &str, owner: i64) {
        let special = owner == CONTAINER_EPHEMERAL_OWNER
            || (owner != 0 && owner & EXTENDED_OWNER_MASK == EXTENDED_OWNER_MASK);
        if owner != 0 && !special {
            self.ephemerals
                .entry(owner)
                .or_default()
                .insert(path.to_string());
        }
    }

    /// DataTree.createNode.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        path: &str,
        data: &Option<Vec<u8>>,
        acl: &Option<Vec<Acl>>,
        owner: i64,
        mut parent_cversion: i32,
        zxid: i64,
        time: i64,
    ) -> Result<(), Skip> {
        let (parent, child) = split(path);
        let p = self.nodes.get_mut(parent).ok_or(Skip::NoNode)?;
        if p.children.contains(child) {
            return Err(Skip::NodeExists);
        }
        if parent_cversion == -1 {
            parent_cversion = p.stat.cversion + 1;
        }
        if parent_cversion > p.stat.cversion {
            p.stat.cversion = parent_cversion;
            p.stat.pzxid = zxid;
        }
        p.children.insert(child.to_string());
        let stat = StatPersisted {
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            pzxid: zxid,
        };
        self.nodes.insert(
            path.to_string(),
            Node {
                data: data.clone(),
                acl: acl.clone(),
                stat,
                children: BTreeSet::new(),
            },
        );
        self.track(path, owner);
        Ok(())
    }

    /// DataTree.deleteNode: the parent's pzxid moves on even when the child is gone.
    fn delete(&mut self, path: &str, zxid: i64) -> Result<(), Skip> {
        let (parent, child) = split(path);
        let p = self.nodes.get_mut(parent).ok_or(Skip::NoNode)?;
        p.children.remove(child);
        if zxid > p.stat.pzxid {
            p.stat.pzxid = zxid;
        }
        let node = self.nodes.remove(path).ok_or(Skip::NoNode)?;
        if let Some(set) = self.ephemerals.get_mut(&node.stat.ephemeral_owner) {
            set.remove(path);
        }
        Ok(())
    }

    /// DataTree.setCversionPzxid (a create replayed over a fuzzy snapshot).
    fn set_cversion_pzxid(&mut self, path: &str, mut cversion: i32, zxid: i64) {
        if let Some(n) = self.nodes.get_mut(path) {
            if cversion == -1 {
                cversion = n.stat.cversion + 1;
            }
            if cversion > n.stat.cversion {
                n.stat.cversion = cversion;
                n.stat.pzxid = zxid;
            }
        }
    }

    /// DataTree.processTxn (and the session table's part of ZooKeeperServer's).
    pub fn apply(&mut self, h: &TxnHeader, record: &TxnRecord) {
        self.apply_as(h, h.txn_type, record);
    }

    fn apply_as(&mut self, h: &TxnHeader, t: i32, record: &TxnRecord) {
        let (zxid, time) = (h.zxid, h.time);
        match record {
            TxnRecord::Create {
                path,
                data,
                acl,
                ephemeral,
                parent_cversion,
            } => {
                let owner = if *ephemeral { h.client_id } else { 0 };
                let pcv = parent_cversion.unwrap_or(-1);
                let r = self.create(path, data, acl, owner, pcv, zxid, time);
                // FileTxnSnapLog.processTransaction: a create (not create2) that finds
                // its node still adjusts the parent.
                if r == Err(Skip::NodeExists) && t == txn_type::CREATE {
                    self.set_cversion_pzxid(split(path).0, pcv, zxid);
                }
            }
            TxnRecord::CreateContainer {
                path,
                data,
                acl,
                parent_cversion,
            } => {
                let _ = self.create(
                    path,
                    data,
                    acl,
                    CONTAINER_EPHEMERAL_OWNER,
                    *parent_cversion,
                    zxid,
                    time,
                );
            }
            TxnRecord::CreateTtl {
                path,
                data,
                acl,
                parent_cversion,
                ttl,
            } => {
                let owner = EXTENDED_OWNER_MASK | (ttl & TTL_MAX_MS);
                let _ = self.create(path, data, acl, owner, *parent_cversion, zxid, time);
            }
            TxnRecord::Delete { path } => {
                let _ = self.delete(path, zxid);
            }
            TxnRecord::SetData {
                path,
                data,
                version,
            } => {
                if let Some(n) = self.nodes.get_mut(path) {
                    n.data = data.clone();
                    n.stat.mtime = time;
                    n.stat.mzxid = zxid;
                    n.stat.version = *version;
                }
            }
            TxnRecord::SetAcl { path, acl, version } => {
                if let Some(n) = self.nodes.get_mut(path) {
                    n.acl = acl.clone();
                    n.stat.aversion = *version;
                }
            }
            TxnRecord::CreateSession { timeout_ms } => {
                self.sessions.insert(h.client_id, *timeout_ms);
            }
            TxnRecord::CloseSession { paths_to_delete } => {
                let local = self.ephemerals.remove(&h.client_id).unwrap_or_default();
                let paths: Vec<String> = match paths_to_delete {
                    Some(p) => p.clone(),
                    None => local.into_iter().collect(),
                };
                for p in paths {
                    let _ = self.delete(&p, zxid);
                }
                self.sessions.remove(&h.client_id);
            }
            TxnRecord::CheckVersion { .. } | TxnRecord::Error { .. } => {}
            TxnRecord::Multi(entries) => {
                // A multi holding an error applied nothing (each part became an error).
                if entries.iter().any(|e| e.txn_type == txn_type::ERROR) {
                    return;
                }
                for e in entries {
                    self.apply_as(h, e.txn_type, &e.record);
                }
            }
        }
    }

    /// The tree as ZooKeeper serializes it, parents first, each distinct ACL list once.
    pub fn to_tree(&self) -> ZkTree {
        let open = Some(ringkeeper::tree::acl::open_acl_unsafe());
        let mut acls: Vec<(i64, Option<Vec<Acl>>)> = Vec::new();
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![String::new()];
        while let Some(path) = stack.pop() {
            let n = &self.nodes[&path];
            let acl_ref = if n.acl == open {
                -1
            } else if let Some((k, _)) = acls.iter().find(|(_, a)| *a == n.acl) {
                *k
            } else {
                let k = acls.len() as i64 + 1;
                acls.push((k, n.acl.clone()));
                k
            };
            for c in n.children.iter().rev() {
                stack.push(format!("{path}/{c}"));
            }
            nodes.push(ZkNode {
                path,
                data: n.data.clone(),
                acl_ref,
                stat: n.stat,
            });
        }
        ZkTree {
            sessions: self.sessions.iter().map(|(k, v)| (*k, *v)).collect(),
            acls,
            nodes,
        }
    }
}

/// What was imported.
#[derive(Debug)]
pub struct Imported {
    pub snapshot: Option<PathBuf>,
    pub snapshot_zxid: i64,
    pub txns: usize,
    pub zxid: i64,
    pub nodes: usize,
    pub sessions: usize,
}

/// `dir`'s files named `prefix.<hex zxid>[.suffix]`, by zxid.
fn zxid_files(dir: &Path, prefix: &str) -> Result<Vec<(i64, PathBuf)>, String> {
    let mut v = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let hex = rest.split('.').next().unwrap_or("");
        if let Ok(z) = i64::from_str_radix(hex, 16) {
            v.push((z, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

fn version2(dir: &Path) -> PathBuf {
    let v = dir.join("version-2");
    if v.is_dir() {
        v
    } else {
        dir.to_path_buf()
    }
}

fn at(path: &Path, e: files::FileError) -> String {
    format!("{} at offset {}: {}", path.display(), e.offset, e.reason)
}

/// Reads `zk_data` (ZooKeeper's dataDir; its txn logs in `zk_data_log`, if given) as
/// ZooKeeper would load it, and writes it to `rk_data` (a ringkeeper dataDir with no
/// data yet).
pub fn import(
    zk_data: &Path,
    zk_data_log: Option<&Path>,
    rk_data: &Path,
) -> Result<Imported, String> {
    let snap_dir = version2(zk_data);
    let log_dir = version2(zk_data_log.unwrap_or(zk_data));
    let snapshots = zxid_files(&snap_dir, "snapshot.")?;
    let logs = zxid_files(&log_dir, "log.")?;
    if snapshots.is_empty() && logs.is_empty() {
        return Err(format!(
            "{} holds no ZooKeeper snapshot or txn log",
            snap_dir.display()
        ));
    }
    // The newest snapshot, which must check out: an importer that fell back to an
    // older one without being asked would hide damage.
    let (snapshot_zxid, mut data, snapshot) = match snapshots.last() {
        Some((z, path)) => {
            let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let stream =
                files::decompress(&raw, Compression::of_name(name)).map_err(|e| at(path, e))?;
            let f = files::read_snapshot(&stream).map_err(|e| at(path, e))?;
            let data =
                ZkData::from_tree(&f.tree).map_err(|e| format!("{}: {e}", path.display()))?;
            (*z, data, Some(path.clone()))
        }
        None => {
            // No snapshot: ZooKeeper starts from its empty tree and replays every log
            // from the first txn.
            let empty = ZkTree {
                sessions: vec![],
                acls: vec![],
                nodes: ringkeeper::zkformat::convert::to_zookeeper_tree(
                    &ringkeeper::tree::DataTree::new(),
                    &[],
                )
                .nodes,
            };
            (0, ZkData::from_tree(&empty)?, None)
        }
    };
    // FileTxnLog.getLogFiles: the newest log starting at or before the snapshot's
    // zxid, and every later one.
    let first = logs
        .iter()
        .rposition(|(z, _)| *z <= snapshot_zxid)
        .unwrap_or(0);
    let mut last = snapshot_zxid;
    let mut txns = 0;
    let n_logs = logs.len();
    for (i, (_, path)) in logs.iter().enumerate().skip(first) {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (_, entries, end) = files::read_log(&bytes).map_err(|e| at(path, e))?;
        if let LogEnd::Torn { offset } = end {
            if i + 1 != n_logs {
                return Err(format!(
                    "{} at offset {offset}: an entry cut short in a log that is not the newest",
                    path.display()
                ));
            }
        }
        for e in entries {
            let h = e.txn.header;
            if h.zxid <= last {
                continue;
            }
            if !ringkeeper_storage::recover::follows(last, h.zxid) {
                return Err(format!(
                    "{} at offset {}: txn {:#x} does not follow {last:#x} (a log is missing)",
                    path.display(),
                    e.offset,
                    h.zxid
                ));
            }
            if let Some(r) = &e.txn.record {
                data.apply(&h, r);
            }
            last = h.zxid;
            txns += 1;
        }
    }
    if snapshot.is_none() && last == 0 {
        return Err(format!(
            "{} holds no txn and no snapshot",
            log_dir.display()
        ));
    }
    let epoch = |name: &str| -> Result<Option<i64>, String> {
        match std::fs::read_to_string(snap_dir.join(name)) {
            Ok(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{}: not a number", snap_dir.join(name).display())),
            Err(_) => Ok(None),
        }
    };
    let current = epoch("currentEpoch")?.unwrap_or(last >> 32);
    let accepted = epoch("acceptedEpoch")?.unwrap_or(current);
    // Everything is read and checked: now the output.
    let mut cfg = Config::default();
    cfg.data_dir = rk_data.to_path_buf();
    let out = cfg.snapshot_dir();
    if out.is_dir()
        && std::fs::read_dir(&out)
            .map_err(|e| format!("{}: {e}", out.display()))?
            .flatten()
            .any(|e| e.file_name() != "LOCK")
    {
        return Err(format!(
            "{} already holds ringkeeper data: import writes only into a new data directory",
            out.display()
        ));
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _lock = ringkeeper_storage::dirlock::DirLock::acquire(&out).map_err(|e| e.to_string())?;
    let tree = data.to_tree();
    ringkeeper::zkformat::convert::snapshot_from_zookeeper_tree(&tree, last, &out)
        .map_err(|e| format!("writing {}: {e}", out.display()))?;
    let none = ringkeeper_storage::epochs::Epochs {
        accepted: -1,
        current: -1,
    };
    ringkeeper_storage::epochs::store(
        &out,
        none,
        ringkeeper_storage::epochs::Epochs { accepted, current },
    )
    .map_err(|e| e.to_string())?;
    Ok(Imported {
        snapshot,
        snapshot_zxid,
        txns,
        zxid: last,
        nodes: tree.nodes.len(),
        sessions: tree.sessions.len(),
    })
}
