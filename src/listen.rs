//! The client port: one server per port, as ZooKeeper's BindException makes it.
//!
//! Each shard accepts on a listener of its own, and the shards' listeners share the
//! port through SO_REUSEPORT. That group must stay private to this process: the kernel
//! lets any socket of the same user that also sets SO_REUSEPORT join it, and then it
//! spreads new connections over both processes, so some clients would see one tree and
//! some another. Start-up therefore
//! 1. binds the port once *without* SO_REUSEPORT, which fails while anything listens on
//!    it (another ringkeeper, Apache ZooKeeper, any server), and names the process that
//!    does; listeners that no process holds any more (a server killed a moment ago,
//!    whose io_uring rings the kernel has yet to tear down) are waited for instead, and
//!    so is a refusal whose listener is gone by the time we look;
//! 2. binds the shards' listeners (SO_REUSEADDR + SO_REUSEPORT);
//! 3. checks, in the kernel's socket table, that every listener on the port is one of
//!    ours, which catches a second server that probed in the instant between 1 and 2.
//!
//! SO_REUSEADDR on the listeners is for whoever binds the port next: the connections a
//! server leaves in TIME_WAIT inherit the listener's flag, and Linux lets a new
//! listener with SO_REUSEADDR (ZooKeeper sets it, and so do we) bind over TIME_WAIT
//! sockets only if they have it too. Without it, rolling back from ringkeeper to
//! ZooKeeper on the same port failed for up to a minute.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use thiserror::Error;

/// Connections waiting in each shard's accept queue (the kernel caps it at somaxconn).
pub const LISTEN_BACKLOG: i32 = 1024;

/// How long start-up waits for listening sockets that no process holds any more to
/// close. A server killed with SIGKILL leaves its listeners to its io_uring rings,
/// which the kernel tears down a moment after the process is gone; a restart must not
/// fail because it came too soon.
pub const ORPHANED_LISTENER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}{}", held_by(holders))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
        /// What listens there instead, where the kernel's tables tell.
        holders: Vec<ForeignListener>,
    },
    #[error(
        "another process listens on {addr} too ({}): refusing to share the client port",
        describe(others)
    )]
    Shared {
        addr: SocketAddr,
        others: Vec<ForeignListener>,
    },
}

fn held_by(holders: &[ForeignListener]) -> String {
    if holders.is_empty() {
        " (is another ZooKeeper or ringkeeper server running on this port?)".into()
    } else {
        format!(" (it is listened on: {})", describe(holders))
    }
}

