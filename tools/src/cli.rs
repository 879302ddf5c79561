//! `ringkeeper-cli`'s commands: zkCli's (ZooKeeper 3.8's `ZooKeeperMain`) command set,
//! flags and output, run over [`crate::zkclient::Client`] against any server that
//! speaks ZooKeeper's protocol. Text output is zkCli's, line for line (what zkCli
//! prints on stderr, `Created /x` and the errors, goes to stderr here too); `--json`
//! prints one JSON object per command instead.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use ringkeeper::proto::{
    Acl, CreateKind, CreateRequest, ErrorCode, Id, OpCode, Request, Response, Stat, WatcherEvent,
};
use serde_json::{json, Value};

use crate::zkclient::{CallError, Client, OnEvent};

/// A command's result: what goes to stdout and to stderr, and whether it failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub out: String,
    pub err: String,
    pub failed: bool,
}

impl Output {
    fn fail(msg: impl Into<String>) -> Output {
        Output {
            err: msg.into() + "\n",
            failed: true,
            ..Output::default()
        }
    }
}

/// The commands, with zkCli's usage strings.
pub const COMMANDS: &[(&str, &str)] = &[
    ("addauth", "scheme auth"),
    ("addWatch", "[-m mode] path # optional mode is one of [PERSISTENT, PERSISTENT_RECURSIVE] - default is PERSISTENT_RECURSIVE"),
    ("close", ""),
    ("config", "[-c] [-w] [-s]"),
    ("connect", "host:port"),
    ("create", "[-s] [-e] [-c] [-t ttl] path [data] [acl]"),
    ("delete", "[-v version] path"),
    ("deleteall", "path [-b batch size]"),
    ("delquota", "[-n|-b|-N|-B] path"),
    ("get", "[-s] [-w] path"),
    ("getAcl", "[-s] path"),
    ("getAllChildrenNumber", "path"),
    ("getEphemerals", "path"),
    ("history", ""),
    ("listquota", "path"),
    ("ls", "[-s] [-w] [-R] path"),
    ("printwatches", "on|off"),
    ("quit", ""),
    ("redo", "cmdno"),
    ("removewatches", "path [-c|-d|-a] [-l]"),
    ("set", "[-s] [-v version] path data"),
    ("setAcl", "[-s] [-v version] [-R] path acl"),
    ("setquota", "-n|-b|-N|-B val path"),
    ("stat", "[-w] path"),
    ("sync", "path"),
    ("version", ""),
    ("whoami", ""),
];

pub fn usage() -> String {
    let mut s = String::from(
        "ZooKeeper -server host:port -client-configuration properties-file cmd args\n",
    );
    for (c, u) in COMMANDS {
        let _ = writeln!(s, "\t{c} {u}");
    }
    s
}

