"""The Dagster UI and the MLflow UI as a person sees them, in a real browser.

One tiny pipeline is materialized once for the module (the catalogue, two of the six curated
scene partitions, the index, shards, statistics, summary and a two-step pretraining that
registers a model in MLflow), then `spectralearth ui` (what `make ui` runs) serves both UIs on
127.0.0.1 and Playwright drives Debian's Chromium (/usr/bin/chromium; never a downloaded
browser) in headless mode. Each test saves a screenshot under test-output/browser/ (a failing
one saves ``<name>-FAILED.png`` there too).

Select with ``pytest -m browser``; skipped, saying why, where Chromium or Playwright is missing
(`.ci/run` installs Chromium with apt when it can).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from tests.helpers import REPO, tiny_params

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("SPECTRALEARTH_CHROMIUM", "/usr/bin/chromium"))
SHOTS = REPO / "test-output" / "browser"
# The sandbox is closed to the internet: without these Chromium stalls on update, sync and
# QUIC probes. Playwright adds --headless and a fresh --user-data-dir (launch_persistent_context).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # one page action or wait; the UIs answer slowly on 2 busy cores
CURATED = 2  # scene partitions materialized out of the six: the page shows 2 done, 4 missing
ASSETS = [
    "scene_catalog",
    "patch_index",
    "dataset_summary",
    "band_statistics",
    "pretrained_checkpoint",
]

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

# Runs in a subprocess with the test's DAGSTER_HOME and params (run_pipeline's own
# materialize, asset checks included): the catalogue registers the scene partitions, CURATED
# of them are curated, then the other assets up to the pretraining (the params profile's
# method x backbone where pretraining is partitioned). Once Dagster's storage and the MLflow
# database exist it says so and the UI starts beside it (the two never create the same SQLite
# tables at once). Last it reports, as JSON, what the UIs should show: the defined assets, the
# pretraining run and the registered models, read from the definitions and the MLflow store.
MATERIALIZE = """
import json
import sys
from pathlib import Path

import dagster as dg
import mlflow

from dagster_project.definitions import defs
from dagster_project.partitions import scenes_partitions
from dagster_project.run_pipeline import _materialize
from spectralearth import tracking
from spectralearth.config import load_settings

curated, assets = int(sys.argv[1]), sys.argv[2:]
instance = dg.DagsterInstance.get()
_materialize(instance, ["scene_catalog"])
settings = load_settings()
tracking.configure(settings.tracking)
print("@stores", flush=True)
scenes = sorted(instance.get_dynamic_partitions(scenes_partitions.name))
for key in scenes[:curated]:
    _materialize(instance, ["curated_patches"], partition_key=key)
partitioned = {
    k.to_user_string() for a in defs.assets if a.partitions_def is not None for k in a.keys
}
_materialize(instance, [a for a in assets if a != "scene_catalog" and a not in partitioned])
if "pretrained_checkpoint" in partitioned:  # one partition per method x backbone
    from dagster_project.partitions import pretrain_partition

    key = pretrain_partition(settings.pretrain.method, settings.pretrain.backbone)
    _materialize(instance, ["pretrained_checkpoint"], partition_key=key)

run_json = json.loads(next(Path(settings.layout.models).glob("*/run.json")).read_text())
client = mlflow.MlflowClient(tracking_uri=settings.tracking.uri, registry_uri=settings.tracking.uri)
run = client.get_run(run_json["mlflow_run_id"])
facts = {
    "assets": sorted(k.to_user_string() for a in defs.assets for k in a.keys),
    "scenes": scenes,
    "run": {
        "id": run.info.run_id,
        "name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "metrics": run.data.metrics,
    },
    "model": settings.mlflow.registered_model,
    "model_description": client.get_registered_model(settings.mlflow.registered_model).description,
    "model_version": str(run_json["model_versions"]["spectralearth-encoder"]),
    "registered_models": sorted(m.name for m in client.search_registered_models()),
}
print("@facts " + json.dumps(facts), flush=True)
"""


@dataclass
class Served:
    root: Path  # the scratch project: params.yaml, data/
    dagster: str  # UI base URLs
    mlflow: str
    facts: dict  # what the UIs should show (MATERIALIZE's report)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ok(url: str, deadline: float, proc: subprocess.Popen) -> None:
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`spectralearth ui` exited ({proc.returncode}) before {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in time")


def _read_until(proc: subprocess.Popen, marker: str, log: Path) -> None:
    for line in proc.stdout:
        if line.strip() == marker:
            return
    proc.wait()
    raise AssertionError(f"materialize failed ({proc.returncode}):\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (`spectralearth ui` then stops both servers), then kill what is left."""
    try:
        tree = [proc] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        tree = [proc]
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    for p in tree:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            p.kill()
        with contextlib.suppress(Exception):
            p.wait(timeout=5)


