"""Integrity of the training store: nothing ties readers to pixels that changed under them.

Each case is a fault a red team tried (issue 14): a re-curation killed half-way, one patch
overwritten in place, a truncated file, two curations of one folder at once, a full disk,
statistics of another index version. Each asserts the exit status or exception, that the
message names the scene or file, and what is (and is not) left on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spectralearth.config import filters_off, load_settings
from spectralearth.data.dataset import PatchDataset
from spectralearth.patches.lock import CurationBusyError, curation_lock, scene_lock
from spectralearth.patches.reader import StoreIntegrityError, open_store
from spectralearth.patches.stats import StaleStatsError, check_stats, compute_band_stats
from spectralearth.patches.store import (
    PatchWriteError,
    StaleIndexError,
    index_version,
    pending_scenes,
    read_index,
)
from spectralearth.stages.curate import curate_archive
from tests.helpers import REPO, make_shards, write_params

LOOSE = filters_off()
ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}

# Runs a curation in a fresh process, as `spectralearth curate` does (products, then the
# index), with faults injected: SIGKILL after the n-th rename into the release layout or
# after the n-th scene's commit, or a pause after each commit.
DRIVER = r"""
import json, os, signal, sys, time
from pathlib import Path
import spectralearth.patches.curate as curate
from spectralearth.config import load_settings
from spectralearth.stages.curate import curate_archive

job = json.loads(sys.argv[1])
settings = load_settings(job["params"], overrides=job.get("overrides"))
renames, commits = [0], [0]

class _Os:  # curate's os, whose replace dies after the n-th rename
    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, a, b):
        os.replace(a, b)
        renames[0] += 1
        if renames[0] == job.get("kill_after_renames"):
            os.kill(os.getpid(), signal.SIGKILL)

curate.os = _Os()
real_commit = curate.commit_scene

