"""The one exception type for user mistakes.

The CLI catches only :class:`WordformerError`, prints its one-line message and exits with status 2;
any other exception is a bug and keeps its traceback.
"""

import os
from pathlib import Path


class WordformerError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do."""


def file_in_the_way(path: "os.PathLike[str] | str") -> "Path | None":
    """The existing file that ``path`` or one of its parents is, if any: no folder can be made through it."""
    for part in (Path(path), *Path(path).parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def make_folder(folder: "os.PathLike[str] | str", *, advice: str) -> Path:
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
