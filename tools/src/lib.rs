//! Operator and test tools for ringkeeper: `ringkeeper-dump` (txn logs and snapshots,
//! ringkeeper's and Apache ZooKeeper's), `ringkeeper-export` (a ringkeeper data
//! directory as one Apache ZooKeeper starts from), `ringkeeper-wire` (recordings of
//! ZooKeeper quorum traffic, printed or checked) and `ringkeeper-lincheck` (a recorded
//! history of client operations checked for linearizability). The CLI shell and the
//! importer of Apache ZooKeeper data directories are still to come.

pub mod dump;
pub mod export;
pub mod history;