def commit(*args, **kwargs):
    result = real_commit(*args, **kwargs)
    commits[0] += 1
    print("committed", result.scene, flush=True)
    if commits[0] == job.get("kill_after_commits"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(job.get("pause", 0))
    return result

curate.commit_scene = commit
products = [Path(p) for p in job["products"]]
curate_archive(products, Path(job["out"]), settings.curate, log=print)
print("done", flush=True)
"""


def _driver(job: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(job)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _cli(*args: str, params: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", "--params", str(params), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _visible(root: Path) -> dict[str, bytes]:
    """What a reader compares: files without a hidden part, registry internals aside."""
    skip = {"registry.sqlite", "registry.sqlite-wal", "registry.sqlite-shm", "registry.lock"}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.name not in skip
    }


@pytest.fixture
def three(tiny_archive, tmp_path):
    """Three products, their params file, and a folder curated from them with the defaults."""
    params = write_params(tmp_path / "cfg")
    products = sorted(p for p in tiny_archive.iterdir() if p.is_dir())[:3]
    out = tmp_path / "patches"
    curate_archive(products, out, load_settings(params).curate, log=lambda *_: None)
    return params, products, out


# --- a re-curation killed half-way --------------------------------------------------------


@pytest.mark.parametrize("kill", ["while replacing the first scene's files", "after its commit"])
def test_kill_9_during_a_loosened_recuration_leaves_readers_refusing_then_a_rerun_heals(
    three, tmp_path, kill
):
    """Curate 3 scenes; loosen every filter; rerun and SIGKILL it in the first scene: stats
    and the training data refuse, naming that scene, and leave the old statistics alone;
    the rerun finished, the old statistics are reported stale and new ones compute."""
    params, products, out = three
    stats_path = out / "band_stats.json"
    old_stats = compute_band_stats(out, stats_path)
    old_bytes, old_version = stats_path.read_bytes(), index_version(out)
    job = {"params": str(params), "products": [str(p) for p in products], "out": str(out)}
    job["overrides"] = {"curate": LOOSE}
    if kill.startswith("while"):
        job["kill_after_renames"] = 2
    else:
        job["kill_after_commits"] = 1
    proc = _driver(job)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, log
    scene = products[0].name

    res = _cli("stats", "--patches", str(out), "--out", str(stats_path), params=params)
    assert res.returncode != 0
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and scene in lines[0], res.stderr
    assert stats_path.read_bytes() == old_bytes  # the old statistics untouched
    with pytest.raises(StaleIndexError, match=scene):
        PatchDataset(out, split="train")
    if kill.startswith("while"):
        assert pending_scenes(out) == [scene]
        assert "stopped while replacing the patches" in lines[0]
    else:
        assert not pending_scenes(out) and "stale for scene" in lines[0]

    rerun = _driver({k: v for k, v in job.items() if not k.startswith("kill")})
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log
    assert not pending_scenes(out) and index_version(out) != old_version
    with pytest.raises(StaleStatsError, match=f"spectralearth stats --patches {out}"):
        check_stats(out, old_stats)
    new = compute_band_stats(out, stats_path)
    check_stats(out, stats_path)
    assert new["n_patches"] > old_stats["n_patches"]  # the loosened filters kept more
    store = open_store(out)  # every row's file matches its checksum
    assert len(store) == len(read_index(out)) and len(PatchDataset(out)) > 0


# --- one patch overwritten, a truncated file -----------------------------------------------


def _overwrite_pixels(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:  # in place: same size, same inode
        fh.seek(offset + 1000)
        fh.write(np.full(64, 1234, dtype="<i2").tobytes())


def test_one_patch_overwritten_in_place_is_refused_before_statistics_and_training(three):
    params, products, out = three
    stats_path = out / "band_stats.json"
    compute_band_stats(out, stats_path)
    before = stats_path.read_bytes()
    time.sleep(0.6)  # past the racy window: this open records every file as verified
    open_store(out)
    assert open_store(out).check.trusted == len(read_index(out))  # cheap: a stat per file
    row = read_index(out).iloc[0]
    victim = out / row["path"]
    _overwrite_pixels(victim, int(row["data_offset"]))

    res = _cli("stats", "--patches", str(out), "--out", str(stats_path), params=params)
    assert res.returncode != 0
    assert str(victim) in res.stderr and row["product"] in res.stderr
    assert "pixels changed since they were indexed" in res.stderr
    assert stats_path.read_bytes() == before
    with pytest.raises(StoreIntegrityError, match=str(victim)):
        PatchDataset(out, split=row["split"])
    from spectralearth.downstream.build import read_patch_grids

    with pytest.raises(StoreIntegrityError, match=str(victim)):
        read_patch_grids(out)


def test_a_truncated_patch_or_shard_is_named_not_an_mmap_error(three, tmp_path):
    params, products, out = three
    store = open_store(out)  # opened before: a reader already training
    row = read_index(out).iloc[-1]
    victim = out / row["path"]
    with open(victim, "r+b") as fh:
        fh.truncate(int(row["file_size"]) // 2)
    with pytest.raises(StoreIntegrityError) as err:
        open_store(out)
    assert str(victim) in str(err.value) and "truncated" in str(err.value)
    assert row["product"] in str(err.value)
    i = int(np.flatnonzero(store.index["path"] == row["path"])[0])
    with pytest.raises(StoreIntegrityError, match=rf"{victim}: .* the file is truncated"):
        store.read(i)  # an error naming the file, not SIGBUS from a map past its end

    shards_dir = make_shards(tmp_path / "legacy")[0]  # a shard-era folder
    shard = sorted(shards_dir.glob("*.npy"))[0]
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size - 4096)
    with pytest.raises(StoreIntegrityError) as err:
        PatchDataset(shards_dir)
    assert str(shard) in str(err.value) and "truncated" in str(err.value)
    assert "mmap length" not in str(err.value).split("(")[0]


# --- two curations of one folder ----------------------------------------------------------


def test_a_second_curation_of_a_held_folder_stops_at_once_and_the_first_is_unharmed(
    tiny_archive, tmp_path
):
    """Two `spectralearth curate` runs into one folder: the second exits 1 at once naming the
    folder and the first's pid; the first finishes as if alone."""
    params = write_params(tmp_path / "cfg")
    products = sorted(p for p in tiny_archive.iterdir() if p.is_dir())[:3]
    curate_archive(products, tmp_path / "clean", load_settings(params).curate, log=lambda *_: None)
    expected = _visible(tmp_path / "clean")
    archive = tmp_path / "archive"
    archive.mkdir()
    for p in products:
        (archive / p.name).symlink_to(p)

    out = tmp_path / "out"
    job = {"params": str(params), "products": [str(p) for p in products], "out": str(out)}
    first = _driver({**job, "pause": 1.5})  # `spectralearth curate`'s stage, slowed down
    lock, deadline = out / ".curation.lock", time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None and time.monotonic() < deadline, "the first never held it"
        time.sleep(0.05)
    start = time.monotonic()
    second = _cli("curate", str(archive), "--out", str(out), params=params)
    assert time.monotonic() - start < 60
    assert second.returncode != 0
    assert f"another curation holds {out} (pid {first.pid})" in second.stderr
    assert first.poll() is None, "the second stopped while the first was still running"
    log, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and log.rstrip().endswith("done"), log
    got = _visible(out)
    assert sorted(got) == sorted(expected) and all(got[k] == expected[k] for k in expected)

    # and in-process: the library call says the same
    with _holding(curation_lock, out) as pid:
        with pytest.raises(CurationBusyError, match=rf"another curation holds {out} \(pid {pid}\)"):
            from spectralearth.patches.curate import curate_scene

            curate_scene(products[0], out, load_settings(params).curate)


def test_one_scene_is_curated_by_one_process_and_other_scenes_go_on(three, tmp_path):
    from spectralearth.patches.curate import curate_scene

    params, products, out = three
    settings = load_settings(params).curate
    before = _visible(out)
    with _holding(scene_lock, out, products[0].name) as pid:
        with pytest.raises(CurationBusyError) as err:
            curate_scene(products[0], out, settings)
        assert f"another curation holds {out} (scene {products[0].name}) (pid {pid})" in str(
            err.value
        )
        assert _visible(out) == before  # nothing of the refused run
        curate_scene(products[1], out, settings)  # another scene: curated meanwhile
    assert not list((out / ".staging").rglob("*"))


class _holding:
    """A helper process holding a lock (``curation_lock(root)`` or ``scene_lock(root, s)``)."""

    def __init__(self, kind, *args):
        self.code = (
            "import sys, time\n"
            f"from spectralearth.patches.lock import {kind.__name__}\n"
            f"with {kind.__name__}(*{[str(a) for a in args]!r}):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n"
        )

    def __enter__(self) -> int:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.code],
            env=ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "held"
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# --- a full disk ----------------------------------------------------------------------------


