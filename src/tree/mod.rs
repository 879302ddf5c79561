//! The data tree: ZooKeeper's data model as an immutable, structurally shared value.
//!
//! A `DataTree` clones in O(1) (persistent maps), so the broadcast core mutates a
//! working copy and publishes a clone per commit, and every shard reads the version it
//! was handed without locks. Writes go through two steps, as in ZooKeeper: `prepare`
//! checks a request against the current state (existence, versions, ACLs, path rules)
//! and turns it into a [`Txn`]; `apply` executes a txn deterministically. Replaying the
//! same txns on the same tree always yields the same tree.

pub mod acl;
pub mod base;
pub mod path;
pub mod pathmap;
pub mod quota;
pub mod snapshot;
pub mod txn;

use std::sync::Arc;

use bytes::Bytes;
use imbl::{HashMap, OrdSet};

use crate::proto::codes::{
    perms, CreateMode, CONTAINER_EPHEMERAL_OWNER, EXTENDED_OWNER_MASK, TTL_MAX_MS,
};
use crate::proto::{Acl, CreateKind, CreateRequest, ErrorCode, EventType, Id, Stat, WriteOp};
use base::BaseTree;
use pathmap::PathMap;
pub use txn::{Applied, Logged, Origin, Trigger, Txn};

/// A path or a child name as the overlay and the child sets hold it. Names of up to 23
/// bytes (most child names, and short paths) are stored inline, so the B-tree
/// searches every write and every replayed txn makes compare bytes held in the B-tree
/// node itself instead of following a pointer per comparison; longer ones are shared
/// on the heap as before.
pub type Name = smol_str::SmolStr;

/// A node's child names, sorted. Most znodes are leaves, and an empty `OrdSet` still
/// allocates a B-tree root (about 1.6 KiB), so a leaf holds no set at all. A node that
/// came from the base snapshot keeps its children there and records only the changes.
#[derive(Debug, Clone, Default)]
pub struct Children {
    base: Option<Box<BaseChildren>>,
    /// Children added since the base (all of them, for a node not from the base).
    own: Option<OrdSet<Name>>,
}

#[derive(Debug, Clone)]
struct BaseChildren {
    /// The node's index in the base tree, and its child count there.
    node: u32,
    count: u32,
    /// Those of the base's children deleted since.
    removed: OrdSet<Name>,
}

impl Children {
    fn of_base(node: u32, count: u32) -> Children {
        Children {
            base: (count > 0).then(|| {
                Box::new(BaseChildren {
                    node,
                    count,
                    removed: OrdSet::new(),
                })
            }),
            own: None,
        }
    }

