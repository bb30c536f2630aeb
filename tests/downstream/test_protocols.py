"""The protocols on Lightning give the numbers of the hand-written loops they replaced.

``RECORDED`` holds what ``evaluate_encoder`` returned at commit e14a559 (the two hand-written
epoch loops of ``downstream/protocols.py``), on the CPU with one thread, for the fake data
below and seed 0: test and val metrics, the selected epoch and the training loss per epoch.
The port to Lightning (``BaseFinetuning`` protocols, ``ModelCheckpoint`` selection,
``MetricCollection`` metrics) must reproduce them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spectralearth.config import EvaluateSettings
from spectralearth.downstream.datasets.registry import open_split, resolve
from spectralearth.downstream.protocols import evaluate_encoder
from spectralearth.models import create_model
from tests.helpers import TinyEncoder, make_fake

SETTINGS = EvaluateSettings(task="x", protocol="frozen", epochs=3, batch_size=4, lr=0.01, seed=0)

# name: (encoder, dataset, protocol, head, task, classes, epochs)
CASES = {
    "tiny_frozen": ("tiny", "enmap_cdl", "frozen", "linear", "segmentation", 14, 4),
    "rn18_adapter": ("rn18", "enmap_cdl", "adapter", "linear", "segmentation", 14, 3),
    "rn18_first_n": ("rn18", "enmap_cdl", "first-n", "linear", "segmentation", 14, 3),
    "tiny_full": ("tiny", "enmap_cdl", "full", "linear", "segmentation", 14, 3),
    "rn18_frozen_fcn": ("rn18", "enmap_cdl", "frozen", "fcn", "segmentation", 14, 2),
    "tiny_multilabel": ("tiny", "enmap_corine", "frozen", "linear", "multilabel", 19, 4),
    "tiny_multilabel_full": ("tiny", "enmap_corine", "full", "linear", "multilabel", 19, 2),
}

RECORDED = {
    "tiny_frozen": {"overall_accuracy": 0.4897959, "micro_iou": 0.3243243, "macro_iou": 0.3968028, "macro_f1": 0.4285454, "val": {"overall_accuracy": 0.5339367, "micro_iou": 0.3641975, "macro_iou": 0.3993538, "macro_f1": 0.4328754}, "best_epoch": 3, "train_loss": [2.878516, 2.604201, 2.352349, 2.121175]},
    "rn18_adapter": {"overall_accuracy": 0.05393586, "micro_iou": 0.02771536, "macro_iou": 0.01017464, "macro_f1": 0.01940818, "val": {"overall_accuracy": 0.07239819, "micro_iou": 0.03755869, "macro_iou": 0.005171299, "macro_f1": 0.009644364}, "best_epoch": 0, "train_loss": [21686.5, 33191.36, 40267.1]},
    "rn18_first_n": {"overall_accuracy": 0.07142857, "micro_iou": 0.03703704, "macro_iou": 0.009685379, "macro_f1": 0.01813822, "val": {"overall_accuracy": 0.1040724, "micro_iou": 0.0548926, "macro_iou": 0.007433743, "macro_f1": 0.01346604}, "best_epoch": 2, "train_loss": [26115.57, 27354.15, 26893.84]},
    "tiny_full": {"overall_accuracy": 0.9285714, "micro_iou": 0.8666667, "macro_iou": 0.8949177, "macro_f1": 0.906559, "val": {"overall_accuracy": 0.9343891, "micro_iou": 0.8768578, "macro_iou": 0.8967034, "macro_f1": 0.9080623}, "best_epoch": 2, "train_loss": [2.818872, 1.838758, 1.225243]},
    "rn18_frozen_fcn": {"overall_accuracy": 0.6297376, "micro_iou": 0.4595745, "macro_iou": 0.4600541, "macro_f1": 0.6177954, "val": {"overall_accuracy": 0.6402715, "micro_iou": 0.4708818, "macro_iou": 0.4694101, "macro_f1": 0.616346}, "best_epoch": 1, "train_loss": [2.524638, 1.668524]},
    "tiny_multilabel": {"micro_f1": 0.691358, "macro_f1": 0.5859649, "map": 0.8859649, "val": {"micro_f1": 0.5769231, "macro_f1": 0.4035088, "map": 0.8888889}, "best_epoch": 0, "train_loss": [0.7000133, 0.6903623, 0.6818401, 0.6730476]},
    "tiny_multilabel_full": {"micro_f1": 0.8125, "macro_f1": 0.7368422, "map": 0.9342105, "val": {"micro_f1": 0.8253968, "macro_f1": 0.7368422, "map": 0.9166667}, "best_epoch": 0, "train_loss": [0.6651639, 0.5613582]},
}  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """enmap_cdl (16 px) and enmap_corine (8 px): 6 train, 2 val, 3 test patches each."""
    root = tmp_path_factory.mktemp("parity")
    for name, size in (("enmap_cdl", 16), ("enmap_corine", 8)):
        lists = root / "lists" / name
        lists.mkdir(parents=True)
        for split, n, base in (("train", 6, 0), ("val", 2, 100), ("test", 3, 200)):
            names = "".join(f"{base + i:07d}/{i:05d}.tif\n" for i in range(n))
            (lists / f"{split}.txt").write_text(names)
        make_fake(root / "lists", root / "data", "--per-split", "6", "--size", str(size),
                  "--datasets", name)  # fmt: skip
    return root / "data"


def _close(got: float, want: float) -> bool:
    return got == pytest.approx(want, rel=2e-6, abs=1e-7)


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_numbers_as_the_hand_written_loops(tree, one_torch_thread, case):
    encoder, dataset, protocol, head, task, classes, epochs = CASES[case]
    src = resolve(tree / dataset)
    train = open_split(src, "train")
    val, test = open_split(src, "val", train.stats), open_split(src, "test", train.stats)
    torch.manual_seed(0)
    enc = TinyEncoder() if encoder == "tiny" else create_model("spec_resnet18", in_chans=202)
    res = evaluate_encoder(
        enc, train, test, classes, replace(SETTINGS, epochs=epochs), protocol,
        val_ds=val, task=task, head=head, first_n=2,
    )  # fmt: skip
    want = RECORDED[case]
    assert res["best_epoch"] == want["best_epoch"]
    assert len(res["train_loss"]) == len(want["train_loss"])
    assert all(map(_close, res["train_loss"], want["train_loss"])), res["train_loss"]
    for split, got, expected in (("test", res, want), ("val", res["val"], want["val"])):
        for metric, value in expected.items():
            if isinstance(value, float):
                assert _close(got[metric], value), (split, metric, got[metric], value)


def test_an_evaluation_reports_its_own_peak_memory_not_an_earlier_one(tree, one_torch_thread):
    """#13: ``peak_mem_mb`` was the process's lifetime peak, so a small evaluation after a big
    stage carried the big stage's peak."""
    import numpy as np

    from spectralearth.memory import lifetime_peak_rss_mb

    big = np.ones(700 * 1024 * 1024 // 8)  # 700 MB, touched
    del big
    lifetime = lifetime_peak_rss_mb()
    src = resolve(tree / "enmap_cdl")
    train = open_split(src, "train")
    res = evaluate_encoder(TinyEncoder(), train, train, 14, replace(SETTINGS, epochs=1))
    assert 0 < res["peak_mem_mb"] < lifetime - 500, (res["peak_mem_mb"], lifetime)
    if not torch.cuda.is_available():
        assert res["peak_gpu_mem_mb"] != res["peak_gpu_mem_mb"]  # NaN on the CPU
