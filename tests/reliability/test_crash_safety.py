"""Crash safety: a curation killed with SIGKILL at several points leaves no partial output
visible to readers (the store reader opens it whole or refuses it naming a scene), and a rerun
ends byte-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import rasterio

from tests.helpers import REPO, write_params

# registry internals (SQLite pages, WAL, lock file) are not outputs readers compare
NOT_COMPARED = ("registry.sqlite", "registry.sqlite-wal", "registry.sqlite-shm", "registry.lock")


def _curate(archive: Path, out: Path, params: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
        "SPECTRALEARTH_PARAMS": str(params),
    }
    cmd = [sys.executable, "-m", "spectralearth.cli", "curate", str(archive), "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _visible_files(root: Path) -> dict[str, bytes]:
    """What a reader sees: every file whose path has no hidden (dot) part."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            if rel.name not in NOT_COMPARED:
                out[str(rel)] = p.read_bytes()
    return out


def _assert_consistent(root: Path) -> None:
    """Whatever a killed run left visible is whole: every fragment's patches exist and read
    fully, every visible patch loads, and the index (if any) either opens with every file
    matching its checksum or is refused by the store reader, naming a scene."""
    from spectralearth.patches.reader import open_store
    from spectralearth.patches.store import StaleIndexError, pending_scenes, read_fragment

    for frag in sorted((root / "scenes").glob("*.parquet")):
        rows = read_fragment(root, frag.stem)
        for rel in rows["path"]:
            with rasterio.open(root / rel) as src:
                assert src.read().shape[0] == 202
    for tif in (root / "enmap").rglob("*.tif") if (root / "enmap").exists() else []:
        if not tif.name.startswith("."):
            with rasterio.open(tif) as src:
                src.read(1)
    assert not (root / "shards").exists(), "one stored copy: no shards"
    if (root / "index.parquet").exists():
        pd.read_parquet(root / "index.parquet")
        try:
            store = open_store(root)
        except StaleIndexError as exc:  # a scene re-curated, or stopped, after the index
            scenes = pending_scenes(root) or [f.stem for f in (root / "scenes").glob("*.parquet")]
            assert any(s in str(exc) for s in scenes), exc
        else:
            assert all(store.read(i).shape[0] == 202 for i in range(len(store)))


def _first(root: Path, pattern: str) -> bool:
    return next(root.glob(pattern), None) is not None


# Kill points, each a condition on what the run has written so far
KILL_POINTS = {
    "while staging the first scene": lambda r: _first(r, ".staging/*/*.tif"),
    "after the first scene's fragment": lambda r: _first(r, "scenes/*.parquet"),
    "after three scenes": lambda r: len(list(r.glob("scenes/*.parquet"))) >= 3,
    "while writing the index": lambda r: (
        _first(r, ".index.parquet.*") or _first(r, "index.parquet")
    ),
}


@pytest.fixture(scope="module")
def reference(tiny_archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash-ref")
    params = write_params(tmp / "cfg")
    proc = _curate(tiny_archive, tmp / "ref", params)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()
    return params, _visible_files(tmp / "ref")


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_leaves_nothing_partial_and_a_rerun_matches(
    tiny_archive, tmp_path, reference, point
):
    params, expected = reference
    out = tmp_path / "out"
    proc = _curate(tiny_archive, out, params)
    reached = False
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists() and KILL_POINTS[point](out):
            proc.send_signal(signal.SIGKILL)
            reached = True
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    if not reached:
        pytest.skip(f"the run finished before the kill point {point!r} was seen")
    assert proc.returncode == -signal.SIGKILL
    _assert_consistent(out)

    rerun = _curate(tiny_archive, out, params)
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log.decode()
    _assert_consistent(out)
    got = _visible_files(out)
    assert sorted(got) == sorted(expected)
    assert [k for k in expected if got[k] != expected[k]] == []


def test_a_failed_durable_write_names_the_file_and_loses_nothing(
    tiny_archive, tmp_path, monkeypatch
):
    """fdatasync failing (EIO, a full or failing disk) while a scene is curated: the error
    names the file, nothing of that scene becomes visible, the scene curated before is
    untouched, and a rerun ends byte-identical to a run that never failed."""
    import errno

    from spectralearth.config import load_settings
    from spectralearth.patches.curate import curate_scene, scene_key_for

    settings = load_settings(write_params(tmp_path / "cfg")).curate
    products = sorted(p for p in tiny_archive.iterdir() if p.is_dir())[:2]
    keys = [scene_key_for(p) for p in products]
    for p in products:
        curate_scene(p, tmp_path / "clean", settings, keys)
    expected = _visible_files(tmp_path / "clean")

    out = tmp_path / "out"
    curate_scene(products[0], out, settings, keys)
    before = _visible_files(out)
    real = os.fdatasync

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError, match=r"cannot make .*\.tif durable: Input/output error"):
        curate_scene(products[1], out, settings, keys)
    assert _visible_files(out) == before  # nothing of the failed scene, the first one intact
    _assert_consistent(out)

    monkeypatch.setattr(os, "fdatasync", real)
    curate_scene(products[1], out, settings, keys)
    got = _visible_files(out)
    assert sorted(got) == sorted(expected) and all(got[k] == expected[k] for k in expected)
