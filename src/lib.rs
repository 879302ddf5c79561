//! ringkeeper: a ZooKeeper-compatible coordination server on a thread-per-core
//! io_uring runtime.
//!
//! Where things happen: a request is decoded in [`proto`], read or queued on its
//! [`shard`], ordered and applied by the [`broadcast`] core against the [`tree`], and
//! answered back on the shard; [`session`] holds the session table and watches.

pub mod broadcast;
pub mod config;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod peering;
pub mod proto;
pub mod recovery;
pub mod server;
pub mod session;
pub mod shard;
pub mod tls;
pub mod tree;
pub mod util;
pub mod zab;
pub mod zkformat;
