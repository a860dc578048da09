"""LiteRT's training numerics on every kind of CPU the product runs on, from this one machine.

XNNPACK, the delegate the LiteRT backend trains with, chooses its kernels by the CPU it
finds, so agreement measured on one machine is no evidence for another. Each kind in
cpu_kinds.KINDS (this machine; x86-64 with AVX2 and no AVX-512; the aarch64 cores of the
Raspberry Pis and Jetsons, under qemu-user with their real /proc/cpuinfo) runs the shipped
models' signatures on the same cases (tests/backends/litert_steps.py, with the arm64 .deb's
own wheels on aarch64), and the host compares each step with float64 torch's step from the
same state (numerics.compare_lockstep), with test_litert_backend's tolerances: those
tolerances are 10x the largest figure this test measures on any kind, and it prints them
(``make test-cpus``; a table also lands in build/cpu-kinds-table.md).

Figures (ai-edge-litert 2.3.0, XNNPACK as shipped, 2026-12-04): logits within 1.1e-7 of
float64 on every kind; each step within 2.6e-8 (digits), 2.0e-8 (mnist) and 2.0e-7 (cifar10),
once near-kink branches are accounted for (one of the 5 cifar10 steps on x86-64 and Cortex-A53,
none on Cortex-A72/A76). Free-running, every kind's cifar10 is 8.2e-5 from float64 after 5 steps:
all of them took one branch at a kink where float64 took the other (numerics' docstring).

Needs root (debootstrap, mount namespaces) and, the first time, Debian's mirror and PyPI;
it is marked ``cpus`` and run by ``make test-cpus`` (part of ``make test``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefld.tasks import get_task
from tests.backends import cpu_kinds, numerics

pytest.importorskip("torch")

# After the skip above: this import skips without ai_edge_litert, and torch's absence is the one to name first.
from tests.backends.test_litert_backend import LOGITS_ATOL, MULTI_STEPS, ONE_STEP_ATOL  # noqa: E402

pytestmark = pytest.mark.cpus

TASK_NAMES = ["digits", "mnist", "cifar10"]
REPO = Path(__file__).resolve().parents[2]
# (kind, what XNNPACK saw, task, logits, after 1 step, after 5 steps free-running, largest lockstep step, flips)
RESULTS: list[tuple[str, str, str, float, float, float, float, int]] = []


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    reason = cpu_kinds.unavailable()
    if reason:
        pytest.skip(f"the CPU kinds cannot run here: {reason}")
    directory = tmp_path_factory.mktemp("cpu-kinds")
    made = {}
    for name in TASK_NAMES:
        task = get_task(name)
        case = numerics.make_case(task, numerics.perturbed_weights(task), *numerics.learnable_batch(task, per_class=2),
                                  steps=MULTI_STEPS)
        path = directory / f"{name}.npz"
        np.savez(path, **case)
        free = numerics.free_running(task, numerics.case_weights(case), case["x"], case["y"], numerics.case_masks(case))
        made[name] = (case, path, free)
    yield made
    _write_table()


@pytest.mark.parametrize("task_name", TASK_NAMES)
@pytest.mark.parametrize("kind", cpu_kinds.KINDS, ids=lambda kind: kind.qemu_cpu or "native")
def test_litert_training_agrees_with_float64_on_every_cpu_kind(kind, task_name, cases, tmp_path):
    task = get_task(task_name)
    case, path, free = cases[task_name]
    out_path = tmp_path / "out.npz"
    completed = cpu_kinds.run_steps_on(kind, path, out_path)
    assert completed.returncode == 0, f"{kind.name}: exit {completed.returncode}\n{completed.stderr[-3000:]}"
    with np.load(out_path) as loaded:
        out = dict(loaded)
    start, masks = numerics.case_weights(case), numerics.case_masks(case)
    trajectory = numerics.trajectory_of(out, MULTI_STEPS)
    logits_difference = float(np.abs(out["logits"] - numerics.reference_logits(task, start, case["x"])).max())
    comparisons = numerics.compare_lockstep(task, start, trajectory, case["x"], case["y"], masks, ONE_STEP_ATOL)
    worst = max(comparison.unexplained for comparison in comparisons)
    flips = sum(len(comparison.flips) for comparison in comparisons)
    # Free-running, reported for what it shows (the trajectories part at a kink, numerics' docstring), not asserted.
    first, _ = numerics.largest_difference(task, trajectory[0], free[0].weights)
    last, _ = numerics.largest_difference(task, trajectory[-1], free[-1].weights)
    RESULTS.append((kind.name, str(out["kind"]), task_name, logits_difference, first, last, worst, flips))
    print(f"\n{kind.name} [{out['kind']}], {task_name}: logits vs float64 {logits_difference:.2g}; free-running "
          f"after 1 step {first:.2g}, after {MULTI_STEPS} {last:.2g}; step by step:")
    for comparison in comparisons:
        print("  ", comparison)
    assert np.abs(out["logits"]).max() > 0.1  # the comparison is not of near-zero outputs
    assert logits_difference <= LOGITS_ATOL
    assert worst <= ONE_STEP_ATOL
    references = numerics.lockstep(task, start, trajectory, case["x"], case["y"], masks)
    np.testing.assert_allclose(out["losses"], [reference.loss for reference in references], rtol=1e-5)


def _write_table() -> None:
    if not RESULTS:
        return
    lines = ["| kind | CPU features seen | task | logits | 1 step | 5 steps free-running | each step, from the same "
             "state (max of 5) | near-kink branches taken |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {kind} | {seen} | {task} | {logits:.2g} | {first:.2g} | {last:.2g} | {step:.2g} | {flips} |"
              for kind, seen, task, logits, first, last, step, flips in RESULTS]
    table = "\n".join(lines) + "\n"
    out = REPO / "build" / "cpu-kinds-table.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table)
    print("\n" + table)
