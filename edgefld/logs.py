"""Logging to stderr, shaped for journald when systemd runs us.

Under systemd (JOURNAL_STREAM is set) the journal adds its own timestamps and
unit name, so lines carry only the level; at a terminal they carry the time.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level: str = "info") -> None:
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger("edgefl")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"edgefl.{name}")
