"""Training shards, spatial augmentations and the MoCo-v2 pretraining engine."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from spectralearth.data.augment import SpatialAugment, blur_kernel_size
from spectralearth.data.shards import ShardPatches
from spectralearth.models import create_model, load_pretrained
from spectralearth.ssl import get_method, pretrain
from spectralearth.ssl import registry as ssl_registry
from spectralearth.ssl.collapse import RepresentationCollapseWarning
from spectralearth.ssl.moco import MoCo
from spectralearth.ssl.train import FORMAT_VERSION, PretrainRun
from tests.helpers import BANDS, make_shards, tiny_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# --- shards ---------------------------------------------------------------------------


def test_shard_patches_single_view(tmp_path):
    shards_dir, stats, manifest, raw = make_shards(tmp_path)
    ds = ShardPatches(shards_dir, split="train", stats=stats)
    assert len(ds) == (manifest["split"] == "train").sum() == 10
    assert ds.n_bands == BANDS and ds.patch_size == 32
    x = ds[0]
    assert x.dtype == torch.float32 and x.shape == (BANDS, 32, 32)
    first = manifest[manifest["split"] == "train"].sort_values(["location_id", "datetime"]).index[0]
    mean = np.asarray(stats["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(stats["std"], dtype=np.float32)[:, None, None]
    np.testing.assert_allclose(x.numpy(), (raw[first] - mean) / std, rtol=1e-5, atol=1e-5)
    assert len(ShardPatches(shards_dir, split="val", stats=stats)) == 1
    assert ShardPatches(shards_dir, stats=None)[0].abs().max() > 100  # raw reflectance x 1e4


def test_two_date_pairs(tmp_path):
    shards_dir, stats, manifest, _ = make_shards(tmp_path)
    ds = ShardPatches(shards_dir, split="train", stats=stats, two_dates=True, seed=3)
    assert len(ds) == ds.n_locations == 6
    for i, loc in enumerate(ds.locations):
        r1, r2 = ds.pair_rows(i)
        a, b = ds.rows.loc[r1], ds.rows.loc[r2]
        assert a["location_id"] == b["location_id"] == loc
        x1, x2 = ds[i]
        assert x1.shape == x2.shape == (BANDS, 32, 32)
        if loc in (0, 1, 2, 3):  # revisited: two different dates
            assert ds.n_dates(i) == 2
            assert a["datetime"] != b["datetime"]
            assert not torch.equal(x1, x2)
        else:  # one date: the same patch twice
            assert r1 == r2 and torch.equal(x1, x2)
    # Seeded per item: the same draw again, whatever the access order.
    again = ShardPatches(shards_dir, split="train", stats=stats, two_dates=True, seed=3)
    assert [again.pair_rows(i) for i in reversed(range(6))][::-1] == [
        ds.pair_rows(i) for i in range(6)
    ]
    # Both orders of a pair come up over epochs.
    orders = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        r1, r2 = ds.pair_rows(0)
        orders.add(ds.rows.loc[r1, "datetime"] < ds.rows.loc[r2, "datetime"])
    assert orders == {True, False}


# --- augmentations --------------------------------------------------------------------


def _flips(x):
    return [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]


def test_augment_flips_only_move_spectra():
    torch.manual_seed(0)
    aug = SpatialAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), blur_p=0.0)
    x = torch.randn(8, BANDS, 16, 16)
    y = aug(x)
    assert y.shape == x.shape
    for xi, yi in zip(x, y, strict=True):
        assert any(torch.allclose(yi, f, atol=1e-5) for f in _flips(xi))


def test_augment_keeps_spectra_of_uniform_patches():
    # Crop + resize + flips + blur of a spatially uniform patch: every output pixel keeps
    # exactly the input spectrum (no colour / spectral jitter anywhere).
    torch.manual_seed(0)
    aug = SpatialAugment(32, blur_p=1.0)
    assert any("GaussianBlur" in type(op).__name__ for op in aug.ops)  # 3 px kernel at 32 px
    spectra = torch.randn(6, BANDS, 1, 1)
    y = aug(spectra.expand(6, BANDS, 40, 40).contiguous())
    assert y.shape == (6, BANDS, 32, 32)
    torch.testing.assert_close(y, spectra.expand_as(y), atol=1e-4, rtol=1e-4)


def test_blur_kernel_is_the_references():
    # the reference's ``size // 10 // 2 * 2 + 1``: odd, about 10% of the crop
    assert [blur_kernel_size(s) for s in (128, 96, 64, 32, 16)] == [13, 9, 7, 3, 1]
    assert not any("GaussianBlur" in type(op).__name__ for op in SpatialAugment(16).ops)


# --- pretraining ------------------------------------------------------------------------


def test_unknown_method():
    with pytest.raises(ValueError, match="moco"):
        get_method("simclr")


def test_pretrain_empty_train_split(tmp_path):
    shards_dir, stats, _, _ = make_shards(tmp_path, n_locations=2, splits={0: "val", 1: "test"})
    with pytest.raises(ValueError, match="train"):
        pretrain(tiny_settings(), shards_dir, stats, tmp_path / "out", progress=False)


def test_tiny_pretrain(tmp_path, monkeypatch):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    modules: list[MoCo] = []

    class RecordingMoCo(MoCo):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            modules.append(self)

    monkeypatch.setitem(ssl_registry.METHODS, "moco", RecordingMoCo)
    settings = tiny_settings()
    out = tmp_path / "model"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = pretrain(settings, shards_dir, stats, out, progress=False)

    # A typed, frozen record; run.json is its JSON form
    assert isinstance(run, PretrainRun)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.steps = 4
    assert (out / "model.safetensors").is_file() and (out / "run.json").is_file()
    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk == run.as_json()
    assert on_disk["format_version"] == FORMAT_VERSION == 2
    assert "bands" not in on_disk  # in_chans only (format 1 had both)
    assert run.method == "moco" and run.backbone == "spec_resnet18"
    assert run.in_chans == BANDS
    assert list(run.wavelengths) == stats["wavelengths"]
    assert run.steps == 3 and run.seed == 0 and run.profile == "test"
    assert len(run.loss_history) == 3
    assert all(math.isfinite(v) for v in run.loss_history)
    assert run.final_loss == run.loss_history[-1]
    assert run.seconds > 0 and run.world_size == 1
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporaries
    # the read access older callers use (pipeline.pretrain, tracking)
    assert run["steps"] == 3 and run.get("final_loss") == run.final_loss and {**run} == on_disk

    # Collapse monitoring: a healthy encoder, no warning
    collapse = on_disk["collapse"]
    assert collapse["collapsed"] is False and collapse["dim"] == 512
    assert collapse["threshold"] == pytest.approx(0.1 / math.sqrt(512))
    assert collapse["feature_std"] > collapse["threshold"]
    assert 1.0 < collapse["effective_rank"] <= 4  # at most the batch size
    assert not [w for w in caught if issubclass(w.category, RepresentationCollapseWarning)]

    # The saved encoder is the trained query encoder.
    (module,) = modules
    loaded = load_pretrained(out)
    saved = loaded.state_dict()
    for key, value in module.encoder.state_dict().items():
        assert torch.equal(value, saved[key]), key

    # Weights moved from their (seeded) initialisation.
    pl.seed_everything(settings.seed)
    init = dict(create_model("spec_resnet18").named_parameters())
    query = dict(module.encoder.named_parameters())
    key = dict(module.key_encoder.named_parameters())
    assert init.keys() == query.keys() == key.keys()

    def dist(a, b):
        return math.sqrt(sum(float((a[n] - b[n]).detach().pow(2).sum()) for n in a))

    moved, key_moved, gap = dist(query, init), dist(key, init), dist(key, query)
    assert moved > 0
    # EMA key encoder (momentum 0.999): different from the query, but only slightly off init.
    assert gap > 0 and key_moved > 0
    assert key_moved < 0.05 * moved
    assert all(not p.requires_grad for p in module.key_encoder.parameters())


def test_one_random_date_per_location_per_epoch(tmp_path):
    shards_dir, stats, _, _ = make_shards(tmp_path, n_locations=6, two_date_locations=(0, 1, 2))
    ds = ShardPatches(shards_dir, split="train", stats=stats, per_location=True, seed=3)
    assert len(ds) == ds.n_locations == 6  # locations 0-5 are train
    two_date = [i for i in range(len(ds)) if ds.n_dates(i) == 2]
    seen = {i: set() for i in two_date}
    for epoch in range(12):
        ds.set_epoch(epoch)
        assert [ds.date_row(i) for i in range(len(ds))] == [ds.date_row(i) for i in range(len(ds))]
        for i in two_date:
            seen[i].add(ds.date_row(i))
        assert ds[0].shape == (BANDS, 32, 32)
    assert all(len(rows) == 2 for rows in seen.values()), "every date of a place gets drawn"


def test_reference_band_statistics_load_for_normalisation():
    from spectralearth.data.shards import load_reference_stats
    from tests.helpers import shared

    ref = load_reference_stats(shared("spectralearth_reference"))
    assert len(ref["mean"]) == len(ref["std"]) == 202
    assert 0 < min(ref["std"]) and 0 < np.mean(ref["mean"]) < 10000
