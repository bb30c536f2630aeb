"""HYPERVIEW soil-parameter regression: the loader, the metrics, the recipes, the forest."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from spectralearth.cards import get_card
from spectralearth.config import load_settings
from spectralearth.downstream.datasets.hyperview import HyperviewDataset, resize
from spectralearth.downstream.datasets.registry import describe_datasets, open_split, resolve
from spectralearth.downstream.metrics import REFERENCE_METRICS, RegressionMetrics, metric_names
from spectralearth.downstream.run import evaluate_model
from spectralearth.names import DATASETS, HYPERVIEW
from tests.helpers import REPO, make_fake


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hv")
    make_fake(out / "no-lists", out, "--datasets", "hyperview", "--per-split", "8", "--size", "12")
    return out / "hyperview"


@pytest.fixture(scope="module")
def evaluate():
    e = load_settings(REPO / "params.yaml").evaluate
    # 16 px fields keep the paper recipe affordable here (it resizes to 128 px)
    small = {
        name: replace(r, datasets={**r.datasets, "hyperview": {**r.datasets.get("hyperview", {}),
                                                               "resize_to": 16}})
        for name, r in e.recipes.items()
    }  # fmt: skip
    return replace(e, epochs=2, recipes=small)


def test_card_and_registry():
    card = get_card(HYPERVIEW)
    assert card.task == "regression" and card.bands == 150 and card.num_classes == 4
    assert card.class_names == ("P", "K", "Mg", "pH") and HYPERVIEW in DATASETS
    rows = {r["name"]: r for r in describe_datasets(None)}
    assert rows[HYPERVIEW]["bands"] == 150 and rows[HYPERVIEW]["status"] == "registered"


def test_the_loader_reads_the_reference_layout(root):
    src = resolve(root)
    assert src.kind == "hyperview" and resolve("hyperview", root.parent).root == root
    train = open_split(src, "train")
    assert len(train) == 8 and train.task == "regression" and train.num_classes == 4
    image, target = train[0]
    assert image.shape == (150, 128, 128) and image.dtype == torch.float32
    table = pd.read_csv(root / "splits" / "train.csv")
    np.testing.assert_allclose(
        target.numpy(), table.loc[0, ["P", "K", "Mg", "pH"]].to_numpy(float), rtol=1e-6
    )
    # normalised with the train statistics of the fields' own pixels
    with np.load(root / "images" / "0.npz") as npz:
        raw = npz["data"].astype(np.float32)
    want = (resize(raw, 128) - train.mean) / train.std
    assert torch.allclose(image, want)
    small = open_split(src, "val", train.stats, resize_to=16)
    assert small[0][0].shape == (150, 16, 16)


def test_resize_is_the_reference_s_bicubic_with_aligned_corners():
    cube = np.random.default_rng(0).normal(size=(150, 9, 13)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(cube)[None], size=(128, 128), mode="bicubic",
                        align_corners=True)[0]  # fmt: skip
    assert torch.equal(resize(cube, 128), ref)
    same = np.zeros((150, 128, 128), np.float32)
    assert torch.equal(resize(same, 128), torch.from_numpy(same))


def test_bad_input_is_named(root, tmp_path):
    bad = tmp_path / "hyperview"
    shutil.copytree(root, bad)
    (bad / "splits" / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.csv: no such split file"):
        HyperviewDataset(bad, "test")
    (bad / "images" / "3.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/3\.npz"):
        HyperviewDataset(bad, "train")
    table = pd.read_csv(root / "splits" / "val.csv").drop(columns=["pH"])
    table.to_csv(bad / "splits" / "val.csv", index=False)
    with pytest.raises(ValueError, match=r"val\.csv: columns \['pH'\] missing"):
        HyperviewDataset(bad, "val", {"mean": [0] * 150, "std": [1] * 150})
    np.savez(bad / "images" / "3.npz", data=np.zeros((100, 4, 4), np.int16))
    with pytest.raises(ValueError, match=r"3\.npz: shape \(100, 4, 4\)"):
        HyperviewDataset(bad, "train")
    assert sorted(p.name for p in (bad / "splits").iterdir()) == ["train.csv", "val.csv"]


def test_regression_metrics_against_their_definitions():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(10, 4))
    p = y + rng.normal(0, 0.5, y.shape)
    m = RegressionMetrics(4)
    m.update(torch.from_numpy(p[:3]), torch.from_numpy(y[:3]))
    m.update(torch.from_numpy(p[3:]), torch.from_numpy(y[3:]))
    res = m.compute()
    mse = ((p - y) ** 2).mean(0)
    assert res["per_target_mse"] == pytest.approx(mse.tolist(), rel=1e-5)
    assert res["normalized_mse"] == pytest.approx((mse / (y**2).mean(0)).mean(), rel=1e-5)
    r2 = 1 - ((p - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    assert res["r2"] == pytest.approx(r2.mean(), rel=1e-5)
    assert res["ref_rmse"] == pytest.approx(np.sqrt(((p - y) ** 2).mean()), rel=1e-5)
    batches = [(p[:3], y[:3]), (p[3:], y[3:])]
    ref = [(((b - t) ** 2).mean(0) / (t**2).mean(0)).mean() * len(t) for b, t in batches]
    assert res["ref_loss"] == pytest.approx(sum(ref) / 10, rel=1e-5)
    assert metric_names("regression") == ("normalized_mse", "r2", "ref_rmse", "ref_loss")


@pytest.mark.parametrize("recipe, head", [("cpu", "linear"), ("paper", "mlp")])
def test_both_recipes_run_and_report_the_reference_metrics(root, evaluate, recipe, head, tmp_path):
    outcome = evaluate_model("random", root, evaluate, "frozen", recipe=recipe,
                             backbone="spec_resnet18", save_model_dir=tmp_path / "m")  # fmt: skip
    df = outcome.test_rows()
    assert set(df["metric"]) == set(metric_names("regression"))
    assert set(df["head"]) == {head} and set(df["recipe"]) == {recipe}
    assert set(REFERENCE_METRICS["regression"]) <= set(df["metric"])
    assert np.isfinite(df["value"]).all() and outcome.classes == ["P", "K", "Mg", "pH"]
    detail = next(iter(outcome.details.values()))
    assert len(detail["per_target_mse"]) == 4 and detail["test_images"] == 8
    import json

    info = json.loads((tmp_path / "m" / "head.json").read_text())
    assert info["task"] == "regression" and info["head"] == head and info["in_chans"] == 150
    if recipe == "paper":  # the reference's HYPERVIEW statistics, where they are
        mu = REPO.parent / "shared/data/spectralearth_reference/statistics_other_sensors/hyperview"
        if (mu / "mu.npy").is_file():
            assert info["band_stats"]["mean"] == pytest.approx(np.load(mu / "mu.npy").tolist())


def test_the_random_forest_learns_the_fake_relation(root):
    df = evaluate_model("random", root, load_settings(REPO / "params.yaml").evaluate,
                        baseline="random_forest", rf_trees=50).test_rows()  # fmt: skip
    value = df.set_index("metric")["value"]
    assert value["normalized_mse"] < 0.9 and value["r2"] > 0.1, value.to_dict()
    assert set(df["protocol"]) == {"none"} and set(df["recipe"]) == {"none"}
