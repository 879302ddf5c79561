//! The operator endpoints over HTTP, served by one shard's executor: ZooKeeper's
//! AdminServer (its commands under `admin.commandURL`, answered in the JSON shapes
//! ZooKeeper 3.8 gives them) and the Prometheus endpoint (`/metrics`).
//!
//! Anything that walks the file system (`dirs`, sizes in `stats`, the initial
//! configuration) runs on glommio's blocking pool, not on the executor that serves
//! clients.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_lite::AsyncWriteExt;
use serde_json::{json, Map, Value};

use super::fourlw::{environment, op_name, sessions};
use super::Shard;
use crate::config::dir_size;
use crate::http::{self, HeadError, Request, Response};
use crate::metrics::figures::{self, Inputs, Report};
use crate::metrics::prometheus;
use crate::proto::codes::perms;
use crate::server::ServerMode;
use crate::session::watches::WatchSide;
use crate::tree::acl;

/// How long a client may take to send its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long the `snapshot` command waits for the snapshot it asked for.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Admin,
    Prometheus,
}

/// A bound operator port and what it serves.
pub struct Endpoint {
    pub service: Service,
    pub listener: std::net::TcpListener,
}

/// ZooKeeper 3.8's command names and their short forms (the four-letter words), with
/// `snapshot` from 3.9.
const COMMANDS: [(&str, &[&str]); 18] = [
    ("configuration", &["conf", "config"]),
    ("connection_stat_reset", &["crst"]),
    ("connections", &["cons"]),
    ("dirs", &[]),
    ("dump", &[]),
    ("environment", &["env", "envi"]),
    ("initial_configuration", &["icfg"]),
    ("is_read_only", &["isro"]),
    ("last_snapshot", &["lsnp"]),
    ("monitor", &["mntr"]),
    ("ruok", &[]),
    ("server_stats", &["srvr"]),
    ("snapshot", &["snap"]),
    ("stat_reset", &["srst"]),
    ("stats", &["stat"]),
    ("watch_summary", &["wchs"]),
    ("watches", &["wchc"]),
    ("watches_by_path", &["wchp"]),
];

fn canonical(name: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .find(|(n, aliases)| *n == name || aliases.contains(&name))
        .map(|(n, _)| *n)
}

/// Starts serving each endpoint on this executor.
pub(super) fn spawn(shard: &Rc<Shard>, endpoints: Vec<Endpoint>) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    for ep in endpoints {
        // SAFETY: the descriptor is a bound, listening TCP socket that this call takes
        // over (into_raw_fd gives up the std listener's ownership).
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(ep.listener.into_raw_fd()) };
        let shard = shard.clone();
        let service = ep.service;
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        let shard = shard.clone();
                        glommio::spawn_local(serve(shard, service, stream)).detach();
                    }
                    Err(e) => {
                        tracing::warn!("{service:?} endpoint: accept failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .detach();
    }
}

async fn serve(shard: Rc<Shard>, service: Service, mut stream: glommio::net::TcpStream) {
    let response = match http::read_request(&mut stream, HEAD_DEADLINE).await {
        Err(HeadError::Closed) => return,
        Err(HeadError::Bad(status, why)) => Response::text(status, format!("{why}\n")),
        Ok(req) if req.method != "GET" && req.method != "HEAD" => {
            let mut r = Response::text(405, "only GET is served\n");
            r.headers.push(("Allow".into(), "GET, HEAD".into()));
            r
        }
        Ok(req) => {
            let peer = stream.peer_addr().ok();
            let r = match service {
                Service::Admin => admin(&shard, &req, peer).await,
                Service::Prometheus => metrics(&shard, &req).await,
            };
            if req.method == "HEAD" {
                let _ = http::write_response(&mut stream, &r, true).await;
                let _ = stream.close().await;
                return;
            }
            r
        }
    };
    let _ = http::write_response(&mut stream, &response, false).await;
    let _ = stream.close().await;
}

