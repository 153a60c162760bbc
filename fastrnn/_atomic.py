"""Atomic file writes: readers see the old file or the whole new one, never a part.

:func:`atomic_write` fills a temporary file next to the target, flushes and fsyncs it, and
renames it over the target; model files (:mod:`fastrnn.io`), plots and the command line's CSV
files are all written through it.
"""
import os
import re
import secrets
import time

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be removed, which protects a running save
    fcntl = None

__all__ = ["atomic_write"]

#: seconds without change after which an unlocked temporary file of a save is abandoned
_ABANDONED_AFTER = 2.0


def atomic_write(path, write):
    """Write a file so that readers see either the old file or the whole new one.

    ``write(fileobj)`` fills a temporary file (opened ``"w+b"``) in the target's directory; it
    is flushed to disk and renamed over ``path``. On any failure, interruption included, the
    temporary file is removed and an existing file at ``path`` is left as it was; the
    temporary files of saves to ``path`` that were killed (so could not clean up) are removed
    by the next save to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
    write : callable
        Takes the open binary file object and writes the content.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_abandoned_temps(directory, os.path.basename(path))
    tmp_name, fd = _create_temp(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "w+b") as fileobj:
            write(fileobj)
            fileobj.flush()
            os.fsync(fileobj.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _create_temp(directory, basename):
    """Create, open and lock a new temporary file in ``directory``; return ``(name, fd)``.

    The lock (POSIX ``flock``; on Windows an open file cannot be removed anyway) tells
    :func:`_remove_abandoned_temps` of a later save that this one is still running.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        name = os.path.join(directory, f".{basename}.{secrets.token_hex(8)}.tmp")
        try:
            # mode 0o666 is reduced by the umask, as for any newly created file
            fd = os.open(name, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        return name, fd


def _remove_abandoned_temps(directory, basename):
    """Remove the temporary files that saves to ``basename`` killed midway left behind.

    A file is abandoned when no process holds its lock (a save in progress does) and it has
    not changed for :data:`_ABANDONED_AFTER` seconds (which also covers the instant between a
    save creating its file and locking it).
    """
    pattern = re.compile(re.escape(f".{basename}.") + r"[0-9a-f]{16}\.tmp\Z")
    try:
        entries = [e for e in os.scandir(directory) if pattern.match(e.name)]
    except OSError:
        return
    for entry in entries:
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < _ABANDONED_AFTER:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(entry.path)
        except OSError:   # locked by a running save, or (Windows) open elsewhere
            pass
        finally:
            os.close(fd)


def _fsync_directory(directory):
    """Make the rename durable where the platform allows opening a directory."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
