"""The task LightningModules: epoch selection, early stopping, augmentation on training
batches only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spectralearth.config import RecipeSettings
from spectralearth.downstream.augment import CropFlip
from spectralearth.downstream.datasets.registry import open_split, resolve
from spectralearth.downstream.protocols import evaluate_encoder
from tests.helpers import TinyEncoder, make_fake


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    lists = root / "lists" / "enmap_cdl"
    lists.mkdir(parents=True)
    for split, n, base in (("train", 6, 0), ("val", 3, 100), ("test", 2, 200)):
        (lists / f"{split}.txt").write_text(
            "".join(f"{base + i:07d}/{i:05d}.tif\n" for i in range(n))
        )
    make_fake(root / "lists", root / "data", "--per-split", "6", "--datasets", "enmap_cdl")
    src = resolve(Path(root / "data" / "enmap_cdl"))
    train = open_split(src, "train")
    return train, open_split(src, "val", train.stats), open_split(src, "test", train.stats)


@pytest.mark.parametrize("select, metric, best", [("val_loss", "val_loss", np.argmin),
                                                  ("metric", "val_macro_iou", np.argmax)])  # fmt: skip
def test_the_scored_epoch_is_the_recipe_s_pick(splits, one_torch_thread, select, metric, best):
    train, val, test = splits
    recipe = RecipeSettings(epochs=6, batch_size=2, lr=0.3, select=select)
    torch.manual_seed(0)
    res = evaluate_encoder(TinyEncoder(), train, test, 14, recipe, val_ds=val)
    curve = res[metric]
    assert len(curve) == 6 and res["best_epoch"] == int(best(curve)), curve
    assert res["val"]["loss" if select == "val_loss" else "macro_iou"] == curve[res["best_epoch"]]


def test_early_stopping_on_the_recipe_s_pick(splits, one_torch_thread):
    train, val, test = splits
    recipe = RecipeSettings(epochs=30, batch_size=2, lr=5.0, select="val_loss",
                            early_stopping_patience=2)  # fmt: skip
    torch.manual_seed(0)
    res = evaluate_encoder(TinyEncoder(), train, test, 14, recipe, val_ds=val)
    losses = res["val_loss"]
    assert len(res["train_loss"]) == len(losses) < 30  # stopped
    best = int(np.argmin(losses))
    assert res["best_epoch"] == best and len(losses) == best + 1 + 2  # patience 2


def test_crop_flip_keeps_shapes_labels_and_alignment():
    torch.manual_seed(0)
    quadrants = torch.randint(-1, 5, (4, 2, 2))  # blocks of 8 px: mostly unblended pixels
    masks = quadrants.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    images = masks[:, None].float().repeat(1, 3, 1, 1)  # the image is its mask
    out, out_masks = CropFlip((0.2, 1.0))(images, masks)
    assert out.shape == images.shape and out_masks.shape == masks.shape
    assert out_masks.dtype == masks.dtype and set(out_masks.unique().tolist()) <= set(range(-1, 5))
    assert not torch.equal(out_masks, masks)  # something moved
    # the same crop and flips for both (nearest for the mask, bilinear for the image): they
    # differ only on the blended block borders
    agree = out[:, 0].round().long() == out_masks.long()
    assert agree.float().mean() > 0.85, agree.float().mean()
    assert CropFlip()(torch.zeros(2, 5, 8, 8)).shape == (2, 5, 8, 8)


def test_augmentation_touches_training_batches_only(splits):
    from spectralearth.downstream.tasks import SegmentationTask
    from spectralearth.models.heads import DownstreamModel

    enc = TinyEncoder()
    net = DownstreamModel(enc, torch.nn.Conv2d(16, 14, 1), torch.zeros(16), torch.ones(16))
    task = SegmentationTask(net, 14, replace(RecipeSettings(), augment=True, crop_scale=(0.2, 0.3)))
    x, y = torch.randn(2, 202, 8, 8), torch.randint(0, 14, (2, 8, 8))

    class Trainer:
        training = False
        current_epoch = 1

    task.trainer = Trainer()  # not training: untouched
    bx, by = task.on_after_batch_transfer((x, y), 0)
    assert bx is x and by is y
    Trainer.training = True
    torch.manual_seed(0)
    bx, by = task.on_after_batch_transfer((x, y), 0)
    assert bx.shape == x.shape and not torch.equal(bx, x)
