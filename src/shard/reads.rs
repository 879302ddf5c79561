//! Reads answered on the shard from its current tree version, without involving any
//! other core: getData, exists, getChildren(2), getACL, getAllChildrenNumber,
//! getEphemerals, multiRead, watch management (setWatches, addWatch, removeWatches,
//! checkWatches), whoAmI and ping.

use crate::proto::codes::{keeper_state, perms, xid, AddWatchMode, WatcherType};
use crate::proto::{
    put_event_frame, put_reply_frame, Acl, ErrorCode, EventType, Id, MultiResult, ReadOp,
    ReplyHeader, Request, Response, SetWatches, WatcherEvent,
};
use crate::session::watches::{WatchKind, WatchTable};
use crate::tree::{acl, DataTree, NodeRef};

/// Everything a read needs: the tree version, the session, its identities, and the
/// shard's watch table.
pub struct ReadContext<'a> {
    pub tree: &'a DataTree,
    pub session_id: i64,
    pub auth: &'a [Id],
    pub watches: LazyWatches<'a>,
}

/// The shard's watch table, locked only once a read sets, checks or removes a watch:
/// a plain read takes no lock.
pub struct LazyWatches<'a> {
    table: &'a std::sync::Mutex<WatchTable>,
    guard: Option<std::sync::MutexGuard<'a, WatchTable>>,
}

impl<'a> LazyWatches<'a> {
    pub fn new(table: &'a std::sync::Mutex<WatchTable>) -> LazyWatches<'a> {
        LazyWatches { table, guard: None }
    }

    pub fn get(&mut self) -> &mut WatchTable {
        let table = self.table;
        self.guard
            .get_or_insert_with(|| table.lock().expect("watch table poisoned"))
    }
}

fn fail(code: ErrorCode) -> (i32, Response) {
    (code.code(), Response::Empty)
}

fn read_node<'t>(
    tree: &'t DataTree,
    path: &str,
    perm: i32,
    auth: &[Id],
) -> Result<NodeRef<'t>, ErrorCode> {
    let node = tree.node(path).ok_or(ErrorCode::NoNode)?;
    if !acl::allows(node.acl(), perm, auth) {
        return Err(ErrorCode::NoAuth);
    }
    Ok(node)
}

