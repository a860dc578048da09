"""Fault scenarios: real daemons, a fault injected, what happened measured; a table at the end.

Each test fills one row of the table through the ``fault_row`` fixture; the summary prints
it (and writes build/faults-table.md), so a run shows at a glance what each fault cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import federation  # noqa: F401 - the fixture, shared with tests/e2e
from tests.e2e.federation import become_subreaper

TABLE_PATH = Path(__file__).resolve().parents[2] / "build" / "faults-table.md"
_ROWS: list[FaultRow] = []
_STARTED = time.monotonic()


@dataclass
class FaultRow:
    scenario: str
    injected: str = ""
    happened: str = "did not finish (see the test's failure)"
    rounds_lost: str = "?"
    recover_s: str = "?"
    outcome: str = "?"
    seconds: float = 0.0


@pytest.fixture(scope="session", autouse=True)
def _subreaper():
    become_subreaper()


@pytest.fixture
def fault_row(request):
    row = FaultRow(request.node.name.removeprefix("test_"))
    _ROWS.append(row)
    started = time.monotonic()
    yield row
    row.seconds = time.monotonic() - started
    report = getattr(request.node, "_fault_call_report", None)
    row.outcome = "passed" if report is not None and report.passed else "FAILED"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item._fault_call_report = report


def say(text: str) -> None:
    """What a scenario did or saw, as it happens (make test-faults runs pytest with -s)."""
    print(f"[faults {time.strftime('%H:%M:%S')}] {text}", flush=True)


def render_table(rows: list[FaultRow]) -> str:
    head = ["scenario", "injected", "what happened", "rounds lost (goal 0)", "time to recover (s)", "result",
            "test (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r.scenario, r.injected, r.happened, r.rounds_lost, r.recover_s, r.outcome, f"{r.seconds:.0f}"]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    table = render_table(_ROWS)
    terminalreporter.section("fault scenarios")
    terminalreporter.write(table)
    terminalreporter.write(f"(whole fault session: {time.monotonic() - _STARTED:.0f} s)\n")
    TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    TABLE_PATH.write_text(table)
    terminalreporter.write(f"table written to {TABLE_PATH}\n")
