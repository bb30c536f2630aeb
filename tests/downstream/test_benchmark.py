"""The paper's nine downstream datasets, the Potsdam task, protocols, metrics and baselines."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from spectralearth.config import EvaluateSettings
from spectralearth.downstream.baselines import random_forest_baseline
from spectralearth.downstream.datasets import MissingPatchesError, ReleasedDataset, get_card
from spectralearth.downstream.datasets.registry import (
    PAPER_DATASETS,
    describe_datasets,
    open_split,
    resolve,
)
from spectralearth.downstream.finetuning import set_trainable
from spectralearth.downstream.metrics import MultilabelMetrics, SegmentationMetrics, metric_names
from spectralearth.downstream.protocols import encoder_stages, evaluate_encoder, label_subset
from spectralearth.downstream.run import BandMismatchError, evaluate_model
from tests.helpers import SHARED_DATA, TinyEncoder, make_fake, shared

SETTINGS = EvaluateSettings(task="x", protocol="frozen", epochs=15, batch_size=4, lr=0.05, seed=0)

# The issue's table, verbatim.
ISSUE_CODES = {
    "enmap_cdl": (1, 2, 3, 4, 5, 6, 45, 54, 69, 72, 75, 76, 204, 210),
    "enmap_nlcd": (11, 21, 22, 23, 24, 31, 41, 42, 43, 52, 71, 81, 82, 90, 95),
    "enmap_eurocrops": (
        3301090205, 3301010600, 3301090303, 3301010800, 3301090301, 3303060000, 3303030600,
        3303050000, 3303030100, 3301060500, 3301060300, 3303010000, 3301020000, 3301160000,
        3301029900,
    ),
    "enmap_bdforet": (1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 14, 16),
    "enmap_treemap": (
        184, 185, 221, 924, 105, 503, 520, 706, 801, 201, 264, 266, 281, 301, 901, 406, 923,
        142, 161, 602, 607, 608, 267, 371,
    ),
    "enmap_bnetd": (1, 2, 3, 6, 9, 10, 13, 15, 16, 21),
    "desis_cdl": (1, 2, 3, 5, 42, 43, 49, 54, 56, 68, 69, 75, 76, 204),
    "eo1_cdl": (1, 2, 3, 4, 5, 6, 41, 42, 43, 54, 69, 75, 76, 204),
}  # fmt: skip


@pytest.fixture(scope="module")
def official_tree(tmp_path_factory) -> tuple[Path, Path]:
    """All nine datasets, 2 patches a split, named from the official split lists."""
    splits = shared("spectralearth_reference", "splits")
    out = make_fake(splits, tmp_path_factory.mktemp("official"), "--per-split", "2")
    return splits, out


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory) -> Path:
    """enmap_cdl, enmap_corine and desis_cdl with made-up names (no shared data needed)."""
    root = tmp_path_factory.mktemp("local")
    splits = root / "lists"
    counts = {"train": 12, "val": 4, "test": 4}
    for name in ("enmap_cdl", "enmap_corine", "desis_cdl"):
        (splits / name).mkdir(parents=True)
        for split, n in counts.items():
            base = {"train": 0, "val": 100, "test": 200}[split]
            lines = [f"{base + i:07d}/{i:05d}.tif" for i in range(n)]
            (splits / name / f"{split}.txt").write_text("\n".join(lines) + "\n")
    args = ["--per-split", "12", "--size", "16", "--datasets", "enmap_cdl"]
    make_fake(splits, root / "data", *args)
    make_fake(splits, root / "data", "--per-split", "12", "--datasets", "enmap_corine", "desis_cdl")
    return root / "data"


# --- registry ---------------------------------------------------------------------------------


def test_registry_holds_the_nine_datasets_with_the_issue_codes():
    assert len(PAPER_DATASETS) == 9
    for name in PAPER_DATASETS:
        info = get_card(name)
        assert info.name == name and info.citation and info.task_type
        assert len(info.class_names) == info.num_classes
        if name in ISSUE_CODES:
            assert info.codes == ISSUE_CODES[name]
            assert info.num_classes == len(ISSUE_CODES[name])
            assert info.task == "segmentation"
    assert get_card("enmap_cdl").bands == 202
    assert get_card("desis_cdl").bands == 235 and get_card("desis_cdl").sensor == "DESIS"
    assert get_card("eo1_cdl").bands == 198 and get_card("eo1_cdl").sensor == "Hyperion"
    assert get_card("enmap_cdl").class_names[:2] == ("corn", "cotton")
    corine = get_card("enmap_corine")
    assert corine.task == "multilabel" and corine.num_classes == 19 and len(corine.codes) == 43
    assert set(corine.class_of_code().values()) == set(range(19))
    with pytest.raises(KeyError, match="unknown dataset"):
        get_card("enmap_nope")


def test_class_names_are_one_per_class_and_legend_names_where_a_legend_was_found():
    """TreeMap and EuroCrops carry their legends' names (FIA forest types, HCAT) in code
    order; BNETD and BD Foret keep "<source> <code>" (no legend keyed by code was found)."""
    for name in PAPER_DATASETS:
        info = get_card(name)
        assert len(info.class_names) == info.num_classes == len(set(info.class_names)), name
        assert all(isinstance(n, str) and n.strip() for n in info.class_names), name
    treemap = get_card("enmap_treemap")
    by_code = dict(zip(treemap.codes, treemap.class_names, strict=True))
    assert by_code[184] == "Juniper woodland" and by_code[924] == "Blue oak"
    assert by_code[371] == "California mixed conifer" and by_code[105] == "Eastern hemlock"
    assert not any(n.startswith("FIA forest type") for n in treemap.class_names)
    eurocrops = get_card("enmap_eurocrops")
    by_code = dict(zip(eurocrops.codes, eurocrops.class_names, strict=True))
    assert eurocrops.class_names[0] == by_code[3301090205] == "lolium_ryegrass"
    assert by_code[3301010600] == "grain_maize_corn_popcorn"
    assert by_code[3301029900] == "other_dry_pulses"
    assert not any(n.startswith("HCAT") for n in eurocrops.class_names)
    for name, prefix in (("enmap_bnetd", "BNETD"), ("enmap_bdforet", "BD Foret")):
        info = get_card(name)
        assert info.class_names == tuple(f"{prefix} {c}" for c in info.codes)


def test_codes_outside_the_table_are_ignored():
    info = get_card("enmap_eurocrops")
    labels = np.array([[3301090205, 3301029900], [0, 3301010100]], dtype=np.uint64)
    np.testing.assert_array_equal(info.encode(labels), [[0, 14], [-1, -1]])
    cdl = get_card("enmap_cdl")
    np.testing.assert_array_equal(cdl.encode(np.array([1, 210, 41, 0, 255])), [0, 13, -1, -1, -1])
    corine = get_card("enmap_corine")
    np.testing.assert_array_equal(corine.encode(np.array([111, 112, 122, 523])), [0, 0, -1, 18])


# --- released layout loader -------------------------------------------------------------------


@pytest.mark.shared_data
def test_loader_reads_fake_tree_named_from_official_lists(official_tree):
    splits, root = official_tree
    for name in PAPER_DATASETS:
        info = get_card(name)
        for split in ("train", "val", "test"):
            official = (splits / name / f"{split}.txt").read_text().split()[:2]
            ds = ReleasedDataset(root / name, name, split)
            assert ds.files == official
            image, target = ds[0]
            assert image.dtype == torch.float32 and image.shape == (info.bands, 8, 8)
            with rasterio.open(root / name / info.label_dir / ds.files[0]) as src:
                raw = src.read(1)
            if info.task == "multilabel":
                assert target.shape == (19,) and set(target.unique().tolist()) <= {0.0, 1.0}
                mapping = info.class_of_code()
                present = {mapping[int(c)] for c in np.unique(raw) if int(c) in mapping}
                assert set(torch.nonzero(target).flatten().tolist()) == present
            else:
                assert target.shape == (8, 8) and target.dtype == torch.int64
                kept = np.isin(raw, info.codes)
                assert torch.equal(target == -1, torch.from_numpy(~kept))
                assert int(target.max()) < info.num_classes


@pytest.mark.shared_data
def test_official_split_naming_missing_patches_lists_them(official_tree):
    splits, root = official_tree
    with pytest.raises(MissingPatchesError) as err:
        ReleasedDataset(root / "enmap_nlcd", "enmap_nlcd", "test", split_dir=splits / "enmap_nlcd")
    third = (splits / "enmap_nlcd" / "test.txt").read_text().split()[2]
    assert f"enmap/{third}" in str(err.value) and f"nlcd/{third}" in str(err.value)
    assert "more" in str(err.value)  # thousands missing: the list is cut with a count
    n_official = len((splits / "enmap_nlcd" / "test.txt").read_text().split())
    assert len(err.value.missing) == 2 * (n_official - 2)


def test_missing_patch_is_named(local_tree, tmp_path):
    import shutil

    root = tmp_path / "enmap_cdl"
    shutil.copytree(local_tree / "enmap_cdl", root)
    victim = (root / "splits" / "val.txt").read_text().split()[1]
    (root / "cdl" / victim).unlink()
    with pytest.raises(MissingPatchesError, match=f"cdl/{victim}") as err:
        open_split(resolve(root), "val")
    assert err.value.missing == [f"cdl/{victim}"]


def test_wrong_band_count_in_a_patch_is_refused(local_tree, tmp_path):
    import shutil

    root = tmp_path / "enmap_cdl"
    shutil.copytree(local_tree / "enmap_cdl", root)
    name = (root / "splits" / "test.txt").read_text().split()[0]
    with rasterio.open(root / "enmap" / name, "w", driver="GTiff", width=16, height=16,
                       count=100, dtype="int16", crs="EPSG:32633", transform=from_origin(0, 0, 30, 30)) as dst:  # fmt: skip
        dst.write(np.zeros((100, 16, 16), dtype=np.int16))
    ds = open_split(resolve(root), "test")
    with pytest.raises(ValueError, match="100 bands, enmap_cdl \\(EnMAP\\) expects 202"):
        ds[0]


# --- metrics, subsets, protocols, baselines ---------------------------------------------------


def test_segmentation_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, jaccard_score

    rng = np.random.default_rng(0)
    truth = rng.integers(-1, 4, (3, 10, 10))
    pred = np.where(rng.random(truth.shape) < 0.6, truth.clip(0), rng.integers(0, 4, truth.shape))
    m = SegmentationMetrics(5)  # class 4 never occurs: left out of macro averages
    m.update(torch.from_numpy(pred[:2]), torch.from_numpy(truth[:2]))
    m.update(torch.from_numpy(pred[2:]), torch.from_numpy(truth[2:]))
    res = m.compute()
    keep = truth.ravel() >= 0
    t, p = truth.ravel()[keep], pred.ravel()[keep]
    assert res["overall_accuracy"] == pytest.approx(accuracy_score(t, p))
    assert res["macro_f1"] == pytest.approx(f1_score(t, p, average="macro"))
    assert res["macro_iou"] == pytest.approx(jaccard_score(t, p, average="macro"))
    assert res["micro_iou"] == pytest.approx(jaccard_score(t, p, average="micro"))
    assert res["pixels"] == keep.sum() and len(res["per_class_iou"]) == 5


def test_multilabel_metrics():
    target = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    m = MultilabelMetrics(3)
    m.update(torch.where(target == 1, 5.0, -5.0), target)
    res = m.compute()
    assert res["micro_f1"] == 1.0 and res["macro_f1"] == 1.0 and res["map"] == pytest.approx(1.0)


def test_label_subsets_are_seeded_fractions():
    ds = list(range(50))
    assert len(label_subset(ds, 0.01, 0)) == 1
    assert len(label_subset(ds, 0.1, 0)) == 5
    assert label_subset(ds, 1.0, 0) is ds
    assert list(label_subset(ds, 0.1, 3).indices) == list(label_subset(ds, 0.1, 3).indices)
    assert list(label_subset(ds, 0.1, 3).indices) != list(label_subset(ds, 0.1, 4).indices)
    with pytest.raises(ValueError):
        label_subset(ds, 0.0, 0)


def test_protocols_choose_what_trains():
    enc = TinyEncoder()
    set_trainable(enc, "adapter", 2)
    assert {n.split(".")[0] for n, p in enc.named_parameters() if p.requires_grad} == {
        "spectral_adapter"
    }
    enc = TinyEncoder()
    set_trainable(enc, "first-n", 2)
    assert {n.split(".")[0] for n, p in enc.named_parameters() if p.requires_grad} == {
        "spectral_adapter",
        "stage1",
    }
    assert not enc.stage2.training and enc.stage1.training
    enc = TinyEncoder()
    set_trainable(enc, "full", 2)
    assert all(p.requires_grad for p in enc.parameters())
    assert len(encoder_stages(enc)) == 3
    with pytest.raises(ValueError, match="first_n"):
        set_trainable(TinyEncoder(), "first-n", 9)


@pytest.mark.parametrize("protocol", ["frozen", "adapter", "first-n", "full"])
def test_every_protocol_learns_and_leaves_the_encoder_alone(local_tree, protocol):
    train = open_split(resolve(local_tree / "enmap_cdl"), "train")
    val = open_split(resolve(local_tree / "enmap_cdl"), "val", train.stats)
    test = open_split(resolve(local_tree / "enmap_cdl"), "test", train.stats)
    torch.manual_seed(0)
    enc = TinyEncoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    epochs = 8 if protocol == "frozen" else 3
    res = evaluate_encoder(
        enc, train, test, 14, replace(SETTINGS, epochs=epochs), protocol, val_ds=val, first_n=2
    )
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    for key in ("overall_accuracy", "micro_iou", "macro_iou", "macro_f1"):
        assert 0.0 <= res[key] <= 1.0 + 1e-6 and 0.0 <= res["val"][key] <= 1.0 + 1e-6
    assert res["protocol"] == protocol and 0 <= res["best_epoch"] < epochs
    # labels are uniform over 14 kept codes (+2 ignored): chance is ~0.07
    assert res["overall_accuracy"] > (0.6 if protocol == "frozen" else 0.2), res["overall_accuracy"]


def test_frozen_multilabel_head(local_tree):
    src = resolve(local_tree / "enmap_corine")
    train, test = open_split(src, "train"), open_split(src, "test")
    res = evaluate_encoder(
        TinyEncoder(), train, test, 19, replace(SETTINGS, epochs=3), task="multilabel"
    )
    assert {"micro_f1", "macro_f1", "map"} <= set(res)
    assert 0 <= res["map"] <= 1 and res["test_images"] == 4


def test_random_forest_baseline(local_tree):
    src = resolve(local_tree / "enmap_cdl")
    train = open_split(src, "train")
    test = open_split(src, "test", train.stats)
    res = random_forest_baseline(train, test, 14, seed=0, n_estimators=20, max_pixels=2000)
    assert res["overall_accuracy"] > 0.9 and res["train_samples"] == 2000
    ml = open_split(resolve(local_tree / "enmap_corine"), "train")
    res = random_forest_baseline(ml, ml, 19, task="multilabel", n_estimators=10)
    assert 0 <= res["map"] <= 1 and 0 <= res["micro_f1"] <= 1


# --- evaluate_model, band mismatch, CLI -------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    from spectralearth.models import create_model

    torch.manual_seed(0)
    model = create_model("spec_resnet18", in_chans=202)
    ckpt = tmp_path_factory.mktemp("ckpt") / "moco-spec_resnet18"
    ckpt.mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors")
    )
    (ckpt / "run.json").write_text(
        json.dumps({"method": "moco", "backbone": "spec_resnet18", "in_chans": 202})
    )
    return ckpt


def test_evaluate_model_rows(local_tree, checkpoint):
    outcome = evaluate_model(
        checkpoint / "model.safetensors",
        local_tree / "enmap_cdl",
        replace(SETTINGS, epochs=1),
        "frozen",
        label_fractions=(0.1, 1.0),
        seeds=(0, 1),
    )
    df = outcome.rows
    assert set(df["split"]) == {"val", "test"} and set(df["seed"]) == {0, 1}
    assert set(df["label_fraction"]) == {0.1, 1.0}
    project = {"overall_accuracy", "micro_iou", "macro_iou", "macro_f1"}
    assert set(df["metric"]) == project | {"ref_overall_accuracy", "ref_micro_iou"}
    assert set(df["metric"]) == set(metric_names("segmentation"))
    assert len(df) == 2 * 2 * 2 * 6
    assert set(df["model"]) == {"moco-spec_resnet18"} and set(df["method"]) == {"moco"}
    assert set(df["dataset"]) == {"enmap_cdl"} and df["value"].between(0, 1).all()
    assert set(df["recipe"]) == {"cpu"} and df["peak_mem_mb"].gt(0).all()
    # the reference's OA and micro IoU are the project's, computed independently
    wide = df.pivot_table(
        index=["seed", "label_fraction", "split"], columns="metric", values="value"
    )
    assert np.allclose(wide["ref_overall_accuracy"], wide["overall_accuracy"])
    assert np.allclose(wide["ref_micro_iou"], wide["micro_iou"])
    assert sorted(outcome.details) == [(m, s, f) for m in ["moco-spec_resnet18"] for s in (0, 1)
                                       for f in (0.1, 1.0)]  # fmt: skip
    assert outcome.classes == list(get_card("enmap_cdl").class_names)
    assert outcome.trained_model_dir is None


def test_cross_sensor_runs_the_adapter_without_a_flag_and_logs_it(local_tree, checkpoint, caplog):
    """DESIS (235 bands) with a 202-band checkpoint: its spectral adapter takes them."""
    import logging

    with caplog.at_level(logging.INFO, logger="spectralearth.downstream.run"):
        df = evaluate_model(checkpoint, local_tree / "desis_cdl", replace(SETTINGS, epochs=1)).rows
    assert set(df["dataset"]) == {"desis_cdl"} and len(df) == 2 * 6
    assert "trained on 202 bands, dataset desis_cdl has 235" in caplog.text


def test_a_model_without_an_adapter_is_refused_on_another_band_count(local_tree, tmp_path):
    from safetensors.torch import save_file

    from spectralearth.models import create_model

    ckpt = tmp_path / "plain-resnet50"
    ckpt.mkdir()
    model = create_model("resnet50", in_chans=202)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(ckpt / "model.safetensors"))  # fmt: skip
    (ckpt / "run.json").write_text(json.dumps({"method": "moco", "backbone": "resnet50"}))
    with pytest.raises(BandMismatchError, match="202 bands but dataset desis_cdl has 235") as e:
        evaluate_model(ckpt, local_tree / "desis_cdl", replace(SETTINGS, epochs=1))
    assert "no spectral adapter" in str(e.value) and str(ckpt) in str(e.value)
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors", "run.json"]


def test_cli_evaluate_and_datasets(local_tree, tmp_path, capsys):
    from spectralearth.cli import main
    from tests.helpers import write_params

    params = write_params(tmp_path / "p")
    built = tmp_path / "p" / "data" / "downstream" / "synth_landcover"
    (built / "splits").mkdir(parents=True)
    (built / "classes.json").write_text(json.dumps({"1": "water", "2": "forest"}))
    out = tmp_path / "results"
    common = ["--params", str(params), "evaluate", "--dataset", str(local_tree / "enmap_cdl")]
    assert main([*common, "--model", "random", "--protocol", "frozen", "--epochs", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    (csv,) = (out / "evaluations" / "random_init").rglob("lf1.csv")
    df = pd.read_csv(csv)
    assert {"model", "dataset", "protocol", "split", "seed", "metric", "value"} <= set(df.columns)
    assert set(df["model"]) == {"random_init"} and set(df["protocol"]) == {"frozen"}
    assert main([*common, "--baseline", "random_forest", "--out", str(out)]) == 0
    (csv,) = (out / "evaluations" / "random_forest").rglob("lf1.csv")
    assert set(pd.read_csv(csv)["protocol"]) == {"none"}
    capsys.readouterr()
    assert main(["--params", str(params), "datasets"]) == 0
    text = capsys.readouterr().out
    for name in (*PAPER_DATASETS, "enmap_potsdam", "synth_landcover"):
        assert name in text
    assert "Hyperion" in text and "235" in text


def test_describe_datasets_lists_built_ones(tmp_path):
    rows = {r["name"]: r for r in describe_datasets(tmp_path)}
    assert set(PAPER_DATASETS) <= set(rows)
    assert rows["enmap_corine"]["classes"] == 19 and rows["eo1_cdl"]["bands"] == 198


# --- the real Potsdam task --------------------------------------------------------------------


@pytest.mark.shared_data
def test_potsdam_loads_as_shipped():
    root = shared("enmap_potsdam")
    src = resolve(root)
    assert src.kind == "potsdam" and resolve("potsdam").root.resolve() == root.resolve()
    train = open_split(src, "train")
    val, test = open_split(src, "val", train.stats), open_split(src, "test", train.stats)
    assert (len(train), len(val), len(test)) == (14, 2, 2)
    image, mask = train[0]
    assert image.shape == (202, 32, 32) and torch.isfinite(image).all()
    assert set(mask.unique().tolist()) <= set(range(-1, 6))
    # The 202-band view is chosen by wavelength: compare one band with the raw file.
    from spectralearth.bands import view_wavelengths

    with rasterio.open(root / train.files[0]) as raw:
        wl = np.array([float(raw.tags(b)["wavelength"]) for b in range(1, raw.count + 1)])
        k = 150  # a SWIR band of the view
        b = int(np.abs(wl - view_wavelengths()[k]).argmin())
        band = raw.read(b + 1) * raw.scales[b] * 10000
    expected = (np.rint(band) - train.stats["mean"][k]) / train.stats["std"][k]
    np.testing.assert_allclose(image[k].numpy(), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.shared_data
def test_potsdam_rf_baseline_and_frozen_random_init():
    root = shared("enmap_potsdam")
    rf = evaluate_model("random", root, SETTINGS, baseline="random_forest", rf_trees=30).rows
    assert set(rf["split"]) == {"test"} and set(rf["dataset"]) == {"enmap_potsdam"}
    oa = rf.set_index("metric").loc["overall_accuracy", "value"]
    assert oa > 0.5, oa
    df = evaluate_model("random", root, replace(SETTINGS, epochs=2), "frozen").rows
    assert set(df["split"]) == {"val", "test"} and set(df["model"]) == {"random_init"}


def test_shared_data_location_is_beside_the_repo():
    assert SHARED_DATA.name == "data" and SHARED_DATA.parent.name == "shared"
