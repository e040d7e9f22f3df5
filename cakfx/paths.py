"""Where user data lives: ``$CAKFX_HOME`` or the platform's data folder."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import platformdirs


def cakfx_home() -> Path:
    env = os.environ.get("CAKFX_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("cakfx", appauthor=False))


def user_presets_dir() -> Path:
    return cakfx_home() / "presets"


def user_weights_dir() -> Path:
    return cakfx_home() / "weights"


def as_new_file(path: str | os.PathLike) -> None:
    """Give a temporary file the permissions a plain new file would get (mkstemp and
    safetensors create them 0600)."""
    os.chmod(path, 0o666 & ~current_umask())


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux's
    /proc/self/status): setting it to read it, as os.umask must, would let a file that another
    thread of a ``--jobs`` batch creates meanwhile get mode 0666 (or 0777 for a folder)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: at least our own threads do not race each other
        mask = os.umask(0)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a hidden temporary file in the same folder,
    then a rename, so a reader never sees half a file and a crash leaves the old one."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".cakfx-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        as_new_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def os_reason(exc: BaseException) -> str:
    """One line for an OS error: "no space left on device", "read-only file system", ..."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def is_file(path: str | os.PathLike) -> bool:
    """``Path.is_file`` that answers False instead of raising for names the OS refuses
    (too long, embedded NUL, a component that is not a folder)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False
