//! A member's two Zab epochs on disk, as Apache ZooKeeper keeps them: files named
//! `acceptedEpoch` and `currentEpoch` beside the snapshots, each holding the number in
//! decimal. acceptedEpoch is the newest epoch the member promised to follow;
//! currentEpoch the newest whose leader's history it took. Each is replaced atomically
//! (temp file, fsync, rename, fsync of the directory), so a crash leaves the old value
//! or the new one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::fsutil::fsync_dir;

pub const ACCEPTED_EPOCH_FILE: &str = "acceptedEpoch";
pub const CURRENT_EPOCH_FILE: &str = "currentEpoch";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epochs {
    pub accepted: i64,
    pub current: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds {found:?}, not an epoch (a decimal number)")]
    NotANumber { path: PathBuf, found: String },
    #[error("{dir}: the accepted epoch {accepted} is below the current epoch {current}: the epoch files are damaged")]
    AcceptedBelowCurrent {
        dir: PathBuf,
        accepted: i64,
        current: i64,
    },
    #[error("{dir}: the current epoch {current} is below the epoch of the last logged txn ({last_zxid_epoch}): the epoch files are older than the log")]
    CurrentBelowLog {
        dir: PathBuf,
        current: i64,
        last_zxid_epoch: i64,
    },
}

fn read(dir: &Path, name: &str) -> Result<Option<i64>, EpochError> {
    let path = dir.join(name);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EpochError::Io { path, source }),
    };
    let line = text.lines().next().unwrap_or("").trim();
    line.parse().map(Some).map_err(|_| EpochError::NotANumber {
        path,
        found: line.chars().take(40).collect(),
    })
}

fn write(dir: &Path, name: &str, value: i64) -> Result<(), EpochError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |source| EpochError::Io {
        path: path.clone(),
        source,
    };
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(value.to_string().as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    fsync_dir(dir).map_err(io)
}

/// The epochs in `dir`. Missing files (a new member, or a data directory from a
/// standalone server) are made from the epoch of the last logged zxid, as ZooKeeper
/// does; values that contradict each other or the log stop start-up.
pub fn load(dir: &Path, last_zxid_epoch: i64) -> Result<Epochs, EpochError> {
    let current = match read(dir, CURRENT_EPOCH_FILE)? {
        Some(c) => c,
        None => {
            write(dir, CURRENT_EPOCH_FILE, last_zxid_epoch)?;
            last_zxid_epoch
        }
    };
    let accepted = match read(dir, ACCEPTED_EPOCH_FILE)? {
        Some(a) => a,
        None => {
            write(dir, ACCEPTED_EPOCH_FILE, current)?;
            current
        }
    };
    if current < last_zxid_epoch {
        return Err(EpochError::CurrentBelowLog {
            dir: dir.to_path_buf(),
            current,
            last_zxid_epoch,
        });
    }
    if accepted < current {
        return Err(EpochError::AcceptedBelowCurrent {
            dir: dir.to_path_buf(),
            accepted,
            current,
        });
    }
    Ok(Epochs { accepted, current })
}

/// Makes `e` durable. acceptedEpoch is written first: at every moment the files
/// hold accepted >= current.
pub fn store(dir: &Path, old: Epochs, e: Epochs) -> Result<(), EpochError> {
    if e.accepted != old.accepted {
        write(dir, ACCEPTED_EPOCH_FILE, e.accepted)?;
    }
    if e.current != old.current {
        write(dir, CURRENT_EPOCH_FILE, e.current)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_come_from_the_log_and_stored_values_come_back() {
        let d = crate::fsutil::test_dir("epochs-load");
        let e = load(&d, 3).unwrap();
        assert_eq!(
            e,
            Epochs {
                accepted: 3,
                current: 3
            }
        );
        // ZooKeeper's layout: the number alone.
        assert_eq!(fs::read_to_string(d.join(CURRENT_EPOCH_FILE)).unwrap(), "3");
        let next = Epochs {
            accepted: 5,
            current: 4,
        };
        store(&d, e, next).unwrap();
        assert_eq!(load(&d, 4).unwrap(), next);
        assert!(!d.join(".acceptedEpoch.tmp").exists());
    }

    #[test]
    fn damaged_or_contradictory_files_are_named() {
        let d = crate::fsutil::test_dir("epochs-damaged");
        fs::write(d.join(CURRENT_EPOCH_FILE), "banana").unwrap();
        let err = load(&d, 0).unwrap_err().to_string();
        assert!(
            err.contains("currentEpoch") && err.contains("banana"),
            "{err}"
        );
        fs::write(d.join(CURRENT_EPOCH_FILE), "7").unwrap();
        fs::write(d.join(ACCEPTED_EPOCH_FILE), "6").unwrap();
        let err = load(&d, 7).unwrap_err().to_string();
        assert!(
            err.contains("accepted epoch 6 is below the current epoch 7"),
            "{err}"
        );
        fs::write(d.join(ACCEPTED_EPOCH_FILE), "9").unwrap();
        let err = load(&d, 8).unwrap_err().to_string();
        assert!(err.contains("older than the log"), "{err}");
        // A file ZooKeeper wrote (it may end with a newline when edited by hand).
        fs::write(d.join(CURRENT_EPOCH_FILE), "8\n").unwrap();
        assert_eq!(
            load(&d, 8).unwrap(),
            Epochs {
                accepted: 9,
                current: 8
            }
        );
    }
}
