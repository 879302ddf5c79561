//! `ringkeeper-lincheck HISTORY`: checks a recorded history of ZooKeeper operations
//! (JSON lines, see `ringkeeper_tools::history`) for linearizability, key by key.
//! Prints one line per key; exits 0 when every key is linearizable, 1 when one is
//! not, 2 when the history cannot be read.

use std::process::ExitCode;

use ringkeeper_tools::history;

const USAGE: &str = "usage: ringkeeper-lincheck HISTORY.jsonl";

/// The search recurses once per operation of a key: room for long histories.
const CHECK_STACK_BYTES: usize = 512 << 20;

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
    let reports = std::thread::Builder::new()
        .stack_size(CHECK_STACK_BYTES)
        .spawn(move || history::check(&entries))
        .expect("a thread for the check")
        .join()
        .expect("the check does not panic");
    let mut linearizable = true;
    for r in &reports {
        match &r.violation {
            None => println!(
                "{}: linearizable ({} operations, {} with unknown outcome)",
                r.key, r.operations, r.unknown
            ),
            Some(why) => {
                linearizable = false;
                println!(
                    "{}: NOT linearizable ({} operations): {why}",
                    r.key, r.operations
                );
            }
        }
    }
    if linearizable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