fn describe(others: &[ForeignListener]) -> String {
    others
        .iter()
        .map(|o| match o.pid {
            Some(pid) => format!("{} by process {pid}", o.addr),
            None => format!("{} by no process any more (closing)", o.addr),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A listening socket on our port that is not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignListener {
    pub addr: SocketAddr,
    pub inode: u64,
    pub pid: Option<u32>,
}

fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sk.set_reuse_address(true)?;
    if reuse_port {
        sk.set_reuse_port(true)?;
    }
    sk.bind(&addr.into())?;
    sk.listen(LISTEN_BACKLOG)?;
    Ok(sk)
}

/// Binds `addr` for `count` shards. Fails if anything else listens on the port,
/// before or while they bind. Returns the listeners and the address bound (the port
/// the kernel chose if `addr` asked for port 0).
pub fn bind_shard_listeners(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<TcpListener>, SocketAddr), ListenError> {
    let bound = probe(addr)?;
    let bind_err = |source| ListenError::Bind {
        addr: bound,
        source,
        holders: Vec::new(),
    };
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        listeners.push(TcpListener::from(socket(bound, true).map_err(bind_err)?));
    }
    let others = foreign_listeners(bound, &listeners).map_err(bind_err)?;
    if !others.is_empty() {
        return Err(ListenError::Shared {
            addr: bound,
            others,
        });
    }
    Ok((listeners, bound))
}

/// Binds `addr` alone (no SO_REUSEPORT) and lets it go: fails while anything listens
/// there, except that listeners no process holds any more are waited for (see
/// [`ORPHANED_LISTENER_WAIT`]). Returns the address bound.
fn probe(addr: SocketAddr) -> Result<SocketAddr, ListenError> {
    let deadline = Instant::now() + ORPHANED_LISTENER_WAIT;
    let mut said = false;
    loop {
        let err = match socket(addr, false) {
            Ok(sk) => {
                let bound = sk.local_addr().ok().and_then(|a| a.as_socket());
                return Ok(bound.unwrap_or(addr));
            }
            Err(e) => e,
        };
        let holders = if err.kind() == std::io::ErrorKind::AddrInUse {
            foreign_listeners(addr, &[]).unwrap_or_default()
        } else {
            Vec::new()
        };
        if !worth_waiting_for(&err, &holders) || Instant::now() >= deadline {
            return Err(ListenError::Bind {
                addr,
                source: err,
                holders,
            });
        }
        if !said {
            said = true;
            tracing::info!(
                "{addr} is still listened on by sockets of a server that has stopped; waiting up to {ORPHANED_LISTENER_WAIT:?} for them to close"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a failed probe may succeed soon: the port is in use, yet no process we can
/// see listens on it. Either every listener found belongs to no process (a killed
/// server's, closing), or none is found at all: the listener that refused the bind
/// closed in the instant before the kernel's table was read. That second case is how a
/// restart right after a SIGKILL failed in CI ("Address already in use", no holder).
fn worth_waiting_for(err: &std::io::Error, holders: &[ForeignListener]) -> bool {
    err.kind() == std::io::ErrorKind::AddrInUse && holders.iter().all(|h| h.pid.is_none())
}

/// The listening TCP sockets whose address overlaps `addr` (same port; same address,
/// or either one the wildcard) that are none of `ours`.
pub fn foreign_listeners(
    addr: SocketAddr,
    ours: &[TcpListener],
) -> std::io::Result<Vec<ForeignListener>> {
    let mut our_inodes = HashSet::new();
    for l in ours {
        let fd = l.as_raw_fd();
        our_inodes.insert(std::fs::metadata(format!("/proc/self/fd/{fd}"))?.ino());
    }
    let mut found = Vec::new();
    // /proc/net/tcp is read in pieces while sockets come and go, and may then list
    // one socket twice (seen in CI with other tests binding ports meanwhile).
    let mut seen = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel: nothing listens there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (sock_addr, inode) in listening_sockets(&text) {
            if sock_addr.port() == addr.port()
                && overlaps(sock_addr.ip(), addr.ip())
                && !our_inodes.contains(&inode)
                && seen.insert(inode)
            {
                found.push(ForeignListener {
                    addr: sock_addr,
                    inode,
                    pid: socket_owner(inode),
                });
            }
        }
    }
    Ok(found)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a connection to one address could reach a listener on the other.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (canonical(a), canonical(b));
    a.is_unspecified() || b.is_unspecified() || a == b
}

/// (local address, socket inode) of each LISTEN entry of a /proc/net/tcp or tcp6 text.
/// Addresses are hex words in host byte order: `0100007F:0885` is 127.0.0.1:2181.
fn listening_sockets(table: &str) -> Vec<(SocketAddr, u64)> {
    const TCP_LISTEN: &str = "0A";
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != TCP_LISTEN {
            continue;
        }
        let Some((ip_hex, port_hex)) = f[1].split_once(':') else {
            continue;
        };
        let (Some(ip), Ok(port), Ok(inode)) = (
            parse_proc_ip(ip_hex),
            u16::from_str_radix(port_hex, 16),
            f[9].parse::<u64>(),
        ) else {
            continue;
        };
        out.push((SocketAddr::new(ip, port), inode));
    }
    out
}

fn parse_proc_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The process holding socket `inode`, found as `ss -p` does: by the descriptors
/// under /proc (visible only for processes we may inspect).
fn socket_owner(inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0885 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0885 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4244 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn proc_net_tcp_listeners_are_read_with_their_inodes() {
        let got = listening_sockets(TCP);
        assert_eq!(
            got,
            vec![
                ("127.0.0.1:2181".parse().unwrap(), 4242),
                ("0.0.0.0:8080".parse().unwrap(), 4244),
            ]
        );
    }

    #[test]
    fn ipv6_addresses_are_host_order_words() {
        let loopback = "00000000000000000000000001000000";
        assert_eq!(parse_proc_ip(loopback), Some("::1".parse().unwrap()));
        let mapped = "0000000000000000FFFF00000100007F";
        assert_eq!(
            canonical(parse_proc_ip(mapped).unwrap()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn wildcards_overlap_every_address_of_the_port() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any4: IpAddr = "0.0.0.0".parse().unwrap();
        let any6: IpAddr = "::".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(overlaps(lo, lo) && overlaps(lo, any4) && overlaps(any6, lo));
        assert!(!overlaps(lo, other));
    }

    #[test]
    fn a_port_in_use_is_waited_for_only_while_no_process_holds_it() {
        let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let closing = ForeignListener {
            addr: "127.0.0.1:2181".parse().unwrap(),
            inode: 1,
            pid: None,
        };
        let held = ForeignListener {
            pid: Some(4242),
            ..closing.clone()
        };
        assert!(
            worth_waiting_for(&in_use, &[]),
            "the listener closed before the look"
        );
        assert!(worth_waiting_for(&in_use, std::slice::from_ref(&closing)));
        assert!(!worth_waiting_for(
            &in_use,
            &[closing.clone(), held.clone()]
        ));
        assert!(!worth_waiting_for(&in_use, &[held]));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!worth_waiting_for(&denied, &[]));
        assert!(!worth_waiting_for(&denied, &[closing]));
    }

    fn raw_reuseport_listener(addr: SocketAddr) -> TcpListener {
        TcpListener::from(socket(addr, true).unwrap())
    }

    #[test]
    fn a_reuseport_listener_that_is_not_ours_is_found() {
        let (ours, bound) = bind_shard_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        assert_eq!(ours.len(), 2);
        assert!(foreign_listeners(bound, &ours).unwrap().is_empty());
        // Another socket joins the SO_REUSEPORT group (as a second server would).
        let intruder = raw_reuseport_listener(bound);
        let found = foreign_listeners(bound, &ours).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].addr, bound);
        assert_eq!(found[0].pid, Some(std::process::id()));
        drop(intruder);
        assert!(foreign_listeners(bound, &ours).unwrap().is_empty());
    }

    #[test]
    fn binding_a_port_a_reuseport_group_holds_fails() {
        let (ours, bound) = bind_shard_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        match bind_shard_listeners(bound, 2) {
            Err(ListenError::Bind {
                addr,
                source,
                holders,
            }) => {
                assert_eq!(addr, bound);
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
                assert_eq!(holders.len(), 2, "{holders:?}");
                assert!(holders.iter().all(|h| h.pid == Some(std::process::id())));
            }
            other => panic!("a second group bound the port: {other:?}"),
        }
        drop(ours);
    }
}