    pub fn len(&self) -> usize {
        self.own.as_ref().map_or(0, |s| s.len())
            + self
                .base
                .as_ref()
                .map_or(0, |b| b.count as usize - b.removed.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names, sorted. `base` MUST be the tree this node's base children are in.
    pub fn iter<'a>(&'a self, base: Option<&'a BaseTree>) -> impl Iterator<Item = &'a str> {
        let from_base = self.base.as_ref().into_iter().flat_map(move |b| {
            let tree = base.expect("a node from the base is read with its base");
            tree.children(b.node)
                .map(move |i| tree.name(i))
                .filter(move |n| b.removed.is_empty() || !b.removed.contains(*n))
        });
        MergeSorted::new(
            from_base,
            self.own.iter().flat_map(|s| s.iter().map(|n| &**n)),
        )
    }

    fn contains(&self, base: Option<&BaseTree>, name: &str) -> bool {
        self.own.as_ref().is_some_and(|s| s.contains(name))
            || self.base.as_ref().is_some_and(|b| {
                !b.removed.contains(name)
                    && base
                        .expect("a node from the base is read with its base")
                        .has_child(b.node, name)
            })
    }

    /// Adds a name that is not a child.
    fn insert(&mut self, base: Option<&BaseTree>, name: Name) {
        debug_assert!(!self.contains(base, &name));
        if let Some(b) = &mut self.base {
            if b.removed.remove(name.as_str()).is_some() {
                return;
            }
        }
        self.own.get_or_insert_with(OrdSet::new).insert(name);
    }

    /// Removes a name that is a child.
    fn remove(&mut self, name: &str) {
        if let Some(s) = &mut self.own {
            if s.remove(name).is_some() {
                if s.is_empty() {
                    self.own = None;
                }
                return;
            }
        }
        let b = self
            .base
            .as_mut()
            .expect("a removed child is an own or a base child");
        b.removed.insert(Name::new(name));
    }
}

impl FromIterator<Name> for Children {
    fn from_iter<I: IntoIterator<Item = Name>>(iter: I) -> Self {
        let s: OrdSet<Name> = iter.into_iter().collect();
        Children {
            base: None,
            own: (!s.is_empty()).then_some(s),
        }
    }
}

/// Two sorted, disjoint sequences as one sorted sequence.
struct MergeSorted<'a, A: Iterator<Item = &'a str>, B: Iterator<Item = &'a str>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'a, A: Iterator<Item = &'a str>, B: Iterator<Item = &'a str>> MergeSorted<'a, A, B> {
    fn new(a: A, b: B) -> Self {
        MergeSorted {
            a: a.peekable(),
            b: b.peekable(),
        }
    }
}

impl<'a, A: Iterator<Item = &'a str>, B: Iterator<Item = &'a str>> Iterator
    for MergeSorted<'a, A, B>
{
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if x.as_bytes() > y.as_bytes() => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
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

/// The stat clients see, from the stored one (see [`Node`]).
fn reported_stat(stored: Stat, data_length: usize, children: usize) -> Stat {
    let children = children as i32;
    Stat {
        data_length: data_length as i32,
        num_children: children,
        cversion: stored.cversion.wrapping_mul(2).wrapping_sub(children),
        ephemeral_owner: client_ephemeral_owner(stored.ephemeral_owner),
        ..stored
    }
}

/// The ephemeralOwner clients see: the owning session of an ephemeral node, else 0.
/// Containers and TTL nodes keep their kind in the stored field, as ZooKeeper does,
/// and ZooKeeper (3.5.3+) reports 0 for them: clients take `ephemeralOwner != 0` to
/// mean "ephemeral".
fn client_ephemeral_owner(stored: i64) -> i64 {
    match node_kind(stored) {
        NodeKind::Ephemeral => stored,
        NodeKind::Persistent | NodeKind::Container | NodeKind::Ttl(_) => 0,
    }
}

impl Node {
    pub fn stat(&self) -> Stat {
        reported_stat(
            self.stat,
            self.data.as_ref().map_or(0, |d| d.len()),
            self.children.len(),
        )
    }
}

/// A node of a tree version, wherever it lives (the overlay or the base snapshot).
#[derive(Clone, Copy)]
pub struct NodeRef<'a> {
    base: Option<&'a BaseTree>,
    at: At<'a>,
}

#[derive(Clone, Copy)]
enum At<'a> {
    Own(&'a Node),
    Base(u32),
}

impl<'a> NodeRef<'a> {
    fn base(&self) -> &'a BaseTree {
        self.base.expect("a base node is read with its base")
    }

    pub fn data(&self) -> Option<Bytes> {
        match self.at {
            At::Own(n) => n.data.clone(),
            At::Base(i) => self.base().data(i),
        }
    }

