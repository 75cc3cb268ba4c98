"""The one exception type for user mistakes.

The CLI catches only :class:`WordformerError`, prints its one-line message and exits with status 2;
any other exception is a bug and keeps its traceback.
"""

import os
from pathlib import Path


class WordformerError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do."""


def make_folder(folder: "os.PathLike[str] | str", *, advice: str) -> None:
    """``mkdir -p`` whose failure is one line naming the culprit: a part of the path that is a file (mkdir alone
    says only "File exists" or "Not a directory") or the OS's reason."""
    folder = Path(folder)
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise WordformerError(f"cannot make folder {folder}: {part} is a file, not a folder; {advice}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WordformerError(f"cannot make folder {folder}: {exc.strerror or exc}; {advice}") from None
