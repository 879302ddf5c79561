//! `ringkeeper-export [--data-log-dir DIR] RK_DATA_DIR ZK_DATA_DIR`: writes a ringkeeper
//! data directory (stopped) out as an Apache ZooKeeper data directory that ZooKeeper
//! 3.8 starts from: `ZK_DATA_DIR/version-2/snapshot.<zxid>` with the same tree, Stats,
//! ACLs and sessions, and its epochs. See `ringkeeper_tools::export`.

use std::process::ExitCode;

const USAGE: &str = "usage: ringkeeper-export [--data-log-dir DIR] RK_DATA_DIR ZK_DATA_DIR";

fn main() -> ExitCode {
    let Some((from, log_dir, to)) = ringkeeper_tools::dirs_with_log_dir(USAGE) else {
        return ExitCode::from(2);
    };
    match ringkeeper_tools::export::export(&from, log_dir.as_deref(), &to) {
        Ok(e) => {
            println!(
                "exported {} znodes and {} sessions at zxid {:#x} to {}",
                e.nodes,
                e.sessions,
                e.zxid,
                e.snapshot.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkeeper-export: {e}");
            ExitCode::from(1)
        }
    }
}