/// One scrape's figures, with this shard's latest latency published first (`mntr`,
/// `monitor`, `/metrics`).
pub(super) async fn report(shard: &Shard) -> Report {
    shard.publish_latency();
    let global_sessions = sessions(shard).await.len();
    let tree = shard.tree();
    Report::gather(Inputs {
        shared: &shard.shared,
        tree: &tree,
        global_sessions,
    })
}

async fn metrics(shard: &Shard, req: &Request) -> Response {
    if req.path != "/metrics" {
        return Response::text(404, "the Prometheus endpoint is /metrics\n");
    }
    let r = report(shard).await;
    Response::new(200, prometheus::CONTENT_TYPE, prometheus::render(&r))
}

/// Runs `f` on the executor's blocking pool.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

async fn admin(shard: &Shard, req: &Request, peer: Option<std::net::SocketAddr>) -> Response {
    let base = shard.shared.cfg.admin_command_url.as_str();
    let rest = match req.path.strip_prefix(base) {
        Some(r) if r.is_empty() || r == "/" => {
            // The index ZooKeeper's AdminServer serves: a link per command.
            let mut html = String::new();
            for (name, _) in COMMANDS {
                html.push_str(&format!("<a href=\"{base}/{name}\">{name}</a>\n<br/>\n"));
            }
            return Response::new(200, "text/html; charset=utf-8", html);
        }
        Some(r) if r.starts_with('/') => &r[1..],
        _ => {
            return Response::text(
                404,
                format!("the AdminServer's commands are under {base}/\n"),
            )
        }
    };
    let name = rest.trim_end_matches('/');
    let Some(command) = canonical(name) else {
        // ZooKeeper answers an unknown command with 200 and the error in the body.
        return json_response(
            200,
            json!({"command": name, "error": format!("Unknown command: {name}")}),
        );
    };
    if command == "snapshot" {
        return snapshot(shard, req, peer).await;
    }
    let mut body = match run(shard, command).await {
        Ok(m) => m,
        Err(e) => {
            let mut m = Map::new();
            m.insert("error".into(), Value::String(e));
            m.insert("command".into(), Value::String(command.into()));
            return json_response(500, Value::Object(m));
        }
    };
    body.insert("command".into(), Value::String(command.into()));
    body.insert("error".into(), Value::Null);
    json_response(200, Value::Object(body))
}

