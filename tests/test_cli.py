import subprocess
import sys

from tests.helpers import write_params

COMMANDS = [
    "synth-archive",
    "catalog",
    "curate",
    "validate",
    "stats",
    "pretrain",
    "downstream",
    "evaluate",
    "report",
    "ui",
]


def _cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", *args], capture_output=True, text=True, **kw
    )


def test_help_lists_every_command():
    out = _cli("--help")
    assert out.returncode == 0
    for c in COMMANDS:
        assert c in out.stdout


def test_command_help_shows_defaults_from_params_yaml():
    out = _cli("curate", "--help")
    assert "default: 128" in out.stdout  # curate.patch_size in params.yaml


def test_a_failing_stage_says_which_and_why_in_one_line_and_exits_nonzero(tmp_path):
    params = write_params(tmp_path)
    out = _cli("--params", str(params), "stats")
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("spectralearth stats:") and "manifest.parquet" in lines[0]
    assert str(tmp_path) in lines[0], "paths must come from the chosen params file"


def test_bad_params_file_is_named(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("synth: {scenes: 1}\n")
    out = _cli("--params", str(bad), "report")
    assert out.returncode != 0 and "params.yaml" in out.stderr


def test_archive_folder_from_params_and_environment(tmp_path, monkeypatch):
    import yaml

    from spectralearth.config import load_settings

    params = write_params(tmp_path)
    assert load_settings(params).layout.archive == tmp_path / "data" / "archive"
    raw = yaml.safe_load(params.read_text())
    raw["archive_dir"] = "/srv/enmap/l2a"
    params.write_text(yaml.safe_dump(raw))
    assert str(load_settings(params).layout.archive) == "/srv/enmap/l2a"
    monkeypatch.setenv("SPECTRALEARTH_ARCHIVE", str(tmp_path / "mine"))
    assert load_settings(params).layout.archive == tmp_path / "mine"


def test_dagster_definitions_validate(tmp_path):
    import os
    from pathlib import Path

    bindir = Path(sys.executable).parent
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    out = subprocess.run(
        [str(bindir / "dagster"), "definitions", "validate", "-m", "dagster_project.definitions"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful" in out.stdout + out.stderr
