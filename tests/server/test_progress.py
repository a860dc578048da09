"""edgefld.server.progress: the daemon says each round once, as metrics.jsonl records it."""

from __future__ import annotations

import logging

from edgefld.persist import append_jsonl
from edgefld.records import Evaluation, Failure, RoundRecord, RoundTraining
from edgefld.server.progress import ProgressReporter, describe_round, ranges


def _round(number: int, failures: tuple[Failure, ...] = ()) -> RoundRecord:
    training = RoundTraining(clients_ok=1, clients_failed=len(failures), failures=failures, train_loss=0.5,
                             client_val_loss=0.5, client_val_accuracy=0.5, client_train_seconds_max=1.0,
                             client_startup_seconds_max=0.0, client_handler_seconds_max=1.0,
                             client_prepare_seconds_max=0.0, bytes_sent=1, bytes_received=1, backends={"torch": 1},
                             wall_seconds=3.0, boards={})
    return RoundRecord(round=number, task="digits", time=1.0, start_model_sha256="a", model_sha256="b",
                       training=training, evaluation=Evaluation(eval_loss=0.4, eval_accuracy=0.875, eval_samples=9))


def test_each_new_round_is_said_once_in_the_log_and_the_status(tmp_path, caplog):
    metrics = tmp_path / "metrics.jsonl"
    statuses: list[str] = []
    reporter = ProgressReporter(metrics, 3, statuses.append)
    append_jsonl(metrics, {"round": 1, "clients_ok": 2})  # the previous format: no "format"
    with caplog.at_level(logging.INFO, logger="edgefl.server"):
        reporter.log_existing_rounds()
        reporter.log_new_rounds()
        silent = Failure(node=13, cid=2, board="Raspberry Pi 5", phase="train", code=None, error="timeout",
                         reason="did not answer within the round timeout")
        append_jsonl(metrics, _round(2, (silent,)).to_json())
        reporter.log_new_rounds()
        reporter.log_new_rounds()
    line = ("round 2/3: 1 clients ok, 1 failed, train loss 0.5000, eval loss 0.4000, accuracy 0.8750, 3.0 s; "
            "train failure of node 13 (cid 2, board Raspberry Pi 5): did not answer within the round timeout")
    assert [r.getMessage() for r in caplog.records] == [f"resuming: rounds 1 already done (metrics in {metrics})",
                                                        line]
    assert statuses == [line]
    assert not reporter.last_round_seen
    assert reporter.summary() == "2/3 rounds, accuracy 0.8750"
    append_jsonl(metrics, _round(3).to_json())
    reporter.log_new_rounds()
    assert reporter.last_round_seen and statuses[-1].startswith("round 3/3: 1 clients ok, train loss 0.5000")


def test_lines_that_are_not_rounds_are_passed_over(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"round": "1"}\n[1]\n{"round": 2, "format": 99}\n{"round": 4}\n')
    statuses: list[str] = []
    reporter = ProgressReporter(metrics, 4, statuses.append)
    reporter.log_new_rounds()
    assert statuses == ["round 4/4: ? clients ok"] and reporter.rounds_seen == {4}
    assert reporter.summary() == "1/4 rounds"


def test_a_round_without_the_boards_figures_is_still_said():
    assert describe_round(RoundRecord(round=1), 2) == "round 1/2: ? clients ok"


def test_rounds_are_named_as_spans():
    assert ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
    assert ranges([4]) == "4" and ranges([]) == ""


def test_a_round_secure_aggregation_could_not_complete_is_said_as_the_rounds_failure():
    dropped = Failure(node=13, cid=2, board="Raspberry Pi 5", phase="train", code=None, error="timeout",
                      reason="did not answer the secure aggregation collect-masked-vectors stage")
    halted = Failure(node=None, cid=None, board=None, phase="aggregate", code=None, error="secure-aggregation",
                     reason="secure aggregation stopped at its collect-masked-vectors stage: 2 of 3 boards answered")
    line = describe_round(_round(2, (dropped, halted)), 3)
    assert line.endswith("train failure of node 13 (cid 2, board Raspberry Pi 5): did not answer the secure "
                         "aggregation collect-masked-vectors stage; round failed: secure aggregation stopped at its "
                         "collect-masked-vectors stage: 2 of 3 boards answered"), line
