//! `ringkeeper-wire`: reads one direction of a recorded quorum connection and prints
//! what was sent (`dump`) or checks that every item decodes with ringkeeper's codecs
//! and encodes back to the very same bytes (`check`); or replays both sides of one
//! recorded learner connection through ringkeeper's learner (`follow`).
//!
//! A recording is the raw bytes one side sent, from the first to the last. Its kind
//! says which side: `election-connecting` / `election-accepting` (the side that opened
//! the election connection, or the other), `learner-to-leader` / `leader-to-learner`.

use std::process::ExitCode;

use ringkeeper::zab::replay::replay_learner;
use ringkeeper::zab::wire::{
    split_election_stream, split_quorum_stream, Direction, ElectionItem, QuorumItem, Sent, Split,
};

const USAGE: &str = "usage: ringkeeper-wire check|dump KIND FILE...
       ringkeeper-wire follow LEARNER_TO_LEADER LEADER_TO_LEARNER
KIND: election-connecting | election-accepting | learner-to-leader | leader-to-learner
follow: replays one recorded learner connection's leader side through ringkeeper's
learner; fails if it refuses a packet or ACKs other zxids than the recorded learner";

enum Kind {
    Election { connecting: bool },
    Quorum(Direction),
}

fn parse_kind(s: &str) -> Option<Kind> {
    Some(match s {
        "election-connecting" => Kind::Election { connecting: true },
        "election-accepting" => Kind::Election { connecting: false },
        "learner-to-leader" => Kind::Quorum(Direction::ToLeader),
        "leader-to-learner" => Kind::Quorum(Direction::FromLeader),
        _ => return None,
    })
}

/// What `check` found in one file.
struct Checked {
    items: usize,
    tail: usize,
    summary: Vec<String>,
}

/// Re-encodes each item and compares it with the bytes it was read from.
fn compare<T>(
    bytes: &[u8],
    split: Split<T>,
    encode: impl Fn(&T, &mut Vec<u8>),
    describe: impl Fn(&T) -> Result<String, String>,
) -> Result<Checked, String> {
    let mut summary = Vec::new();
    for Sent { at, item } in &split.items {
        let mut again = Vec::new();
        encode(item, &mut again);
        if again != bytes[at.clone()] {
            return Err(format!(
                "item at offset {} re-encodes to different bytes ({} bytes, was {})",
                at.start,
                again.len(),
                at.len()
            ));
        }
        summary.push(describe(item).map_err(|e| format!("item at offset {}: {e}", at.start))?);
    }
    Ok(Checked {
        items: split.items.len(),
        tail: split.incomplete_tail_bytes,
        summary,
    })
}

fn read(kind: &Kind, bytes: &[u8]) -> Result<Checked, String> {
    let at =
        |(offset, e): (usize, ringkeeper::zab::wire::WireError)| format!("offset {offset}: {e}");
    match kind {
        Kind::Election { connecting } => {
            let split = split_election_stream(bytes, *connecting).map_err(at)?;
            compare(bytes, split, ElectionItem::encode, |i| {
                Ok(match i {
                    ElectionItem::Opening(o) => format!("opening {o:?}"),
                    ElectionItem::Notification(n) => format!(
                        "notification state={} leader={} zxid=0x{:x} electionEpoch=0x{:x} peerEpoch={:?} version={:?} config={:?}",
                        n.state,
                        n.leader,
                        n.zxid,
                        n.election_epoch,
                        n.peer_epoch,
                        n.version,
                        n.config.as_deref().map(String::from_utf8_lossy)
                    ),
                })
            })
        }
        Kind::Quorum(direction) => {
            let split = split_quorum_stream(bytes, *direction).map_err(at)?;
            compare(bytes, split, QuorumItem::encode, |i| match i {
                QuorumItem::SnapTree(t) => Ok(format!(
                    "tree of {} nodes, {} sessions, {} ACL lists",
                    t.nodes.len(),
                    t.sessions.len(),
                    t.acls.len()
                )),
                QuorumItem::Packet(p) => {
                    // The payload must decode too, and encode to the packet's data.
                    let payload = p.payload(*direction).map_err(|e| e.to_string())?;
                    if payload.encode().as_deref() != p.data.as_deref() {
                        return Err(format!("{} payload re-encodes differently", p.type_name()));
                    }
                    Ok(format!("{} zxid=0x{:x} {payload:?}", p.type_name(), p.zxid))
                }
            })
        }
    }
}

/// `follow`: one connection's two recorded sides.
fn follow(to_leader: &str, from_leader: &str) -> Result<String, String> {
    let items = |file: &str, direction| -> Result<Vec<QuorumItem>, String> {
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        let split = split_quorum_stream(&bytes, direction)
            .map_err(|(offset, e)| format!("{file}: offset {offset}: {e}"))?;
        Ok(split.items.into_iter().map(|s| s.item).collect())
    };
    let r = replay_learner(
        &items(to_leader, Direction::ToLeader)?,
        &items(from_leader, Direction::FromLeader)?,
    )
    .map_err(|e| format!("{from_leader}: the learner refused {e}"))?;
    let mut ours = r.acks.clone();
    let mut theirs = r.recorded_acks.clone();
    ours.sort_unstable();
    theirs.sort_unstable();
    let summary = format!(
        "{from_leader}: learner {}, {} packets ({} session answers not replayed), sync {}, up to date {}, {} txns applied, {} ACKs (recorded {})",
        r.learner_id,
        r.packets,
        r.session_packets,
        r.sync.unwrap_or("none"),
        r.up_to_date,
        r.applied.len(),
        ours.len(),
        theirs.len()
    );
    // Both learners took the same stream, so they ACK the same zxids; except that the
    // recording ends when the recorded learner's connection does (a member killed, the
    // ensemble stopped), so its last ACKs may be missing: ours beyond the recorded ones
    // must come after all of them.
    let recorded_last = theirs.last().copied().unwrap_or(i64::MIN);
    let n = theirs.len().min(ours.len());
    if !r.up_to_date || ours[..n] != theirs[..] || ours[n..].iter().any(|z| *z <= recorded_last) {
        return Err(format!(
            "{summary}\n  ACKs differ: ringkeeper {ours:x?}\n  recorded {theirs:x?}"
        ));
    }
    Ok(summary)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("follow") {
        if args.len() != 3 {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        return match follow(&args[1], &args[2]) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringkeeper-wire: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.len() < 3 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let verbose = match args[0].as_str() {
        "check" => false,
        "dump" => true,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(kind) = parse_kind(&args[1]) else {
        eprintln!("ringkeeper-wire: unknown kind {:?}\n{USAGE}", args[1]);
        return ExitCode::from(2);
    };
    let mut failed = false;
    for file in &args[2..] {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("ringkeeper-wire: {file}: {e}");
                failed = true;
                continue;
            }
        };
        match read(&kind, &bytes) {
            Ok(c) => {
                println!("{file}: {} items, {} bytes re-encoded identically, {} bytes of an unfinished last item", c.items, bytes.len() - c.tail, c.tail);
                if verbose {
                    for s in c.summary {
                        println!("  {s}");
                    }
                }
            }
            Err(e) => {
                eprintln!("ringkeeper-wire: {file}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
