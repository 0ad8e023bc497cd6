"""Atomic file writes: a reader (or a process killed mid-write) sees the old file or the new one,
never half of one. Write to a temporary file in the same folder, fsync, ``os.replace``."""

import glob
import os
import tempfile

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
