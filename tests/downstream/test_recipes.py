"""The downstream recipes of params.yaml: ``cpu`` (today's fast one) and ``paper`` (the
SpectralEarth reference code's, github.com/AABNassim/spectral_earth at 5084a29)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spectralearth.config import EvaluateSettings, RecipeSettings, load_settings
from tests.helpers import REPO, write_params

# What the reference's configs say (configs/model/*.yaml, configs/experiment/downstream/*/
# base.yaml, configs/callbacks/*.yaml) and its code does (src/models/*_module.py,
# src/datamodules/*.py), field by field.
REFERENCE = {
    "epochs": 100,  # trainer.max_epochs of every task but HYPERVIEW
    "lr": 1e-3,  # model.learning_rate
    "optimizer": "adamw",  # torch.optim.AdamW(self.model.parameters(), ...)
    "weight_decay": 1e-4,  # segmentation.yaml, regression.yaml
    "scheduler": "cosine",  # CosineAnnealingLR(T_max=t_max=100), interval epoch
    "min_lr": 0.0,  # eta_min: 0
    "encoder_lr_scale": 1.0,  # one learning rate for every parameter
    "augment": True,  # RandomResizedCrop + RandomVerticalFlip + RandomHorizontalFlip
    "crop_scale": (0.4, 1.0),  # every datamodule but CDL/NLCD and CORINE
    "normalisation": "reference",  # NormalizeMeanStd(mu.npy, sigma.npy)
    "standardise_features": False,
    "select": "val_loss",  # model_checkpoint monitor val_loss, mode min; test on best
    "frozen_batchnorm": "train",  # freeze_backbone sets requires_grad only
    "first_n_from": "encoder",  # resnet.layer1..4 / vit_core.blocks, adapter not counted
    "cache_features": False,
    "head": "paper",  # fcn / conv_head / the backbone's classifier / the MLP
}
PER_DATASET = {  # data.batch_size of each experiment, and what differs
    "enmap_cdl": {"batch_size": 8, "crop_scale": (0.2, 1.0)},
    "enmap_nlcd": {"batch_size": 16, "crop_scale": (0.2, 1.0)},
    "enmap_corine": {"batch_size": 32, "crop_scale": (0.6, 1.0), "weight_decay": 1e-5},
    "enmap_eurocrops": {"batch_size": 8},
    "enmap_bdforet": {"batch_size": 8},
    "enmap_treemap": {"batch_size": 16},
    "enmap_bnetd": {"batch_size": 16},
    "desis_cdl": {"batch_size": 8},
    "eo1_cdl": {"batch_size": 8},
    "hyperview": {"batch_size": 32, "epochs": 400, "early_stopping_patience": 15},
}


@pytest.fixture(scope="module")
def evaluate() -> EvaluateSettings:
    return load_settings(REPO / "params.yaml").evaluate


def test_the_default_recipe_is_today_s_cpu_recipe(evaluate):
    assert evaluate.recipe == "cpu"
    cpu = evaluate.recipe_for("enmap_cdl")
    assert replace(cpu, datasets={}) == replace(RecipeSettings(), datasets={})
    assert (cpu.head, cpu.epochs, cpu.batch_size, cpu.lr) == ("linear", 15, 8, 0.01)
    assert (evaluate.head, evaluate.epochs, evaluate.batch_size, evaluate.lr) == (
        "linear", 15, 8, 0.01,
    )  # fmt: skip
    assert evaluate.recipe_for("hyperview").resize_to == 32  # 128 px fields are GPU-sized


@pytest.mark.parametrize("dataset", list(PER_DATASET))
def test_the_paper_recipe_is_the_reference_s(evaluate, dataset):
    paper = evaluate.recipe_for(dataset, "paper")
    want = {**REFERENCE, **PER_DATASET[dataset]}
    assert {k: getattr(paper, k) for k in want} == want
    if dataset == "hyperview":
        assert paper.resize_to == 128  # the reference dataset's resize


def test_overrides_win_over_the_recipe_and_survive_replace(evaluate):
    s = replace(evaluate, recipe="paper", epochs=2)
    assert s.overridden == ("epochs",) and s.head == "paper" and s.lr == 1e-3
    assert s.recipe_for("enmap_nlcd").epochs == 2 and s.recipe_for("enmap_nlcd").batch_size == 16
    back = replace(s, recipe="cpu")
    assert (back.head, back.epochs, back.lr) == ("linear", 2, 0.01)
    assert replace(back, seed=3).overridden == ("epochs",)
    cli = load_settings(
        REPO / "params.yaml", overrides={"evaluate": {"recipe": "paper", "batch_size": 4}}
    ).evaluate
    assert cli.recipe_for("enmap_corine").batch_size == 4  # over the per-dataset 32
    assert cli.recipe_for("enmap_corine").weight_decay == 1e-5


@pytest.mark.parametrize(
    "values, message",
    [
        ({"recipe": "fast"}, r"\[evaluate\]: recipe 'fast' is not one of \('cpu', 'paper'\)"),
        ({"recipes": {"cpu": {"optimiser": "sgd"}}}, r"\[evaluate.recipes.cpu\]: unknown keys"),
        ({"recipes": {"cpu": {"scheduler": "step"}}}, r"recipes.cpu\]: scheduler 'step'"),
        ({"recipes": {"cpu": {"crop_scale": [0.5, 0.2]}}}, r"crop_scale \(0.5, 0.2\)"),
        ({"recipes": {"cpu": {"datasets": {"enmap_cdl": {"bs": 4}}}}}, r"cpu.datasets.enmap_cdl"),
        ({"recipes": {"cpu": {"datasets": {"x": {"head": "unet"}}}}}, r"head 'unet'"),
        ({"devices": 2}, r"\[evaluate\]: devices 2: a downstream evaluation runs on one"),
    ],
)
def test_a_bad_recipe_fails_at_load_naming_the_key(tmp_path, values, message):
    import yaml

    params = write_params(tmp_path)
    raw = yaml.safe_load(params.read_text())
    for key, value in values.items():
        if key == "recipes":
            for name, entry in value.items():
                raw["evaluate"]["recipes"][name].update(entry)
        else:
            raw["evaluate"][key] = value
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=message):
        load_settings(params)


def test_settings_without_params_have_the_cpu_recipe_only():
    s = EvaluateSettings(task="x", protocol="frozen", seed=0)
    assert tuple(s.recipes) == ("cpu",) and s.recipe_for() == RecipeSettings()
    with pytest.raises(ValueError, match="unknown recipe 'paper'"):
        s.recipe_for(recipe="paper")
