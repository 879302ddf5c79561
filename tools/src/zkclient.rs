//! A blocking ZooKeeper client for the tools, on the project's own codec: one session
//! to one of a list of servers, requests answered in order, pings while idle, and
//! watch notifications handed to a callback as they arrive (from the reader thread).

use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkeeper::proto::{
    ConnectRequest, ConnectResponse, OpCode, Reader, ReplyHeader, Request, Response, WatcherEvent,
};

/// Replies the client waits for at most.
const REPLY_WAIT: Duration = Duration::from_secs(30);
const FRAME_BYTES_MAX: i32 = 64 << 20;

/// A watch event as the callback gets it.
pub type OnEvent = Arc<dyn Fn(&WatcherEvent) + Send + Sync>;

/// Why a request did not get an answer.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with this ZooKeeper error code.
    Code(i32),
    /// The connection failed or the reply did not decode.
    Io(io::Error),
}

impl From<io::Error> for CallError {
    fn from(e: io::Error) -> Self {
        CallError::Io(e)
    }
}

pub struct Client {
    pub server: String,
    pub session_id: i64,
    pub timeout_ms: i32,
    writer: Arc<Mutex<TcpStream>>,
    replies: Receiver<(ReplyHeader, Vec<u8>)>,
    next_xid: AtomicI32,
    alive: Arc<AtomicBool>,
}

fn write_frame(w: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.extend_from_slice(&(body.len() as i32).to_be_bytes());
    b.extend_from_slice(body);
    w.write_all(&b)
}

fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    if !(0..=FRAME_BYTES_MAX).contains(&n) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {n}"),
        ));
    }
    let mut f = vec![0u8; n as usize];
    r.read_exact(&mut f)?;
    Ok(f)
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Client {
    /// Connects to the first server of `servers` ("host:port,host:port") that takes a
    /// new session.
    pub fn connect(servers: &str, timeout_ms: i32, on_event: OnEvent) -> io::Result<Client> {
        let mut last = io::Error::other("no server given");
        for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Client::connect_one(server, timeout_ms, on_event.clone()) {
                Ok(c) => return Ok(c),
                Err(e) => last = io::Error::new(e.kind(), format!("{server}: {e}")),
            }
        }
        Err(last)
    }

    fn connect_one(server: &str, timeout_ms: i32, on_event: OnEvent) -> io::Result<Client> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(server)?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        let mut body = Vec::new();
        ConnectRequest::new_session(timeout_ms).encode(&mut body);
        write_frame(&mut s, &body)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let resp = ConnectResponse::decode(&read_frame(&mut s)?).map_err(bad)?;
        if resp.session_id == 0 || resp.timeout_ms <= 0 {
            return Err(io::Error::other("the server refused the session"));
        }
        s.set_read_timeout(None)?;
        let (tx, replies) = mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let mut rd = BufReader::new(s.try_clone()?);
        {
            let alive = alive.clone();
            std::thread::spawn(move || {
                while let Ok(f) = read_frame(&mut rd) {
                    let mut r = Reader::new(&f);
                    let Ok(h) = ReplyHeader::decode(&mut r) else {
                        break;
                    };
                    match h.xid {
                        -1 => {
                            if let Ok(e) = WatcherEvent::decode(&mut r) {
                                on_event(&e);
                            }
                        }
                        -2 => {} // a ping's answer
                        _ => {
                            let body = f[r.position()..].to_vec();
                            if tx.send((h, body)).is_err() {
                                break;
                            }
                        }
                    }
                }
                alive.store(false, Ordering::Release);
            });
        }
        let writer = Arc::new(Mutex::new(s));
        {
            // Pings keep the session while the user thinks.
            let (writer, alive) = (writer.clone(), alive.clone());
            let every = Duration::from_millis((resp.timeout_ms / 3).max(100) as u64);
            std::thread::spawn(move || {
                let mut ping = Vec::new();
                Request::Ping.encode(-2, &mut ping);
                while alive.load(Ordering::Acquire) {
                    std::thread::sleep(every);
                    let mut w = writer.lock().expect("writer");
                    if write_frame(&mut w, &ping).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Client {
            server: server.to_string(),
            session_id: resp.session_id,
            timeout_ms: resp.timeout_ms,
            writer,
            replies,
            next_xid: AtomicI32::new(1),
            alive,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn send(&self, xid: i32, req: &Request) -> io::Result<()> {
        let mut body = Vec::with_capacity(64);
        req.encode(xid, &mut body);
        write_frame(&mut self.writer.lock().expect("writer"), &body)
    }

    fn wait(&self, xid: i32) -> Result<(ReplyHeader, Vec<u8>), CallError> {
        loop {
            match self.replies.recv_timeout(REPLY_WAIT) {
                Ok((h, body)) if h.xid == xid => return Ok((h, body)),
                Ok(_) => continue, // an answer to something given up on
                Err(RecvTimeoutError::Timeout) => {
                    return Err(CallError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no reply",
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(CallError::Io(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the connection was closed",
                    )))
                }
            }
        }
    }

    /// Sends `req` (of type `op`) and waits for its answer.
    pub fn call(&self, op: OpCode, req: &Request) -> Result<Response, CallError> {
        let xid = self.next_xid.fetch_add(1, Ordering::AcqRel);
        self.send(xid, req)?;
        let (h, body) = self.wait(xid)?;
        if h.err != 0 {
            return Err(CallError::Code(h.err));
        }
        Response::decode(op, &body).map_err(|e| CallError::Io(bad(e)))
    }

    /// addauth: the answer comes with xid -4 (an AUTHFAILED closes the session).
    pub fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<(), CallError> {
        let req = Request::Auth {
            auth_type: 0,
            scheme: scheme.to_string(),
            auth: auth.to_vec(),
        };
        self.send(-4, &req)?;
        let (h, _) = self.wait(-4)?;
        if h.err != 0 {
            return Err(CallError::Code(h.err));
        }
        Ok(())
    }

    /// Ends the session.
    pub fn close(&self) {
        let xid = self.next_xid.fetch_add(1, Ordering::AcqRel);
        if self.send(xid, &Request::CloseSession).is_ok() {
            let _ = self.wait(xid);
        }
        if let Ok(w) = self.writer.lock() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
    }
}