@pytest.fixture(scope="module")
def browser_available():
    """Skip the module, with the reason, before anything expensive runs."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (.ci/run does), "
            "or point SPECTRALEARTH_CHROMIUM at one"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def served(browser_available, tiny_archive, tmp_path_factory):
    """A tiny materialized pipeline and `spectralearth ui` over it on two free loopback
    ports; the UI starts while the pipeline is still running, as `make ui` beside `make run`."""
    root = tmp_path_factory.mktemp("browser")
    shutil.copytree(tiny_archive.parent, root / "data")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(root / "data"), sort_keys=False))
    home = root / "data" / "dagster_home"  # where `spectralearth ui` points Dagster
    home.mkdir()
    # nux off: Dagster's "join the community" pop-up (an iframe from the internet)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = dict(
        os.environ,
        PYTHONPATH=f"{REPO / 'src'}:{REPO}",
        SPECTRALEARTH_PARAMS=str(root / "params.yaml"),
        DAGSTER_HOME=str(home),
        DAGSTER_DISABLE_TELEMETRY="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        GX_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    env.pop("SPECTRALEARTH_DATA_DIR", None)
    env.pop("SPECTRALEARTH_ARCHIVE", None)
    mat_log, ui_log = root / "materialize.log", root / "ui.log"
    with mat_log.open("w") as mat_err, ui_log.open("w") as ui_out:
        mat = subprocess.Popen(
            [sys.executable, "-c", MATERIALIZE, str(CURATED), *ASSETS],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=mat_err,
            text=True,
        )
        ui = None
        try:
            _read_until(mat, "@stores", mat_log)
            dport, mport = _free_port(), _free_port()
            ui = subprocess.Popen(
                [sys.executable, "-m", "spectralearth.cli", "ui"]
                + ["--dagster-port", str(dport), "--mlflow-port", str(mport)],
                cwd=root,
                env=env,
                stdout=ui_out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            facts = None
            for line in mat.stdout:  # training progress, then the report
                if line.startswith("@facts "):
                    facts = json.loads(line.removeprefix("@facts "))
            assert mat.wait(timeout=600) == 0 and facts, (
                f"materialize failed:\n{mat_log.read_text()[-4000:]}"
            )
            served = Served(root, f"http://127.0.0.1:{dport}", f"http://127.0.0.1:{mport}", facts)
            deadline = time.time() + 300
            try:
                _wait_ok(served.mlflow + "/health", deadline, ui)
                _wait_ok(served.dagster + "/server_info", deadline, ui)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{ui_log.read_text()[-4000:]}") from None
            yield served
        finally:
            if ui is not None:
                _stop(ui)
            if mat.poll() is None:
                mat.kill()
                mat.wait()


@pytest.fixture(scope="module")
def browser(served, tmp_path_factory):
    """A headless Chromium with a fresh profile; one page context for the module."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        # MLflow's first-visit promotions (a modal, the assistant panel) stay closed, and it
        # opens in its "Model training" view, where runs and the registry are.
        context.add_init_script(
            """
            localStorage.setItem('_mlflow_model_registry_promo_modal_dismissed_v1', 'true');
            localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
            localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
            localStorage.setItem('mlflow.workflowType_v1', '"machine_learning"');
            """
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser, request):
    """A fresh tab; a failing test leaves its last view in test-output/browser/."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    tab = browser.new_page()
    failed_before = request.session.testsfailed
    yield tab
    if request.session.testsfailed > failed_before:  # counted before fixtures tear down
        with contextlib.suppress(Exception):
            tab.screenshot(path=SHOTS / f"{request.node.name}-FAILED.png")
    tab.close()


def test_dagster_asset_graph_shows_every_asset(page, served):
    from playwright.sync_api import expect

    names = served.facts["assets"]
    # wide enough that the whole graph is drawn with full asset cards, not minimal boxes
    page.set_viewport_size({"width": 3000, "height": 1400})
    page.goto(served.dagster + "/asset-groups")
    groups = page.locator("[aria-label=unfold_more]")  # collapsed group boxes, once drawn
    expect(groups.first).to_be_visible()
    # the graph's own settings button (the navigation's one says "Settings")
    page.locator("button:has([aria-label=settings])").filter(has_not_text="Settings").click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    nodes = page.locator("[class*=AssetNode_assetName]")
    expect(nodes).to_have_count(len(names))
    for name in names:
        expect(nodes.get_by_text(name, exact=True)).to_be_visible()
    # materialized ones say so on their cards
    for name in ["scene_catalog", "patch_index"]:
        card = page.locator("[class*=AssetNode_assetNodeContainer]").filter(
            has=page.get_by_text(name, exact=True)
        )
        expect(card.get_by_text("Materialized")).to_be_visible()
    page.screenshot(path=SHOTS / "dagster-asset-graph.png")


def test_dagster_partitioned_asset_page_shows_partition_status(page, served):
    from playwright.sync_api import expect

    keys = served.facts["scenes"]
    assert len(keys) > CURATED, keys
    page.goto(served.dagster + "/assets/curated_patches?view=partitions")
    expect(page.get_by_text(f"{len(keys)} Partitions Selected")).to_be_visible()
    expect(page.get_by_text(f"Materialized ({CURATED})")).to_be_visible()
    expect(page.get_by_text(f"Missing ({len(keys) - CURATED})")).to_be_visible()
    for key in keys:  # the list names every scene (middle-truncated; full name as title)
        expect(page.get_by_title(key, exact=True)).to_be_visible()
    # a curated scene: its status and the curation counts as metadata
    page.get_by_title(keys[0], exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]partition="))
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    for entry in ["windows", "kept"]:
        expect(page.get_by_role("cell", name=entry, exact=True)).to_be_visible()
    page.mouse.move(1500, 900)  # off the partition list's name tooltip
    page.screenshot(path=SHOTS / "dagster-curated-patches-partitions.png")


def test_dagster_metadata_plot_is_drawn(page, served):
    from playwright.sync_api import expect

    page.goto(served.dagster + "/assets/scene_catalog")
    row = page.locator("tr", has_text="coverage_map")
    row.get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("coverage_map")).to_be_visible()
    plot = dialog.locator("img[alt='scene coverage']")
    expect(plot).to_be_visible()
    width, height = plot.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert width > 200 and height > 200, f"the coverage map PNG did not decode: {width}x{height}"
    page.screenshot(path=SHOTS / "dagster-scene-catalog-coverage-map.png")


def test_mlflow_shows_the_registered_model(page, served):
    from playwright.sync_api import expect

    facts = served.facts
    name, version, registered = facts["model"], facts["model_version"], facts["registered_models"]
    assert name in registered, registered
    page.goto(served.mlflow + "/#/models")
    for other in registered:  # every registered model is listed
        expect(page.get_by_role("link", name=other, exact=True)).to_be_visible()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
    expect(row.get_by_text(f"Version {version}").first).to_be_visible()
    expect(row.get_by_text("latest-pretrained")).to_be_visible()
    row.get_by_role("link", name=name, exact=True).click()
    expect(page).to_have_url(re.compile(f"/models/{re.escape(name)}$"))
    versions = page.get_by_role("row").filter(has_text=f"Version {version}")
    expect(versions.get_by_text("latest-pretrained")).to_be_visible()
    if facts["model_description"]:
        expect(page.get_by_text(facts["model_description"], exact=True)).to_be_visible()
    page.screenshot(path=SHOTS / "mlflow-registered-model.png")


def test_mlflow_shows_a_runs_metrics(page, served):
    from playwright.sync_api import expect

    run = served.facts["run"]
    exp, run_id, metrics = run["experiment_id"], run["id"], run["metrics"]
    assert {"train_loss", "final_loss"} <= set(metrics), metrics
    page.goto(served.mlflow + f"/#/experiments/{exp}/runs/{run_id}")
    expect(page.get_by_text(run["name"]).first).to_be_visible()
    expect(page.get_by_text(f"Metrics ({len(metrics)})")).to_be_visible()
    for key in ["train_loss", "final_loss"]:
        row = page.get_by_role("row").filter(has_text=key).first
        expect(row).to_contain_text(repr(metrics[key]))
    page.screenshot(path=SHOTS / "mlflow-run-overview.png")
    # the per-step loss drawn as a chart: its legend names the run once the data is plotted
    page.get_by_role("tab", name="Model metrics").click()
    legend = page.get_by_text(f"{run['name']} (train_loss)", exact=True)
    expect(legend).to_be_visible()
    expect(page.locator(".js-plotly-plot .scatterlayer .trace").first).to_be_attached()
    page.screenshot(path=SHOTS / "mlflow-run-metrics.png")
