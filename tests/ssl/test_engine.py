"""Training engine: a killed run resumes from its checkpoint; 2-process DDP on the CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file

from spectralearth.ssl import pretrain
from spectralearth.ssl.train import last_checkpoint
from tests.helpers import REPO, make_shards, tiny_settings

WORKER = REPO / "tests" / "ssl" / "pretrain_worker.py"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _env() -> dict:
    path = os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _job(tmp_path, settings, **extra) -> str:
    shards_dir, stats, _, _ = make_shards(tmp_path)
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    job = {
        "shards": str(shards_dir),
        "stats": str(tmp_path / "stats.json"),
        "out": str(tmp_path / "out"),
        "settings": dataclasses.asdict(settings),
        **extra,
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return str(path)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


class _AtStart(pl.Callback):
    """What the resumed run holds when its first step is about to run."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.step = trainer.global_step
        self.optimizer = _clone(trainer.optimizers[0].state_dict())
        self.scheduler = _clone(trainer.lr_scheduler_configs[0].scheduler.state_dict())
        self.weights = _clone(pl_module.state_dict())


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return obj


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    settings = tiny_settings(
        method="mae",
        backbone="spec_vit_tiny",
        steps=1000,
        crop_size=16,
        lr=1e-3,
        checkpoint_every_n_steps=2,
    )
    job = _job(tmp_path, settings, slow=0.05)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), job],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while last_checkpoint(out) is None:
            assert proc.poll() is None, f"the run ended before a checkpoint: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        time.sleep(0.5)  # let it go on a little past the checkpoint, then kill it mid-run
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "run.json").exists(), "the killed run must not have finished"

    ckpt = _load(last_checkpoint(out))
    k = ckpt["global_step"]
    assert k >= 2 and k % 2 == 0
    resumed = _AtStart()
    run = pretrain(
        dataclasses.replace(settings, steps=k + 2),
        tmp_path / "shards",
        json.loads((tmp_path / "stats.json").read_text()),
        out,
        progress=False,
        resume=True,
        callbacks=[resumed],
    )
    # It continues from step k with the checkpoint's optimizer, scheduler and weights ...
    assert resumed.step == k and run.resumed_from_step == k
    (opt,) = ckpt["optimizer_states"]
    assert opt["state"], "AdamW moments were saved"
    assert all(int(s["step"]) == k for s in opt["state"].values())
    _assert_same(resumed.optimizer, opt, "optimizer")
    _assert_same(resumed.scheduler, ckpt["lr_schedulers"][0], "scheduler")
    _assert_same(resumed.weights, ckpt["state_dict"], "weights")
    # ... and runs the 2 steps that remain.
    assert run.steps == k + 2 and len(run.loss_history) == 2
    assert (out / "model.safetensors").is_file()


def test_resume_without_checkpoint_starts_afresh(tmp_path, capsys):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    settings = tiny_settings(method="mae", backbone="spec_vit_tiny", steps=1, crop_size=16)
    run = pretrain(settings, shards_dir, stats, tmp_path / "out", progress=False, resume=True)
    assert run.steps == 1 and run.resumed_from_step is None
    assert "no checkpoint" in capsys.readouterr().out


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_two_process_ddp_keeps_ranks_identical_and_only_rank_zero_writes(tmp_path):
    # torchrun, as on a GPU cluster: two CPU processes, gloo, global batch 8 = 2 x 4.
    settings = tiny_settings(
        method="moco",
        backbone="spec_vit_tiny",
        steps=2,
        batch_size=8,
        crop_size=16,
        devices=2,
        strategy="ddp",
    )
    dump = tmp_path / "dump"
    job = _job(tmp_path, settings, dump=str(dump), dump_step=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*cmd, str(WORKER), job], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (_load(dump / f"rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and r0["step"] == r1["step"] == 1
    # Each rank saw its own half of the batch (different losses); the loss recorded is the
    # global batch's, the same on both: the mean of the two halves.
    assert r0["local_loss"] != r1["local_loss"]
    assert r0["loss"] == r1["loss"] == pytest.approx((r0["local_loss"] + r1["local_loss"]) / 2)
    # ... yet after the step both hold the same weights (gradients were all-reduced) ...
    assert r0["params"].keys() == r1["params"].keys()
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
    # ... and at the end, the weights rank 0 published.
    f0, f1 = (_load(dump / f"rank{r}-final.pt") for r in (0, 1))
    saved = load_file(tmp_path / "out" / "model.safetensors")
    for name, value in f0["params"].items():
        assert torch.equal(value, f1["params"][name]) and torch.equal(value, saved[name]), name

    # Only rank 0 wrote the output folder: one run.json (world size 2), one weights file.
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "run.json"]
    assert (dump / "writes-rank0.txt").read_text().split() == ["model.safetensors", "run.json"]
    assert (dump / "writes-rank1.txt").read_text() == ""
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["micro_batch_size"] == 4 and run["steps"] == 2
    # Both ranks returned once it was written, with the same record: run.json's.
    results = [json.loads((dump / f"result-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["run_json_there"] for r in results)
    assert results[0]["run"] == results[1]["run"] == run


def test_the_timed_loader_counts_the_wait_for_batches_and_is_the_loader_otherwise():
    from spectralearth.ssl.train import TimedLoader

    class SlowLoader:
        epoch = None

        def __len__(self):
            return 3

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            for i in range(3):
                time.sleep(0.05)
                yield i

    timed = TimedLoader(SlowLoader())
    timed.set_epoch(4)
    assert len(timed) == 3 and timed.loader.epoch == 4 and timed.epoch == 4
    start = time.perf_counter()
    assert list(timed) == [0, 1, 2]
    assert 0.15 <= timed.wait_seconds <= time.perf_counter() - start
