"""Every name the project knows, as plain data (no torch): the one list each of methods,
backbones, protocols, heads, baselines and downstream datasets.

The CLI (choices and help), the Dagster partitions and the implementations all import
these; nothing else keeps a copy. Importing this module costs no deep-learning import, so
``spectralearth --help`` and loading the Dagster definitions stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from spectralearth.cards import CARDS, PAPER_DATASETS, DatasetCard, get_card

# --- self-supervised methods --------------------------------------------------------------

MOCO, DINO, MAE = "moco", "dino", "mae"
METHODS: tuple[str, ...] = (MOCO, DINO, MAE)
# learning-rate schedules of pretraining (spectralearth.ssl.base.lr_factor)
MULTISTEP, COSINE_TO_ZERO, COSINE_OVER_RUN = "multistep", "cosine_to_zero", "cosine_over_run"
LR_SCHEDULES: tuple[str, ...] = (MULTISTEP, COSINE_TO_ZERO, COSINE_OVER_RUN)
# how the Dagster asset starts pretraining (params.yaml launch.launcher): auto =
# torchrun when the profile runs several processes, else in the Dagster process
AUTO_LAUNCH, IN_PROCESS, TORCHRUN = "auto", "in_process", "torchrun"
LAUNCHERS: tuple[str, ...] = (AUTO_LAUNCH, IN_PROCESS, TORCHRUN)
# params.yaml pretraining profiles that prove the loop runs, not that pretraining learns:
# every results table labels the numbers of their checkpoints a smoke test
SMOKE_TEST_PROFILES: tuple[str, ...] = ("cpu-tiny",)


# --- backbones (config as data; spectralearth.models builds them from these) -----------


@dataclass(frozen=True)
class BackboneConfig:
    """One encoder architecture. ``family`` picks the builder in :mod:`spectralearth.models`
    (``spec_resnet``: adapter + stem-less timm ResNet ``arch``; ``vit``: a ViT of
    ``embed_dim``/``depth``/``num_heads`` on ``patch_size`` px tokens; ``timm_resnet``: a plain
    timm ResNet whose stem takes every band). ``reference`` is the architecture's name in the
    SpectralEarth reference code's ``BACKBONE_REGISTRY`` (its state dicts have the same keys
    and shapes), or None where the reference has no such model."""

    name: str
    family: str
    description: str
    spectral_adapter: bool = True
    params: Mapping[str, object] = field(default_factory=dict)
    reference: str | None = None


def _vit(
    name: str, embed_dim: int, depth: int, heads: int, label: str, patch: int = 4, note: str = ""
):
    return BackboneConfig(
        name,
        "vit",
        f"Spectral adapter + ViT-{label}/{patch} ({embed_dim}-dim, {depth} blocks, {heads} heads)"
        f"{note}.",
        params={"embed_dim": embed_dim, "depth": depth, "num_heads": heads, "patch_size": patch},
        reference=name,
    )


_BACKBONE_LIST = (
    BackboneConfig(
        "spec_resnet18",
        "spec_resnet",
        "Spectral adapter + stem-less ResNet-18 (CPU profile); 512 features, stride 16.",
        params={"arch": "resnet18"},
    ),
    BackboneConfig(
        "spec_resnet50",
        "spec_resnet",
        "Spectral adapter + stem-less ResNet-50 (the paper's Spec-ResNet-50); 2048 features.",
        params={"arch": "resnet50"},
        reference="spec_resnet50",
    ),
    _vit("spec_vit_tiny", 192, 12, 3, "T"),
    _vit("spec_vit_small", 384, 12, 6, "S"),
    _vit("spec_vit_base", 768, 12, 12, "B"),
    _vit("spec_vit_large", 1024, 24, 16, "L"),
    _vit("spec_vit_huge", 1280, 32, 16, "H"),
    # the reference's giant (1.14 B parameters), not timm's ViT-g (1408-dim, 16 heads)
    _vit("spec_vit_giant", 1536, 40, 24, "g", note="; the SpectralEarth reference's giant"),
    BackboneConfig(
        "resnet50",
        "timm_resnet",
        "timm ResNet-50 with its stem taking every band; output stride 32 (no adapter).",
        spectral_adapter=False,
        params={"arch": "resnet50"},
        reference="resnet50",
    ),
    BackboneConfig(
        "vit_small_p8",
        "vit",
        "ViT-S/8 with a patch embedding taking every band (no spectral adapter).",
        spectral_adapter=False,
        params={"embed_dim": 384, "depth": 12, "num_heads": 6, "patch_size": 8},
        reference="vit_small",
    ),
    BackboneConfig(
        "vit_tiny_p8",
        "vit",
        "ViT-T/8 with a patch embedding taking every band (no spectral adapter).",
        spectral_adapter=False,
        params={"embed_dim": 192, "depth": 12, "num_heads": 3, "patch_size": 8},
        reference="vit_tiny",
    ),
)
BACKBONE_CONFIGS: dict[str, BackboneConfig] = {b.name: b for b in _BACKBONE_LIST}
BACKBONES: tuple[str, ...] = tuple(BACKBONE_CONFIGS)
# the encoders pretrained with a spectral adapter (Dagster's pretraining partitions)
ADAPTER_BACKBONES: tuple[str, ...] = tuple(b.name for b in _BACKBONE_LIST if b.spectral_adapter)
# Vision Transformers (the encoders MAE can pretrain: masking drops tokens)
VIT_BACKBONES: tuple[str, ...] = tuple(b.name for b in _BACKBONE_LIST if b.family == "vit")


def backbone_for_reference(reference: str) -> BackboneConfig:
    """The backbone whose state dicts have the keys and shapes of the reference code's
    ``BACKBONE_REGISTRY[reference]`` (``spec_vit_small``, ``vit_small``, ...)."""
    for config in _BACKBONE_LIST:
        if config.reference == reference:
            return config
    known = sorted(b.reference for b in _BACKBONE_LIST if b.reference)
    raise ValueError(f"no backbone matches the reference's {reference!r}; have {known}")


# --- downstream protocols, heads, baselines -------------------------------------------

PROTOCOLS: tuple[str, ...] = ("frozen", "adapter", "first-n", "full")
# linear: 1x1 conv / linear probe; fcn, upconv: dense segmentation heads; mlp: the reference
# regression head; paper: the SpectralEarth paper's head for the encoder and task
HEADS: tuple[str, ...] = ("linear", "fcn", "upconv", "mlp", "paper")
NO_PROTOCOL = "none"  # what trains besides the head: nothing, for a model without an encoder
NO_HEAD = "none"

RANDOM_INIT = "random_init"  # the same backbone with random weights, under any protocol
RANDOM_FOREST = "random_forest"  # a per-pixel random forest on the raw bands
BASELINES: tuple[str, ...] = (RANDOM_INIT, RANDOM_FOREST)


def protocols_for(model: str) -> tuple[str, ...]:
    """The protocols ``model`` (a checkpoint name or a baseline) can be evaluated under."""
    return (NO_PROTOCOL,) if model == RANDOM_FOREST else PROTOCOLS


def heads_for(model: str) -> tuple[str, ...]:
    return (NO_HEAD,) if model == RANDOM_FOREST else HEADS


# --- downstream datasets ------------------------------------------------------------------

SYNTH_TASK = "synth_landcover"  # built from the synthetic archive's class maps
POTSDAM = "enmap_potsdam"
HYPERVIEW = "hyperview"  # the reference code's tenth task: soil-parameter regression
DATASETS: tuple[str, ...] = (SYNTH_TASK, *PAPER_DATASETS, POTSDAM, HYPERVIEW)

__all__ = [
    "ADAPTER_BACKBONES",
    "BACKBONES",
    "BACKBONE_CONFIGS",
    "BASELINES",
    "CARDS",
    "DATASETS",
    "DINO",
    "HEADS",
    "LR_SCHEDULES",
    "HYPERVIEW",
    "MAE",
    "METHODS",
    "MOCO",
    "NO_HEAD",
    "NO_PROTOCOL",
    "PAPER_DATASETS",
    "POTSDAM",
    "PROTOCOLS",
    "RANDOM_FOREST",
    "RANDOM_INIT",
    "SMOKE_TEST_PROFILES",
    "SYNTH_TASK",
    "VIT_BACKBONES",
    "BackboneConfig",
    "backbone_for_reference",
    "DatasetCard",
    "get_card",
    "heads_for",
    "protocols_for",
]
