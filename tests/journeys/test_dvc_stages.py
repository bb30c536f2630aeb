"""dvc.yaml read as data (test_end_to_end and the DVC journey run the stages): each stage runs
a `spectralearth` command that exists, names params keys that exist, takes its data paths
from params.yaml, depends only on data another stage (or data.dvc) produces, and lists every
source file its command imports (derived from the import graph: a missing one fails)."""

from __future__ import annotations

import ast
import inspect
import re
import shlex
import textwrap
from pathlib import Path

import pytest
import yaml

from spectralearth.cli import COMMANDS, build_parser
from spectralearth.config import load_settings
from tests.helpers import REPO, import_closure

RAW = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
TRACKED = [o["path"] for o in yaml.safe_load((REPO / "data.dvc").read_text())["outs"]]
TEMPLATE = re.compile(r"\$\{([a-z_.]+)\}")


def _param(key: str):
    node = PARAMS
    for part in key.split("."):
        node = node[part]
    return node


def _resolve(text: str) -> str:
    return TEMPLATE.sub(lambda m: str(_param(m.group(1))), text)


def _outs(stage: dict) -> list[str]:
    return [_resolve(next(iter(o)) if isinstance(o, dict) else o) for o in stage.get("outs", [])]


STAGES = {name: stage for name, stage in RAW.items()}


def test_the_stages_in_pipeline_order():
    assert list(STAGES) == [
        "catalog",
        "curate",
        "summary",
        "validate",
        "pretrain",
        "downstream",
        "evaluate",
        "maps",
    ]


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_runs_an_existing_cli_command_with_existing_params(name):
    stage = STAGES[name]
    argv = shlex.split(_resolve(stage["cmd"]))
    assert argv[0] == "spectralearth"
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on a bad option
    assert args.func.__name__ == argv[1].replace("-", "_")
    for key in stage.get("params", []):
        _param(key)  # KeyError names a key params.yaml lacks


@pytest.mark.parametrize("name", list(STAGES))
def test_data_paths_come_from_params_not_literals(name):
    stage = STAGES[name]
    texts = [stage["cmd"], *stage.get("deps", []), *[str(o) for o in stage.get("outs", [])]]
    for text in texts:
        for word in text.split():
            assert not word.startswith(("data/", "data_dir")), f"{name}: literal path {word}"
    assert all(o.startswith("${data_dir}/") for o in map(str, stage["outs"]))


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_are_produced_upstream_or_are_sources(name):
    produced = set(TRACKED)
    for other, stage in STAGES.items():
        if other == name:
            break
        produced |= set(_outs(stage))
    for dep in map(_resolve, STAGES[name].get("deps", [])):
        if dep.startswith(str(PARAMS["data_dir"]) + "/"):
            assert dep in produced, f"{name}: {dep} is no earlier stage's output"
        else:
            assert (REPO / dep).exists(), f"{name}: {dep} does not exist"


def _handler_imports(command: str) -> set[str]:
    """The spectralearth modules the handler of ``spectralearth <command>`` imports, plus
    what cli.py itself imports at module level."""
    handler = next(c.handler for c in COMMANDS if c.name == command)
    found = {"spectralearth.names", "spectralearth.config"}
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(handler)))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spectralearth"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("name", list(STAGES))
def test_every_source_file_the_command_imports_is_a_dependency(name):
    argv = shlex.split(_resolve(STAGES[name]["cmd"]))
    deps = [REPO / d for d in map(_resolve, STAGES[name]["deps"])]
    needed = import_closure(_handler_imports(argv[1]))
    needed |= (
        {REPO / "src/spectralearth/resources"}
        if (REPO / "src/spectralearth/bands.py") in needed
        else set()
    )

    def covered(path: Path) -> bool:
        return any(path == d or d in path.parents for d in deps)

    missing = sorted(str(p.relative_to(REPO)) for p in needed if not covered(p))
    assert not missing, f"dvc.yaml stage {name} misses source deps: {missing}"


def test_the_maps_stage_writes_where_the_dagster_asset_does(monkeypatch):
    for var in ("SPECTRALEARTH_DATA_DIR", "SPECTRALEARTH_ARCHIVE", "SPECTRALEARTH_PARAMS"):
        monkeypatch.delenv(var, raising=False)  # the paths dvc.yaml assumes: params.yaml's
    settings = load_settings(REPO / "params.yaml")
    maps = STAGES["maps"]
    assert set(map(_resolve, maps["deps"])) >= {*TRACKED[:1], *_outs(STAGES["catalog"])}
    assert set(_outs(STAGES["evaluate"])) <= set(map(_resolve, maps["deps"]))
    (out,) = _outs(maps)
    assert (REPO / out).resolve() == settings.layout.maps.resolve()
    assert settings.layout.scene_map("s").parent.resolve() == (REPO / out).resolve()


# --- metrics and plots (the DVC experiments journey runs them: test_dvc_experiments.py) ----

TOP = yaml.safe_load((REPO / "dvc.yaml").read_text())


def _plot_sources(entry: dict) -> tuple[str, dict]:
    ((name, spec),) = entry.items()
    sources = list(spec["y"]) if isinstance(spec.get("y"), dict) else [name]
    return sources, spec


def test_metrics_and_plots_are_files_the_evaluate_stage_writes_into_its_output():
    from spectralearth import experiments
    from spectralearth.layout import ResultsLayout

    (results_out,) = _outs(STAGES["evaluate"])
    results = ResultsLayout(Path(results_out))
    assert [_resolve(m) for m in TOP["metrics"]] == [str(experiments.metrics_file(results))]
    written = {
        str(experiments.plots_dir(results) / "loss"),
        str(experiments.plots_dir(results) / "label_fraction.csv"),
        str(experiments.plots_dir(results) / "confusion"),
    }
    declared = set()
    for entry in TOP["plots"]:
        sources, spec = _plot_sources(entry)
        declared |= {_resolve(s) for s in sources}
        assert spec["x_label"] and spec["y_label"], spec
    assert declared == written
    assert all(d.startswith(results_out + "/") for d in declared)


@pytest.mark.parametrize("entry", TOP["plots"], ids=lambda e: next(iter(e)))
def test_each_plot_names_a_template_dvc_has(entry):
    from dvc_render.vega_templates import TEMPLATES

    _, spec = _plot_sources(entry)
    builtin = {t.DEFAULT_NAME for t in TEMPLATES}
    template = spec["template"]
    assert template in builtin or (REPO / ".dvc" / "plots" / f"{template}.json").is_file()
