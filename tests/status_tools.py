"""Debian's promtool and chromium for the tests of `edgefl status`, `edgefl report` and the Prometheus textfile.

Both come from Debian's archive (`make test-tools`: chromium installed, promtool unpacked from the
prometheus package into build/tools, so that no Prometheus server is started): a test that needs
one is skipped, naming the package, where it is missing.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def promtool(path: Path) -> str:
    """`promtool check metrics` on the file: its output; the test fails on any complaint."""
    unpacked = Path(__file__).resolve().parents[1] / "build" / "tools" / "prometheus" / "usr" / "bin" / "promtool"
    exe = shutil.which("promtool") or (str(unpacked) if unpacked.exists() else None)
    if exe is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    with open(path, "rb") as handle:
        result = subprocess.run([exe, "check", "metrics"], stdin=handle, capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output
    return f"$ promtool check metrics < {path.name}; echo $?\n{output}{chr(10) if output else ''}{result.returncode}\n"


def chromium_screenshot(page: Path, screenshot: Path) -> tuple[Path, str]:
    """Open ``page`` in headless chromium, without a network: (its screenshot, the text it shows)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    # No network: every request would go to a closed port, every name resolves to nothing.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--user-data-dir={screenshot.parent / 'chromium-profile'}"]
    uri = page.resolve().as_uri()
    shot = subprocess.run([exe, *flags, f"--screenshot={screenshot}", "--window-size=1280,2400", uri],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    dom = subprocess.run([exe, *flags, "--dump-dom", uri], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # What it shows: the text of the document as the browser built it (the screenshot is the picture).
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom.stdout))
    return screenshot, " ".join(text.split())
