"""Output places a stage cannot use: a read-only curated folder or DAGSTER_HOME, a data
folder whose SQLite files would have paths longer than SQLite accepts. Each stops the stage
at once with one line naming the place and what to do (never a traceback, never a rejection
of every product in turn), and writes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from spectralearth.io import SQLITE_MAX_PATH
from tests.helpers import REPO, write_params

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("SPECTRALEARTH_", "MLFLOW_"))}


def _read_only_namespace(tmp_path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available to mount a read-only tmpfs")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o ro,size=64k tmpfs {tmp_path}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr!r}")


def _in_read_only(folder, command: str, env: dict, cwd=REPO) -> subprocess.CompletedProcess:
    """``command`` in a mount namespace where ``folder`` is an empty read-only tmpfs."""
    script = f"mount -t tmpfs -o ro,size=64k tmpfs {folder} && {command}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_curating_into_a_read_only_folder_stops_at_once_naming_it(tiny_archive, tmp_path):
    _read_only_namespace(tmp_path)
    params = write_params(tmp_path / "cfg")
    out = tmp_path / "ro"
    out.mkdir()
    done = _in_read_only(
        out,
        f"{sys.executable} -m spectralearth.cli --params {params} curate {tiny_archive} "
        f"--out {out}/patches",
        ENV,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("spectralearth curate:") and f"{out}/patches" in line
    assert "Read-only file system" in line
    assert "REJECTED" not in done.stdout  # an output fault, not a product's
    assert list(out.iterdir()) == []


def test_a_read_only_dagster_home_is_named_in_one_line(tiny_archive, tmp_path):
    _read_only_namespace(tmp_path)
    root = tmp_path / "project"
    params = write_params(root)
    home = tmp_path / "home"
    home.mkdir()
    env = {**ENV, "DAGSTER_HOME": str(home), "SPECTRALEARTH_PARAMS": str(params),
           "SPECTRALEARTH_ARCHIVE": str(tiny_archive), "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}  # fmt: skip
    done = _in_read_only(home, f"{sys.executable} -m dagster_project.run_pipeline", env, cwd=root)
    assert done.returncode == 1
    assert f"cannot use DAGSTER_HOME {home}" in done.stderr and "Read-only" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (root / "data").exists()  # nothing was started


def _long_folder(tmp_path, length: int):
    folder, rest = tmp_path, length - len(str(tmp_path))
    while rest > 1:
        step = min(200, rest - 1)
        folder, rest = folder / ("d" * step), rest - step - 1
    folder.mkdir(parents=True)
    return folder


def test_a_curated_folder_too_long_for_sqlite_is_named_with_the_fix(tiny_archive, tmp_path):
    out = _long_folder(tmp_path, SQLITE_MAX_PATH + 20)
    params = write_params(tmp_path / "cfg")
    done = subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", "--params", str(params), "curate",
         str(tiny_archive), "--out", str(out)],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "longer than SQLite accepts" in line and str(out / "registry.sqlite") in line
    assert "shorter curated folder" in line and "REJECTED" not in done.stdout
    assert not list(out.rglob("*.tif")) and not (out / "index.parquet").exists()


def test_an_mlflow_store_path_too_long_for_sqlite_is_refused_before_training(tmp_path):
    from tests.helpers import make_shards

    data = _long_folder(tmp_path / "long", SQLITE_MAX_PATH)
    params = write_params(tmp_path / "cfg")
    curated = tmp_path / "curated"
    _, stats, _, _ = make_shards(curated)
    (curated / "band_stats.json").write_text(__import__("json").dumps(stats))
    out = tmp_path / "ckpt"
    done = subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", "--params", str(params), "pretrain",
         "--data", str(curated), "--out", str(out)],
        env={**ENV, "SPECTRALEARTH_DATA_DIR": str(data)}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "longer than SQLite accepts" in done.stderr and str(data / "mlflow") in done.stderr
    assert not out.exists() and not (data / "mlflow" / "mlflow.db").exists()
