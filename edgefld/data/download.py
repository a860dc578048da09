"""`edgefl data download NAME`: fetch the published files, verify them and store the dataset.

Each file goes to ``<file>.part`` and is renamed into place only once its
checksum matches, so a file under its final name is always a verified one.
Mirrors are tried in order; a mirror that fails (unreachable, HTTP error, wrong
checksum) hands over to the next. The progress bar goes to stderr: redrawn in
place on a terminal, one line per ~10% where stderr is a log (journald).
"""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from edgefld import __version__
from edgefld.data.digits import build_digits
from edgefld.data.importer import import_from
from edgefld.data.sources import DatasetSpec, SourceFile, dataset_spec, file_digest
from edgefld.errors import DataError, StateWriteError

DOWNLOADS_DIRNAME = ".downloads"
_TIMEOUT_S = 30
_READ_BYTES = 256 * 1024
_BAR_WIDTH = 30
_TTY_REDRAW_S = 0.1
_LOG_STEP_BYTES_UNKNOWN_SIZE = 10_000_000  # a log line per 10 MB when the size is unknown


def download_dataset(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: TextIO | None = None,
    quiet: bool = False,
) -> None:
    """Download, verify and store ``name`` under ``data_dir``.

    ``mirrors`` replaces the published base URLs (a local cache, or tests);
    ``checksums`` replaces published digests by file name; the progress bar
    goes to ``progress`` (stderr by default) unless ``quiet``. digits ships
    with edgefl, so it is only (re)built.
    """
    spec = dataset_spec(name)
    if not spec.downloadable:
        build_digits(data_dir)
        return
    base_urls = tuple(mirrors) if mirrors is not None else spec.mirrors
    downloads = Path(data_dir) / DOWNLOADS_DIRNAME / name
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateWriteError(f"cannot create {downloads}: {exc} (check that this user owns {data_dir})") from None
    stream = None if quiet else progress or sys.stderr
    origins = [
        fetch_file(source, downloads, base_urls, spec, expected=(checksums or {}).get(source.filename), progress=stream)
        for source in spec.sources
    ]
    import_from(downloads, data_dir, checksums or {}, {"downloaded_from": origins})
    # The store holds everything; the archives would only double the space taken on an SD card.
    shutil.rmtree(downloads, ignore_errors=True)


def fetch_file(
    source: SourceFile,
    directory: Path,
    base_urls: Sequence[str],
    spec: DatasetSpec,
    *,
    expected: str | None = None,
    progress: TextIO | None,
) -> str:
    """Put a verified ``source`` in ``directory``, trying each base URL in turn; returns where it came from.

    A file already there under its final name was verified when it got that
    name, and is checked again rather than fetched again. ``progress=None``
    draws no progress bar.
    """
    digest = expected or source.digest
    target = directory / source.filename
    if target.is_file() and file_digest(target, source.algorithm) == digest:
        return f"{target} (downloaded earlier)"
    failures = []
    for base in base_urls:
        url = base.rstrip("/") + "/" + source.filename
        partial = directory / f"{source.filename}.part"
        try:
            _download(url, partial, f"{spec.name} {source.filename}", progress)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"{url}: {_describe(exc)}")
            partial.unlink(missing_ok=True)
            continue
        actual = file_digest(partial, source.algorithm)
        if actual != digest:
            failures.append(f"{url}: {source.algorithm} {actual}, expected {digest}")
            partial.unlink(missing_ok=True)
            continue
        os.replace(partial, target)
        return url
    raise DataError(
        f"could not download {source.filename} ({'; '.join(failures)}); on a board without internet "
        f"copy the files to it and run `edgefl data import PATH`"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)


def _download(url: str, partial: Path, label: str, progress: TextIO | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": f"edgefl/{__version__}"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, open(partial, "wb") as out:
        length = response.headers.get("Content-Length")
        bar = _ProgressBar(progress, label, int(length) if length and length.isdigit() else None)
        done = 0
        while block := response.read(_READ_BYTES):
            out.write(block)
            done += len(block)
            bar.update(done)
        if bar.total is not None and done != bar.total:
            raise OSError(f"connection closed after {done} of {bar.total} bytes")
        out.flush()
        os.fsync(out.fileno())
        bar.finish(done)


class _ProgressBar:
    """A bar redrawn in place on a terminal; on a log, one line per 10% step (or per 10 MB)."""

    def __init__(self, stream: TextIO | None, label: str, total: int | None) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.tty = stream is not None and stream.isatty()
        self._last_step = 0
        self._logged_bytes = 0
        self._last_draw = 0.0

    def update(self, done: int) -> None:
        if self.stream is None:
            return
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= _TTY_REDRAW_S:
                self._last_draw = now
                self.stream.write("\r" + self._line(done))
                self.stream.flush()
            return
        step = done * 10 // self.total if self.total else done // _LOG_STEP_BYTES_UNKNOWN_SIZE
        if step > self._last_step:
            self._last_step = step
            self._log(done)

    def finish(self, done: int) -> None:
        if self.stream is None:
            return
        if self.tty:
            self.stream.write("\r" + self._line(done) + "\n")
            self.stream.flush()
        elif done != self._logged_bytes:
            self._log(done)  # the size was unknown, so the steps did not end on the total

    def _log(self, done: int) -> None:
        assert self.stream is not None
        self._logged_bytes = done
        self.stream.write(self._line(done) + "\n")
        self.stream.flush()

    def _line(self, done: int) -> str:
        size = f"{done / 1e6:.1f}"
        if not self.total:
            return f"{self.label}: {size} MB"
        percent = done * 100 // self.total
        if not self.tty:
            return f"{self.label}: {percent}% of {self.total / 1e6:.1f} MB"
        filled = _BAR_WIDTH * done // self.total
        return (
            f"{self.label} [{'#' * filled}{' ' * (_BAR_WIDTH - filled)}] {percent:3d}% {size}/{self.total / 1e6:.1f} MB"
        )
