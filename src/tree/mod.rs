//! The data tree: ZooKeeper's data model as an immutable, structurally shared value.
//!
//! A `DataTree` clones in O(1) (persistent maps), so the broadcast core mutates a
//! working copy and publishes a clone per commit, and every shard reads the version it
//! was handed without locks. Writes go through two steps, as in ZooKeeper: `prepare`
//! checks a request against the current state (existence, versions, ACLs, path rules)
//! and turns it into a [`Txn`]; `apply` executes a txn deterministically. Replaying the
//! same txns on the same tree always yields the same tree.

pub mod acl;
pub mod path;
pub mod snapshot;
pub mod txn;

use std::sync::Arc;

use bytes::Bytes;
use imbl::{HashMap, OrdMap, OrdSet};

use crate::proto::codes::{
    perms, CreateMode, CONTAINER_EPHEMERAL_OWNER, EXTENDED_OWNER_MASK, TTL_MAX_MS,
};
use crate::proto::{Acl, CreateKind, CreateRequest, ErrorCode, EventType, Id, Stat, WriteOp};
pub use txn::{Applied, Trigger, Txn};

/// A node's child names, sorted. Most znodes are leaves, and an empty `OrdSet` still
/// allocates a B-tree root (about 1.6 KiB), so a leaf holds no set at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Children(Option<OrdSet<Arc<str>>>);

impl Children {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().flat_map(|s| s.iter())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(name))
    }

    /// Adds a name; false if it was there already.
    pub fn insert(&mut self, name: Arc<str>) -> bool {
        self.0
            .get_or_insert_with(OrdSet::new)
            .insert(name)
            .is_none()
    }

    pub fn remove(&mut self, name: &str) {
        if let Some(s) = &mut self.0 {
            s.remove(name);
            if s.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl FromIterator<Arc<str>> for Children {
    fn from_iter<I: IntoIterator<Item = Arc<str>>>(iter: I) -> Self {
        let s: OrdSet<Arc<str>> = iter.into_iter().collect();
        Children((!s.is_empty()).then_some(s))
    }
}

/// One znode. `stat.num_children` and `stat.data_length` are derived on read, and
/// `stat.cversion` is stored as ZooKeeper stores it: the number of children ever
/// created. That counter names sequential children; the cversion clients see counts
/// every child change, creates and deletes: `2 * creates - children`.
#[derive(Debug, Clone)]
pub struct Node {
    /// None: created or set with null data, which reads back as null.
    pub data: Option<Bytes>,
    pub acl: Arc<Vec<Acl>>,
    pub stat: Stat,
    pub children: Children,
}

impl Node {
    pub fn stat(&self) -> Stat {
        let children = self.children.len() as i32;
        Stat {
            data_length: self.data.as_ref().map_or(0, |d| d.len() as i32),
            num_children: children,
            cversion: self.stat.cversion.wrapping_mul(2).wrapping_sub(children),
            ..self.stat
        }
    }
}

/// What the server knows about a requester when it prepares a write.
#[derive(Debug, Clone)]
pub struct Requester<'a> {
    pub session_id: i64,
    pub auth: &'a [Id],
    /// Whether TTL nodes are enabled (extendedTypesEnabled).
    pub extended_types: bool,
}

/// The kind of a node by its ephemeralOwner (EphemeralType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Persistent,
    Ephemeral,
    Container,
    Ttl(i64),
}

pub fn node_kind(ephemeral_owner: i64) -> NodeKind {
    if ephemeral_owner == 0 {
        NodeKind::Persistent
    } else if ephemeral_owner == CONTAINER_EPHEMERAL_OWNER {
        NodeKind::Container
    } else if ephemeral_owner & EXTENDED_OWNER_MASK == EXTENDED_OWNER_MASK {
        NodeKind::Ttl(ephemeral_owner & TTL_MAX_MS)
    } else {
        NodeKind::Ephemeral
    }
}

pub const ZOOKEEPER_PATH: &str = "/zookeeper";
pub const QUOTA_PATH: &str = "/zookeeper/quota";
pub const CONFIG_PATH: &str = "/zookeeper/config";

#[derive(Debug, Clone)]
pub struct DataTree {
    /// By path, in path order (snapshots come out sorted, which makes loading fast,
    /// and a B-tree costs far less memory per node than a HAMT's sparse chunks).
    nodes: OrdMap<Arc<str>, Arc<Node>>,
    ephemerals: HashMap<i64, OrdSet<Arc<str>>>,
    containers: OrdSet<Arc<str>>,
    ttls: OrdSet<Arc<str>>,
    last_zxid: i64,
}

