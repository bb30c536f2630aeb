"""#16's third acceptance bullet at library level: the paper recipe (one epoch here) runs on
each of the nine released-layout fakes and on the real Potsdam tiles, with a random-init
encoder and with a saved project checkpoint, and reports the reference's metrics.

Cross-sensor (DESIS 235 bands, EO-1 198) runs the 202-band checkpoint's spectral adapter on
the sensor's bands without a flag; each dataset is normalised with its sensor's published
statistics (the saved model records them).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spectralearth.cards import PAPER_DATASETS, get_card
from spectralearth.config import load_settings
from spectralearth.downstream.metrics import REFERENCE_METRICS, metric_names
from spectralearth.downstream.run import evaluate_model
from tests.helpers import REPO, make_fake, shared

STATS = {"EnMAP": "", "DESIS": "statistics_other_sensors/desis",
         "Hyperion": "statistics_other_sensors/eo1"}  # fmt: skip


@pytest.fixture(scope="module")
def paper():
    """The paper recipe of params.yaml, one epoch."""
    return replace(load_settings(REPO / "params.yaml").evaluate, recipe="paper", epochs=1)


@pytest.fixture(scope="module")
def nine(tmp_path_factory) -> Path:
    """All nine datasets, 2 patches of 8 px a split, named from the official split lists."""
    splits = shared("spectralearth_reference", "splits")
    return make_fake(splits, tmp_path_factory.mktemp("nine"), "--per-split", "2")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint folder as pretraining writes it (model.safetensors + run.json)."""
    from safetensors.torch import save_file

    from spectralearth.models import create_model

    torch.manual_seed(0)
    model = create_model("spec_resnet18", in_chans=202)
    folder = tmp_path_factory.mktemp("ckpt") / "moco-spec_resnet18"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))  # fmt: skip
    run = {"method": "moco", "backbone": "spec_resnet18", "in_chans": 202}
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def _check(outcome, dataset: str, task: str, heads: set[str], trained: Path) -> None:
    df = outcome.rows
    assert set(df["recipe"]) == {"paper"} and set(df["split"]) == {"val", "test"}
    assert set(df["metric"]) == set(metric_names(task))
    reference = df[df["metric"].isin(REFERENCE_METRICS[task])]
    assert len(reference) == 2 * len(REFERENCE_METRICS[task])
    assert reference["value"].between(0, 1).all(), reference
    assert set(df["head"]) == heads and set(df["dataset"]) == {dataset}
    assert (df["peak_mem_mb"] > 0).all()
    detail = next(iter(outcome.details.values()))
    assert detail["epochs"] == 1 and detail["best_epoch"] == 0
    info = json.loads((trained / "head.json").read_text())
    assert info["recipe"] == "paper" and info["normalisation"] == "reference"
    sensor = get_card(dataset).sensor
    mu = np.load(shared("spectralearth_reference") / STATS[sensor] / "mu.npy")
    np.testing.assert_allclose(info["band_stats"]["mean"], mu, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("dataset", PAPER_DATASETS)
def test_the_paper_recipe_on_each_released_layout_fake(
    nine, checkpoint, paper, dataset, tmp_path, one_torch_thread
):
    task = get_card(dataset).task
    heads = {"linear"} if task == "multilabel" else {"fcn"}
    for model in ("random", checkpoint):
        out = tmp_path / Path(str(model)).name
        outcome = evaluate_model(model, nine / dataset, paper, "frozen",
                                 backbone="spec_resnet18", save_model_dir=out)  # fmt: skip
        _check(outcome, dataset, task, heads, out)
        assert outcome.trained_model_dir == out
    band_change = get_card(dataset).bands != 202
    assert set(outcome.rows["model"]) == {checkpoint.name}
    assert band_change == (dataset in ("desis_cdl", "eo1_cdl"))


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_paper_recipe_on_the_real_potsdam_tiles(checkpoint, paper, tmp_path, one_torch_thread):
    root = shared("enmap_potsdam")
    for model in ("random", checkpoint):
        out = tmp_path / Path(str(model)).name
        outcome = evaluate_model(model, root, paper, "frozen", backbone="spec_resnet18",
                                 save_model_dir=out)  # fmt: skip
        _check(outcome, "enmap_potsdam", "segmentation", {"fcn"}, out)
        assert outcome.classes[:2] == ["roof", "pavement"]


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize(
    "dataset, protocol", [("enmap_cdl", "first-n"), ("enmap_corine", "adapter")]
)
def test_the_paper_recipe_on_a_spec_vit(nine, paper, dataset, protocol, tmp_path, one_torch_thread):
    """ConvHead on the ViT's tokens for segmentation, the class token for CORINE."""
    task = get_card(dataset).task
    outcome = evaluate_model("random", nine / dataset, paper, protocol, backbone="spec_vit_tiny",
                             save_model_dir=tmp_path / "vit")  # fmt: skip
    _check(outcome, dataset, task, {"linear" if task == "multilabel" else "upconv"},
           tmp_path / "vit")  # fmt: skip
    info = json.loads((tmp_path / "vit" / "head.json").read_text())
    assert info["pool"] == ("token" if task == "multilabel" else "mean")
    detail = next(iter(outcome.details.values()))
    # first-n of the reference: 2 transformer blocks, not the adapter or patch embedding
    want = {"first-n": 2 * 444_864, "adapter": 56_192}[protocol]
    assert detail["trainable_encoder_params"] == want
