//! Small file-system helpers shared by the log and the snapshots.

use std::fs::File;
use std::io;
use std::path::Path;

/// fsyncs a directory, making the creation, rename or removal of its entries durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `path` lives on a tmpfs (no O_DIRECT there).
pub fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a zeroed local struct from a NUL-terminated path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
    }
}

/// Reserves `len` bytes for `file` (zero-filled, counted in its size), so that later
/// writes neither grow the file nor find the disk full. Where the file system has no
/// fallocate (some FUSE and network file systems), zeros are written instead.
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    // SAFETY: fallocate on an fd we own; mode 0 extends the size.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    let zeros = vec![0u8; 1 << 20];
    let mut at = file.metadata()?.len();
    while at < len {
        let n = ((len - at) as usize).min(zeros.len());
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// A file name of ours: `prefix` followed by a zxid in 16 hex digits.
pub fn zxid_name(prefix: &str, zxid: i64) -> String {
    format!("{prefix}{zxid:016x}")
}

/// The zxid in a name made by [`zxid_name`] with `prefix`, if it is one.
pub fn parse_zxid_name(prefix: &str, name: &str) -> Option<i64> {
    let hex = name.strip_prefix(prefix)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|z| z as i64)
}

/// The files in `dir` named with `prefix` and a zxid, in zxid order: (zxid, path).
pub fn list_zxid_files(dir: &Path, prefix: &str) -> io::Result<Vec<(i64, std::path::PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(z) = e
            .file_name()
            .to_str()
            .and_then(|n| parse_zxid_name(prefix, n))
        {
            v.push((z, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// A fresh directory for a test, named after it and this process.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
