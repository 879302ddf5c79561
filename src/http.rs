//! The little HTTP/1.1 the operator endpoints need (the AdminServer and the Prometheus
//! endpoint): one request per connection, a GET with a path and a query, an answer with
//! a length, then the connection closes (as ZooKeeper's Jetty answers its admin
//! requests). Anything else gets the status that says why, never a hang: the head has
//! a size limit and a deadline.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

/// Largest request head read (request line and headers).
const HEAD_LIMIT_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query's `key=value` pairs, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Header Fields Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Why a request head could not be read; the status to answer with, if any.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed before a whole head: nothing to answer.
    Closed,
    Bad(u16, &'static str),
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a request head (everything before the blank line).
pub fn parse_head(head: &str) -> Result<Request, HeadError> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Bad(400, "only HTTP/1.x is served"));
    }
    if !target.starts_with('/') {
        return Err(HeadError::Bad(400, "the request target must be a path"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(HeadError::Bad(400, "malformed header line"));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        path: percent_decode(path),
        query,
        headers,
    })
}

/// Reads one request head from `stream`, within `deadline`.
pub async fn read_request(
    stream: &mut TcpStream,
    deadline: Duration,
) -> Result<Request, HeadError> {
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end])
                    .map_err(|_| HeadError::Bad(400, "the request head is not text"))?;
                return parse_head(head);
            }
            if buf.len() > HEAD_LIMIT_BYTES {
                return Err(HeadError::Bad(413, "request head too large"));
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(HeadError::Closed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let timeout = async {
        glommio::timer::sleep(deadline).await;
        Err(HeadError::Bad(408, "no whole request head in time"))
    };
    futures_lite::future::or(read, timeout).await
}

/// Writes `r` with its length and `Connection: close`.
pub async fn write_response(
    stream: &mut TcpStream,
    r: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nServer: ringkeeper\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(&r.body).await?;
    }
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_with_a_query_and_headers() {
        let r = parse_head(
            "GET /commands/wchc?a=1&b=x%20y&flag HTTP/1.1\r\nHost: h\r\nAuthorization: digest u:p",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/commands/wchc");
        assert_eq!(r.query("a"), Some("1"));
        assert_eq!(r.query("b"), Some("x y"));
        assert_eq!(r.query("flag"), Some(""));
        assert_eq!(r.header("authorization"), Some("digest u:p"));
    }

    #[test]
    fn malformed_heads_are_refused_with_400() {
        for bad in [
            "",
            "GET",
            "GET /x",
            "GET /x HTTP/2",
            "GET x HTTP/1.1",
            "GET /x HTTP/1.1 extra",
            "GET /x HTTP/1.1\r\nno colon here",
        ] {
            assert!(
                matches!(parse_head(bad), Err(HeadError::Bad(400, _))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
