"""The house rules, checked on the source itself: no import circle (lazy imports count), no private name
imported across modules, argument parsing and printing only in ``wordformer/cli/``, and ``--help`` that
never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_files() -> dict[str, Path]:
    """Every module of ``src/wordformer`` and ``benchmarks`` by dotted name."""
    found = {}
    for base, folder in ((SRC, SRC / "wordformer"), (ROOT, ROOT / "benchmarks")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str]]:
    """(module imported, name taken from it) for every import in the file, at any depth (lazy ones too)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    found.append((f"{target}.{alias.name}", ""))
                elif target in known:
                    found.append((target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name in known]
    return [(module, taken) for module, taken in found if module != name]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_of_src_and_benchmarks_has_no_circle():
    known = module_files()
    graph = {name: {module for module, _ in imports_of(name, path, known)} for name, path in known.items()}
    assert cycles(graph) == []


def test_cycles_finds_a_circle_through_three_modules():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    known = module_files()
    private = [(name, module, taken) for name, path in known.items() for module, taken in imports_of(name, path, known)
               if taken.startswith("_") and not taken.startswith("__")]
    assert private == []


def test_every_name_imported_from_our_modules_exists(monkeypatch):
    """Lazy imports (inside functions) run only when their code does: a name moved or renamed elsewhere would
    break them silently (bench_serve once imported ``finish`` from where it no longer was)."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT))
    known = module_files()
    missing = []
    for name, path in known.items():
        for module, taken in imports_of(name, path, known):
            if taken and taken != "*" and not hasattr(importlib.import_module(module), taken):
                missing.append(f"{name} imports {taken} from {module}")
    assert missing == []


def test_only_the_cli_package_parses_arguments_or_prints():
    offenders = []
    for path in (SRC / "wordformer").rglob("*.py"):
        if "cli" in path.relative_to(SRC / "wordformer").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if "argparse" in names:
                    offenders.append(f"{path.name}: imports argparse")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.name}:{node.lineno}: print()")
    assert offenders == []


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["tune", "--help"], ["plot", "attention", "--help"]])
def test_help_never_imports_torch(argv):
    code = ("import sys\nfrom wordformer.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'lightning', 'optuna', 'numpy') if m in sys.modules)\n"
            "print('heavy:', ','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "heavy:", proc.stdout[-300:]


def test_every_command_in_the_table_has_its_parser_and_handler():
    from wordformer.cli import COMMANDS, build_parser

    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))
    subparsers = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(subparsers) == sorted(names)
    for command in COMMANDS:
        assert subparsers[command.name].get_default("handler").__name__ == f"run_{command.name}"
