"""P4: peak RSS of curating 16 scenes vs 1 scene (streaming: memory must not grow with the
archive). Goal: <= 1.2x.

16 synthetic products of 384 px; each measurement runs `spectralearth curate` in a fresh
subprocess (the CLI path: products, then the index) and reads its peak RSS.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from spectralearth.synth import write_archive

SCENES, SIZE = 16, 384


def _curate_peak_mb(archive: Path, out: Path) -> float:
    code = (
        "import resource, sys\n"
        "from spectralearth.cli import main\n"
        f"rc = main(['curate', '{archive}', '--out', '{out}'])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        products = write_archive(tmp / "all", tmp / "labels", scenes=SCENES, size=SIZE, seed=3)
        one = tmp / "one"
        one.mkdir()
        (one / products[0].name).symlink_to(products[0])
        rss_one = _curate_peak_mb(one, tmp / "out1")
        rss_all = _curate_peak_mb(tmp / "all", tmp / "out16")
    print(f"peak RSS, 1 scene:   {rss_one:.0f} MB")
    print(f"peak RSS, {SCENES} scenes: {rss_all:.0f} MB")
    print(f"ratio {SCENES}/1: {rss_all / rss_one:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
