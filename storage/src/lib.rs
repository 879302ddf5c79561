//! ringkeeper's on-disk formats. So far: the txn log's segment header and record
//! framing, with the recovery scan that tells a torn tail (truncate it) from
//! corruption (stop and name the offset). The io_uring writer, group commit and
//! snapshots build on these (issue 3); nothing here touches a file yet.

pub mod record;
