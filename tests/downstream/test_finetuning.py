"""The protocols as BaseFinetuning callbacks: what trains, how first-n counts, and the mode
of frozen BatchNorm (eval in the cpu recipe, train in the reference's)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from spectralearth.config import RecipeSettings, load_settings
from spectralearth.downstream.datasets.registry import open_split, resolve
from spectralearth.downstream.finetuning import encoder_stages, set_trainable
from spectralearth.downstream.protocols import evaluate_encoder
from spectralearth.models import create_model
from tests.helpers import REPO, make_fake


def _trained(encoder: nn.Module) -> set[str]:
    return {n for n, p in encoder.named_parameters() if p.requires_grad}


def test_first_n_counts_from_the_adapter_or_from_the_encoder_stages():
    rn = create_model("spec_resnet18", in_chans=80)
    assert encoder_stages(rn)[0] is rn.spectral_adapter and len(encoder_stages(rn)) == 5
    assert encoder_stages(rn, "encoder") == [getattr(rn.resnet, f"layer{i}") for i in (1, 2, 3, 4)]
    set_trainable(rn, "first-n", 2, "encoder")
    assert {n.split(".")[1] for n in _trained(rn)} == {"layer1", "layer2"}  # no adapter
    set_trainable(rn, "first-n", 2, "adapter")
    assert {n.split(".")[0] for n in _trained(rn)} == {"spectral_adapter", "resnet"}
    assert {n.split(".")[1] for n in _trained(rn) if n.startswith("resnet")} == {"layer1"}

    vit = create_model("spec_vit_tiny", in_chans=80)
    stages = encoder_stages(vit, "encoder")
    assert len(stages) == 12 and all(type(s).__name__ == "Block" for s in stages)
    assert len(encoder_stages(vit)) == 1 + 1 + 12 + 1  # adapter, patch embedding, blocks, norm
    set_trainable(vit, "first-n", 3, "encoder")
    blocks = {n.split("blocks.")[1].split(".")[0] for n in _trained(vit)}
    assert blocks == {"0", "1", "2"} and not any("patch_embed" in n for n in _trained(vit))
    assert not any(n.startswith("spectral_adapter") for n in _trained(vit))
    with pytest.raises(ValueError, match=r"first_n must lie in 1..12"):
        set_trainable(vit, "first-n", 13, "encoder")


def test_frozen_batchnorm_mode():
    rn = create_model("spec_resnet18", in_chans=80)
    set_trainable(rn, "adapter", 2, frozen_batchnorm="eval")
    assert rn.spectral_adapter.training and not rn.resnet.layer1.training
    set_trainable(rn, "adapter", 2, frozen_batchnorm="train")
    assert rn.spectral_adapter.training and rn.resnet.layer1[0].bn1.training
    assert _trained(rn) == {n for n, _ in rn.named_parameters() if n.startswith("spectral")}


@pytest.fixture(scope="module")
def cdl(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ft")
    lists = root / "lists" / "enmap_cdl"
    lists.mkdir(parents=True)
    for split, n, base in (("train", 4, 0), ("val", 2, 100), ("test", 2, 200)):
        (lists / f"{split}.txt").write_text(
            "".join(f"{base + i:07d}/{i:05d}.tif\n" for i in range(n))
        )
    return make_fake(root / "lists", root / "data", "--per-split", "4", "--datasets", "enmap_cdl")


@pytest.mark.parametrize("frozen_batchnorm", ["eval", "train"])
def test_the_frozen_encoder_s_batchnorm_statistics(cdl, one_torch_thread, frozen_batchnorm):
    """Reference ("train"): the frozen encoder's BatchNorm running statistics move with the
    training batches (the weights do not); cpu recipe ("eval"): nothing of it moves."""
    src = resolve(cdl / "enmap_cdl")
    train = open_split(src, "train")
    val, test = open_split(src, "val", train.stats), open_split(src, "test", train.stats)
    paper = load_settings(REPO / "params.yaml").evaluate.recipe_for("enmap_cdl", "paper")
    recipe = replace(paper, epochs=1, frozen_batchnorm=frozen_batchnorm, augment=False,
                     normalisation="dataset")  # fmt: skip
    torch.manual_seed(0)
    enc = create_model("spec_resnet18", in_chans=202)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    res = evaluate_encoder(enc, train, test, 14, recipe, "frozen", val_ds=val, keep_model=True)
    assert res["head"] == "fcn" and res["trainable_encoder_params"] == 0
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # caller's
    trained = res["model"].encoder.state_dict()
    stats = [k for k in before if k.endswith("running_mean")]
    weights = [k for k in before if k.endswith(".weight")]
    moved = [k for k in stats if not torch.allclose(before[k], trained[k])]
    assert all(torch.equal(before[k], trained[k]) for k in weights)
    if frozen_batchnorm == "train":
        assert len(moved) == len(stats)
    else:
        assert moved == []


def test_recipe_weight_decay_and_schedule_reach_the_optimiser(cdl, one_torch_thread):
    from spectralearth.downstream.tasks import SegmentationTask
    from spectralearth.models.heads import DownstreamModel

    enc = create_model("spec_resnet18", in_chans=202)
    head = nn.Conv2d(enc.num_features, 14, 1)
    net = DownstreamModel(enc, head, torch.zeros(512), torch.ones(512))
    recipe = RecipeSettings(optimizer="adamw", weight_decay=1e-4, scheduler="cosine", lr=1e-3,
                            epochs=7, min_lr=1e-5, encoder_lr_scale=1.0)  # fmt: skip
    enc.requires_grad_(False)
    enc.spectral_adapter.requires_grad_(True)
    config = SegmentationTask(net, 14, recipe).configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 1e-4
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3]
    assert sum(p.numel() for p in opt.param_groups[1]["params"]) == 56_192  # the adapter
    assert sched.T_max == 7 and sched.eta_min == 1e-5