/// Splits a command line as zkCli does: on spaces, with "double" or 'single' quoted
/// arguments kept whole.
pub fn split_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            for x in chars.by_ref() {
                if x == c {
                    break;
                }
                word.push(x);
            }
        } else {
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() {
                    break;
                }
                word.push(x);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

/// A command's flags (`-x`, or `-x value` for those that take one) and its other
/// arguments, the command name first.
struct Parsed {
    args: Vec<String>,
    flags: Vec<(char, Option<String>)>,
}

impl Parsed {
    fn parse(words: &[String], with_value: &str) -> Result<Parsed, String> {
        let mut p = Parsed {
            args: Vec::new(),
            flags: Vec::new(),
        };
        let mut i = 0;
        while i < words.len() {
            let w = &words[i];
            let mut cs = w.chars();
            if i > 0 && w.len() == 2 && cs.next() == Some('-') {
                let f = cs.next().expect("two chars");
                if with_value.contains(f) {
                    let v = words
                        .get(i + 1)
                        .ok_or_else(|| format!("Missing argument for option: {f}"))?;
                    p.flags.push((f, Some(v.clone())));
                    i += 2;
                    continue;
                }
                p.flags.push((f, None));
            } else {
                p.args.push(w.clone());
            }
            i += 1;
        }
        Ok(p)
    }

    fn has(&self, f: char) -> bool {
        self.flags.iter().any(|(c, _)| *c == f)
    }

    fn value(&self, f: char) -> Option<&str> {
        self.flags
            .iter()
            .find(|(c, _)| *c == f)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Where ZooKeeper keeps quotas, and the two nodes of one.
const QUOTA_ROOT: &str = "/zookeeper/quota";
const LIMITS: &str = "zookeeper_limits";
const STATS: &str = "zookeeper_stats";

/// ZooKeeper's StatsTrack as zkCli handles it: the keys the text holds, each a number
/// (an empty value is -1), written back `count=..,bytes=..` first and then, after an
/// extra `=` that old parsers skip, the other keys in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct StatsTrack {
    keys: std::collections::BTreeMap<String, i64>,
}

impl StatsTrack {
    fn parse(data: &[u8]) -> StatsTrack {
        let mut t = StatsTrack::default();
        for pair in String::from_utf8_lossy(data).split([',', ';']) {
            let mut kv = pair.split('=').filter(|s| !s.is_empty());
            let (Some(k), v) = (kv.next(), kv.next()) else {
                continue;
            };
            t.keys
                .insert(k.to_string(), v.and_then(|v| v.parse().ok()).unwrap_or(-1));
        }
        t
    }

    /// What setquota starts from: every limit there, none set.
    fn with_all_limits() -> StatsTrack {
        let mut t = StatsTrack::default();
        for k in ["count", "bytes", "countHardLimit", "byteHardLimit"] {
            t.set(k, -1);
        }
        t
    }

    fn get(&self, key: &str) -> i64 {
        self.keys.get(key).copied().unwrap_or(-1)
    }

    fn set(&mut self, key: &str, v: i64) {
        self.keys.insert(key.to_string(), v);
    }

    fn text(&self) -> String {
        let mut s = format!("count={},bytes={}", self.get("count"), self.get("bytes"));
        let rest: Vec<_> = self
            .keys
            .iter()
            .filter(|(k, _)| *k != "count" && *k != "bytes")
            .collect();
        if !rest.is_empty() {
            s.push('=');
            for (k, v) in rest {
                let _ = write!(s, ";{k}={v}");
            }
        }
        s
    }
}

/// PathUtils.validatePath's checks and messages.
pub fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("Path length must be > 0".into());
    }
    if !path.starts_with('/') {
        return Err("Path must start with / character".into());
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err("Path must not end with / character".into());
    }
    let invalid =
        |reason: String| Err(format!("Invalid path string \"{path}\" caused by {reason}"));
    let chars: Vec<char> = path.chars().collect();
    for i in 1..chars.len() {
        let (c, last) = (chars[i], chars[i - 1]);
        if c == '\0' {
            return invalid(format!("null character not allowed @{i}"));
        } else if c == '/' && last == '/' {
            return invalid(format!("empty node name specified @{i}"));
        } else if c == '.' && last == '.' {
            if chars[i - 2] == '/' && (i + 1 == chars.len() || chars[i + 1] == '/') {
                return invalid(format!("relative paths not allowed @{i}"));
            }
        } else if c == '.' {
            if chars[i - 1] == '/' && (i + 1 == chars.len() || chars[i + 1] == '/') {
                return invalid(format!("relative paths not allowed @{i}"));
            }
        } else if ('\u{1}'..='\u{1f}').contains(&c)
            || ('\u{7f}'..='\u{9f}').contains(&c)
            || ('\u{e000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c)
        {
            return invalid(format!("invalid character @{i}"));
        }
    }
    Ok(())
}

/// CliWrapperException's message for an error code on `path`.
pub fn error_message(code: i32, path: &str) -> String {
    use ErrorCode::*;
    match ErrorCode::from_i32(code) {
        Some(NoNode) => format!("Node does not exist: {path}"),
        Some(NoChildrenForEphemerals) => format!("Ephemerals cannot have children: {path}"),
        Some(NodeExists) => format!("Node already exists: {path}"),
        Some(NotEmpty) => format!("Node not empty: {path}"),
        Some(NotReadOnly) => format!("Not a read-only call: {path}"),
        Some(InvalidAcl) => format!("Acl is not valid : {path}"),
        Some(NoAuth) => format!("Insufficient permission : {path}"),
        Some(BadArguments) => format!("Arguments are not valid : {path}"),
        Some(BadVersion) => format!("version No is not valid : {path}"),
        Some(QuotaExceeded) => format!("Quota has exceeded : {path}"),
        other => format!(
            "KeeperErrorCode = {} for {path}",
            other.map_or_else(|| format!("{code}"), |c| code_message(c).to_string())
        ),
    }
}

/// KeeperException.getCodeMessage.
fn code_message(c: ErrorCode) -> &'static str {
    use ErrorCode::*;
    match c {
        Ok => "ok",
        SystemError => "SystemError",
        RuntimeInconsistency => "RuntimeInconsistency",
        DataInconsistency => "DataInconsistency",
        ConnectionLoss => "ConnectionLoss",
        MarshallingError => "MarshallingError",
        Unimplemented => "Unimplemented",
        OperationTimeout => "OperationTimeout",
        BadArguments => "BadArguments",
        UnknownSession => "Unknown session",
        NewConfigNoQuorum => "NewConfigNoQuorum",
        ReconfigInProgress => "ReconfigInProgress",
        ApiError => "APIError",
        NoNode => "NoNode",
        NoAuth => "NoAuth",
        BadVersion => "BadVersion",
        NoChildrenForEphemerals => "NoChildrenForEphemerals",
        NodeExists => "NodeExists",
        NotEmpty => "Directory not empty",
        SessionExpired => "Session expired",
        InvalidCallback => "Invalid callback",
        InvalidAcl => "InvalidACL",
        AuthFailed => "AuthFailed",
        SessionMoved => "Session moved",
        NotReadOnly => "Not a read-only call",
        EphemeralOnLocalSession => "Ephemeral node on local session",
        NoWatcher => "No such watcher",
        RequestTimeout => "Request timeout",
        ReconfigDisabled => "Reconfig is disabled",
        SessionClosedRequireSaslAuth => "Session closed because client failed to authenticate",
        QuotaExceeded => "Quota has exceeded",
        ThrottledOp => "Op throttled due to high load",
    }
}

