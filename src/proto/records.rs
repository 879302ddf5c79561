//! The client protocol's records (zookeeper.jute): connect handshake, request and reply
//! headers, every request body the server accepts and every response body it sends.

use bytes::{BufMut, Bytes};

use super::codes::{xid, OpCode};
use super::jute::{to_bytes, DecodeError, JuteWrite, Reader};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

impl Stat {
    pub fn encode(&self, b: &mut impl BufMut) {
        b.put_i64(self.czxid);
        b.put_i64(self.mzxid);
        b.put_i64(self.ctime);
        b.put_i64(self.mtime);
        b.put_i32(self.version);
        b.put_i32(self.cversion);
        b.put_i32(self.aversion);
        b.put_i64(self.ephemeral_owner);
        b.put_i32(self.data_length);
        b.put_i32(self.num_children);
        b.put_i64(self.pzxid);
    }

    pub fn decode(r: &mut Reader) -> Result<Stat, DecodeError> {
        Ok(Stat {
            czxid: r.i64()?,
            mzxid: r.i64()?,
            ctime: r.i64()?,
            mtime: r.i64()?,
            version: r.i32()?,
            cversion: r.i32()?,
            aversion: r.i32()?,
            ephemeral_owner: r.i64()?,
            data_length: r.i32()?,
            num_children: r.i32()?,
            pzxid: r.i64()?,
        })
    }
}

/// An authenticated identity or an ACL's subject: (scheme, id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    pub scheme: String,
    pub id: String,
}

