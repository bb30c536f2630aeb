"""The external end of Dagster Pipes: nothing is opened outside Pipes or off rank 0, and a
stage's plain metadata becomes typed Pipes values as the in-process asset shows them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from spectralearth.pipes import PIPES_CONTEXT_ENV, dagster_pipes, pipes_metadata
from spectralearth.stages.result import Figure, Markdown


def test_metadata_is_typed_as_the_asset_shows_it(tmp_path):
    png = tmp_path / "loss.png"
    png.write_bytes(b"\x89PNG fake")
    typed = pipes_metadata(
        {
            "steps": 2,
            "final_loss": 0.5,
            "collapsed": False,
            "nan": math.nan,
            "checkpoint": tmp_path,
            "loss_curve": Figure(png, "training loss"),
            "missing": Figure(tmp_path / "absent.png", "absent"),
            "table": Markdown("| a |"),
            "versions": {"m": 1},
            "shape": (1, 2),
            "device": "cpu",
            "dropped": None,
        }
    )
    assert typed["steps"] == {"type": "int", "raw_value": 2}
    assert typed["final_loss"] == {"type": "float", "raw_value": 0.5}
    assert typed["collapsed"] == {"type": "bool", "raw_value": False}  # not an int
    assert typed["nan"] == {"type": "text", "raw_value": "nan"}  # JSON has no NaN
    assert typed["checkpoint"] == {"type": "path", "raw_value": str(tmp_path)}
    assert typed["loss_curve"]["type"] == "md"
    assert typed["loss_curve"]["raw_value"].startswith("![training loss](data:image/png;base64,")
    assert typed["missing"] == {
        "type": "md",
        "raw_value": f"(absent: {tmp_path / 'absent.png'} not written)",
    }
    assert typed["table"] == {"type": "md", "raw_value": "| a |"}
    assert typed["versions"] == {"type": "json", "raw_value": {"m": 1}}
    assert typed["shape"] == {"type": "json", "raw_value": [1, 2]}
    assert typed["device"] == {"type": "text", "raw_value": "cpu"}
    assert "dropped" not in typed
    json.dumps(typed, allow_nan=False)  # what the Pipes message writer sends


def test_nothing_is_opened_outside_pipes_or_off_rank_zero(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "dagster_pipes", raising=False)
    monkeypatch.delenv(PIPES_CONTEXT_ENV, raising=False)
    with dagster_pipes() as pipes:
        assert pipes is None
    # a torchrun under Pipes: every rank inherits the environment, only rank 0 reports
    monkeypatch.setenv(PIPES_CONTEXT_ENV, "a context only Dagster could have written")
    monkeypatch.setenv("RANK", "1")
    with dagster_pipes() as pipes:
        assert pipes is None
    assert "dagster_pipes" not in sys.modules
    assert list(Path(tmp_path).iterdir()) == []
