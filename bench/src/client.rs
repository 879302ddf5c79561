//! A blocking ZooKeeper-protocol connection for setup steps (the parents a scenario
//! needs), built on the project's own codec.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringkeeper::proto::{ConnectResponse, Reader, ReplyHeader, Request};

pub struct Conn {
    rd: BufReader<TcpStream>,
    wr: BufWriter<TcpStream>,
    next_xid: i32,
    frame: Vec<u8>,
    pub session_id: i64,
}

/// One reply's error code.
pub struct Reply {
    pub err: i32,
}

impl Conn {
    pub fn connect(addr: &str, timeout_ms: i32) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Conn {
            rd: BufReader::with_capacity(1 << 16, s.try_clone()?),
            wr: BufWriter::with_capacity(1 << 16, s),
            next_xid: 1,
            frame: Vec::new(),
            session_id: 0,
        };
        let mut body = Vec::new();
        crate::conn::new_session_request(timeout_ms).encode(&mut body);
        c.write_frame(&body)?;
        c.flush()?;
        c.read_frame()?;
        let resp = ConnectResponse::decode(&c.frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if resp.session_id == 0 {
            return Err(io::Error::other("session refused"));
        }
        c.session_id = resp.session_id;
        Ok(c)
    }

    fn write_frame(&mut self, body: &[u8]) -> io::Result<()> {
        self.wr.write_all(&(body.len() as i32).to_be_bytes())?;
        self.wr.write_all(body)
    }

    /// Queues a request; returns its xid. Call `flush` to send.
    pub fn send(&mut self, req: &Request) -> io::Result<i32> {
        let xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        let mut body = Vec::with_capacity(64);
        req.encode(xid, &mut body);
        self.write_frame(&body)?;
        Ok(xid)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.wr.flush()
    }

    fn read_frame(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.rd.read_exact(&mut len)?;
        let n = i32::from_be_bytes(len);
        if !(0..=64 << 20).contains(&n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame length {n}"),
            ));
        }
        self.frame.resize(n as usize, 0);
        self.rd.read_exact(&mut self.frame)
    }

    /// The next reply to a request (watch notifications and pings are skipped).
    pub fn recv(&mut self) -> io::Result<Reply> {
        loop {
            self.read_frame()?;
            let mut r = Reader::new(&self.frame);
            let h = ReplyHeader::decode(&mut r)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if h.xid == -1 || h.xid == -2 {
                continue;
            }
            return Ok(Reply { err: h.err });
        }
    }

    pub fn close(mut self) {
        let _ = self.send(&Request::CloseSession);
        let _ = self.flush();
        let _ = self.recv();
    }
}
