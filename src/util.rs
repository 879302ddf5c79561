//! Small single-threaded async helpers for code running on one executor.

pub use ringkeeper_storage::notify::Notify;
