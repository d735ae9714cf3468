"""Private files and directories, atomic rewrites and per-name locks.

What sessionctl creates is private (dirs 0700, files 0600) whatever the umask;
a directory it did not create (the home the user chose, its parents) keeps its
mode. Files are never reached through a symlink, never written when another
user owns them, and are replaced atomically: a rewrite goes to a temp file in
the same directory, is fsynced, then renamed. A temp file is only ever removed
by someone holding its writer's lock (see :func:`remove_unheld_temp`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from sessionctl.errors import StoreError

DIR_MODE = 0o700
FILE_MODE = 0o600
TEMP_SUFFIX = ".tmp"
TEMP_GRACE_S = 10.0  # a unique temp file this fresh may not be flocked yet


def ensure_private_dir(path: Path, *, follow_symlinks: bool = True, own: bool = False) -> Path:
    """Return ``path``, a directory; the ones created here (parents too) are 0700.

    An existing directory keeps its mode unless ``own`` says that sessionctl
    made it (``sessions/``, ``trash/``): those are set back to 0700. Without
    ``follow_symlinks`` a symlink at ``path`` is refused too (directories
    inside the data dir must not lead out of it).
    """
    if not follow_symlinks and path.is_symlink():
        raise StoreError(
            f"{path} is a symbolic link; sessionctl does not follow links: move it away"
        )
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, its mode stays
        except OSError as exc:
            raise StoreError(f"cannot create {directory}: {exc.strerror}") from exc
        _chmod_private(directory)  # mkdir's mode is cut by the umask
    if not path.is_dir():
        raise StoreError(f"{path} exists and is not a directory; move it away")
    if own and path not in missing and stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        _chmod_private(path)
    return path


def _chmod_private(path: Path) -> None:
    try:
        path.chmod(DIR_MODE)
    except OSError as exc:
        raise StoreError(f"cannot make {path} private (chmod 700): {exc.strerror}") from exc


def check_own_file(fd: int, path: Path) -> None:
    """Refuse to write ``fd`` unless it is a regular file of ours; make it 0600 if it is not.

    A transcript someone else owns (another user's, or root's when root runs
    sessionctl on a user's home) is never written into or taken over.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{path} is not a regular file; sessionctl will not write it")
    if st.st_uid != os.geteuid():
        raise StoreError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()});"
            " sessionctl does not write other users' files"
        )
    if stat.S_IMODE(st.st_mode) != FILE_MODE:
        os.fchmod(fd, FILE_MODE)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry change (create, rename, unlink) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(target: Path, *, unique: bool = False) -> Path:
    """Return the temp path beside ``target`` (``.NAME~.tmp``) for a rewrite.

    Rewrites of session files happen under the session lock, so one fixed
    name per target suffices, and a crashed writer's leftover is removed by
    the next one with a single unlink instead of a directory scan (which
    costs ~5 ms in a directory of 10,000 sessions). ``unique`` adds a random
    part, for writers that hold no lock (they hold an flock on the temp file
    itself instead, see :func:`atomic_write`). ``~`` cannot occur in a session
    name, so temp files never collide with another session's files.
    """
    random = os.urandom(6).hex() if unique else ""
    return target.with_name(f".{target.name}~{random}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    """True for a name :func:`temp_path_for` makes."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and "~" in name


def temp_target(name: str) -> tuple[str, bool]:
    """Return the file name a temp file ``name`` was for, and whether its name is unique."""
    target, _, rest = name[1:].rpartition("~")
    return target, rest != TEMP_SUFFIX


def _create_private(path: Path) -> int:
    """Create ``path`` as a new 0600 file (never through a link) and hold an flock on it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "a writer is alive": see remove_unheld_temp
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_new_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file, fsynced; an existing one is refused."""
    fd = _create_private(path)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private_unsynced(name: str, data: bytes, dir_fd: int) -> int:
    """Write ``data`` to a new 0600 file ``name`` in the directory ``dir_fd`` (an existing
    one is refused, a link not followed) and return its open, flocked fd, *not yet
    durable*: the caller makes it so with :func:`sync_files`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(name, flags, FILE_MODE, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "a writer is alive": see remove_unheld_temp
        os.fchmod(fd, FILE_MODE)
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd


_SYNCFS: list[Callable[[int], int] | None] = []
SYNCFS_FROM = 4  # fewer files than this: one fsync each is as cheap as a syncfs


def _syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) through libc, or None where there is none (looked up once)."""
    if not _SYNCFS:
        found: Callable[[int], int] | None = None
        if sys.platform.startswith("linux"):
            import ctypes

            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                call = libc.syncfs
                call.argtypes = [ctypes.c_int]
                call.restype = ctypes.c_int

                def found(fd: int) -> int:
                    if call(fd) != 0:
                        return ctypes.get_errno() or errno.EIO
                    return 0

        _SYNCFS.append(found)
    return _SYNCFS[0]


def sync_files(fds: Sequence[int]) -> None:
    """Make the data of every file in ``fds`` (all on one file system) durable.

    One ``syncfs`` for many files (Linux: one journal commit instead of one per
    file, ~0.3 ms each here), else one ``fsync`` each. Raises OSError on a write
    error, as ``fsync`` does (syncfs reports them since Linux 5.8).
    """
    call = _syncfs() if len(fds) >= SYNCFS_FROM else None
    if call is None:
        for fd in fds:
            os.fsync(fd)
        return
    failed = call(fds[0])
    if failed:
        raise OSError(failed, os.strerror(failed))


def refuse_foreign(path: Path) -> None:
    """Refuse to replace ``path`` when another user owns it (see :func:`check_own_file`)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid():
        raise StoreError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()});"
            " sessionctl does not write other users' files"
        )


def atomic_write(path: Path, data: bytes, *, unique: bool = False) -> os.stat_result:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync dir.

    Without ``unique`` the caller must hold the lock that guards ``path``.
    The temp file is flocked by this process until it is renamed, so that a
    sweep (:func:`remove_unheld_temp`) never takes it for a crashed writer's.
    Returns the new file's stat, taken before the rename made it visible.
    """
    return atomic_write_with(path, lambda fd: _write_all(fd, data), unique=unique)


def atomic_write_with(
    path: Path, fill: Callable[[int], None], *, unique: bool = False
) -> os.stat_result:
    """Like :func:`atomic_write`, but ``fill(fd)`` writes the temp file (streamed, any size).

    ``fill`` may also ``pwrite`` what it wrote before (a header it learns last).
    """
    refuse_foreign(path)
    tmp = temp_path_for(path, unique=unique)
    fd = _create_private(tmp)
    try:
        fill(fd)
        os.fsync(fd)
        st = os.fstat(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return st


def append_private(path: Path, data: bytes) -> None:
    """Append ``data`` to an existing regular file of ours with one write, then fsync.

    All or nothing: when the write or the fsync fails (disk full, I/O error, Ctrl-C)
    the file is cut back to its old size. The caller holds the file's lock. A file
    that is not 0600 is made so; another user's is refused (:func:`check_own_file`).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        check_own_file(fd, path)
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def remove_stale_temps(directory: Path, targets: Iterable[str]) -> int:
    """Remove the temp files a crashed writer left for the files ``targets``; return how many.

    The caller holds the lock of every one of ``targets`` (fixed temp names are
    only written under it).
    """
    removed = 0
    for name in targets:
        try:
            os.unlink(directory / f".{name}~{TEMP_SUFFIX}")
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def remove_unheld_temp(path: Path, *, older_than: float = TEMP_GRACE_S) -> bool:
    """Remove the unique temp file ``path`` if no live process holds it; True if removed.

    Its writer holds an flock on it from creation until the rename
    (:func:`atomic_write`), so a temp we can flock belongs to a writer that is
    gone. A file younger than ``older_than`` seconds is left alone: its writer
    may sit between its ``open`` and its ``flock``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mtime > time.time() - older_than:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer
        if not _names_file(path, st):
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def _names_file(path: Path, st: os.stat_result) -> bool:
    """True when ``path`` still names the file ``st`` describes."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


class HeldLock:
    """An exclusive flock on a lock file, held by this process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def discard(self) -> None:
        """Unlink the lock file, if its path still names the file held.

        Only a holder unlinks a lock file, and waiters check after locking that
        the path still names what they locked (:func:`exclusive_lock`), so this
        never removes a lock file that someone else holds.
        """
        if _names_file(self.path, os.fstat(self.fd)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _acquire(path: Path, *, wait: bool) -> int | None:
    """Open (creating 0600) and flock the lock file ``path``; None when busy and not ``wait``."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(f"{path} is a symbolic link; refusing to follow it") from exc
            raise StoreError(f"cannot open lock file {path}: {exc.strerror}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            st = os.fstat(fd)
            if _names_file(path, st):
                if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != FILE_MODE:
                    os.fchmod(fd, FILE_MODE)  # another user's lock file is only flocked
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[HeldLock]:
    """Hold an exclusive ``flock`` on the lock file ``path``.

    The lock file may be unlinked by a holder (delete, rename, a session that
    does not exist); after taking the lock we check that the path still names
    the file we locked, and try again if not, so two writers can never hold
    "the" lock at once.
    """
    fd = _acquire(path, wait=True)
    assert fd is not None
    try:
        yield HeldLock(path, fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_exclusive_lock(path: Path) -> Iterator[HeldLock | None]:
    """Like :func:`exclusive_lock`, without waiting: None when someone holds it."""
    fd = _acquire(path, wait=False)
    try:
        yield None if fd is None else HeldLock(path, fd)
    finally:
        if fd is not None:
            os.close(fd)
