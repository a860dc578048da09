"""Submitting and following a run through Flower's Control API, on loopback only.

These are the calls the `flwr` CLI makes (flwr 1.42, pinned exactly: the
modules are internal). Failures become ``ControlError`` with Flower's code and
detail, since the CLI itself exits 0 on several of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx
from flwr.common.serde import fab_to_proto, user_config_to_proto
from flwr.proto.control_pb2 import (
    ListNodesRequest,
    ListRunsRequest,
    RegisterNodeRequest,
    StartRunRequest,
    StopRunRequest,
    StreamLogsRequest,
    UnregisterNodeRequest,
)
from flwr.supercore.control.control_http_client import ControlHttpClient
from flwr.supercore.error.base import FlowerError
from flwr.supercore.fab import Fab


class ControlError(Exception):
    pass


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    status: str  # pending | starting | running | finished:completed|failed|stopped
    details: str
    bytes_sent: int
    bytes_received: int

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")


@dataclass(frozen=True)
class NodeRecord:
    node_id: int
    public_key: bytes  # PEM, as registered
    name: str
    status: str  # registered | online | offline | unregistered


# Every call is on loopback and answered in milliseconds; Flower's client waits 30 s, which a daemon
# asked to stop (systemd gives it 15 s) cannot afford to spend on a SuperLink that hangs.
CALL_TIMEOUT_S = 5.0


class Control:
    def __init__(self, address: str, root_certificates: bytes | None = None) -> None:
        self._client = ControlHttpClient.from_server_address(
            server_address=address, insecure=root_certificates is None, root_certificates=root_certificates,
            interceptors=[])
        # ProtobufClient sends every request through this httpx client (pinned: tests/test_flower_compat.py).
        self._client._client.timeout = httpx.Timeout(CALL_TIMEOUT_S)

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._client, method)(request)
        except httpx.HTTPStatusError as err:
            flower = FlowerError.from_json(err.response.text)
            detail = (f"code {flower.code}: {flower.message}" + (f" {flower.public_details}" if flower.public_details
                                                                 else "")
                      if flower is not None else err.response.text[:300])
            raise ControlError(f"{method} refused (HTTP {err.response.status_code}, {detail})") from None
        except httpx.HTTPError as err:
            raise ControlError(f"{method} failed: SuperLink unreachable ({err})") from None

    def submit(self, fab: bytes, overrides: dict[str, Any]) -> int:
        request = StartRunRequest(
            fab=fab_to_proto(Fab(hashlib.sha256(fab).hexdigest(), fab, {})),
            override_config=user_config_to_proto(overrides),
            federation="",
        )
        response = self._call("StartRun", request)
        if not response.HasField("run_id"):
            raise ControlError("StartRun returned no run id (is the FAB larger than Flower accepts?)")
        return int(response.run_id)

    def runs(self, run_id: int | None = None) -> list[RunInfo]:
        request = ListRunsRequest(run_id=run_id) if run_id is not None else ListRunsRequest()
        response = self._call("ListRuns", request)
        out = []
        for rid, run in response.run_dict.items():
            status = run.status.status + (f":{run.status.sub_status}" if run.status.sub_status else "")
            out.append(RunInfo(int(rid), status, run.status.details, int(run.bytes_sent), int(run.bytes_recv)))
        return sorted(out, key=lambda r: r.run_id)

    def run(self, run_id: int) -> RunInfo:
        found = self.runs(run_id)
        if not found:
            raise ControlError(f"run {run_id} is unknown to the SuperLink")
        return found[0]

    def stop(self, run_id: int) -> None:
        self._call("StopRun", StopRunRequest(run_id=run_id))

    def nodes(self) -> list[NodeRecord]:
        response = self._call("ListNodes", ListNodesRequest())
        return [NodeRecord(int(n.node_id), bytes(n.public_key), n.name, n.status) for n in response.nodes_info]

    def register_node(self, public_key_pem: bytes, name: str) -> int:
        """Admit a node key (SuperNode authentication); the SuperLink keeps it until it stops (in memory: the
        daemon registers the enrolled keys again at every start, edgefld.server.enrolment)."""
        return int(self._call("RegisterNode", RegisterNodeRequest(public_key=public_key_pem, name=name)).node_id)

    def unregister_node(self, node_id: int) -> None:
        self._call("UnregisterNode", UnregisterNodeRequest(node_id=node_id))

    def logs(self, run_id: int) -> str:
        """The ServerApp's log of a finished run (the stream stays open while a run is live)."""
        return "".join(r.log_output for r in self._call("StreamLogs", StreamLogsRequest(run_id=run_id,
                                                                                      after_timestamp=0.0)))
