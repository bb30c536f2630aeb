"""Training faults: a checkpoint that cannot be written (disk full, read-only target) stops
the run naming the file and the reason, and the last good checkpoint is kept whole;
``--resume`` with a checkpoint of another run, or a crop larger than the patches, is refused
with a message naming the file, what it holds and what to do, and nothing is written."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from spectralearth.ssl import pretrain
from spectralearth.ssl.train import (
    CheckpointMismatchError,
    CheckpointWriteError,
    CropSizeError,
    last_checkpoint,
)
from tests.helpers import make_shards, tiny_settings, write_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_failed_checkpoint_write_keeps_the_last_good_one_and_says_why(tmp_path, monkeypatch):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    real_save, calls = TorchCheckpointIO.save_checkpoint, []

    def disk_full_after_the_first(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", disk_full_after_the_first)
    settings = tiny_settings(steps=4, checkpoint_every_n_steps=1)
    out = tmp_path / "out"
    with pytest.raises(CheckpointWriteError) as err:
        pretrain(settings, shards_dir, stats, out, progress=False)
    message = str(err.value)
    assert "No space left on device" in message and "last.ckpt" in message
    assert "last good checkpoint" in message and "--resume" in message

    kept = last_checkpoint(out)
    assert kept is not None
    state = torch.load(kept, map_location="cpu", weights_only=False)  # our own test file
    assert state["global_step"] == 1  # the step-1 checkpoint, whole
    assert not list(kept.parent.glob("*.tmp"))  # no partial file left beside it
    assert not (out / "model.safetensors").exists()  # a failed run publishes no model


# --- resuming from a checkpoint of another run ------------------------------------------


def _folder_state(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def mae_checkpoint(tmp_path):
    """A finished 1-step MAE spec_vit_tiny run that left OUT/checkpoints/last.ckpt."""
    shards_dir, stats, _, _ = make_shards(tmp_path)
    out = tmp_path / "out"
    settings = tiny_settings(method="mae", backbone="spec_vit_tiny", steps=1, crop_size=16,
                             checkpoint_every_n_steps=1)  # fmt: skip
    pretrain(settings, shards_dir, stats, out, progress=False)
    assert last_checkpoint(out) is not None
    return shards_dir, stats, out


@pytest.mark.parametrize(
    "asked",
    [
        {"method": "moco", "backbone": "spec_resnet18"},  # another method and backbone
        {"method": "mae", "backbone": "spec_vit_small"},  # the same method, another backbone
    ],
)
def test_resume_from_another_runs_checkpoint_names_it_and_writes_nothing(mae_checkpoint, asked):
    shards_dir, stats, out = mae_checkpoint
    before = _folder_state(out)
    settings = tiny_settings(**asked, steps=2, crop_size=16, checkpoint_every_n_steps=1)
    with pytest.raises(CheckpointMismatchError) as err:
        pretrain(settings, shards_dir, stats, out, progress=False, resume=True)
    message = str(err.value)
    assert str(out / "checkpoints" / "last.ckpt") in message  # the file
    assert "holds step 1 of a mae spec_vit_tiny run on 202 bands" in message  # what it holds
    assert f"asks for {asked['method']} {asked['backbone']}" in message  # what was asked
    assert "--method mae --backbone spec_vit_tiny" in message and "another --out" in message
    assert len(message) < 1000  # a sentence, not a state-dict diff
    assert _folder_state(out) == before  # nothing written, the checkpoint kept whole


def test_resume_from_a_checkpoint_of_an_earlier_version_reads_its_weights(mae_checkpoint):
    shards_dir, stats, out = mae_checkpoint
    ckpt = last_checkpoint(out)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    del state["spectralearth"]  # written before checkpoints recorded their run
    torch.save(state, ckpt)
    settings = tiny_settings(steps=2, checkpoint_every_n_steps=1)  # moco spec_resnet18
    with pytest.raises(CheckpointMismatchError) as err:
        pretrain(settings, shards_dir, stats, out, progress=False, resume=True)
    message = str(err.value)
    assert str(ckpt) in message and "of a mae (backbone not recorded) run" in message
    assert "weights differ in name or shape" in message and len(message) < 1000


def test_resume_from_a_truncated_checkpoint_names_it(mae_checkpoint):
    shards_dir, stats, out = mae_checkpoint
    ckpt = last_checkpoint(out)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    settings = tiny_settings(method="mae", backbone="spec_vit_tiny", steps=2, crop_size=16)
    with pytest.raises(CheckpointMismatchError, match="cannot be read as a Lightning checkpoint"):
        pretrain(settings, shards_dir, stats, out, progress=False, resume=True)


def test_cli_resume_with_another_method_exits_1_naming_the_checkpoint(tmp_path, capsys):
    from spectralearth.cli import main

    params = write_params(tmp_path / "project")
    curated = tmp_path / "curated"
    shards_dir, stats, _, _ = make_shards(curated)
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    out = tmp_path / "out"
    settings = tiny_settings(method="mae", backbone="spec_vit_tiny", steps=1, crop_size=16,
                             checkpoint_every_n_steps=1)  # fmt: skip
    pretrain(settings, shards_dir, stats, out, progress=False)
    before = _folder_state(out)
    args = ["--params", str(params), "pretrain", "--method", "moco", "--backbone", "spec_resnet18"]
    args += ["--data", str(curated), "--stats", str(tmp_path / "stats.json"), "--out", str(out)]
    assert main([*args, "--steps", "2", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "CheckpointMismatchError" in err and str(last_checkpoint(out)) in err
    assert "mae spec_vit_tiny" in err and "moco spec_resnet18" in err
    assert _folder_state(out) == before


# --- a crop larger than the patches -----------------------------------------------------


def test_a_crop_larger_than_the_patches_says_how_to_set_it(tmp_path):
    shards_dir, stats, _, _ = make_shards(tmp_path, patch=32)
    out = tmp_path / "out"
    with pytest.raises(CropSizeError) as err:
        pretrain(tiny_settings(crop_size=64), shards_dir, stats, out, progress=False)
    message = str(err.value)
    assert str(shards_dir / "manifest.parquet") in message and "32 px patches" in message
    assert "crop_size 64" in message and "pretrain.profiles.test.crop_size" in message
    assert "--crop-size 32" in message
    assert not out.exists()  # nothing written
