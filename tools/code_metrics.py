#!/usr/bin/env python3
"""Figures on the shape of the product code (edgefld/): `python tools/code_metrics.py [--json FILE]`.

What issue 14 compares before and after a clean-up: the 15 longest functions, the modules over
300 lines, the pairs of repeated code the `duplicates` tool finds (when it is on PATH), how often
`Any` is written, the lint suppressions (`noqa`, `type: ignore`), and what ruff and mypy report
with the project's configuration (pyproject.toml), when they are installed.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgefld"
LONG_MODULE_LINES = 300
SUPPRESSION = re.compile(r"#\s*(noqa|type:\s*ignore)")
ANY = re.compile(r"\bAny\b")


def functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
            found.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return found


def tool_count(argv: list[str], pattern: str) -> int | None:
    """The number in ``pattern``'s first group in a tool's output (0 when it says nothing of it)."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return None
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    found = re.search(pattern, result.stdout + result.stderr)
    return int(found.group(1)) if found else 0


def measure() -> dict[str, object]:
    sources = sorted(PACKAGE.rglob("*.py"))
    every_function = sorted((f for path in sources for f in functions(path)), reverse=True)
    lines = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in sources}
    text = {p: p.read_text(encoding="utf-8") for p in sources}
    bindir = Path(sys.executable).parent
    duplicates = None
    if shutil.which("duplicates"):
        out = subprocess.run(["duplicates", "--repo", str(PACKAGE), "--most", "200"], capture_output=True,
                             text=True, timeout=300, check=False).stdout
        duplicates = len(re.findall(r"^D\d+ ", out, flags=re.M))
    return {
        "longest_functions": [f"{n} lines {where}" for n, where in every_function[:15]],
        "modules_over_300_lines": {k: v for k, v in sorted(lines.items(), key=lambda kv: -kv[1])
                                   if v > LONG_MODULE_LINES},
        "duplicates_pairs": duplicates,
        "any_count": sum(len(ANY.findall(t)) for t in text.values()),
        "suppressions": sum(len(SUPPRESSION.findall(t)) for t in text.values()),
        "ruff_errors": tool_count([str(bindir / "ruff"), "check", "."], r"Found (\d+) error"),
        "mypy_errors": tool_count([str(bindir / "mypy")], r"Found (\d+) error"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures = measure()
    for key, value in figures.items():
        if isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print(f"  {item}")
        elif isinstance(value, dict):
            print(f"{key}: {len(value)}")
            for name, count in value.items():
                print(f"  {count:5d} {name}")
        else:
            print(f"{key}: {'n/a' if value is None else value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
