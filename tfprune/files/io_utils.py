"""File I/O: atomic writes (a reader sees the old file or the new one, never half of one), and hashing a file's
bytes block by block (no whole file in memory)."""

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Opens a temp file beside ``path``; on success fsyncs and renames it over ``path``, on error removes it.

    Raises:
      OSError: with the path, when the folder is not writable or the disk is full; ``path`` is then untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None:
            # A full disk's write() names no file: say which result could not be written.
            raise OSError(e.errno, e.strerror, path) from e
        raise


def hash_file(sha, path, block_size=1 << 20):
    """Feeds the bytes of the file ``path`` to ``sha`` (a hashlib object), ``block_size`` bytes at a time."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            sha.update(block)


def write_bytes_atomic(path, payload):
    with atomic_open(path, "wb") as f:
        f.write(payload)


def write_text_atomic(path, text):
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")
