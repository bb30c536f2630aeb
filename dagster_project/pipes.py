"""How the ``pretrained_checkpoint`` asset starts pretraining: in the step's own process
(one device), or as ``torchrun -m spectralearth.cli pretrain`` on several processes through
Dagster Pipes, so the UI shows rank 0's log lines and the metadata it reports
(``spectralearth.pipes``), and the subprocesses' output in the step's compute logs.

params.yaml ``launch`` chooses (:class:`spectralearth.config.LaunchSettings`):
``auto`` runs torchrun when the profile asks for more than one process on this node.
Lightning's own multi-device launch cannot run inside Dagster (it re-runs the current
process's command line, which here is Dagster's), so ``in_process`` with several devices is
refused, naming the key to change. Several nodes are launched with torchrun on each node
(docs/gpu-pretraining.md), not from one asset.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from spectralearth.config import PretrainSettings, Settings
from spectralearth.names import AUTO_LAUNCH, IN_PROCESS, TORCHRUN
from spectralearth.pipes import SUMMARY_KEY
from spectralearth.stages.result import Markdown, StageResult


def processes_per_node(pretrain: PretrainSettings) -> int:
    """How many training processes the profile runs on one node (``devices``; -1 = every
    visible GPU, or one process on the CPU)."""
    if int(pretrain.devices) > 0:
        return int(pretrain.devices)
    if pretrain.accelerator == "cpu":
        return 1
    import torch

    return max(1, torch.cuda.device_count())


def torchrun_processes(s: Settings) -> int | None:
    """torchrun's ``--nproc-per-node`` for ``s``, or None to train in the Dagster process.

    Raises ValueError naming the params.yaml keys when the choice cannot work."""
    pretrain, launch = s.pretrain, s.launch
    where = f"{s.params_file}: pretrain.profiles.{pretrain.profile}"
    if int(pretrain.num_nodes) > 1:
        raise ValueError(
            f"{where} has num_nodes: {pretrain.num_nodes}; the Dagster asset starts pretraining "
            "on its own node only. Run torchrun on every node (docs/gpu-pretraining.md), or "
            "use a profile with num_nodes: 1."
        )
    wanted = processes_per_node(pretrain)
    if launch.launcher == IN_PROCESS or (launch.launcher == AUTO_LAUNCH and wanted == 1):
        if wanted > 1:
            raise ValueError(
                f"{where} runs {wanted} processes (devices: {pretrain.devices}) but "
                f"launch.launcher is {IN_PROCESS!r}: in the Dagster process Lightning "
                "would re-run Dagster's own command once per extra device. Set "
                f"launch.launcher: {TORCHRUN} (or {AUTO_LAUNCH}) in {s.params_file}."
            )
        return None
    nproc = launch.nproc_per_node or wanted
    if int(pretrain.devices) > 0 and nproc != int(pretrain.devices):
        raise ValueError(
            f"{s.params_file}: launch.nproc_per_node {nproc} differs from "
            f"pretrain.profiles.{pretrain.profile}.devices {pretrain.devices}: Lightning needs "
            "one process per device. Make them equal (or leave nproc_per_node null)."
        )
    return nproc


def torchrun_command(s: Settings, out: Path, nproc: int, resume: bool = False) -> list[str]:
    """``torchrun`` (as ``python -m torch.distributed.run``, this environment's) of
    ``spectralearth pretrain`` with ``s``'s params file, profile, method, backbone, curated
    folder and ``out``."""
    pretrain = s.pretrain
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one node, a free rendezvous port
        f"--nproc-per-node={nproc}",
        "-m",
        "spectralearth.cli",
        "--params",
        str(s.params_file),
        "pretrain",
        "--profile",
        pretrain.profile,
        "--method",
        pretrain.method,
        "--backbone",
        pretrain.backbone,
        "--data",
        str(s.layout.patches),
        "--out",
        str(out),
        *(["--resume"] if resume else []),
    ]


def _plain(value: dg.MetadataValue):
    """A reported Dagster metadata value back as the stage's plain value (so the asset
    renders it exactly as it renders an in-process result)."""
    if isinstance(value, dg.MarkdownMetadataValue):
        return Markdown(value.value)
    if isinstance(value, dg.PathMetadataValue):
        return Path(value.value)
    return value.value


@dataclass(frozen=True)
class ReportedPretraining(StageResult):
    """The pretraining result rank 0 of a torchrun reported through Dagster Pipes."""

    reported: dict  # metadata key -> plain value, as ``Pretraining.metadata()`` gave it
    summary_line: str
    checkpoint: Path
    nproc_per_node: int

    def metadata(self) -> dict:
        return {**self.reported, "launcher": TORCHRUN, "nproc_per_node": self.nproc_per_node}

    def summary(self) -> str:
        return self.summary_line


def launch_pretraining(
    context: dg.AssetExecutionContext,
    s: Settings,
    out: Path,
    *,
    resume: bool = False,
    client: dg.PipesSubprocessClient | None = None,
) -> StageResult:
    """Pretrain ``s.pretrain`` into ``out`` as params.yaml ``launch`` says: in this
    process (``spectralearth.stages.pretrain.pretrain``) or with torchrun through Pipes
    (``client``, default a plain :class:`dagster.PipesSubprocessClient`). A failed torchrun
    fails the step (rank 0's error is in the event log, every rank's output in the
    compute logs)."""
    nproc = torchrun_processes(s)
    if nproc is None:
        from spectralearth.stages.pretrain import pretrain

        return pretrain(
            s.pretrain,
            s.layout.patches,
            out,
            s.tracking,
            resume=resume,
            dagster_run_id=context.run.run_id,
            progress=False,
        )
    command = torchrun_command(s, out, nproc, resume)
    context.log.info(f"pretrain: {nproc} processes: {' '.join(command)}")
    # the subprocess derives the same data folder (and so the same MLflow store) as we do
    env = {"SPECTRALEARTH_DATA_DIR": str(s.layout.data_dir)}
    invocation = (client or dg.PipesSubprocessClient()).run(
        context=context, command=command, env=env
    )
    reported = {k: _plain(v) for k, v in invocation.get_materialize_result().metadata.items()}
    summary = str(reported.pop(SUMMARY_KEY, f"pretrain: torchrun of {nproc} processes -> {out}"))
    return ReportedPretraining(reported, summary, Path(out), nproc)
