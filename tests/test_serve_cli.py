"""``wordformer serve`` on the command line: one-line errors, the demo default, URLs, a clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import SMALL_TEXT, TINY_TRAIN, assert_one_line_error, one_thread_env, run_cli
from serve_fixtures import serve_models  # noqa: F401  (fixture)


def test_a_taken_port_is_one_line_and_exit_2(serve_models, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = run_cli(capsys, "serve", "--checkpoint", serve_models["word"], "--port", port)
    assert_one_line_error(code, err, f"port {port}", "in use", "--port")
    assert out == ""


def test_a_bad_checkpoint_is_one_line_and_exit_2_and_frees_the_port(tmp_path, capsys):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"this is not a checkpoint")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run_cli(capsys, "serve", "--checkpoint", bad, "--port", port)
    assert_one_line_error(code, err, "broken.ckpt")
    with socket.socket() as again:  # the port the command bound was released
        again.bind(("127.0.0.1", port))


@pytest.mark.parametrize("argv, words", [
    (["--max-tokens", "0"], ["--max-tokens=0", ">= 1"]),
    (["--max-tokens", "-5"], ["--max-tokens=-5"]),
    (["--port", "70000"], ["--port 70000", "0..65535"]),
    (["--api-key", ""], ["API key", "empty"]),
    (["--cors-origin", "example.com"], ["--cors-origin", "http://"]),
    (["--host", "192.0.2.1"], ["--host 192.0.2.1", "not an address of this machine"]),  # TEST-NET-1: nobody's
])
def test_bad_options_are_one_line_and_exit_2(serve_models, capsys, argv, words):
    code, _, err = run_cli(capsys, "serve", "--checkpoint", serve_models["word"], "--port", "0", *argv)
    assert_one_line_error(code, err, *words)


def test_a_missing_checkpoint_file_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "serve", "--checkpoint", tmp_path / "nope.ckpt")
    assert_one_line_error(code, err, "nope.ckpt", "does not exist")


def test_no_checkpoint_and_no_demo_run_says_to_run_make_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "serve")
    assert_one_line_error(code, err, "make demo", "--checkpoint")
    assert out == ""


def test_another_host_without_a_key_gets_a_warning_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORDFORMER_API_KEY", raising=False)
    # the missing checkpoint stops the command before it opens any port: the warning comes first
    code, _, err = run_cli(capsys, "serve", "--host", "0.0.0.0", "--checkpoint", tmp_path / "nope.ckpt")
    assert code == 2
    assert "wordformer: warning: serving on 0.0.0.0 without --api-key" in err
    code, _, err = run_cli(capsys, "serve", "--host", "0.0.0.0", "--api-key", "k", "--checkpoint",
                           tmp_path / "nope.ckpt")
    assert code == 2 and "warning" not in err


def test_help_imports_neither_fastapi_nor_uvicorn():
    code = ("import sys; from wordformer.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=one_thread_env(),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _demo_run(root: Path, capsys) -> str:
    """A tiny `wordformer demo` into root/runs/demo (the default place); returns its output."""
    data = root / "small.txt"
    data.write_text(SMALL_TEXT, encoding="utf-8")
    code, out, err = run_cli(capsys, "demo", "--out", root / "runs" / "demo", "--data", data, *TINY_TRAIN)
    assert code == 0, err
    return out


@pytest.mark.slow
def test_serve_without_checkpoint_serves_the_demo_prints_urls_and_stops_cleanly_on_ctrl_c(tmp_path, capsys):
    out = _demo_run(tmp_path, capsys)
    assert out.rstrip().splitlines()[-1].strip().startswith(f"wordformer serve --checkpoint {tmp_path}")
    env = {**one_thread_env(), "WORDFORMER_API_KEY": "sekret"}
    proc = subprocess.Popen([sys.executable, "-m", "wordformer.cli", "serve", "--port", "0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while not any(line.strip().startswith("API:") for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
            lines.append(line)
            assert time.monotonic() < deadline, lines
        page = next(ln.split()[-1] for ln in lines if ln.strip().startswith("page:"))
        api = next(ln.split()[1] for ln in lines if ln.strip().startswith("API:"))
        assert page.startswith("http://127.0.0.1:") and api == page.rstrip("/") + "/v1"
        assert "demo/best" in lines[0]
        client = openai.OpenAI(base_url=api, api_key="sekret", max_retries=0)  # the key came from the environment
        assert client.completions.create(model="demo/best", prompt="the cat", max_tokens=3).choices[0].text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=api, api_key="wrong", max_retries=0).models.list()
        # Ctrl-C while a stream is open: the server still stops, at once and without a traceback
        with httpx.stream("POST", api + "/completions", headers={"Authorization": "Bearer sekret"},
                          json={"model": "demo/best", "prompt": "the", "max_tokens": 1000, "stream": True}) as stream:
            next(stream.iter_lines())
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert code == 0, err
    assert "Traceback" not in err and "stopped" in err


def test_demo_in_the_default_folder_names_plain_wordformer_serve(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "small.txt"
    data.write_text(SMALL_TEXT, encoding="utf-8")
    code, out, err = run_cli(capsys, "demo", "--data", data, *TINY_TRAIN)
    assert code == 0, err
    assert out.rstrip().splitlines()[-1].strip().startswith("wordformer serve ")
    assert "--checkpoint" not in out.rstrip().splitlines()[-1]
    assert os.path.isfile("runs/demo/best.ckpt")


def test_open_waits_for_the_server_then_opens_the_page(monkeypatch):
    import webbrowser

    from wordformer.serve.server import open_when_up

    opened = []
    monkeypatch.setattr(webbrowser, "open", opened.append)

    class Starting:
        started = False

    server = Starting()
    thread = threading.Thread(target=open_when_up, args=(server, "http://127.0.0.1:1/"))
    thread.start()
    time.sleep(0.3)
    assert opened == []  # not before the server is up
    server.started = True
    thread.join(5)
    assert opened == ["http://127.0.0.1:1/"]
