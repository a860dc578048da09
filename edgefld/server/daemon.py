"""The edgefl-server daemon (federation runtime: see the federation issue)."""

from __future__ import annotations

from edgefld.client.daemon import NotInThisBuild
from edgefld.config import Config


def run_server(config: Config) -> int:
    raise NotInThisBuild("the server daemon is not part of this build yet")
