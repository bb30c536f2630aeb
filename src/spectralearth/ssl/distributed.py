"""Which process am I, and wait for the others: rank helpers for multi-process pretraining.

Under ``torchrun`` (or ``srun``) every process runs the same command. Side effects that
must happen once (writing the checkpoint folder, creating an MLflow run, registering a
model version) belong to global rank 0; the others wait for it and take its result:

    if is_global_zero():              # works before any trainer or process group exists
        run_id = tracking.start_run(...)
    result = pretrain(...)            # every rank trains; only rank 0 writes OUT
    run_id = broadcast_from_zero(run_id if is_global_zero() else None)

``global_rank`` and ``world_size`` read the launcher's environment (torchrun's ``RANK`` /
``WORLD_SIZE``, SLURM's ``SLURM_PROCID`` / ``SLURM_NTASKS``) until a process group exists,
then ask it. ``barrier`` and ``broadcast_from_zero`` need the process group that Lightning
starts in ``trainer.fit`` (it stays up after fit); without one (a single process) they
return at once. Importing this module imports no torch.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

RANK_VARIABLES = ("RANK", "SLURM_PROCID")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "SLURM_NTASKS")


def _process_group():
    """``torch.distributed`` when a process group is up, else None."""
    import sys

    if "torch" not in sys.modules:  # nobody imported torch: no process group either
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _from_env(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                msg = f"environment variable {name}={value!r} is not an integer"
                raise ValueError(msg) from None
    return default


def global_rank() -> int:
    """This process's global rank (0 for a single process)."""
    dist = _process_group()
    return int(dist.get_rank()) if dist is not None else _from_env(RANK_VARIABLES, 0)


def world_size() -> int:
    """How many processes take part (1 for a single process)."""
    dist = _process_group()
    return int(dist.get_world_size()) if dist is not None else _from_env(WORLD_SIZE_VARIABLES, 1)


def is_global_zero() -> bool:
    """True in the one process that writes outputs and talks to MLflow."""
    return global_rank() == 0


def barrier() -> None:
    """Wait until every process gets here (a no-op without a process group)."""
    dist = _process_group()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_from_zero(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (any picklable object; other ranks' values are
    ignored). Every rank must call it; a no-op without a process group."""
    dist = _process_group()
    if dist is None or dist.get_world_size() <= 1:
        return obj
    payload = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(payload, src=0)
    return payload[0]


def broadcast_buffers_from_zero(module) -> None:
    """Give every rank rank 0's buffers of ``module`` (BatchNorm running statistics...).

    DDP keeps the parameters identical but each rank updates its buffers from its own
    micro-batch in the last forward pass (DDP broadcasts rank 0's only at the start of the
    next one), so after ``fit`` the ranks' BatchNorm statistics differ. Rank 0's are the
    ones published; this makes every rank hold exactly the published model. A no-op
    without a process group."""
    dist = _process_group()
    if dist is None or dist.get_world_size() <= 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
