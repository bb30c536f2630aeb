"""Importing the SpectralEarth reference's weights (issue #16): its released-weights form (a
plain backbone state dict) and its MoCo / DINO / MAE Lightning checkpoints, both ways."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from spectralearth.bands import view_wavelengths
from spectralearth.layout import CheckpointLayout
from spectralearth.models import create_model, load_pretrained
from spectralearth.models.weights import (
    WeightsError,
    encoder_from,
    import_weights,
    read_weights,
)
from spectralearth.names import backbone_for_reference
from tests.helpers import (
    REFERENCE_CHECKPOINTS,
    fill_manifest,
    make_shards,
    manifest_module,
    reference_manifests,
    shared,
    tiny_settings,
)

REFERENCE_BACKBONES = [
    "spec_resnet50",
    "spec_vit_tiny",
    "spec_vit_small",
    "spec_vit_base",
    "spec_vit_large",
    "spec_vit_huge",
    "spec_vit_giant",
    "resnet50",
    "vit_small",
    "vit_tiny",
]
# (manifest entry, part, the encoder's prefix in the module's state_dict)
LIGHTNING_PARTS = [
    ("moco/spec_resnet50", None, "backbone."),
    ("moco/spec_resnet50", "momentum", "backbone_momentum."),
    ("moco/spec_vit_small", None, "backbone."),
    ("moco/spec_vit_small", "momentum", "backbone_momentum."),
    ("dino/spec_resnet50", None, "teacher_backbone."),
    ("dino/spec_resnet50", "student", "student_backbone."),
    ("dino/spec_vit_small", None, "teacher_backbone."),
    ("dino/spec_vit_small", "student", "student_backbone."),
    ("mae/spec_vit_small", None, "encoder.vit."),
    ("mae/spec_vit_base", None, "encoder.vit."),
]
DEFAULT_PART = {"moco": "query", "dino": "teacher", "mae": "encoder"}


def _reference_file(name: str):
    return shared(*REFERENCE_CHECKPOINTS, name)


def probe_input() -> torch.Tensor:
    """checkpoints/README.md: x[0, c, h, w] = sin(0.05 c + 0.11 h) cos(0.07 w + 0.013 c),
    computed in float64, cast to float32."""
    c = np.arange(202, dtype=np.float64)[:, None, None]
    h = np.arange(128, dtype=np.float64)[None, :, None]
    w = np.arange(128, dtype=np.float64)[None, None, :]
    x = np.sin(0.05 * c + 0.11 * h) * np.cos(0.07 * w + 0.013 * c)
    return torch.from_numpy(x.astype(np.float32))[None]


def lightning_checkpoint(state: dict) -> dict:
    """What a Lightning ``.ckpt`` holds around the module's state_dict."""
    return {
        "epoch": 199,
        "global_step": 12345,
        "pytorch-lightning_version": "2.1.3",
        "state_dict": state,
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
    }


# --- the acceptance file: made with the reference's own classes --------------------------


def test_reference_spec_vit_imports_and_reproduces_its_features(tmp_path):
    source = _reference_file("ref_spec_vit_tiny_p4.pth")
    expected = np.load(_reference_file("ref_spec_vit_tiny_p4_expected.npz"))["features"]
    stats_dir = shared("spectralearth_reference")
    out = tmp_path / "models" / "ref-tiny"

    result = import_weights(source, "spec_vit_tiny", out, band_stats=stats_dir)

    assert result.path == out and result.tensors == 171 and result.dropped_keys == ()
    layout = CheckpointLayout(out)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "run.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left
    run = json.loads(layout.run.read_text())
    assert run["format_version"] == 2 and run["method"] == "unknown"
    assert run["backbone"] == "spec_vit_tiny" and run["in_chans"] == 202
    assert run["wavelengths"] == pytest.approx(view_wavelengths().tolist())
    mu = np.load(stats_dir / "mu.npy")
    assert run["band_stats"]["mean"] == pytest.approx(mu.tolist())
    assert "mu" in run["band_stats"]["source"] and "sigma" in run["band_stats"]["source"]
    assert run["source"] == {
        "kind": "imported",
        "file": str(source.resolve()),
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "format": "state_dict",
        "part": None,
        "dropped_keys": [],
        "migrated_keys": 0,
    }
    assert result.run == run
    assert "spec_vit_tiny" in result.summary() and result.metadata()["tensors"] == 171

    model = load_pretrained(out)
    x = probe_input()
    with torch.no_grad():
        features = model.forward_features(x).numpy()
        (via_reference_api,) = model.get_intermediate_layers(x, n=1, reshape=True, norm=True)
    assert features.shape == expected.shape == (1, 192, 32, 32)
    assert np.abs(features - expected).max() < 1e-4
    assert torch.equal(via_reference_api, torch.from_numpy(features))


