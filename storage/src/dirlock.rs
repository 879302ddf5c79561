//! One server per directory: an advisory lock on a file in each storage directory,
//! held for the life of the process. Two servers appending to one txn log, or one
//! removing the other's half-written snapshot, would corrupt the data; the second one
//! must refuse to start instead.
//!
//! The lock is `flock(2)` on `LOCK`: the kernel drops it when the process ends however
//! it ends, so a server killed with SIGKILL never leaves a stale lock behind. The file
//! holds the owner's PID for people; the PID an error names comes from the kernel's
//! own lock table (`/proc/locks`) when it can be read there.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file's name in a locked directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

#[derive(Debug, Error)]
pub enum DirLockError {
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is held by {}", path.display(), holder_text(*holder))]
    Held { path: PathBuf, holder: Option<u32> },
}

fn holder_text(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("process {pid}"),
        None => "another process".into(),
    }
}

/// A held directory lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist), without waiting: if another process
    /// holds it, fails with [`DirLockError::Held`] naming that process when it can.
    ///
    /// One process MUST NOT lock the same directory twice (by one name or two): the
    /// second attempt fails as if another process held it.
    pub fn acquire(dir: &Path) -> Result<DirLock, DirLockError> {
        let path = dir.join(LOCK_FILE_NAME);
        let io_err = |source| DirLockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = holder_pid(&file);
                return Err(DirLockError::Held { path, holder });
            }
            return Err(io_err(e));
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0).map_err(io_err)?;
        file.write_all_at(pid.as_bytes(), 0).map_err(io_err)?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID holding the flock on `file`: the kernel's lock table first (exact even while
/// the holder has not yet written its PID), else the PID the file holds.
fn holder_pid(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let from_table = std::fs::read_to_string("/proc/locks")
        .ok()
        .and_then(|table| flock_holder(&table, meta.dev(), meta.ino()));
    from_table.or_else(|| {
        let mut text = String::new();
        let mut f = file;
        f.read_to_string(&mut text).ok()?;
        text.trim().parse().ok().filter(|&pid| pid != 0)
    })
}

/// The PID of the FLOCK entry for device `dev`, inode `ino` in a `/proc/locks` text.
/// Lines read `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF` (device as hex
/// major:minor, the inode in decimal); waiters (`1: -> FLOCK ...`) are skipped.
fn flock_holder(table: &str, dev: u64, ino: u64) -> Option<u32> {
    let major = libc::major(dev) as u64;
    let minor = libc::minor(dev) as u64;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let mut id = fields.get(5)?.split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && inode == ino && pid != 0).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_a_held_directory_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("rk-dirlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = DirLock::acquire(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(held.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        match DirLock::acquire(&dir) {
            Err(DirLockError::Held { path, holder }) => {
                assert_eq!(path, dir.join(LOCK_FILE_NAME));
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        // Released with the descriptor: the next one gets it.
        DirLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_lock_table_entry_of_the_file_gives_its_holder() {
        let dev = libc::makedev(0xfd, 0x01);
        let table = "1: POSIX  ADVISORY  WRITE 77 fd:01:5678 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4321 fd:01:5678 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 99 fd:01:5678 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 55 fd:02:5678 0 EOF\n";
        assert_eq!(flock_holder(table, dev, 5678), Some(4321));
        assert_eq!(flock_holder(table, dev, 5679), None);
        assert_eq!(flock_holder("", dev, 5678), None);
    }
}
