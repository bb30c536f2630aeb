"""A checkpoint that cannot be written (disk full, read-only target) stops the run with a
message naming the file and the reason, and the last good checkpoint is kept whole."""

from __future__ import annotations

import errno

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from spectralearth.ssl import pretrain
from spectralearth.ssl.train import CheckpointWriteError, last_checkpoint
from tests.helpers import make_shards, tiny_settings


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
