"""Scene maps: trained models saved by the evaluation, sliding-window inference over a scene."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from spectralearth.bands import select_view
from spectralearth.config import EvaluateSettings
from spectralearth.enmap.archive import find_scenes, open_scene
from spectralearth.enmap.scene import NODATA, ProductError
from spectralearth.models import create_model
from spectralearth.models.heads import SegmentationModel, load_model, save_model
from spectralearth.predict import NODATA_CLASS, predict_scene, sliding_window_probs

SETTINGS = EvaluateSettings(task="x", protocol="frozen", epochs=2, batch_size=4, lr=0.05, seed=0)


def _cloudy_scene(archive):
    """A product of the tiny archive with both nodata borders and cloud."""
    for p in find_scenes(archive):
        s = open_scene(p)
        if s.read_mask("QL_QUALITY_CLOUD").any() and (s.read(bands=[0]) == NODATA).any():
            return p
    pytest.skip("no tiny scene with both clouds and nodata")


@pytest.fixture(scope="module")
def constant_model(tmp_path_factory):
    """A spec_resnet18 + 1x1 head whose logits favour class 1 everywhere."""
    torch.manual_seed(0)
    encoder = create_model("spec_resnet18", in_chans=202)
    head = nn.Conv2d(encoder.num_features, 3, 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    model = SegmentationModel(encoder, head, torch.zeros(512), torch.ones(512))
    folder = tmp_path_factory.mktemp("model") / "constant"
    stats = {"mean": [1000.0] * 202, "std": [500.0] * 202}
    info = {"backbone": "spec_resnet18", "classes": ["water", "forest", "crop"]}
    return save_model(model, folder, {**info, "band_stats": stats, "patch_size": 32})


def test_saved_model_round_trips(constant_model):
    model, info = load_model(constant_model / "model.safetensors")
    assert info["classes"] == ["water", "forest", "crop"] and info["in_chans"] == 202
    x = torch.randn(2, 202, 32, 32)
    out = model(x)
    assert out.shape == (2, 3, 32, 32) and (out.argmax(1) == 1).all()


def test_checkpoint_without_head_is_refused_with_a_hint(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="without a trained head"):
        load_model(tmp_path)


def test_map_has_scene_georeferencing_colours_and_masks(tiny_archive, constant_model, tmp_path):
    scene = _cloudy_scene(tiny_archive)
    out = tmp_path / "map.tif"
    info = predict_scene(constant_model, scene, out, overlap=8)
    product = open_scene(scene)
    with rasterio.open(product.image_path) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
        raw = src.read(list(select_view(product.meta.wavelengths) + 1))
    with rasterio.open(out) as m:
        assert m.crs == crs and m.transform == transform and m.shape == shape
        assert m.count == 1 and m.dtypes[0] == "uint8" and m.nodata == NODATA_CLASS
        cmap = m.colormap(1)
        assert cmap[NODATA_CLASS][3] == 0 and cmap[1][3] == 255
        assert json.loads(m.tags()["classes"])["1"] == "forest"
        classes = m.read(1)
    masked = np.any(raw == NODATA, axis=0) | product.read_mask("QL_QUALITY_CLOUD")
    assert masked.any() and (~masked).any()
    assert (classes[masked] == NODATA_CLASS).all()
    # a constant-output model gives a constant map: blending leaves no seam
    assert (classes[~masked] == 1).all()
    assert info["masked_pixels"] == int(masked.sum()) and info["tiles"] > 4


class PixelModel(nn.Module):
    """Per-pixel logits (1x1 convs): any tiling must give the same probabilities."""

    def __init__(self, bands: int = 5, k: int = 4):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(bands, 8, 1), nn.Tanh(), nn.Conv2d(8, k, 1))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize(
    "size,tile,overlap", [((75, 50), 32, 8), ((40, 97), 16, 12), ((20, 9), 32, 16)]
)
def test_blending_matches_whole_image_inference(size, tile, overlap):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, *size)).astype(np.float32)
    model = PixelModel()
    probs = sliding_window_probs(
        model, lambda r, n: image[:, r : r + n], *size, 4, tile=tile, overlap=overlap
    )
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image)[None]), 1)[0].numpy()
    np.testing.assert_allclose(probs, whole, atol=1e-5)


def test_bad_scene_is_named(archive_copy, constant_model, tmp_path):
    missing = (
        archive_copy / "ENMAP01-____L2A-DT0000000000_20240101T000000Z_001_V010400_20240102T000000Z"
    )
    with pytest.raises(ProductError, match=missing.name):
        predict_scene(constant_model, missing, tmp_path / "a.tif")
    broken = find_scenes(archive_copy)[0]
    next(broken.glob("*SPECTRAL_IMAGE*")).write_bytes(b"not a tiff")
    with pytest.raises(ProductError, match=broken.name):
        predict_scene(constant_model, broken, tmp_path / "b.tif")
    assert not (tmp_path / "b.tif").exists()


def test_cli_predict(tiny_archive, constant_model, tmp_path, capsys):
    from spectralearth.cli import main

    scene = find_scenes(tiny_archive)[0]
    out = tmp_path / "cli.tif"
    assert (
        main(["predict", "--model", str(constant_model), "--scene", str(scene), "--out", str(out)])
        == 0
    )
    assert out.exists() and scene.name[:30] in capsys.readouterr().out
    bad = tmp_path / "nothing_here"
    assert (
        main(["predict", "--model", str(constant_model), "--scene", str(bad), "--out", str(out)])
        == 1
    )
    assert "nothing_here" in capsys.readouterr().err


def test_cli_maps_writes_the_asset_maps_of_every_ok_scene(
    tiny_archive, constant_model, tmp_path, capsys
):
    """`spectralearth maps` (the DVC stage `maps`) maps the ok scenes of the catalogue to the
    paths of the Dagster asset scene_maps (stages.maps.map_scene), with params' predict model."""
    import geopandas as gpd
    import yaml

    from spectralearth.cli import main
    from spectralearth.config import load_settings
    from spectralearth.stages.ingest import catalog as catalog_stage
    from tests.helpers import tiny_params

    params = tiny_params(tmp_path / "data", predict={"model": str(constant_model)})
    params["archive_dir"] = str(tiny_archive)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    s = load_settings(tmp_path / "params.yaml")
    catalog_stage(s.layout.archive, s.layout.catalog)
    catalog = gpd.read_parquet(s.layout.catalog)
    catalog.loc[catalog.index[2:], "status"] = "rejected"  # only ok products get a map
    catalog.to_parquet(tmp_path / "catalog.parquet")
    ok = sorted(catalog.loc[catalog["status"] == "ok", "scene"])
    assert len(ok) == 2 < len(catalog)
    cmd = ["--params", str(tmp_path / "params.yaml"), "maps", "--catalog"]
    assert main([*cmd, str(tmp_path / "catalog.parquet")]) == 0
    assert f"maps: {len(ok)} scenes mapped" in capsys.readouterr().out
    maps = tmp_path / "data" / "maps"
    assert sorted(f.stem for f in maps.glob("*.tif")) == ok
    assert sorted(f.stem for f in maps.glob("*.png")) == ok
    assert all(s.layout.scene_map(name).exists() for name in ok)
    with rasterio.open(s.layout.scene_map(ok[0])) as m:
        assert json.loads(m.tags()["classes"])["1"] == "forest"
        assert set(np.unique(m.read(1))) <= {1, NODATA_CLASS}
    catalog["status"] = "rejected"  # nothing to map is an error, not an empty success
    catalog.to_parquet(tmp_path / "none.parquet")
    assert main([*cmd, str(tmp_path / "none.parquet")]) == 1


