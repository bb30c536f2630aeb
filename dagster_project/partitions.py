"""Partitions: one per EnMAP product (dynamic: the archive sensor and the catalogue add new
ones), one per pretraining run, and the downstream evaluations.

- ``scenes`` (dynamic): product folder names.
- ``checkpoints`` (static): ``<method>-<backbone>``, the pretraining runs, named as their
  checkpoint folders (``Settings.checkpoint_name``).
- evaluations: ``checkpoint`` x ``evaluation`` for a pretrained checkpoint, ``baseline`` x
  ``evaluation`` for the baselines, where an ``evaluation`` key is
  ``<dataset>:<protocol>:<head>`` (Dagster's multi-partitions take two dimensions, so
  dataset, protocol and head share one). The forest has no protocol and no head and runs
  under ``<dataset>:none:none`` only.

Why the checkpoint dimension of the evaluations *is* the pretraining partitions: Dagster's
``MultiToSingleDimensionPartitionMapping`` then maps pretraining partition ``moco-x`` to
exactly the evaluations ``moco-x|*``, so automation (and the UI's lineage) sees that a new
``moco-x`` checkpoint makes only its own evaluations stale; with the former
``AllPartitionMapping`` every evaluation depended on all 15 pretraining partitions. The
baselines depend on no checkpoint, so they are their own asset with their own dimension.

Every list comes from :mod:`spectralearth.names`.
"""

import warnings

import dagster as dg

from spectralearth import names

scenes_partitions = dg.DynamicPartitionsDefinition(name="scenes")


def _configured_task() -> str | None:
    """params.yaml's evaluate.task, so a task other than the known ones gets partitions."""
    try:
        from spectralearth.config import load_settings

        return load_settings().evaluate.task
    except Exception:  # definitions must load without a params file too
        return None


DATASETS = names.DATASETS
if _configured_task() not in (None, *DATASETS):
    DATASETS = (_configured_task(), *DATASETS)


def checkpoint_key(method: str, backbone: str) -> str:
    """A pretraining partition (and its checkpoint folder name): ``<method>-<backbone>``."""
    return f"{method}-{backbone}"


def split_checkpoint_key(key: str) -> tuple[str, str]:
    """``"moco-spec_resnet18" -> ("moco", "spec_resnet18")`` (method names hold no ``-``)."""
    method, backbone = key.split("-", 1)
    return method, backbone


CHECKPOINT_KEYS = [checkpoint_key(m, b) for m in names.METHODS for b in names.ADAPTER_BACKBONES]
pretrain_partitions = dg.StaticPartitionsDefinition(CHECKPOINT_KEYS)


def pretrain_partition(method: str, backbone: str) -> str:
    """The pretraining partition of ``method`` x ``backbone``."""
    key = checkpoint_key(method, backbone)
    if key not in CHECKPOINT_KEYS:
        raise ValueError(
            f"no pretraining partition {key!r}: methods {names.METHODS} x backbones with a "
            f"spectral adapter {names.ADAPTER_BACKBONES}"
        )
    return key


def evaluation_key(dataset: str, protocol: str, head: str) -> str:
    return f"{dataset}:{protocol}:{head}"


def split_evaluation_key(key: str) -> tuple[str, str, str]:
    dataset, protocol, head = key.rsplit(":", 2)
    return dataset, protocol, head


EVALUATION_KEYS = [
    evaluation_key(d, p, h)
    for d in DATASETS
    for p, h in (
        *((p, h) for p in names.PROTOCOLS for h in names.HEADS),
        (names.NO_PROTOCOL, names.NO_HEAD),
    )
]
_evaluation_dimension = dg.StaticPartitionsDefinition(EVALUATION_KEYS)

CHECKPOINT_DIMENSION, BASELINE_DIMENSION, EVALUATION_DIMENSION = (
    "checkpoint",
    "baseline",
    "evaluation",
)

evaluations_partitions = dg.MultiPartitionsDefinition(
    {CHECKPOINT_DIMENSION: pretrain_partitions, EVALUATION_DIMENSION: _evaluation_dimension}
)
baseline_evaluations_partitions = dg.MultiPartitionsDefinition(
    {
        BASELINE_DIMENSION: dg.StaticPartitionsDefinition(list(names.BASELINES)),
        EVALUATION_DIMENSION: _evaluation_dimension,
    }
)

# pretraining partition moco-x -> the evaluations moco-x|* (and back); beta in Dagster 1.13
# (the warning is silenced here only, where we rely on it knowingly)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    checkpoint_to_evaluations = dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name=CHECKPOINT_DIMENSION
    )


def evaluation_partition(
    checkpoint: str, dataset: str, protocol: str, head: str
) -> dg.MultiPartitionKey:
    """The partition of ``checkpoint`` (a pretraining partition or a baseline) on ``dataset``
    under ``protocol`` and ``head``, in its asset (:func:`evaluation_asset_name`)."""
    model = BASELINE_DIMENSION if checkpoint in names.BASELINES else CHECKPOINT_DIMENSION
    return dg.MultiPartitionKey(
        {model: checkpoint, EVALUATION_DIMENSION: evaluation_key(dataset, protocol, head)}
    )


def evaluation_asset_name(checkpoint: str) -> str:
    """``baseline_evaluation`` for a baseline, else ``downstream_evaluation``."""
    return "baseline_evaluation" if checkpoint in names.BASELINES else "downstream_evaluation"