def test_load_pretrained_reads_a_reference_file_without_writing(tmp_path, monkeypatch):
    source = _reference_file("ref_spec_vit_tiny_p4.pth")
    expected = np.load(_reference_file("ref_spec_vit_tiny_p4_expected.npz"))["features"]
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in source.parent.iterdir())
    model = load_pretrained(source, backbone="spec_vit_tiny")
    assert not model.training and model.model_name == "spec_vit_tiny"
    with torch.no_grad():
        assert np.abs(model.forward_features(probe_input()).numpy() - expected).max() < 1e-4
    assert list(tmp_path.iterdir()) == []
    assert sorted(p.name for p in source.parent.iterdir()) == before
    with pytest.raises(ValueError, match="ref_spec_vit_tiny_p4.pth.*backbone="):
        load_pretrained(source)


# --- every layout in the manifests, filled with random tensors ---------------------------


def _assert_equal_weights(model, source: dict, source_key) -> None:
    state = model.state_dict()
    for key, value in state.items():
        want = source[source_key(key)]
        assert value.shape == want.shape and torch.equal(value, want.to(value.dtype)), key


@pytest.mark.parametrize("reference", REFERENCE_BACKBONES)
def test_every_reference_backbone_maps_strictly(reference):
    entry = reference_manifests()["backbones"][reference]
    source = fill_manifest(entry, seed=len(reference))
    backbone = backbone_for_reference(reference).name
    model, fmt, method, part, dropped, migrated = encoder_from(source, backbone, where=reference)
    assert (fmt, method, part, dropped, migrated) == ("state_dict", "unknown", None, (), 0)
    assert len(model.state_dict()) == len(entry)
    if reference.startswith("vit_"):  # plain timm ViT: its keys sit under vit_core here
        _assert_equal_weights(model, source, lambda k: k.removeprefix("vit_core."))
        assert model.in_chans == 202
    else:
        _assert_equal_weights(model, source, lambda k: k)
    if reference == "resnet50":  # the reference's ModifiedResNet50 default: 3 bands
        assert model.in_chans == 3


def mae_owner(key: str) -> str:
    """Which tensor of the reference MAE module a key names (the test's own reading of its
    layout, README.md): the wrapped Spec-ViT under ``encoder.vit.spec_vit.`` owns every
    weight; the wrapper repeats them at ``encoder.vit.vit_core.`` and ``encoder.vit.{blocks,
    cls_token, pos_embed, norm, patch_embed}``; its patch embedding is the original one
    (``.proj`` an alias) and holds the adapter."""
    root, owner = "encoder.vit.", "encoder.vit.spec_vit."
    if key.startswith(root + "vit_core."):
        key = owner + key[len(root) :]
    elif key.startswith(root) and not key.startswith(owner):
        key = owner + "vit_core." + key[len(root) :]
    key = key.replace(".patch_embed.proj.", ".patch_embed.original_patch_embed.proj.")
    return key.replace(
        owner + "vit_core.patch_embed.spectral_adapter.", owner + "spectral_adapter."
    )


def fill_module(name: str, entry: dict) -> dict:
    """Random tensors for a Lightning module's state_dict; in the MAE module, keys that name
    one tensor get that one tensor (as torch.save writes shared storage)."""
    source = fill_manifest(entry, seed=len(name))
    if name.startswith("mae/"):
        source = {k: source[mae_owner(k)] for k in entry}
    return source


