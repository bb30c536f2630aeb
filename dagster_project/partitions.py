"""Partitions: one per EnMAP product (dynamic: the archive sensor adds new ones), the
pretraining runs (method x backbone, static), and the downstream evaluations,
checkpoint x "<dataset>:<protocol>".

Dagster's multi-partitions take two dimensions, so dataset and protocol share one:
``evaluation`` keys are ``<dataset>:<protocol>``. ``checkpoint`` keys are dynamic: the
pretraining asset adds its checkpoint (a folder name under the models folder) and the
baselines (``random_init``, ``random_forest``; the forest has no protocol and runs under
``<dataset>:frozen`` only).
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


def evaluation_key(dataset: str, protocol: str) -> str:
    return f"{dataset}:{protocol}"


def split_evaluation_key(key: str) -> tuple[str, str]:
    dataset, protocol = key.rsplit(":", 1)
    return dataset, protocol


evaluations_partitions = dg.MultiPartitionsDefinition(
    {
        "checkpoint": checkpoints_partitions,
        "evaluation": dg.StaticPartitionsDefinition(
            [evaluation_key(d, p) for d in DATASETS for p in (*names.PROTOCOLS, names.NO_PROTOCOL)]
        ),
    }
)


def evaluation_partition(checkpoint: str, dataset: str, protocol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey(
        {"checkpoint": checkpoint, "evaluation": evaluation_key(dataset, protocol)}
    )
