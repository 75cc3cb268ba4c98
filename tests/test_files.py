"""files.py: the one atomic writer, folder creation with one-line errors, and where the caches live."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from wordformer import files
from wordformer.errors import WordformerError


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "model.bin"
    files.atomic_write_bytes(b"old", target)
    files.atomic_write(target, lambda fh: (fh.write(b"new "), fh.write(b"bytes")))
    assert target.read_bytes() == b"new bytes"
    assert leftovers(tmp_path) == []


def test_a_writer_that_fails_half_way_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.bin"
    files.atomic_write_bytes(b"the user's file", target)

    def half_then_fail(fh):
        fh.write(b"half of the new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError):
        files.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"the user's file"
    assert leftovers(tmp_path) == []


def test_temporary_files_are_named_after_their_target(tmp_path):
    """runs.py removes exactly these names after a kill, so the pattern is part of the contract."""
    seen = []
    files.atomic_write(tmp_path / "last.ckpt", lambda fh: seen.extend(p.name for p in tmp_path.iterdir()))
    assert len(seen) == 1 and seen[0].startswith(files.temp_prefix(Path("last.ckpt"))) and seen[0].endswith(".tmp")


def test_new_files_get_the_umask_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = files.atomic_write_bytes(b"x", tmp_path / "new.bin")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("code, offers_space", [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False),
                                                (errno.EROFS, False)])
def test_write_errors_offer_free_space_only_when_it_would_help(code, offers_space):
    message = str(files.write_error("out.bin", OSError(code, os.strerror(code)), "choose another --to"))
    assert "could not write out.bin" in message and message.endswith("choose another --to")
    assert ("free disk space" in message) == offers_space


def test_save_bytes_makes_the_folder_and_turns_failures_into_one_line(tmp_path):
    assert files.save_bytes(b"data", tmp_path / "a" / "b" / "f.bin", advice="x").read_bytes() == b"data"
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(WordformerError, match=f"{blocker} is a file, not a folder; choose another --out"):
        files.save_bytes(b"data", blocker / "sub" / "f.bin", advice="choose another --out")
    assert blocker.read_text() == "keep me"


def test_make_folder_names_the_part_of_the_path_that_is_a_file(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    assert files.file_in_the_way(blocker / "a" / "b") == blocker
    assert files.file_in_the_way(tmp_path / "new" / "folder") is None
    with pytest.raises(WordformerError) as info:
        files.make_folder(blocker / "run", advice="choose another --out")
    assert str(info.value) == (f"cannot make folder {blocker / 'run'}: {blocker} is a file, not a folder; "
                               "choose another --out")


def test_a_folder_that_cannot_be_made_gets_the_reason():
    with pytest.raises(WordformerError, match=r"cannot make folder /proc/wordformer-x/y: .*; choose another --out"):
        files.check_writable_folder(Path("/proc/wordformer-x/y"), advice="choose another --out")


def test_cache_folders_follow_the_option_then_env_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("WORDFORMER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert files.corpus_cache_dir() == tmp_path / "xdg" / "wordformer"
    assert files.download_cache_dir() == tmp_path / "xdg" / "wordformer" / "downloads"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # invalid per the XDG specification
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.cache_home() == tmp_path / "home" / ".cache" / "wordformer"
    monkeypatch.setenv("WORDFORMER_CACHE", str(tmp_path / "wf"))
    assert files.corpus_cache_dir() == tmp_path / "wf"
    assert files.download_cache_dir() == tmp_path / "wf" / "downloads"
    for given in (tmp_path / "explicit", str(tmp_path / "explicit")):
        assert files.corpus_cache_dir(given) == files.download_cache_dir(given) == tmp_path / "explicit"