def _project_key_in_mae(key: str) -> str:
    """Where a project key's tensor sits in the reference MAE module (its owner)."""
    owner = "encoder.vit.spec_vit."
    if key.startswith("vit_core.patch_embed."):
        key = key.replace("vit_core.patch_embed.", "vit_core.patch_embed.original_patch_embed.")
    return owner + key


@pytest.mark.parametrize("name, part, prefix", LIGHTNING_PARTS)
def test_every_reference_lightning_module_maps_strictly(name, part, prefix):
    entry = reference_manifests()["lightning_modules"][name]
    method, backbone = name.split("/")
    source = fill_module(name, entry)
    model, fmt, got_method, got_part, dropped, _ = encoder_from(
        lightning_checkpoint(source), backbone, part=part, where=name
    )
    assert (fmt, got_method, got_part) == (
        f"lightning:{method}",
        method,
        part or DEFAULT_PART[method],
    )
    if method == "mae":
        _assert_equal_weights(model, source, _project_key_in_mae)
        assert any(k.endswith("vit_core.head.weight") for k in dropped)  # 1000-class head
        assert "encoder.mask_token" in dropped and "decoder.mask_token" in dropped
    else:
        _assert_equal_weights(model, source, lambda k: prefix + k)
    # everything the encoder did not take is listed as dropped, and nothing else
    assert len(model.state_dict()) + len(dropped) == len(entry)
    assert set(dropped) <= set(entry)


def test_two_parts_of_one_checkpoint_are_different_encoders():
    entry = reference_manifests()["lightning_modules"]["dino/spec_vit_small"]
    ckpt = lightning_checkpoint(fill_module("dino", entry))
    teacher = encoder_from(ckpt, "spec_vit_small")[0].state_dict()
    student = encoder_from(ckpt, "spec_vit_small", part="student")[0].state_dict()
    key = "vit_core.blocks.0.attn.qkv.weight"
    assert not torch.equal(teacher[key], student[key])
    assert torch.equal(teacher[key], ckpt["state_dict"]["teacher_backbone." + key])


def test_mae_aliases_that_disagree_are_refused():
    entry = reference_manifests()["lightning_modules"]["mae/spec_vit_small"]
    ckpt = lightning_checkpoint(fill_manifest(entry))  # every alias its own random tensor
    with pytest.raises(WeightsError, match="mae-file: encoder.vit.* and encoder.vit.*same weight"):
        encoder_from(ckpt, "spec_vit_small", where="mae-file")


def test_spec_vit_saved_from_inside_the_mae_module_imports(tmp_path):
    """The Spec-ViT of a MAE run saved on its own (``spec_vit.state_dict()``: the adapter
    inside the patch embedding, a classifier head): a plain state dict of method mae."""
    entry = reference_manifests()["lightning_modules"]["mae/spec_vit_small"]
    module = fill_module("mae/spec_vit_small", entry)
    owner = "encoder.vit.spec_vit."
    plain = {k[len(owner) :]: v for k, v in module.items() if k.startswith(owner)}
    assert len(plain) == 196
    model, fmt, method, _, dropped, _ = encoder_from(plain, "spec_vit_small", where="vit.pth")
    assert (fmt, method) == ("state_dict", "mae")
    # the classifier, and one of each pair of aliases (patch projection, adapter)
    assert {"vit_core.head.weight", "vit_core.head.bias"} <= set(dropped)
    assert len(dropped) == 2 + 2 + 21 and set(dropped) <= set(plain)
    _assert_equal_weights(model, module, _project_key_in_mae)


# --- both ways: what the project writes, the reference's classes load strictly ----------


def test_imported_checkpoint_loads_back_into_the_reference_layout(tmp_path):
    source = _reference_file("ref_spec_vit_tiny_p4.pth")
    out = import_weights(source, "spec_vit_tiny", tmp_path / "ck").path
    reference = manifest_module(reference_manifests()["backbones"]["spec_vit_tiny"])
    from safetensors.torch import load_file

    reference.load_state_dict(load_file(CheckpointLayout(out).weights), strict=True)
    original = torch.load(source, weights_only=True)
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in original.items())


