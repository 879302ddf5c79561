//! ringkeeper's storage: the txn log (framing, group-committed io_uring writer,
//! recovery scan) and memory-mapped snapshots, with the file-system helpers they share.

pub mod dirlock;
pub mod epochs;
pub mod fsutil;
pub mod group;
pub mod log;
pub mod notify;
pub mod purge;
pub mod record;
pub mod recover;
pub mod segment;
pub mod snapshot;
pub mod transfer;
