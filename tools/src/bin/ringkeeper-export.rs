//! `ringkeeper-export [--data-log-dir DIR] RK_DATA_DIR ZK_DATA_DIR`: writes a ringkeeper
//! data directory (stopped) out as an Apache ZooKeeper data directory that ZooKeeper
//! 3.8 starts from: `ZK_DATA_DIR/version-2/snapshot.<zxid>` with the same tree, Stats,
//! ACLs and sessions, and its epochs. See `ringkeeper_tools::export`.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: ringkeeper-export [--data-log-dir DIR] RK_DATA_DIR ZK_DATA_DIR";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut log_dir = None;
    if let Some(i) = args.iter().position(|a| a == "--data-log-dir") {
        if i + 1 >= args.len() {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        log_dir = Some(PathBuf::from(args.remove(i + 1)));
        args.remove(i);
    }
    let [rk, zk] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match ringkeeper_tools::export::export(rk.as_ref(), log_dir.as_deref(), zk.as_ref()) {
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
