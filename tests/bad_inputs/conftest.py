"""Counts of the bad-input corpus, printed at the end of the run (goal: no tracebacks)."""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()  # "tried", "as expected", "tracebacks"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if TALLY["tried"]:
        terminalreporter.write_line(
            f"bad inputs: {TALLY['tried']} tried, {TALLY['as expected']} exited as expected, "
            f"{TALLY['tracebacks']} tracebacks"
        )
