"""Hostile inputs beyond tests/test_ingest.py's list: a raster that declares far more pixels
than its file holds is refused by name, with bounded memory, and the archive's other scenes
are still curated."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.helpers import REPO, cube, envi_lines, write_envi, write_params

PEAK_RSS_LIMIT_MB = 1500  # a 40000 x 40000 x 5 int16 read would need 16 GB

# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark across fork/vfork + exec
# into ru_maxrss, so a child of a big pytest worker would report the worker's peak
RUN = """
import re, sys
from pathlib import Path
from spectralearth.cli import main
code = main(sys.argv[1:])
hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
print("PEAK_RSS_MB", hwm_kb // 1024)
sys.exit(code)
"""


def _cli(*args, params):
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
        "SPECTRALEARTH_PARAMS": str(params),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUN, *map(str, args)], env=env, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    peak = int(re.search(r"PEAK_RSS_MB (\d+)", out).group(1))
    return proc.returncode, out, peak


def test_declared_size_far_beyond_the_file_is_refused_by_name(archive_copy, tmp_path):
    params = write_params(tmp_path / "cfg")
    bomb = write_envi(archive_copy / "bomb.bsq", cube(), "bsq", envi_lines())
    header = bomb.with_suffix(".hdr")
    text = re.sub(r"samples = \d+", "samples = 40000", header.read_text())
    header.write_text(re.sub(r"lines = \d+", "lines = 40000", text))

    code, out, peak = _cli(
        "catalog", archive_copy, "--out", tmp_path / "cat.parquet", params=params
    )
    assert code == 0, out
    assert re.search(r"REJECTED bomb(\.bsq)?: .*(too small|truncated)", out), out
    assert peak < PEAK_RSS_LIMIT_MB

    # the products beside it are curated as usual (curate reads the archive itself)
    code, out, peak = _cli("curate", archive_copy, "--out", tmp_path / "patches", params=params)
    assert code == 0, out
    assert re.search(r"bomb.*(too small|truncated)", out), out
    n_products = sum(1 for p in archive_copy.iterdir() if p.is_dir())
    assert f"from {n_products} scenes" in out, out
    assert peak < PEAK_RSS_LIMIT_MB
