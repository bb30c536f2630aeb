"""Hostile and broken weights files: a pickle that would run code is refused without running
it, a truncated file is refused by name, and a failure while writing the imported
checkpoint leaves nothing behind."""

from __future__ import annotations

import pytest
import torch

from spectralearth.models import load_pretrained
from spectralearth.models.weights import UnsafeWeightsError, WeightsError, import_weights
from tests.helpers import REFERENCE_CHECKPOINTS, shared

MARKER_CODE = "open({path!r}, 'w').write('the pickle ran code')"


class RunsCode:
    """Unpickling calls ``exec`` on a payload that writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (MARKER_CODE.format(path=self.marker),))


def test_a_pickle_that_needs_code_execution_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    source = tmp_path / "released_weights.pth"
    torch.save({"vit_core.cls_token": torch.zeros(1, 1, 192), "x": RunsCode(marker)}, source)
    out = tmp_path / "out"
    with pytest.raises(UnsafeWeightsError) as e:
        import_weights(source, "spec_vit_tiny", out)
    assert str(source) in str(e.value) and "code execution" in str(e.value)
    assert "exec" in str(e.value)  # names what it would have called
    with pytest.raises(UnsafeWeightsError):
        load_pretrained(source, backbone="spec_vit_tiny")
    assert not marker.exists()
    assert not out.exists()
    # the payload is real: an unsafe load would have run it
    torch.load(source, weights_only=False)
    assert marker.read_text() == "the pickle ran code"


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_truncated_file_is_refused_by_name(tmp_path, suffix):
    reference = shared(*REFERENCE_CHECKPOINTS, "ref_spec_vit_tiny_p4.pth")
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        whole = tmp_path / "whole.safetensors"
        save_file(torch.load(reference, weights_only=True), str(whole))
        data = whole.read_bytes()
    else:
        data = reference.read_bytes()
    source = tmp_path / f"cut{suffix}"
    source.write_bytes(data[: len(data) // 2])
    out = tmp_path / "models" / "cut"
    with pytest.raises(WeightsError, match=f"cut{suffix}: cannot be read .*truncated"):
        import_weights(source, "spec_vit_tiny", out)
    assert not out.parent.exists()


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    reference = shared(*REFERENCE_CHECKPOINTS, "ref_spec_vit_tiny_p4.pth")

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 1000)  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    out = tmp_path / "a" / "b" / "ck"
    with pytest.raises(OSError, match="No space left"):
        import_weights(reference, "spec_vit_tiny", out)
    assert list(tmp_path.iterdir()) == []  # no staging folder, no parents it created


def test_a_failure_while_overwriting_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import os

    reference = shared(*REFERENCE_CHECKPOINTS, "ref_spec_vit_tiny_p4.pth")
    out = tmp_path / "ck"
    import_weights(reference, "spec_vit_tiny", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename = os.rename

    def rename(src, dst):
        if str(src).endswith(".partial"):
            raise OSError(5, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="Input/output"):
        import_weights(reference, "spec_vit_tiny", out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]
