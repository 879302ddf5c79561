//! `ringkeeper-lincheck HISTORY`: checks a recorded history of ZooKeeper operations
//! (JSON lines, see `ringkeeper_tools::history`) for linearizability, key by key.
//! Prints one line per key; exits 0 when every key is linearizable, 1 when one is
//! not, 2 when the history cannot be read, 3 when the search gave up on a key
//! (`lincheck::STATE_LIMIT` states) without finding a violation.

use std::process::ExitCode;

use ringkeeper_tools::history::{self, Verdict};

const USAGE: &str = "usage: ringkeeper-lincheck HISTORY.jsonl";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ringkeeper-lincheck: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let entries = match history::parse(&text) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ringkeeper-lincheck: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut violated, mut undecided) = (false, false);
    for r in history::check(&entries) {
        match &r.verdict {
            Verdict::Linearizable => println!(
                "{}: linearizable ({} operations, {} with unknown outcome)",
                r.key, r.operations, r.unknown
            ),
            Verdict::Violation(why) => {
                violated = true;
                println!(
                    "{}: NOT linearizable ({} operations): {why}",
                    r.key, r.operations
                );
            }
            Verdict::Undecided { limit } => {
                undecided = true;
                println!(
                    "{}: undecided ({} operations, {} with unknown outcome): the search \
                     gave up after {limit} states",
                    r.key, r.operations, r.unknown
                );
            }
        }
    }
    if violated {
        ExitCode::FAILURE
    } else if undecided {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