/// Executes a read and appends its reply frame (and any events it fires) to `out`.
/// Answers one read into `out`; returns the frames written (the reply, and the watch
/// events a setWatches fires at once).
pub fn execute(ctx: &mut ReadContext, req_xid: i32, req: &Request, out: &mut Vec<u8>) -> u64 {
    let zxid = ctx.tree.last_zxid();
    let mut events = 0;
    let (err, body) = match req {
        Request::Ping => (0, Response::Empty),
        Request::Exists { path, watch } => {
            if path.contains('\0') {
                fail(ErrorCode::BadArguments)
            } else {
                if *watch {
                    ctx.watches.get().add(ctx.session_id, path, WatchKind::Data);
                }
                match ctx.tree.node(path) {
                    Some(n) => (0, Response::Stat(n.stat())),
                    None => fail(ErrorCode::NoNode),
                }
            }
        }
        Request::GetData { path, watch } => {
            match read_node(ctx.tree, path, perms::READ, ctx.auth) {
                Ok(n) => {
                    if *watch {
                        ctx.watches.get().add(ctx.session_id, path, WatchKind::Data);
                    }
                    (
                        0,
                        Response::GetData {
                            data: n.data(),
                            stat: n.stat(),
                        },
                    )
                }
                Err(e) => fail(e),
            }
        }
        Request::GetChildren { path, watch } | Request::GetChildren2 { path, watch } => {
            match read_node(ctx.tree, path, perms::READ, ctx.auth) {
                Ok(n) => {
                    if *watch {
                        ctx.watches
                            .get()
                            .add(ctx.session_id, path, WatchKind::Child);
                    }
                    let children: Vec<String> = n.children().map(|c| c.to_string()).collect();
                    if matches!(req, Request::GetChildren { .. }) {
                        (0, Response::Children(children))
                    } else {
                        (
                            0,
                            Response::Children2 {
                                children,
                                stat: n.stat(),
                            },
                        )
                    }
                }
                Err(e) => fail(e),
            }
        }
        Request::GetAcl { path } => match ctx.tree.node(path) {
            None => fail(ErrorCode::NoNode),
            Some(n) if !acl::allows(n.acl(), perms::READ | perms::ADMIN, ctx.auth) => {
                fail(ErrorCode::NoAuth)
            }
            Some(n) => {
                let acl_list: Vec<Acl> = if acl::allows(n.acl(), perms::ADMIN, ctx.auth) {
                    n.acl().to_vec()
                } else {
                    // Without ADMIN the digest hashes are hidden, as in ZooKeeper.
                    n.acl()
                        .iter()
                        .map(|a| {
                            let mut a = a.clone();
                            if a.id.scheme == "digest" {
                                let user = a.id.id.split(':').next().unwrap_or("").to_string();
                                a.id.id = format!("{user}:x");
                            }
                            a
                        })
                        .collect()
                };
                (
                    0,
                    Response::GetAcl {
                        acl: acl_list,
                        stat: n.stat(),
                    },
                )
            }
        },
        Request::GetAllChildrenNumber { path } => {
            match read_node(ctx.tree, path, perms::READ, ctx.auth) {
                Ok(_) => (0, Response::Number(ctx.tree.descendant_count(path) as i32)),
                Err(e) => fail(e),
            }
        }
        Request::GetEphemerals { prefix } => {
            let all = ctx.tree.ephemerals_of(ctx.session_id);
            let p = prefix.trim();
            let list = if p.is_empty() || p == "/" {
                all
            } else {
                all.into_iter()
                    .filter(|e| e.starts_with(prefix.as_str()))
                    .collect()
            };
            (0, Response::Strings(list))
        }
        Request::MultiRead(ops) => {
            let results = ops
                .iter()
                .map(|op| match op {
                    ReadOp::GetData { path } => {
                        match read_node(ctx.tree, path, perms::READ, ctx.auth) {
                            Ok(n) => MultiResult::GetData {
                                data: n.data(),
                                stat: n.stat(),
                            },
                            Err(e) => MultiResult::Error(e.code()),
                        }
                    }
                    ReadOp::GetChildren { path } => {
                        match read_node(ctx.tree, path, perms::READ, ctx.auth) {
                            Ok(n) => MultiResult::GetChildren(
                                n.children().map(|c| c.to_string()).collect(),
                            ),
                            Err(e) => MultiResult::Error(e.code()),
                        }
                    }
                })
                .collect();
            (0, Response::Multi(results))
        }
        Request::AddWatch { path, mode } => {
            let kind = match *mode {
                m if m == AddWatchMode::Persistent as i32 => Some(WatchKind::Persistent),
                m if m == AddWatchMode::PersistentRecursive as i32 => {
                    Some(WatchKind::PersistentRecursive)
                }
                _ => None,
            };
            match kind {
                Some(k) => {
                    ctx.watches.get().add(ctx.session_id, path, k);
                    // ZooKeeper answers addWatch with an ErrorResponse(0) body.
                    (0, Response::Number(0))
                }
                None => fail(ErrorCode::BadArguments),
            }
        }
        Request::RemoveWatches { path, watcher_type } => {
            match WatcherType::from_i32(*watcher_type) {
                Some(t) if ctx.watches.get().remove_type(ctx.session_id, path, t) => {
                    (0, Response::Empty)
                }
                Some(_) => fail(ErrorCode::NoWatcher),
                None => fail(ErrorCode::BadArguments),
            }
        }
        Request::CheckWatches { path, watcher_type } => {
            match WatcherType::from_i32(*watcher_type) {
                Some(t) if ctx.watches.get().has_type(ctx.session_id, path, t) => {
                    (0, Response::Empty)
                }
                Some(_) => fail(ErrorCode::NoWatcher),
                None => fail(ErrorCode::BadArguments),
            }
        }
        Request::SetWatches(w) => {
            events = set_watches(ctx, w, out);
            (0, Response::Empty)
        }
        Request::WhoAmI => {
            let infos = in_zookeeper_order(ctx.auth)
                .into_iter()
                .map(|id| {
                    let user = match id.scheme.as_str() {
                        "digest" => id.id.split(':').next().unwrap_or("").to_string(),
                        _ => id.id.clone(),
                    };
                    (id.scheme.clone(), user)
                })
                .collect();
            (0, Response::WhoAmI(infos))
        }
        // Standalone, reconfig is disabled as in a ZooKeeper without reconfigEnabled.
        Request::Unsupported(crate::proto::OpCode::Reconfig) => fail(ErrorCode::ReconfigDisabled),
        Request::Unsupported(_) => fail(ErrorCode::Unimplemented),
        // Writes never reach here; auth is answered on arrival.
        _ => fail(ErrorCode::SystemError),
    };
    let reply_xid = match req {
        Request::Ping => xid::PING,
        Request::SetWatches(_) => xid::SET_WATCHES,
        _ => req_xid,
    };
    put_reply_frame(
        out,
        ReplyHeader {
            xid: reply_xid,
            zxid,
            err,
        },
        &body,
    );
    1 + events
}

