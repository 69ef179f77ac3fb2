"""Crash-safe file writes: a reader (or a restarted run) sees the old file or the new one,
never half of one.

`atomic_write` writes a temp file in the destination's folder, fsyncs it, renames it over the
destination (`os.replace` is atomic on POSIX within one filesystem) and fsyncs the folder so
the rename itself survives a power loss. `atomic_path` does the same for writers that want a
path (imageio, PIL, savefig).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


def fsync_dir(path: str) -> None:
    """Makes a rename or new file in folder `path` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temp path next to `path`; on a clean exit it is fsynced and renamed to `path`.

    On an exception the temp file is removed and `path` is left untouched. The temp name
    keeps `path`'s extension so writers that pick a format from it still work.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=ext, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def atomic_write(path: str, data: str | bytes) -> str:
    """Writes `data` (text as UTF-8) to `path` atomically; returns `path`."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
