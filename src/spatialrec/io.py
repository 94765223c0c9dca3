"""Writing files atomically: the one writer behind every file the library writes.

A file is written to a temporary file ``.<name>.tmp-<pid>`` in the same folder, flushed and
fsynced, renamed over the target (``os.replace``, atomic on POSIX and Windows within one file
system), and the folder is fsynced so that the rename survives a power cut. A reader, or a run
killed while writing, sees the previous file or the new one, never a part. The temporary file
is removed when writing fails; a process killed outright leaves it behind, under a name that
says which process wrote it (:func:`spatialrec.train.runfiles.remove_stale_temp_files` clears
those of a run folder). The temporary name is per process, so one file is written by one
thread of a process at a time (different processes, e.g. DataLoader workers, never collide).

Bottom level: imports only the standard library (torch only inside :func:`atomic_torch_save`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def temp_path(path: Path) -> Path:
    """The temporary file beside ``path`` that :func:`atomic_write` writes first: ``.<name>.tmp-<pid>``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_error(err: OSError, path: Path, what: str) -> OSError:
    """``err`` (e.g. ENOSPC, a full disk) again, naming ``path`` and what was being written.

    The result keeps ``errno`` and has ``filename == str(path)``.
    """
    reason = err.strerror or str(err) or type(err).__name__
    message = f"{reason} while writing {what}"
    if err.errno is None:
        out = OSError(f"{message}: {str(path)!r}")
        out.filename = str(path)
        return out
    return OSError(err.errno, message, str(path))


def _fsync_folder(folder: Path) -> None:
    # Makes the rename durable; not every platform lets a folder be opened, and the file itself
    # is already complete on disk, so a failure here is not an error.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: PathLike, write: Callable[[IO[Any]], object], what: Optional[str] = None, mode: str = "wb") -> Path:
    """``write(f)`` to ``.<name>.tmp-<pid>`` beside ``path``, flushed to disk, then renamed over ``path``.

    A reader sees the old file or the new one, never a part; the folder is created if needed.

    Args:
        path: the file to write.
        write: called once with the open temporary file.
        what: what is written, for error messages (default: ``"<name> (the previous one, if
            any, is intact)"``).
        mode: ``"wb"`` (bytes) or ``"w"`` (text: UTF-8, newlines written as given).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``mode`` is not ``"w"`` or ``"wb"``.
        OSError: writing failed (e.g. ``ENOSPC``, a full disk); it keeps its ``errno`` and names
            ``path`` and ``what`` (:func:`write_error`); the previous file at ``path`` is intact
            and the temporary file is removed. Any other error raised by ``write`` propagates
            unchanged, with the same guarantees.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' (text) or 'wb' (bytes), got {mode!r}")
    path = Path(path)
    what = what or f"{path.name} (the previous one, if any, is intact)"
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = mode == "w"
        with open(tmp, mode, encoding="utf-8" if text else None, newline="" if text else None) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:  # KeyboardInterrupt included: never leave a temporary file behind
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):  # a full disk, a lost mount...: say which file
            raise write_error(err, path, what) from err
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str, what: Optional[str] = None) -> Path:
    """Replace ``path`` by ``text`` (UTF-8) atomically, as :func:`atomic_write`."""
    return atomic_write(path, lambda f: f.write(text), what, "w")


def atomic_write_bytes(path: PathLike, data: bytes, what: Optional[str] = None) -> Path:
    """Replace ``path`` by ``data`` atomically, as :func:`atomic_write`."""
    return atomic_write(path, lambda f: f.write(data), what, "wb")


def atomic_torch_save(obj: object, path: PathLike, what: Optional[str] = None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, as :func:`atomic_write`."""
    import torch  # here, so that this module stays importable without importing torch

    return atomic_write(path, lambda f: torch.save(obj, f), what, "wb")


__all__ = [
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "temp_path",
    "write_error",
]
