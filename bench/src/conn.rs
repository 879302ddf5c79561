//! One non-blocking ZooKeeper-protocol connection, driven by the engine's event loop:
//! the handshake, requests queued into one output buffer (written when the socket takes
//! them), and reply frames cut out of one input buffer. Built on the project's codec.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use ringkeeper::proto::{ConnectRequest, ConnectResponse, Reader, ReplyHeader, Request};
use socket2::{Domain, Socket, Type};

/// The largest reply frame accepted: ZooKeeper's default jute.maxbuffer plus headers.
const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// TCP connect and the ConnectRequest sent; waiting for the ConnectResponse.
    Handshaking,
    Ready,
    /// CloseSession sent; waiting for its reply or the server's close.
    Closing,
}

/// A reply to a request, or a server-initiated frame.
pub enum Frame<'a> {
    Reply { header: ReplyHeader, body: &'a [u8] },
    Notification(&'a [u8]),
    Pong,
}

pub struct Conn {
    pub sock: TcpStream,
    pub state: State,
    pub session_id: i64,
    next_xid: i32,
    out: Vec<u8>,
    out_pos: usize,
    inb: Vec<u8>,
    in_start: usize,
}

impl Conn {
    /// Starts a non-blocking connect to `addr` from `bind` (a source address; many
    /// loopback sources lift the limit of ~28k ephemeral ports per source address) and
    /// queues the handshake.
    pub fn start(addr: SocketAddr, bind: Option<IpAddr>, timeout_ms: i32) -> io::Result<Conn> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        if let Some(ip) = bind {
            sock.bind(&SocketAddr::new(ip, 0).into())?;
        }
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut c = Conn {
            sock: TcpStream::from_std(sock.into()),
            state: State::Handshaking,
            session_id: 0,
            next_xid: 1,
            out: Vec::with_capacity(4096),
            out_pos: 0,
            inb: Vec::with_capacity(4096),
            in_start: 0,
        };
        let at = c.begin_frame();
        new_session_request(timeout_ms).encode(&mut c.out);
        c.end_frame(at);
        Ok(c)
    }

    fn begin_frame(&mut self) -> usize {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        at
    }

    fn end_frame(&mut self, at: usize) {
        let len = (self.out.len() - at - 4) as i32;
        self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Queues a request; returns its xid. `flush` sends it.
    pub fn queue(&mut self, req: &Request) -> i32 {
        let xid = self.next_xid;
        self.next_xid = self.next_xid.checked_add(1).unwrap_or(1);
        let at = self.begin_frame();
        req.encode(xid, &mut self.out);
        self.end_frame(at);
        if matches!(req, Request::CloseSession) {
            self.state = State::Closing;
        }
        xid
    }

    pub fn queue_ping(&mut self) {
        let at = self.begin_frame();
        Request::Ping.encode(ringkeeper::proto::codes::xid::PING, &mut self.out);
        self.end_frame(at);
    }

    /// Writes queued bytes until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A connect still in progress: writable later.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > 1 << 20 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads what the socket has until it would block. Returns false once the peer
    /// closed the connection (what was read before still yields frames).
    pub fn fill(&mut self) -> io::Result<bool> {
        if self.in_start > 0 && self.in_start == self.inb.len() {
            self.inb.clear();
            self.in_start = 0;
        } else if self.in_start > 1 << 16 {
            self.inb.drain(..self.in_start);
            self.in_start = 0;
        }
        loop {
            let len = self.inb.len();
            if self.inb.capacity() - len < 4096 {
                self.inb.reserve(len.max(4096));
            }
            let cap = self.inb.capacity();
            self.inb.resize(cap, 0);
            match self.sock.read(&mut self.inb[len..]) {
                Ok(0) => {
                    self.inb.truncate(len);
                    return Ok(false);
                }
                Ok(n) => self.inb.truncate(len + n),
                Err(e) => {
                    self.inb.truncate(len);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(true),
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(e),
                    }
                }
            }
        }
    }

    /// The next complete frame in the input, if any. The handshake's ConnectResponse is
    /// consumed here (it moves the state to Ready).
    pub fn next_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        let Some((start, end)) = self.cut_frame()? else {
            return Ok(None);
        };
        if self.state == State::Handshaking {
            let resp = ConnectResponse::decode(&self.inb[start..end])
                .map_err(|e| invalid(e.to_string()))?;
            if resp.session_id == 0 {
                return Err(io::Error::other("the server refused the session"));
            }
            self.session_id = resp.session_id;
            self.state = State::Ready;
            return self.next_frame();
        }
        let frame = &self.inb[start..end];
        let mut r = Reader::new(frame);
        let header = ReplyHeader::decode(&mut r).map_err(|e| invalid(e.to_string()))?;
        let body = &frame[r.position()..];
        Ok(Some(match header.xid {
            -1 => Frame::Notification(body),
            -2 => Frame::Pong,
            _ => Frame::Reply { header, body },
        }))
    }

    /// The bounds of the next complete frame's body, consumed from the input.
    fn cut_frame(&mut self) -> io::Result<Option<(usize, usize)>> {
        let avail = &self.inb[self.in_start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let n = i32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
        if n < 0 || n as usize > MAX_FRAME {
            return Err(invalid(format!("reply frame length {n}")));
        }
        let n = n as usize;
        if avail.len() < 4 + n {
            return Ok(None);
        }
        let start = self.in_start + 4;
        self.in_start = start + n;
        Ok(Some((start, start + n)))
    }
}

/// The handshake of a new session (no session id, no password, not read-only).
pub fn new_session_request(timeout_ms: i32) -> ConnectRequest {
    ConnectRequest::new_session(timeout_ms)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
