"""A pretraining run in its own process, for the resume (killed run) and DDP tests.

``python tests/ssl/pretrain_worker.py JOB.json`` (directly or under torchrun); JOB.json holds
shards, stats (a JSON file), out, settings (PretrainSettings keys), resume, and optionally
``dump`` (a folder: each rank saves there its encoder parameters and losses after step
``dump_step`` (``rank<r>.pt``) and at the end of training (``rank<r>-final.pt``), the
files it wrote through pretraining's atomic writers (``writes-rank<r>.txt``) and what
``pretrain`` returned to it (``result-rank<r>.json``)) and ``slow`` (seconds to sleep
after each step, so a test can stop the run part-way).

``python tests/ssl/pretrain_worker.py --cli DUMP -- SPECTRALEARTH_ARGS...`` runs the
``spectralearth`` command itself (``spectralearth.cli.main``, unchanged) with one hook: each
rank writes, into DUMP, the SHA-256 of the encoder state dict it holds when rank 0 publishes
(``hash-rank<r>.json``: the whole state dict's and each tensor's,
:func:`tests.helpers.state_dict_sha256`) and the command's exit
status (``exit-rank<r>.txt``); its stdout is the command's.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

import spectralearth.ssl.train as train
from spectralearth.config import PretrainSettings
from spectralearth.ssl import pretrain
from spectralearth.ssl.distributed import global_rank
from tests.helpers import state_dict_sha256


class DumpParameters(pl.Callback):
    def __init__(self, folder: Path, step: int) -> None:
        self.folder, self.step = Path(folder), int(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            info = {
                "world_size": trainer.world_size,
                "step": trainer.global_step,
                "local_loss": float(outputs["loss"]),  # this rank's half of the batch
                "loss": pl_module.loss_history[-1],  # the global batch's (mean over ranks)
            }
            self._save(trainer, pl_module, info, f"rank{trainer.global_rank}.pt")

    def on_train_end(self, trainer, pl_module) -> None:
        info = {"step": trainer.global_step}
        self._save(trainer, pl_module, info, f"rank{trainer.global_rank}-final.pt")

    def _save(self, trainer, pl_module, info: dict, name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        params = {n: p.detach().clone() for n, p in pl_module.encoder.named_parameters()}
        torch.save({"params": params, **info}, self.folder / name)


def record_writes(folder: Path) -> None:
    """Log every file pretraining writes through its atomic writers, per rank."""
    log = Path(folder) / f"writes-rank{global_rank()}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    real_path, real_text = train.atomic_path, train.atomic_write_text

    @contextlib.contextmanager
    def atomic_path(target, *args, **kwargs):
        with log.open("a") as fh:
            fh.write(f"{Path(target).name}\n")
        with real_path(target, *args, **kwargs) as tmp:
            yield tmp

    def atomic_write_text(target, text):
        with log.open("a") as fh:
            fh.write(f"{Path(target).name}\n")
        real_text(target, text)

    train.atomic_path, train.atomic_write_text = atomic_path, atomic_write_text


class Slow(pl.Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


def dump_encoder_hash(folder: Path) -> None:
    """Each rank records the encoder it holds when rank 0 publishes (the one ``pretrain``
    trained and every rank returns with)."""
    real_publish = train._publish_on_rank_zero

    def publish(trainer, out, encoder, run):
        state = encoder.state_dict()
        per_tensor = {name: state_dict_sha256({name: value}) for name, value in state.items()}
        record = {"state_dict": state_dict_sha256(state), "tensors": per_tensor}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"hash-rank{trainer.global_rank}.json").write_text(json.dumps(record))
        return real_publish(trainer, out, encoder, run)

    train._publish_on_rank_zero = publish


def run_cli(dump: Path, argv: list[str]) -> int:
    """``spectralearth ARGV`` with :func:`dump_encoder_hash`; records the exit status."""
    from spectralearth import cli

    dump_encoder_hash(dump)
    status = cli.main(argv)
    dump.mkdir(parents=True, exist_ok=True)
    (dump / f"exit-rank{global_rank()}.txt").write_text(str(status))
    return status


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    callbacks: list = []
    if job.get("dump"):
        callbacks.append(DumpParameters(Path(job["dump"]), job.get("dump_step", 1)))
        record_writes(Path(job["dump"]))
    if job.get("slow"):
        callbacks.append(Slow(job["slow"]))
    out = Path(job["out"])
    run = pretrain(
        PretrainSettings(**job["settings"]),
        Path(job["shards"]),
        json.loads(Path(job["stats"]).read_text()),
        out,
        progress=False,
        resume=bool(job.get("resume")),
        callbacks=callbacks,
    )
    if job.get("dump"):
        result = {"run": run.as_json(), "run_json_there": (out / "run.json").is_file()}
        (Path(job["dump"]) / f"result-rank{global_rank()}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "--cli":
        dump, separator, *argv = sys.argv[2:]
        assert separator == "--", "usage: pretrain_worker.py --cli DUMP -- ARGS..."
        sys.exit(run_cli(Path(dump), argv))
    main(sys.argv[1])
