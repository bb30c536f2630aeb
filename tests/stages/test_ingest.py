"""The synthetic archive writes only under the folders it is given."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import write_params


def test_synth_archive_with_out_writes_nothing_outside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    params = write_params(tmp_path / "cfg", synth={"scenes": 1, "size": 32})
    out = tmp_path / "somewhere" / "archive"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    run = subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", "--params", str(params), "synth-archive",
         "--out", str(out), "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before]
    assert new and all(str(p).startswith("somewhere/archive") or p == out.parent.relative_to(tmp_path)
                       for p in new), new  # fmt: skip
    assert list((out / "labels").glob("*-CLASSMAP.TIF")), "class maps go inside --out"
    assert str(out / "labels") in run.stdout
