"""Dense heads: the FCN head on the dilated Spec-ResNet and the upsampling head on ViT tokens."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spectralearth.config import EvaluateSettings
from spectralearth.downstream.datasets.registry import open_split, resolve
from spectralearth.downstream.protocols import evaluate_encoder
from spectralearth.models import create_model
from spectralearth.models.heads import (
    FCNHead,
    UpConvHead,
    load_model,
    make_head,
    resolve_head,
    save_model,
)
from spectralearth.models.resnet import dilate
from tests.helpers import TinyEncoder, make_fake

SETTINGS = EvaluateSettings(task="x", protocol="frozen", epochs=2, batch_size=4, lr=0.01, seed=0)


@pytest.mark.parametrize("name", ["spec_resnet18", "spec_resnet50"])
def test_dilated_spec_resnet_keeps_weights_and_reaches_output_stride_1(name):
    torch.manual_seed(0)
    plain = create_model(name, in_chans=150).eval()
    dense = create_model(name, in_chans=150, dilated=True).eval()
    # same parameters and buffers under the same names: a stride-16 checkpoint loads as is
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in dense.state_dict().items()
    }
    dense.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 150, 24, 20)
    with torch.no_grad():
        assert plain.forward_features(x).shape[-2:] == (2, 2)  # 24/16, 20/16 rounded up
        assert dense.forward_features(x).shape == (1, plain.num_features, 24, 20)
    assert dense.dilated and dense.output_stride == 1 and not plain.dilated
    # every stride gone, dilation 2**(stage-1) on the 3x3 convolutions (reference rule)
    for i in range(1, 5):
        for block in getattr(dense.resnet, f"layer{i}"):
            three = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
            assert all(m.stride == (1, 1) for m in three)
            assert {m.dilation for m in three if m.kernel_size == (3, 3)} == {(2 ** (i - 1),) * 2}
    # dilating in place after building gives the same model
    again = dilate(create_model(name, in_chans=150).eval())
    again.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.allclose(again.forward_features(x), dense.forward_features(x))


def test_only_spec_resnets_dilate():
    with pytest.raises(TypeError, match="only Spec-ResNets"):
        dilate(create_model("spec_vit_tiny", in_chans=80))


def test_fcn_head_shape_and_width():
    head = make_head(2048, 14, "segmentation", "fcn")
    assert isinstance(head, FCNHead) and head.out_channels == 14
    assert head[0].out_channels == 256 and head[0].kernel_size == (3, 3)  # C/8, as FCN
    assert head(torch.randn(2, 2048, 8, 8)).shape == (2, 14, 8, 8)


@pytest.mark.parametrize("patch, widths", [(4, [128, 9]), (8, [128, 64, 9]), (2, [9])])
def test_upconv_head_upsamples_tokens_back_to_pixels(patch, widths):
    head = make_head(384, 9, "segmentation", "upconv", patch)
    assert isinstance(head, UpConvHead)
    convs = [m for m in head if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == widths
    assert head(torch.randn(2, 384, 5, 6)).shape == (2, 9, 5 * patch, 6 * patch)
    with pytest.raises(ValueError, match="power-of-2"):
        make_head(384, 9, "segmentation", "upconv", 6)


def test_paper_head_by_backbone_and_task():
    resnet, vit = (
        create_model("spec_resnet18", in_chans=80),
        create_model("spec_vit_tiny", in_chans=80),
    )
    assert resolve_head("paper", resnet, "segmentation") == "fcn"
    assert resolve_head("paper", vit, "segmentation") == "upconv"
    assert resolve_head("paper", resnet, "multilabel") == "linear"  # CORINE: linear on pooled
    assert resolve_head("paper", TinyEncoder(), "segmentation") == "linear"
    with pytest.raises(ValueError, match="dilated Spec-ResNet"):
        resolve_head("fcn", vit, "segmentation")
    with pytest.raises(ValueError, match="ViT patch tokens"):
        resolve_head("upconv", resnet, "segmentation")
    with pytest.raises(ValueError, match="unknown head"):
        resolve_head("unet", resnet, "segmentation")


@pytest.fixture(scope="module")
def cdl(tmp_path_factory) -> Path:
    """A fake enmap_cdl tree: 202 bands, 16 px patches, 6 train / 2 val / 2 test."""
    root = tmp_path_factory.mktemp("dense")
    lists = root / "lists" / "enmap_cdl"
    lists.mkdir(parents=True)
    for split, n, base in (("train", 6, 0), ("val", 2, 100), ("test", 2, 200)):
        names = [f"{base + i:07d}/{i:05d}.tif" for i in range(n)]
        (lists / f"{split}.txt").write_text("\n".join(names) + "\n")
    args = ["--per-split", "6", "--size", "16", "--datasets", "enmap_cdl"]
    return make_fake(root / "lists", root / "data", *args) / "enmap_cdl"


@pytest.mark.parametrize(
    "backbone, head, protocol",
    [
        ("spec_resnet18", "fcn", "frozen"),
        ("spec_resnet18", "paper", "adapter"),
        ("spec_vit_tiny", "upconv", "frozen"),
    ],
)
def test_dense_head_trains_saves_and_maps_at_pixel_resolution(
    cdl, tmp_path, one_torch_thread, backbone, head, protocol
):
    src = resolve(cdl)
    train = open_split(src, "train")
    val, test = open_split(src, "val", train.stats), open_split(src, "test", train.stats)
    torch.manual_seed(0)
    enc = create_model(backbone, in_chans=train.bands)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    res = evaluate_encoder(
        enc, train, test, 14, SETTINGS, protocol, val_ds=val, head=head, keep_model=True
    )
    kind = "fcn" if backbone.startswith("spec_resnet") else "upconv"
    assert res["head"] == kind
    # the caller's encoder is untouched: not dilated, same weights
    assert not getattr(enc, "dilated", False)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    # dense features: pixel resolution for the dilated ResNet, the token grid for the ViT
    assert res["feature_size"] == ([16, 16] if kind == "fcn" else [4, 4])
    assert len(res["train_loss"]) == 2 and all(l == l for l in res["train_loss"])  # noqa: E741
    assert 0.0 <= res["overall_accuracy"] <= 1.0 and 0.0 <= res["val"]["macro_iou"] <= 1.0
    if protocol == "frozen":
        assert "trainable_encoder_params" in res and res["trainable_encoder_params"] == 0
    model = res.pop("model")
    info = {"backbone": backbone, "classes": list(range(14)), "band_stats": train.stats}
    folder = save_model(model, tmp_path / "m", info)
    saved = json.loads((folder / "head.json").read_text())
    assert saved["head"] == kind and saved["dilated"] == (kind == "fcn")
    loaded, _ = load_model(folder)
    x = torch.stack([test[i][0] for i in range(2)])
    model.eval()
    with torch.no_grad():
        out = loaded(x)
        assert out.shape == (2, 14, 16, 16)
        assert torch.allclose(out, model(x), atol=1e-5)


def test_frozen_dense_head_learns_what_the_stride_16_probe_cannot(cdl, one_torch_thread):
    """On 16 px patches a stride-16 encoder has one feature vector per patch, so the linear
    probe cannot tell pixels apart; the FCN head on the dilated encoder sees every pixel."""
    src = resolve(cdl)
    train = open_split(src, "train")
    scores = {}
    for head in ("linear", "fcn"):
        torch.manual_seed(0)
        enc = create_model("spec_resnet18", in_chans=train.bands)
        res = evaluate_encoder(enc, train, train, 14, replace(SETTINGS, epochs=6), head=head)
        scores[head] = res["overall_accuracy"]
    # 14 kept classes drawn per pixel: chance ~0.07 (measured: linear 0.08, fcn 1.00)
    assert scores["linear"] < 0.3 and scores["fcn"] > 0.6, scores


def test_cli_evaluate_with_the_paper_head(cdl, tmp_path, one_torch_thread):
    """`--head paper` on a Spec-ResNet: the FCN head, in the results' head column, beside
    (not over) the linear probe's CSV, and a saved model that `predict` can load."""
    import pandas as pd

    from spectralearth.cli import main
    from tests.helpers import write_params

    params = write_params(tmp_path / "p")
    common = ["--params", str(params), "evaluate", "--dataset", str(cdl), "--model", "random"]
    assert main([*common, "--backbone", "spec_resnet18", "--head", "paper", "--epochs", "1"]) == 0
    results = tmp_path / "p" / "data" / "results"
    where = ("random_init", "enmap_cdl", "cpu", "frozen")
    df = pd.read_csv(results.joinpath("evaluations", *where, "paper", "lf1.csv"))
    assert set(df["head"]) == {"fcn"} and set(df["protocol"]) == {"frozen"}
    head = json.loads(results.joinpath("heads", *where, "paper", "lf1", "head.json").read_text())
    assert head["head"] == "fcn" and head["dilated"] is True
    assert not results.joinpath("evaluations", *where, "linear").exists()


