"""Partitions: one per EnMAP product (dynamic: the catalogue and the archive sensor add new
ones), the pretraining runs (method x backbone, static), and the downstream evaluations,
checkpoint x "<dataset>:<protocol>:<head>".

Dagster's multi-partitions take two dimensions, so dataset, protocol and head share one:
``evaluation`` keys are ``<dataset>:<protocol>:<head>``. ``checkpoint`` keys are dynamic: the
pretraining asset adds its checkpoint (a folder name under the models folder) and the
baselines (``random_init``, ``random_forest``; the forest has no protocol and no head and
runs under ``<dataset>:none:none`` only). Every list comes from :mod:`spectralearth.names`.
"""

import dagster as dg

from spectralearth import names

scenes_partitions = dg.DynamicPartitionsDefinition(name="scenes")
checkpoints_partitions = dg.DynamicPartitionsDefinition(name="checkpoints")


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

pretrain_partitions = dg.MultiPartitionsDefinition(
    {
        "method": dg.StaticPartitionsDefinition(list(names.METHODS)),
        "backbone": dg.StaticPartitionsDefinition(list(names.ADAPTER_BACKBONES)),
    }
)


def pretrain_partition(method: str, backbone: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"method": method, "backbone": backbone})


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

evaluations_partitions = dg.MultiPartitionsDefinition(
    {
        "checkpoint": checkpoints_partitions,
        "evaluation": dg.StaticPartitionsDefinition(EVALUATION_KEYS),
    }
)


def evaluation_partition(
    checkpoint: str, dataset: str, protocol: str, head: str
) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey(
        {"checkpoint": checkpoint, "evaluation": evaluation_key(dataset, protocol, head)}
    )
