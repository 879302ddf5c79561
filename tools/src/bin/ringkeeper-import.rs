//! `ringkeeper-import [--data-log-dir DIR] ZK_DATA_DIR RK_DATA_DIR`: reads an Apache
//! ZooKeeper data directory (its newest snapshot and the txn log after it) as ZooKeeper
//! loads it and writes a ringkeeper data directory with the same tree, Stats, ACLs,
//! sessions and zxids. See `ringkeeper_tools::import`.

use std::process::ExitCode;

const USAGE: &str = "usage: ringkeeper-import [--data-log-dir DIR] ZK_DATA_DIR RK_DATA_DIR";

fn main() -> ExitCode {
    let Some((from, log_dir, to)) = ringkeeper_tools::dirs_with_log_dir(USAGE) else {
        return ExitCode::from(2);
    };
    match ringkeeper_tools::import::import(&from, log_dir.as_deref(), &to) {
        Ok(i) => {
            let from = i.snapshot.as_ref().map_or("no snapshot".to_string(), |p| {
                format!("{} ({:#x})", p.display(), i.snapshot_zxid)
            });
            println!(
                "imported {} znodes and {} sessions at zxid {:#x}: {from} and {} logged txns after it",
                i.nodes, i.sessions, i.zxid, i.txns
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkeeper-import: {e}");
            ExitCode::from(1)
        }
    }
}
