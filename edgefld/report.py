"""`edgefl report`: the run's pictures, one self-contained HTML file and PNGs of the same plots.

Read from the server's state directory only (metrics.jsonl's round records). The plots are
matplotlib's (the ``report`` extra: ``pip install edgefl[report]``), imported here and only
here, lazily; without it the report still comes, with the same figures as tables. The HTML
needs no network to open: the plots are inlined as data: URIs, the style is inline.

Plots: the global model's accuracy and loss per round (the server's centralised evaluation and
the boards' validation of the model each round started from), a boards x rounds participation
map (trained / refused by the board's guards / failed, with the code), each board's round time
stacked by part (start-up, loading, training, transfer; the mean over its trained rounds), and
the model bytes of each round.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefld import __version__
from edgefld.apps.settings import ERROR_RESOURCES
from edgefld.errors import EdgeflError, StateWriteError
from edgefld.persist import atomic_write_bytes
from edgefld.records import BoardIdentity, RoundRecord
from edgefld.run_state import METRICS_FILE
from edgefld.status import Reading

PARTS = ("startup", "loading", "training", "transfer")
PART_NAMES = {"startup": "start-up", "loading": "loading", "training": "training", "transfer": "transfer"}
OK, REFUSED, FAILED, ABSENT = "ok", "refused", "failed", ""
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class Cell:
    outcome: str  # OK, REFUSED, FAILED or ABSENT (not asked)
    code: int | None = None


@dataclass(frozen=True)
class Board:
    node: int
    identity: BoardIdentity | None

    def label(self) -> str:
        if self.identity is None:
            return f"cid ? (node {self.node})"
        return f"cid {self.identity.cid} ({self.identity.board or 'unknown'})"


class RunData:
    """The figures the plots and tables show, from the round records."""

    def __init__(self, records: list[RoundRecord]) -> None:
        self.records = records
        self.rounds = [r.round for r in records]
        identities: dict[int, BoardIdentity] = {}
        nodes: set[int] = set()
        for record in records:
            if record.training is None:
                continue
            identities.update(record.training.boards)
            nodes.update(record.training.trained)
            nodes.update(f.node for f in record.training.failures if f.node is not None)
        self.boards = sorted((Board(node, identities.get(node)) for node in nodes),
                             key=lambda b: (b.identity is None, b.identity.cid if b.identity else 0, b.node))

    def cell(self, record: RoundRecord, node: int) -> Cell:
        training = record.training
        if training is None:
            return Cell(ABSENT)
        if node in training.trained:
            return Cell(OK)
        for failure in training.failures:
            if failure.node == node:
                return Cell(REFUSED if failure.code == ERROR_RESOURCES else FAILED, failure.code)
        return Cell(ABSENT)

    def mean_split(self, node: int) -> dict[str, float] | None:
        splits = [r.training.trained[node] for r in self.records
                  if r.training is not None and node in r.training.trained]
        if not splits:
            return None
        return {part: sum(getattr(s, part) or 0.0 for s in splits) / len(splits) for part in PARTS}


def build_report(state_dir: Path, out: Path) -> list[Path]:
    """Write report.html and the PNGs under ``out``; the paths written, the HTML first."""
    reading = Reading()
    records = reading.rounds(state_dir / METRICS_FILE)
    if reading.problems:
        raise EdgeflError(reading.problems[0])
    if not records:
        raise EdgeflError(f"no rounds recorded in {state_dir / METRICS_FILE} yet: nothing to report")
    data = RunData(records)
    plots = _plots(data)  # None: matplotlib is not installed
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateWriteError(f"cannot create {out}: {exc.strerror or exc}") from None
    for name, png in (plots or {}).items():
        atomic_write_bytes(out / f"{name}.png", png, durable=False)
        written.append(out / f"{name}.png")
    atomic_write_bytes(out / REPORT_FILE, _html(data, plots, state_dir).encode(), durable=False)
    return [out / REPORT_FILE, *written]


# --- plots (matplotlib, when installed) -----------------------------------------------------------

COLOURS = {OK: "#2e7d32", REFUSED: "#ef6c00", FAILED: "#c62828", ABSENT: "#eeeeee",
           "startup": "#5c6bc0", "loading": "#26a69a", "training": "#ffa726", "transfer": "#8d6e63"}


def _plots(data: RunData) -> dict[str, bytes] | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only: no display, whatever MPLBACKEND says
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    figures: dict[str, Any] = {}
    rounds = data.rounds

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    evaluated = [r for r in data.records if r.evaluation is not None]
    validated = [r for r in data.records if r.training is not None and r.training.client_val_accuracy is not None]
    acc_ax.plot([r.round for r in evaluated], [r.evaluation.eval_accuracy for r in evaluated if r.evaluation],
                marker="o", label="server (centralised test split)")
    acc_ax.plot([r.round for r in validated], [r.training.client_val_accuracy for r in validated if r.training],
                marker="s", linestyle="--", label="boards' validation (model the round started from)")
    loss_ax.plot([r.round for r in evaluated], [r.evaluation.eval_loss for r in evaluated if r.evaluation],
                 marker="o", label="server (centralised)")
    val_loss = [r for r in data.records if r.training is not None and r.training.client_val_loss is not None]
    loss_ax.plot([r.round for r in val_loss], [r.training.client_val_loss for r in val_loss if r.training],
                 marker="s", linestyle="--", label="boards' validation")
    train_loss = [r for r in data.records if r.training is not None and r.training.train_loss is not None]
    loss_ax.plot([r.round for r in train_loss], [r.training.train_loss for r in train_loss if r.training],
                 marker="^", linestyle=":", label="boards' training")
    acc_ax.set(title="Global accuracy per round", xlabel="round", ylabel="accuracy", ylim=(0, 1))
    loss_ax.set(title="Global loss per round", xlabel="round", ylabel="loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_xticks(rounds)
    figures["accuracy-loss"] = fig

    if data.boards:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.5 * len(rounds)), 1.0 + 0.45 * len(data.boards)))
        for row, board in enumerate(data.boards):
            for record in data.records:
                cell = data.cell(record, board.node)
                ax.add_patch(Rectangle((record.round - 0.45, row - 0.4), 0.9, 0.8, color=COLOURS[cell.outcome]))
                if cell.outcome in (FAILED, REFUSED):
                    ax.text(record.round, row, str(cell.code) if cell.code is not None else "timeout",
                            ha="center", va="center", color="white", fontsize=7)
        ax.set_xlim(min(rounds) - 0.6, max(rounds) + 0.6)
        ax.set_ylim(len(data.boards) - 0.5, -0.5)
        ax.set_xticks(rounds)
        ax.set_yticks(range(len(data.boards)), [b.label() for b in data.boards], fontsize=8)
        ax.set(title="Participation per round", xlabel="green: trained, orange: refused by its guards,\n"
                                                       "red: failed (with the code)")
        ax.xaxis.label.set_fontsize(8)
        ax.xaxis.set_label_position("bottom")
        figures["participation"] = fig

        splits = [(board, data.mean_split(board.node)) for board in data.boards]
        trained = [(board, split) for board, split in splits if split is not None]
        if trained:
            fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(trained)))
            left = [0.0] * len(trained)
            for part in PARTS:
                widths = [split[part] for _, split in trained]
                ax.barh(range(len(trained)), widths, left=left, color=COLOURS[part], label=PART_NAMES[part])
                left = [a + b for a, b in zip(left, widths, strict=True)]
            ax.set_yticks(range(len(trained)), [b.label() for b, _ in trained], fontsize=8)
            ax.invert_yaxis()
            ax.set(title="Round time per board, by part (mean of its trained rounds)", xlabel="seconds")
            ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.3 - 0.3 / len(trained)),
                      frameon=False)  # below the axes: never over a bar
            ax.grid(axis="x", alpha=0.3)
            figures["round-time"] = fig

    with_bytes = [r for r in data.records if r.training is not None]
    if with_bytes:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        xs = [r.round for r in with_bytes]
        ax.bar([x - 0.2 for x in xs], [r.training.bytes_sent / 1e6 for r in with_bytes if r.training], 0.4,
               label="sent to the boards")
        ax.bar([x + 0.2 for x in xs], [r.training.bytes_received / 1e6 for r in with_bytes if r.training], 0.4,
               label="received from the boards")
        ax.set(title="Model bytes per round", xlabel="round", ylabel="MB")
        ax.set_xticks(xs)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        figures["bytes"] = fig

    pngs: dict[str, bytes] = {}
    for name, fig in figures.items():
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        pngs[name] = buffer.getvalue()
    return pngs


# --- the HTML -----------------------------------------------------------------------------------

TITLES = {"accuracy-loss": "Accuracy and loss", "participation": "Participation", "round-time": "Round time by part",
          "bytes": "Bytes per round"}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html(data: RunData, plots: dict[str, bytes] | None, state_dir: Path) -> str:
    e = html.escape
    last = data.records[-1]
    task = last.task or "?"
    sections: list[str] = []
    if plots is None:
        sections.append('<p class="note" id="no-plots">The plots need matplotlib (<code>pip install '
                        "edgefl[report]</code>); the same figures follow as tables.</p>")
    else:
        for name, png in plots.items():
            uri = "data:image/png;base64," + base64.b64encode(png).decode()
            sections.append(f'<figure id="plot-{name}"><img alt="{e(TITLES[name])}" src="{uri}">'
                            f"<figcaption>{e(TITLES[name])}</figcaption></figure>")
    rows = []
    for r in data.records:
        t = r.training
        ev = r.evaluation
        refused = len([f for f in t.failures if f.code == ERROR_RESOURCES]) if t else 0
        rows.append([str(r.round), str(t.clients_ok) if t else "-",
                     str(t.clients_failed - refused) if t else "-", str(refused),
                     _fmt(ev.eval_accuracy if ev else None), _fmt(ev.eval_loss if ev else None),
                     _fmt(t.client_val_accuracy if t else None), _fmt(t.wall_seconds if t else None, 1),
                     f"{t.bytes_sent / 1e6:.2f} / {t.bytes_received / 1e6:.2f}" if t else "-"])
    sections.append("<h2>Rounds</h2>" + _table(
        ["round", "boards ok", "failed", "refused", "accuracy", "loss", "boards' validation", "seconds",
         "MB sent / received"], rows, "rounds"))
    cells = []
    for board in data.boards:
        row = [e(board.label())]
        for record in data.records:
            cell = data.cell(record, board.node)
            text = {OK: "ok", REFUSED: f"refused {cell.code}", FAILED: f"failed {cell.code or 'timeout'}",
                    ABSENT: ""}[cell.outcome]
            row.append(f'<span class="{cell.outcome or "absent"}">{e(text)}</span>')
        split = data.mean_split(board.node)
        row.append("-" if split is None else " / ".join(f"{split[p]:.2f}" for p in PARTS))
        cells.append(row)
    sections.append("<h2>Boards</h2>" + _table(
        ["board", *[f"round {n}" for n in data.rounds], "mean s: start-up / loading / training / transfer"],
        cells, "boards"))
    style = ("body{font-family:sans-serif;margin:2em;color:#222}figure{display:inline-block;margin:0 1em 1em 0}"
             "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:.25em .6em;font-size:.9em;text-align:left}"
             ".ok{color:#2e7d32}.refused{color:#ef6c00}.failed{color:#c62828}.note{background:#fff3e0;padding:.5em}")
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>edgefl report: {e(task)}</title>'
            f"<style>{style}</style></head><body>"
            f"<h1>edgefl run: task {e(task)}, {len(data.records)} rounds, {len(data.boards)} boards</h1>"
            f"<p>From {e(str(state_dir))}, generated {e(generated)} by edgefl {e(__version__)}.</p>"
            + "".join(sections) + "</body></html>\n")