fn json_response(status: u16, v: Value) -> Response {
    let text = serde_json::to_string_pretty(&v).expect("JSON values serialize");
    Response::new(status, "application/json", text)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn figure_json(v: &figures::Value) -> Value {
    match v {
        figures::Value::Int(n) => json!(n),
        figures::Value::Float(f) => json!(f),
        figures::Value::Text(t) => json!(t),
    }
}

/// The connections as `cons` lists them; `full` adds what ZooKeeper shows for a
/// connection with a session.
fn connections(shard: &Shard, full: bool) -> Vec<Value> {
    let conns = shard.shared.conns.lock().expect("conns poisoned");
    conns
        .values()
        .map(|c| {
            let mut m = obj(json!({
                "remote_socket_address": c.peer.to_string(),
                "interest_ops": 1,
                "outstanding_requests": c.queued.load(Relaxed),
                "packets_received": c.received.load(Relaxed),
                "packets_sent": c.sent.load(Relaxed),
            }));
            let sid = c.session_id.load(Relaxed);
            if full && sid != 0 {
                let n = c.lat_count.load(Relaxed);
                let min = c.lat_min_us.load(Relaxed);
                let extra = json!({
                    "session_id": sid,
                    "last_operation": op_name(c.last_op.load(Relaxed)),
                    "established": c.established.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                    "session_timeout": c.timeout_ms.load(Relaxed),
                    "last_cxid": c.last_cxid.load(Relaxed),
                    "last_zxid": c.last_zxid.load(Relaxed),
                    "last_response_time": c.last_response_ms.load(Relaxed),
                    "last_latency": c.last_latency_us.load(Relaxed) / 1000,
                    "min_latency": if min == u64::MAX { 0 } else { min / 1000 },
                    "avg_latency": c.lat_sum_us.load(Relaxed).checked_div(n).unwrap_or(0) / 1000,
                    "max_latency": c.lat_max_us.load(Relaxed) / 1000,
                });
                m.extend(obj(extra));
            }
            Value::Object(m)
        })
        .collect()
}

async fn server_stats(shard: &Shard) -> Map<String, Value> {
    let shared = &shard.shared;
    let t = shared.request_totals();
    let cfg = shared.cfg.clone();
    let (data, log) =
        blocking(move || (dir_size(&cfg.snapshot_dir()), dir_size(&cfg.log_dir()))).await;
    let tree = shard.tree();
    // ringkeeper does not measure response buffer sizes: ZooKeeper's "none yet" (-1).
    let buffers = json!({"last_buffer_size": -1, "min_buffer_size": -1, "max_buffer_size": -1});
    obj(json!({
        "version": super::fourlw::version(),
        "read_only": shared.mode() == ServerMode::ReadOnly,
        "server_stats": {
            "packets_sent": t.sent,
            "packets_received": t.received,
            "fsync_threshold_exceed_count": shared.log_stats.slow_syncs.load(Relaxed),
            "client_response_stats": buffers,
            "data_dir_size": data,
            "log_dir_size": log,
            "server_state": shared.mode().name(),
            "last_processed_zxid": tree.last_zxid(),
            "outstanding_requests": t.outstanding,
            "avg_latency": t.avg_latency_ms(),
            "max_latency": t.lat_max_us / 1000,
            "min_latency": t.lat_min_us / 1000,
            "num_alive_client_connections": shared.connection_count(),
            "auth_failed_count": shared.auth_failed.load(Relaxed),
            "non_mtlsremote_conn_count": 0,
            "non_mtlslocal_conn_count": 0,
            "provider_null": !shared.cfg.prometheus_enabled,
            "uptime": shared.started.elapsed().as_millis() as u64,
        },
        "client_response": buffers,
        "node_count": tree.reported_node_count(),
    }))
}

/// The data watches, as ZooKeeper's data watch manager lists them: session -> paths.
fn data_watches(shard: &Shard) -> Vec<(i64, String)> {
    let mut all = Vec::new();
    for w in &shard.shared.watch_tables {
        let w = w.lock().expect("watch table poisoned");
        all.extend(
            w.zookeeper_view(WatchSide::Data)
                .map(|(sid, p)| (sid, p.to_string())),
        );
    }
    all.sort();
    all.dedup();
    all
}

async fn run(shard: &Shard, command: &str) -> Result<Map<String, Value>, String> {
    let shared = &shard.shared;
    let cfg = &shared.cfg;
    Ok(match command {
        "ruok" => Map::new(),
        "is_read_only" => obj(json!({"read_only": shared.mode() == ServerMode::ReadOnly})),
        "server_stats" => server_stats(shard).await,
        "stats" => {
            let mut m = server_stats(shard).await;
            m.insert(
                "connections".into(),
                Value::Array(connections(shard, false)),
            );
            m.insert("secure_connections".into(), Value::Array(Vec::new()));
            m
        }
        "connections" => obj(json!({
            "connections": connections(shard, true),
            "secure_connections": [],
        })),
        "configuration" => {
            let c = cfg.clone();
            let (data_dir, log_dir) = (c.snapshot_dir(), c.log_dir());
            obj(json!({
                "client_port": c.client_port,
                "data_dir": data_dir.display().to_string(),
                "data_log_dir": log_dir.display().to_string(),
                "tick_time": c.tick_time_ms,
                "max_client_cnxns": c.max_client_cnxns,
                "min_session_timeout": c.min_session_timeout_ms(),
                "max_session_timeout": c.max_session_timeout_ms(),
                "server_id": shared.my_id(),
                "client_port_listen_backlog": crate::listen::LISTEN_BACKLOG,
            }))
        }
        "environment" => {
            let mut m = Map::new();
            for (k, v) in environment(cfg.shards) {
                m.insert(k.into(), Value::String(v));
            }
            m
        }
        "initial_configuration" => {
            let source = cfg.source.clone();
            let from_file = std::path::Path::new(&source).is_file();
            let text = if from_file {
                blocking(move || std::fs::read_to_string(&source))
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", cfg.source))?
            } else {
                // The embedded default: there is no file to show.
                String::new()
            };
            obj(json!({"initial_configuration": text}))
        }
        "dirs" => {
            let c = cfg.clone();
            let (data, log) =
                blocking(move || (dir_size(&c.snapshot_dir()), dir_size(&c.log_dir()))).await;
            obj(json!({"datadir_size": data, "logdir_size": log}))
        }
        "monitor" => {
            let r = report(shard).await;
            let mut m = Map::new();
            for (k, v) in r.flat() {
                m.insert(k, figure_json(&v));
            }
            m
        }
        "watch_summary" => {
            let w = data_watches(shard);
            let sessions: std::collections::BTreeSet<i64> = w.iter().map(|(s, _)| *s).collect();
            let paths: std::collections::BTreeSet<&str> =
                w.iter().map(|(_, p)| p.as_str()).collect();
            obj(json!({
                "num_connections": sessions.len(),
                "num_paths": paths.len(),
                "num_total_watches": w.len(),
            }))
        }
        "watches" => {
            let mut by_session: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
            // Every session with a connection shows, watching something or not.
            for c in shared.conns.lock().expect("conns poisoned").values() {
                let sid = c.session_id.load(Relaxed);
                if sid != 0 {
                    by_session.entry(sid).or_default();
                }
            }
            for (sid, p) in data_watches(shard) {
                by_session.entry(sid).or_default().push(p);
            }
            let m: Map<String, Value> = by_session
                .into_iter()
                .map(|(sid, paths)| (sid.to_string(), json!(paths)))
                .collect();
            obj(json!({"session_id_to_watched_paths": m}))
        }
        "watches_by_path" => {
            let mut by_path: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
            for (sid, p) in data_watches(shard) {
                by_path.entry(p).or_default().push(sid);
            }
            obj(json!({"path_to_session_ids": by_path}))
        }
        "dump" => {
            let sessions = sessions(shard).await;
            let mut expiry: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
            for s in &sessions {
                expiry
                    .entry(s.expires_at_wall_ms.to_string())
                    .or_default()
                    .push(s.session_id);
            }
            let mut eph = Map::new();
            for (sid, paths) in shard.tree().all_ephemerals() {
                eph.insert(sid.to_string(), json!(paths));
            }
            obj(json!({
                "expiry_time_to_session_ids": expiry,
                "session_id_to_ephemeral_paths": eph,
            }))
        }
        // The newest snapshot written, or the one recovery started from; ZooKeeper
        // shows zxid 0 when there is none.
        "last_snapshot" => match shared.snapshot_stats.last() {
            Some(s) => obj(json!({"zxid": format!("{:x}", s.zxid), "timestamp": s.unix_s})),
            None => obj(json!({"zxid": "0", "timestamp": shared.started_unix_s()})),
        },
        "connection_stat_reset" => {
            for c in shared.conns.lock().expect("conns poisoned").values() {
                c.reset_stats();
            }
            Map::new()
        }
        "stat_reset" => {
            shared.reset_request_stats();
            Map::new()
        }
        other => return Err(format!("{other} has no handler")),
    })
}

/// `snapshot`: takes a snapshot now and answers once it is on disk, with its zxid;
/// `?streaming=true` (ZooKeeper 3.9's default) sends the file itself. It needs the
/// ALL permission on the root znode (ZooKeeper 3.9's rule), from the client's IP or
/// from the digest credentials in an `Authorization: digest user:password` header,
/// and runs at most once per `admin.rateLimiterIntervalInMS`.
async fn snapshot(shard: &Shard, req: &Request, peer: Option<std::net::SocketAddr>) -> Response {
    let shared = &shard.shared;
    let cfg = &shared.cfg;
    let fail = |status: u16, why: String| {
        json_response(status, json!({"command": "snapshot", "error": why}))
    };
    if !cfg.admin_snapshot_enabled {
        return fail(
            403,
            "the snapshot command is disabled (admin.snapshot.enabled=false)".into(),
        );
    }
    let mut ids = Vec::new();
    if let Some(p) = peer {
        ids.push(crate::proto::Id::new("ip", &p.ip().to_string()));
    }
    if let Some(auth) = req.header("authorization") {
        let Some((scheme, cred)) = auth.split_once(' ') else {
            return fail(
                401,
                "the Authorization header must be '<scheme> <credentials>'".into(),
            );
        };
        match super::reads::authenticate(
            scheme.trim(),
            cred.trim().as_bytes(),
            cfg.super_digest.as_deref(),
        ) {
            Ok(more) => ids.extend(more),
            Err(_) => {
                shared.auth_failed.fetch_add(1, Relaxed);
                return fail(401, format!("authentication with scheme {scheme} failed"));
            }
        }
    }
    let tree = shard.tree();
    let root_acl = tree.node("/").map(|n| n.acl().clone()).unwrap_or_default();
    let all = [
        perms::READ,
        perms::WRITE,
        perms::CREATE,
        perms::DELETE,
        perms::ADMIN,
    ];
    if !all.iter().all(|p| acl::allows(&root_acl, *p, &ids)) {
        return fail(
            403,
            "the snapshot command needs the ALL permission on /".into(),
        );
    }
    if !shared.admin_rate_limit_allows(cfg.admin_rate_limiter_interval_ms) {
        return fail(
            429,
            format!(
                "a snapshot was taken less than admin.rateLimiterIntervalInMS ({} ms) ago",
                cfg.admin_rate_limiter_interval_ms
            ),
        );
    }
    let before = shared.snapshot_stats.count.load(Relaxed);
    crate::broadcast::SNAPSHOT_REQUESTED.store(true, std::sync::atomic::Ordering::Release);
    let started = Instant::now();
    let written = loop {
        if shared.snapshot_stats.count.load(Relaxed) > before {
            break shared.snapshot_stats.last();
        }
        if started.elapsed() > SNAPSHOT_WAIT {
            break None;
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    };
    let Some(s) = written else {
        return fail(
            503,
            format!(
                "no snapshot was written within {} s (see the server log)",
                SNAPSHOT_WAIT.as_secs()
            ),
        );
    };
    let streaming = req.query("streaming") != Some("false");
    if !streaming {
        return json_response(
            200,
            json!({
                "last_zxid": format!("0x{:x}", s.zxid),
                "file": s.path.display().to_string(),
                "bytes": s.bytes,
                "took_ms": s.took_ms,
                "command": "snapshot",
                "error": null,
            }),
        );
    }
    let path = s.path.clone();
    match blocking(move || std::fs::read(path)).await {
        Ok(bytes) => {
            let mut r = Response::new(200, "application/octet-stream", bytes);
            r.headers
                .push(("last_zxid".into(), format!("0x{:x}", s.zxid)));
            r.headers.push((
                "Content-Disposition".into(),
                format!(
                    "attachment; filename=\"{}\"",
                    s.path
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ),
            ));
            r
        }
        Err(e) => fail(500, format!("cannot read {}: {e}", s.path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_and_their_short_forms() {
        assert_eq!(canonical("mntr"), Some("monitor"));
        assert_eq!(canonical("monitor"), Some("monitor"));
        assert_eq!(canonical("stat"), Some("stats"));
        assert_eq!(canonical("srvr"), Some("server_stats"));
        assert_eq!(canonical("wchc"), Some("watches"));
        assert_eq!(canonical("nope"), None);
    }
}