/// Re-registers a reconnecting client's watches, firing at once those whose change
/// it missed (DataTree.setWatches). Returns the events fired.
fn set_watches(ctx: &mut ReadContext, w: &SetWatches, out: &mut Vec<u8>) -> u64 {
    let auth = ctx.auth;
    let tree = ctx.tree;
    let fired = std::cell::Cell::new(0);
    let fire = |path: &str, ev: EventType, out: &mut Vec<u8>| {
        // Events about an existing node need READ on it, as live events do.
        if let Some(n) = tree.node(path) {
            if !acl::allows(n.acl(), perms::READ, auth) {
                return;
            }
        }
        fired.set(fired.get() + 1);
        put_event_frame(
            out,
            -1,
            &WatcherEvent {
                event_type: ev as i32,
                state: keeper_state::SYNC_CONNECTED,
                path: path.to_string(),
            },
        );
    };
    let rel = w.relative_zxid;
    for p in &w.data {
        match ctx.tree.node(p) {
            None => fire(p, EventType::NodeDeleted, out),
            Some(n) if n.stored_stat().mzxid > rel => fire(p, EventType::NodeDataChanged, out),
            Some(_) => ctx.watches.get().add(ctx.session_id, p, WatchKind::Data),
        }
    }
    for p in &w.exist {
        match ctx.tree.node(p) {
            Some(_) => fire(p, EventType::NodeCreated, out),
            None => ctx.watches.get().add(ctx.session_id, p, WatchKind::Data),
        }
    }
    for p in &w.child {
        match ctx.tree.node(p) {
            None => fire(p, EventType::NodeDeleted, out),
            Some(n) if n.stored_stat().pzxid > rel => fire(p, EventType::NodeChildrenChanged, out),
            Some(_) => ctx.watches.get().add(ctx.session_id, p, WatchKind::Child),
        }
    }
    for p in &w.persistent {
        ctx.watches
            .get()
            .add(ctx.session_id, p, WatchKind::Persistent);
    }
    for p in &w.persistent_recursive {
        ctx.watches
            .get()
            .add(ctx.session_id, p, WatchKind::PersistentRecursive);
    }
    fired.get()
}

/// Handles an auth packet; returns the identities to add, or AUTHFAILED.
pub fn authenticate(
    scheme: &str,
    auth: &[u8],
    super_digest: Option<&str>,
) -> Result<Vec<Id>, ErrorCode> {
    match scheme {
        "digest" => {
            let text = std::str::from_utf8(auth).map_err(|_| ErrorCode::AuthFailed)?;
            let d = acl::digest(text);
            let mut ids = Vec::with_capacity(2);
            if super_digest == Some(d.as_str()) {
                ids.push(Id::new("super", ""));
            }
            ids.push(Id::new("digest", &d));
            Ok(ids)
        }
        _ => Err(ErrorCode::AuthFailed),
    }
}

/// Java's String.hashCode (over UTF-16 code units).
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// A session's identities in the order ZooKeeper lists them (whoami): it keeps them in
/// a set backed by a ConcurrentHashMap, which iterates by hash bin (the jute Id's
/// hashCode, spread, masked by the table size: 16, doubling past three quarters
/// full), then in the order the ids were added.
pub fn in_zookeeper_order(ids: &[crate::proto::Id]) -> Vec<&crate::proto::Id> {
    let mut table = 16usize;
    while ids.len() * 4 > table * 3 {
        table *= 2;
    }
    let bin = |id: &crate::proto::Id| {
        let h = 37i32
            .wrapping_mul(
                37i32
                    .wrapping_mul(17)
                    .wrapping_add(java_string_hash(&id.scheme)),
            )
            .wrapping_add(java_string_hash(&id.id));
        let spread = (h ^ ((h as u32) >> 16) as i32) & 0x7fff_ffff;
        spread as usize & (table - 1)
    };
    let mut v: Vec<(usize, usize, &crate::proto::Id)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (bin(id), i, id))
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_list_in_the_order_zookeeper_iterates_them() {
        let id = |scheme: &str, id: &str| Id {
            scheme: scheme.into(),
            id: id.into(),
        };
        assert_eq!(java_string_hash("ip"), 3367);
        assert_eq!(java_string_hash(""), 0);
        // Apache ZooKeeper 3.8's whoami for a loopback client after
        // `addauth digest alice:secret`: digest, then ip.
        let ids = [
            id("ip", "127.0.0.1"),
            id("digest", "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E="),
        ];
        let order: Vec<&str> = in_zookeeper_order(&ids)
            .iter()
            .map(|i| i.scheme.as_str())
            .collect();
        assert_eq!(order, ["digest", "ip"]);
    }
}
