"""Resource guards: whether this board can afford a round right now.

A board that starts a round it cannot afford is OOM-killed half-way (the
server then waits out ``round_timeout`` for nothing) or trains for ages on a
throttled CPU. Before each round the ClientApp reads the board's live state
(MemAvailable, the Pi's throttling bits, the Jetson power mode) and refuses,
with a reason the server records, when:

- the round's estimated peak memory plus ``[client] memory_margin_mb`` exceeds
  MemAvailable;
- a Raspberry Pi is throttled, frequency-capped or under-voltage *now*
  (bits 0-3 of ``vcgencmd get_throttled``; the sticky bits 16-19 only say it
  happened since boot);
- a heavy task is asked of a Jetson in a power mode below
  ``[client] heavy_task_min_watts`` (mode names carry the budget: 5W, MODE_10W,
  MODE_15W_2CORE; MAXN has none).

Detection only: nothing here imports a framework, so a refusal costs the
board no framework import. The decision (``check_round``) is a pure function
of the facts, so fixture boards and a real board go through the same code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgefld.config.schema import default
from edgefld.hardware import common, jetson, raspberry_pi
from edgefld.hardware.board import PowerMode, Throttling
from edgefld.tasks import TASKS


@dataclass(frozen=True)
class MemoryFigure:
    """Peak memory a round adds to the ClientApp process: the framework, then the task."""

    framework_mib: float  # resident after importing the backend's framework
    task_mib: float  # model, optimiser state and one batch's activations, at batch size 0
    per_sample_mib: float  # growth per sample in the batch


# Measured with bench/bench_backends.py (one process per task, ru_maxrss) on the x86-64 build
# host, torch 2.14.1 (CUDA build, run on the CPU), --threads 1, --batch-size 8 and 64:
#   digits  peak 739.0 / 738.3 MiB, mnist 768.6 / 775.4, cifar10 985.8 / 1013.3; after import 704.4-704.9.
# framework_mib is the after-import figure; task_mib and per_sample_mib are the straight line through
# (peak - after import) at the two batch sizes. A CUDA build maps more than the CPU-only aarch64 wheels
# of a Raspberry Pi, so these figures err on the safe side there; a Jetson runs a CUDA build.
# litert: bench/bench_litert.py on the same host, ai-edge-litert 2.3, same options: digits peak 54.0 / 54.0 MiB,
# mnist 66.4 / 89.8, cifar10 141.2 / 193.2; 34.2 before the backend loads its runtime (which is thus counted in
# the task's figure).
# tensorflow: bench/bench_backends.py --backends tensorflow on the same host, tensorflow-cpu 2.21,
# same options (cifar10 with --samples 256): digits peak 615.4 / 615.9 MiB, mnist 625.4 / 634.3, cifar10
# 799.0 / 829.4; after import 592.8-593.3. Derived as torch's.
# A backend or task without a row is not checked for memory (see memory_estimate_mib) until a bench measures it.
MEMORY_FIGURES: dict[tuple[str, str], MemoryFigure] = {
    ("torch", "digits"): MemoryFigure(705.0, 34.0, 0.0),
    ("torch", "mnist"): MemoryFigure(705.0, 63.0, 0.12),
    ("torch", "cifar10"): MemoryFigure(705.0, 277.0, 0.49),
    ("litert", "digits"): MemoryFigure(34.0, 20.0, 0.0),
    ("litert", "mnist"): MemoryFigure(34.0, 29.0, 0.42),
    ("litert", "cifar10"): MemoryFigure(34.0, 100.0, 0.93),
    ("tensorflow", "digits"): MemoryFigure(594.0, 22.0, 0.0),
    ("tensorflow", "mnist"): MemoryFigure(594.0, 31.0, 0.15),
    ("tensorflow", "cifar10"): MemoryFigure(594.0, 202.0, 0.54),
}

# Tasks a low power budget cannot train in useful time (edgefld.tasks: Task.heavy): a 5 W Jetson Nano
# manages a fraction of what one x86 core trains.
HEAVY_TASKS = frozenset(name for name, task in TASKS.items() if task.heavy)

_WATTS = re.compile(r"(\d+)W", re.IGNORECASE)


@dataclass(frozen=True)
class GuardPolicy:
    """[client] guards, memory_margin_mb and heavy_task_min_watts, as the node config passes them
    (the defaults are the schema's)."""

    enabled: bool = default("client", "guards", bool)
    memory_margin_mb: int = default("client", "memory_margin_mb", int)
    heavy_task_min_watts: int = default("client", "heavy_task_min_watts", int)  # 0: no power-mode check


@dataclass(frozen=True)
class LiveFacts:
    """What can change between rounds; None: the board does not report it."""

    mem_available_mb: int | None
    throttling: Throttling | None
    power_mode: PowerMode | None


def read_live_facts(root: str = "/", path: str | None = None) -> LiveFacts:
    """Read the board's state now; ``path`` is the search path of vcgencmd/nvpmodel (None: PATH)."""
    throttling = raspberry_pi.throttling(path) if raspberry_pi.is_raspberry_pi(root) else None
    power_mode = jetson.power_mode(root, path) if jetson.is_jetson(root) else None
    return LiveFacts(common.mem_available_mb(root), throttling, power_mode)


def memory_estimate_mib(backend: str, task: str, batch_size: int) -> float | None:
    """Estimated memory a round of ``task`` on ``backend`` adds; None for a pair MEMORY_FIGURES lacks
    (a backend or task added without a bench run): refusing every round on a guess would be worse."""
    figure = MEMORY_FIGURES.get((backend, task))
    if figure is None:
        return None
    return figure.framework_mib + figure.task_mib + figure.per_sample_mib * batch_size


def power_mode_watts(name: str) -> int | None:
    """The power budget a mode's name states (5W, MODE_10W, MODE_15W_2CORE); None for MAXN and unknown names."""
    match = _WATTS.search(name)
    return int(match.group(1)) if match else None


def _throttling_words(throttling: Throttling) -> str:
    bits = (("under-voltage", throttling.under_voltage), ("frequency capped", throttling.freq_capped),
            ("throttled", throttling.throttled), ("soft temperature limit", throttling.soft_temp_limit))
    return ", ".join(word for word, on in bits if on)


def check_round(task: str, backend: str, batch_size: int, facts: LiveFacts, policy: GuardPolicy) -> str | None:
    """Why this board should refuse the round, in one line naming the fix; None if it can afford it."""
    if not policy.enabled:
        return None
    if facts.throttling is not None and facts.throttling.active:
        return (f"the board is throttled now (get_throttled 0x{facts.throttling.raw:x}: "
                f"{_throttling_words(facts.throttling)}); fix its power supply or cooling, "
                "or set [client] guards = false")
    if task in HEAVY_TASKS and policy.heavy_task_min_watts and facts.power_mode is not None:
        watts = power_mode_watts(facts.power_mode.name)
        if watts is not None and watts < policy.heavy_task_min_watts:
            return (f"task {task} needs a power mode of at least {policy.heavy_task_min_watts} W and the board "
                    f"runs {facts.power_mode.name} (mode {facts.power_mode.id}); switch it with "
                    "`sudo nvpmodel -m ID`, or lower [client] heavy_task_min_watts")
    estimate = memory_estimate_mib(backend, task, batch_size)
    if estimate is not None and facts.mem_available_mb is not None:
        needed = estimate + policy.memory_margin_mb
        if needed > facts.mem_available_mb:
            return (f"task {task} on {backend} with batch size {batch_size} needs about {needed:.0f} MB "
                    f"({estimate:.0f} MB estimated + {policy.memory_margin_mb} MB margin) and only "
                    f"{facts.mem_available_mb} MB is available; free memory, lower the server's batch_size, "
                    "or lower [client] memory_margin_mb")
    return None
