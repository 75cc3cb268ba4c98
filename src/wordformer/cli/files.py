"""Files in and out: ``wordformer export`` (checkpoint -> safetensors file or HuggingFace folder) and
``wordformer download``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..errors import WordformerError
from .options import add_checkpoint


EXPORT_FORMATS = ("safetensors", "hf")


def add_export(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p)
    p.add_argument("--to", required=True, nargs="+", metavar=("FILE.safetensors|hf", "DIR"),
                   help="where to write (required): FILE.safetensors (one file every --checkpoint option reads), "
                        "or a folder for HuggingFace transformers: `--to hf DIR` (or a DIR without a suffix)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                   help="safetensors or hf (default: from --to: a .safetensors name is one file, a name without "
                        "a suffix a HuggingFace folder)")
    p.add_argument("--overwrite", action="store_true", help="replace what --to holds (the export's own files only)")


def export_target(to: list[str], fmt: Optional[str]) -> tuple[str, Path]:
    """(format, path) from ``--to [FORMAT] PATH`` and ``--format``; one line for anything ambiguous."""
    if len(to) == 2 and to[0] in EXPORT_FORMATS:
        if fmt is not None and fmt != to[0]:
            raise WordformerError(f"--to {to[0]} {to[1]} and --format {fmt} disagree; give one of them")
        return to[0], Path(to[1])
    if len(to) != 1:
        raise WordformerError(f"--to takes a path, or a format and a path (--to hf DIR, --to safetensors FILE), "
                              f"not {' '.join(to)}")
    path = Path(to[0])
    if fmt is not None:
        return fmt, path
    if path.suffix == ".safetensors":
        return "safetensors", path
    if not path.suffix or path.is_dir():
        return "hf", path
    raise WordformerError(f"--to {path} must end in .safetensors (one file), or name a folder for HuggingFace: "
                          f"--to hf {path}")


def run_export(args: argparse.Namespace) -> int:
    fmt, to = export_target(args.to, args.format)
    if fmt == "hf":
        from ..hf import HF_FILES, export_hf

        folder = export_hf(args.checkpoint, to, overwrite=args.overwrite)
        print(f"wrote {folder}/ ({', '.join(HF_FILES)}) from {args.checkpoint}")
        print(f"load:  AutoModelForCausalLM.from_pretrained({str(folder)!r}), "
              f"AutoTokenizer.from_pretrained({str(folder)!r})")
        return 0
    from ..checkpoint import export_checkpoint

    to = export_checkpoint(args.checkpoint, to, overwrite=args.overwrite)
    print(f"wrote {to} ({to.stat().st_size:,} bytes: weights, configs and tokenizer) from {args.checkpoint}")
    return 0


def add_download(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", default=None, metavar="NAME|URL",
                   help="registry name (see --list) or http(s) URL (default: none; required unless --list)")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="expected sha256 of the file (default: the registry's, else the one recorded on first "
                        "download)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="directory to keep downloads in (default: $WORDFORMER_CACHE/downloads, else "
                        "$XDG_CACHE_HOME/wordformer/downloads, else ~/.cache/wordformer/downloads)")
    p.add_argument("--offline", action="store_true", default=None,
                   help="only use the cache, never the network (default: off, unless WORDFORMER_OFFLINE=1)")
    p.add_argument("--list", action="store_true", help="list the registry names and exit (default: off)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar on stderr (default: shown)")


def run_download(args: argparse.Namespace) -> int:
    """Print the cached file's path (or the registry) to stdout."""
    from ..download import download, registry
    from ..files import download_cache_dir

    if args.list:
        if args.target is not None:
            raise WordformerError("pass either NAME|URL or --list, not both")
        root = download_cache_dir(args.cache_dir)
        for name, entry in sorted(registry().items()):
            state = "cached" if (root / entry.filename).is_file() else "-"
            print(f"{name:<20} {state:<7} {entry.description}  <{entry.url}>")
        return 0
    if args.target is None:
        raise WordformerError("download needs a NAME or URL; see `wordformer download --list`")
    print(download(args.target, sha256=args.sha256, cache_dir=args.cache_dir, offline=args.offline,
                   progress=not args.no_progress))
    return 0
