"""The [server.strategy] choices: Flower's own strategies with edgefl's rounds around them, their
hyperparameters reaching Flower, and the server optimiser's state surviving a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp import strategy as flower

from edgefld.apps import settings
from edgefld.apps.strategy import STRATEGY_CLASSES, ResumableStrategy, make_strategy
from edgefld.config.schema import STRATEGIES, STRATEGY_KEYS
from edgefld.run_state import RunState

FLOWER_CLASSES = {
    "fedavg": flower.FedAvg, "fedavgm": flower.FedAvgM, "fedprox": flower.FedProx, "fedadam": flower.FedAdam,
    "fedyogi": flower.FedYogi, "fedadagrad": flower.FedAdagrad, "fedmedian": flower.FedMedian,
    "fedtrimmedavg": flower.FedTrimmedAvg, "krum": flower.Krum,
}


def _run(**overrides) -> dict:
    return {**settings.RUN_CONFIG_DEFAULTS, **overrides}


def _make(name: str, round_offset: int = 0, **overrides) -> ResumableStrategy:
    return make_strategy(_run(strategy=name, **overrides), round_offset=round_offset, server_version="0",
                         min_train_nodes=1, min_available_nodes=1)


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_schema_choice_is_flowers_own_strategy_with_edgefls_rounds(name):
    strategy = _make(name, round_offset=3)
    assert isinstance(strategy, FLOWER_CLASSES[name]) and isinstance(strategy, ResumableStrategy)
    # Flower's aggregation is not copied: the class adds nothing but edgefl's bookkeeping.
    assert type(strategy).__mro__[1:3] == (ResumableStrategy, FLOWER_CLASSES[name])
    assert strategy.round_offset == 3
    assert set(STRATEGY_CLASSES) == set(STRATEGIES) == set(STRATEGY_KEYS)


def test_hyperparameters_reach_flower():
    assert _make("fedprox", **{"proximal-mu": 0.25}).proximal_mu == 0.25
    adam = _make("fedadam", eta=0.05, **{"beta-1": 0.8, "beta-2": 0.9, "tau": 0.01})
    assert (adam.eta, adam.beta_1, adam.beta_2, adam.tau) == (0.05, 0.8, 0.9, 0.01)
    momentum = _make("fedavgm", **{"server-momentum": 0.5, "server-learning-rate": 0.7})
    assert (momentum.server_momentum, momentum.server_learning_rate) == (0.5, 0.7)
    assert _make("fedtrimmedavg", **{"trim-beta": 0.1}).beta == 0.1
    assert _make("krum", **{"num-malicious-nodes": 2}).num_malicious_nodes == 2
    # The schema's defaults, not Flower's, when the config does not set them (one home for them).
    assert _make("fedyogi").eta == 0.01


def test_an_unknown_strategy_is_named():
    with pytest.raises(ValueError, match='unknown strategy "fedsgd"; this server knows fedavg, '):
        _make("fedsgd")


def _adam_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {f"{moment}/{name}": rng.normal(size=shape).astype(np.float32)
            for moment in ("m_t", "v_t") for name, shape in (("fc.weight", (3, 2)), ("fc.bias", (3,)))}


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_moments_go_into_the_checkpoint_and_back_into_a_new_strategy(tmp_path, name):
    rng = np.random.default_rng(0)
    state = _adam_state(rng)
    first = _make(name)
    first.load_optimizer_state(state)
    assert first.m_t is not None and set(first.m_t) == {"fc.weight", "fc.bias"}
    run_state = RunState(tmp_path, {"task": "digits"})
    weights = [rng.normal(size=(3, 2)).astype(np.float32), np.zeros(3, np.float32)]
    run_state.save_round(5, weights, None, first.optimizer_state())

    point = run_state.resume()
    second = _make(name, round_offset=point.round)
    second.load_optimizer_state(point.optimizer_state)
    restored = second.optimizer_state()
    assert restored.keys() == state.keys()
    for key, array in state.items():
        np.testing.assert_array_equal(restored[key], array)


def test_momentum_goes_into_the_checkpoint_in_the_models_order(tmp_path):
    momentum = [np.full((2, 2), 1.0, np.float32), np.full(2, 2.0, np.float32)]
    first = _make("fedavgm")
    first.momentum_vector = momentum
    run_state = RunState(tmp_path, {"task": "digits"})
    run_state.save_round(1, [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)], None, first.optimizer_state())
    second = _make("fedavgm")
    second.load_optimizer_state(run_state.resume().optimizer_state)
    assert [a.tolist() for a in second.momentum_vector] == [a.tolist() for a in momentum]


def test_stateless_strategies_checkpoint_nothing_and_refuse_anothers_state():
    assert _make("fedavg").optimizer_state() == {} and _make("fedprox").optimizer_state() == {}
    with pytest.raises(ValueError, match="optimiser state 'm_t/fc.bias' does not belong to ResumableFedAvgM"):
        _make("fedavgm").load_optimizer_state({"m_t/fc.bias": np.zeros(3)})


def test_a_corrupt_optimiser_state_makes_the_checkpoint_unusable(tmp_path):
    run_state = RunState(tmp_path, {"task": "digits"})
    weights = [np.zeros(3, np.float32)]
    run_state.save_round(1, weights, None, {"m_t/a": np.zeros(3, np.float32)})
    run_state.save_round(2, weights, None, {"m_t/a": np.ones(3, np.float32)})
    newest = tmp_path / "checkpoints" / "round-000002.npz"
    # A well-formed archive (the zip's own checksums agree) whose state array is not the one saved.
    with np.load(newest) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["s0000"] = np.full(3, 7.0, np.float32)
    with open(newest, "wb") as handle:
        np.savez(handle, **arrays)
    point = run_state.resume()
    assert point.round == 1 and point.optimizer_state["m_t/a"].tolist() == [0.0, 0.0, 0.0]
    assert point.problems == [f"checkpoint {newest} is unusable: checksum mismatch: the server optimiser's "
                              "state is corrupt"]