/// ZKUtil.getPermString.
pub fn perm_string(p: i32) -> String {
    [(4, 'c'), (8, 'd'), (1, 'r'), (2, 'w'), (16, 'a')]
        .iter()
        .filter(|(bit, _)| p & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// AclParser.parse: `scheme:id:perms,...` (the id may hold colons); malformed entries
/// are reported and skipped, as zkCli does.
pub fn parse_acl(s: &str, err: &mut String) -> Vec<Acl> {
    let mut out = Vec::new();
    for a in s.split(',') {
        let (Some(first), Some(last)) = (a.find(':'), a.rfind(':')) else {
            let _ = writeln!(err, "{a} does not have the form scheme:id:perm");
            continue;
        };
        if first == last {
            let _ = writeln!(err, "{a} does not have the form scheme:id:perm");
            continue;
        }
        let mut perms = 0;
        for c in a[last + 1..].chars() {
            perms |= match c.to_ascii_lowercase() {
                'r' => 1,
                'w' => 2,
                'c' => 4,
                'd' => 8,
                'a' => 16,
                _ => {
                    let _ = writeln!(err, "Unknown perm type: {c}");
                    0
                }
            };
        }
        out.push(Acl {
            perms,
            id: Id {
                scheme: a[..first].to_string(),
                id: a[first + 1..last].to_string(),
            },
        });
    }
    out
}

/// `new Date(ms).toString()` in the local time zone: `Wed Dec 02 01:55:32 UTC 2026`.
pub fn java_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return ms.to_string();
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            c"%a %b %d %H:%M:%S %Z %Y".as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// What `get` prints: the data as UTF-8 ("null" for none), then the Stat if asked
/// for; and the data as shown.
fn data_text(data: &Option<Bytes>, stat: &Stat, with_stat: bool) -> (String, String) {
    let shown = data.as_ref().map_or("null".to_string(), |d| {
        String::from_utf8_lossy(d).into_owned()
    });
    let mut text = format!("{shown}\n");
    if with_stat {
        text.push_str(&stat_text(stat));
    }
    (text, shown)
}

/// StatPrinter.
pub fn stat_text(s: &Stat) -> String {
    format!(
        "cZxid = 0x{:x}\nctime = {}\nmZxid = 0x{:x}\nmtime = {}\npZxid = 0x{:x}\ncversion = {}\ndataVersion = {}\naclVersion = {}\nephemeralOwner = 0x{:x}\ndataLength = {}\nnumChildren = {}\n",
        s.czxid,
        java_date(s.ctime),
        s.mzxid,
        java_date(s.mtime),
        s.pzxid,
        s.cversion,
        s.version,
        s.aversion,
        s.ephemeral_owner,
        s.data_length,
        s.num_children
    )
}

pub fn stat_json(s: &Stat) -> Value {
    json!({
        "czxid": s.czxid, "mzxid": s.mzxid, "pzxid": s.pzxid, "ctime": s.ctime,
        "mtime": s.mtime, "version": s.version, "cversion": s.cversion,
        "aversion": s.aversion, "ephemeralOwner": s.ephemeral_owner,
        "dataLength": s.data_length, "numChildren": s.num_children,
    })
}

fn state_name(s: i32) -> &'static str {
    match s {
        0 => "Disconnected",
        3 => "SyncConnected",
        4 => "AuthFailed",
        5 => "ConnectedReadOnly",
        6 => "SaslAuthenticated",
        7 => "Closed",
        -112 => "Expired",
        _ => "Unknown",
    }
}

fn event_name(t: i32) -> &'static str {
    match t {
        -1 => "None",
        1 => "NodeCreated",
        2 => "NodeDeleted",
        3 => "NodeDataChanged",
        4 => "NodeChildrenChanged",
        5 => "DataWatchRemoved",
        6 => "ChildWatchRemoved",
        7 => "PersistentWatchRemoved",
        _ => "Unknown",
    }
}

/// A watch event as zkCli prints it (WATCHER::, then WatchedEvent's toString).
pub fn event_text(e: &WatcherEvent) -> String {
    format!(
        "\nWATCHER::\n\nWatchedEvent state:{} type:{} path:{}\n",
        state_name(e.state),
        event_name(e.event_type),
        e.path
    )
}

pub fn event_json(e: &WatcherEvent) -> Value {
    json!({"event": {"state": state_name(e.state), "type": event_name(e.event_type), "path": e.path}})
}

/// One shell: its connection, its history, its output mode.
pub struct Shell {
    pub servers: String,
    pub json: bool,
    pub client: Option<Client>,
    pub history: Vec<String>,
    /// Whether watch events are printed (`printwatches on|off`); shared with the
    /// event printer, which runs on the client's reader thread.
    pub print_watches: Arc<std::sync::atomic::AtomicBool>,
    on_event: OnEvent,
}

enum Failure {
    /// A ZooKeeper error on a path.
    Code(i32, String),
    /// A message as it is (a bad argument, a lost connection).
    Message(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Message(s)
    }
}

type Done = Result<(String, Value), Failure>;

impl Shell {
    pub fn new(
        servers: &str,
        json: bool,
        on_event: OnEvent,
        print_watches: Arc<std::sync::atomic::AtomicBool>,
    ) -> Shell {
        Shell {
            servers: servers.to_string(),
            json,
            client: None,
            history: Vec::new(),
            print_watches,
            on_event,
        }
    }

    pub fn connect(&mut self, servers: &str) -> Result<(), String> {
        if let Some(c) = self.client.take() {
            c.close();
        }
        self.servers = servers.to_string();
        let c =
            Client::connect(servers, 30_000, self.on_event.clone()).map_err(|e| e.to_string())?;
        self.client = Some(c);
        Ok(())
    }

    pub fn connected(&self) -> bool {
        self.client.as_ref().is_some_and(Client::is_alive)
    }

    /// The prompt zkCli shows.
    pub fn prompt(&self) -> String {
        let state = if self.connected() {
            "CONNECTED"
        } else {
            "CLOSED"
        };
        format!("[zk: {}({state}) {}] ", self.servers, self.history.len())
    }

    /// Runs one command line (a blank line does nothing) and says what it printed.
    pub fn run_line(&mut self, line: &str) -> Output {
        let words = split_line(line);
        if words.is_empty() {
            return Output::default();
        }
        self.history.push(line.trim().to_string());
        self.run_words(&words)
    }

    fn run_words(&mut self, words: &[String]) -> Output {
        let cmd = words[0].as_str();
        match cmd {
            "history" => {
                let n = self.history.len() as i64 - 1;
                let mut out = String::new();
                for i in (n - 10).max(0)..=n {
                    let _ = writeln!(out, "{i} - {}", self.history[i as usize]);
                }
                return Output {
                    out,
                    ..Output::default()
                };
            }
            "redo" => {
                let Some(i) = words.get(1).and_then(|w| w.parse::<usize>().ok()) else {
                    return Output::fail("Command index out of range");
                };
                if i + 1 >= self.history.len() {
                    return Output::fail("Command index out of range");
                }
                let line = self.history[i].clone();
                let again = split_line(&line);
                if again.first().map(String::as_str) == Some("redo") {
                    return Output::fail("No redoing redos");
                }
                *self.history.last_mut().expect("this redo") = line;
                return self.run_words(&again);
            }
            "printwatches" => {
                if let Some(v) = words.get(1) {
                    self.print_watches
                        .store(v == "on", std::sync::atomic::Ordering::Relaxed);
                    return Output::default();
                }
                return Output {
                    out: format!(
                        "printwatches is {}\n",
                        if self
                            .print_watches
                            .load(std::sync::atomic::Ordering::Relaxed)
                        {
                            "on"
                        } else {
                            "off"
                        }
                    ),
                    ..Output::default()
                };
            }
            "connect" => {
                let to = words
                    .get(1)
                    .cloned()
                    .unwrap_or_else(|| self.servers.clone());
                return match self.connect(&to) {
                    Ok(()) => Output::default(),
                    Err(e) => Output::fail(e),
                };
            }
            "close" => {
                if let Some(c) = self.client.take() {
                    c.close();
                }
                return Output::default();
            }
            "version" => {
                return Output {
                    out: format!(
                        "ZooKeeper CLI version: ringkeeper-cli {}\n",
                        env!("CARGO_PKG_VERSION")
                    ),
                    ..Output::default()
                };
            }
            _ => {}
        }
        if !COMMANDS.iter().any(|(c, _)| *c == cmd) {
            return Output {
                err: format!("{}Command not found: Command not found {cmd}\n", usage()),
                failed: true,
                ..Output::default()
            };
        }
        if !self.connected() {
            return Output {
                out: "Not connected\n".into(),
                failed: true,
                ..Output::default()
            };
        }
        let mut err = String::new();
        let r = self.exec(cmd, words, &mut err);
        match r {
            Ok((text, value)) => Output {
                out: if self.json {
                    if value.is_null() {
                        String::new()
                    } else {
                        format!("{value}\n")
                    }
                } else {
                    text
                },
                err: if self.json { String::new() } else { err },
                failed: false,
            },
            Err(f) => {
                let (code, msg) = match f {
                    Failure::Code(code, path) => (Some(code), error_message(code, &path)),
                    Failure::Message(m) => (None, m),
                };
                if self.json {
                    Output {
                        out: format!("{}\n", json!({"error": msg, "code": code})),
                        failed: true,
                        ..Output::default()
                    }
                } else {
                    Output {
                        err: format!("{err}{msg}\n"),
                        failed: true,
                        ..Output::default()
                    }
                }
            }
        }
    }