    /// The data, borrowed (no reference count touched).
    pub fn data_slice(&self) -> Option<&'a [u8]> {
        match self.at {
            At::Own(n) => n.data.as_deref(),
            At::Base(i) => self.base().data_slice(i),
        }
    }

    pub fn acl(&self) -> &'a Arc<Vec<Acl>> {
        match self.at {
            At::Own(n) => &n.acl,
            At::Base(i) => self.base().acl(i),
        }
    }

    /// The stat as stored (see [`Node`]).
    pub fn stored_stat(&self) -> Stat {
        match self.at {
            At::Own(n) => n.stat,
            At::Base(i) => self.base().stat(i),
        }
    }

    /// The stat clients see.
    pub fn stat(&self) -> Stat {
        match self.at {
            At::Own(n) => n.stat(),
            At::Base(i) => self.base().reported_stat(i),
        }
    }

    pub fn data_len(&self) -> usize {
        match self.at {
            At::Own(n) => n.data.as_ref().map_or(0, |d| d.len()),
            At::Base(i) => self.base().data_len(i),
        }
    }

    pub fn child_count(&self) -> usize {
        match self.at {
            At::Own(n) => n.children.len(),
            At::Base(i) => self.base().children(i).len(),
        }
    }

    pub fn has_children(&self) -> bool {
        self.child_count() > 0
    }

    /// The child names, sorted.
    pub fn children(&self) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        match self.at {
            At::Own(n) => Box::new(n.children.iter(self.base)),
            At::Base(i) => {
                let b = self.base();
                Box::new(b.children(i).map(move |c| b.name(c)))
            }
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
    /// Whether hard quotas fail writes (zookeeper.enforceQuota).
    pub enforce_quota: bool,
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

/// The overlay's view of the nodes it holds, by path: a node, or None for a base node
/// deleted since. A B+tree of small pages (see `pathmap`): it costs far less memory per
/// node than a HAMT's sparse chunks, and a write after a version cut copies a page of
/// at most 16 entries.
type Overlay = PathMap<Option<Arc<Node>>>;

/// A tree version: the base snapshot it was recovered from, if any, read in place,
/// under an overlay of every node created or changed since. A path the overlay does
/// not hold is the base's; every base path deleted since is in the overlay as None.
#[derive(Debug, Clone)]
pub struct DataTree {
    base: Option<Arc<BaseTree>>,
    nodes: Overlay,
    node_count: usize,
    data_size: u64,
    ephemerals: HashMap<i64, OrdSet<Arc<str>>>,
    containers: OrdSet<Arc<str>>,
    ttls: OrdSet<Arc<str>>,
    last_zxid: i64,
    /// Whether /zookeeper/quota has children (some quota is set): without one, a write
    /// skips the quota lookups its path would otherwise cost.
    quotas: bool,
}

/// The overlay's node at `path`, copied up from the base on first change. One search
/// of the overlay when it holds the node (every write's case but the first after a
/// snapshot).
fn node_mut<'a>(
    nodes: &'a mut Overlay,
    base: Option<&BaseTree>,
    path: &str,
) -> Option<&'a mut Node> {
    let held: Option<*mut Option<Arc<Node>>> = nodes.get_mut(path).map(|slot| slot as *mut _);
    let slot = match held {
        // SAFETY: the pointer is the `&'a mut` borrow of `nodes` that get_mut returned,
        // turned into a pointer only because the borrow checker cannot give a borrow
        // back on one branch and reuse `nodes` on the other (NLL's "problem case #3");
        // nothing has touched `nodes` since, and the result borrows `nodes` for 'a.
        Some(p) => unsafe { &mut *p },
        None => {
            let base = base?;
            let node = base.to_node(base.lookup(path)?);
            nodes.insert(Name::new(path), Some(Arc::new(node)));
            nodes.get_mut(path)?
        }
    };
    slot.as_mut().map(Arc::make_mut)
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
            base: None,
            nodes: PathMap::new(),
            node_count: 4,
            data_size: ["/", ZOOKEEPER_PATH, QUOTA_PATH, CONFIG_PATH]
                .iter()
                .map(|p| p.len() as u64)
                .sum(),
            ephemerals: HashMap::new(),
            containers: OrdSet::new(),
            ttls: OrdSet::new(),
            last_zxid: 0,
            quotas: false,
        };
        let open = Arc::new(acl::open_acl_unsafe());
        let mk = |acl: &Arc<Vec<Acl>>, children: &[&str]| {
            Arc::new(Node {
                data: Some(Bytes::new()),
                acl: acl.clone(),
                stat: Stat::default(),
                children: children.iter().map(Name::new).collect(),
            })
        };
        // These children are added without create txns, so their parents report a
        // negative cversion (0 creates * 2 - children), exactly as ZooKeeper does.
        t.nodes
            .insert(Name::new("/"), Some(mk(&open, &["zookeeper"])));
        t.nodes.insert(
            Name::new(ZOOKEEPER_PATH),
            Some(mk(&open, &["quota", "config"])),
        );
        t.nodes.insert(Name::new(QUOTA_PATH), Some(mk(&open, &[])));
        // ZooKeeper sets this node's ACL with version -1, which leaves aversion at -1.
        let mut config = mk(&Arc::new(acl::read_acl_unsafe()), &[]);
        Arc::make_mut(&mut config).stat.aversion = -1;
        t.nodes.insert(Name::new(CONFIG_PATH), Some(config));
        t
    }

    /// The tree a snapshot holds, read in place: nothing is loaded but the indices
    /// of its ephemeral, container and TTL nodes.
    pub fn from_base(base: BaseTree) -> DataTree {
        let mut t = DataTree {
            node_count: base.node_count(),
            data_size: base.data_size(),
            last_zxid: base.zxid(),
            nodes: PathMap::new(),
            ephemerals: HashMap::new(),
            containers: OrdSet::new(),
            ttls: OrdSet::new(),
            base: None,
            quotas: false,
        };
        for i in base.specials() {
            t.index_kind(base.path(i), base.stat(i).ephemeral_owner);
        }
        t.base = Some(Arc::new(base));
        t.quotas = t.quota_dir_has_children();
        t
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    pub fn node(&self, path: &str) -> Option<NodeRef<'_>> {
        let base = self.base.as_deref();
        match self.nodes.get(path) {
            Some(Some(n)) => Some(NodeRef {
                base,
                at: At::Own(n),
            }),
            Some(None) => None,
            None => base?.lookup(path).map(|i| NodeRef {
                base,
                at: At::Base(i),
            }),
        }
    }

    /// Calls `f` on every node with its path, in path order (bytewise): the overlay's
    /// nodes merged with the base's, which is already in that order.
    pub fn for_each_node<E>(
        &self,
        mut f: impl FnMut(&str, NodeRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let base = self.base.as_deref();
        let base_len = base.map_or(0, |b| b.node_count() as u32);
        let mut overlay = self.nodes.iter().peekable();
        let mut next_base: u32 = 0;
        loop {
            let from_base = base
                .filter(|_| next_base < base_len)
                .map(|b| b.path(next_base));
            let from_overlay = overlay.peek().map(|(k, _)| &***k);
            let overlay_first = match (from_overlay, from_base) {
                (None, None) => return Ok(()),
                (Some(k), Some(b)) => {
                    if k == b {
                        next_base += 1;
                    }
                    k.as_bytes() <= b.as_bytes()
                }
                (o, _) => o.is_some(),
            };
            if overlay_first {
                let (k, v) = overlay.next().expect("peeked");
                if let Some(n) = v {
                    f(
                        k,
                        NodeRef {
                            base,
                            at: At::Own(n),
                        },
                    )?;
                }
            } else {
                let i = next_base;
                next_base += 1;
                f(
                    from_base.expect("the base is next"),
                    NodeRef {
                        base,
                        at: At::Base(i),
                    },
                )?;
            }
        }
    }

    fn exists(&self, path: &str) -> bool {
        self.node(path).is_some()
    }

    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Nodes in the base snapshot (0 without one), deleted or not.
    pub fn base_node_count(&self) -> usize {
        self.base.as_ref().map_or(0, |b| b.node_count())
    }

    /// Entries in the overlay: nodes created or changed since the base, and deleted
    /// base nodes.
    pub fn overlay_len(&self) -> usize {
        self.nodes.len()
    }

    /// The node count ZooKeeper reports (srvr, mntr): its map holds the root under both
    /// "" and "/", so it counts one more than there are znodes.
    pub fn reported_node_count(&self) -> usize {
        self.node_count + 1
    }

    /// Sum of the sizes of every node's path and data (mntr's approximate data size).
    pub fn approximate_data_size(&self) -> u64 {
        self.data_size
    }

    /// Number of descendants of `path`, itself excluded (getAllChildrenNumber).
    pub fn descendant_count(&self, path: &str) -> usize {
        let Some(node) = self.node(path) else {
            return 0;
        };
        let mut count = 0;
        let mut stack: Vec<String> = node.children().map(|c| path::join(path, c)).collect();
        while let Some(p) = stack.pop() {
            count += 1;
            if let Some(n) = self.node(&p) {
                stack.extend(n.children().map(|c| path::join(&p, c)));
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
            if let Some(n) = self.node(p) {
                if n.stored_stat().cversion > 0 && !n.has_children() {
                    out.push(p.to_string());
                }
            }
        }
        for p in self.ttls.iter() {
            if let Some(n) = self.node(p) {
                let st = n.stored_stat();
                if let NodeKind::Ttl(ttl) = node_kind(st.ephemeral_owner) {
                    if !n.has_children() && ttl != 0 && now_ms - st.mtime > ttl {
                        out.push(p.to_string());
                    }
                }
            }
        }
        out
    }

    fn get_or(&self, path: &str, err: ErrorCode) -> Result<NodeRef<'_>, ErrorCode> {
        self.node(path).ok_or(err)
    }

    fn check(node: &NodeRef, perm: i32, who: &Requester) -> Result<(), ErrorCode> {
        if acl::allows(node.acl(), perm, who.auth) {
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
                Self::check(&parent, perms::DELETE, who)?;
                let node = self.get_or(path, ErrorCode::NoNode)?;
                Self::check_version(node.stored_stat().version, *version)?;
                if node.has_children() {
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
                Self::check(&node, perms::WRITE, who)?;
                let current = node.stored_stat().version;
                Self::check_version(current, *version)?;
                if who.enforce_quota {
                    let grows =
                        data.as_ref().map_or(0, |d| d.len()) as i64 - node.data_len() as i64;
                    self.check_quota(path, 0, grows)?;
                }
                Ok(Txn::SetData {
                    path: path.clone(),
                    data: data.clone(),
                    version: current.wrapping_add(1),
                })
            }
            WriteOp::Check { path, version } => {
                path::validate(path).map_err(|_| ErrorCode::BadArguments)?;
                let node = self.get_or(path, ErrorCode::NoNode)?;
                Self::check(&node, perms::READ, who)?;
                Self::check_version(node.stored_stat().version, *version)?;
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
        Self::check(&node, perms::ADMIN, who)?;
        let current = node.stored_stat().aversion;
        Self::check_version(current, version)?;
        Ok(Txn::SetAcl {
            path: path.to_owned(),
            acl,
            aversion: current.wrapping_add(1),
        })
    }

    /// Deletion of an empty container or expired TTL node by the cleaner.
    pub fn prepare_delete_container(&self, path: &str) -> Result<Txn, ErrorCode> {
        let node = self.get_or(path, ErrorCode::NoNode)?;
        if node.has_children() {
            return Err(ErrorCode::NotEmpty);
        }
        match node_kind(node.stored_stat().ephemeral_owner) {
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
        Self::check(&parent, perms::CREATE, who)?;
        let parent_stat = parent.stored_stat();
        let mut path = c.path.clone();
        if mode.sequential {
            path.push_str(&format!("{:010}", parent_stat.cversion));
        }
        path::validate(&path).map_err(|_| ErrorCode::BadArguments)?;
        if self.exists(&path) {
            return Err(ErrorCode::NodeExists);
        }
        if node_kind(parent_stat.ephemeral_owner) == NodeKind::Ephemeral {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        if who.enforce_quota {
            self.check_quota(&path, 1, c.data.as_ref().map_or(0, |d| d.len()) as i64)?;
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
            parent_cversion: parent_stat.cversion.wrapping_add(1),
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
                let name = Name::new(path::name(path));
                let key = Name::new(path);
                let base = self.base.as_deref();
                let p = node_mut(&mut self.nodes, base, parent_path)
                    .expect("create txn applied without its parent");
                p.children.insert(base, name);
                // ZooKeeper's rule (DataTree.createNode): -1 (a create logged before
                // 3.3) bumps the parent's cversion; a value not above it (a txn
                // replayed over a fuzzy snapshot) leaves cversion and pzxid alone.
                let cversion = if *parent_cversion == -1 {
                    p.stat.cversion.wrapping_add(1)
                } else {
                    *parent_cversion
                };
                if cversion > p.stat.cversion {
                    p.stat.cversion = cversion;
                    p.stat.pzxid = zxid;
                }
                let parent_acl = p.acl.clone();
                // Most nodes have their parent's ACL: share its list instead of
                // holding a copy per node.
                let node_acl = if *parent_acl == *acl {
                    parent_acl.clone()
                } else {
                    Arc::new(acl.clone())
                };
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
                self.node_count += 1;
                self.data_size += (path.len() + data.as_ref().map_or(0, |d| d.len())) as u64;
                self.nodes.insert(key.clone(), Some(Arc::new(node)));
                if parent_path == QUOTA_PATH {
                    self.quotas = true;
                }
                match quota::stats_node_of(path) {
                    Some(real) => {
                        let (count, bytes) = self.subtree_usage(real);
                        self.set_quota_usage(path, count, bytes);
                    }
                    None => {
                        self.note_quota_change(path, 1, data.as_ref().map_or(0, |d| d.len()) as i64)
                    }
                }
                triggers.push(Trigger {
                    path: key,
                    event: EventType::NodeCreated,
                    acl: node_acl,
                });
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
                let n = node_mut(&mut self.nodes, self.base.as_deref(), path)
                    .expect("setData txn applied to a missing node");
                let old_len = n.data.as_ref().map_or(0, |d| d.len());
                self.data_size =
                    self.data_size + data.as_ref().map_or(0, |d| d.len()) as u64 - old_len as u64;
                n.data = data.clone();
                n.stat.version = *version;
                n.stat.mzxid = zxid;
                n.stat.mtime = time_ms;
                triggers.push(Trigger::new(
                    path,
                    EventType::NodeDataChanged,
                    n.acl.clone(),
                ));
                let out = n.stat();
                let new_len = data.as_ref().map_or(0, |d| d.len());
                self.note_quota_change(path, 0, new_len as i64 - old_len as i64);
                Applied::Stat(out)
            }
            Txn::SetAcl {
                path,
                acl,
                aversion,
            } => {
                let n = node_mut(&mut self.nodes, self.base.as_deref(), path)
                    .expect("setACL txn applied to a missing node");
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
    fn index_kind(&mut self, path: &str, ephemeral_owner: i64) {
        match node_kind(ephemeral_owner) {
            NodeKind::Ephemeral => {
                self.ephemerals
                    .entry(ephemeral_owner)
                    .or_default()
                    .insert(Arc::from(path));
            }
            NodeKind::Container => {
                self.containers.insert(Arc::from(path));
            }
            NodeKind::Ttl(_) => {
                self.ttls.insert(Arc::from(path));
            }
            NodeKind::Persistent => {}
        }
    }

    /// The quota nearest `path` (on it or an ancestor) and its limits.
    fn quota_of<'p>(&self, path: &'p str) -> Option<(&'p str, quota::StatsTrack)> {
        debug_assert_eq!(self.quotas, self.quota_dir_has_children());
        if !quota::counted(path) || !self.quotas {
            return None;
        }
        quota::candidates(path).find_map(|p| {
            let limits = format!("{}/{}", quota::quota_dir(p), quota::LIMITS_NODE);
            let n = self.node(&limits)?;
            Some((
                p,
                quota::StatsTrack::parse(n.data_slice().unwrap_or_default()),
            ))
        })
    }

    fn quota_dir_has_children(&self) -> bool {
        self.node(QUOTA_PATH).is_some_and(|n| n.has_children())
    }

    /// A quota's usage as its stats node holds it: (nodes, data bytes).
    fn quota_usage(&self, root: &str) -> Option<(i64, i64)> {
        let stats = format!("{}/{}", quota::quota_dir(root), quota::STATS_NODE);
        let t = quota::StatsTrack::parse(self.node(&stats)?.data_slice().unwrap_or_default());
        Some((t.count.max(0), t.bytes.max(0)))
    }

    /// QUOTAEXCEEDED if adding `count` nodes and `bytes` bytes under `path` would pass
    /// a hard limit of its quota (ZooKeeper's PrepRequestProcessor.checkQuota).
    fn check_quota(&self, path: &str, count: i64, bytes: i64) -> Result<(), ErrorCode> {
        let Some((root, limits)) = self.quota_of(path) else {
            return Ok(());
        };
        let (used_count, used_bytes) = self.quota_usage(root).unwrap_or((0, 0));
        let over = |limit: i64, used: i64, more: i64| limit > -1 && more > 0 && used + more > limit;
        if over(limits.count_hard_limit, used_count, count)
            || over(limits.byte_hard_limit, used_bytes, bytes)
        {
            tracing::debug!("quota of {root} exceeded by a write to {path}");
            return Err(ErrorCode::QuotaExceeded);
        }
        Ok(())
    }

    /// Counts a change under `path` in its quota's usage, warning past a soft limit
    /// as ZooKeeper does. The stats node's data changes without a new version, as
    /// ZooKeeper's DataTree writes it.
    fn note_quota_change(&mut self, path: &str, count: i64, bytes: i64) {
        let Some((root, limits)) = self.quota_of(path) else {
            return;
        };
        let root = root.to_string();
        let Some((c, b)) = self.quota_usage(&root) else {
            return;
        };
        let (c, b) = (c + count, b + bytes);
        if limits.count > -1 && c > limits.count && count > 0 {
            tracing::warn!("Quota exceeded: {root} count={c} limit={}", limits.count);
        }
        if limits.bytes > -1 && b > limits.bytes && bytes > 0 {
            tracing::warn!("Quota exceeded: {root} bytes={b} limit={}", limits.bytes);
        }
        let stats = format!("{}/{}", quota::quota_dir(&root), quota::STATS_NODE);
        self.set_quota_usage(&stats, c, b);
    }

    fn set_quota_usage(&mut self, stats_path: &str, count: i64, bytes: i64) {
        let text = quota::StatsTrack::usage_text(count, bytes);
        if let Some(n) = node_mut(&mut self.nodes, self.base.as_deref(), stats_path) {
            let old = n.data.as_ref().map_or(0, |d| d.len());
            n.data = Some(Bytes::from(text.into_bytes()));
            let new = n.data.as_ref().map_or(0, |d| d.len());
            self.data_size = self.data_size + new as u64 - old as u64;
        }
    }

    /// The nodes in `root`'s subtree, itself included, and their data bytes.
    fn subtree_usage(&self, root: &str) -> (i64, i64) {
        let mut count = 0;
        let mut bytes = 0;
        let mut stack = vec![root.to_string()];
        while let Some(p) = stack.pop() {
            let Some(n) = self.node(&p) else {
                continue;
            };
            count += 1;
            bytes += n.data_len() as i64;
            for c in n.children() {
                stack.push(if p == "/" {
                    format!("/{c}")
                } else {
                    format!("{p}/{c}")
                });
            }
        }
        (count, bytes)
    }

    fn delete_node(&mut self, path: &str, zxid: i64, triggers: &mut Vec<Trigger>) {
        let (owner, acl, data_len) = {
            let node = self
                .node(path)
                .expect("delete txn applied to a missing node");
            assert!(!node.has_children(), "delete txn for a node with children");
            (
                node.stored_stat().ephemeral_owner,
                node.acl().clone(),
                node.data_len(),
            )
        };
        if self.base.as_ref().is_some_and(|b| b.lookup(path).is_some()) {
            match self.nodes.get_mut(path) {
                Some(slot) => *slot = None,
                None => {
                    self.nodes.insert(Name::new(path), None);
                }
            }
        } else {
            self.nodes.remove(path);
        }
        self.node_count -= 1;
        self.data_size -= (path.len() + data_len) as u64;
        self.note_quota_change(path, -1, -(data_len as i64));
        match node_kind(owner) {
            NodeKind::Ephemeral => {
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
        if let Some(p) = node_mut(&mut self.nodes, self.base.as_deref(), parent_path) {
            parent_acl = p.acl.clone();
            p.children.remove(path::name(path));
            // The stored cversion counts creates only (see Node); the reported one
            // still moves, because the child count dropped.
            if zxid > p.stat.pzxid {
                p.stat.pzxid = zxid;
            }
        }
        if parent_path == QUOTA_PATH {
            // Once the parent no longer lists it.
            self.quotas = self.quota_dir_has_children();
        }
        triggers.push(Trigger::new(path, EventType::NodeDeleted, acl));
        triggers.push(Trigger::new(
            parent_path,
            EventType::NodeChildrenChanged,
            parent_acl,
        ));
    }
}

#[cfg(test)]
mod tests;
