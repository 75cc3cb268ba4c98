"""Tests for ``wordformer.download`` against a local HTTP server (no internet needed)."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import socket
import tempfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import torch

from wordformer import download as dl
from wordformer.cli.files import run_download
from wordformer.errors import WordformerError

PAYLOAD = bytes(range(256)) * 1000  # 256 kB: several chunks, so the progress loop really iterates
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.arange(64_000, dtype=torch.int32)}}, buffer)  # ~256 kB, zip format
    return buffer.getvalue()


def _legacy_bytes() -> bytes:
    """torch.save's pre-1.6 pickle format, with several dtypes and a non-tensor object (as Lightning writes)."""
    buffer = io.BytesIO()
    state = {"w": torch.arange(64_000, dtype=torch.int32), "h": torch.ones(7, dtype=torch.float16),
             "b": torch.ones(3, dtype=torch.bool), "view": torch.arange(20.0)[3:9]}
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=0.1, path=Path("x"))}, buffer,
               _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def _zip_bytes(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"not a pickle")
    return buffer.getvalue()


def _saved_to_a_file_bytes(tmp: Path) -> bytes:
    """torch.save to a path names the zip's folder after the file (not "archive" as for a buffer)."""
    torch.save({"w": torch.ones(3)}, tmp / "my-model.ckpt")
    return (tmp / "my-model.ckpt").read_bytes()


CKPT = _checkpoint_bytes()
LEGACY = _legacy_bytes()
with tempfile.TemporaryDirectory() as _tmp:
    NAMED_ZIP = _saved_to_a_file_bytes(Path(_tmp))
