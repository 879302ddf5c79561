"""A pass-through FUSE file system that fails on command, for disk-fault tests:
`python3 faultfs.py BACKING MOUNTPOINT CONTROL` mirrors BACKING at MOUNTPOINT; while
CONTROL/fsync_eio exists every fsync/fdatasync fails with EIO, while CONTROL/write_eio
exists every write does, and while CONTROL/write_slow exists every write waits
half a second first. io_uring I/O reaches it like any other (strace could not
inject faults into io_uring)."""

import errno
import os
import sys
import time

from fuse import FUSE, FuseOSError, Operations


class FaultFS(Operations):
    def __init__(self, backing, control):
        self.backing, self.control = backing, control

    def _p(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    def _failing(self, what):
        return os.path.exists(os.path.join(self.control, what))

    def _do(self, f, *a):
        try:
            return f(*a)
        except OSError as e:
            raise FuseOSError(e.errno)

    def access(self, path, mode):
        if not os.access(self._p(path), mode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = self._do(os.lstat, self._p(path))
        return {k: getattr(st, k) for k in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                            "st_nlink", "st_size", "st_uid", "st_blocks")}

    def readdir(self, path, fh):
        return [".", ".."] + self._do(os.listdir, self._p(path))

    def statfs(self, path):
        st = self._do(os.statvfs, self._p(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                            "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def mkdir(self, path, mode):
        self._do(os.mkdir, self._p(path), mode)

    def rmdir(self, path):
        self._do(os.rmdir, self._p(path))

    def unlink(self, path):
        self._do(os.unlink, self._p(path))

    def rename(self, old, new):
        self._do(os.rename, self._p(old), self._p(new))

    def chmod(self, path, mode):
        self._do(os.chmod, self._p(path), mode)

    def utimens(self, path, times=None):
        self._do(os.utime, self._p(path), times)

    def open(self, path, flags):
        return self._do(os.open, self._p(path), flags & ~os.O_DIRECT)

    def create(self, path, mode, fi=None):
        return self._do(os.open, self._p(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path, size, offset, fh):
        return self._do(os.pread, fh, size, offset)

    def write(self, path, data, offset, fh):
        if self._failing("write_eio"):
            raise FuseOSError(errno.EIO)
        if self._failing("write_slow"):
            time.sleep(0.5)
        return self._do(os.pwrite, fh, data, offset)

    def truncate(self, path, length, fh=None):
        self._do(os.truncate, self._p(path), length)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        if self._failing("fsync_eio"):
            raise FuseOSError(errno.EIO)
        self._do(os.fdatasync if datasync else os.fsync, fh)

    def fsyncdir(self, path, datasync, fh):
        return 0

    def release(self, path, fh):
        self._do(os.close, fh)


if __name__ == "__main__":
    backing, mountpoint, control = sys.argv[1:4]
    FUSE(FaultFS(backing, control), mountpoint, foreground=True, nothreads=False)
