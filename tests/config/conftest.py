"""How many inputs the config fuzz tests ran (printed at the end of the run)."""

from __future__ import annotations

from collections import Counter

FUZZ: Counter[str] = Counter()  # inputs per strategy, and "<strategy> errors" for those refused


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    strategies = [name for name in FUZZ if not name.endswith(" errors")]
    if strategies:
        parts = [f"{name} {FUZZ[name]} ({FUZZ[name + ' errors']} refused)" for name in strategies]
        terminalreporter.write_line(f"config fuzz: {sum(FUZZ[n] for n in strategies)} inputs: " + ", ".join(parts))