def test_a_failed_patch_write_names_the_file_and_leaves_nothing_staged(
    three, tmp_path, monkeypatch
):
    """The third GeoTIFF write of a scene fails as GDAL reports a full disk ("Write failed"):
    the error names the file, nothing of the scene is left in .staging or made visible, and
    the folder still opens."""
    import rasterio

    from spectralearth.patches.curate import curate_scene

    params, products, out = three
    settings = load_settings(params, overrides={"curate": LOOSE}).curate
    before = _visible(out)
    real_write, calls = rasterio.io.DatasetWriter.write, []

    def failing_write(self, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 3:
            raise rasterio.errors.RasterioIOError("Write failed")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", failing_write)
    with pytest.raises(PatchWriteError) as err:
        curate_scene(products[1], out, settings)
    staged = out / ".staging" / products[1].name
    assert f"cannot write patch {staged}" in str(err.value) and "Write failed" in str(err.value)
    assert [p for p in (out / ".staging").rglob("*") if p.is_file()] == []
    assert _visible(out) == before and not pending_scenes(out)
    open_store(out)


def test_a_real_full_disk_names_the_file_and_leaves_nothing_staged(tiny_archive, tmp_path):
    """`spectralearth curate` into a 1.5 MB tmpfs (a mount namespace of its own): exit 1, the
    one-line error names the patch file, and .staging holds nothing afterwards."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available to mount a small tmpfs")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr!r}")
    params = write_params(tmp_path / "cfg")
    out = tmp_path / "full"
    out.mkdir()
    script = (
        f"mount -t tmpfs -o size=1500k tmpfs {out} && "
        f"{sys.executable} -m spectralearth.cli --params {params} curate {tiny_archive} "
        f"--out {out}; echo rc=$?; "
        f"echo staged=$(find {out}/.staging -type f | wc -l); "
        f"echo visible=$(find {out}/enmap -name '*.tif' 2>/dev/null | wc -l)"
    )
    res = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], env=ENV, capture_output=True, text=True, timeout=300
    )
    facts = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert facts.get("rc") not in (None, "0"), res.stdout + res.stderr
    errors = [x for x in res.stderr.splitlines() if x.startswith("spectralearth curate:")]
    assert len(errors) == 1 and f"cannot write patch {out}/.staging/" in errors[0], res.stderr
    assert "the disk is full" in errors[0]
    assert facts["staged"] == "0" and facts["visible"] != "0"  # earlier scenes are kept


# --- band statistics and the index version ------------------------------------------------


def test_statistics_record_the_index_version_and_stale_ones_are_refused(three, tmp_path):
    from dataclasses import replace

    from spectralearth.patches.curate import curate_scene
    from spectralearth.patches.store import build_index
    from spectralearth.ssl.train import pretrain
    from tests.helpers import tiny_settings

    params, products, out = three
    stats = compute_band_stats(out, out / "band_stats.json")
    assert stats["index_version"] == index_version(out)
    check_stats(out, out / "band_stats.json")
    unversioned = {k: v for k, v in stats.items() if k != "index_version"}
    with pytest.raises(StaleStatsError, match="record no index version"):
        check_stats(out, unversioned)

    loose = replace(load_settings(params).curate, **LOOSE)  # keeps the nodata windows too
    curate_scene(products[0], out, loose)
    with pytest.raises(StaleIndexError, match=f"stale for scene {products[0].name}"):
        compute_band_stats(out, tmp_path / "elsewhere.json")
    assert not (tmp_path / "elsewhere.json").exists()
    build_index(out, 0.2, 0.2)
    with pytest.raises(StaleStatsError) as err:
        check_stats(out, out / "band_stats.json")
    assert f"spectralearth stats --patches {out}" in str(err.value)
    assert str(out / "band_stats.json") in str(err.value)
    # pretraining on the folder with the stale statistics stops before it trains
    with pytest.raises(StaleStatsError, match="spectralearth stats --patches"):
        pretrain(tiny_settings(), out, stats, tmp_path / "model", progress=False)
    assert not (tmp_path / "model" / "run.json").exists()
