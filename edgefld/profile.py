"""The workload profile: from the board and the config, what this board trains and how.

The policy is a table (``RULES``), printed in README.md, and every row has a
test. It is a pure function of its inputs so that the fixture boards of the
tests and a real board go through the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edgefld.backends.catalog import BACKENDS
from edgefld.errors import BackendUnavailable
from edgefld.hardware.board import Board
from edgefld.tasks import TASKS

ALL_TASKS = tuple(TASKS)
SMALL_TASKS = tuple(name for name, task in TASKS.items() if not task.heavy)  # for boards of 1 GB or less

# Memory classes by usable RAM (MemTotal is below the nominal size: a 1 GB Pi 3
# shows ~926 MB, an 8 GB Xavier NX ~7 GB), so the bounds sit between sizes.
MEMORY_CLASSES: tuple[tuple[str, int], ...] = (  # (class, MemTotal below this many MB)
    ("512MB", 768),
    ("1GB", 1536),
    ("2GB", 3072),
    ("4GB+", 1 << 62),
)


def memory_class(ram_mb: int) -> str:
    for name, below in MEMORY_CLASSES:
        if ram_mb < below:
            return name
    raise AssertionError("unreachable: the last class has no upper bound")


@dataclass(frozen=True)
class Rule:
    id: str
    when: str  # the condition, in words (README table)
    applies: Callable[[Board, str, bool], bool]  # (board, memory class, cuda usable)
    preference: tuple[str, ...]  # backends for "auto", best first
    device: str
    tasks: tuple[str, ...]
    batch_size_cap: int
    max_train_samples: int | None  # per round, before the power-mode scaling


def _is_cuda_jetson(board: Board, mem: str, cuda: bool) -> bool:
    return board.jetson is not None and cuda


RULES: tuple[Rule, ...] = (
    Rule("jetson-cuda", "Jetson whose NVIDIA-built torch reports CUDA", _is_cuda_jetson,
         ("torch",), "cuda", ALL_TASKS, 64, 20000),
    Rule("large", "usable RAM >= 3 GB (4 GB class and up)", lambda b, m, c: m == "4GB+",
         ("torch", "tensorflow", "litert"), "cpu", ALL_TASKS, 32, 5000),
    Rule("medium", "usable RAM 1.5-3 GB (2 GB class)", lambda b, m, c: m == "2GB",
         ("torch", "tensorflow", "litert"), "cpu", ALL_TASKS, 16, 2000),
    Rule("small", "usable RAM 768 MB-1.5 GB (1 GB class, e.g. Pi 3)", lambda b, m, c: m == "1GB",
         ("litert", "torch", "tensorflow"), "cpu", SMALL_TASKS, 16, 1000),
    Rule("tiny", "usable RAM < 768 MB (512 MB class, e.g. Pi Zero 2 W)", lambda b, m, c: m == "512MB",
         ("litert", "torch"), "cpu", SMALL_TASKS, 8, 500),
)


@dataclass(frozen=True)
class Profile:
    rule: str
    memory_class: str
    backend: str | None  # None: nothing usable is installed (the client refuses to start)
    device: str
    threads: int
    batch_size_cap: int
    max_train_samples: int | None
    tasks: tuple[str, ...]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = list(self.tasks)
        data["notes"] = list(self.notes)
        return data

    def allows(self, task: str) -> bool:
        return task in self.tasks


def choose_profile(board: Board, backend_setting: str, installed: frozenset[str], threads_setting: int = 0) -> Profile:
    """Apply the first matching rule; ``backend_setting`` is [client] backend ("auto" or a name),
    ``threads_setting`` is [client] threads (0: one per online CPU).

    Raises BackendUnavailable when an explicitly configured backend is not installed.
    """
    cuda = bool(board.jetson and board.jetson.cuda)
    mem = memory_class(board.ram_mb)
    rule = next(r for r in RULES if r.applies(board, mem, cuda))
    notes: list[str] = []

    if backend_setting != "auto":
        if backend_setting not in installed:
            have = ", ".join(sorted(installed)) or "none"
            raise BackendUnavailable(
                f'backend "{backend_setting}" is configured but not installed (installed: {have}); '
                f'install {BACKENDS[backend_setting].extra} or set backend = "auto"'
            )
        backend: str | None = backend_setting
        if backend not in rule.preference:
            notes.append(f"{backend} is not recommended for a {mem} board; using it as configured")
    else:
        backend = next((b for b in rule.preference if b in installed), None)
        if backend is None:
            # Better a board that trains with a heavier backend than one that does not train.
            backend = next((b for b in BACKENDS if b in installed), None)
            if backend is not None:
                notes.append(f"{backend} is the only backend installed; {rule.preference[0]} would suit this board")
        if backend is None:
            notes.append(
                "no training backend is installed: install one of "
                + ", ".join(spec.extra for spec in BACKENDS.values())
            )
    device = rule.device if backend == "torch" else "cpu"
    if rule.device == "cuda" and device != "cuda":
        notes.append(f"CUDA is usable but {backend} trains on the CPU here")

    # A power mode that takes cores offline (Jetson nvpmodel, or a hot-unplugged core)
    # leaves less compute: shrink the work in proportion so a round takes about as long.
    threads = max(1, board.cpus_online)
    if threads_setting:
        if threads_setting > threads:
            notes.append(f"threads = {threads_setting} is more than the {threads} CPUs online")
        threads = threads_setting
    max_samples = rule.max_train_samples
    if board.cpus_present > board.cpus_online:
        fraction = board.cpus_online / board.cpus_present
        if max_samples is not None:
            max_samples = max(100, int(max_samples * fraction))
        mode = board.jetson.power_mode.name if board.jetson and board.jetson.power_mode else None
        notes.append(
            f"{board.cpus_online} of {board.cpus_present} CPUs online"
            + (f" (power mode {mode})" if mode else "")
            + "; work per round scaled down"
        )
    return Profile(
        rule=rule.id,
        memory_class=mem,
        backend=backend,
        device=device,
        threads=threads,
        batch_size_cap=rule.batch_size_cap,
        max_train_samples=max_samples,
        tasks=rule.tasks,
        notes=tuple(notes),
    )
