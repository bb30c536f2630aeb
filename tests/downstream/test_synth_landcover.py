"""Downstream evaluation: synth_landcover layout, SegmentationDataset, frozen protocol, checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from shapely.geometry import box
from torch import nn

from spectralearth.config import EvaluateSettings
from spectralearth.downstream import (
    EVALUATION_COLUMNS,
    EvaluationOutcome,
    SegmentationDataset,
    build_synth_landcover,
    evaluate_encoder,
    evaluate_model,
    write_evaluations,
)

BANDS = 202
MAP_SIZE = 64
PATCH = 16
CRS = "EPSG:32632"
CLASSES = {"1": "water", "2": "forest", "3": "cropland"}
# Patch window origins (row_off, col_off) cut from each product's class map.
WINDOWS = ((0, 0), (16, 32), (32, 16), (48, 48))
SETTINGS = EvaluateSettings(
    task="synth_landcover", protocol="frozen", epochs=20, batch_size=4, lr=0.05, seed=0
)


def product_name(p: int) -> str:
    return f"ENMAP01-____L2A-DT00000000{p:02d}_20240101T000000Z_001_V010400_20240102T000000Z"


def class_map(p: int) -> np.ndarray:
    """Blocks of 8 px cycling 0 (no label), 1, 2, 3, shifted per product."""
    r, c = np.mgrid[0:MAP_SIZE, 0:MAP_SIZE]
    return ((r // 8 + c // 8 + p) % 4).astype(np.uint8)


def map_transform(p: int):
    return from_origin(300_000 + 10_000 * p, 5_000_000, 30, 30)


def split_of(p: int, k: int) -> str:
    if k == 3:
        return "test"
    if p == 0 and k == 2:
        return "val"
    return "train"


@pytest.fixture(scope="module")
def fake_inputs(tmp_path_factory) -> dict:
    """Class maps for 3 products, 4 patches each whose spectra depend on the class."""
    root = tmp_path_factory.mktemp("downstream_inputs")
    labels_dir, patches_root = root / "labels", root / "patches"
    labels_dir.mkdir()
    (labels_dir / "classes.json").write_text(json.dumps(CLASSES))
    rng = np.random.default_rng(0)
    # One distinct smooth spectrum per class id (0 = unlabelled pixels still get a spectrum).
    wl = np.linspace(0, 1, BANDS)
    spectra = np.stack(
        [2000 + 1500 * np.sin(2 * np.pi * (f * wl + f / 7)) for f in (0.5, 1.0, 1.5, 2.0)]
    )
    rows = []
    for p in range(3):
        cm = class_map(p)
        tf = map_transform(p)
        profile = {
            "driver": "GTiff",
            "width": MAP_SIZE,
            "height": MAP_SIZE,
            "crs": CRS,
            "transform": tf,
        }
        with rasterio.open(
            labels_dir / f"{product_name(p)}-CLASSMAP.TIF", "w", count=1, dtype="uint8", **profile
        ) as dst:
            dst.write(cm, 1)
        for k, (r0, c0) in enumerate(WINDOWS):
            loc = 100 * p + k
            lab = cm[r0 : r0 + PATCH, c0 : c0 + PATCH]
            cube = spectra[lab].transpose(2, 0, 1) + rng.normal(0, 100, (BANDS, PATCH, PATCH))
            rel = f"enmap/{loc:07d}/{p:05d}.tif"
            (patches_root / rel).parent.mkdir(parents=True, exist_ok=True)
            ptf = tf * tf.translation(c0, r0)
            with rasterio.open(
                patches_root / rel,
                "w",
                driver="GTiff",
                width=PATCH,
                height=PATCH,
                count=BANDS,
                dtype="int16",
                crs=CRS,
                transform=ptf,
            ) as dst:
                dst.write(cube.round().astype(np.int16))
            x0, y0 = ptf * (0, 0)
            rows.append(
                {
                    "patch_id": f"{loc:07d}/{p:05d}",
                    "location_id": loc,
                    "scene_id": p,
                    "product": product_name(p),
                    "row_off": r0,
                    "col_off": c0,
                    "patch_size": PATCH,
                    "split": split_of(p, k),
                    "path": rel,
                    "geometry": box(x0, y0 - 30 * PATCH, x0 + 30 * PATCH, y0),
                }
            )
    index_path = root / "index.parquet"
    gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS).to_parquet(index_path)
    stats = {"mean": [2000.0] * BANDS, "std": [1000.0] * BANDS}
    return {
        "root": root,
        "labels": labels_dir,
        "patches": patches_root,
        "index": index_path,
        "stats": stats,
        "rows": rows,
    }


@pytest.fixture(scope="module")
def dataset_dir(fake_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_landcover")
    counts = build_synth_landcover(
        fake_inputs["index"], fake_inputs["patches"], fake_inputs["labels"], out
    )
    fake_inputs["counts"] = counts
    return out


class PixelEncoder(nn.Module):
    """Identity-like encoder: a fixed 1x1 conv (per-pixel linear map), optional pooling."""

    def __init__(self, in_chans: int = BANDS, num_features: int = 16, stride: int = 1):
        super().__init__()
        self.num_features = num_features
        self.proj = nn.Conv2d(in_chans, num_features, 1)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


def _models():
    try:
        from spectralearth.models import create_model, load_pretrained
    except ImportError as exc:  # being written in parallel
        pytest.skip(f"spectralearth.models not available: {exc}")
    return create_model, load_pretrained


# --- build_synth_landcover -------------------------------------------------------------------


def test_build_writes_layout_and_splits(dataset_dir, fake_inputs):
    counts = fake_inputs["counts"]
    assert counts["patches"] == {"train": 8, "val": 1, "test": 3}
    for split in ("train", "val", "test"):
        lines = (dataset_dir / "splits" / f"{split}.txt").read_text().splitlines()
        expected = sorted(
            f"{r['location_id']:07d}/{r['scene_id']:05d}.tif"
            for r in fake_inputs["rows"]
            if r["split"] == split
        )
        assert lines == expected
        for name in lines:
            assert (dataset_dir / "enmap" / name).is_file()
            assert (dataset_dir / "landcover" / name).is_file()
    assert json.loads((dataset_dir / "classes.json").read_text()) == CLASSES
    # Per-class pixel counts add up to every pixel of every patch.
    total = sum(counts["class_pixels"].values()) + counts["unlabelled_pixels"]
    assert total == 12 * PATCH * PATCH
    assert set(counts["class_pixels"]) == set(CLASSES.values())
    assert counts["linked"] + counts["copied"] == 12


def test_build_labels_line_up_with_class_map(dataset_dir, fake_inputs):
    for r in fake_inputs["rows"][::3]:
        name = f"{r['location_id']:07d}/{r['scene_id']:05d}.tif"
        cm = class_map(r["scene_id"])
        with (
            rasterio.open(dataset_dir / "landcover" / name) as lab,
            rasterio.open(fake_inputs["patches"] / r["path"]) as img,
        ):
            assert lab.dtypes[0] == "uint8"
            assert lab.crs == img.crs
            assert lab.transform == img.transform
            window = lab.read(1)
        r0, c0 = r["row_off"], r["col_off"]
        np.testing.assert_array_equal(window, cm[r0 : r0 + PATCH, c0 : c0 + PATCH])
        for i, j in ((0, 0), (5, 11), (15, 15)):
            assert window[i, j] == cm[r0 + i, c0 + j]
        img_path = dataset_dir / "enmap" / name
        assert (
            os.path.samefile(img_path, fake_inputs["patches"] / r["path"])
            or img_path.read_bytes() == (fake_inputs["patches"] / r["path"]).read_bytes()
        )


def test_build_is_idempotent(dataset_dir, fake_inputs):
    again = build_synth_landcover(
        fake_inputs["index"], fake_inputs["patches"], fake_inputs["labels"], dataset_dir
    )
    assert again["patches"] == fake_inputs["counts"]["patches"]
    assert not [p for p in dataset_dir.rglob("*.tmp")]


def test_build_rejects_misaligned_patch(fake_inputs, tmp_path):
    index = gpd.read_parquet(fake_inputs["index"])
    index.loc[0, "col_off"] = index.loc[0, "col_off"] + 3
    bad = tmp_path / "index.parquet"
    index.to_parquet(bad)
    with pytest.raises(ValueError, match="does not match"):
        build_synth_landcover(bad, fake_inputs["patches"], fake_inputs["labels"], tmp_path / "o")


# --- SegmentationDataset ---------------------------------------------------------------------


def test_dataset_shapes_and_ignore_index(dataset_dir, fake_inputs):
    ds = SegmentationDataset(dataset_dir, "train", fake_inputs["stats"])
    assert len(ds) == 8 and ds.num_classes == 3 and ds.classes == list(CLASSES.values())
    image, mask = ds[0]
    assert image.dtype == torch.float32 and image.shape == (BANDS, PATCH, PATCH)
    assert mask.dtype == torch.int64 and mask.shape == (PATCH, PATCH)
    with rasterio.open(dataset_dir / "landcover" / ds.files[0]) as src:
        raw = torch.from_numpy(src.read(1).astype(np.int64))
    assert torch.equal(mask == -1, raw == 0)
    assert torch.equal(mask[raw > 0], raw[raw > 0] - 1)
    assert set(mask.unique().tolist()) <= {-1, 0, 1, 2}
    with rasterio.open(dataset_dir / "enmap" / ds.files[0]) as src:
        x = src.read().astype(np.float32)
    np.testing.assert_allclose(image.numpy(), (x - 2000) / 1000, rtol=1e-5)


def test_dataset_other_folder_names(dataset_dir, fake_inputs, tmp_path):
    root = tmp_path / "other"
    shutil.copytree(dataset_dir / "enmap", root / "hsi")
    shutil.copytree(dataset_dir / "landcover", root / "cdl")
    shutil.copytree(dataset_dir / "splits", root / "splits")
    ds = SegmentationDataset(root, "test", fake_inputs["stats"], sensor="hsi", label="cdl")
    assert ds.classes is None and len(ds) == 3  # no classes.json: ids shift by one
    image, mask = ds[1]
    assert image.shape == (BANDS, PATCH, PATCH) and mask.min() >= -1 and mask.max() <= 2
    with pytest.raises(FileNotFoundError):
        SegmentationDataset(root, "nope", fake_inputs["stats"], sensor="hsi", label="cdl")


# --- evaluate_encoder ------------------------------------------------------------------------


def _majority_rate(ds) -> float:
    masks = torch.stack([ds[i][1] for i in range(len(ds))])
    labelled = masks[masks >= 0]
    return float(torch.bincount(labelled).max()) / labelled.numel()


def test_evaluate_encoder_learns_separable_task(dataset_dir, fake_inputs):
    train = SegmentationDataset(dataset_dir, "train", fake_inputs["stats"])
    test = SegmentationDataset(dataset_dir, "test", fake_inputs["stats"])
    torch.manual_seed(0)
    res = evaluate_encoder(PixelEncoder(), train, test, 3, SETTINGS)
    majority = _majority_rate(test)
    assert 0.0 <= res["overall_accuracy"] <= 1.0 and 0.0 <= res["macro_f1"] <= 1.0
    assert res["overall_accuracy"] > majority + 0.3, (res["overall_accuracy"], majority)
    assert res["overall_accuracy"] > 0.9 and res["macro_f1"] > 0.9
    cm = np.array(res["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == res["test_pixels"]
    assert np.isclose(np.trace(cm) / cm.sum(), res["overall_accuracy"])
    assert res["train_pixels"] == sum(
        fake_inputs["counts"]["class_pixels_by_split"]["train"].values()
    )
    assert res["seconds"] > 0 and res["peak_mem_mb"] > 0
    assert res["train_loss"][-1] < res["train_loss"][0]


def test_evaluate_encoder_is_seeded_and_leaves_encoder_alone(dataset_dir, fake_inputs):
    train = SegmentationDataset(dataset_dir, "train", fake_inputs["stats"])
    test = SegmentationDataset(dataset_dir, "test", fake_inputs["stats"])
    torch.manual_seed(1)
    enc = PixelEncoder(stride=4)  # coarse feature map: exercises the upsampling
    enc.train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    settings = replace(SETTINGS, epochs=3)
    a = evaluate_encoder(enc, train, test, 3, settings)
    b = evaluate_encoder(enc, train, test, 3, settings)
    assert a["feature_size"] == [PATCH // 4, PATCH // 4]
    assert a["overall_accuracy"] == b["overall_accuracy"] and a["train_loss"] == b["train_loss"]
    assert enc.training
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    with pytest.raises(ValueError, match="protocol"):
        evaluate_encoder(enc, train, test, 3, settings, protocol="finetune")


def test_evaluate_encoder_spec_resnet18(dataset_dir, fake_inputs):
    create_model, _ = _models()
    train = SegmentationDataset(dataset_dir, "train", fake_inputs["stats"])
    test = SegmentationDataset(dataset_dir, "test", fake_inputs["stats"])
    torch.manual_seed(0)
    enc = create_model("spec_resnet18", in_chans=BANDS)
    res = evaluate_encoder(enc, train, test, 3, replace(SETTINGS, epochs=3))
    assert 0.0 <= res["overall_accuracy"] <= 1.0 and 0.0 <= res["macro_f1"] <= 1.0
    assert res["num_features"] == enc.num_features
    assert np.array(res["confusion_matrix"]).shape == (3, 3)


# --- evaluate_model on the built dataset ----------------------------------------------------


def test_checkpoint_and_random_init_rows_on_the_built_dataset(dataset_dir, fake_inputs, tmp_path):
    """What `make run` evaluates: the checkpoint and random init on the built folder."""
    create_model, _ = _models()
    from safetensors.torch import save_file

    torch.manual_seed(123)
    model = create_model("spec_resnet18", in_chans=BANDS)
    ckpt = tmp_path / "moco-spec_resnet18"
    ckpt.mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors")
    )
    (ckpt / "run.json").write_text(
        json.dumps({"method": "moco", "backbone": "spec_resnet18", "in_chans": BANDS})
    )
    settings = replace(SETTINGS, epochs=2)
    outcomes = [
        evaluate_model(ckpt, dataset_dir, settings),
        evaluate_model("random", dataset_dir, settings, backbone="spec_resnet18"),
    ]
    assert all(isinstance(o, EvaluationOutcome) for o in outcomes)
    df = pd.concat([o.rows for o in outcomes])
    assert list(df.columns) == list(EVALUATION_COLUMNS)
    metrics = ("overall_accuracy", "micro_iou", "macro_iou", "macro_f1")
    metrics += ("ref_overall_accuracy", "ref_micro_iou")
    assert set(zip(df["model"], df["split"], df["metric"], strict=True)) == {
        (m, s, k) for m in (ckpt.name, "random_init") for s in ("val", "test") for k in metrics
    }
    assert set(df.loc[df["model"] == ckpt.name, "method"]) == {"moco"}
    assert set(df.loc[df["model"] == "random_init", "method"]) == {"none"}
    assert set(df["backbone"]) == {"spec_resnet18"} and set(df["recipe"]) == {"cpu"}
    assert set(df["dataset"]) == {dataset_dir.name} and set(df["protocol"]) == {"frozen"}
    assert (df["label_fraction"] == 1.0).all() and (df["seed"] == 0).all()
    assert df["value"].between(0, 1).all() and (df["seconds"] > 0).all()
    assert (df["peak_mem_mb"] > 0).all()
    if not torch.cuda.is_available():
        assert df["peak_gpu_mem_mb"].isna().all()
    assert outcomes[0].classes == list(CLASSES.values())
    assert set(outcomes[0].details) == {(ckpt.name, 0, 1.0)}
    # each row states the size of the split it scores and the checkpoint's profile
    for split in ("val", "test"):
        n = len((dataset_dir / "splits" / f"{split}.txt").read_text().split())
        part = df[df["split"] == split]
        assert (part["patches"] == n).all()
        labelled = sum(fake_inputs["counts"]["class_pixels_by_split"][split].values())
        assert (part["pixels"] == labelled).all() and 0 < labelled <= n * PATCH * PATCH
    assert set(df.loc[df["model"] == ckpt.name, "profile"]) == {"unknown"}  # not in run.json
    assert set(df.loc[df["model"] == "random_init", "profile"]) == {"none"}

    out = write_evaluations(outcomes[0], tmp_path / "results" / "evaluations.csv")
    back = pd.read_csv(out)
    assert list(back.columns) == list(EVALUATION_COLUMNS) and len(back) == 12


def test_class_mean_spectra_average_each_class_s_pixels(dataset_dir):
    from spectralearth.downstream.datasets.synth_landcover import class_mean_spectra

    means, wavelengths = class_mean_spectra(dataset_dir)
    classes = json.loads((dataset_dir / "classes.json").read_text())
    assert set(means) <= set(classes.values()) and means
    name = (dataset_dir / "splits" / "train.txt").read_text().split()[0]
    with (
        rasterio.open(dataset_dir / "enmap" / name) as img,
        rasterio.open(dataset_dir / "landcover" / name) as lab,
    ):
        assert len(wavelengths) == img.count
        data, mask = img.read().astype(float), lab.read(1)
    assert all(len(v) == len(wavelengths) for v in means.values())
    # one patch alone: its class means must equal the pixel means (single-patch call)
    single, _ = class_mean_spectra(dataset_dir, max_patches=1)
    for cls in np.unique(mask):
        if str(int(cls)) in classes:
            expected = data[:, mask == cls].mean(axis=1)
            np.testing.assert_allclose(single[classes[str(int(cls))]], expected)
