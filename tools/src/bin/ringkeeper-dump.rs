//! `ringkeeper-dump log|snapshot FILE [--json]`: what a txn log or a snapshot holds,
//! ringkeeper's or Apache ZooKeeper's (`log.*`, `snapshot.*`, `.gz` and `.snappy`
//! snapshots included), every checksum verified. A log prints one line per txn (zxid,
//! time, session, cxid, type, path, a summary); a snapshot its sessions and every node
//! with its Stat and ACL. `--json` prints one JSON object per line instead. Damage
//! ends the listing with the offset of the first bad byte and exit status 1.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ringkeeper_tools::dump;

const USAGE: &str = "usage: ringkeeper-dump log|snapshot FILE [--json]";

/// Prints a line; false once stdout is gone (`| head`): the listing then just stops.
fn emit(out: &mut impl Write, line: &str) -> bool {
    writeln!(out, "{line}").is_ok()
}

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    let (kind, file) = match rest.as_slice() {
        [k, f] if k.as_str() == "log" || k.as_str() == "snapshot" => (k.as_str(), PathBuf::from(f)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let bad = |offset: u64, reason: &str| {
        eprintln!(
            "ringkeeper-dump: {} at offset {offset}: {reason}",
            file.display()
        );
        ExitCode::from(1)
    };
    if kind == "snapshot" {
        return match dump::read_snapshot(&file) {
            Ok(d) => {
                if json {
                    for v in dump::snapshot_json(&d) {
                        if !emit(&mut out, &v.to_string()) {
                            break;
                        }
                    }
                } else {
                    let _ = write!(out, "{}", dump::snapshot_text(&d));
                }
                let _ = out.flush();
                ExitCode::SUCCESS
            }
            Err(e) => bad(e.offset, &e.reason),
        };
    }
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ringkeeper-dump: {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let d = match dump::read_log(&bytes) {
        Ok(d) => d,
        Err(e) => return bad(e.offset, &e.reason),
    };
    for r in &d.records {
        let line = if json {
            dump::record_json(r).to_string()
        } else {
            dump::record_text(r)
        };
        if !emit(&mut out, &line) {
            return ExitCode::SUCCESS;
        }
    }
    if let Some(at) = d.torn_at {
        let note = format!(
            "a torn last write at offset {at} (a crash during a write; never acknowledged)"
        );
        let line = if json {
            serde_json::json!({"end": "torn", "offset": at, "note": note}).to_string()
        } else {
            format!("-- {note}")
        };
        emit(&mut out, &line);
    }
    if d.damage.is_none() && !json {
        emit(
            &mut out,
            &format!("-- {} {} txns", d.records.len(), d.format),
        );
    }
    let _ = out.flush();
    match d.damage {
        Some(e) => bad(e.offset, &e.reason),
        None => ExitCode::SUCCESS,
    }
}
