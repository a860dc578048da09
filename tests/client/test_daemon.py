"""edgefld.client.daemon: what the board's journal and STATUS say of its last round (last-round.json)."""

from __future__ import annotations

from edgefld.client.daemon import _describe
from edgefld.records import BoardStatus, Refused, Trained


def test_a_trained_round_is_described_with_its_figures():
    status = BoardStatus(phase="train", round=3, outcome=Trained(loss=0.25, samples=30, seconds=1.25,
                                                                  val_accuracy=0.5), time=1.0)
    assert _describe(status) == ("round 3 train: 30 samples, loss 0.2500, 1.2 s; global model's validation "
                                 "accuracy 0.5000")


def test_a_refused_round_is_described_with_its_reason():
    status = BoardStatus(phase="train", round=4, outcome=Refused(4006, "client 3 refuses this round: hot"), time=1.0)
    assert _describe(status) == "round 4 train refused: client 3 refuses this round: hot"
