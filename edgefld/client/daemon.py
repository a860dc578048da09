"""The edgefl-client daemon (federation runtime: see the federation issue)."""

from __future__ import annotations

from edgefld.config import Config
from edgefld.errors import EdgeflError
from edgefld.exit_codes import ExitCode


class NotInThisBuild(EdgeflError):
    exit_code = ExitCode.UNAVAILABLE


def run_client(config: Config) -> int:
    raise NotInThisBuild("the client daemon is not part of this build yet")
