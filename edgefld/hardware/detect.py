"""Detect the board below a sysroot: Raspberry Pi, Jetson, or a generic machine."""

from __future__ import annotations

import os
from dataclasses import replace

from edgefld.hardware import common, jetson, raspberry_pi
from edgefld.hardware.board import Board
from edgefld.hardware.sysroot import read_device_tree_string, read_text


def _model(root: str) -> str | None:
    model = read_device_tree_string(root, "model")
    if model is None:
        model = common.cpuinfo_value(read_text(root, "proc/cpuinfo") or "", "Model") or None
    return model


def _dmi_product_name(root: str) -> str | None:
    name = (read_text(root, "sys/class/dmi/id/product_name") or "").strip()
    return name or None


def detect_board(sysroot: str = "/", *, path: str | None = None, probe_cuda: bool = True) -> Board:
    """What is known about the board whose filesystem is mounted at ``sysroot``.

    ``path`` is the search path for board tools (``vcgencmd``, ``nvpmodel``),
    by default this process's PATH. ``probe_cuda=False`` skips the CUDA probe,
    the one slow step (a child interpreter that may import torch).
    """
    if path is None:
        path = os.environ.get("PATH", os.defpath)
    board = Board(
        family="generic",
        model=_model(sysroot),
        arch=common.arch(sysroot),
        ram_mb=common.ram_mb(sysroot),
        cpus_online=common.cpus_online(sysroot),
        cpus_present=common.cpus_present(sysroot),
        cpu_temp_c=common.cpu_temp_c(sysroot),
    )
    if raspberry_pi.is_raspberry_pi(sysroot):
        return replace(
            board,
            family="raspberry-pi",
            throttling=raspberry_pi.throttling(path),
            raspberry_pi=raspberry_pi.info(sysroot),
        )
    if jetson.is_jetson(sysroot):
        return replace(board, family="jetson", jetson=jetson.info(sysroot, path, probe_cuda=probe_cuda))
    if board.model is None:
        return replace(board, model=_dmi_product_name(sysroot))
    return board
