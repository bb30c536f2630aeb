"""DVC experiments as their users run them, for real, on the tiny archive in a scratch git+DVC
copy of the project: the pipeline runs (`dvc repro`, as `make run`'s `dvc commit` records the
Dagster outputs), its result is saved as the experiment ``baseline`` (what `make run` ends
with), `dvc metrics show` lists the numbers, `dvc exp run -S evaluate.epochs=...` and
`dvc exp run -S curate.max_cloud_frac=...` make experiments that `dvc exp show` lists beside the
workspace with params and metrics, and `dvc metrics diff` / `dvc plots diff` compare them.

Kept short: tiny params (2 pretraining steps, 1 evaluation epoch) and each experiment targets
the ``evaluate`` stage (the scene maps after it are the end-to-end test's business; the first
`dvc repro` makes them, as `dvc exp save` wants every output present)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import REPO, run_ok, scratch_project, tighter_cloud_threshold, tiny_params

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _dvc_json(args, cwd, env):
    return json.loads(run_ok(["dvc", *args, "--json"], cwd, env).stdout)


def _flat(tree: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture(scope="module")
def project(tiny_archive, tmp_path_factory):
    """The scratch project with tiny params, committed (`dvc exp` needs a commit to start
    from), its pipeline without the scene maps (slow, and no metric reads them)."""
    root = tmp_path_factory.mktemp("dvcexp")
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    del pipeline["stages"]["maps"]
    params = tiny_params(Path("data"), evaluate={"epochs": 1, "baselines": []})
    env = scratch_project(root, tiny_archive.parent, params, pipeline, commit=True)
    return root, env


def test_metrics_experiments_and_plots(project, tmp_path):
    root, env = project
    run_ok(["dvc", "repro", "-q"], root, env)  # what `make run` records with `dvc commit`

    # dvc metrics show: the pretraining loss and the test metrics of the checkpoint
    shown = _dvc_json(["metrics", "show"], root, env)
    (metrics,) = [v["data"]["data/results/metrics.json"]["data"] for v in shown.values()]
    flat = _flat(metrics)
    ckpt = next((root / "data" / "models").iterdir()).name
    assert isinstance(flat[f"pretrain.{ckpt}.final_loss"], float)
    for metric in ("overall_accuracy", "macro_f1", "micro_iou"):
        value = flat[f"test.{ckpt}.synth_landcover.frozen.linear.lf1.{metric}"]
        assert 0.0 <= value <= 1.0

    # what `make run` ends with: the workspace result saved as the experiment `baseline`
    run_ok(["dvc", "exp", "save", "-q", "-n", "baseline"], root, env)

    # an evaluation parameter reruns the evaluation only
    out = run_ok(["dvc", "exp", "run", "-n", "epochs2", "-S", "evaluate.epochs=2", "evaluate"],
                 root, env).stdout  # fmt: skip
    assert "Running stage 'evaluate'" in out and "Running stage 'pretrain'" not in out, out
    # a curation parameter reruns from curation on
    index = pd.read_parquet(root / "data" / "patches" / "index.parquet")
    threshold = tighter_cloud_threshold(index)
    out = run_ok(["dvc", "exp", "run", "-n", "cloudier", "-S", f"curate.max_cloud_frac={threshold}",
                  "evaluate"], root, env).stdout  # fmt: skip
    for stage in ("curate", "pretrain", "evaluate"):
        assert f"Running stage '{stage}'" in out, out
    assert "Running stage 'catalog'" not in out
    assert len(pd.read_parquet(root / "data" / "patches" / "index.parquet")) < len(index)

    # dvc exp show: the workspace and the three experiments, each with params and metrics
    rows = {}
    for commit in _dvc_json(["exp", "show"], root, env):
        for exp in [
            commit,
            *[e for group in commit.get("experiments") or [] for e in group["revs"]],
        ]:
            data = exp.get("data") or {}
            rows[exp.get("name") or exp["rev"]] = data
    assert {"workspace", "baseline", "epochs2", "cloudier"} <= set(rows), sorted(rows)
    key = f"test.{ckpt}.synth_landcover.frozen.linear.lf1.macro_f1"
    for name in ("workspace", "baseline", "epochs2", "cloudier"):
        data = rows[name]
        params = data["params"]["params.yaml"]["data"]
        assert {"evaluate", "curate"} <= set(params), name
        assert isinstance(_flat(data["metrics"]["data/results/metrics.json"]["data"])[key], float)
    params = {
        n: rows[n]["params"]["params.yaml"]["data"] for n in ("baseline", "epochs2", "cloudier")
    }
    # each run starts from the workspace the one before left
    assert {n: p["evaluate"]["epochs"] for n, p in params.items()} == {
        "baseline": 1,
        "epochs2": 2,
        "cloudier": 2,
    }
    assert params["cloudier"]["curate"]["max_cloud_frac"] == threshold
    assert params["epochs2"]["curate"]["max_cloud_frac"] == 0.05

    # dvc metrics diff / dvc plots diff against the baseline experiment
    diff = _dvc_json(["metrics", "diff", "baseline", "--all"], root, env)
    changes = diff["data/results/metrics.json"]
    for rev, side in (("baseline", "old"), ("workspace", "new")):
        listed = _flat(rows[rev]["metrics"]["data/results/metrics.json"]["data"])
        assert changes[key][side] == listed[key]
    assert changes[f"pretrain.{ckpt}.steps"]["old"] == 2
    plots = _dvc_json(["plots", "diff", "baseline"], root, env)["data"]
    assert "Test macro F1 per label fraction" in plots, sorted(plots)
    assert any(i.startswith("data/results/plots/loss/") for i in plots), sorted(plots)
    confusion = [i for i in plots if i.startswith("data/results/plots/confusion/")]
    assert confusion, sorted(plots)
    for entries in plots.values():
        assert all(set(e["revisions"]) == {"workspace", "baseline"} for e in entries), entries
    matrix = plots[confusion[0]][0]["content"]  # the custom template: counts are summed
    assert matrix["spec"]["transform"][0]["aggregate"][0] == {
        "op": "sum",
        "field": "count",
        "as": "xy_count",
    }
    curve = plots["Test macro F1 per label fraction"][0]["content"]
    assert curve["encoding"]["color"]["field"] == "series"
    assert {d["rev"] for d in curve["data"]["values"]} == {"workspace", "baseline"}
    run_ok(["dvc", "plots", "diff", "baseline", "-o", str(tmp_path / "plots")], root, env)
    html = (tmp_path / "plots" / "index.html").read_text()
    for title in ("Pretraining loss", "Test confusion matrix (pixels)", "share of the training"):
        assert title in html