def test_evaluation_saves_the_model_it_scored(tmp_path_factory):
    """The saved model reproduces the test score the evaluation reported."""
    from spectralearth.downstream.datasets.registry import open_split, resolve
    from spectralearth.downstream.metrics import SegmentationMetrics
    from spectralearth.downstream.run import evaluate_model
    from tests.helpers import make_fake

    root = tmp_path_factory.mktemp("tree")
    splits = root / "lists" / "enmap_cdl"
    splits.mkdir(parents=True)
    for split, (base, n) in {"train": (0, 6), "val": (100, 2), "test": (200, 3)}.items():
        lines = [f"{base + i:07d}/{i:05d}.tif" for i in range(n)]
        (splits / f"{split}.txt").write_text("\n".join(lines) + "\n")
    make_fake(
        root / "lists", root / "data", "--per-split", "6", "--size", "32", "--datasets", "enmap_cdl"
    )
    saved = root / "heads" / "random-enmap_cdl-frozen"
    outcome = evaluate_model(
        "random",
        root / "data" / "enmap_cdl",
        replace(SETTINGS, epochs=2),
        "frozen",
        save_model_dir=saved,
    )
    model, info = load_model(saved)
    assert (
        info["dataset"] == "enmap_cdl" and info["protocol"] == "frozen" and info["patch_size"] == 32
    )
    test = open_split(resolve(root / "data" / "enmap_cdl"), "test", info["band_stats"])
    metrics = SegmentationMetrics(info["num_classes"])
    with torch.no_grad():
        for i in range(len(test)):
            x, y = test[i]
            metrics.update(model(x[None]), y[None])
    rows = outcome.rows
    want = rows[(rows["split"] == "test") & (rows["metric"] == "overall_accuracy")]["value"]
    assert metrics.compute()["overall_accuracy"] == pytest.approx(float(want.iloc[0]), abs=1e-6)


def test_predict_on_a_zipped_product(tiny_archive, constant_model, tmp_path):
    scene = find_scenes(tiny_archive)[1]
    zipped = shutil.make_archive(str(tmp_path / scene.name), "zip", scene.parent, scene.name)
    info = predict_scene(constant_model, zipped, tmp_path / "z.tif", tile=64, overlap=16)
    assert info["scene"] == scene.name and info["tile"] == 64


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_tiles_batched_across_strips_give_the_same_probabilities(batch_size):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(5, 70, 45)).astype(np.float32)
    model = PixelModel()
    reads = []

    def read_strip(r, n):
        reads.append((r, n))
        return image[:, r : r + n]

    probs = sliding_window_probs(model, read_strip, 70, 45, 4, tile=16, overlap=4,
                                 batch_size=batch_size)  # fmt: skip
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image)[None]), 1)[0].numpy()
    np.testing.assert_allclose(probs, whole, atol=1e-5)
    assert [r for r, _ in reads] == sorted({r for r, _ in reads})  # each strip read once


def test_device_choice():
    from spectralearth.predict import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="'cuda:1' asked for, but no CUDA device"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sliding_window_probs(PixelModel(), lambda r, n: None, 4, 4, 4, tile=4, overlap=0,
                             batch_size=0)  # fmt: skip
