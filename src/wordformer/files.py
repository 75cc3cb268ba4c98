"""Files and folders: the one place that writes atomically, makes folders and knows where caches live.

Every file wordformer writes for the user (checkpoints, exports, plots, cached corpora, checksums) goes
through :func:`atomic_write`: the bytes land in a temporary file beside the target, are flushed to disk and
renamed over it, so a crash or a full disk leaves either the old file or the new one, never half of one.
Failures are one line (:class:`WordformerError`) that says "free disk space" only when that would help.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

from .errors import WordformerError

PathLike = Union[str, "os.PathLike[str]"]
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # the only write errors freeing space cures


def write_error(path: PathLike, exc: OSError, advice: str) -> WordformerError:
    """One line for a failed write; "free disk space" is offered only for a full disk or quota."""
    if exc.errno in DISK_FULL:
        advice = f"free disk space or {advice}"
    return WordformerError(f"could not write {path}: {exc.strerror or exc}; {advice}")


def file_in_the_way(path: PathLike) -> Optional[Path]:
    """The existing file that ``path`` or one of its parents is, if any: no folder can be made through it."""
    for part in (Path(path), *Path(path).parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def make_folder(folder: PathLike, *, advice: str) -> Path:
    """``mkdir -p`` whose failure is one line naming the culprit: a part of the path that is a file (mkdir alone
    says only "File exists" or "Not a directory") or the OS's reason. Returns the folder."""
    folder = Path(folder).expanduser()
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise WordformerError(f"cannot make folder {folder}: {blocker} is a file, not a folder; {advice}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WordformerError(f"cannot make folder {folder}: {exc.strerror or exc}; {advice}") from None
    return folder


def check_writable_folder(folder: Path, *, advice: str) -> None:
    """Make ``folder`` and prove a file can be created in it, before any slow work is spent on its contents."""
    make_folder(folder, advice=advice)
    probe = folder / ".write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WordformerError(f"cannot write to folder {folder}: {exc.strerror or exc}; {advice}") from None


def _usual_mode(path: Path) -> int:
    """An existing file's permissions, else what ``open()`` would give a new file (0o666 minus the umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; some platforms and filesystems refuse, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - e.g. filesystems without directory fsync
        pass
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    """Temporary files of ``path`` are ``.NAME.<random>.tmp`` beside it (runs.py cleans those a kill left)."""
    return f".{path.name}."


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the new one, never half.

    The temporary file gets the permissions a plain ``open()`` would give (mkstemp makes 0600 files), is
    fsynced, then renamed over ``path``; any failure removes it. Raises ``OSError`` from the write.
    """
    path = Path(path)
    mode = _usual_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(data: bytes, path: PathLike) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda fh: fh.write(data))


def save_bytes(data: bytes, path: PathLike, *, advice: str) -> Path:
    """Make the parent folder and write ``data`` atomically; any failure is one line ending in ``advice``."""
    path = Path(path)
    make_folder(path.parent, advice=advice)
    try:
        return atomic_write_bytes(data, path)
    except OSError as exc:
        raise write_error(path, exc, advice) from None


def atomic_torch_save(obj: Any, path: PathLike, *, advice: str = "choose another --out") -> Path:
    """``torch.save`` through :func:`atomic_write`; a failed write is one line."""
    import torch

    try:
        return atomic_write(path, lambda fh: torch.save(obj, fh))
    except OSError as exc:
        raise write_error(f"checkpoint {path}", exc, advice) from None


# ------------------------------------------------------------------------------------------ caches


def cache_home() -> Path:
    """``$WORDFORMER_CACHE``, else ``$XDG_CACHE_HOME/wordformer``, else ``~/.cache/wordformer``. Nothing is
    created here. A relative ``XDG_CACHE_HOME`` is ignored, as the XDG specification says."""
    if os.environ.get("WORDFORMER_CACHE"):
        return Path(os.environ["WORDFORMER_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "wordformer"
    try:
        return Path.home() / ".cache" / "wordformer"
    except RuntimeError:
        raise WordformerError("cannot find your home folder for the cache; set WORDFORMER_CACHE or pass "
                              "--cache-dir") from None


def corpus_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """Where tokenized corpora live: ``cache_dir`` (``--cache-dir``) or :func:`cache_home` itself."""
    return Path(cache_dir).expanduser() if cache_dir not in (None, "") else cache_home()


def download_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """Where downloads live: ``cache_dir`` (``--cache-dir``, files go straight in) or ``cache_home()/downloads``."""
    return Path(cache_dir).expanduser() if cache_dir not in (None, "") else cache_home() / "downloads"
