"""Files in and out: ``wordformer export`` (checkpoint -> safetensors) and ``wordformer download``."""

from __future__ import annotations

import argparse

from ..errors import WordformerError
from .options import add_checkpoint


def add_export(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p)
    p.add_argument("--to", required=True, help="output file, ending in .safetensors (required)")
    p.add_argument("--overwrite", action="store_true", help="replace --to if it exists")


def run_export(args: argparse.Namespace) -> int:
    from ..checkpoint import export_checkpoint

    to = export_checkpoint(args.checkpoint, args.to, overwrite=args.overwrite)
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