@pytest.mark.slow
@pytest.mark.parametrize("method, backbone", [("mae", "spec_vit_small"), ("moco", "spec_resnet50")])
def test_pretrained_checkpoints_load_strictly_into_the_reference_layout(
    tmp_path, one_torch_thread, method, backbone
):
    """A checkpoint written by ``spectralearth pretrain`` (one step) has exactly the keys
    and shapes of the reference's ``BACKBONE_REGISTRY[backbone]`` state dict."""
    from safetensors.torch import load_file

    from spectralearth.ssl.train import pretrain

    shards, stats, _, _ = make_shards(tmp_path)
    settings = tiny_settings(method=method, backbone=backbone, steps=1, batch_size=2, crop_size=16)
    out = tmp_path / "model"
    pretrain(settings, shards, stats, out, progress=False)
    state = load_file(CheckpointLayout(out).weights)
    reference = manifest_module(reference_manifests()["backbones"][backbone])
    reference.load_state_dict(state, strict=True)  # raises on any missing/extra/reshaped key
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in state.items())
    # and back: the reference-layout tensors import as this project's encoder
    model, *_ = encoder_from(reference.state_dict(), backbone, where="reference")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


# --- a real Lightning checkpoint (written by Lightning's own checkpointing) -------------


def test_a_lightning_checkpoint_written_by_lightning_imports(tmp_path, one_torch_thread):
    """A module with the reference MoCoModule's attribute names, trained one step and saved
    by ``Trainer.save_checkpoint`` (optimizer, scheduler, loops, callbacks): read with
    weights_only=True, the query encoder is taken."""
    import copy

    import lightning.pytorch as pl
    from lightly.models.modules import MoCoProjectionHead

    class MoCoLike(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = create_model("spec_vit_tiny", in_chans=202)
            self.backbone_momentum = copy.deepcopy(self.backbone).requires_grad_(False)
            self.projection_head = MoCoProjectionHead(192, 64, 16, batch_norm=True)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)

        def training_step(self, batch, _):
            return self.projection_head(self.backbone(batch[0])).pow(2).mean()

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)
            return [opt], [torch.optim.lr_scheduler.MultiStepLR(opt, [120, 160])]

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(4, 202, 16, 16))
    module = MoCoLike()
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    ckpt = tmp_path / "epoch=0-step=1.ckpt"
    trainer.save_checkpoint(ckpt)

    result = import_weights(ckpt, "spec_vit_tiny", tmp_path / "imported")
    assert (result.format, result.method, result.part) == ("lightning:moco", "moco", "query")
    assert any(k.startswith("backbone_momentum.") for k in result.dropped_keys)
    assert any(k.startswith("projection_head.") for k in result.dropped_keys)
    run = json.loads(result.layout.run.read_text())
    assert run["method"] == "moco" and run["source"]["format"] == "lightning:moco"
    loaded = load_pretrained(result.path).state_dict()
    for key, value in module.backbone.state_dict().items():
        assert torch.equal(loaded[key], value), key
    key = "vit_core.blocks.0.attn.qkv.weight"
    momentum = read_weights(ckpt, "spec_vit_tiny", part="momentum").model.state_dict()
    assert torch.equal(momentum[key], module.backbone_momentum.state_dict()[key])
    assert not torch.equal(momentum[key], loaded[key])  # the query encoder moved one step


# --- bad input: a clear error naming the file, nothing written --------------------------


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    source = tmp_path / "rn18.pth"
    torch.save(create_model("spec_resnet18").state_dict(), source)
    out = tmp_path / "out"
    with pytest.raises(WeightsError) as e:
        import_weights(source, "spec_vit_tiny", out)
    text = str(e.value)
    assert str(source) in text and "does not fit spec_vit_tiny" in text
    assert "missing keys: vit_core." in text and "Its keys fit spec_resnet18" in text
    assert not out.exists()