impl Id {
    pub fn new(scheme: &str, id: &str) -> Id {
        Id {
            scheme: scheme.to_owned(),
            id: id.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

impl Acl {
    pub fn encode(&self, b: &mut impl BufMut) {
        b.put_i32(self.perms);
        b.put_string(&self.id.scheme);
        b.put_string(&self.id.id);
    }

    pub fn decode(r: &mut Reader) -> Result<Acl, DecodeError> {
        Ok(Acl {
            perms: r.i32()?,
            id: Id {
                scheme: r.string()?,
                id: r.string()?,
            },
        })
    }

    pub fn decode_list(r: &mut Reader) -> Result<Vec<Acl>, DecodeError> {
        let n = r.vec_len(12)?;
        (0..n).map(|_| Acl::decode(r)).collect()
    }

    pub fn encode_list(acl: &[Acl], b: &mut impl BufMut) {
        b.put_i32(acl.len() as i32);
        for a in acl {
            a.encode(b);
        }
    }
}

/// ConnectRequest; `read_only` is absent in clients older than 3.4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    /// The handshake of a new session: no session id, no password, not read-only.
    pub fn new_session(timeout_ms: i32) -> ConnectRequest {
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms,
            session_id: 0,
            passwd: vec![0; 16],
            read_only: Some(false),
        }
    }

    pub fn decode(frame: &[u8]) -> Result<ConnectRequest, DecodeError> {
        let mut r = Reader::new(frame);
        let req = ConnectRequest {
            protocol_version: r.i32()?,
            last_zxid_seen: r.i64()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            passwd: r.buffer()?.to_vec(),
            read_only: if r.remaining() > 0 {
                Some(r.bool()?)
            } else {
                None
            },
        };
        Ok(req)
    }

    pub fn encode(&self, b: &mut impl BufMut) {
        b.put_i32(self.protocol_version);
        b.put_i64(self.last_zxid_seen);
        b.put_i32(self.timeout_ms);
        b.put_i64(self.session_id);
        b.put_buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            b.put_bool_jute(ro);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    /// Sent only when the client sent the readOnly byte.
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    pub fn encode(&self, b: &mut impl BufMut) {
        b.put_i32(self.protocol_version);
        b.put_i32(self.timeout_ms);
        b.put_i64(self.session_id);
        b.put_buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            b.put_bool_jute(ro);
        }
    }

    pub fn decode(frame: &[u8]) -> Result<ConnectResponse, DecodeError> {
        let mut r = Reader::new(frame);
        Ok(ConnectResponse {
            protocol_version: r.i32()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            passwd: r.buffer()?.to_vec(),
            read_only: if r.remaining() > 0 {
                Some(r.bool()?)
            } else {
                None
            },
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: i32,
    pub op: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
}

impl ReplyHeader {
    pub fn encode(&self, b: &mut impl BufMut) {
        b.put_i32(self.xid);
        b.put_i64(self.zxid);
        b.put_i32(self.err);
    }

    pub fn decode(r: &mut Reader) -> Result<ReplyHeader, DecodeError> {
        Ok(ReplyHeader {
            xid: r.i32()?,
            zxid: r.i64()?,
            err: r.i32()?,
        })
    }
}

/// Which create opcode carried a create: it decides the response shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    Create,
    Create2,
    Container,
    Ttl,
}

impl CreateKind {
    pub fn opcode(self) -> OpCode {
        match self {
            CreateKind::Create => OpCode::Create,
            CreateKind::Create2 => OpCode::Create2,
            CreateKind::Container => OpCode::CreateContainer,
            CreateKind::Ttl => OpCode::CreateTtl,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub kind: CreateKind,
    pub path: String,
    /// None is a null buffer: ZooKeeper keeps null data apart from empty data.
    pub data: Option<Bytes>,
    pub acl: Vec<Acl>,
    pub flags: i32,
    /// Only createTTL carries a TTL; -1 otherwise.
    pub ttl_ms: i64,
}

/// A write inside a multi, or a standalone write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Create(CreateRequest),
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        data: Option<Bytes>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    GetChildren { path: String },
    GetData { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetWatches {
    pub relative_zxid: i64,
    pub data: Vec<String>,
    pub exist: Vec<String>,
    pub child: Vec<String>,
    pub persistent: Vec<String>,
    pub persistent_recursive: Vec<String>,
}

/// A decoded client request body, by opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create(CreateRequest),
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Option<Bytes>,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    GetChildren {
        path: String,
        watch: bool,
    },
    GetChildren2 {
        path: String,
        watch: bool,
    },
    Sync {
        path: String,
    },
    Ping,
    Check {
        path: String,
        version: i32,
    },
    Multi(Vec<WriteOp>),
    MultiRead(Vec<ReadOp>),
    CheckWatches {
        path: String,
        watcher_type: i32,
    },
    RemoveWatches {
        path: String,
        watcher_type: i32,
    },
    Auth {
        auth_type: i32,
        scheme: String,
        auth: Vec<u8>,
    },
    SetWatches(SetWatches),
    GetEphemerals {
        prefix: String,
    },
    GetAllChildrenNumber {
        path: String,
    },
    AddWatch {
        path: String,
        mode: i32,
    },
    WhoAmI,
    CloseSession,
    /// Opcodes the server knows but does not serve standalone (reconfig, sasl).
    Unsupported(OpCode),
}

fn decode_create(r: &mut Reader, kind: CreateKind) -> Result<CreateRequest, DecodeError> {
    let path = r.string()?;
    let data = r.buffer_opt()?.map(to_bytes);
    let acl = Acl::decode_list(r)?;
    let flags = r.i32()?;
    let ttl_ms = if kind == CreateKind::Ttl {
        r.i64()?
    } else {
        -1
    };
    Ok(CreateRequest {
        kind,
        path,
        data,
        acl,
        flags,
        ttl_ms,
    })
}

/// The terminating MultiHeader of a multi request or response.
const MULTI_END_TYPE: i32 = -1;

impl Request {
    /// Decodes a request frame (header included). Trailing bytes are tolerated as
    /// ZooKeeper does: some clients pad requests.
    pub fn decode(frame: &[u8]) -> Result<(RequestHeader, Request), DecodeError> {
        let mut r = Reader::new(frame);
        let header = RequestHeader {
            xid: r.i32()?,
            op: r.i32()?,
        };
        let op = OpCode::from_i32(header.op).ok_or(DecodeError::UnknownOpCode(header.op))?;
        let req = Self::decode_body(op, &mut r)?;
        Ok((header, req))
    }

    fn decode_body(op: OpCode, r: &mut Reader) -> Result<Request, DecodeError> {
        Ok(match op {
            OpCode::Create => Request::Create(decode_create(r, CreateKind::Create)?),
            OpCode::Create2 => Request::Create(decode_create(r, CreateKind::Create2)?),
            OpCode::CreateContainer => Request::Create(decode_create(r, CreateKind::Container)?),
            OpCode::CreateTtl => Request::Create(decode_create(r, CreateKind::Ttl)?),
            OpCode::Delete => Request::Delete {
                path: r.string()?,
                version: r.i32()?,
            },
            OpCode::Exists => Request::Exists {
                path: r.string()?,
                watch: r.bool()?,
            },
            OpCode::GetData => Request::GetData {
                path: r.string()?,
                watch: r.bool()?,
            },
            OpCode::SetData => Request::SetData {
                path: r.string()?,
                data: r.buffer_opt()?.map(to_bytes),
                version: r.i32()?,
            },
            OpCode::GetAcl => Request::GetAcl { path: r.string()? },
            OpCode::SetAcl => Request::SetAcl {
                path: r.string()?,
                acl: Acl::decode_list(r)?,
                version: r.i32()?,
            },
            OpCode::GetChildren => Request::GetChildren {
                path: r.string()?,
                watch: r.bool()?,
            },
            OpCode::GetChildren2 => Request::GetChildren2 {
                path: r.string()?,
                watch: r.bool()?,
            },
            OpCode::Sync => Request::Sync { path: r.string()? },
            OpCode::Ping => Request::Ping,
            OpCode::Check => Request::Check {
                path: r.string()?,
                version: r.i32()?,
            },
            OpCode::Multi => Request::Multi(Self::decode_multi_writes(r)?),
            OpCode::MultiRead => Request::MultiRead(Self::decode_multi_reads(r)?),
            OpCode::CheckWatches => Request::CheckWatches {
                path: r.string()?,
                watcher_type: r.i32()?,
            },
            OpCode::RemoveWatches => Request::RemoveWatches {
                path: r.string()?,
                watcher_type: r.i32()?,
            },
            OpCode::Auth => Request::Auth {
                auth_type: r.i32()?,
                scheme: r.string()?,
                auth: r.buffer()?.to_vec(),
            },
            OpCode::SetWatches => Request::SetWatches(SetWatches {
                relative_zxid: r.i64()?,
                data: r.strings()?,
                exist: r.strings()?,
                child: r.strings()?,
                ..Default::default()
            }),
            OpCode::SetWatches2 => Request::SetWatches(SetWatches {
                relative_zxid: r.i64()?,
                data: r.strings()?,
                exist: r.strings()?,
                child: r.strings()?,
                persistent: r.strings()?,
                persistent_recursive: r.strings()?,
            }),
            OpCode::GetEphemerals => Request::GetEphemerals {
                prefix: r.string()?,
            },
            OpCode::GetAllChildrenNumber => Request::GetAllChildrenNumber { path: r.string()? },
            OpCode::AddWatch => Request::AddWatch {
                path: r.string()?,
                mode: r.i32()?,
            },
            OpCode::WhoAmI => Request::WhoAmI,
            OpCode::CloseSession => Request::CloseSession,
            OpCode::Reconfig | OpCode::Sasl => Request::Unsupported(op),
            OpCode::Notification
            | OpCode::CreateSession
            | OpCode::Error
            | OpCode::DeleteContainer => return Err(DecodeError::UnknownOpCode(op as i32)),
        })
    }

    /// Reads multi headers until the terminator; returns (type, done) of the next op.
    fn multi_header(r: &mut Reader) -> Result<Option<i32>, DecodeError> {
        let ty = r.i32()?;
        let done = r.bool()?;
        let _err = r.i32()?;
        if done || ty == MULTI_END_TYPE {
            return Ok(None);
        }
        Ok(Some(ty))
    }

    fn decode_multi_writes(r: &mut Reader) -> Result<Vec<WriteOp>, DecodeError> {
        let mut ops = Vec::new();
        while let Some(ty) = Self::multi_header(r)? {
            let op = match OpCode::from_i32(ty) {
                Some(OpCode::Create) => WriteOp::Create(decode_create(r, CreateKind::Create)?),
                Some(OpCode::Create2) => WriteOp::Create(decode_create(r, CreateKind::Create2)?),
                Some(OpCode::CreateContainer) => {
                    WriteOp::Create(decode_create(r, CreateKind::Container)?)
                }
                Some(OpCode::CreateTtl) => WriteOp::Create(decode_create(r, CreateKind::Ttl)?),
                Some(OpCode::Delete) => WriteOp::Delete {
                    path: r.string()?,
                    version: r.i32()?,
                },
                Some(OpCode::SetData) => WriteOp::SetData {
                    path: r.string()?,
                    data: r.buffer_opt()?.map(to_bytes),
                    version: r.i32()?,
                },
                Some(OpCode::Check) => WriteOp::Check {
                    path: r.string()?,
                    version: r.i32()?,
                },
                _ => {
                    return Err(DecodeError::BadValue {
                        field: "multi op type",
                        value: ty as i64,
                    })
                }
            };
            ops.push(op);
        }
        Ok(ops)
    }

    fn decode_multi_reads(r: &mut Reader) -> Result<Vec<ReadOp>, DecodeError> {
        let mut ops = Vec::new();
        while let Some(ty) = Self::multi_header(r)? {
            let op = match OpCode::from_i32(ty) {
                Some(OpCode::GetChildren) => {
                    let path = r.string()?;
                    r.bool()?;
                    ReadOp::GetChildren { path }
                }
                Some(OpCode::GetData) => {
                    let path = r.string()?;
                    r.bool()?;
                    ReadOp::GetData { path }
                }
                _ => {
                    return Err(DecodeError::BadValue {
                        field: "multiRead op type",
                        value: ty as i64,
                    })
                }
            };
            ops.push(op);
        }
        Ok(ops)
    }

    /// Encodes a request (header included, no length prefix): used by our own clients
    /// (bench, tools, tests).
    pub fn encode(&self, xid: i32, b: &mut impl BufMut) {
        fn create(c: &CreateRequest, b: &mut impl BufMut) {
            b.put_string(&c.path);
            b.put_buffer_opt(c.data.as_deref());
            Acl::encode_list(&c.acl, b);
            b.put_i32(c.flags);
            if c.kind == CreateKind::Ttl {
                b.put_i64(c.ttl_ms);
            }
        }
        fn path_watch(p: &str, w: bool, b: &mut impl BufMut) {
            b.put_string(p);
            b.put_bool_jute(w);
        }
        b.put_i32(xid);
        match self {
            Request::Create(c) => {
                b.put_i32(c.kind.opcode() as i32);
                create(c, b);
            }
            Request::Delete { path, version } => {
                b.put_i32(OpCode::Delete as i32);
                b.put_string(path);
                b.put_i32(*version);
            }
            Request::Exists { path, watch } => {
                b.put_i32(OpCode::Exists as i32);
                path_watch(path, *watch, b);
            }
            Request::GetData { path, watch } => {
                b.put_i32(OpCode::GetData as i32);
                path_watch(path, *watch, b);
            }
            Request::SetData {
                path,
                data,
                version,
            } => {
                b.put_i32(OpCode::SetData as i32);
                b.put_string(path);
                b.put_buffer_opt(data.as_deref());
                b.put_i32(*version);
            }
            Request::GetAcl { path } => {
                b.put_i32(OpCode::GetAcl as i32);
                b.put_string(path);
            }
            Request::SetAcl { path, acl, version } => {
                b.put_i32(OpCode::SetAcl as i32);
                b.put_string(path);
                Acl::encode_list(acl, b);
                b.put_i32(*version);
            }
            Request::GetChildren { path, watch } => {
                b.put_i32(OpCode::GetChildren as i32);
                path_watch(path, *watch, b);
            }
            Request::GetChildren2 { path, watch } => {
                b.put_i32(OpCode::GetChildren2 as i32);
                path_watch(path, *watch, b);
            }
            Request::Sync { path } => {
                b.put_i32(OpCode::Sync as i32);
                b.put_string(path);
            }
            Request::Ping => b.put_i32(OpCode::Ping as i32),
            Request::Check { path, version } => {
                b.put_i32(OpCode::Check as i32);
                b.put_string(path);
                b.put_i32(*version);
            }
            Request::Multi(ops) => {
                b.put_i32(OpCode::Multi as i32);
                for op in ops {
                    let ty = match op {
                        WriteOp::Create(c) => c.kind.opcode(),
                        WriteOp::Delete { .. } => OpCode::Delete,
                        WriteOp::SetData { .. } => OpCode::SetData,
                        WriteOp::Check { .. } => OpCode::Check,
                    };
                    b.put_i32(ty as i32);
                    b.put_bool_jute(false);
                    b.put_i32(-1);
                    match op {
                        WriteOp::Create(c) => create(c, b),
                        WriteOp::Delete { path, version } | WriteOp::Check { path, version } => {
                            b.put_string(path);
                            b.put_i32(*version);
                        }
                        WriteOp::SetData {
                            path,
                            data,
                            version,
                        } => {
                            b.put_string(path);
                            b.put_buffer_opt(data.as_deref());
                            b.put_i32(*version);
                        }
                    }
                }
                b.put_i32(MULTI_END_TYPE);
                b.put_bool_jute(true);
                b.put_i32(-1);
            }
            Request::MultiRead(ops) => {
                b.put_i32(OpCode::MultiRead as i32);
                for op in ops {
                    let (ty, path) = match op {
                        ReadOp::GetChildren { path } => (OpCode::GetChildren, path),
                        ReadOp::GetData { path } => (OpCode::GetData, path),
                    };
                    b.put_i32(ty as i32);
                    b.put_bool_jute(false);
                    b.put_i32(-1);
                    path_watch(path, false, b);
                }
                b.put_i32(MULTI_END_TYPE);
                b.put_bool_jute(true);
                b.put_i32(-1);
            }
            Request::CheckWatches { path, watcher_type }
            | Request::RemoveWatches { path, watcher_type } => {
                let op = if matches!(self, Request::CheckWatches { .. }) {
                    OpCode::CheckWatches
                } else {
                    OpCode::RemoveWatches
                };
                b.put_i32(op as i32);
                b.put_string(path);
                b.put_i32(*watcher_type);
            }
            Request::Auth {
                auth_type,
                scheme,
                auth,
            } => {
                b.put_i32(OpCode::Auth as i32);
                b.put_i32(*auth_type);
                b.put_string(scheme);
                b.put_buffer(auth);
            }
            Request::SetWatches(w) => {
                b.put_i32(OpCode::SetWatches2 as i32);
                b.put_i64(w.relative_zxid);
                b.put_strings(&w.data);
                b.put_strings(&w.exist);
                b.put_strings(&w.child);
                b.put_strings(&w.persistent);
                b.put_strings(&w.persistent_recursive);
            }
            Request::GetEphemerals { prefix } => {
                b.put_i32(OpCode::GetEphemerals as i32);
                b.put_string(prefix);
            }
            Request::GetAllChildrenNumber { path } => {
                b.put_i32(OpCode::GetAllChildrenNumber as i32);
                b.put_string(path);
            }
            Request::AddWatch { path, mode } => {
                b.put_i32(OpCode::AddWatch as i32);
                b.put_string(path);
                b.put_i32(*mode);
            }
            Request::WhoAmI => b.put_i32(OpCode::WhoAmI as i32),
            Request::CloseSession => b.put_i32(OpCode::CloseSession as i32),
            Request::Unsupported(op) => b.put_i32(*op as i32),
        }
    }

    /// True for requests that change state and so are ordered by the broadcast core.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create(_)
                | Request::Delete { .. }
                | Request::SetData { .. }
                | Request::SetAcl { .. }
                | Request::Check { .. }
                | Request::Multi(_)
                | Request::Sync { .. }
                | Request::CloseSession
        )
    }
}

/// One result inside a multi / multiRead response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    Create { path: String, stat: Option<Stat> },
    Delete,
    SetData(Stat),
    Check,
    GetData { data: Option<Bytes>, stat: Stat },
    GetChildren(Vec<String>),
    Error(i32),
}

/// A response body; the reply header is written separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Empty,
    Create {
        path: String,
    },
    Create2 {
        path: String,
        stat: Stat,
    },
    Stat(Stat),
    GetData {
        data: Option<Bytes>,
        stat: Stat,
    },
    GetAcl {
        acl: Vec<Acl>,
        stat: Stat,
    },
    Children(Vec<String>),
    Children2 {
        children: Vec<String>,
        stat: Stat,
    },
    Path(String),
    Multi(Vec<MultiResult>),
    Number(i32),
    Strings(Vec<String>),
    WhoAmI(Vec<(String, String)>),
    /// SetSASLResponse: the server's next SASL token.
    Sasl(Option<Bytes>),
}

impl Response {
    pub fn encode(&self, b: &mut impl BufMut) {
        match self {
            Response::Empty => {}
            Response::Sasl(token) => b.put_buffer_opt(token.as_deref()),
            Response::Create { path } | Response::Path(path) => b.put_string(path),
            Response::Create2 { path, stat } => {
                b.put_string(path);
                stat.encode(b);
            }
            Response::Stat(s) => s.encode(b),
            Response::GetData { data, stat } => {
                b.put_buffer_opt(data.as_deref());
                stat.encode(b);
            }
            Response::GetAcl { acl, stat } => {
                Acl::encode_list(acl, b);
                stat.encode(b);
            }
            Response::Children(c) | Response::Strings(c) => b.put_strings(c),
            Response::Children2 { children, stat } => {
                b.put_strings(children);
                stat.encode(b);
            }
            Response::Multi(results) => {
                for res in results {
                    let ty = match res {
                        MultiResult::Create { stat: None, .. } => OpCode::Create,
                        MultiResult::Create { stat: Some(_), .. } => OpCode::Create2,
                        MultiResult::Delete => OpCode::Delete,
                        MultiResult::SetData(_) => OpCode::SetData,
                        MultiResult::Check => OpCode::Check,
                        MultiResult::GetData { .. } => OpCode::GetData,
                        MultiResult::GetChildren(_) => OpCode::GetChildren,
                        MultiResult::Error(_) => OpCode::Error,
                    };
                    b.put_i32(ty as i32);
                    b.put_bool_jute(false);
                    b.put_i32(match res {
                        MultiResult::Error(e) => *e,
                        _ => 0,
                    });
                    match res {
                        MultiResult::Create { path, stat } => {
                            b.put_string(path);
                            if let Some(s) = stat {
                                s.encode(b);
                            }
                        }
                        MultiResult::Delete | MultiResult::Check => {}
                        MultiResult::SetData(s) => s.encode(b),
                        MultiResult::GetData { data, stat } => {
                            b.put_buffer_opt(data.as_deref());
                            stat.encode(b);
                        }
                        MultiResult::GetChildren(c) => b.put_strings(c),
                        MultiResult::Error(e) => b.put_i32(*e),
                    }
                }
                b.put_i32(MULTI_END_TYPE);
                b.put_bool_jute(true);
                b.put_i32(-1);
            }
            Response::Number(n) => b.put_i32(*n),
            Response::WhoAmI(infos) => {
                b.put_i32(infos.len() as i32);
                for (scheme, user) in infos {
                    b.put_string(scheme);
                    b.put_string(user);
                }
            }
        }
    }
}

impl Response {
    /// A client's reading of the body of a successful reply to a request of type
    /// `op` (a failed one has no body). Multi results are not decoded here.
    pub fn decode(op: OpCode, body: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(body);
        let strings = |r: &mut Reader| -> Result<Vec<String>, DecodeError> {
            let n = r.vec_len(4)?;
            (0..n).map(|_| r.string()).collect()
        };
        let out = match op {
            OpCode::Create => Response::Create { path: r.string()? },
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => Response::Create2 {
                path: r.string()?,
                stat: Stat::decode(&mut r)?,
            },
            OpCode::Exists | OpCode::SetData | OpCode::SetAcl => {
                Response::Stat(Stat::decode(&mut r)?)
            }
            OpCode::GetData => Response::GetData {
                data: r.buffer_opt()?.map(to_bytes),
                stat: Stat::decode(&mut r)?,
            },
            OpCode::GetAcl => Response::GetAcl {
                acl: Acl::decode_list(&mut r)?,
                stat: Stat::decode(&mut r)?,
            },
            OpCode::GetChildren => Response::Children(strings(&mut r)?),
            OpCode::GetChildren2 => Response::Children2 {
                children: strings(&mut r)?,
                stat: Stat::decode(&mut r)?,
            },
            OpCode::Sync => Response::Path(r.string()?),
            OpCode::GetEphemerals => Response::Strings(strings(&mut r)?),
            OpCode::GetAllChildrenNumber => Response::Number(r.i32()?),
            OpCode::WhoAmI => {
                let n = r.vec_len(8)?;
                Response::WhoAmI(
                    (0..n)
                        .map(|_| Ok((r.string()?, r.string()?)))
                        .collect::<Result<_, DecodeError>>()?,
                )
            }
            _ => Response::Empty,
        };
        Ok(out)
    }
}

/// A watch notification (WatcherEvent), sent with xid -1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherEvent {
    pub event_type: i32,
    pub state: i32,
    pub path: String,
}

impl WatcherEvent {
    pub fn encode(&self, b: &mut impl BufMut) {
        b.put_i32(self.event_type);
        b.put_i32(self.state);
        b.put_string(&self.path);
    }

    pub fn decode(r: &mut Reader) -> Result<WatcherEvent, DecodeError> {
        Ok(WatcherEvent {
            event_type: r.i32()?,
            state: r.i32()?,
            path: r.string()?,
        })
    }
}

/// Writes one length-prefixed reply frame: header, then body.
pub fn put_reply_frame(out: &mut Vec<u8>, header: ReplyHeader, body: &Response) {
    let start = out.len();
    out.put_i32(0);
    header.encode(out);
    if header.err == 0 {
        body.encode(out);
    }
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes one length-prefixed watch notification frame.
pub fn put_event_frame(out: &mut Vec<u8>, zxid: i64, event: &WatcherEvent) {
    let start = out.len();
    out.put_i32(0);
    ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid,
        err: 0,
    }
    .encode(out);
    event.encode(out);
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}