@pytest.mark.parametrize("key, value", [("head", "unet"), ("protocol", "linear-probe")])
def test_a_typo_in_params_fails_at_load_naming_the_key(tmp_path, key, value):
    from spectralearth.config import load_settings
    from tests.helpers import write_params

    params = write_params(tmp_path, evaluate={key: value})
    with pytest.raises(ValueError, match=rf"\[evaluate\]: {key} '{value}' is not one of"):
        load_settings(params)


# --- pooled tasks, the regression head, the reference's token layout -------------------------


def _vit_core(encoder):
    from timm.models.vision_transformer import VisionTransformer

    return next(m for m in encoder.children() if isinstance(m, VisionTransformer))


def test_vit_tokens_are_the_reference_s_intermediate_layers_with_norm():
    """The ConvHead reads ``get_intermediate_layers(x, norm=True)[0]`` in the reference: the
    last block's tokens after the final norm, without the class token."""
    torch.manual_seed(0)
    vit = create_model("spec_vit_tiny", in_chans=80).eval()
    x = torch.randn(2, 80, 16, 16)
    with torch.no_grad():
        core = _vit_core(vit)
        ref = core.get_intermediate_layers(vit.spectral_adapter(x), n=1, norm=True, reshape=True)
        assert torch.allclose(vit.forward_features(x), ref[0], atol=1e-6)


