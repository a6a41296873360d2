"""Writing files so that an interrupted job never leaves a half-written one behind."""
import os
import tempfile
from typing import IO, Callable, Optional


def current_umask() -> int:
    """The process umask, read without changing it where the kernel reports it (Linux >= 4.7):
    setting it to read it back would briefly affect files other threads create."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str, write: Callable[[IO], None], binary: bool = True, sync: bool = False) -> None:
    """Write `path` through `write(f)` under a temporary name in the same folder, then rename.

    A job killed mid-write leaves the previous file (or none), never a truncated one that
    looks complete; the temporary name is `.<name>.<random>.tmp`. The file gets the mode a
    plain open() would create (0o666 & ~umask): mkstemp's private 0600 would hide
    checkpoints and results from the group that shares an OUTPUT_DIR. `sync` flushes the
    data and the rename to disk (checkpoints: the newest file must survive a power cut).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            try:
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            except OSError:
                pass  # e.g. a file system without POSIX modes: the content matters more
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if sync:
        _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unwritable_reason(directory: str) -> Optional[str]:
    """Why files cannot be written in `directory` (or created with it), None if they can.
    A real file is created and removed: permission bits alone say nothing for root, and
    read-only mounts, immutable folders and full quotas only show when writing."""
    existing = directory
    while not os.path.isdir(existing):
        if os.path.exists(existing):
            return f"'{existing}' is a file, not a directory"
        existing = os.path.dirname(existing) or "."
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".vov3d-write-test-")
        os.close(handle)
        os.remove(probe)
    except OSError as e:
        return f"cannot create files in '{existing}': {e.strerror or e}"
    return None