impl Default for DataTree {
    fn default() -> Self {
        Self::new()
    }
}

impl DataTree {
    /// A fresh tree: "/", "/zookeeper", "/zookeeper/quota" and "/zookeeper/config",
    /// all with zeroed stats, as ZooKeeper's DataTree starts.
    pub fn new() -> DataTree {
        let mut t = DataTree {
            nodes: OrdMap::new(),
            ephemerals: HashMap::new(),
            containers: OrdSet::new(),
            ttls: OrdSet::new(),
            last_zxid: 0,
        };
        let open = Arc::new(acl::open_acl_unsafe());
        let mk = |acl: &Arc<Vec<Acl>>, children: &[&str]| {
            Arc::new(Node {
                data: Some(Bytes::new()),
                acl: acl.clone(),
                stat: Stat::default(),
                children: children.iter().map(|c| Arc::from(*c)).collect(),
            })
        };
        // These children are added without create txns, so their parents report a
        // negative cversion (0 creates * 2 - children), exactly as ZooKeeper does.
        t.nodes.insert(Arc::from("/"), mk(&open, &["zookeeper"]));
        t.nodes
            .insert(Arc::from(ZOOKEEPER_PATH), mk(&open, &["quota", "config"]));
        t.nodes.insert(Arc::from(QUOTA_PATH), mk(&open, &[]));
        // ZooKeeper sets this node's ACL with version -1, which leaves aversion at -1.
        let mut config = mk(&Arc::new(acl::read_acl_unsafe()), &[]);
        Arc::make_mut(&mut config).stat.aversion = -1;
        t.nodes.insert(Arc::from(CONFIG_PATH), config);
        t
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    pub fn node(&self, path: &str) -> Option<&Arc<Node>> {
        self.nodes.get(path)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node count ZooKeeper reports (srvr, mntr): its map holds the root under both
    /// "" and "/", so it counts one more than there are znodes.
    pub fn reported_node_count(&self) -> usize {
        self.nodes.len() + 1
    }

    /// Sum of the sizes of every node's path and data (mntr's approximate data size).
    pub fn approximate_data_size(&self) -> u64 {
        self.nodes
            .iter()
            .map(|(p, n)| (p.len() + n.data.as_ref().map_or(0, |d| d.len())) as u64)
            .sum()
    }

    /// Number of descendants of `path`, itself excluded (getAllChildrenNumber).
    pub fn descendant_count(&self, path: &str) -> usize {
        let Some(node) = self.nodes.get(path) else {
            return 0;
        };
        let mut count = 0;
        let mut stack: Vec<String> = node.children.iter().map(|c| path::join(path, c)).collect();
        while let Some(p) = stack.pop() {
            count += 1;
            if let Some(n) = self.nodes.get(p.as_str()) {
                stack.extend(n.children.iter().map(|c| path::join(&p, c)));
            }
        }
        count
    }

    /// The ephemeral nodes of a session, sorted.
    pub fn ephemerals_of(&self, session_id: i64) -> Vec<String> {
        self.ephemerals
            .get(&session_id)
            .map(|s| s.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    /// Every session that owns ephemerals, with their paths (for `dump`).
    pub fn all_ephemerals(&self) -> Vec<(i64, Vec<String>)> {
        let mut v: Vec<(i64, Vec<String>)> = self
            .ephemerals
            .iter()
            .map(|(s, p)| (*s, p.iter().map(|x| x.to_string()).collect()))
            .collect();
        v.sort();
        v
    }

    /// Container and TTL nodes the cleaner should delete at `now_ms`
    /// (ContainerManager.getCandidates).
    pub fn cleanup_candidates(&self, now_ms: i64) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.containers.iter() {
            if let Some(n) = self.nodes.get(p) {
                if n.stat.cversion > 0 && n.children.is_empty() {
                    out.push(p.to_string());
                }
            }
        }
        for p in self.ttls.iter() {
            if let Some(n) = self.nodes.get(p) {
                if let NodeKind::Ttl(ttl) = node_kind(n.stat.ephemeral_owner) {
                    if n.children.is_empty() && ttl != 0 && now_ms - n.stat.mtime > ttl {
                        out.push(p.to_string());
                    }
                }
            }
        }
        out
    }

    fn get_or(&self, path: &str, err: ErrorCode) -> Result<&Arc<Node>, ErrorCode> {
        self.nodes.get(path).ok_or(err)
    }

    fn check(node: &Node, perm: i32, who: &Requester) -> Result<(), ErrorCode> {
        if acl::allows(&node.acl, perm, who.auth) {
            Ok(())
        } else {
            Err(ErrorCode::NoAuth)
        }
    }

    fn check_version(current: i32, expected: i32) -> Result<(), ErrorCode> {
        if expected != -1 && expected != current {
            Err(ErrorCode::BadVersion)
        } else {
            Ok(())
        }
    }

    /// Checks a write against this tree and returns the txn that performs it, with
    /// ZooKeeper's error codes and check order (PrepRequestProcessor).
    pub fn prepare(&self, op: &WriteOp, who: &Requester) -> Result<Txn, ErrorCode> {
        match op {
            WriteOp::Create(c) => self.prepare_create(c, who),
            WriteOp::Delete { path, version } => {
                // ZooKeeper checks only the slash, NUL and special paths on delete.
                if !path.contains('/') || path.contains('\0') || self.is_special(path) {
                    return Err(ErrorCode::BadArguments);
                }
                let parent = self.get_or(path::parent(path), ErrorCode::NoNode)?;
                Self::check(parent, perms::DELETE, who)?;
                let node = self.get_or(path, ErrorCode::NoNode)?;
                Self::check_version(node.stat.version, *version)?;
                if !node.children.is_empty() {
                    return Err(ErrorCode::NotEmpty);
                }
                Ok(Txn::Delete { path: path.clone() })
            }
            WriteOp::SetData {
                path,
                data,
                version,
            } => {
                path::validate(path).map_err(|_| ErrorCode::BadArguments)?;
                let node = self.get_or(path, ErrorCode::NoNode)?;
                Self::check(node, perms::WRITE, who)?;
                Self::check_version(node.stat.version, *version)?;
                Ok(Txn::SetData {
                    path: path.clone(),
                    data: data.clone(),
                    version: node.stat.version.wrapping_add(1),
                })
            }
            WriteOp::Check { path, version } => {
                path::validate(path).map_err(|_| ErrorCode::BadArguments)?;
                let node = self.get_or(path, ErrorCode::NoNode)?;
                Self::check(node, perms::READ, who)?;
                Self::check_version(node.stat.version, *version)?;
                Ok(Txn::Check { path: path.clone() })
            }
        }
    }

    pub fn prepare_set_acl(
        &self,
        path: &str,
        acl_in: &[Acl],
        version: i32,
        who: &Requester,
    ) -> Result<Txn, ErrorCode> {
        path::validate(path).map_err(|_| ErrorCode::BadArguments)?;
        let acl = acl::fixup(acl_in, who.auth)?;
        let node = self.get_or(path, ErrorCode::NoNode)?;
        Self::check(node, perms::ADMIN, who)?;
        Self::check_version(node.stat.aversion, version)?;
        Ok(Txn::SetAcl {
            path: path.to_owned(),
            acl,
            aversion: node.stat.aversion.wrapping_add(1),
        })
    }

    /// Deletion of an empty container or expired TTL node by the cleaner.
    pub fn prepare_delete_container(&self, path: &str) -> Result<Txn, ErrorCode> {
        let node = self.get_or(path, ErrorCode::NoNode)?;
        if !node.children.is_empty() {
            return Err(ErrorCode::NotEmpty);
        }
        match node_kind(node.stat.ephemeral_owner) {
            NodeKind::Container | NodeKind::Ttl(_) => Ok(Txn::Delete {
                path: path.to_owned(),
            }),
            _ => Err(ErrorCode::BadArguments),
        }
    }

    fn is_special(&self, path: &str) -> bool {
        matches!(path, "/" | ZOOKEEPER_PATH | QUOTA_PATH | CONFIG_PATH)
    }

    fn prepare_create(&self, c: &CreateRequest, who: &Requester) -> Result<Txn, ErrorCode> {
        let mode = CreateMode::from_flags(c.flags).ok_or(ErrorCode::BadArguments)?;
        if mode.ttl && !who.extended_types {
            return Err(ErrorCode::Unimplemented);
        }
        // EphemeralType.validateTTL
        if mode.ttl {
            if c.kind != CreateKind::Ttl || c.ttl_ms <= 0 || c.ttl_ms > TTL_MAX_MS {
                return Err(ErrorCode::BadArguments);
            }
        } else if c.kind == CreateKind::Ttl {
            return Err(ErrorCode::BadArguments);
        }
        if mode.container != (c.kind == CreateKind::Container) {
            return Err(ErrorCode::BadArguments);
        }
        let last_slash = c.path.rfind('/');
        if last_slash.is_none() || c.path.contains('\0') {
            return Err(ErrorCode::BadArguments);
        }
        let acl = acl::fixup(&c.acl, who.auth)?;
        let parent_path = match last_slash {
            // Creating "/" itself: its parent is "", which never exists.
            Some(0) if c.path.len() == 1 => "",
            Some(0) => "/",
            Some(i) => &c.path[..i],
            None => unreachable!("checked above"),
        };
        let parent = self.get_or(parent_path, ErrorCode::NoNode)?;
        Self::check(parent, perms::CREATE, who)?;
        let mut path = c.path.clone();
        if mode.sequential {
            path.push_str(&format!("{:010}", parent.stat.cversion));
        }
        path::validate(&path).map_err(|_| ErrorCode::BadArguments)?;
        if self.nodes.contains_key(path.as_str()) {
            return Err(ErrorCode::NodeExists);
        }
        if node_kind(parent.stat.ephemeral_owner) == NodeKind::Ephemeral {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        let ephemeral_owner = if mode.container {
            CONTAINER_EPHEMERAL_OWNER
        } else if mode.ttl {
            EXTENDED_OWNER_MASK | c.ttl_ms
        } else if mode.ephemeral {
            who.session_id
        } else {
            0
        };
        Ok(Txn::Create {
            path,
            data: c.data.clone(),
            acl,
            ephemeral_owner,
            parent_cversion: parent.stat.cversion.wrapping_add(1),
        })
    }

    /// Prepares and applies a multi atomically: either every op is applied, or none is
    /// and the per-op error codes are returned (OK for ops before the failing one, its
    /// code for it, RUNTIMEINCONSISTENCY after).
    pub fn prepare_apply_multi(
        &mut self,
        ops: &[WriteOp],
        who: &Requester,
        zxid: i64,
        time_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Result<(Txn, Vec<Applied>), Vec<i32>> {
        let mut scratch = self.clone();
        let mut scratch_triggers = Vec::new();
        let mut txns = Vec::with_capacity(ops.len());
        let mut applied = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            match scratch.prepare(op, who) {
                Ok(txn) => {
                    applied.push(scratch.apply(&txn, zxid, time_ms, &mut scratch_triggers));
                    txns.push(txn);
                }
                Err(code) => {
                    let mut codes = vec![0; ops.len()];
                    codes[i] = code.code();
                    for c in codes.iter_mut().skip(i + 1) {
                        *c = ErrorCode::RuntimeInconsistency.code();
                    }
                    return Err(codes);
                }
            }
        }
        // An empty multi applies nothing but still consumes its zxid.
        scratch.last_zxid = zxid;
        *self = scratch;
        triggers.append(&mut scratch_triggers);
        Ok((Txn::Multi(txns), applied))
    }

    /// Applies a txn. Every txn advances `last_zxid`, failed ones included, as in
    /// ZooKeeper where a rejected write still consumes its zxid.
    ///
    /// The caller MUST only apply txns produced by `prepare` on this same state (or
    /// replayed in the order they were first applied): apply asserts their preconditions.
    pub fn apply(
        &mut self,
        txn: &Txn,
        zxid: i64,
        time_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Applied {
        debug_assert!(zxid >= self.last_zxid, "zxids must not go backwards");
        self.last_zxid = zxid;
        match txn {
            Txn::Create {
                path,
                data,
                acl,
                ephemeral_owner,
                parent_cversion,
            } => {
                let parent_path = path::parent(path);
                let name: Arc<str> = Arc::from(path::name(path));
                let key: Arc<str> = Arc::from(path.as_str());
                let parent = self
                    .nodes
                    .get_mut(parent_path)
                    .expect("create txn applied without its parent");
                let p = Arc::make_mut(parent);
                p.children.insert(name);
                p.stat.cversion = *parent_cversion;
                p.stat.pzxid = zxid;
                let parent_acl = p.acl.clone();
                let node_acl = Arc::new(acl.clone());
                let stat = Stat {
                    czxid: zxid,
                    mzxid: zxid,
                    ctime: time_ms,
                    mtime: time_ms,
                    version: 0,
                    cversion: 0,
                    aversion: 0,
                    ephemeral_owner: *ephemeral_owner,
                    data_length: 0,
                    num_children: 0,
                    pzxid: zxid,
                };
                let node = Node {
                    data: data.clone(),
                    acl: node_acl.clone(),
                    stat,
                    children: Children::default(),
                };
                let out_stat = node.stat();
                self.index_kind(&key, *ephemeral_owner);
                self.nodes.insert(key, Arc::new(node));
                triggers.push(Trigger::new(path, EventType::NodeCreated, node_acl));
                triggers.push(Trigger::new(
                    parent_path,
                    EventType::NodeChildrenChanged,
                    parent_acl,
                ));
                Applied::Created {
                    path: path.clone(),
                    stat: out_stat,
                }
            }
            Txn::Delete { path } => {
                self.delete_node(path, zxid, triggers);
                Applied::Done
            }
            Txn::SetData {
                path,
                data,
                version,
            } => {
                let node = self
                    .nodes
                    .get_mut(path.as_str())
                    .expect("setData txn applied to a missing node");
                let n = Arc::make_mut(node);
                n.data = data.clone();
                n.stat.version = *version;
                n.stat.mzxid = zxid;
                n.stat.mtime = time_ms;
                triggers.push(Trigger::new(
                    path,
                    EventType::NodeDataChanged,
                    n.acl.clone(),
                ));
                Applied::Stat(n.stat())
            }
            Txn::SetAcl {
                path,
                acl,
                aversion,
            } => {
                let node = self
                    .nodes
                    .get_mut(path.as_str())
                    .expect("setACL txn applied to a missing node");
                let n = Arc::make_mut(node);
                n.acl = Arc::new(acl.clone());
                n.stat.aversion = *aversion;
                Applied::Stat(n.stat())
            }
            Txn::Check { .. } => Applied::Done,
            Txn::Multi(txns) => {
                let results = txns
                    .iter()
                    .map(|t| self.apply(t, zxid, time_ms, triggers))
                    .collect();
                Applied::Multi(results)
            }
            Txn::CreateSession { .. } | Txn::Error(_) | Txn::MultiError(_) => Applied::Done,
            Txn::CloseSession { session_id } => {
                let paths = self.ephemerals_of(*session_id);
                for p in paths {
                    self.delete_node(&p, zxid, triggers);
                }
                self.ephemerals.remove(session_id);
                Applied::Done
            }
        }
    }

    /// Records a new node in the index its kind needs: its owner's ephemerals, the
    /// containers or the TTL nodes.
    fn index_kind(&mut self, path: &Arc<str>, ephemeral_owner: i64) {
        match node_kind(ephemeral_owner) {
            NodeKind::Ephemeral => {
                self.ephemerals
                    .entry(ephemeral_owner)
                    .or_default()
                    .insert(path.clone());
            }
            NodeKind::Container => {
                self.containers.insert(path.clone());
            }
            NodeKind::Ttl(_) => {
                self.ttls.insert(path.clone());
            }
            NodeKind::Persistent => {}
        }
    }

    fn delete_node(&mut self, path: &str, zxid: i64, triggers: &mut Vec<Trigger>) {
        let node = self
            .nodes
            .remove(path)
            .expect("delete txn applied to a missing node");
        assert!(
            node.children.is_empty(),
            "delete txn for a node with children"
        );
        match node_kind(node.stat.ephemeral_owner) {
            NodeKind::Ephemeral => {
                let owner = node.stat.ephemeral_owner;
                let now_empty = match self.ephemerals.get_mut(&owner) {
                    Some(set) => {
                        set.remove(path);
                        set.is_empty()
                    }
                    None => false,
                };
                if now_empty {
                    self.ephemerals.remove(&owner);
                }
            }
            NodeKind::Container => {
                self.containers.remove(path);
            }
            NodeKind::Ttl(_) => {
                self.ttls.remove(path);
            }
            NodeKind::Persistent => {}
        }
        let parent_path = path::parent(path);
        let mut parent_acl = Arc::new(Vec::new());
        if let Some(parent) = self.nodes.get_mut(parent_path) {
            let p = Arc::make_mut(parent);
            parent_acl = p.acl.clone();
            p.children.remove(path::name(path));
            // The stored cversion counts creates only (see Node); the reported one
            // still moves, because the child count dropped.
            if zxid > p.stat.pzxid {
                p.stat.pzxid = zxid;
            }
        }
        triggers.push(Trigger::new(path, EventType::NodeDeleted, node.acl.clone()));
        triggers.push(Trigger::new(
            parent_path,
            EventType::NodeChildrenChanged,
            parent_acl,
        ));
    }
}

#[cfg(test)]
mod tests;
