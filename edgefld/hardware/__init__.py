"""Board detection: one module per board family, all reading below a sysroot.

Nothing here imports a training framework. Whether CUDA is usable is asked of
a short-lived subprocess (see ``jetson.cuda_usable``), so detection stays cheap
on a 512 MB board and never drags torch into a daemon.
"""

from edgefld.hardware.board import Board, JetsonInfo, PowerMode, RaspberryPiInfo, Throttling

__all__ = ["Board", "JetsonInfo", "PowerMode", "RaspberryPiInfo", "Throttling", "detect_board"]


def detect_board(sysroot: str = "/", *, path: str | None = None, probe_cuda: bool = True) -> Board:
    """edgefld.hardware.detect's ``detect_board``, imported on the first call."""
    from edgefld.hardware.detect import detect_board as _detect

    return _detect(sysroot, path=path, probe_cuda=probe_cuda)
