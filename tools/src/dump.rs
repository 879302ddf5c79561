//! `ringkeeper-dump`'s reading and printing: txn logs and snapshots of ringkeeper and of
//! Apache ZooKeeper, told apart by their contents, each record or node described the
//! same way for both, as text or as JSON lines.

use std::fmt::Write as _;
use std::path::Path;

use ringkeeper::proto::Acl;
use ringkeeper::tree::{DataTree, Txn};
use ringkeeper::zkformat::convert::{to_zookeeper, to_zookeeper_tree, TxnContext};
use ringkeeper::zkformat::files::{self, Compression, LogEnd};
use ringkeeper::zkformat::snapshot::ZkTree;
use ringkeeper::zkformat::txn::{txn_type, TxnRecord, ZkTxn};
use ringkeeper_storage::record::{
    scan, End, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use serde_json::{json, Value};

/// A damaged file: what was read before the damage has been printed.
#[derive(Debug)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

/// One txn of a log, as both formats describe it.
pub struct Record {
    pub offset: u64,
    pub txn: ZkTxn,
}

/// What a log file held.
pub struct LogDump {
    pub format: &'static str,
    pub records: Vec<Record>,
    /// A last write cut short (normal after a crash; never acknowledged).
    pub torn_at: Option<u64>,
    /// Damage before the end: the file cannot be trusted past here.
    pub damage: Option<Damage>,
}

/// Reads a txn log of either kind.
pub fn read_log(bytes: &[u8]) -> Result<LogDump, Damage> {
    if bytes.starts_with(b"ZKLG") {
        return match files::read_log(bytes) {
            Ok((_, entries, end)) => Ok(LogDump {
                format: "zookeeper",
                records: entries
                    .into_iter()
                    .map(|e| Record {
                        offset: e.offset,
                        txn: e.txn,
                    })
                    .collect(),
                torn_at: match end {
                    LogEnd::Clean => None,
                    LogEnd::Torn { offset } => Some(offset),
                },
                damage: None,
            }),
            Err(e) => Err(Damage {
                offset: e.offset,
                reason: e.reason,
            }),
        };
    }
    let header = SegmentHeader::decode(bytes).map_err(|e| Damage {
        offset: 0,
        reason: format!("neither a ZooKeeper txn log nor a ringkeeper log segment ({e})"),
    })?;
    let _ = header;
    let body = &bytes[SEGMENT_HEADER_BYTES..];
    let s = scan(body);
    let at = |o: usize| (SEGMENT_HEADER_BYTES + o) as u64;
    let mut records = Vec::new();
    for r in &s.records {
        let offset = at(r.payload.start - RECORD_HEADER_BYTES);
        let logged = Txn::decode_logged(&body[r.payload.clone()]).map_err(|e| Damage {
            offset,
            reason: format!("txn {:#x} does not decode: {e}", r.zxid),
        })?;
        let ctx = TxnContext {
            session_id: logged.origin.session_id,
            cxid: logged.origin.cxid,
            zxid: r.zxid,
            time_ms: logged.time_ms,
        };
        records.push(Record {
            offset,
            txn: to_zookeeper(&logged.txn, ctx, &[]),
        });
    }
    let (torn_at, damage) = match s.end {
        End::Clean => (None, None),
        End::Torn { offset } => (Some(at(offset)), None),
        End::Corrupt { offset, reason } => (
            None,
            Some(Damage {
                offset: at(offset),
                reason: reason.to_string(),
            }),
        ),
    };
    Ok(LogDump {
        format: "ringkeeper",
        records,
        torn_at,
        damage,
    })
}

/// What a snapshot file held, in ZooKeeper's terms.
pub struct SnapshotDump {
    pub format: &'static str,
    pub zxid: i64,
    pub tree: ZkTree,
}

/// Reads a snapshot of either kind (ZooKeeper's possibly gzip or snappy compressed).
pub fn read_snapshot(path: &Path) -> Result<SnapshotDump, Damage> {
    let io = |e: std::io::Error| Damage {
        offset: 0,
        reason: e.to_string(),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let raw = std::fs::read(path).map_err(io)?;
    let compression = Compression::of_name(name);
    if compression != Compression::None || raw.starts_with(b"ZKSN") {
        let stream = files::decompress(&raw, compression).map_err(|e| Damage {
            offset: e.offset,
            reason: e.reason,
        })?;
        let f = files::read_snapshot(&stream).map_err(|e| Damage {
            offset: e.offset,
            reason: e.reason,
        })?;
        let zxid = zxid_of_name(name).unwrap_or(-1);
        return Ok(SnapshotDump {
            format: "zookeeper",
            zxid,
            tree: f.tree,
        });
    }
    let snap = ringkeeper_storage::snapshot::Snapshot::open(path).map_err(|e| Damage {
        offset: snapshot_error_offset(&e),
        reason: e.to_string(),
    })?;
    let zxid = snap.zxid;
    let (tree, sessions) = DataTree::from_snapshot(snap).map_err(|e| Damage {
        offset: snapshot_error_offset(&e),
        reason: e.to_string(),
    })?;
    let sessions: Vec<(i64, i32)> = sessions.iter().map(|s| (s.id, s.timeout_ms)).collect();
    Ok(SnapshotDump {
        format: "ringkeeper",
        zxid,
        tree: to_zookeeper_tree(&tree, &sessions),
    })
}

fn snapshot_error_offset(e: &ringkeeper_storage::snapshot::SnapshotError) -> u64 {
    match e {
        ringkeeper_storage::snapshot::SnapshotError::Bad { offset, .. } => *offset,
        ringkeeper_storage::snapshot::SnapshotError::Io { .. } => 0,
    }
}

/// The zxid in a `snapshot.<hex>` or `log.<hex>` name (with any suffix).
pub fn zxid_of_name(name: &str) -> Option<i64> {
    let hex = name.split('.').nth(1)?;
    i64::from_str_radix(hex, 16).ok()
}

pub fn type_name(t: i32) -> &'static str {
    match t {
        txn_type::ERROR => "error",
        txn_type::CREATE => "create",
        txn_type::DELETE => "delete",
        txn_type::SET_DATA => "setData",
        txn_type::SET_ACL => "setACL",
        txn_type::CHECK => "check",
        txn_type::MULTI => "multi",
        txn_type::CREATE2 => "create2",
        txn_type::RECONFIG => "reconfig",
        txn_type::CREATE_CONTAINER => "createContainer",
        txn_type::DELETE_CONTAINER => "deleteContainer",
        txn_type::CREATE_TTL => "createTTL",
        txn_type::CREATE_SESSION => "createSession",
        txn_type::CLOSE_SESSION => "closeSession",
        _ => "unknown",
    }
}

fn acl_text(acl: &Option<Vec<Acl>>) -> String {
    match acl {
        None => "null".into(),
        Some(v) => v
            .iter()
            .map(|a| {
                format!(
                    "{}:{}:{}",
                    a.id.scheme,
                    a.id.id,
                    crate::cli::perm_string(a.perms)
                )
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn data_len(d: &Option<Vec<u8>>) -> String {
    d.as_ref()
        .map_or("data null".into(), |d| format!("data {} bytes", d.len()))
}

/// A record's path (if it has one) and a one-line summary of the rest.
pub fn describe(rec: &TxnRecord) -> (Option<String>, String) {
    match rec {
        TxnRecord::Create {
            path,
            data,
            acl,
            ephemeral,
            ..
        } => (
            Some(path.clone()),
            format!(
                "{}, acl {}{}",
                data_len(data),
                acl_text(acl),
                if *ephemeral { ", ephemeral" } else { "" }
            ),
        ),
        TxnRecord::CreateContainer {
            path, data, acl, ..
        } => (
            Some(path.clone()),
            format!("{}, acl {}, container", data_len(data), acl_text(acl)),
        ),
        TxnRecord::CreateTtl {
            path,
            data,
            acl,
            ttl,
            ..
        } => (
            Some(path.clone()),
            format!("{}, acl {}, ttl {ttl} ms", data_len(data), acl_text(acl)),
        ),
        TxnRecord::Delete { path } => (Some(path.clone()), String::new()),
        TxnRecord::SetData {
            path,
            data,
            version,
        } => (
            Some(path.clone()),
            format!("{}, version {version}", data_len(data)),
        ),
        TxnRecord::CheckVersion { path, version } => {
            (Some(path.clone()), format!("version {version}"))
        }
        TxnRecord::SetAcl { path, acl, version } => (
            Some(path.clone()),
            format!("acl {}, aversion {version}", acl_text(acl)),
        ),
        TxnRecord::CreateSession { timeout_ms } => (None, format!("timeout {timeout_ms} ms")),
        TxnRecord::CloseSession { paths_to_delete } => (
            None,
            match paths_to_delete {
                Some(p) if !p.is_empty() => format!("deletes {}", p.join(",")),
                _ => String::new(),
            },
        ),
        TxnRecord::Error { err } => (None, format!("error {err}")),
        TxnRecord::Multi(entries) => (
            None,
            entries
                .iter()
                .map(|e| {
                    let (path, rest) = describe(&e.record);
                    let mut s = type_name(e.txn_type).to_string();
                    if let Some(p) = path {
                        let _ = write!(s, " {p}");
                    }
                    if !rest.is_empty() {
                        let _ = write!(s, " ({rest})");
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn utc(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn record_text(r: &Record) -> String {
    let h = &r.txn.header;
    let mut s = format!(
        "{:#x}  {}  session {:#x}  cxid {}  {}",
        h.zxid,
        utc(h.time),
        h.client_id,
        h.cxid,
        type_name(h.txn_type)
    );
    if let Some(rec) = &r.txn.record {
        let (path, rest) = describe(rec);
        if let Some(p) = path {
            let _ = write!(s, "  {p}");
        }
        if !rest.is_empty() {
            let _ = write!(s, "  {rest}");
        }
    }
    s
}

pub fn record_json(r: &Record) -> Value {
    let h = &r.txn.header;
    let (path, summary) = r
        .txn
        .record
        .as_ref()
        .map_or((None, String::new()), describe);
    json!({
        "offset": r.offset,
        "zxid": format!("{:#x}", h.zxid),
        "time_ms": h.time,
        "time": utc(h.time),
        "session": format!("{:#x}", h.client_id),
        "cxid": h.cxid,
        "type": type_name(h.txn_type),
        "path": path,
        "summary": summary,
    })
}

fn acl_list_text(acls: &ZkTree, key: i64) -> String {
    if key == -1 {
        return "world:anyone:cdrwa".into();
    }
    acls.acls
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(format!("#{key} (not in the cache)"), |(_, l)| acl_text(l))
}

/// The snapshot as text: a summary line, the sessions, then every node.
pub fn snapshot_text(d: &SnapshotDump) -> String {
    let t = &d.tree;
    let mut s = format!(
        "{} snapshot of zxid {:#x}: {} nodes, {} sessions, {} ACL lists\n",
        d.format,
        d.zxid,
        t.nodes.len(),
        t.sessions.len(),
        t.acls.len()
    );
    for (id, timeout) in &t.sessions {
        let _ = writeln!(s, "session {id:#x}  timeout {timeout} ms");
    }
    for n in &t.nodes {
        let st = &n.stat;
        let path = if n.path.is_empty() { "/" } else { &n.path };
        let _ = writeln!(
            s,
            "{path}  czxid {:#x}  mzxid {:#x}  pzxid {:#x}  ctime {}  mtime {}  version {}  cversion {}  aversion {}  ephemeralOwner {:#x}  {}  acl {}",
            st.czxid,
            st.mzxid,
            st.pzxid,
            utc(st.ctime),
            utc(st.mtime),
            st.version,
            st.cversion,
            st.aversion,
            st.ephemeral_owner,
            data_len(&n.data),
            acl_list_text(t, n.acl_ref)
        );
    }
    s
}

/// The snapshot as JSON lines: a summary object, one per session, one per node.
pub fn snapshot_json(d: &SnapshotDump) -> Vec<Value> {
    let t = &d.tree;
    let mut v = vec![json!({
        "format": d.format,
        "zxid": format!("{:#x}", d.zxid),
        "nodes": t.nodes.len(),
        "sessions": t.sessions.len(),
        "acl_lists": t.acls.len(),
    })];
    for (id, timeout) in &t.sessions {
        v.push(json!({"session": format!("{id:#x}"), "timeout_ms": timeout}));
    }
    for n in &t.nodes {
        let st = &n.stat;
        v.push(json!({
            "path": if n.path.is_empty() { "/" } else { &n.path },
            "czxid": format!("{:#x}", st.czxid),
            "mzxid": format!("{:#x}", st.mzxid),
            "pzxid": format!("{:#x}", st.pzxid),
            "ctime": st.ctime,
            "mtime": st.mtime,
            "version": st.version,
            "cversion": st.cversion,
            "aversion": st.aversion,
            "ephemeralOwner": format!("{:#x}", st.ephemeral_owner),
            "dataLength": n.data.as_ref().map_or(0, |d| d.len()),
            "acl": acl_list_text(t, n.acl_ref),
        }));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_796_173_593_336), "2026-12-02T01:06:33.336Z");
    }
}
