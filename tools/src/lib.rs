//! Operator and test tools for ringkeeper: `ringkeeper-dump` (txn logs and snapshots,
//! ringkeeper's and Apache ZooKeeper's), `ringkeeper-export` (a ringkeeper data
//! directory as one Apache ZooKeeper starts from), `ringkeeper-import` (the reverse),
//! `ringkeeper-wire` (recordings of ZooKeeper quorum traffic, printed or checked) and
//! `ringkeeper-lincheck` (a recorded history of client operations checked for
//! linearizability), and `ringkeeper-cli`, a shell with zkCli's commands.

pub mod cli;
pub mod dump;
pub mod export;
pub mod history;
pub mod import;
pub mod lincheck;
pub mod zkclient;

/// The arguments of a tool that takes `[--data-log-dir DIR] FROM TO`: (FROM, DIR, TO);
/// None (after printing `usage`) if they are not that.
pub fn dirs_with_log_dir(
    usage: &str,
) -> Option<(
    std::path::PathBuf,
    Option<std::path::PathBuf>,
    std::path::PathBuf,
)> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut log_dir = None;
    if let Some(i) = args.iter().position(|a| a == "--data-log-dir") {
        if i + 1 >= args.len() {
            eprintln!("{usage}");
            return None;
        }
        log_dir = Some(args.remove(i + 1).into());
        args.remove(i);
    }
    match <[String; 2]>::try_from(args) {
        Ok([from, to]) => Some((from.into(), log_dir, to.into())),
        Err(_) => {
            eprintln!("{usage}");
            None
        }
    }
}