    fn call(&self, op: OpCode, req: Request, path: &str) -> Result<Response, Failure> {
        let c = self.client.as_ref().expect("connected");
        c.call(op, &req).map_err(|e| match e {
            CallError::Code(code) => Failure::Code(code, path.to_string()),
            CallError::Io(e) => {
                Failure::Message(format!("KeeperErrorCode = ConnectionLoss for {path} ({e})"))
            }
        })
    }

    fn path_arg(p: &Parsed, usage: &str) -> Result<String, Failure> {
        let path = p
            .args
            .get(1)
            .ok_or_else(|| Failure::Message(format!("{} {usage}", p.args[0])))?;
        validate_path(path).map_err(Failure::Message)?;
        Ok(path.clone())
    }

    fn version_flag(p: &Parsed) -> Result<i32, Failure> {
        p.value('v').map_or(Ok(-1), |v| {
            v.parse()
                .map_err(|_| Failure::Message(format!("For input string: \"{v}\"")))
        })
    }

    /// `path` and every path under it, depth first, children in name order (zkCli's
    /// `ls -R` visits depth first in the server's order, which differs between
    /// servers; deleting in the reverse of this order deletes children first).
    fn subtree(&self, path: &str) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        let mut stack = vec![path.to_string()];
        while let Some(p) = stack.pop() {
            let Response::Children(mut kids) = self.call(
                OpCode::GetChildren,
                Request::GetChildren {
                    path: p.clone(),
                    watch: false,
                },
                &p,
            )?
            else {
                return Err(Failure::Message("unexpected reply".into()));
            };
            kids.sort();
            for k in kids.iter().rev() {
                stack.push(if p == "/" {
                    format!("/{k}")
                } else {
                    format!("{p}/{k}")
                });
            }
            out.push(p);
        }
        Ok(out)
    }

    fn exec(&self, cmd: &str, words: &[String], err: &mut String) -> Done {
        let usage = COMMANDS
            .iter()
            .find(|(c, _)| *c == cmd)
            .map_or("", |(_, u)| u);
        let with_value = match cmd {
            "setquota" => "nbNB",
            "delquota" => "",
            _ => "vtbm",
        };
        let p = Parsed::parse(words, with_value).map_err(Failure::Message)?;
        match cmd {
            "setquota" => self.set_quota(&p, usage, err),
            "listquota" => self.list_quota(&p, usage, err),
            "delquota" => self.del_quota(&p, usage, err),
            "ls" => {
                let path = Self::path_arg(&p, usage)?;
                let watch = p.has('w');
                if p.has('R') {
                    let all = self.subtree(&path)?;
                    let mut text = String::new();
                    for q in &all {
                        let _ = writeln!(text, "{q}");
                    }
                    return Ok((text, json!({"path": path, "subtree": all})));
                }
                let (mut children, stat) = if p.has('s') {
                    match self.call(
                        OpCode::GetChildren2,
                        Request::GetChildren2 {
                            path: path.clone(),
                            watch,
                        },
                        &path,
                    )? {
                        Response::Children2 { children, stat } => (children, Some(stat)),
                        _ => return Err(Failure::Message("unexpected reply".into())),
                    }
                } else {
                    match self.call(
                        OpCode::GetChildren,
                        Request::GetChildren {
                            path: path.clone(),
                            watch,
                        },
                        &path,
                    )? {
                        Response::Children(c) => (c, None),
                        _ => return Err(Failure::Message("unexpected reply".into())),
                    }
                };
                children.sort();
                let mut text = format!("[{}]\n", children.join(", "));
                if let Some(s) = &stat {
                    text.push_str(&stat_text(s));
                }
                Ok((
                    text,
                    json!({"path": path, "children": children, "stat": stat.as_ref().map(stat_json)}),
                ))
            }
            "get" => {
                let path = Self::path_arg(&p, usage)?;
                let (data, stat) = self.get_data(&path, p.has('w'))?;
                let (text, shown) = data_text(&data, &stat, p.has('s'));
                let stat_v = p.has('s').then(|| stat_json(&stat));
                Ok((
                    text,
                    json!({"path": path, "data": data.is_some().then_some(shown), "stat": stat_v}),
                ))
            }
            "stat" => {
                let path = Self::path_arg(&p, usage)?;
                match self.call(
                    OpCode::Exists,
                    Request::Exists {
                        path: path.clone(),
                        watch: p.has('w'),
                    },
                    &path,
                ) {
                    Ok(Response::Stat(s)) => {
                        Ok((stat_text(&s), json!({"path": path, "stat": stat_json(&s)})))
                    }
                    Err(Failure::Code(c, _)) if c == ErrorCode::NoNode.code() => {
                        Err(Failure::Code(c, path))
                    }
                    Err(e) => Err(e),
                    Ok(_) => Err(Failure::Message("unexpected reply".into())),
                }
            }
            "create" => {
                let path = Self::path_arg(&p, usage)?;
                let (e, s, c) = (p.has('e'), p.has('s'), p.has('c'));
                let ttl = p
                    .value('t')
                    .map(|t| {
                        t.parse::<i64>().map_err(|_| {
                            Failure::Message("-t argument must be a long value".into())
                        })
                    })
                    .transpose()?;
                if c && (e || s) {
                    return Err(Failure::Message(
                        "-c cannot be combined with -s or -e. Containers cannot be ephemeral or sequential.".into(),
                    ));
                }
                if ttl.is_some() && e {
                    return Err(Failure::Message(
                        "TTLs cannot be used with Ephemeral znodes".into(),
                    ));
                }
                if ttl.is_some() && c {
                    return Err(Failure::Message(
                        "TTLs cannot be used with Container znodes".into(),
                    ));
                }
                let flags = match (e, s, c, ttl.is_some()) {
                    (true, true, _, _) => 3,
                    (true, false, _, _) => 1,
                    (false, true, _, true) => 6,
                    (false, true, _, false) => 2,
                    (_, _, true, _) => 4,
                    (_, _, _, true) => 5,
                    _ => 0,
                };
                let data = p.args.get(2).map(|d| Bytes::from(d.clone().into_bytes()));
                let acl = match p.args.get(3) {
                    Some(a) => parse_acl(a, err),
                    None => ringkeeper::tree::acl::open_acl_unsafe(),
                };
                let kind = if ttl.is_some() {
                    CreateKind::Ttl
                } else if c {
                    CreateKind::Container
                } else {
                    CreateKind::Create
                };
                let req = Request::Create(CreateRequest {
                    kind,
                    path: path.clone(),
                    data,
                    acl,
                    flags,
                    ttl_ms: ttl.unwrap_or(-1),
                });
                let op = match kind {
                    CreateKind::Ttl => OpCode::CreateTtl,
                    CreateKind::Container => OpCode::CreateContainer,
                    _ => OpCode::Create,
                };
                let created = match self.call(op, req, &path)? {
                    Response::Create { path } | Response::Create2 { path, .. } => path,
                    _ => return Err(Failure::Message("unexpected reply".into())),
                };
                let _ = writeln!(err, "Created {created}");
                Ok((String::new(), json!({"created": created})))
            }
            "set" => {
                let path = Self::path_arg(&p, usage)?;
                let data = p
                    .args
                    .get(2)
                    .ok_or_else(|| Failure::Message(format!("set {usage}")))?;
                let version = Self::version_flag(&p)?;
                let req = Request::SetData {
                    path: path.clone(),
                    data: Some(Bytes::from(data.clone().into_bytes())),
                    version,
                };
                let Response::Stat(s) = self.call(OpCode::SetData, req, &path)? else {
                    return Err(Failure::Message("unexpected reply".into()));
                };
                let text = if p.has('s') {
                    stat_text(&s)
                } else {
                    String::new()
                };
                Ok((text, json!({"path": path, "stat": stat_json(&s)})))
            }
            "delete" => {
                let path = Self::path_arg(&p, usage)?;
                let version = Self::version_flag(&p)?;
                self.call(
                    OpCode::Delete,
                    Request::Delete {
                        path: path.clone(),
                        version,
                    },
                    &path,
                )?;
                Ok((String::new(), json!({"deleted": path})))
            }
            "deleteall" => {
                let path = Self::path_arg(&p, usage)?;
                let all = self.subtree(&path)?;
                for q in all.iter().rev() {
                    match self.call(
                        OpCode::Delete,
                        Request::Delete {
                            path: q.clone(),
                            version: -1,
                        },
                        q,
                    ) {
                        Ok(_) => {}
                        Err(Failure::Code(c, _)) if c == ErrorCode::NoNode.code() => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok((String::new(), json!({"deleted": all})))
            }
            "getAcl" => {
                let path = Self::path_arg(&p, usage)?;
                let Response::GetAcl { acl, stat } = self.call(
                    OpCode::GetAcl,
                    Request::GetAcl { path: path.clone() },
                    &path,
                )?
                else {
                    return Err(Failure::Message("unexpected reply".into()));
                };
                let mut text = String::new();
                for a in &acl {
                    let _ = writeln!(
                        text,
                        "'{},'{}\n: {}",
                        a.id.scheme,
                        a.id.id,
                        perm_string(a.perms)
                    );
                }
                if p.has('s') {
                    text.push_str(&stat_text(&stat));
                }
                let list: Vec<Value> = acl
                    .iter()
                    .map(|a| json!({"scheme": a.id.scheme, "id": a.id.id, "perms": perm_string(a.perms)}))
                    .collect();
                Ok((
                    text,
                    json!({"path": path, "acl": list, "stat": p.has('s').then(|| stat_json(&stat))}),
                ))
            }
            "setAcl" => {
                let path = Self::path_arg(&p, usage)?;
                let acl_text = p
                    .args
                    .get(2)
                    .ok_or_else(|| Failure::Message(format!("setAcl {usage}")))?;
                let acl = parse_acl(acl_text, err);
                let version = Self::version_flag(&p)?;
                let targets = if p.has('R') {
                    self.subtree(&path)?
                } else {
                    vec![path.clone()]
                };
                let mut last = None;
                for t in &targets {
                    let req = Request::SetAcl {
                        path: t.clone(),
                        acl: acl.clone(),
                        version,
                    };
                    if let Response::Stat(s) = self.call(OpCode::SetAcl, req, t)? {
                        last = Some(s);
                    }
                }
                let text = match (&last, p.has('s') && !p.has('R')) {
                    (Some(s), true) => stat_text(s),
                    _ => String::new(),
                };
                Ok((
                    text,
                    json!({"path": path, "stat": last.as_ref().map(stat_json)}),
                ))
            }
            "sync" => {
                let path = Self::path_arg(&p, usage)?;
                match self.call(OpCode::Sync, Request::Sync { path: path.clone() }, &path) {
                    Ok(_) => Ok(("Sync is OK\n".into(), json!({"path": path, "synced": true}))),
                    Err(Failure::Code(c, _)) => Ok((
                        format!("Sync has failed. rc={c}\n"),
                        json!({"path": path, "synced": false, "code": c}),
                    )),
                    Err(e) => Err(e),
                }
            }
            "getEphemerals" => {
                let prefix = match p.args.get(1) {
                    Some(path) => {
                        validate_path(path).map_err(Failure::Message)?;
                        path.clone()
                    }
                    None => "/".into(),
                };
                let Response::Strings(list) = self.call(
                    OpCode::GetEphemerals,
                    Request::GetEphemerals {
                        prefix: prefix.clone(),
                    },
                    &prefix,
                )?
                else {
                    return Err(Failure::Message("unexpected reply".into()));
                };
                Ok((
                    format!("[{}]\n", list.join(", ")),
                    json!({"ephemerals": list}),
                ))
            }
            "getAllChildrenNumber" => {
                let path = Self::path_arg(&p, usage)?;
                let Response::Number(n) = self.call(
                    OpCode::GetAllChildrenNumber,
                    Request::GetAllChildrenNumber { path: path.clone() },
                    &path,
                )?
                else {
                    return Err(Failure::Message("unexpected reply".into()));
                };
                Ok((format!("{n}\n"), json!({"path": path, "count": n})))
            }
            "whoami" => {
                let Response::WhoAmI(infos) = self.call(OpCode::WhoAmI, Request::WhoAmI, "/")?
                else {
                    return Err(Failure::Message("unexpected reply".into()));
                };
                let mut text = String::from("Auth scheme: User\n");
                for (scheme, user) in &infos {
                    let _ = writeln!(text, "{scheme}: {user}");
                }
                let list: Vec<Value> = infos
                    .iter()
                    .map(|(s, u)| json!({"scheme": s, "user": u}))
                    .collect();
                Ok((text, json!({"whoami": list})))
            }
            "addauth" => {
                let scheme = p
                    .args
                    .get(1)
                    .ok_or_else(|| Failure::Message(format!("addauth {usage}")))?;
                let auth = p.args.get(2).map_or(Vec::new(), |a| a.clone().into_bytes());
                let c = self.client.as_ref().expect("connected");
                c.add_auth(scheme, &auth).map_err(|e| match e {
                    CallError::Code(code) => Failure::Message(format!(
                        "KeeperErrorCode = {} for addauth",
                        ErrorCode::from_i32(code).map_or("?", code_message)
                    )),
                    CallError::Io(e) => Failure::Message(e.to_string()),
                })?;
                Ok((String::new(), Value::Null))
            }
            "addWatch" => {
                let path = Self::path_arg(&p, usage)?;
                let mode = match p.value('m') {
                    None | Some("PERSISTENT_RECURSIVE") => 1,
                    Some("PERSISTENT") => 0,
                    Some(m) => {
                        return Err(Failure::Message(format!(
                            "Unsupported mode: {m}. Supported modes: [PERSISTENT, PERSISTENT_RECURSIVE]"
                        )))
                    }
                };
                self.call(
                    OpCode::AddWatch,
                    Request::AddWatch {
                        path: path.clone(),
                        mode,
                    },
                    &path,
                )?;
                Ok((String::new(), json!({"path": path, "watching": true})))
            }
            "removewatches" => {
                let path = Self::path_arg(&p, usage)?;
                let watcher_type = if p.has('c') {
                    1
                } else if p.has('d') {
                    2
                } else {
                    3
                };
                self.call(
                    OpCode::RemoveWatches,
                    Request::RemoveWatches {
                        path: path.clone(),
                        watcher_type,
                    },
                    &path,
                )?;
                Ok((String::new(), json!({"path": path, "removed": true})))
            }
            "config" => {
                let (data, stat) = self.get_data("/zookeeper/config", p.has('w'))?;
                let (text, shown) = data_text(&data, &stat, p.has('s'));
                Ok((text, json!({"config": shown})))
            }
            "quit" => Ok((String::new(), Value::Null)),
            _ => Err(Failure::Message(format!("Command not found {cmd}"))),
        }
    }

    fn exists(&self, path: &str) -> Result<Option<Stat>, Failure> {
        let req = Request::Exists {
            path: path.to_string(),
            watch: false,
        };
        match self.call(OpCode::Exists, req, path) {
            Ok(Response::Stat(s)) => Ok(Some(s)),
            Err(Failure::Code(c, _)) if c == ErrorCode::NoNode.code() => Ok(None),
            Err(e) => Err(e),
            Ok(_) => Err(Failure::Message("unexpected reply".into())),
        }
    }

    fn children_of(&self, path: &str) -> Result<Vec<String>, Failure> {
        let req = Request::GetChildren {
            path: path.to_string(),
            watch: false,
        };
        match self.call(OpCode::GetChildren, req, path)? {
            Response::Children(c) => Ok(c),
            _ => Err(Failure::Message("unexpected reply".into())),
        }
    }

    /// A plain create with the open ACL; NODEEXISTS is an answer, not a failure.
    fn create_plain(&self, path: &str, data: Option<Bytes>) -> Result<bool, Failure> {
        let req = Request::Create(CreateRequest {
            kind: CreateKind::Create,
            path: path.to_string(),
            data,
            acl: ringkeeper::tree::acl::open_acl_unsafe(),
            flags: 0,
            ttl_ms: -1,
        });
        match self.call(OpCode::Create, req, path) {
            Ok(_) => Ok(true),
            Err(Failure::Code(c, _)) if c == ErrorCode::NodeExists.code() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_plain(&self, path: &str, data: String) -> Result<(), Failure> {
        let req = Request::SetData {
            path: path.to_string(),
            data: Some(Bytes::from(data.into_bytes())),
            version: -1,
        };
        self.call(OpCode::SetData, req, path).map(|_| ())
    }

    fn delete_plain(&self, path: &str) -> Result<(), Failure> {
        let req = Request::Delete {
            path: path.to_string(),
            version: -1,
        };
        self.call(OpCode::Delete, req, path).map(|_| ())
    }

    fn stats_track(&self, path: &str) -> Result<StatsTrack, Failure> {
        let (data, _) = self.get_data(path, false)?;
        Ok(StatsTrack::parse(data.as_deref().unwrap_or_default()))
    }

    /// zkCli's setquota: the quota's nodes made (or its limits changed) by plain
    /// creates and setData, after zkCli's checks: the path exists, and no parent or
    /// child of it has a quota.
    fn set_quota(&self, p: &Parsed, usage: &str, err: &mut String) -> Done {
        if p.args.len() < 2 {
            return Err(Failure::Message(format!("setquota {usage}")));
        }
        let given: Vec<(char, &str)> = "nbNB"
            .chars()
            .filter_map(|f| p.value(f).map(|v| (f, v)))
            .collect();
        if given.is_empty() {
            return Err(Failure::Message(
                "org.apache.commons.cli.MissingOptionException: Missing required option: [-n num soft quota, -b bytes soft quota, -N num hard quota, -B bytes hard quota]".into(),
            ));
        }
        if given.len() > 1 {
            return Err(Failure::Message(format!(
                "The option '{}' was specified but an option from this group has already been selected: '{}'",
                given[1].0, given[0].0
            )));
        }
        let path = p.args[1].clone();
        if path.starts_with(QUOTA_ROOT) {
            let _ = writeln!(err, "cannot set a quota under the path: {QUOTA_ROOT}");
            return Ok((String::new(), json!({"path": path, "set": false})));
        }
        let mut quota = StatsTrack::with_all_limits();
        let (flag, value) = given[0];
        let Ok(v) = value.parse::<i64>() else {
            let _ = writeln!(
                err,
                "NumberFormatException happens when parsing the option value"
            );
            return Ok((String::new(), json!({"path": path, "set": false})));
        };
        let (key, ok, complaint) = match flag {
            'n' => ("count", v > 0, "the num quota must be greater than zero"),
            'b' => (
                "bytes",
                v >= 0,
                "the bytes quota must be greater than or equal to zero",
            ),
            'N' => (
                "countHardLimit",
                v > 0,
                "the num quota must be greater than zero",
            ),
            _ => (
                "byteHardLimit",
                v >= 0,
                "the bytes quota must be greater than or equal to zero",
            ),
        };
        if !ok || (matches!(flag, 'n' | 'N') && i32::try_from(v).is_err()) {
            let _ = writeln!(err, "{complaint}");
            return Ok((String::new(), json!({"path": path, "set": false})));
        }
        quota.set(key, v);
        validate_path(&path).map_err(Failure::Message)?;
        if self.exists(&path)?.is_none() {
            return Err(Failure::Message(format!("{path} does not exist.")));
        }
        // No quota below it...
        let mut stack = vec![format!("{QUOTA_ROOT}{path}")];
        let own = stack[0].clone();
        while let Some(q) = stack.pop() {
            let kids = match self.children_of(&q) {
                Ok(k) => k,
                Err(Failure::Code(c, _)) if c == ErrorCode::NoNode.code() => continue,
                Err(e) => return Err(e),
            };
            if q != own && kids.iter().any(|k| k == LIMITS) {
                return Err(Failure::Message(format!(
                    "{path} has a child {} which has a quota",
                    &q[QUOTA_ROOT.len()..]
                )));
            }
            stack.extend(kids.iter().map(|k| format!("{q}/{k}")));
        }
        // ...nor above it.
        let parts: Vec<&str> = path.split('/').collect();
        let mut q = QUOTA_ROOT.to_string();
        for part in parts.iter().skip(1).take(parts.len().saturating_sub(2)) {
            q = format!("{q}/{part}");
            let kids = match self.children_of(&q) {
                Ok(k) => k,
                Err(Failure::Code(c, _)) if c == ErrorCode::NoNode.code() => break,
                Err(e) => return Err(e),
            };
            if kids.is_empty() {
                break;
            }
            if kids.iter().any(|k| k == LIMITS) {
                return Err(Failure::Message(format!(
                    "{path} has a parent {} which has a quota",
                    &q[QUOTA_ROOT.len()..]
                )));
            }
        }
        if self.exists(QUOTA_ROOT)?.is_none() {
            self.create_plain("/zookeeper", None)?;
            self.create_plain(QUOTA_ROOT, None)?;
        }
        let mut dir = QUOTA_ROOT.to_string();
        for part in parts.iter().skip(1) {
            dir = format!("{dir}/{part}");
            if self.exists(&dir)?.is_none() {
                self.create_plain(&dir, None)?;
            }
        }
        let (limits_path, stats_path) = (format!("{dir}/{LIMITS}"), format!("{dir}/{STATS}"));
        let limits = if self.exists(&limits_path)?.is_none() {
            self.create_plain(&limits_path, Some(Bytes::from(quota.text().into_bytes())))?;
            self.create_plain(&stats_path, Some(Bytes::from_static(b"count=0,bytes=0")))?;
            self.stats_track(&limits_path)?
        } else {
            let mut limits = self.stats_track(&limits_path)?;
            limits.set(key, v);
            limits
        };
        let usage_now = self.stats_track(&stats_path)?;
        let mut out = String::new();
        for (what, soft, hard) in [
            ("count", "count", "countHardLimit"),
            ("bytes", "bytes", "byteHardLimit"),
        ] {
            let used = usage_now.get(what);
            let over = |limit: i64| limit > -1 && limit < used;
            if over(limits.get(soft)) || over(limits.get(hard)) {
                let _ = writeln!(
                    out,
                    "[Warning]: the {what} quota you create is less than the existing {what}:{used}"
                );
            }
        }
        self.set_plain(&limits_path, limits.text())?;
        Ok((
            out,
            json!({"path": path, "set": true, "limits": limits.text()}),
        ))
    }

    /// zkCli's listquota: the limits and the usage the server keeps.
    fn list_quota(&self, p: &Parsed, usage: &str, err: &mut String) -> Done {
        let path = p
            .args
            .get(1)
            .ok_or_else(|| Failure::Message(format!("listquota {usage}")))?
            .clone();
        let limits_path = format!("{QUOTA_ROOT}{path}/{LIMITS}");
        let _ = writeln!(err, "absolute path is {limits_path}");
        let found = self
            .stats_track(&limits_path)
            .and_then(|l| Ok((l, self.stats_track(&format!("{QUOTA_ROOT}{path}/{STATS}"))?)));
        match found {
            Ok((limits, used)) => Ok((
                format!(
                    "Output quota for {path} {}\nOutput stat for {path} {}\n",
                    limits.text(),
                    used.text()
                ),
                json!({"path": path, "quota": limits.text(), "stat": used.text()}),
            )),
            Err(Failure::Code(c, _)) if c == ErrorCode::NoNode.code() => {
                let _ = writeln!(err, "quota for {path} does not exist.");
                Ok((String::new(), json!({"path": path, "quota": null})))
            }
            Err(e) => Err(e),
        }
    }

    /// zkCli's delquota: without a flag the quota's nodes go (and the empty quota
    /// directories above them); with one, that limit is set back to -1.
    fn del_quota(&self, p: &Parsed, usage: &str, err: &mut String) -> Done {
        let path = p
            .args
            .get(1)
            .ok_or_else(|| Failure::Message(format!("delquota {usage}")))?
            .clone();
        let flags: Vec<char> = "nbNB".chars().filter(|f| p.has(*f)).collect();
        if flags.len() > 1 {
            return Err(Failure::Message(format!(
                "The option '{}' was specified but an option from this group has already been selected: '{}'",
                flags[1], flags[0]
            )));
        }
        let dir = format!("{QUOTA_ROOT}{path}");
        let limits_path = format!("{dir}/{LIMITS}");
        if self.exists(&limits_path)?.is_none() {
            return Ok((
                format!("Quota does not exist for {path}\n"),
                json!({"path": path, "deleted": false}),
            ));
        }
        let mut limits = match self.stats_track(&limits_path) {
            Ok(l) => l,
            Err(Failure::Code(c, _)) if c == ErrorCode::NoNode.code() => {
                let _ = writeln!(err, "quota for {path} does not exist.");
                return Ok((String::new(), json!({"path": path, "deleted": false})));
            }
            Err(e) => return Err(e),
        };
        match flags.first() {
            None => {
                for child in self.children_of(&dir)? {
                    self.delete_plain(&format!("{dir}/{child}"))?;
                }
                // The quota directories left empty, up to /zookeeper/quota.
                let mut d = dir;
                while d != QUOTA_ROOT && self.children_of(&d)?.is_empty() {
                    self.delete_plain(&d)?;
                    d = d[..d.rfind('/').unwrap_or(0)].to_string();
                }
            }
            Some(f) => {
                let key = match f {
                    'n' => "count",
                    'b' => "bytes",
                    'N' => "countHardLimit",
                    _ => "byteHardLimit",
                };
                limits.set(key, -1);
                self.set_plain(&limits_path, limits.text())?;
            }
        }
        Ok((String::new(), json!({"path": path, "deleted": true})))
    }

    fn get_data(&self, path: &str, watch: bool) -> Result<(Option<Bytes>, Stat), Failure> {
        let req = Request::GetData {
            path: path.to_string(),
            watch,
        };
        match self.call(OpCode::GetData, req, path)? {
            Response::GetData { data, stat } => Ok((data, stat)),
            _ => Err(Failure::Message("unexpected reply".into())),
        }
    }

    /// The children of `dir` whose names start with `prefix` (path completion).
    pub fn complete(&self, dir: &str, prefix: &str) -> Vec<String> {
        let Some(c) = self.client.as_ref() else {
            return Vec::new();
        };
        match c.call(
            OpCode::GetChildren,
            &Request::GetChildren {
                path: dir.to_string(),
                watch: false,
            },
        ) {
            Ok(Response::Children(mut kids)) => {
                kids.retain(|k| k.starts_with(prefix));
                kids.sort();
                kids
            }
            _ => Vec::new(),
        }
    }
}

/// A shell whose watch events print as zkCli prints them (or as JSON lines).
pub fn event_printer(json: bool, enabled: Arc<std::sync::atomic::AtomicBool>) -> OnEvent {
    Arc::new(move |e: &WatcherEvent| {
        if !enabled.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = if json {
            writeln!(out, "{}", event_json(e))
        } else {
            write!(out, "{}", event_text(e))
        };
        let _ = out.flush();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_as_zkcli_splits_them() {
        assert_eq!(
            split_line("create /a \"x y\" 'z'"),
            ["create", "/a", "x y", "z"]
        );
        assert_eq!(split_line("  ls   -s /  "), ["ls", "-s", "/"]);
    }

    #[test]
    fn paths_are_checked_as_zookeeper_checks_them() {
        assert!(validate_path("/a/b").is_ok());
        assert_eq!(
            validate_path("a").unwrap_err(),
            "Path must start with / character"
        );
        assert_eq!(
            validate_path("/a/").unwrap_err(),
            "Path must not end with / character"
        );
        assert!(validate_path("/a//b")
            .unwrap_err()
            .contains("empty node name specified @3"));
        assert!(validate_path("/a/../b")
            .unwrap_err()
            .contains("relative paths not allowed"));
    }

    #[test]
    fn acls_and_permissions_read_as_zkcli_reads_them() {
        let mut err = String::new();
        let acl = parse_acl("world:anyone:cdrwa,digest:alice:hash=:r,bad", &mut err);
        assert_eq!(acl.len(), 2);
        assert_eq!(acl[1].id.id, "alice:hash=");
        assert_eq!((acl[0].perms, acl[1].perms), (31, 1));
        assert_eq!(err, "bad does not have the form scheme:id:perm\n");
        assert_eq!(perm_string(31), "cdrwa");
        assert_eq!(error_message(-101, "/x"), "Node does not exist: /x");
        assert_eq!(
            error_message(-6, "/x"),
            "KeeperErrorCode = Unimplemented for /x"
        );
    }
}
