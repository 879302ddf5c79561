//! ringkeeper: a ZooKeeper-compatible coordination server.
pub mod proto;
pub mod tree;
