"""The ``release_index`` asset: a user who downloaded the released SpectralEarth tree
materializes it from the launchpad (``root``) and sees what went in and what was left out;
a corrupt file fails the run naming it unless ``skip_unreadable`` is set."""

from __future__ import annotations

import dagster as dg

from spectralearth.patches.store import read_index
from tests.helpers import make_release, write_params

CORRUPT = "enmap/0000099/00099.tif"  # tests/data/release/make_release.py --corrupt


def _materialize(defs, instance, root, skip: bool):
    return dg.materialize(
        list(defs.assets),
        instance=instance,
        resources=defs.resources,
        selection=["release_index"],
        run_config={
            "ops": {"release_index": {"config": {"root": str(root), "skip_unreadable": skip}}}
        },
        raise_on_error=False,
    )


def test_the_release_index_asset_indexes_a_downloaded_tree(tmp_path, monkeypatch):
    from dagster_project.definitions import build_definitions

    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    root = tmp_path / "spectral_earth"
    pixels = make_release(root, "--corrupt")
    defs = build_definitions(write_params(tmp_path / "cfg"))
    with dg.DagsterInstance.ephemeral() as instance:
        refused = _materialize(defs, instance, root, skip=False)
        assert not refused.success
        (failure,) = [e for e in refused.all_events if e.is_step_failure]
        assert str(root / CORRUPT) in str(failure.event_specific_data.error)
        assert not (root / "index.parquet").exists()

        done = _materialize(defs, instance, root, skip=True)
        assert done.success
        (event,) = done.get_asset_materialization_events()
        metadata = event.materialization.metadata
        assert metadata["patches"].value == len(pixels)
        assert CORRUPT in metadata["skipped"].value
        assert sorted(read_index(root)["path"]) == sorted(pixels)
