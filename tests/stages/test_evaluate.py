"""Evaluations are keyed by checkpoint x dataset x protocol x head x label fraction: another
head or fraction never overwrites a result, and a one-off evaluation writes where it is told
and says where."""

from __future__ import annotations

import pytest

from spectralearth.cli import main
from spectralearth.layout import EvaluationKey, ResultsLayout
from tests.helpers import make_fake, write_params


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("eval")
    splits = root / "lists"
    for split, n in {"train": 6, "val": 2, "test": 2}.items():
        base = {"train": 0, "val": 100, "test": 200}[split]
        (splits / "enmap_cdl").mkdir(parents=True, exist_ok=True)
        lines = [f"{base + i:07d}/{i:05d}.tif" for i in range(n)]
        (splits / "enmap_cdl" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    make_fake(splits, root / "data", "--per-split", "6", "--size", "16", "--datasets", "enmap_cdl")
    return root / "data" / "enmap_cdl"


def test_two_heads_and_two_fractions_keep_their_own_results(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = write_params(tmp_path / "cfg", evaluate={"epochs": 1})
    out = tmp_path / "results"
    common = ["--params", str(params), "evaluate", "--model", "random", "--dataset", str(dataset),
              "--out", str(out), "--backbone", "spec_resnet18"]  # fmt: skip
    assert main([*common, "--head", "linear", "--label-fraction", "0.5", "1"]) == 0
    printed = capsys.readouterr().out
    assert main([*common, "--head", "fcn"]) == 0
    results = ResultsLayout(out)
    keys = [
        EvaluationKey("random_init", "enmap_cdl", "frozen", "linear", 0.5, "cpu"),
        EvaluationKey("random_init", "enmap_cdl", "frozen", "linear", 1.0, "cpu"),
        EvaluationKey("random_init", "enmap_cdl", "frozen", "fcn", 1.0, "cpu"),
    ]
    for key in keys:
        assert results.csv(key).is_file(), key
    linear, fcn = keys[1], keys[2]
    assert (results.trained_model(linear) / "head.json").is_file()
    assert (results.trained_model(fcn) / "head.json").is_file()
    assert results.csv(linear).read_text() != results.csv(fcn).read_text()
    assert str(results.csv(linear)) in printed and str(results.trained_model(linear)) in printed
    # nothing went to the default data folder
    assert not (tmp_path / "cfg" / "data" / "results").exists()
