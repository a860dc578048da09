#!/usr/bin/env python3
"""Print what each .deb holds: size, files, top-level directories, bundled distributions.

    python packaging/summarize.py dist/edgefl_0.1.0_amd64.deb [...]

Reads `dpkg-deb --field` and `dpkg-deb --contents` (nothing is unpacked).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SITE = "./opt/edgefl/venv/lib/python3.11/site-packages/"
_LISTING = re.compile(r"^(\S+)\s+\S+\s+(\d+)\s+\S+\s+\S+\s+(.+?)(?: -> .*)?$")


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def parse_listing(text: str) -> list[tuple[str, int, str]]:
    """(mode string, size, path) per line of `dpkg-deb --contents`."""
    entries = []
    for line in text.splitlines():
        match = _LISTING.match(line)
        if match:
            entries.append((match.group(1), int(match.group(2)), match.group(3)))
    return entries


def distributions(paths: list[str]) -> list[tuple[str, str]]:
    """(name, version) of every NAME-VERSION.dist-info directory directly in site-packages."""
    found = set()
    for path in paths:
        if path.startswith(SITE):
            top = path[len(SITE):].split("/", 1)[0]
            if top.endswith(".dist-info"):
                name, _, version = top[: -len(".dist-info")].rpartition("-")
                found.add((name, version))
    return sorted(found, key=lambda item: item[0].lower())


def summarize(deb: Path) -> str:
    fields = subprocess.run(["dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture",
                             "Installed-Size", "Depends"], capture_output=True, text=True, check=True).stdout
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    entries = parse_listing(listing)
    files = [(mode, size, path) for mode, size, path in entries if not mode.startswith("d")]
    by_top: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_site: dict[str, int] = defaultdict(int)
    for _, size, path in files:
        parts = path.lstrip("./").split("/")
        top = "/" + "/".join(parts[:2]) if parts[0] in ("usr", "lib", "opt") else "/" + parts[0]
        by_top[top][0] += 1
        by_top[top][1] += size
        if path.startswith(SITE):
            by_site[path[len(SITE):].split("/", 1)[0]] += size
    lines = [f"== {deb.name}: {human(deb.stat().st_size)} ({deb.stat().st_size} bytes), "
             f"{len(files)} files"]
    lines += ["   " + line for line in fields.strip().splitlines()]
    lines.append("   top-level: " + "; ".join(
        f"{top} {count} files {human(size)}" for top, (count, size) in sorted(by_top.items())))
    biggest = sorted(by_site.items(), key=lambda item: -item[1])[:6]
    if biggest:
        lines.append("   largest in site-packages: " + ", ".join(f"{name} {human(size)}" for name, size in biggest))
    dists = distributions([path for _, _, path in entries])
    lines.append(f"   bundled distributions ({len(dists)}): " + ", ".join(f"{n} {v}" for n, v in dists))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 64
    for name in argv:
        print(summarize(Path(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
