"""Spec-ViT: the reference key layout (``spectral_adapter.*``, ``vit_core.*``), the L/H/g
sizes, checkpoints of earlier versions (``vit.*``) and the reference's feature accessor."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectralearth.models import create_model, load_pretrained
from spectralearth.names import BACKBONE_CONFIGS, backbone_for_reference
from tests.helpers import reference_manifests

SPEC_REFERENCE = [
    "spec_resnet50",
    "spec_vit_tiny",
    "spec_vit_small",
    "spec_vit_base",
    "spec_vit_large",
    "spec_vit_huge",
    "spec_vit_giant",
]


def _meta_state(name: str, in_chans: int = 202) -> dict[str, list[int]]:
    with torch.device("meta"):
        model = create_model(name, in_chans=in_chans)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", SPEC_REFERENCE)
def test_state_dict_is_the_reference_layout(name):
    """Our keys and shapes are the reference BACKBONE_REGISTRY's, tensor for tensor."""
    manifest = reference_manifests()["backbones"][name]
    assert backbone_for_reference(name).name == name
    assert _meta_state(name) == manifest


@pytest.mark.parametrize(
    "name, embed, depth, heads",
    [
        ("spec_vit_large", 1024, 24, 16),
        ("spec_vit_huge", 1280, 32, 16),
        ("spec_vit_giant", 1536, 40, 24),
    ],
)
def test_large_huge_giant_are_the_reference_sizes(name, embed, depth, heads):
    config = BACKBONE_CONFIGS[name]
    assert config.params["embed_dim"] == embed and config.params["depth"] == depth
    assert config.params["num_heads"] == heads and config.params["patch_size"] == 4
    with torch.device("meta"):
        model = create_model(name)
    assert model.num_features == embed and len(model.vit_core.blocks) == depth
    assert model.vit_core.blocks[0].attn.num_heads == heads
    assert model.vit_core.blocks[0].mlp.fc1.out_features == 4 * embed
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    manifest = reference_manifests()["backbones"][name]
    want = sum(math.prod(s) for k, s in manifest.items() if not k.endswith(buffers))
    assert sum(p.numel() for p in model.parameters()) == want


def test_giant_is_not_timms_giant():
    import timm

    with torch.device("meta"):
        timm_giant = timm.create_model("vit_giant_patch14_224", pretrained=False)
    assert timm_giant.embed_dim == 1408 and timm_giant.blocks[0].attn.num_heads == 16
    assert BACKBONE_CONFIGS["spec_vit_giant"].params["embed_dim"] == 1536


def test_get_intermediate_layers_is_forward_features():
    torch.manual_seed(0)
    model = create_model("spec_vit_tiny", in_chans=150).eval()
    x = torch.randn(2, 150, 16, 24)
    with torch.no_grad():
        (last,) = model.get_intermediate_layers(x, n=1, reshape=True, norm=True)
        two = model.get_intermediate_layers(x, n=2)
        feats = model.forward_features(x)
    assert last.shape == (2, 192, 4, 6)
    assert torch.equal(last, feats)
    assert len(two) == 2 and two[0].shape == (2, 24, 192)  # patch tokens, no class token


def _legacy(state: dict) -> dict:
    """Keys as spectralearth wrote them before the reference layout."""
    return {k.replace("vit_core.", "vit.", 1): v for k, v in state.items()}


@pytest.mark.parametrize("name", ["spec_vit_tiny", "vit_small_p8"])
def test_checkpoint_folder_of_an_earlier_version_loads(tmp_path, caplog, name):
    torch.manual_seed(2)
    model = create_model(name, in_chans=160)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert sum(k.startswith("vit.") for k in _legacy(state)) >= 150
    folder = tmp_path / "old"
    folder.mkdir()
    save_file(_legacy(state), str(folder / "model.safetensors"))
    (folder / "run.json").write_text(json.dumps({"backbone": name, "in_chans": 160}))
    with caplog.at_level(logging.WARNING):
        loaded = load_pretrained(folder)
    assert "earlier spectralearth versions" in caplog.text and str(folder) in caplog.text
    got = loaded.state_dict()
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], v) for k, v in state.items())
    # the file itself is left as it was
    assert all(
        k.startswith(("vit.", "spectral_adapter.")) for k in load_file(folder / "model.safetensors")
    )


def test_trained_downstream_model_of_an_earlier_version_loads(tmp_path, caplog):
    """The migration runs wherever a Spec-ViT sits in a bigger model (here the encoder of a
    saved downstream model, keys ``encoder.vit.*``)."""
    from spectralearth.models.heads import SegmentationModel, load_model, make_head, save_model

    torch.manual_seed(3)
    encoder = create_model("spec_vit_tiny", in_chans=120)
    model = SegmentationModel(
        encoder, make_head(192, 4, "segmentation"), torch.zeros(192), torch.ones(192)
    )
    info = {
        "backbone": "spec_vit_tiny",
        "classes": [1, 2, 3, 4],
        "band_stats": {"mean": [0.0] * 120, "std": [1.0] * 120},
    }
    folder = save_model(model, tmp_path / "trained", info)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    old = {k.replace("encoder.vit_core.", "encoder.vit.", 1): v for k, v in state.items()}
    assert any(k.startswith("encoder.vit.") for k in old)
    save_file(old, str(weights))
    with caplog.at_level(logging.WARNING):
        loaded, _ = load_model(folder)
    assert "earlier spectralearth versions" in caplog.text
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_mixed_layouts_are_not_guessed(tmp_path):
    """A file with both ``vit.*`` and ``vit_core.*`` keys is not migrated: strict loading
    names the stray keys."""
    model = create_model("spec_vit_tiny")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["vit.extra"] = torch.zeros(1)
    folder = tmp_path / "mixed"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "run.json").write_text(json.dumps({"backbone": "spec_vit_tiny"}))
    with pytest.raises(ValueError, match="1 unexpected keys: vit.extra"):
        load_pretrained(folder)
