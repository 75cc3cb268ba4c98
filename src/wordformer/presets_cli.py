"""``wordformer presets``: list the presets and what each sets, or print one as a YAML config file.

    wordformer presets                 # every preset, its summary and its values
    wordformer presets fast            # one preset
    wordformer presets fast --yaml     # a config file that sets the same: wordformer train --config FILE
"""

from __future__ import annotations

import argparse
from typing import Any

from .presets import DEFAULT_PRESET, PRESETS, preset_names, preset_values, preset_yaml


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``presets`` on the main CLI's subparsers."""
    p = subparsers.add_parser("presets", help="list the presets (--preset NAME of train, demo, tune) and what each sets",
                              description="Presets are named bundles of options; options given beside "
                                          "--preset override it.")
    p.add_argument("name", nargs="?", choices=preset_names(), default=None, help="show only this preset")
    p.add_argument("--yaml", action="store_true", help="print the preset as a YAML config file (needs NAME)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .errors import WordformerError

    if args.yaml:
        if args.name is None:
            raise WordformerError("--yaml prints one preset: give its name, e.g. `wordformer presets fast --yaml`")
        print(preset_yaml(args.name), end="")
        return 0
    for name in [args.name] if args.name else preset_names():
        default = " (the default)" if name == DEFAULT_PRESET else ""
        print(f"{name}{default}: {PRESETS[name].summary}")
        values = preset_values(name)
        print("  " + ", ".join(f"{k}={_shown(v)}" for k, v in values.items()))
    return 0


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)