# bodies sent with status 200 and no Content-Length (the connection simply closes)
UNCHECKED = {"page.ckpt": b"<!DOCTYPE html>\n<html><body>Please sign in</body></html>\n",
             "cut.ckpt": CKPT[: len(CKPT) // 2], "noise.pt": bytes(range(256)) * 4,
             "cut.safetensors": b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\":", "notes.txt": b"<html> is fine in text",
             "textzip.ckpt": _zip_bytes(["a.txt"]), "misplaced.pth": _zip_bytes(["a.txt", "archive/data.pkl"]),
             "legacy.pt": LEGACY, "named.ckpt": NAMED_ZIP}


class FakeServer:
    """A tiny HTTP server with scripted routes that counts the requests it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()  # lets a deliberately slow handler finish at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(self.path)
                name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                if name == "slow.bin":
                    server.release.wait(5)
                    return
                if name == "truncated.bin":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    self.wfile.write(PAYLOAD[:1000])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if name == "broken.bin":
                    self.send_error(500, "Internal Server Error")
                    return
                if name in ("data.bin", "ReverseTask.ckpt", "SetAnomalyTask.ckpt"):
                    body = CKPT if name.endswith(".ckpt") else PAYLOAD
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if name in UNCHECKED:
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(UNCHECKED[name])
                    self.close_connection = True
                    return
                self.send_error(404, "Not Found")

            def log_message(self, *args: object) -> None:
                pass  # keep the test output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return self.base + "files/" + name

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real cache and the user's environment."""
    monkeypatch.delenv("WORDFORMER_CACHE", raising=False)
    monkeypatch.delenv("WORDFORMER_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def leftovers(directory: Path) -> list[str]:
    """Every file under ``directory`` (recursively), for 'nothing was left behind' checks."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_download_verifies_and_reuses_cache(server: FakeServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = dl.download(server.url("data.bin"), sha256=PAYLOAD_SHA, cache_dir=cache, progress=False)
    assert path.name == "data.bin" and path.read_bytes() == PAYLOAD
    assert path.is_relative_to(cache)
    assert len(server.requests) == 1
    sidecar = path.with_name("data.bin.sha256")
    assert sidecar.read_text().split()[0] == PAYLOAD_SHA

    again = dl.download(server.url("data.bin"), cache_dir=cache, progress=False)  # no sha: sidecar is used
    assert again == path
    assert len(server.requests) == 1  # served from the cache, no network
    assert not [p for p in leftovers(cache) if ".part-" in p]


def test_unknown_checksum_is_recorded_then_enforced(server: FakeServer, tmp_path: Path) -> None:
    path = dl.download(server.url("data.bin"), cache_dir=tmp_path, progress=False)
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text().split()[0] == PAYLOAD_SHA

    path.write_bytes(b"corrupted")  # cache damaged after the fact
    with pytest.raises(WordformerError, match="does not match"):
        dl.download(server.url("data.bin"), cache_dir=tmp_path, offline=True)
    # online, the damaged copy is replaced by a fresh verified download
    assert dl.download(server.url("data.bin"), cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_progress_bar_goes_to_stderr_only(server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dl.download(server.url("data.bin"), cache_dir=tmp_path, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "data.bin" in err


def test_http_404_is_one_clear_line(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(WordformerError) as info:
        dl.download(server.url("missing.bin"), cache_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "HTTP 404" in message and "--list" in message and "\n" not in message
    assert leftovers(tmp_path) == []


def test_http_500_says_try_later(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(WordformerError, match="HTTP 500.*try again later"):
        dl.download(server.url("broken.bin"), cache_dir=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_truncated_body_is_an_error_and_leaves_nothing(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(WordformerError, match="cut short: got 1000 of 256000 bytes"):
        dl.download(server.url("truncated.bin"), cache_dir=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_wrong_checksum_keeps_no_file(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(WordformerError, match="checksum mismatch") as info:
        dl.download(server.url("data.bin"), sha256="0" * 64, cache_dir=tmp_path, progress=False)
    assert "\n" not in str(info.value)
    assert leftovers(tmp_path) == []  # neither the file, a sidecar, nor a temp file


def test_malformed_sha256_is_rejected_before_any_request(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(WordformerError, match="64 hexadecimal"):
        dl.download(server.url("data.bin"), sha256="abc", cache_dir=tmp_path, progress=False)
    assert server.requests == []


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # grab a free port, then close it so nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WordformerError, match="connection refused"):
        dl.download(f"http://127.0.0.1:{port}/data.bin", cache_dir=tmp_path, progress=False, timeout=5)
    assert leftovers(tmp_path) == []


def test_timeout(server: FakeServer, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(WordformerError, match="no response within 0.3 s"):
        dl.download(server.url("slow.bin"), cache_dir=tmp_path, progress=False, timeout=0.3)
    assert time.monotonic() - start < 3
    assert leftovers(tmp_path) == []


def test_dns_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(WordformerError, match="cannot resolve host 'example.invalid'"):
        dl.download("http://example.invalid/data.bin", cache_dir=tmp_path, progress=False)


def test_offline_hit_and_miss(server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WordformerError, match="not cached.*offline"):
        dl.download(server.url("data.bin"), cache_dir=tmp_path, offline=True)
    monkeypatch.setenv("WORDFORMER_OFFLINE", "1")
    with pytest.raises(WordformerError, match="not cached"):
        dl.download(server.url("data.bin"), cache_dir=tmp_path)
    assert server.requests == []

    path = dl.download(server.url("data.bin"), cache_dir=tmp_path, offline=False, progress=False)
    assert len(server.requests) == 1
    assert dl.download(server.url("data.bin"), cache_dir=tmp_path) == path  # offline via env: a hit
    assert len(server.requests) == 1


def test_bad_offline_env_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORDFORMER_OFFLINE", "maybe")
    with pytest.raises(WordformerError, match="WORDFORMER_OFFLINE"):
        dl.download("http://127.0.0.1:1/x.bin", cache_dir=tmp_path)


def test_env_cache_is_used_and_cache_dir_wins(server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORDFORMER_CACHE", str(tmp_path / "wf"))
    via_env = dl.download(server.url("data.bin"), progress=False)
    assert via_env.is_relative_to(tmp_path / "wf" / "downloads")
    explicit = dl.download(server.url("data.bin"), cache_dir=tmp_path / "mine", progress=False)
    assert explicit.is_relative_to(tmp_path / "mine")
    assert len(server.requests) == 2  # different caches, so each downloaded once


def test_partial_files_are_ignored_and_stale_ones_cleaned(server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "TUTORIAL6_BASE_URL", server.base + "files/")
    stale = tmp_path / ".ReverseTask.ckpt.part-deadbeef"
    fresh = tmp_path / ".ReverseTask.ckpt.part-cafef00d"  # may belong to a concurrent download
    stale.write_bytes(PAYLOAD[:10])
    fresh.write_bytes(PAYLOAD[:10])
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))

    with pytest.raises(WordformerError, match="not cached"):  # a partial file is never a hit
        dl.download("tutorial6-reverse", cache_dir=tmp_path, offline=True)
    path = dl.download("tutorial6-reverse", cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == CKPT
    assert not stale.exists()
    assert fresh.exists()


def test_registry_names_resolve(server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = dl.registry()
    assert entries["tutorial6-reverse"].url == (
        "https://raw.githubusercontent.com/phlippe/saved_models/main/tutorial6/ReverseTask.ckpt"
    )
    assert entries["tutorial6-anomaly"].filename == "SetAnomalyTask.ckpt"
    assert all(e.sha256 is None or len(e.sha256) == 64 for e in entries.values())

    monkeypatch.setattr(dl, "TUTORIAL6_BASE_URL", server.base + "files/")
    path = dl.download("Tutorial6-Anomaly", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "SetAnomalyTask.ckpt"
    assert server.requests == ["/files/SetAnomalyTask.ckpt"]
    # the same entry given by its URL shares the cache slot
    assert dl.download(server.url("SetAnomalyTask.ckpt"), cache_dir=tmp_path, progress=False) == path
    assert len(server.requests) == 1


def test_unknown_name_suggests_a_match(tmp_path: Path) -> None:
    with pytest.raises(WordformerError, match="did you mean 'tutorial6-reverse'"):
        dl.download("tutorial6-revers", cache_dir=tmp_path)
    with pytest.raises(WordformerError, match="only http"):
        dl.download("ftp://example.com/x.bin", cache_dir=tmp_path)
    with pytest.raises(WordformerError, match="file name"):
        dl.download("http://example.com/dir/", cache_dir=tmp_path)


def test_url_filenames_are_sanitised_and_kept_apart(server: FakeServer, tmp_path: Path) -> None:
    a = dl.download(server.url("data.bin"), cache_dir=tmp_path, progress=False)
    b = dl.download(server.url("data.bin") + "?v=2", cache_dir=tmp_path, progress=False)
    assert a.name == b.name == "data.bin" and a != b  # same name, different URLs: no clobbering
    source = dl._resolve("http://example.com/a/..%2F..%2Fetc%20passwd")
    assert "/" not in source.filename and not source.filename.startswith(".")


def cli_parser() -> argparse.ArgumentParser:
    from wordformer.cli import build_parser

    return build_parser()


def test_cli_prints_path(server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = cli_parser().parse_args(["download", server.url("data.bin"), "--cache-dir", str(tmp_path), "--no-progress"])
    assert args.handler is run_download
    assert run_download(args) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()).read_bytes() == PAYLOAD
    assert err == ""


def test_cli_list_and_missing_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli_parser()
    assert run_download(parser.parse_args(["download", "--list", "--cache-dir", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    assert "tutorial6-reverse" in out and "tutorial6-anomaly" in out
    with pytest.raises(WordformerError, match="NAME or URL"):
        run_download(parser.parse_args(["download"]))


def test_cli_help_shows_defaults() -> None:
    sub = cli_parser()._subparsers._group_actions[0].choices["download"]  # type: ignore[union-attr]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or ""), action.dest


@pytest.mark.parametrize("name, words", [
    ("page.ckpt", ["sent a web page", "check the URL"]),
    ("cut.ckpt", ["incomplete checkpoint", "download again"]),
    ("noise.pt", ["not send a PyTorch checkpoint"]),
    ("cut.safetensors", ["complete safetensors"]),
    ("textzip.ckpt", ["zip archive that is not a PyTorch checkpoint", "no data.pkl record", "check the URL"]),
    ("misplaced.pth", ["no data.pkl record"]),  # torch.load looks in the first record's folder only
])
def test_what_cannot_be_a_checkpoint_is_neither_cached_nor_pinned(server: FakeServer, tmp_path: Path, name: str,
                                                                    words: list[str]) -> None:
    """Status 200 and no Content-Length: only the content can tell a login page or a cut-short file."""
    with pytest.raises(WordformerError) as err:
        dl.download(server.url(name), cache_dir=tmp_path, progress=False)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)
    assert leftovers(tmp_path) == []  # no file, no .sha256 sidecar: a later download starts afresh


def test_a_complete_checkpoint_and_other_files_pass_the_content_check(server: FakeServer, tmp_path: Path) -> None:
    ckpt = dl.download(server.url("ReverseTask.ckpt"), cache_dir=tmp_path, progress=False)
    assert torch.equal(torch.load(ckpt, weights_only=True)["state_dict"]["w"], torch.arange(64_000, dtype=torch.int32))
    text = dl.download(server.url("notes.txt"), cache_dir=tmp_path, progress=False)  # no check for non-checkpoints
    assert text.read_bytes() == UNCHECKED["notes.txt"]


def test_legacy_and_file_saved_checkpoints_pass_the_content_check(server: FakeServer, tmp_path: Path) -> None:
    legacy = dl.download(server.url("legacy.pt"), cache_dir=tmp_path, progress=False)
    loaded = torch.load(legacy, weights_only=False)
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(64_000, dtype=torch.int32))
    assert legacy.with_name("legacy.pt.sha256").read_text().split()[0] == hashlib.sha256(LEGACY).hexdigest()
    named = dl.download(server.url("named.ckpt"), cache_dir=tmp_path, progress=False)
    assert torch.equal(torch.load(named, weights_only=True)["w"], torch.ones(3))


def test_a_file_in_the_cache_path_is_named(server: FakeServer, tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with pytest.raises(WordformerError) as err:
        dl.download(server.url("data.bin"), cache_dir=blocker / "sub", progress=False)
    assert f"{blocker} is a file, not a folder" in str(err.value) and "--cache-dir" in str(err.value)
    assert "File exists" not in str(err.value) and server.requests == []
    assert blocker.read_text() == "not a folder"
