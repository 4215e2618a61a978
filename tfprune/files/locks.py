"""Exclusive locks on files, so that two processes never write one output folder or train one cache entry at once.

A lock is ``fcntl.flock`` on a small file: the kernel releases it when the holding process ends, however it ends
(SIGKILL included), so a lock left by a killed process is never stale: the next process simply takes it. The file
names its holder (pid, host, start time, command line), which is what a refused second process reports.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import time


class LockHeld(RuntimeError):
    """The lock is held by another process; ``holder`` describes it (pid, host, since, command)."""

    def __init__(self, path, holder):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {describe(holder)}")


def describe(holder):
    """``pid 123 on host, since 2026-12-01 15:00:00: python -m tfprune.sweep ...`` (what is known of it)."""
    if not holder:
        return "another process (no details recorded)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {since}: {holder.get('command', '?')}"


def _read_holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _write_holder(fd):
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())


@contextlib.contextmanager
def exclusive(path, wait=False, on_wait=None):
    """Holds an exclusive lock on ``path`` (created if absent) for the ``with`` block.

    Args:
      wait: when the lock is held elsewhere, wait for it (calling ``on_wait(holder)`` once first) instead of
        raising.

    Raises:
      LockHeld: with ``wait`` False, when another process holds the lock.
      OSError: the lock file cannot be created (the message names it).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            if not wait:
                raise LockHeld(path, holder) from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _write_holder(fd)
        yield
    finally:
        os.close(fd)  # releases the lock


__all__ = ["LockHeld", "describe", "exclusive"]