def test_a_state_dict_with_missing_keys_is_refused(tmp_path):
    state = torch.load(_reference_file("ref_spec_vit_tiny_p4.pth"), weights_only=True)
    del state["vit_core.blocks.11.mlp.fc2.weight"], state["spectral_adapter.7.running_var"]
    source = tmp_path / "partial.pth"
    torch.save(state, source)
    out = tmp_path / "models" / "partial"
    with pytest.raises(
        WeightsError,
        match=r"partial.pth does not fit spec_vit_tiny .*2 missing keys: "
        r"spectral_adapter.7.running_var, vit_core.blocks.11.mlp.fc2.weight",
    ):
        import_weights(source, "spec_vit_tiny", out)
    assert not out.exists() and not out.parent.exists()


def test_an_unknown_lightning_module_layout_is_refused(tmp_path):
    source = tmp_path / "simclr.ckpt"
    state = {"model.encoder.weight": torch.zeros(2, 2), "model.head.weight": torch.zeros(2)}
    torch.save(lightning_checkpoint(state), source)
    out = tmp_path / "out"
    with pytest.raises(WeightsError, match=r"simclr.ckpt: a Lightning checkpoint of an unknown "
                       r"module layout \(its state_dict has model\.\).*moco: backbone\."):  # fmt: skip
        import_weights(source, "spec_vit_tiny", out)
    assert not out.exists()


def test_parts_are_checked(tmp_path):
    source = tmp_path / "moco.ckpt"
    entry = reference_manifests()["lightning_modules"]["moco/spec_resnet50"]
    torch.save(lightning_checkpoint({k: torch.zeros(1) for k in entry}), source)
    with pytest.raises(WeightsError, match=r"moco.ckpt: a moco checkpoint has no part 'teacher'"):
        import_weights(source, "spec_resnet50", tmp_path / "out", part="teacher")
    with pytest.raises(WeightsError, match="ref_spec_vit_tiny_p4.pth: part='student' applies"):
        read_weights(_reference_file("ref_spec_vit_tiny_p4.pth"), "spec_vit_tiny", part="student")
    assert not (tmp_path / "out").exists()


def test_not_a_state_dict(tmp_path):
    source = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], source)
    with pytest.raises(WeightsError, match="list.pth: holds a list"):
        read_weights(source, "spec_vit_tiny")
    source = tmp_path / "mixed.pth"
    torch.save({"a": torch.zeros(1), "epoch": 3}, source)
    with pytest.raises(WeightsError, match="mixed.pth: neither a state dict"):
        read_weights(source, "spec_vit_tiny")


def test_non_finite_weights_are_refused(tmp_path):
    state = torch.load(_reference_file("ref_spec_vit_tiny_p4.pth"), weights_only=True)
    state["vit_core.norm.weight"][3] = float("nan")
    source = tmp_path / "nan.pth"
    torch.save(state, source)
    with pytest.raises(
        WeightsError, match="nan.pth: 1 tensors hold NaN or inf: vit_core.norm.weight"
    ):
        import_weights(source, "spec_vit_tiny", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_band_statistics_write_nothing(tmp_path):
    stats = tmp_path / "band_stats.json"
    stats.write_text(json.dumps({"mean": [0.0] * 200, "std": [1.0] * 200}))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="band_stats.json: 200 means and 200 stds .* 202 bands"):
        import_weights(
            _reference_file("ref_spec_vit_tiny_p4.pth"), "spec_vit_tiny", out, band_stats=stats
        )
    assert not out.exists()


def test_an_existing_checkpoint_folder_is_kept_unless_overwrite(tmp_path):
    source = _reference_file("ref_spec_vit_tiny_p4.pth")
    out = tmp_path / "ck"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="ck: exists and is not empty"):
        import_weights(source, "spec_vit_tiny", out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    import_weights(source, "spec_vit_tiny", out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "run.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # the old folder is gone, no staging
    (tmp_path / "empty").mkdir()
    assert import_weights(source, "spec_vit_tiny", tmp_path / "empty").tensors == 171
