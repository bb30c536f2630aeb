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

from spectralearth.config import PROTOCOLS  # no torch import: the protocol list lives there

scenes_partitions = dg.DynamicPartitionsDefinition(name="scenes")
checkpoints_partitions = dg.DynamicPartitionsDefinition(name="checkpoints")

# spectralearth.downstream.datasets.registry.PAPER_DATASETS + the Potsdam task + the built
# synthetic task, spelt out so loading the definitions does not import torch (a test keeps
# the lists equal).
DATASETS = (
    "synth_landcover",
    "enmap_cdl",
    "enmap_nlcd",
    "enmap_corine",
    "enmap_eurocrops",
    "enmap_bdforet",
    "enmap_treemap",
    "enmap_bnetd",
    "desis_cdl",
    "eo1_cdl",
    "enmap_potsdam",
)


def _configured_task() -> str | None:
    """params.yaml's evaluate.task, so a task other than the listed ones gets partitions."""
    try:
        from spectralearth.config import load_settings

        return load_settings().evaluate.task
    except Exception:  # definitions must load without a params file too
        return None


if _configured_task() not in (None, *DATASETS):
    DATASETS = (_configured_task(), *DATASETS)
BASELINES = ("random_init", "random_forest")  # spectralearth.pipeline.RANDOM_INIT / _FOREST


# spectralearth.ssl.METHODS and the adapter backbones of spectralearth.models (spelt out so
# loading the definitions does not import torch; a test keeps the lists equal)
PRETRAIN_METHODS = ("moco", "dino", "mae")
PRETRAIN_BACKBONES = (
    "spec_resnet18",
    "spec_resnet50",
    "spec_vit_tiny",
    "spec_vit_small",
    "spec_vit_base",
)
pretrain_partitions = dg.MultiPartitionsDefinition(
    {
        "method": dg.StaticPartitionsDefinition(list(PRETRAIN_METHODS)),
        "backbone": dg.StaticPartitionsDefinition(list(PRETRAIN_BACKBONES)),
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
            [evaluation_key(d, p) for d in DATASETS for p in PROTOCOLS]
        ),
    }
)


def evaluation_partition(checkpoint: str, dataset: str, protocol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey(
        {"checkpoint": checkpoint, "evaluation": evaluation_key(dataset, protocol)}
    )
