"""Fetch pretrained files into a local cache, safely and reproducibly.

``wordformer download NAME|URL`` (and :func:`download`) resolves a short registry name or an http(s)
URL, and returns the path of a complete, verified file in the cache:

* a file already in the cache is reused without touching the network (verified against its sha256);
* a download streams into a hidden temporary file in the same directory (``.NAME.part-<random>``),
  is checked against ``Content-Length`` and the expected sha256, fsynced, and only then renamed
  into place with :func:`os.replace` — so a half-written file can never pass for a complete one;
* when no sha256 is known up front, the one of the first download is recorded in a ``NAME.sha256``
  sidecar (``sha256sum`` format) and every later read is verified against it (trust on first use);
* every failure (bad name, HTTP error, refused connection, timeout, DNS, short body, wrong checksum)
  raises :class:`~wordformer.errors.WordformerError` with one line saying what to do.

Cache location, first match wins: ``cache_dir`` / ``--cache-dir`` (files go straight into it),
``$WORDFORMER_CACHE/downloads``, ``$XDG_CACHE_HOME/wordformer/downloads``,
``~/.cache/wordformer/downloads``. Files fetched by arbitrary URL (rather than by registry name) go
into a ``by-url/<hash of the URL>/`` subfolder so that two URLs ending in the same file name never
overwrite each other. ``offline=True`` or ``WORDFORMER_OFFLINE=1`` reads the cache only.

Only the standard library (``urllib``) and ``tqdm`` (progress bar on stderr) are used.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import http.client
import logging
import os
import re
import secrets
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

from tqdm import tqdm

from .errors import WordformerError
from .files import atomic_write_bytes, download_cache_dir, fsync_dir, make_folder

logger = logging.getLogger(__name__)

__all__ = [
    "RegistryEntry",
    "TUTORIAL6_BASE_URL",
    "download",
    "registry",
]


class RegistryEntry(NamedTuple):
    """One downloadable file: where it lives, its sha256 if known, its cache name and what it is."""

    url: str
    sha256: Optional[str]
    filename: str
    description: str


#: Where the UvA deep-learning course keeps the tutorial-6 ("Transformers and Multi-Head Attention")
#: checkpoints. A module attribute, read on every :func:`registry` call, so tests can point it at a
#: local server.
TUTORIAL6_BASE_URL = "https://raw.githubusercontent.com/phlippe/saved_models/main/tutorial6/"

# name -> (file under TUTORIAL6_BASE_URL, description). Their sha256 is not published, so it is None:
# the first download records it in a sidecar and later reads are checked against that.
_TUTORIAL6_FILES: dict[str, tuple[str, str]] = {
    "tutorial6-reverse": (
        "ReverseTask.ckpt",
        "UvA DL tutorial 6: Lightning checkpoint of the transformer trained to reverse digit sequences",
    ),
    "tutorial6-anomaly": (
        "SetAnomalyTask.ckpt",
        "UvA DL tutorial 6: Lightning checkpoint of the transformer that finds the odd image in a set",
    ),
}

# wordformer's own released files. None are published yet. To add one, upload the file as a release
# asset, then add an entry with its real URL and its sha256 (``sha256sum FILE``), e.g.
#   "wordformer-tiny": RegistryEntry(
#       url="https://github.com/<owner>/wordformer/releases/download/v0.1.0/wordformer-tiny.ckpt",
#       sha256="<64 hex digits>", filename="wordformer-tiny.ckpt", description="...")
# Names must be lowercase and unique across the whole registry; release files should always carry
# their sha256 so that even the first download is verified.
_WORDFORMER_RELEASES: dict[str, RegistryEntry] = {}

_CHUNK = 1 << 16  # bytes read from the network / from disk at a time
_STALE_PART_SECONDS = 3600.0  # a .part file untouched this long belongs to a dead download
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def registry() -> dict[str, RegistryEntry]:
    """Every name ``download`` accepts, built fresh so changes to the base URL take effect."""
    entries = {
        name: RegistryEntry(
            url=urllib.parse.urljoin(TUTORIAL6_BASE_URL, filename),
            sha256=None,
            filename=filename,
            description=description,
        )
        for name, (filename, description) in _TUTORIAL6_FILES.items()
    }
    entries.update(_WORDFORMER_RELEASES)
    return entries


class _Source(NamedTuple):
    """What to fetch and where it goes, once a name or URL is resolved."""

    url: str
    filename: str
    subdir: str  # relative to the cache root; "" for registry entries
    sha256: Optional[str]
    from_registry: bool


def _resolve(name_or_url: str) -> _Source:
    """Turn a registry name or an http(s) URL into a :class:`_Source`; unknown input is an error."""
    text = name_or_url.strip()
    if not text:
        raise WordformerError("nothing to download: pass a registry NAME (see `wordformer download --list`) or a URL")
    entries = registry()
    entry = entries.get(text.lower())
    if entry is None:
        # A registry URL passed directly gets the same cache slot and checksum as its name.
        entry = next((e for e in entries.values() if e.url == text), None)
    if entry is not None:
        return _Source(entry.url, _sanitise_filename(entry.filename, entry.url), "", entry.sha256, True)

    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme.lower() not in ("http", "https") or not parsed.netloc:
        if "://" in text:
            raise WordformerError(f"cannot download {text!r}: only http:// and https:// URLs are supported")
        close = difflib.get_close_matches(text.lower(), list(entries), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise WordformerError(
            f"unknown download name {text!r}; {hint}see `wordformer download --list` or pass an http(s) URL"
        )
    last = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])
    filename = _sanitise_filename(last, text)
    url_key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return _Source(text, filename, f"by-url/{url_key}", None, False)


def _sanitise_filename(name: str, url: str) -> str:
    """A safe single path component: no separators, no leading dot (temp and hidden files start with one)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")[:200]
    if not cleaned.strip("_"):
        raise WordformerError(f"cannot tell the file name from {url!r}; pass a URL that ends in a file name")
    return cleaned


