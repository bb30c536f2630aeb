"""dvc.yaml read as data (no `dvc repro`; test_end_to_end runs the stages): each stage runs a
`spectralearth` command that exists, names params keys that exist, and depends only on data
another stage (or data.dvc) produces; the maps stage writes where the Dagster asset does."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from spectralearth.cli import build_parser
from spectralearth.config import load_settings
from tests.helpers import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
TRACKED = [o["path"] for o in yaml.safe_load((REPO / "data.dvc").read_text())["outs"]]


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def test_the_stages_in_pipeline_order():
    assert list(STAGES) == [
        "catalog",
        "curate",
        "summary",
        "validate",
        "stats",
        "pretrain",
        "downstream",
        "evaluate",
        "maps",
    ]


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_runs_an_existing_cli_command_with_existing_params(name):
    stage = STAGES[name]
    argv = shlex.split(stage["cmd"])
    assert argv[0] == "spectralearth"
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on a bad option
    assert args.func.__name__ == "cmd_" + argv[1].replace("-", "_")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in stage.get("params", []):
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: params key {key}"
            node = node[part]


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_are_produced_upstream_or_are_sources(name):
    produced = set(TRACKED)
    for other, stage in STAGES.items():
        if other == name:
            break
        produced |= set(_outs(stage))
    for dep in STAGES[name].get("deps", []):
        if dep.startswith("data/"):
            assert dep in produced, f"{name}: {dep} is no earlier stage's output"
        else:
            assert (REPO / dep).exists(), f"{name}: {dep} does not exist"


def test_maps_stage_maps_the_catalogue_with_the_evaluated_models_to_the_asset_paths(
    monkeypatch,
):
    for var in ("SPECTRALEARTH_DATA_DIR", "SPECTRALEARTH_ARCHIVE", "SPECTRALEARTH_PARAMS"):
        monkeypatch.delenv(var, raising=False)  # the paths dvc.yaml assumes: params.yaml's
    maps = STAGES["maps"]
    assert set(maps["deps"]) >= {"data/archive", *_outs(STAGES["catalog"])}
    assert set(_outs(STAGES["evaluate"])) <= set(maps["deps"])  # the trained models
    assert maps["params"] == ["predict"]
    settings = load_settings(REPO / "params.yaml")
    assert Path(settings.paths.data_dir).resolve() == (REPO / "data").resolve()
    # the Dagster asset scene_maps writes pipeline.map_path: <data>/maps/<scene>.tif (+ .png)
    from spectralearth import pipeline

    assert _outs(maps) == ["data/maps"]
    assert pipeline.map_path(settings, "s").parent.resolve() == (REPO / "data" / "maps").resolve()
    argv = shlex.split(maps["cmd"])
    catalog = argv[argv.index("--catalog") + 1]
    assert catalog.startswith(_outs(STAGES["catalog"])[0] + "/")
    assert (REPO / catalog).resolve() == settings.paths.catalog.resolve()