def test_pooled_tasks_read_the_vit_class_token_and_the_resnet_average():
    from spectralearth.models.heads import DownstreamModel, pooling_for

    torch.manual_seed(0)
    vit = create_model("spec_vit_tiny", in_chans=80).eval()
    rn = create_model("spec_resnet18", in_chans=80).eval()
    assert pooling_for(vit) == "token" and pooling_for(rn) == "mean"
    x = torch.randn(2, 80, 16, 16)
    head = torch.nn.Linear(192, 19)
    model = DownstreamModel(vit, head, torch.zeros(192), torch.ones(192), "multilabel", "token")
    with torch.no_grad():
        core = _vit_core(vit)
        cls = core.forward_features(vit.spectral_adapter(x))[:, 0]  # normed class token
        assert torch.allclose(model.features(x), cls, atol=1e-6)
        assert torch.allclose(model(x), head(cls), atol=1e-5)
        mean = DownstreamModel(rn, torch.nn.Linear(512, 19), torch.zeros(512), torch.ones(512),
                               "multilabel")  # fmt: skip
        assert torch.allclose(mean(x), mean.head(rn(x)), atol=1e-5)  # rn(x): timm's avg pool


def test_the_regression_head_and_which_head_a_task_takes():
    from spectralearth.models.heads import MLPHead

    head = make_head(512, 4, "regression", "mlp")
    assert isinstance(head, MLPHead) and head.out_features == 4
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["BatchNorm1d", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout",
                     "Linear"]  # fmt: skip
    assert [m.out_features for m in head if isinstance(m, torch.nn.Linear)] == [2048, 1024, 4]
    assert head[3].p == 0.2 and head.eval()(torch.randn(3, 512)).shape == (3, 4)
    rn = create_model("spec_resnet18", in_chans=80)
    assert resolve_head("paper", rn, "regression") == "mlp"
    assert resolve_head("linear", rn, "regression") == "linear"
    assert resolve_head("mlp", rn, "multilabel") == "linear"  # multi-label: always linear
    with pytest.raises(ValueError, match="regression takes linear or mlp"):
        resolve_head("fcn", rn, "regression")
    with pytest.raises(ValueError, match="'mlp' is the regression head"):
        resolve_head("mlp", rn, "segmentation")


def test_a_saved_vit_loads_whatever_its_timm_core_is_called(tmp_path):
    """Folders saved with the timm core under ``vit.`` (before the reference key layout) and
    under ``vit_core.`` (the reference's) both load into today's encoder."""
    from safetensors.torch import load_file, save_file

    from spectralearth.models.heads import DownstreamModel

    torch.manual_seed(0)
    vit = create_model("spec_vit_tiny", in_chans=80).eval()
    model = DownstreamModel(vit, make_head(192, 3, "segmentation", "upconv", 4), torch.zeros(192),
                            torch.ones(192))  # fmt: skip
    info = {"backbone": "spec_vit_tiny", "classes": ["a", "b", "c"],
            "band_stats": {"mean": [0.0] * 80, "std": [1.0] * 80}}  # fmt: skip
    folder = save_model(model, tmp_path / "m", info)
    x = torch.randn(1, 80, 16, 16)
    with torch.no_grad():
        want = model.eval()(x)
    state = load_file(str(folder / "model.safetensors"))
    current = next(
        p for p in ("encoder.vit_core.", "encoder.vit.") if any(k.startswith(p) for k in state)
    )
    for other in ("encoder.vit.", "encoder.vit_core."):
        renamed = {
            (other + k[len(current) :] if k.startswith(current) else k): v for k, v in state.items()
        }
        save_file(renamed, str(folder / "model.safetensors"))
        loaded, _ = load_model(folder)
        with torch.no_grad():
            assert torch.allclose(loaded(x), want, atol=1e-6)
