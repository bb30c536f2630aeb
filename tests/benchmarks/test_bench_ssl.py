"""benchmarks/bench_ssl.py: the probes on features whose answer is known, and the whole
benchmark end to end on a budget of seconds (the benchmark itself is not a test)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def probes():
    return _load("ssl_probes")


def _blobs(probes, n: int, informative: bool, seed: int):
    """Three classes; their embeddings are separated (informative) or pure noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = np.random.default_rng(99).normal(size=(3, 16)) * (4.0 if informative else 0.0)
    return probes.PooledSplit(centres[labels] + rng.normal(size=(n, 16)), labels)


def test_knn_and_linear_probe_tell_informative_features_from_noise(probes):
    train, test = _blobs(probes, 90, True, 0), _blobs(probes, 60, True, 1)
    assert probes.knn_probe(train, test)["accuracy"] > 0.95
    assert probes.linear_probe(train, test)["macro_f1"] > 0.95
    noise_train, noise_test = _blobs(probes, 90, False, 0), _blobs(probes, 60, False, 1)
    assert probes.knn_probe(noise_train, noise_test)["accuracy"] < 0.6
    assert probes.linear_probe(noise_train, noise_test)["accuracy"] < 0.6


def test_dominant_label_is_the_most_frequent_labelled_class(probes):
    class Masks:
        masks = [
            np.array([[0, 0, 1], [-1, -1, -1]]),  # class 0 twice, class 1 once, 3 unlabelled
            np.array([[2, 2, -1], [-1, -1, -1]]),
            np.full((2, 3), -1),  # nothing labelled: left out of the probe
        ]

        def __len__(self):
            return len(self.masks)

        def read_labels(self, i):
            return self.masks[i]

        def __getitem__(self, i):
            return np.zeros((1, 2, 3), dtype=np.float32), self.masks[i]

    assert list(probes.dominant_labels(Masks())) == [0, 2, -1]
    split = probes.ProbeSplit.of(Masks())
    assert list(split.labels) == [0, 2] and len(split.dataset) == 2


def test_batchnorm_recalibration_moves_the_statistics_not_the_weights(probes):
    """The random-init control: running mean/var become the data's, weights stay."""
    import torch

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    encoder.forward_features = encoder.forward
    weights = [p.detach().clone() for p in encoder.parameters()]
    data = [(torch.full((3, 2, 2), 5.0) + torch.randn(3, 2, 2), 0) for _ in range(8)]
    probes.recalibrate_batchnorm(encoder, data, batch_size=4)
    bn = encoder[1]
    conv = encoder[0](torch.stack([x for x, _ in data]))
    torch.testing.assert_close(bn.running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.1 and not encoder.training  # restored, left in eval mode
    assert all(torch.equal(a, b) for a, b in zip(weights, encoder.parameters(), strict=True))


def test_probe_cache_computes_once_per_key(tmp_path):
    bench = _load("bench_ssl")
    calls = []
    cache = bench.ProbeCache(tmp_path, "archive-a", {"random_init": "r18", "seed": 0})
    assert cache.get({"probe": "pooled"}, lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert cache.get({"probe": "pooled"}, lambda: calls.append(1) or {"v": 2}) == {"v": 1}
    other = bench.ProbeCache(tmp_path, "archive-a", {"random_init": "r18", "seed": 1})
    assert other.get({"probe": "pooled"}, lambda: calls.append(1) or {"v": 3}) == {"v": 3}
    assert len(calls) == 2 and len(list(tmp_path.glob("*.json"))) == 2


def test_collapsed_features_read_as_collapsed(probes):
    rng = np.random.default_rng(0)
    healthy = probes.feature_collapse(rng.normal(size=(64, 32)))
    collapsed = probes.feature_collapse(np.ones((64, 32)) + 1e-4 * rng.normal(size=(64, 32)))
    assert healthy["std_x_sqrt_dim"] > 0.5 and collapsed["std_x_sqrt_dim"] < 0.01
    assert healthy["effective_rank"] > 20 and collapsed["effective_rank"] < 2


@pytest.mark.slow
def test_bench_ssl_end_to_end_on_a_budget_of_seconds(tmp_path):
    """Archive -> curation -> MoCo and MAE pretraining (2 steps, 2 seeds) -> kNN, linear and
    the frozen dense protocol against random init and the forest -> rows, runs and summary;
    a second call reuses the cached archive and runs."""
    bench = _load("bench_ssl")
    argv = [
        "--cache", str(tmp_path), "--scenes", "6", "--size", "128", "--patch-size", "32",
        "--methods", "moco,mae", "--seeds", "0", "1", "--steps", "2", "--no-potsdam",
        "--dense-epochs", "1", "--set", "batch_size=4", "--set", "crop_size=16",
        "--set", "memory_bank_size=8", "--tag", "tiny", "--bn-control-seeds", "0",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    out = tmp_path / "results" / "tiny"
    rows = pd.read_csv(out / "rows.csv")
    encoders = rows[rows["init"] != bench.FOREST]
    keys = ["method", "init", "seed", "probe"]
    got = set(encoders[keys].itertuples(index=False, name=None))
    assert got == {
        (m, i, s, p)
        for m in ("moco", "mae")
        for i in (bench.PRETRAINED, bench.RANDOM, bench.RANDOM_BN)
        for s in (0, 1)
        for p in ("knn", "linear", "frozen_dense")
        # the control: pooled probes only, and only for --bn-control-seeds
        if i != bench.RANDOM_BN or (p != "frozen_dense" and s == 0)
    }
    assert set(encoders.loc[encoders["method"] == "mae", "backbone"]) == {"spec_vit_tiny"}
    forest = rows[rows["init"] == bench.FOREST]
    assert set(forest["probe"]) == {"frozen_dense"} and set(forest["seed"]) == {0, 1}
    assert rows["value"].between(0, 1).all() and (rows["test_patches"] > 0).all()
    dense = rows[rows["probe"] == "frozen_dense"]
    assert (dense["test_pixels"] > 0).all()
    summary = (out / "summary.md").read_text()
    assert "## Probes: pretrained vs random init" in summary and "delta_in_std" in summary
    assert "feature_std x sqrt(D)" in summary
    assert "random_init_bn" in summary and "chance ln(K+1)" in summary
    runs = pd.read_json(out / "runs.json")
    assert list(runs["steps"]) == [2, 2, 2, 2] and set(runs["profile"]) == {"cpu-small"}

    archive = next(tmp_path.glob("synth-*"))
    ready = (archive / bench.READY).stat().st_mtime_ns
    run_json = next((tmp_path / "runs" / "tiny").glob("moco-*-seed0")) / "run.json"
    stamp = run_json.stat().st_mtime_ns
    # seed 5 was never trained: --reuse-only leaves it out instead of training it
    again = [*argv, "--methods", "moco", "--seeds", "0", "5", "--probes", "knn", "--reuse-only"]
    assert bench.main(again) == 0
    assert (archive / bench.READY).stat().st_mtime_ns == ready  # archive reused
    assert run_json.stat().st_mtime_ns == stamp  # run reused (same settings)
    assert not (run_json.parent.parent / run_json.parent.name.replace("seed0", "seed5")).exists()
    assert set(pd.read_csv(out / "rows.csv")["seed"]) == {0}