def _normalise_sha256(value: str) -> str:
    """Lowercase 64-hex-digit digest, or a one-line error (a ``sha256:`` prefix is tolerated)."""
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if not _SHA256_RE.match(text):
        raise WordformerError(f"--sha256 must be 64 hexadecimal digits, got {value!r}; copy it from `sha256sum FILE`")
    return text


def _offline_from_env() -> bool:
    """``WORDFORMER_OFFLINE`` as a boolean; a value that is neither true nor false is a mistake."""
    raw = os.environ.get("WORDFORMER_OFFLINE", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise WordformerError(f"WORDFORMER_OFFLINE must be 1 or 0, got {raw!r}; fix or unset the environment variable")


def _file_sha256(path: Path) -> str:
    """Digest of a file on disk, read in chunks so large checkpoints don't fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_sidecar(sidecar: Path) -> Optional[str]:
    """The digest recorded for a cached file, or None; a garbled sidecar is ignored (and re-recorded)."""
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("ignoring unreadable checksum file %s: %s", sidecar, exc)
        return None
    token = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    if not _SHA256_RE.match(token):
        logger.warning("ignoring malformed checksum file %s", sidecar)
        return None
    return token


def _write_sidecar(sidecar: Path, digest: str, filename: str) -> None:
    """Record a digest atomically (``sha256sum`` format) so a crash never leaves half a sidecar."""
    try:
        atomic_write_bytes(f"{digest}  {filename}\n".encode("utf-8"), sidecar)
    except OSError as exc:
        # The file itself is fine; it just won't be verified by digest next time.
        logger.warning("could not record checksum in %s: %s", sidecar, exc)


def _clean_stale_parts(directory: Path, filename: str) -> None:
    """Remove temp files of downloads that died; fresh ones may belong to a concurrent download."""
    now = time.time()
    for part in directory.glob(f".{glob.escape(filename)}.part-*"):
        try:
            if now - part.stat().st_mtime > _STALE_PART_SECONDS:
                part.unlink()
                logger.info("removed stale partial download %s", part)
        except OSError:
            pass  # raced with another cleaner, or not ours to remove: harmless either way


def _one_line(text: Any) -> str:
    """Error details from the OS or server squeezed onto one line."""
    return " ".join(str(text).split())


def _network_error(url: str, exc: BaseException, timeout: float) -> WordformerError:
    """Translate what urllib/http.client/socket raised into a one-line, actionable error."""
    host = urllib.parse.urlsplit(url).hostname or url
    reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError) else exc
    if isinstance(exc, urllib.error.HTTPError):
        status = f"HTTP {exc.code} {_one_line(exc.reason)}".rstrip()
        if 400 <= exc.code < 500:
            hint = "check the name with `wordformer download --list` or pass a working URL"
        else:
            hint = "the server failed; try again later"
        return WordformerError(f"could not download {url}: {status}; {hint}")
    if isinstance(reason, socket.gaierror):
        return WordformerError(
            f"could not download {url}: cannot resolve host {host!r}; check the URL and your network connection"
            " (or use --offline with a cached file)"
        )
    if isinstance(reason, ConnectionRefusedError):
        return WordformerError(
            f"could not download {url}: connection refused by {host}; check the URL and that the server is up"
            " (or use --offline with a cached file)"
        )
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return WordformerError(
            f"could not download {url}: no response within {timeout:g} s; check your network and try again"
        )
    if isinstance(reason, (http.client.IncompleteRead, ConnectionResetError, http.client.RemoteDisconnected)):
        return WordformerError(f"could not download {url}: the server closed the connection early; try again")
    return WordformerError(f"could not download {url}: {_one_line(reason)}; check your network connection and try again")


def _fetch(url: str, directory: Path, filename: str, *, expected: Optional[str], expected_from: str,
           progress: bool, timeout: float) -> tuple[Path, str]:
    """Stream ``url`` into a fresh temp file in ``directory``; return (temp path, sha256) once verified.

    The temp file is removed on every failure (including KeyboardInterrupt); on success the caller
    owns it and renames it into place.
    """
    tmp = directory / f".{filename}.part-{secrets.token_hex(8)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise WordformerError(
            f"cannot write in the download cache {directory}: {_one_line(exc)}; pass a writable --cache-dir"
        ) from exc
    keep = False
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "wordformer-download"})
            digest = hashlib.sha256()
            received = 0
            length: Optional[int] = None
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    header = response.headers.get("Content-Length")
                    length = int(header) if header and header.strip().isdigit() else None
                    with tqdm(total=length, unit="B", unit_scale=True, unit_divisor=1024, desc=filename,
                              file=sys.stderr, disable=not progress, leave=False) as bar:
                        while True:
                            chunk = response.read(_CHUNK)
                            if not chunk:
                                break
                            digest.update(chunk)
                            received += len(chunk)
                            _write(out, chunk, tmp)
                            bar.update(len(chunk))
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # its body is an open response; don't leak the socket
                if isinstance(exc, http.client.IncompleteRead) and length is not None:
                    received += len(exc.partial)
                    raise _truncated(url, received, length) from exc
                raise _network_error(url, exc, timeout) from exc
            if length is not None and received != length:
                raise _truncated(url, received, length)
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise _disk_error(tmp, exc) from exc
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise WordformerError(
                f"checksum mismatch for {url}: expected sha256 {expected} ({expected_from}), got {actual};"
                f" the file was not kept — {_mismatch_hint(expected_from)}"
            )
        _check_content(tmp, filename, url)
        keep = True
        return tmp, actual
    finally:
        if not keep:
            tmp.unlink(missing_ok=True)


_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


def _check_content(path: Path, filename: str, url: str) -> None:
    """Refuse a "checkpoint" that cannot be one before it is cached and its sha256 pinned: a web page (a login or
    error page served with status 200), or a zip archive cut short by a server that closed the connection without
    sending a Content-Length or that is not torch.save's layout. Other files (text, ``.bin``) and legacy
    (pickle) checkpoints are taken as they come."""
    suffix = Path(filename).suffix.lower()
    if suffix not in (*_CHECKPOINT_SUFFIXES, ".safetensors"):
        return
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        raise WordformerError(f"{url} sent a web page, not {filename} (a login or error page?); the file was not "
                              "kept — check the URL")
    if suffix == ".safetensors":
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
        if not (0 < n and 8 + n <= size and head[8:9] == b"{"):
            raise WordformerError(f"{url} did not send a complete safetensors file ({size} bytes; the header is "
                                  "missing or cut short); the file was not kept — check the URL or download again")
    elif head.startswith(b"PK\x03\x04"):  # torch.save's zip format (PyTorch >= 1.6, Lightning checkpoints)
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            raise WordformerError(f"{url} sent an incomplete checkpoint ({size} bytes: the zip archive has no end, "
                                  "so the connection probably closed early); the file was not kept — download "
                                  "again") from None
        # torch.load reads "<folder of the first record>/data.pkl"; torch.save always writes it
        folder = names[0].split("/", 1)[0] if names and "/" in names[0] else None
        if folder is None or f"{folder}/data.pkl" not in names:
            raise WordformerError(f"{url} sent a zip archive that is not a PyTorch checkpoint (no data.pkl record, "
                                  "which torch.save always writes); the file was not kept — check the URL")
    elif not head.startswith(b"\x80"):  # the legacy torch.save format (before PyTorch 1.6) is a pickle: kept as is
        raise WordformerError(f"{url} did not send a PyTorch checkpoint ({filename} is neither torch.save's zip nor "
                              "its legacy pickle format); the file was not kept — check the URL")


def _write(out: Any, chunk: bytes, tmp: Path) -> None:
    """Write one chunk, reporting a full disk or lost permissions as the user's to fix, not as a bug."""
    try:
        out.write(chunk)
    except OSError as exc:
        raise _disk_error(tmp, exc) from exc


def _disk_error(tmp: Path, exc: OSError) -> WordformerError:
    return WordformerError(
        f"could not write {tmp}: {_one_line(exc)}; free some disk space or pass another --cache-dir"
    )


def _truncated(url: str, received: int, length: int) -> WordformerError:
    return WordformerError(
        f"download of {url} was cut short: got {received} of {length} bytes; check your connection and try again"
    )


def _mismatch_hint(expected_from: str) -> str:
    if expected_from.startswith("recorded in "):
        sidecar = expected_from[len("recorded in ") :]
        return f"if the file changed upstream on purpose, delete {sidecar} and download again"
    if expected_from == "--sha256":
        return "check the --sha256 value or the URL"
    return "the registry entry may be out of date; report it, or pass a URL and --sha256"


def download(
    name_or_url: str,
    *,
    sha256: Optional[str] = None,
    cache_dir: Union[str, Path, None] = None,
    offline: Optional[bool] = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Path of a complete, verified local copy of a registry file or URL, downloading it if needed.

    Args:
        name_or_url: a name from :func:`registry` (case-insensitive) or an http(s) URL.
        sha256: expected hex digest; overrides the registry's and the recorded one.
        cache_dir: directory to keep files in (see :func:`wordformer.files.download_cache_dir`).
        offline: only read the cache; None means ``$WORDFORMER_OFFLINE``.
        progress: show a tqdm bar on stderr while downloading.
        timeout: seconds to wait for the connection and for each read.
    Raises:
        WordformerError: unknown name, network failure, short body, checksum mismatch, or (offline) not cached.
    """
    source = _resolve(name_or_url)
    expected = _normalise_sha256(sha256) if sha256 is not None else source.sha256
    expected_from = "--sha256" if sha256 is not None else "registry"
    if offline is None:
        offline = _offline_from_env()
    if not timeout > 0:
        raise WordformerError(f"timeout must be a positive number of seconds, got {timeout!r}")

    directory = download_cache_dir(cache_dir) / source.subdir if source.subdir else download_cache_dir(cache_dir)
    target = directory / source.filename
    sidecar = directory / f"{source.filename}.sha256"
    recorded = _read_sidecar(sidecar)
    if expected is None and recorded is not None:
        expected, expected_from = recorded, f"recorded in {sidecar}"

    if target.is_file():
        actual = _file_sha256(target)
        if expected is None or actual == expected:
            if recorded != actual and not offline:
                _write_sidecar(sidecar, actual, source.filename)
            logger.debug("using cached %s", target)
            return target
        if offline:
            raise WordformerError(
                f"cached {target} does not match sha256 {expected} ({expected_from}); "
                "run again without --offline (and WORDFORMER_OFFLINE unset) to download it again"
            )
        logger.warning("cached %s does not match sha256 %s (%s); downloading it again", target, expected, expected_from)
    elif offline:
        raise WordformerError(
            f"{name_or_url.strip()} is not cached in {directory} and offline mode is on; run "
            f"`wordformer download {name_or_url.strip()}` with network access (no --offline, WORDFORMER_OFFLINE unset)"
        )

    make_folder(directory, advice="pass a writable --cache-dir")  # names a file in the way, not "File exists"
    _clean_stale_parts(directory, source.filename)

    logger.info("downloading %s to %s", source.url, target)
    tmp, actual = _fetch(source.url, directory, source.filename, expected=expected, expected_from=expected_from,
                         progress=progress, timeout=timeout)
    try:
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WordformerError(f"could not save {target}: {_one_line(exc)}; pass a writable --cache-dir") from exc
    fsync_dir(directory)
    _write_sidecar(sidecar, actual, source.filename)
    return target
