"""Flower's SuperNode, refusing every FAB but edgefl's thin one: `python -m edgefld.client.supernode ARGS`.

Open-source Flower 1.42 runs whatever FAB a run carries: its files go first on
sys.path of the ClientApp process, so a FAB with an `edgefld/` package of its
own, or components naming its own module, runs its code on every board. FAB
signatures (`--trusted-entities`) need a licensed SuperLink. So the board
checks each run's FAB where the SuperNode first fetches it, before storing it
for a ClientApp: a foreign one gets Flower's own "FAB could not be verified"
error reply, as an unsigned FAB would with trusted entities, and nothing of
it is installed or imported. The check wraps one function of the pinned flwr.
Every answer the SuperNode reads is bounded in size and rate (edgefld.client.bounded_reads).
"""

from __future__ import annotations

import sys
from logging import ERROR
from typing import Any, Callable

from flwr.app import Error, Message
from flwr.common.logger import log
from flwr.supercore.protobuf.client import ProtobufClient
from flwr.supernode import start_client_internal as supernode_internal
from flwr.supernode.cli import flower_supernode

from edgefld.client.bounded_reads import bound, bounds_from_environment
from edgefld.server.fab import foreign_fab_problem

_pull_and_store_message = supernode_internal._pull_and_store_message


class ForeignFab(Exception):
    pass


def _checked_pull_and_store_message(**kwargs: Any) -> int | None:
    received: list[Any] = []
    receive: Callable[[], Any] = kwargs["receive"]
    get_fab: Callable[[str, int], Any] = kwargs["get_fab"]

    def remembering_receive() -> Any:
        got = receive()
        received[:] = [got]
        return got

    def checked_get_fab(fab_hash: str, run_id: int) -> Any:
        fab = get_fab(fab_hash, run_id)
        problem = foreign_fab_problem(fab.content)
        if problem is not None:
            raise ForeignFab(f"refused run {run_id}: its FAB is not edgefl's ({problem}); this board runs only "
                             "the installed edgefld apps")
        return fab

    try:
        return _pull_and_store_message(**dict(kwargs, receive=remembering_receive, get_fab=checked_get_fab))
    except ForeignFab as exc:
        message = received[0][0]
        log(ERROR, "%s", exc)
        reply = Message(Error(supernode_internal.FAB_VERIFICATION_ERROR.code, str(exc)), reply_to=message)
        supernode_internal._insert_message(reply, kwargs["state"], kwargs["object_store"])
        return int(message.metadata.run_id)


def _bound_replies(max_reply_bytes: int, min_rate: int, grace: float) -> None:
    """Every Fleet client the SuperNode makes reads at most max_reply_bytes per answer, at min_rate or faster
    once grace seconds have passed."""
    original_init = ProtobufClient.__init__

    def bounded_init(self: ProtobufClient, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        bound(self._client, max_reply_bytes, min_rate, grace)

    ProtobufClient.__init__ = bounded_init  # type: ignore[method-assign]


def main() -> None:
    supernode_internal._pull_and_store_message = _checked_pull_and_store_message
    bounds = bounds_from_environment()
    if bounds is not None:
        _bound_replies(*bounds)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
