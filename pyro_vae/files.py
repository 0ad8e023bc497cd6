"""Atomic file writes: a reader (or a process killed mid-write) sees the old file or the new one,
never half of one. Write to a temporary file in the same folder, fsync, ``os.replace``."""

import glob
import os
import tempfile

from .errors import RunFolderError

#: temporary files are named ``.NAME-XXXX.tmp`` beside their target, so a dead writer's leftovers can be found
TEMP_SUFFIX = ".tmp"


def atomic_write(path, write):
    """Create or replace ``path`` with what ``write(f)`` writes to a binary file object."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name.rsplit('.', 1)[0]}-", suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def leftover_temps(folder):
    """Temporary files that ``atomic_write`` left in ``folder`` (a writer killed between create and rename)."""
    return sorted(glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".*" + TEMP_SUFFIX)))


def os_error(path, e, what="write into", hint="choose another --out"):
    """An OSError as a RunFolderError that names the path plainly, the reason in words, and what to do."""
    reason = {13: "permission denied", 30: "the file system is read-only", 28: "the disk is full",
              20: "a file is in the way (a path component is not a folder)", 17: "a file is in the way",
              21: "it is a folder"}.get(e.errno, e.strerror or str(e))
    return RunFolderError(f"cannot {what} {path}: {reason}; {hint}")


def check_folder_target(path, hint="choose another --out"):
    """Refuse, before any work, a folder path that cannot be made or written: a file in the way,
    or a nearest existing folder this process may not write into."""
    path = os.path.abspath(os.fspath(path)) if os.fspath(path) else "."
    shown = os.fspath(path)
    p = path
    while True:
        if os.path.exists(p):
            if not os.path.isdir(p):
                raise RunFolderError(f"{p} is a file, not a folder, so {shown} cannot be a folder: {hint}")
            if not os.access(p, os.W_OK | os.X_OK):
                raise os_error(p, PermissionError(13, "permission denied"), hint=hint)
            return
        parent = os.path.dirname(p)
        if parent == p:
            return
        p = parent


def make_folder(path, hint="choose another --out"):
    """Create the folder ``path`` (and its parents) for output, or raise a RunFolderError that says why not."""
    check_folder_target(path, hint)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise os_error(path, e, "create", hint) from None
    return path
