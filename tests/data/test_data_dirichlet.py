"""[server] partitioning = "dirichlet": non-IID partitions, the same on every board, each board reading its own rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefld.cli.main import main as edgefl_main
from edgefld.data import PartitionError, import_dataset, load_partition, partition_summaries
from edgefld.data.partition import dirichlet_partitions, partition_of, split_validation
from edgefld.data.permutation import stable_log_gamma_variates, stable_uniforms
from tests.data.real_format_files import mnist_arrays, write_mnist


def test_the_draws_are_pinned_across_runs_and_numpy_versions() -> None:
    # Fixed arithmetic from SplitMix64 (no numpy generator): every board of a mixed fleet splits alike.
    assert stable_uniforms(3, 42).tolist() == [0.3432919220986735, 0.9777767857540063, 0.44658787374516135]
    assert np.round(stable_log_gamma_variates(0.5, 4, 42), 12).tolist() == [
        -2.804289357204, -1.370994692333, -1.255929972952, -0.942147564493]
    labels = np.arange(40) % 4
    assert [p.tolist() for p in dirichlet_partitions(labels, 3, 0.5, 42)] == [
        [3, 7, 11, 18, 23, 27, 34, 38, 39],
        [1, 2, 4, 5, 6, 9, 10, 12, 13, 14, 16, 17, 21, 24, 26, 29, 30, 32, 33, 36, 37],
        [0, 8, 15, 19, 20, 22, 25, 28, 31, 35]]


@pytest.mark.parametrize("shape", [0.1, 0.5, 1.0, 5.0])
def test_gamma_variates_have_the_gammas_mean_and_variance(shape: float) -> None:
    draws = np.exp(stable_log_gamma_variates(shape, 100_000, 7))
    # Gamma(k, 1): mean k, variance k; the bounds are 5 standard errors of 100 000 draws.
    assert abs(draws.mean() - shape) < 5 * np.sqrt(shape / 100_000)
    assert abs(draws.var() - shape) / shape < 0.05


def _label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean over partitions of the largest class's share: 0.1 for ten balanced classes, 1 for one class each."""
    return float(np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]))


def test_partitions_are_disjoint_cover_the_set_and_skew_as_alpha_says() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 20_000)
    skews = {}
    for alpha in (0.1, 0.5, 100.0):
        parts = dirichlet_partitions(labels, 5, alpha, 42)
        everything = np.concatenate(parts)
        assert len(everything) == len(labels) and len(np.unique(everything)) == len(labels)
        assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted: sequential reads of the store
        skews[alpha] = _label_skew(parts, labels)
    # alpha 0.1: a partition is mostly one or two classes; alpha 100: nearly IID.
    assert skews[0.1] > 0.4 and 0.15 < skews[0.5] < skews[0.1] and skews[100.0] < 0.13
    # Another seed is another split.
    assert not all(np.array_equal(a, b) for a, b in zip(dirichlet_partitions(labels, 5, 0.5, 42),
                                                        dirichlet_partitions(labels, 5, 0.5, 43), strict=True))


def test_a_split_that_leaves_a_partition_without_samples_is_a_partition_error() -> None:
    labels = np.arange(12) % 2
    with pytest.raises(PartitionError, match=r"^a dirichlet split with alpha 0.01 leaves partition \d+ of 6 with "
                                             r"[01] sample\(s\) in 10 draws: raise dirichlet_alpha or lower "
                                             r"num_partitions$"):
        dirichlet_partitions(labels, 6, 0.01, 42)
    with pytest.raises(PartitionError, match="cid 6 is out of range"):
        partition_of(labels, 6, 6, 42, "dirichlet", 0.5)


def test_a_board_loads_exactly_its_dirichlet_rows(tmp_path: Path) -> None:
    expected = mnist_arrays()
    import_dataset(tmp_path / "raw", tmp_path / "data", checksums=write_mnist(tmp_path / "raw", expected))
    parts = dirichlet_partitions(expected.train_y, 4, 0.3, 42)
    for cid in range(4):
        part = load_partition("mnist", tmp_path / "data", cid, 4, 42, "dirichlet", 0.3)
        train, validation = split_validation(parts[cid], cid, 4, 42)
        np.testing.assert_array_equal(part.train_x, expected.train_x[train])
        np.testing.assert_array_equal(part.val_y, expected.train_y[validation])
    summaries = partition_summaries("mnist", tmp_path / "data", 4, 42, "dirichlet", 0.3)
    assert [s.size for s in summaries] == [len(p) for p in parts]
    assert [sum(s.label_counts) for s in summaries] == [len(p) for p in parts]


def test_data_status_partitions_prints_sizes_and_label_histograms(tmp_path: Path, capsys) -> None:
    assert edgefl_main(["data", "download", "digits", "--data-dir", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    assert edgefl_main(["data", "status", "--partitions", "--data-dir", str(tmp_path), "--num-partitions", "5",
                        "--partitioning", "dirichlet", "--dirichlet-alpha", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("digits: 5 partitions (dirichlet, alpha 0.1, seed 42); training samples per label, "
                        "before the 90/10 validation split")
    assert lines[1].split() == ["cid", "size", *map(str, range(10))]
    rows = [list(map(int, line.split())) for line in lines[2:]]
    assert [row[0] for row in rows] == list(range(5))
    assert all(row[1] == sum(row[2:]) for row in rows)
    assert sum(row[1] for row in rows) == 1497  # digits' training set (edgefld.data.digits)
    assert edgefl_main(["data", "status", "--partitions", "--data-dir", str(tmp_path),
                        "--dirichlet-alpha", "0"]) == 78
    assert "--dirichlet-alpha: must be a number > 0 and <= 1000000, got 0" in capsys.readouterr().err
