"""Encoders: spectral adapter, Spec-ResNet, Spec-ViT, timm baselines, registry, loading."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from spectralearth.models import (
    MIN_BANDS,
    SpectralAdapter,
    create_model,
    list_models,
    load_pretrained,
)
from spectralearth.models.adapter import spectral_length

EXPECTED_MODELS = {
    "spec_resnet18",
    "spec_resnet50",
    "spec_vit_tiny",
    "spec_vit_small",
    "spec_vit_base",
    "resnet50",
    "vit_small_p8",
    "vit_tiny_p8",
}
NUM_FEATURES = {
    "spec_resnet18": 512,
    "spec_resnet50": 2048,
    "spec_vit_tiny": 192,
    "spec_vit_small": 384,
    "spec_vit_base": 768,
    "resnet50": 2048,
    "vit_small_p8": 384,
    "vit_tiny_p8": 192,
}
# Feature-map size for a 32 x 32 input.
GRID_32 = {
    "spec_resnet18": 2,
    "spec_resnet50": 2,
    "spec_vit_tiny": 8,
    "spec_vit_small": 8,
    "spec_vit_base": 8,
    "resnet50": 1,
    "vit_small_p8": 4,
    "vit_tiny_p8": 4,
}


def test_adapter_parameter_count():
    assert sum(p.numel() for p in SpectralAdapter().parameters()) == 56_192


@pytest.mark.parametrize("bands", [150, 198, 202, 235])
def test_adapter_output_shape(bands):
    adapter = SpectralAdapter()
    out = adapter(torch.randn(2, bands, 5, 7))
    assert out.shape == (2, 128, 5, 7)


def test_adapter_minimum_bands():
    assert MIN_BANDS == 75
    assert spectral_length(75) == 1 and spectral_length(74) == 0
    adapter = SpectralAdapter().eval()
    assert adapter(torch.randn(1, 75, 2, 2)).shape == (1, 128, 2, 2)
    with pytest.raises(ValueError, match="at least 75"):
        adapter(torch.randn(1, 74, 2, 2))
    with pytest.raises(ValueError, match="at least 75"):
        create_model("spec_resnet18", in_chans=74)


def test_adapter_does_not_mix_pixels():
    adapter = SpectralAdapter().eval()
    x = torch.randn(1, 202, 4, 4)
    y = x.clone()
    y[..., 0, 0] += 1.0  # change one pixel's spectrum only
    diff = (adapter(x) - adapter(y)).abs().sum(1)[0]
    assert diff[0, 0] > 0
    diff[0, 0] = 0
    assert torch.count_nonzero(diff) == 0


def test_registry_lists_models():
    assert EXPECTED_MODELS <= set(list_models())


def test_unknown_model():
    with pytest.raises(ValueError, match="spec_resnet50"):
        create_model("no_such_model")


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_model_shapes(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert model.num_features == NUM_FEATURES[name]
    assert model.in_chans == 202
    x = torch.randn(2, 202, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model(x)
    g = GRID_32[name]
    assert feats.shape == (2, model.num_features, g, g)
    assert pooled.shape == (2, model.num_features)
    assert torch.isfinite(feats).all() and torch.isfinite(pooled).all()


@pytest.mark.parametrize("name", ["spec_resnet18", "spec_resnet50"])
def test_spec_resnet_output_stride_16(name):
    model = create_model(name, in_chans=150).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 150, 64, 48)).shape[-2:] == (4, 3)


def test_spec_resnet50_first_block():
    block = create_model("spec_resnet50").resnet.layer1[0]
    assert tuple(block.conv1.weight.shape) == (256, 128, 1, 1)
    assert tuple(block.conv2.weight.shape) == (256, 256, 3, 3) and block.conv2.stride == (2, 2)
    assert tuple(block.conv3.weight.shape) == (256, 256, 1, 1)
    assert tuple(block.downsample[0].weight.shape) == (256, 128, 1, 1)
    assert block.downsample[0].stride == (2, 2)


def test_spec_resnet18_first_block():
    block = create_model("spec_resnet18").resnet.layer1[0]
    assert tuple(block.conv1.weight.shape) == (64, 128, 3, 3) and block.conv1.stride == (2, 2)
    assert tuple(block.downsample[0].weight.shape) == (64, 128, 1, 1)


def test_spec_vit_full_size_and_other_band_counts():
    model = create_model("spec_vit_tiny", in_chans=235).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 235, 128, 128)).shape == (1, 192, 32, 32)
        assert model(torch.randn(1, 235, 24, 40)).shape == (1, 192)


def _save_run(folder, model, backbone, in_chans):
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "run.json").write_text(json.dumps({"backbone": backbone, "in_chans": in_chans}))


@pytest.mark.parametrize("name", ["spec_resnet18", "spec_vit_tiny"])
def test_load_pretrained_round_trip(tmp_path, name):
    torch.manual_seed(1)
    model = create_model(name, in_chans=198)
    with torch.no_grad():  # make BN buffers non-default too
        model.train()(torch.randn(2, 198, 16, 16))
    _save_run(tmp_path / "run", model, name, 198)
    loaded = load_pretrained(tmp_path / "run")
    assert not loaded.training
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for key, value in want.items():
        assert torch.equal(value, got[key]), key
    x = torch.randn(1, 198, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded(x))
    assert load_pretrained(tmp_path / "run" / "model.safetensors").in_chans == 198


def test_load_pretrained_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pretrained(tmp_path)


def test_load_pretrained_names_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    model = create_model("spec_resnet18", in_chans=150)
    _save_run(tmp_path / "run", model, "spec_resnet18", 150)
    weights = tmp_path / "run" / "model.safetensors"
    state = load_file(str(weights))
    dropped = sorted(state)[0]
    state.pop(dropped)
    state["head.extra.weight"] = torch.zeros(3)
    save_file(state, str(weights))
    with pytest.raises(
        ValueError, match="1 missing keys: .*1 unexpected keys: head.extra.weight"
    ) as e:
        load_pretrained(tmp_path / "run")
    assert dropped in str(e.value)


def test_load_pretrained_refuses_another_architecture(tmp_path):
    vit = create_model("spec_vit_tiny", in_chans=150)
    _save_run(tmp_path / "run", vit, "spec_resnet18", 150)  # run.json claims a ResNet
    with pytest.raises(ValueError, match="does not fit spec_resnet18 .*another architecture"):
        load_pretrained(tmp_path / "run")
