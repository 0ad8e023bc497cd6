"""Files and paths. Atomic writes: a reader (or a process killed mid-write) sees the old file or the new
one, never half of one (a temporary file in the same folder, fsync, ``os.replace``). Paths are checked
once, at the edge (``check_path``, ``folder_name``), so a path the file system cannot hold, or a name
that would leave its folder, is one clear error before any work, not a traceback after it."""

import glob
import os
import tempfile

from .errors import RunFolderError, UsageError

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
    reason = {
        13: "permission denied",
        30: "the file system is read-only",
        28: "the disk is full",
        20: "a file is in the way (a path component is not a folder)",
        17: "a file is in the way",
        21: "it is a folder",
    }.get(e.errno, e.strerror or str(e))
    return RunFolderError(f"cannot {what} {path}: {reason}; {hint}")


def _limit(path, name, default):
    """The file system's ``pathconf`` limit ``name`` at the nearest existing folder above ``path``."""
    p = os.path.abspath(path)
    while not os.path.isdir(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        return os.pathconf(p, name)
    except (OSError, ValueError):
        return default


def check_path(path, what="the path", hint="choose another name", error=UsageError):
    """``path`` as text, or ``error``: not a str or PathLike, empty, holding a NUL byte, not valid UTF-8
    (config.toml and the metrics record paths as text), or with a name or a whole length over the file
    system's limits. Returns the path as a str."""
    if not isinstance(path, (str, os.PathLike)):
        raise error(f"{what} must be a file or folder name (a str or a Path), got {type(path).__name__}: {hint}")
    text = os.fspath(path)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{what} {text!r} is not valid UTF-8: {hint}") from None
    if not text:
        raise error(f"{what} is empty: {hint}")
    if "\x00" in text:
        raise error(f"{what} {text!r} holds a NUL character, which no file name may: {hint}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, as the command line hands them over
        raise error(f"{what} {text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8: {hint}") from None
    name_max, path_max = _limit(text, "PC_NAME_MAX", 255), _limit(text, "PC_PATH_MAX", 4096)
    for name in text.split(os.sep):
        if len(name.encode("utf-8")) > name_max:
            raise error(
                f"{what}: the name {name[:24]}...{name[-8:]} is {len(name.encode('utf-8'))} bytes long, over "
                f"the file system's limit of {name_max}: {hint}"
            )
    if len(os.path.abspath(text).encode("utf-8")) >= path_max:
        raise error(
            f"{what} is {len(os.path.abspath(text).encode('utf-8'))} bytes long as an absolute path, over the "
            f"file system's limit of {path_max}: {hint}"
        )
    return text


def folder_name(name, what, reserved=(), hint="choose another name", error=UsageError):
    """``name`` if it is one safe folder name, to be made inside another folder: text a file system can hold
    (``check_path``), not "." or "..", no path separator, not one of the ``reserved`` names (the files
    beside it); else ``error``."""
    name = check_path(name, what, hint, error)
    if name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise error(f"{what} {name!r} is not a single folder name (no {os.sep}, not . or ..): {hint}")
    if name in reserved:
        raise error(f"{what} {name!r} is the name of a file written beside it ({', '.join(reserved)}): {hint}")
    return name


def check_folder_target(path, hint="choose another --out"):
    """Refuse, before any work, a folder path that cannot be made or written: a path the file system
    cannot hold (``check_path``), a file in the way, or a nearest existing folder this process may not
    write into."""
    path = os.path.abspath(check_path(path, "the output folder", hint, RunFolderError))
    shown = os.fspath(path)
    p = path
    while True:
        if os.path.exists(p):
            if not os.path.isdir(p):
                inside = "" if p == shown else f", so {shown} cannot be made inside it"
                raise RunFolderError(f"{p} is a file, not a folder{inside}: {hint}")
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
