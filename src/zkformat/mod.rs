//! Apache ZooKeeper's own data formats, read and written exactly: its txn entries
//! (what a PROPOSAL carries and a ZooKeeper txn log holds) and its serialized data
//! tree (what a leader sends after SNAP and a ZooKeeper snapshot file holds); and
//! ringkeeper's txns converted to ZooKeeper's and back.

pub mod convert;
pub mod files;
pub mod snapshot;
pub mod txn;
