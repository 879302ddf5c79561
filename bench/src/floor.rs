//! The machine's floor for a watch fan-out, with no ZooKeeper server at all: one
//! thread writes one watch-event frame (the bytes a server sends for the fan-out's
//! node) to each of N-1 loopback TCP connections, and this thread reads them the way
//! the bench client does (epoll over every socket, one timestamp per wake-up). A round
//! is timed from just before the sender is told to go to the last frame's arrival.
//!
//! This is the part of `fanout`'s time no server can remove on this machine: a
//! loopback send per watcher (the kernel runs the receiving side of TCP in the
//! sender's context) and the client's reads. The server's commit, its own work per
//! event and the re-registrations come on top.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use ringkeeper::proto::codes::keeper_state;
use ringkeeper::proto::{put_event_frame, EventType, WatcherEvent};

use crate::stats::Stats;
use crate::workload::fanout;

pub struct Outcome {
    pub stats: Stats,
    pub window: Duration,
    pub rounds: u64,
}

/// Runs rounds for `warmup`, then measures for `duration`; `watchers` connections.
pub fn run(watchers: usize, warmup: Duration, duration: Duration) -> io::Result<Outcome> {
    let mut frame = Vec::new();
    put_event_frame(
        &mut frame,
        -1,
        &WatcherEvent {
            event_type: EventType::NodeDataChanged as i32,
            state: keeper_state::SYNC_CONNECTED,
            path: fanout::NODE.to_string(),
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut readers = Vec::with_capacity(watchers);
    let mut writers = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let c = TcpStream::connect(addr)?;
        let (s, _) = listener.accept()?;
        c.set_nodelay(true)?;
        s.set_nodelay(true)?;
        c.set_nonblocking(true)?;
        readers.push(mio::net::TcpStream::from_std(c));
        writers.push(s);
    }
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let sender_frame = frame.clone();
    let sender = std::thread::spawn(move || -> io::Result<()> {
        while go_rx.recv().is_ok() {
            for w in writers.iter_mut() {
                w.write_all(&sender_frame)?;
            }
        }
        Ok(())
    });

    let mut poll = Poll::new()?;
    for (i, r) in readers.iter_mut().enumerate() {
        poll.registry().register(r, Token(i), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of this round's frame still due per connection.
    let mut due = vec![0usize; watchers];
    let mut stats = Stats::default();
    let mut rounds = 0u64;
    let start = Instant::now();
    let measure_from = start + warmup;
    let mut measure_until = None;
    loop {
        let t0 = Instant::now();
        let measuring = t0 >= measure_from;
        if measuring && measure_until.is_none() {
            measure_until = Some(t0 + duration);
        }
        if measure_until.is_some_and(|u| t0 >= u) {
            break;
        }
        due.iter_mut().for_each(|d| *d = frame.len());
        let mut left = watchers;
        go_tx
            .send(())
            .map_err(|_| io::Error::other("the sender thread ended"))?;
        while left > 0 {
            poll.poll(&mut events, Some(Duration::from_secs(10)))?;
            if events.is_empty() {
                return Err(io::Error::other("no frame arrived within 10 s"));
            }
            let now = Instant::now();
            for ev in events.iter() {
                let i = ev.token().0;
                loop {
                    match readers[i].read(&mut buf) {
                        Ok(0) => return Err(io::Error::other("a connection closed")),
                        Ok(n) => {
                            if n > due[i] {
                                return Err(io::Error::other("more bytes than one frame"));
                            }
                            due[i] -= n;
                            if due[i] == 0 {
                                left -= 1;
                                let us = now.duration_since(t0).as_micros() as u64;
                                stats.record("notify", false, us, 0);
                                if left == 0 && measuring {
                                    stats.record("last_notify", false, us, 0);
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        rounds += u64::from(measuring);
        if !measuring {
            // Only the measured rounds' arrivals count.
            stats.by_op.remove("notify");
        }
    }
    drop(go_tx);
    sender
        .join()
        .map_err(|_| io::Error::other("the sender thread panicked"))??;
    Ok(Outcome {
        stats,
        window: duration,
        rounds,
    })
}
